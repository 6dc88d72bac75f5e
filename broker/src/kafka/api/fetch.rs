//! Fetch: read each partition's batches from an offset, long-polling on the
//! engine's waiters (never a sleep loop) until `min_bytes` have arrived or
//! `max_wait_ms` has passed; full requests and incremental fetch sessions.
//!
//! The batch holding the fetch offset is always returned whole, and the first
//! non-empty partition always returns at least one batch even when it is
//! larger than the limits, as Kafka does, so a consumer never stalls on a big
//! message. Batches go out as stored; several are concatenated once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use kascade_core::{Key, RangeLimit, Waiter};

use super::topic_name;
use crate::kafka::fetch_sessions::{SessionError, SessionPartition};
use crate::kafka::topics::Topic;
use crate::kafka::State;

/// One partition the request (or its session) fetches.
#[derive(Clone, Debug)]
struct Wanted {
    topic: String,
    partition: i32,
    p: SessionPartition,
}

/// What reading one partition found.
struct Read {
    data: PartitionData,
    bytes: usize,
    /// Key and offset to wait on when there was nothing to read.
    wait_on: Option<(Key, u64)>,
}

/// Serves a fetch.
pub(super) async fn handle(state: &State, version: i16, request: FetchRequest) -> FetchResponse {
    let mut from_request: Vec<Wanted> = Vec::new();
    for t in &request.topics {
        let name = if t.topic.0.is_empty() {
            match state.topics.by_id(t.topic_id) {
                Some(topic) => topic.name.clone(),
                None => format!("?{}", t.topic_id),
            }
        } else {
            t.topic.0.to_string()
        };
        for p in &t.partitions {
            from_request.push(Wanted {
                topic: name.clone(),
                partition: p.partition,
                p: SessionPartition {
                    topic_id: t.topic_id,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    sent_high_watermark: -1,
                    sent_log_start: -1,
                },
            });
        }
    }
    let mut session_id = 0;
    let mut changed_only = false;
    let wanted: Vec<Wanted> = match (request.session_id, request.session_epoch) {
        (id, -1) => {
            if id != 0 {
                state.fetch_sessions.close(id);
            }
            from_request
        }
        (id, 0) => {
            if id != 0 {
                state.fetch_sessions.close(id);
            }
            if version >= 7 {
                let map = from_request
                    .iter()
                    .map(|w| ((w.topic.clone(), w.partition), w.p.clone()))
                    .collect::<BTreeMap<_, _>>();
                session_id = state.fetch_sessions.create(map);
            }
            from_request
        }
        (id, epoch) => {
            let forgotten: Vec<(String, i32)> = request
                .forgotten_topics_data
                .iter()
                .flat_map(|f| {
                    let name = if f.topic.0.is_empty() {
                        state
                            .topics
                            .by_id(f.topic_id)
                            .map(|t| t.name.clone())
                            .unwrap_or_else(|| format!("?{}", f.topic_id))
                    } else {
                        f.topic.0.to_string()
                    };
                    f.partitions.iter().map(move |p| (name.clone(), *p))
                })
                .collect();
            let updated = state.fetch_sessions.with(id, epoch, |s| {
                for w in &from_request {
                    let key = (w.topic.clone(), w.partition);
                    let sent = s
                        .partitions
                        .get(&key)
                        .map(|old| (old.sent_high_watermark, old.sent_log_start));
                    let mut p = w.p.clone();
                    if let Some((hw, start)) = sent {
                        p.sent_high_watermark = hw;
                        p.sent_log_start = start;
                    }
                    s.partitions.insert(key, p);
                }
                for f in &forgotten {
                    s.partitions.remove(f);
                }
                s.partitions
                    .iter()
                    .map(|((topic, partition), p)| Wanted {
                        topic: topic.clone(),
                        partition: *partition,
                        p: p.clone(),
                    })
                    .collect::<Vec<_>>()
            });
            match updated {
                Ok(w) => {
                    session_id = id;
                    changed_only = true;
                    w
                }
                Err(e) => {
                    let code = match e {
                        SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                        SessionError::BadEpoch => ResponseError::InvalidFetchSessionEpoch,
                    };
                    return FetchResponse::default().with_error_code(code.code());
                }
            }
        }
    };

    let topics: BTreeMap<String, Option<Arc<Topic>>> = wanted
        .iter()
        .map(|w| (w.topic.clone(), state.topics.get(&w.topic)))
        .collect();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let reads = loop {
        let reads = read_all(state, &wanted, &topics, max_bytes, changed_only);
        let bytes: usize = reads.iter().map(|r| r.bytes).sum();
        let errors = reads.iter().any(|r| r.data.error_code != 0);
        let news = changed_only && reads.iter().any(|r| included(r, changed_only));
        let enough = min_bytes == 0 || bytes >= min_bytes;
        if enough || errors || news || tokio::time::Instant::now() >= deadline {
            break reads;
        }
        let mut waiters = Vec::new();
        for (key, offset) in reads.iter().filter_map(|r| r.wait_on.as_ref()) {
            if let Ok(w) = state.engine.wait_for_seq(key, *offset) {
                waiters.push(w);
            }
        }
        let ready = waiters.iter().any(Waiter::is_ready);
        if !ready
            && tokio::time::timeout_at(deadline, any_of(&mut waiters))
                .await
                .is_err()
        {
            // The deadline passed: answer with whatever is there now.
            break read_all(state, &wanted, &topics, max_bytes, changed_only);
        }
        // Woken (or min_bytes not reached yet): read again.
    };

    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut sent = Vec::new();
    for (w, r) in wanted.iter().zip(reads) {
        if !included(&r, changed_only) {
            continue;
        }
        sent.push((
            (w.topic.clone(), w.partition),
            r.data.high_watermark,
            r.data.log_start_offset,
        ));
        let same_topic = responses.last().is_some_and(|t: &FetchableTopicResponse| {
            if version >= 13 {
                t.topic_id == w.p.topic_id
            } else {
                t.topic.0.as_str() == w.topic
            }
        });
        if !same_topic {
            let mut t = FetchableTopicResponse::default().with_topic_id(w.p.topic_id);
            if version < 13 {
                t = t.with_topic(topic_name(&w.topic));
            }
            responses.push(t);
        }
        if let Some(t) = responses.last_mut() {
            t.partitions.push(r.data);
        }
    }
    if session_id != 0 {
        state.fetch_sessions.record_sent(session_id, &sent);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses)
}

/// In an incremental session, only partitions with news are sent.
fn included(r: &Read, changed_only: bool) -> bool {
    !changed_only || r.bytes > 0 || r.data.error_code != 0 || r.wait_on.is_none()
}

/// Resolves when any waiter fires; never when there are none.
fn any_of(waiters: &mut [Waiter]) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        for w in waiters.iter_mut() {
            if Pin::new(w).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
}

/// Reads every wanted partition within the response's byte budget.
fn read_all(
    state: &State,
    wanted: &[Wanted],
    topics: &BTreeMap<String, Option<Arc<Topic>>>,
    max_bytes: usize,
    changed_only: bool,
) -> Vec<Read> {
    let mut budget = max_bytes;
    let mut first = true;
    wanted
        .iter()
        .map(|w| {
            let topic = topics.get(&w.topic).and_then(|t| t.as_ref());
            let r = read_one(state, w, topic, budget, first, changed_only);
            if r.bytes > 0 {
                first = false;
                budget = budget.saturating_sub(r.bytes);
            }
            r
        })
        .collect()
}

/// Reads one partition.
fn read_one(
    state: &State,
    w: &Wanted,
    topic: Option<&Arc<Topic>>,
    budget: usize,
    first: bool,
    changed_only: bool,
) -> Read {
    let data = PartitionData::default().with_partition_index(w.partition);
    let fail = |code: ResponseError| Read {
        data: data
            .clone()
            .with_error_code(code.code())
            .with_high_watermark(-1),
        bytes: 0,
        wait_on: None,
    };
    let Some(topic) = topic else {
        return fail(if w.topic.starts_with('?') {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        });
    };
    let Some(key) = topic.key(w.partition) else {
        return fail(ResponseError::UnknownTopicOrPartition);
    };
    let epoch = topic.leader_epoch();
    if w.p.current_leader_epoch >= 0 && w.p.current_leader_epoch != epoch {
        return fail(if w.p.current_leader_epoch > epoch {
            ResponseError::UnknownLeaderEpoch
        } else {
            ResponseError::FencedLeaderEpoch
        });
    }
    let (start, end) = match state.engine.bounds(key) {
        Ok(b) => (b.start_seq as i64, b.next_seq as i64),
        Err(_) => (0, 0),
    };
    let data = data
        .with_high_watermark(end)
        .with_last_stable_offset(end)
        .with_log_start_offset(start);
    let offset = w.p.fetch_offset;
    if offset < start || offset > end {
        return Read {
            data: data.with_error_code(ResponseError::OffsetOutOfRange.code()),
            bytes: 0,
            wait_on: None,
        };
    }
    let unchanged = w.p.sent_high_watermark == end && w.p.sent_log_start == start;
    let wait_on = (!changed_only || unchanged).then(|| (key.clone(), offset as u64));
    let limit = (w.p.max_bytes.max(0) as usize).min(budget);
    if offset == end || (limit == 0 && !first) {
        return Read {
            data,
            bytes: 0,
            wait_on,
        };
    }
    let limit = RangeLimit {
        max_bytes: limit,
        max_versions: usize::MAX,
    };
    match state.engine.range(key, offset as u64, limit) {
        Ok(versions) if !versions.is_empty() => {
            let records = concat(versions.iter().map(|v| &v.value));
            Read {
                bytes: records.len(),
                data: data.with_records(Some(records)),
                wait_on: None,
            }
        }
        Ok(_) => Read {
            data,
            bytes: 0,
            wait_on,
        },
        Err(kascade_core::Error::SeqOutOfRange { .. }) => Read {
            data: data.with_error_code(ResponseError::OffsetOutOfRange.code()),
            bytes: 0,
            wait_on: None,
        },
        Err(e) => {
            tracing::error!(%key, "fetch failed: {e}");
            Read {
                data: data.with_error_code(ResponseError::KafkaStorageError.code()),
                bytes: 0,
                wait_on: None,
            }
        }
    }
}

/// One batch is sent as stored; several are copied once into one buffer.
fn concat<'a>(mut values: impl ExactSizeIterator<Item = &'a Bytes>) -> Bytes {
    if values.len() == 1 {
        return values.next().cloned().unwrap_or_default();
    }
    let parts: Vec<&Bytes> = values.collect();
    let mut out = BytesMut::with_capacity(parts.iter().map(|b| b.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.freeze()
}
