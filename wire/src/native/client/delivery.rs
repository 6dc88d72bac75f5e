//! Records pushed to a subscription, handed out one at a time.
//!
//! A Notify carries one stored Kafka batch. The [`Cursor`] walks its records
//! (in place when uncompressed) and skips those before the subscription's
//! position, so each record is delivered once and in offset order. The batch
//! stays in the ring until its last record's [`Delivery`] is dropped.

use std::collections::HashMap;
use std::ops::Range;

use super::batch::{self, BatchHead, HeaderWalk, OwnedRecord, RecordSpan};
use super::Client;
use crate::kafka::batch::HEADER_BYTES;
use crate::native::frame::{self, Body};
use crate::native::link::Rx;
use crate::native::NativeError;

/// Where the batch's bytes are.
pub(crate) enum Source {
    /// The frame under the response ring's read position.
    Ring,
    /// A copy (stashed while waiting for an answer, or detached).
    Owned(Vec<u8>),
    /// Nothing held: the records were decoded into `owned`.
    Empty,
}

/// The record the live delivery shows.
enum Current {
    Span(RecordSpan),
    Owned(OwnedRecord),
}

/// Position in one Notify's batch.
pub(crate) struct Cursor {
    pub(crate) source: Source,
    pub(crate) sub: u64,
    pub(crate) state: State,
}

pub(crate) struct State {
    partition: i32,
    /// The batch's range within the source frame.
    batch: Range<usize>,
    head: Option<BatchHead>,
    /// In place: where the next record starts (within the batch) and how many are left.
    next_at: usize,
    left: u32,
    /// Compressed: the decoded records, in reverse (popped from the end).
    owned: Vec<OwnedRecord>,
    current: Option<Current>,
    offset: i64,
    timestamp: i64,
}

fn source_bytes<'a>(source: &'a Source, rx: &'a Rx) -> &'a [u8] {
    match source {
        Source::Ring => rx.current().unwrap_or_default(),
        Source::Owned(v) => v,
        Source::Empty => &[],
    }
}

impl Cursor {
    /// Starts on the Notify frame in `source`; `None` when it is for no live
    /// subscription or carries no records to deliver.
    pub(crate) fn open(
        source: Source,
        rx: &Rx,
        subs: &HashMap<u64, String>,
    ) -> Result<Option<Cursor>, NativeError> {
        let bytes = source_bytes(&source, rx);
        let f = frame::decode(bytes)?;
        let Body::Notify(n) = f.body else {
            return Err(NativeError::Protocol("expected a Notify frame".into()));
        };
        if !subs.contains_key(&f.id) {
            return Ok(None);
        }
        let start = n.batch.as_ptr() as usize - bytes.as_ptr() as usize;
        let head = batch::head(n.batch)
            .ok_or_else(|| NativeError::Protocol("a Notify carries a malformed record batch".into()))?;
        if head.is_control() {
            return Ok(None);
        }
        let mut state = State {
            partition: n.partition,
            batch: start..start + n.batch.len(),
            head: Some(head),
            next_at: HEADER_BYTES,
            left: head.record_count,
            owned: Vec::new(),
            current: None,
            offset: 0,
            timestamp: 0,
        };
        let sub = f.id;
        let compressed = head.compression() != 0;
        if compressed {
            let mut records = batch::decode_compressed(n.batch)
                .map_err(|e| NativeError::Protocol(format!("cannot decode a compressed batch: {e}")))?;
            records.reverse();
            state.owned = records;
            state.left = 0;
            state.head = None;
        }
        Ok(Some(Cursor {
            source: if compressed { Source::Empty } else { source },
            sub,
            state,
        }))
    }

    /// True while the batch sits in the ring (consume it when done).
    pub(crate) fn holds_ring(&self) -> bool {
        matches!(self.source, Source::Ring)
    }

    /// Moves to the next record at or past the subscription's position;
    /// false when the batch has no more.
    pub(crate) fn advance(&mut self, rx: &Rx, positions: &mut HashMap<(u64, i32), i64>) -> Result<bool, NativeError> {
        let bytes = source_bytes(&self.source, rx);
        let s = &mut self.state;
        let key = (self.sub, s.partition);
        let want = positions.get(&key).copied().unwrap_or(i64::MIN);
        s.current = None;
        loop {
            if let Some(head) = s.head.filter(|_| s.left > 0) {
                let batch = bytes.get(s.batch.clone()).unwrap_or_default();
                let (span, next) = batch::record_at(batch, s.next_at)
                    .ok_or_else(|| NativeError::Protocol("a Notify's record batch has a malformed record".into()))?;
                s.next_at = next;
                s.left -= 1;
                let offset = head.base_offset.wrapping_add(span.offset_delta);
                if offset < want {
                    continue;
                }
                s.offset = offset;
                s.timestamp = head.timestamp(span.timestamp_delta);
                s.current = Some(Current::Span(span));
            } else if let Some(r) = s.owned.pop() {
                if r.offset < want {
                    continue;
                }
                s.offset = r.offset;
                s.timestamp = r.timestamp;
                s.current = Some(Current::Owned(r));
            } else {
                return Ok(false);
            }
            positions.insert(key, s.offset + 1);
            return Ok(true);
        }
    }

    fn exhausted(&self) -> bool {
        (self.state.head.is_none() || self.state.left == 0) && self.state.owned.is_empty()
    }
}

/// One record pushed to a subscription. Its key and value are views into the
/// ring (uncompressed batches) until it is dropped; dropping the last record
/// of a batch hands the batch's ring space back to the broker.
pub struct Delivery<'a> {
    client: &'a mut Client,
}

impl<'a> Delivery<'a> {
    pub(super) fn new(client: &'a mut Client) -> Delivery<'a> {
        Delivery { client }
    }

    fn cursor(&self) -> Option<&Cursor> {
        self.client.cursor.as_ref()
    }

    fn batch(&self) -> &[u8] {
        match self.cursor() {
            Some(c) => source_bytes(&c.source, &self.client.rx)
                .get(c.state.batch.clone())
                .unwrap_or_default(),
            None => &[],
        }
    }

    /// The subscription it was pushed to.
    pub fn subscription(&self) -> u64 {
        self.cursor().map_or(0, |c| c.sub)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.cursor()
            .and_then(|c| self.client.subs.get(&c.sub))
            .map_or("", String::as_str)
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.cursor().map_or(-1, |c| c.state.partition)
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.cursor().map_or(-1, |c| c.state.offset)
    }

    /// The record's timestamp, ms (log-append time when the topic uses it).
    pub fn timestamp_ms(&self) -> i64 {
        self.cursor().map_or(-1, |c| c.state.timestamp)
    }

    /// The key; `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        match self.cursor()?.state.current.as_ref()? {
            Current::Span(s) => s.key.clone().and_then(|r| self.batch().get(r)),
            Current::Owned(r) => r.key.as_deref(),
        }
    }

    /// The value (empty for a null value).
    pub fn value(&self) -> &[u8] {
        let current = self.cursor().and_then(|c| c.state.current.as_ref());
        match current {
            Some(Current::Span(s)) => s.value.clone().and_then(|r| self.batch().get(r)).unwrap_or_default(),
            Some(Current::Owned(r)) => r.value.as_deref().unwrap_or_default(),
            None => &[],
        }
    }

    /// The record's headers, in order: `(name, value)`, `None` for a null value.
    pub fn headers(&self) -> DeliveryHeaders<'_> {
        match self.cursor().and_then(|c| c.state.current.as_ref()) {
            Some(Current::Span(s)) => DeliveryHeaders(HeadersInner::Span(HeaderWalk::new(
                self.batch(),
                s.headers.clone(),
                s.header_count,
            ))),
            Some(Current::Owned(r)) => DeliveryHeaders(HeadersInner::Owned(r.headers.iter())),
            None => DeliveryHeaders(HeadersInner::Owned([].iter())),
        }
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        if self.client.cursor.as_ref().is_some_and(Cursor::exhausted) {
            if let Err(e) = self.client.finish_cursor() {
                tracing::debug!(error = %e, "native client: releasing a delivered batch failed");
            }
        }
    }
}

/// Iterator over a [`Delivery`]'s headers.
pub struct DeliveryHeaders<'a>(HeadersInner<'a>);

enum HeadersInner<'a> {
    Span(HeaderWalk<'a>),
    Owned(std::slice::Iter<'a, (String, Option<bytes::Bytes>)>),
}

impl<'a> Iterator for DeliveryHeaders<'a> {
    type Item = (&'a str, Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            HeadersInner::Span(w) => w.next(),
            HeadersInner::Owned(it) => it.next().map(|(k, v)| (k.as_str(), v.as_deref())),
        }
    }
}
