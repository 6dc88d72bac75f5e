//! Produce: validate each partition's record batches, then append each batch
//! as one version of the partition's key, sealed in the sequencer with its
//! base offset (the key's seq), leader epoch and, for log-append-time
//! topics, the append time.
//!
//! Batches are appended at once, in request order, as the connection reads
//! them; the response then waits for them to become readable. acks=0 gets no
//! response at all. acks=1 and acks=all (-1) both answer once the batch is as
//! durable as its topic's storage promises: a version becomes readable only
//! then, and with a single replica Kafka's acks=1 promises that an acked
//! batch is below the high watermark (readable, listed by ListOffsets,
//! trimmable by DeleteRecords) as soon as the answer arrives. Because the
//! wait happens after the append, the produces a client pipelines on one
//! connection share one group-committed fsync.
//!
//! A refused batch leaves the log exactly as it was: validation happens
//! before the put, and the engine writes a multi-batch put atomically.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError;
use kascade_core::{Ack, IdempotenceToken, Key, Put, Waiter, WriteResult};
use kascade_wire::kafka::batch::{self, BatchError};

use super::{broker_id, str_bytes};
use crate::kafka::topics::Topic;
use crate::kafka::State;

/// A produce whose batches are appended, waiting to answer until they are readable.
pub struct Started {
    response: Option<ProduceResponse>,
    /// `(topic index, partition index, waiter)` for each appended partition.
    waits: Vec<(usize, usize, Waiter)>,
    timeout: Duration,
    version: i16,
}

impl Started {
    /// Waits until every appended batch is readable (as durable as its topic
    /// promises), then gives the response; `None` for acks=0. A batch that is
    /// not readable within the request's timeout is answered REQUEST_TIMED_OUT.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let Started {
            mut response,
            mut waits,
            timeout,
            version,
        } = self;
        let deadline = tokio::time::Instant::now() + timeout;
        for (_, _, waiter) in &mut waits {
            if !waiter.is_ready() && tokio::time::timeout_at(deadline, waiter).await.is_err() {
                break;
            }
        }
        if let Some(response) = &mut response {
            for (t, p, waiter) in &waits {
                if waiter.is_ready() {
                    continue;
                }
                if let Some(p) = response
                    .responses
                    .get_mut(*t)
                    .and_then(|t| t.partition_responses.get_mut(*p))
                {
                    p.error_code = ResponseError::RequestTimedOut.code();
                    p.base_offset = -1;
                    if version >= 8 {
                        p.error_message = Some(str_bytes(
                            "the batch was appended but did not become durable in time",
                        ));
                    }
                }
            }
        }
        response
    }
}

/// Validates and appends every partition's batches in request order, at once;
/// the returned [`Started`] waits for them to be readable.
///
/// acks=1 waits like acks=all: a record is readable only once it is as durable
/// as its topic promises, and Kafka's acks=1 on a single replica promises that
/// an acked batch is readable.
pub(super) fn start(state: &State, version: i16, mut request: ProduceRequest) -> Started {
    let acks = request.acks;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0).max(1_000));
    let topic_data = std::mem::take(&mut request.topic_data);
    // Whatever else the request holds (transactional id) are slices of the frame.
    drop(request);
    // A lone batch may keep the frame's buffer instead of a copy: nothing else
    // of the frame is stored with it (see `append`).
    let sole = topic_data.len() == 1 && topic_data.iter().all(|t| t.partition_data.len() == 1);
    let mut waits = Vec::new();
    let responses = topic_data
        .into_iter()
        .enumerate()
        .map(|(ti, mut t)| {
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
                .enumerate()
                .map(|(pi, p)| {
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
                    match append(state, topic, p.index, records, sole) {
                        Ok(done) => {
                            if acks != 0 {
                                if let Some(w) = done.waiter {
                                    waits.push((ti, pi, w));
                                }
                            }
                            response
                                .with_base_offset(done.base_offset)
                                .with_log_append_time_ms(done.log_append_time_ms)
                                .with_log_start_offset(if version >= 5 {
                                    done.log_start_offset
                                } else {
                                    -1
                                })
                        }
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
    let response = (acks != 0).then(|| ProduceResponse::default().with_responses(responses));
    Started {
        response,
        waits,
        timeout,
        version,
    }
}

/// Where an accepted append landed.
struct Appended {
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// Fires once the first appended batch is readable (and so every one before it).
    waiter: Option<Waiter>,
}

/// Why an append was refused: the Kafka error, and a message for the client.
pub(crate) type Refusal = (ResponseError, Option<String>);

/// Validates and appends one partition's record set; `sole` when it is the
/// request's only one.
fn append(
    state: &State,
    topic: &Arc<Topic>,
    partition: i32,
    records: Bytes,
    sole: bool,
) -> Result<Appended, Refusal> {
    let (key, written) = append_batches(state, topic, partition, records, sole)?;
    let engine = &state.engine;
    let first = written
        .first()
        .ok_or((ResponseError::UnknownServerError, None))?;
    let log_start_offset = engine.bounds(&key).map(|b| b.start_seq as i64).unwrap_or(0);
    Ok(Appended {
        base_offset: first.seq as i64,
        log_append_time_ms: if topic.log_append_time {
            (first.timestamp_us / 1000) as i64
        } else {
            -1
        },
        log_start_offset,
        waiter: written
            .last()
            .and_then(|last| engine.wait_for_seq(&key, last.seq).ok()),
    })
}

/// Validates one partition's record set and appends each of its batches as
/// one version of the partition's key, sealed with its base offset, leader
/// epoch and (for log-append-time topics) append time; returns the key and
/// where each batch landed. `sole` lets a lone batch keep `records`' buffer
/// instead of a copy: pass it only when nothing else shares that buffer.
///
/// The produce handler and lambdas writing to topics (`crate::lambdas`) both
/// append through here, so a Kafka consumer reads either alike.
pub(crate) fn append_batches(
    state: &State,
    topic: &Arc<Topic>,
    partition: i32,
    records: Bytes,
    sole: bool,
) -> Result<(Key, Vec<WriteResult>), Refusal> {
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
    // Applied, not Durable: the put returns once ordered and written, and the
    // response waits for readability in `Started::finish`, so the produces a
    // client pipelines share one fsync (an Applied put asks the engine's
    // flusher for it at once).
    let written = if puts.len() == 1 {
        puts.into_iter()
            .next()
            .map(|p| engine.put_with(p, Ack::Applied).map(|r| vec![r]))
            .unwrap_or_else(|| Ok(Vec::new()))
    } else {
        engine.put_many(puts, Ack::Applied)
    }
    .map_err(refusal)?;
    if let Some(hook) = state.append_hook.get() {
        hook(topic, &key, &written);
    }
    Ok((key, written))
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
