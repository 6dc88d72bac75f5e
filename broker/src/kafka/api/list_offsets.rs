//! ListOffsets: the earliest (-2), latest (-1) and max-timestamp (-3)
//! offsets of a partition, or the first offset whose timestamp is at or
//! after a given time.
//!
//! Timestamps are the records' own (CreateTime) or the append time
//! (LogAppendTime), read from the stored batches; to answer inside a batch
//! the candidate batch is decoded, so the offset is exact.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use kascade_core::{Engine, Key, RangeLimit};
use kascade_wire::kafka::batch;

use crate::kafka::State;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Answers each partition's query.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topics.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some((topic, key)) = topic
                        .as_ref()
                        .and_then(|topic| topic.key(p.partition_index).map(|k| (topic, k)))
                    else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let epoch = topic.leader_epoch();
                    // The leader epoch is a field of v4 and later only.
                    let shown_epoch = if version >= 4 { epoch } else { -1 };
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch != epoch {
                        let code = if p.current_leader_epoch > epoch {
                            ResponseError::UnknownLeaderEpoch
                        } else {
                            ResponseError::FencedLeaderEpoch
                        };
                        return response.with_error_code(code.code());
                    }
                    let (start, end) = match state.engine.bounds(key) {
                        Ok(b) => (b.start_seq as i64, b.next_seq as i64),
                        Err(_) => (0, 0),
                    };
                    let found = match p.timestamp {
                        LATEST => Some((-1, end)),
                        EARLIEST => Some((-1, start)),
                        MAX_TIMESTAMP => max_timestamp(&state.engine, key, start as u64),
                        ts => first_at_or_after(&state.engine, key, start as u64, ts),
                    };
                    match found {
                        Some((timestamp, offset)) => response
                            .with_timestamp(timestamp)
                            .with_offset(offset)
                            .with_leader_epoch(shown_epoch),
                        // No record that late: Kafka answers -1 / -1 with no error.
                        None => response.with_leader_epoch(shown_epoch),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Calls `f` on each retained batch from `start`, in order, until it says stop.
fn scan(engine: &Engine, key: &Key, start: u64, mut f: impl FnMut(&Bytes) -> bool) {
    let mut from = start;
    loop {
        let limit = RangeLimit {
            max_bytes: 8 << 20,
            max_versions: 4096,
        };
        let Ok(versions) = engine.range(key, from, limit) else {
            return;
        };
        let Some(last) = versions.last() else {
            return;
        };
        from = last.next_seq();
        for v in &versions {
            if !f(&v.value) {
                return;
            }
        }
    }
}

/// Each record's `(timestamp, offset)` in a stored batch; the batch-level max
/// timestamp applies to all records of a log-append-time batch.
fn records_of(stored: &Bytes) -> Vec<(i64, i64)> {
    let mut buf = stored.clone();
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .map(|r| (r.timestamp, r.offset))
            .collect(),
        Err(_) => match (batch::max_timestamp(stored), batch::base_offset(stored)) {
            (Some(ts), Some(off)) => vec![(ts, off)],
            _ => Vec::new(),
        },
    }
}

/// The first record with a timestamp at or after `ts`.
fn first_at_or_after(engine: &Engine, key: &Key, start: u64, ts: i64) -> Option<(i64, i64)> {
    let mut found = None;
    scan(engine, key, start, |stored| {
        if batch::max_timestamp(stored).is_some_and(|max| max >= ts) {
            found = records_of(stored)
                .into_iter()
                .find(|(t, o)| *t >= ts && *o >= start as i64);
            return found.is_none();
        }
        true
    });
    found
}

/// The record with the largest timestamp (the earliest such, as Kafka answers).
fn max_timestamp(engine: &Engine, key: &Key, start: u64) -> Option<(i64, i64)> {
    let mut best: Option<(i64, Bytes)> = None;
    scan(engine, key, start, |stored| {
        if let Some(max) = batch::max_timestamp(stored) {
            if best.as_ref().is_none_or(|(b, _)| max > *b) {
                best = Some((max, stored.clone()));
            }
        }
        true
    });
    let (max, stored) = best?;
    records_of(&stored)
        .into_iter()
        .find(|(t, o)| *t == max && *o >= start as i64)
        .or(Some((max, batch::base_offset(&stored)?)))
}
