//! Produce: validate each partition's record batches, then append each batch
//! as one version of the partition's key, sealed in the sequencer with its
//! base offset (the key's seq), leader epoch and, for log-append-time
//! topics, the append time.
//!
//! acks=0 gets no response at all and waits only until the batch is ordered
//! and applied. acks=1 and acks=all (-1) both return once the batch is as
//! durable as its topic's storage promises: a version becomes readable only
//! then, and with a single replica Kafka's acks=1 promises that an acked
//! batch is below the high watermark (readable, listed by ListOffsets,
//! trimmable by DeleteRecords) as soon as the answer arrives.
//!
//! A refused batch leaves the log exactly as it was: validation happens
//! before the put, and the engine writes a multi-batch put atomically.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError;
use kascade_core::{Ack, IdempotenceToken, Put};
use kascade_wire::kafka::batch::{self, BatchError};

use super::{blocking, broker_id, str_bytes};
use crate::kafka::topics::Topic;
use crate::kafka::State;

/// Appends every partition's batches; `None` for acks=0.
pub(super) fn handle(
    state: &State,
    version: i16,
    mut request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    // acks=1 waits for durability too: a record is readable only once it is
    // as durable as its topic promises, and Kafka's acks=1 on a single
    // replica promises an acked batch is readable.
    let ack = if acks == 0 {
        Ack::Applied
    } else {
        Ack::Durable
    };
    let topic_data = std::mem::take(&mut request.topic_data);
    // Whatever else the request holds (transactional id) are slices of the frame.
    drop(request);
    // A lone batch may keep the frame's buffer instead of a copy: nothing else
    // of the frame is stored with it (see `append`).
    let sole = topic_data.len() == 1 && topic_data.iter().all(|t| t.partition_data.len() == 1);
    let responses = topic_data
        .into_iter()
        .map(|mut t| {
            // The name, too, is a slice of the frame: answer with a copy of it.
            t.name = TopicName(str_bytes(&t.name));
            let topic = if t.name.0.is_empty() {
                state.topics.by_id(t.topic_id)
            } else {
                state.topics.get(&t.name)
            };
            let partition_responses = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let response = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let Some(topic) = &topic else {
                        let code = if t.name.0.is_empty() {
                            ResponseError::UnknownTopicId
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        return response.with_error_code(code.code());
                    };
                    let records = p.records.unwrap_or_default();
                    match append(state, topic, p.index, records, ack, sole) {
                        Ok(done) => response
                            .with_base_offset(done.base_offset)
                            .with_log_append_time_ms(done.log_append_time_ms)
                            .with_log_start_offset(if version >= 5 {
                                done.log_start_offset
                            } else {
                                -1
                            }),
                        Err((code, message)) => {
                            let mut response = response.with_error_code(code.code());
                            if version >= 8 {
                                response.error_message = message.map(|m| str_bytes(&m));
                            }
                            if version >= 10 {
                                response.current_leader = LeaderIdAndEpoch::default()
                                    .with_leader_id(broker_id(state))
                                    .with_leader_epoch(topic.leader_epoch());
                            }
                            response
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// Where an accepted append landed.
struct Appended {
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

type Refusal = (ResponseError, Option<String>);

/// Validates and appends one partition's record set; `sole` when it is the
/// request's only one.
fn append(
    state: &State,
    topic: &Arc<Topic>,
    partition: i32,
    records: Bytes,
    ack: Ack,
    sole: bool,
) -> Result<Appended, Refusal> {
    let key = topic
        .key(partition)
        .ok_or((ResponseError::UnknownTopicOrPartition, None))?
        .clone();
    let batches = batch::validate(&records).map_err(|e| {
        let code = match &e {
            BatchError::Corrupt(_) | BatchError::Crc { .. } => ResponseError::CorruptMessage,
            BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
            BatchError::NotAllowed(_) => ResponseError::InvalidRecord,
        };
        (code, Some(e.to_string()))
    })?;
    if let Some(big) = batches.iter().find(|b| b.len > topic.max_message_bytes) {
        return Err((
            ResponseError::MessageTooLarge,
            Some(format!(
                "batch of {} bytes exceeds max.message.bytes={} of topic {}",
                big.len, topic.max_message_bytes, topic.name
            )),
        ));
    }
    let epoch = topic.leader_epoch();
    let log_append = topic.log_append_time;
    // The seal patches the stored batch in place (`batch::seal` copies a value it
    // does not own alone). The lone batch of a request read into its own buffer
    // (kafka/mod.rs) owns it once `records` is dropped: stored without a copy, it
    // keeps only the request's few header bytes beside it. Any other batch is
    // copied here, so that it never pins a larger frame.
    let own = sole && batches.len() == 1;
    let puts: Vec<Put> = batches
        .iter()
        .map(|b| {
            let value = if own {
                records.slice(b.start..b.start + b.len)
            } else {
                Bytes::copy_from_slice(&records[b.start..b.start + b.len])
            };
            let mut put = Put::new(key.clone(), value)
                .count(b.record_count)
                .seal(Arc::new(move |v, seq, ts_us| {
                    let now_ms = log_append.then_some((ts_us / 1000) as i64);
                    batch::seal(v, seq as i64, epoch, now_ms)
                }));
            if b.is_idempotent() {
                put = put.token(IdempotenceToken {
                    writer: b.producer_id as u64,
                    epoch: b.producer_epoch as u16 as u32,
                    sequence: i64::from(b.base_sequence),
                });
            }
            put
        })
        .collect();
    drop(records);
    let engine = &state.engine;
    let put = || {
        if puts.len() == 1 {
            puts.into_iter()
                .next()
                .map(|p| engine.put_with(p, ack).map(|r| vec![r]))
                .unwrap_or_else(|| Ok(Vec::new()))
        } else {
            engine.put_many(puts, ack)
        }
    };
    // Only a durable put on a persistent topic waits (for its fsync); any other
    // put returns once applied, so it runs inline: `block_in_place` would hand
    // this runtime worker's queue to another thread on every produce.
    let volatile = topic.configs.get("kascade.storage").map(String::as_str) == Some("volatile");
    let written = if ack == Ack::Durable && !volatile {
        blocking(put)
    } else {
        put()
    }
    .map_err(refusal)?;
    let first = written
        .first()
        .ok_or((ResponseError::UnknownServerError, None))?;
    let log_start_offset = engine.bounds(&key).map(|b| b.start_seq as i64).unwrap_or(0);
    Ok(Appended {
        base_offset: first.seq as i64,
        log_append_time_ms: if log_append {
            (first.timestamp_us / 1000) as i64
        } else {
            -1
        },
        log_start_offset,
    })
}

/// The Kafka error for an engine refusal.
fn refusal(e: kascade_core::Error) -> Refusal {
    use kascade_core::Error as E;
    let code = match &e {
        E::ValueTooLarge { .. } => ResponseError::MessageTooLarge,
        E::FencedEpoch { .. } => ResponseError::InvalidProducerEpoch,
        E::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        E::DuplicateOutsideWindow { .. } => ResponseError::DuplicateSequenceNumber,
        E::NoPool(_) | E::UnknownPool(_) => ResponseError::UnknownTopicOrPartition,
        E::ShuttingDown => ResponseError::NotLeaderOrFollower,
        E::Io { .. } | E::ShardFailed(..) | E::Corrupt { .. } => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    };
    if code == ResponseError::KafkaStorageError || code == ResponseError::UnknownServerError {
        tracing::error!("produce failed: {e}");
    }
    (code, Some(e.to_string()))
}
