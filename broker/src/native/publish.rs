//! Native publishes: Publish frames already queued for one partition become
//! one Kafka v2 batch, appended through the Kafka produce path.
//!
//! The core thread adds each Publish it reads to the connection's open batch
//! as long as the next one is for the same partition and the batch stays
//! under [`COALESCE_BYTES`] (and the topic's `max.message.bytes`); the batch is appended when the
//! queue runs dry, another request comes, or the partition changes. Nothing
//! ever waits for more records to arrive. Each publish is answered with its
//! own offset (the batch's base offset plus its index): for a volatile topic
//! at once (the append hook has already pushed the batch to its subscribers),
//! for a persistent one once durable, from a tokio task.
//!
//! Partition -1 picks by the key with Kafka's murmur2 partitioner (so a key
//! lands where a Java producer, or librdkafka with `murmur2_random`, puts it);
//! without a key, the sticky partitioner: one partition per batch, the next
//! batch the next partition.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::ResponseError;
use kascade_wire::kafka::records::BatchBuilder;
use kascade_wire::native::frame::{error_code, Ack, Body, Frame, Publish};

use super::connection::{Close, Conn};
use super::subscriptions::visible_at_once;
use super::NativeShared;
use crate::kafka::api::produce::append_batches;
use crate::kafka::topics::Topic;

/// Publishes are coalesced into a batch while it stays under this size (a
/// larger record still makes a batch of its own). Java's producer batches
/// 16 KiB by default too; it is enough to spread a put over hundreds of small
/// records, keeps a subscriber's first record close, and fits the frames of
/// the smallest ring a client may ask for (64 KiB rings carry 32 KiB frames),
/// so any subscriber can take any natively published batch.
pub const COALESCE_BYTES: usize = 16 << 10;

/// The publishes of one connection being coalesced into one batch.
#[derive(Debug, Default)]
pub(super) struct PendingBatch {
    builder: BatchBuilder,
    topic: Option<Arc<Topic>>,
    partition: i32,
    /// Chosen by the sticky partitioner (no key, no partition given).
    sticky: bool,
    /// Each publish's request id and record timestamp (ms), in batch order.
    ids: Vec<(u64, i64)>,
    /// The sticky partitioner's next pick.
    next_sticky: u32,
}

impl PendingBatch {
    /// Drops what is pending (the connection is closing).
    pub(super) fn clear(&mut self) {
        let _ = self.builder.finish();
        self.ids.clear();
        self.topic = None;
    }
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among `partitions` (> 0).
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The native error code for a refused append.
fn error_code_of(e: ResponseError) -> u16 {
    match e {
        ResponseError::UnknownTopicOrPartition => error_code::UNKNOWN_TOPIC_OR_PARTITION,
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => error_code::TOO_LARGE,
        ResponseError::CorruptMessage
        | ResponseError::InvalidRecord
        | ResponseError::UnsupportedForMessageFormat => error_code::BAD_FRAME,
        ResponseError::NotLeaderOrFollower => error_code::SHUTTING_DOWN,
        _ => error_code::ENGINE,
    }
}

impl Conn {
    /// Adds a Publish to the open batch (appending the batch first when this
    /// one is for another partition or would make it too large).
    pub(super) fn publish(
        &mut self,
        ns: &NativeShared,
        id: u64,
        p: &Publish<'_>,
    ) -> Result<(), Close> {
        let topic = match &self.batch.topic {
            Some(t) if t.name == p.topic => t.clone(),
            _ => match ns.kafka.topics.get(p.topic) {
                Some(t) => t,
                None => {
                    let message = format!(
                        "topic {:?} does not exist; create it first (kascade topic create {})",
                        p.topic, p.topic
                    );
                    return self.respond_error(
                        id,
                        error_code::UNKNOWN_TOPIC_OR_PARTITION,
                        &message,
                    );
                }
            },
        };
        let same_topic = self
            .batch
            .topic
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &topic));
        let (partition, sticky) = match (p.partition, p.key) {
            (-1, Some(key)) => (murmur2_partition(key, topic.partitions), false),
            // The open batch's partition, while it is one the sticky partitioner chose.
            (-1, None) if same_topic && self.batch.sticky && !self.batch.builder.is_empty() => {
                (self.batch.partition, true)
            }
            (-1, None) => {
                let pick = self.batch.next_sticky;
                self.batch.next_sticky = pick.wrapping_add(1);
                ((pick % topic.partitions.max(1) as u32) as i32, true)
            }
            (p, _) if p >= 0 && p < topic.partitions => (p, false),
            (other, _) => {
                let message = format!(
                    "topic {} has partitions 0 to {}; there is no partition {other} (use -1 to let the broker choose)",
                    topic.name,
                    topic.partitions - 1
                );
                return self.respond_error(id, error_code::UNKNOWN_TOPIC_OR_PARTITION, &message);
            }
        };
        let size = 32
            + p.key.map_or(0, <[u8]>::len)
            + p.value.len()
            + p.headers
                .iter()
                .map(|h| 10 + h.name.len() + h.value.map_or(0, <[u8]>::len))
                .sum::<usize>();
        if !self.batch.builder.is_empty()
            && (!same_topic
                || partition != self.batch.partition
                || self.batch.builder.len() + size > topic.max_message_bytes.min(COALESCE_BYTES))
        {
            self.flush_publish(ns)?;
        }
        let timestamp = if p.timestamp_ms >= 0 {
            p.timestamp_ms
        } else {
            now_ms()
        };
        self.batch.builder.push(
            timestamp,
            p.key,
            Some(p.value),
            p.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
        );
        self.batch.ids.push((id, timestamp));
        self.batch.partition = partition;
        self.batch.sticky = sticky && (self.batch.ids.len() == 1 || self.batch.sticky);
        self.batch.topic = Some(topic);
        Ok(())
    }

    /// Appends the open batch, if any, and answers its publishes: at once for
    /// a volatile topic (after pushing the batch to its subscribers), once
    /// durable (on a tokio task) for a persistent one.
    pub(super) fn flush_publish(&mut self, ns: &NativeShared) -> Result<(), Close> {
        if self.batch.builder.is_empty() {
            return Ok(());
        }
        let records = self.batch.builder.finish();
        let ids = std::mem::take(&mut self.batch.ids);
        let Some(topic) = self.batch.topic.clone() else {
            self.batch.ids = ids;
            self.batch.ids.clear();
            return Ok(());
        };
        let partition = self.batch.partition;
        ns.metrics.publishes.increment(ids.len() as u64);
        ns.metrics.batches.increment(1);
        // `sole`: the batch's buffer is ours alone, so it is stored without a copy.
        let result = match append_batches(&ns.kafka, &topic, partition, records, true) {
            Ok((key, written)) => match written.last() {
                Some(w) => {
                    let base = w.seq as i64;
                    let append_ms = topic
                        .log_append_time
                        .then_some((w.timestamp_us / 1000) as i64);
                    let ack = |i: usize, ts: i64| Ack {
                        partition,
                        offset: base + i as i64,
                        version: w.version,
                        timestamp: append_ms.unwrap_or(ts),
                    };
                    let engine = &ns.kafka.engine;
                    if visible_at_once(&topic) {
                        // Visible now, and already pushed to the subscribers
                        // (by the append hook, on this thread): answer.
                        self.answer_all(&ids, |i, ts| Ok(ack(i, ts)))
                    } else {
                        match engine.wait_for_seq(&key, w.seq) {
                            Ok(waiter) if !waiter.is_ready() => {
                                let acks = ids
                                    .iter()
                                    .enumerate()
                                    .map(|(i, &(id, ts))| (id, ack(i, ts)))
                                    .collect();
                                self.respond_when(ns, waiter, acks);
                                Ok(())
                            }
                            Ok(_) => self.answer_all(&ids, |i, ts| Ok(ack(i, ts))),
                            Err(e) => {
                                let message = e.to_string();
                                self.answer_all(&ids, |_, _| Err((error_code::ENGINE, &message)))
                            }
                        }
                    }
                }
                None => self.answer_all(&ids, |_, _| {
                    Err((
                        error_code::ENGINE,
                        "the engine stored nothing for the batch",
                    ))
                }),
            },
            Err((code, message)) => {
                let message = message.unwrap_or_else(|| format!("{code:?}"));
                self.answer_all(&ids, |_, _| Err((error_code_of(code), &message)))
            }
        };
        self.batch.ids = ids;
        self.batch.ids.clear();
        result
    }

    /// Answers each publish of a batch with what `answer(index, timestamp)` gives.
    fn answer_all<'m>(
        &mut self,
        ids: &[(u64, i64)],
        answer: impl Fn(usize, i64) -> Result<Ack, (u16, &'m str)>,
    ) -> Result<(), Close> {
        for (i, &(id, ts)) in ids.iter().enumerate() {
            match answer(i, ts) {
                Ok(ack) => self.respond(&Frame::new(id, Body::Ack(ack)))?,
                Err((code, message)) => self.respond_error(id, code, message)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn key_partitions_stay_in_range() {
        for n in 1..8 {
            for key in [&b""[..], b"a", b"key-17", &[0xff; 9]] {
                let p = murmur2_partition(key, n);
                assert!((0..n).contains(&p));
            }
        }
    }
}
