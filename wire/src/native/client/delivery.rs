//! Records pushed to a subscription, handed out one at a time.
//!
//! A Notify carries one stored Kafka batch. When the [`Cursor`] opens it, it
//! reads the batch with [`kafka::records`](crate::kafka::records) once and
//! notes where each record's key, value and headers lie (byte ranges into the
//! batch, kept in buffers reused from batch to batch), so an uncompressed
//! record is delivered in place, straight from the ring. A compressed batch is
//! decompressed once and its records copied out. Records before the
//! subscription's position are skipped, so each is delivered once and in
//! offset order. The batch stays in the ring until its last record's
//! [`Delivery`] is dropped.

use std::collections::HashMap;
use std::ops::Range;

use super::Client;
use crate::kafka::batch::{ATTR_CONTROL, HEADER_BYTES};
use crate::kafka::records::BatchRecords;
use crate::native::frame::{self, Body};
use crate::native::link::Rx;
use crate::native::NativeError;

/// Where the batch's bytes are.
pub(crate) enum Source {
    /// The frame under the response ring's read position.
    Ring,
    /// A copy (stashed while waiting for an answer, or detached).
    Owned(Vec<u8>),
    /// Nothing held: the records were copied out (compressed batch).
    Empty,
}

/// One record of an uncompressed batch: ranges into the batch bytes.
#[derive(Clone, Debug)]
struct Span {
    offset: i64,
    timestamp: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// Its headers' index range in `Bufs::headers`.
    headers: Range<usize>,
}

/// One header of an uncompressed record.
#[derive(Clone, Debug)]
struct HeaderSpan {
    name: Range<usize>,
    value: Option<Range<usize>>,
}

/// One record copied out of a compressed batch.
#[derive(Clone, Debug)]
struct OwnedRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The cursor's buffers, reused from batch to batch (no allocation per record).
#[derive(Default)]
pub(crate) struct Bufs {
    spans: Vec<Span>,
    headers: Vec<HeaderSpan>,
    owned: Vec<OwnedRecord>,
}

/// Position in one Notify's batch.
pub(crate) struct Cursor {
    pub(crate) source: Source,
    pub(crate) sub: u64,
    partition: i32,
    /// The batch's range within the source frame.
    batch: Range<usize>,
    bufs: Bufs,
    /// Index of the next record to look at.
    next: usize,
    /// Index of the record the live delivery shows.
    current: Option<usize>,
}

fn source_bytes<'a>(source: &'a Source, rx: &'a Rx) -> &'a [u8] {
    match source {
        Source::Ring => rx.current().unwrap_or_default(),
        Source::Owned(v) => v,
        Source::Empty => &[],
    }
}

/// The range `part` occupies inside `whole` (it must be a sub-slice).
fn range_in(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

fn malformed(e: impl std::fmt::Display) -> NativeError {
    NativeError::Protocol(format!("a Notify carries a malformed record batch: {e}"))
}

impl Cursor {
    /// Starts on the Notify frame in `source`; `None` (giving the buffers
    /// back) when it is for no live subscription or is a control batch.
    pub(crate) fn open(
        source: Source,
        rx: &Rx,
        subs: &HashMap<u64, String>,
        mut bufs: Bufs,
    ) -> Result<Result<Cursor, Bufs>, NativeError> {
        bufs.spans.clear();
        bufs.headers.clear();
        bufs.owned.clear();
        let bytes = source_bytes(&source, rx);
        let f = frame::decode(bytes)?;
        let Body::Notify(n) = f.body else {
            return Err(NativeError::Protocol("expected a Notify frame".into()));
        };
        let batch = n.batch;
        if !subs.contains_key(&f.id) {
            return Ok(Err(bufs));
        }
        if batch.len() >= HEADER_BYTES
            && i16::from_be_bytes([batch[21], batch[22]]) & ATTR_CONTROL != 0
        {
            return Ok(Err(bufs));
        }
        let records = BatchRecords::parse(batch).map_err(malformed)?;
        let compressed = batch.len() >= HEADER_BYTES && batch[22] & 0x7 != 0;
        for r in records.iter() {
            let r = r.map_err(malformed)?;
            if compressed {
                bufs.owned.push(OwnedRecord {
                    offset: r.offset,
                    timestamp: r.timestamp_ms,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r
                        .headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                });
                continue;
            }
            let at = |part: &[u8]| {
                range_in(batch, part).ok_or_else(|| malformed("a record outside its batch"))
            };
            let first_header = bufs.headers.len();
            for (name, value) in r.headers() {
                bufs.headers.push(HeaderSpan {
                    name: at(name)?,
                    value: value.map(at).transpose()?,
                });
            }
            bufs.spans.push(Span {
                offset: r.offset,
                timestamp: r.timestamp_ms,
                key: r.key.map(at).transpose()?,
                value: r.value.map(at).transpose()?,
                headers: first_header..bufs.headers.len(),
            });
        }
        let start = range_in(bytes, batch).ok_or_else(|| malformed("a batch outside its frame"))?;
        let sub = f.id;
        let partition = n.partition;
        Ok(Ok(Cursor {
            source: if compressed { Source::Empty } else { source },
            sub,
            partition,
            batch: start,
            bufs,
            next: 0,
            current: None,
        }))
    }

    /// Hands the buffers back for the next batch.
    pub(crate) fn into_bufs(self) -> Bufs {
        self.bufs
    }

    /// True while the batch sits in the ring (consume it when done).
    pub(crate) fn holds_ring(&self) -> bool {
        matches!(self.source, Source::Ring)
    }

    fn len(&self) -> usize {
        self.bufs.spans.len().max(self.bufs.owned.len())
    }

    fn offset_at(&self, i: usize) -> i64 {
        match self.bufs.spans.get(i) {
            Some(s) => s.offset,
            None => self.bufs.owned.get(i).map_or(i64::MAX, |r| r.offset),
        }
    }

    /// Moves to the next record at or past the subscription's position;
    /// false when the batch has no more.
    pub(crate) fn advance(&mut self, positions: &mut HashMap<(u64, i32), i64>) -> bool {
        let key = (self.sub, self.partition);
        let want = positions.get(&key).copied().unwrap_or(i64::MIN);
        self.current = None;
        while self.next < self.len() {
            let i = self.next;
            self.next += 1;
            let offset = self.offset_at(i);
            if offset >= want {
                self.current = Some(i);
                positions.insert(key, offset.saturating_add(1));
                return true;
            }
        }
        false
    }

    /// True when every record has been handed out.
    pub(crate) fn exhausted(&self) -> bool {
        self.next >= self.len()
    }
}

/// One record pushed to a subscription. Its key and value are views into the
/// ring (uncompressed batches) until it is dropped; dropping the last record
/// of a batch hands the batch's ring space back to the broker.
pub struct Delivery<'a> {
    client: &'a mut Client,
}

enum Shown<'c> {
    Span(&'c Span),
    Owned(&'c OwnedRecord),
}

impl<'a> Delivery<'a> {
    pub(super) fn new(client: &'a mut Client) -> Delivery<'a> {
        Delivery { client }
    }

    fn cursor(&self) -> Option<&Cursor> {
        self.client.cursor.as_ref()
    }

    fn shown(&self) -> Option<Shown<'_>> {
        let c = self.cursor()?;
        let i = c.current?;
        match c.bufs.spans.get(i) {
            Some(s) => Some(Shown::Span(s)),
            None => c.bufs.owned.get(i).map(Shown::Owned),
        }
    }

    fn batch(&self) -> &[u8] {
        match self.cursor() {
            Some(c) => source_bytes(&c.source, &self.client.rx)
                .get(c.batch.clone())
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
        self.cursor().map_or(-1, |c| c.partition)
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        match self.shown() {
            Some(Shown::Span(s)) => s.offset,
            Some(Shown::Owned(r)) => r.offset,
            None => -1,
        }
    }

    /// The record's timestamp, ms (log-append time when the topic uses it).
    pub fn timestamp_ms(&self) -> i64 {
        match self.shown() {
            Some(Shown::Span(s)) => s.timestamp,
            Some(Shown::Owned(r)) => r.timestamp,
            None => -1,
        }
    }

    /// The key; `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        match self.shown()? {
            Shown::Span(s) => self.batch().get(s.key.clone()?),
            Shown::Owned(r) => r.key.as_deref(),
        }
    }

    /// The value; `None` for a null value (a tombstone).
    pub fn value_or_null(&self) -> Option<&[u8]> {
        match self.shown()? {
            Shown::Span(s) => self.batch().get(s.value.clone()?),
            Shown::Owned(r) => r.value.as_deref(),
        }
    }

    /// The value (empty for a null value).
    pub fn value(&self) -> &[u8] {
        self.value_or_null().unwrap_or_default()
    }

    /// The record's headers, in order: name bytes (UTF-8 by convention) and
    /// value (`None` for a null value).
    pub fn headers(&self) -> DeliveryHeaders<'_> {
        let inner = match self.shown() {
            Some(Shown::Span(s)) => {
                let spans = self
                    .cursor()
                    .and_then(|c| c.bufs.headers.get(s.headers.clone()))
                    .unwrap_or_default();
                HeadersInner::Span(self.batch(), spans.iter())
            }
            Some(Shown::Owned(r)) => HeadersInner::Owned(r.headers.iter()),
            None => HeadersInner::Owned([].iter()),
        };
        DeliveryHeaders(inner)
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
    Span(&'a [u8], std::slice::Iter<'a, HeaderSpan>),
    Owned(std::slice::Iter<'a, (Vec<u8>, Option<Vec<u8>>)>),
}

impl<'a> Iterator for DeliveryHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            HeadersInner::Span(batch, it) => {
                let h = it.next()?;
                let name = batch.get(h.name.clone()).unwrap_or_default();
                Some((name, h.value.clone().and_then(|r| batch.get(r))))
            }
            HeadersInner::Owned(it) => it.next().map(|(k, v)| (k.as_slice(), v.as_deref())),
        }
    }
}
