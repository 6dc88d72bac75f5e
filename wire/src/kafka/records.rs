//! The records inside a v2 batch: encoding new ones, and reading them in place.
//!
//! The broker stores batches as produced; only a face that needs single
//! records (the native client's subscriptions, lambdas bound to topics) reads
//! into them. Reading an uncompressed batch gives views into its bytes, with
//! no copy; a compressed one is decompressed once into a buffer the views
//! then borrow. Encoding writes one uncompressed batch with no producer id,
//! whose base offset and leader epoch the broker seals when it is placed.
//!
//! A record inside a batch, after the 61-byte batch header:
//! `length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//! key_length varint | key | value_length varint | value | header_count varint |
//! (header_key_length varint | header_key | header_value_length varint | value)*`.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, BatchError, HEADER_BYTES};

/// A record to encode: borrowed key, value and headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewRecord<'a> {
    /// The record key; `None` is Kafka's null key.
    pub key: Option<&'a [u8]>,
    /// The record value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Create time in ms since the epoch.
    pub timestamp_ms: i64,
}

/// Encodes `records` as one uncompressed v2 batch (base offset 0, no producer
/// id, CRC-32C computed) appended to `out`; the batch's size is returned.
///
/// An empty `records` writes nothing and returns 0.
pub fn encode_batch(records: &[NewRecord<'_>], out: &mut BytesMut) -> usize {
    let Some(first) = records.first() else {
        return 0;
    };
    out.reserve(HEADER_BYTES + records.iter().map(encoded_hint).sum::<usize>());
    let mut open = OpenBatch::begin(out, first.timestamp_ms);
    for r in records {
        open.push(
            out,
            r.timestamp_ms,
            r.key,
            r.value,
            r.headers.iter().map(|(k, v)| (k.as_bytes(), *v)),
        );
    }
    open.finish(out)
}

fn encoded_hint(r: &NewRecord<'_>) -> usize {
    24 + r.key.map_or(0, <[u8]>::len)
        + r.value.map_or(0, <[u8]>::len)
        + r.headers
            .iter()
            .map(|(k, v)| 10 + k.len() + v.map_or(0, <[u8]>::len))
            .sum::<usize>()
}

/// Builds one uncompressed v2 batch record by record, straight into its own
/// buffer: nothing is allocated per record once the buffer has grown, and
/// each key, value and header is copied once. The batch has no producer id;
/// its base offset and leader epoch are left for the broker to seal.
///
/// ```
/// use kascade_wire::kafka::records::{BatchBuilder, BatchRecords};
/// let mut b = BatchBuilder::new();
/// b.push(1_000, Some(b"k"), Some(b"v1"), std::iter::empty());
/// b.push(1_001, None, Some(b"v2"), [(&b"h"[..], Some(&b"x"[..]))].into_iter());
/// let batch = b.finish();
/// let records = BatchRecords::parse(&batch).unwrap();
/// assert_eq!(records.count(), 2);
/// ```
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: BytesMut,
    open: Option<OpenBatch>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// Records pushed since the last [`finish`](Self::finish).
    pub fn count(&self) -> u32 {
        self.open.as_ref().map_or(0, |o| o.count)
    }

    /// True when no record waits.
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }

    /// Bytes of the batch so far (its header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record; the first one sets the batch's base timestamp.
    pub fn push<'h, I>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
    ) where
        I: Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
    {
        let open = self
            .open
            .get_or_insert_with(|| OpenBatch::begin(&mut self.buf, timestamp_ms));
        open.push(&mut self.buf, timestamp_ms, key, value, headers);
    }

    /// Completes the batch (lengths, count, CRC) and hands it out; the
    /// builder is empty again. No records: an empty `Bytes`.
    pub fn finish(&mut self) -> Bytes {
        match self.open.take() {
            Some(open) => {
                open.finish(&mut self.buf);
                self.buf.split().freeze()
            }
            None => Bytes::new(),
        }
    }
}

/// A batch being written at `start` of some buffer.
#[derive(Debug)]
struct OpenBatch {
    start: usize,
    base_ts: i64,
    max_ts: i64,
    count: u32,
}

impl OpenBatch {
    /// Writes the batch header (lengths, count and CRC patched by `finish`).
    fn begin(out: &mut BytesMut, base_ts: i64) -> OpenBatch {
        let start = out.len();
        out.reserve(HEADER_BYTES);
        out.put_i64(0); // base offset: sealed by the broker
        out.put_i32(0); // batch length: patched in `finish`
        out.put_i32(-1); // leader epoch: sealed by the broker
        out.put_i8(2); // magic
        out.put_u32(0); // crc: patched in `finish`
        out.put_i16(0); // attributes: no compression, create time
        out.put_i32(0); // last offset delta: patched in `finish`
        out.put_i64(base_ts);
        out.put_i64(base_ts); // max timestamp: patched in `finish`
        out.put_i64(-1); // producer id
        out.put_i16(-1); // producer epoch
        out.put_i32(-1); // base sequence
        out.put_i32(0); // record count: patched in `finish`
        OpenBatch {
            start,
            base_ts,
            max_ts: base_ts,
            count: 0,
        }
    }

    fn push<'h, I>(
        &mut self,
        out: &mut BytesMut,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
    ) where
        I: Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
    {
        let ts_delta = timestamp_ms.wrapping_sub(self.base_ts);
        let offset_delta = i64::from(self.count);
        let mut header_count = 0usize;
        let mut header_bytes = 0usize;
        for (name, v) in headers.clone() {
            header_count += 1;
            header_bytes += nullable_len(Some(name)) + nullable_len(v);
        }
        let body = 1
            + varlong_len(ts_delta)
            + varlong_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + varlong_len(header_count as i64)
            + header_bytes;
        out.reserve(varlong_len(body as i64) + body);
        put_varlong(out, body as i64);
        out.put_u8(0); // attributes
        put_varlong(out, ts_delta);
        put_varlong(out, offset_delta);
        put_nullable(out, key);
        put_nullable(out, value);
        put_varlong(out, header_count as i64);
        for (name, v) in headers {
            put_nullable(out, Some(name));
            put_nullable(out, v);
        }
        self.max_ts = self.max_ts.max(timestamp_ms);
        self.count += 1;
    }

    /// Patches the header; returns the batch's size.
    fn finish(self, out: &mut BytesMut) -> usize {
        let start = self.start;
        let size = out.len() - start;
        let batch_length = (size - 12) as i32;
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        let last_delta = self.count as i32 - 1;
        out[start + 23..start + 27].copy_from_slice(&last_delta.to_be_bytes());
        out[start + 35..start + 43].copy_from_slice(&self.max_ts.to_be_bytes());
        out[start + 57..start + 61].copy_from_slice(&(self.count as i32).to_be_bytes());
        let crc = crc32c::crc32c(&out[start + 21..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        size
    }
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // 7 bits per byte; zero still takes one.
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// The records of one stored batch, ready to iterate.
#[derive(Debug)]
pub struct BatchRecords<'a> {
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    count: u32,
    body: Cow<'a, [u8]>,
}

/// One record read from a batch; its key, value and headers borrow the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset (base offset + delta).
    pub offset: i64,
    /// Create time, or the log-append time when the topic uses it, in ms.
    pub timestamp_ms: i64,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> RecordView<'a> {
    /// The record's headers, in order: name bytes (UTF-8 by convention) and value.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            rest: self.headers,
            left: self.header_count,
        }
    }
}

/// Iterator over a record's headers.
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut at = 0;
        // Checked when the record was read, so these cannot fail.
        let name = read_nullable(self.rest, &mut at).ok()?.unwrap_or_default();
        let value = read_nullable(self.rest, &mut at).ok()?;
        self.rest = &self.rest[at..];
        Some((name, value))
    }
}

impl<'a> BatchRecords<'a> {
    /// Reads the header of one stored v2 batch and, when compressed,
    /// decompresses its records. Never panics, whatever the bytes.
    pub fn parse(batch_bytes: &'a [u8]) -> Result<BatchRecords<'a>, BatchError> {
        if batch_bytes.len() < HEADER_BYTES {
            return Err(BatchError::Corrupt(format!(
                "a batch of {} bytes is shorter than its {HEADER_BYTES}-byte header",
                batch_bytes.len()
            )));
        }
        if batch_bytes[16] != 2 {
            return Err(BatchError::Magic(batch_bytes[16] as i8));
        }
        let be64 = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&batch_bytes[at..at + 8]);
            i64::from_be_bytes(x)
        };
        let attributes = i16::from_be_bytes([batch_bytes[21], batch_bytes[22]]);
        let count = i32::from_be_bytes([
            batch_bytes[57],
            batch_bytes[58],
            batch_bytes[59],
            batch_bytes[60],
        ]);
        let count = u32::try_from(count)
            .map_err(|_| BatchError::Corrupt(format!("negative record count {count}")))?;
        // The batch's own length bounds its records, whatever follows it.
        let length = i32::from_be_bytes([
            batch_bytes[8],
            batch_bytes[9],
            batch_bytes[10],
            batch_bytes[11],
        ]);
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&end| (HEADER_BYTES..=batch_bytes.len()).contains(&end))
            .ok_or_else(|| {
                BatchError::Corrupt(format!(
                    "batch length {length} does not fit the {} bytes given",
                    batch_bytes.len()
                ))
            })?;
        let section = &batch_bytes[HEADER_BYTES..end];
        let body = match attributes & 0x7 {
            0 => Cow::Borrowed(section),
            codec => Cow::Owned(decompress(codec, section)?.to_vec()),
        };
        let log_append_time = (attributes & batch::ATTR_LOG_APPEND_TIME != 0).then(|| be64(35));
        Ok(BatchRecords {
            base_offset: be64(0),
            base_timestamp: be64(27),
            log_append_time,
            count,
            body,
        })
    }

    /// The offset of the batch's first record.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Records the header announces.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The records in order; a malformed record ends the iteration with an error.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            records: self,
            at: 0,
            read: 0,
        }
    }
}

/// Iterator over the records of a [`BatchRecords`].
#[derive(Debug)]
pub struct RecordIter<'r> {
    records: &'r BatchRecords<'r>,
    at: usize,
    read: u32,
}

impl<'r> Iterator for RecordIter<'r> {
    type Item = Result<RecordView<'r>, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.read >= self.records.count {
            return None;
        }
        self.read += 1;
        let body: &'r [u8] = &self.records.body;
        match read_record(self.records, body, &mut self.at) {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                self.read = self.records.count;
                Some(Err(e))
            }
        }
    }
}

fn read_record<'r>(
    records: &BatchRecords<'_>,
    body: &'r [u8],
    at: &mut usize,
) -> Result<RecordView<'r>, BatchError> {
    let len = read_varlong(body, at)?;
    let len = usize::try_from(len).map_err(|_| corrupt("negative record length"))?;
    let end = at
        .checked_add(len)
        .filter(|&e| e <= body.len())
        .ok_or_else(|| corrupt("a record runs past the end of its batch"))?;
    let record = &body[..end];
    *at += 1; // attributes
    if *at > end {
        return Err(corrupt("a record ends inside its attributes"));
    }
    let ts_delta = read_varlong(record, at)?;
    let offset_delta = read_varlong(record, at)?;
    let key = read_nullable(record, at)?;
    let value = read_nullable(record, at)?;
    let header_count = read_varlong(record, at)?;
    let header_count =
        usize::try_from(header_count).map_err(|_| corrupt("negative header count"))?;
    let headers_start = *at;
    for _ in 0..header_count {
        read_nullable(record, at)?;
        read_nullable(record, at)?;
    }
    let headers = &record[headers_start..*at];
    *at = end;
    Ok(RecordView {
        offset: records.base_offset.wrapping_add(offset_delta),
        timestamp_ms: records
            .log_append_time
            .unwrap_or_else(|| records.base_timestamp.wrapping_add(ts_delta)),
        key,
        value,
        headers,
        header_count,
    })
}

fn corrupt(what: &str) -> BatchError {
    BatchError::Corrupt(what.to_string())
}

fn read_varlong(b: &[u8], at: &mut usize) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b
            .get(*at)
            .ok_or_else(|| corrupt("a varint runs past the end of its record"))?;
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(corrupt("a varint is longer than 10 bytes"))
}

fn read_nullable<'b>(b: &'b [u8], at: &mut usize) -> Result<Option<&'b [u8]>, BatchError> {
    let len = read_varlong(b, at)?;
    if len < 0 {
        return Ok(None);
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= b.len())
        .ok_or_else(|| corrupt("a key, value or header runs past the end of its record"))?;
    let v = &b[*at..end];
    *at = end;
    Ok(Some(v))
}

fn decompress(codec: i16, section: &[u8]) -> Result<Bytes, BatchError> {
    use kafka_protocol::compression::{self as c, Decompressor};
    let mut input = Bytes::copy_from_slice(section);
    let keep = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        1 => c::Gzip::decompress(&mut input, keep),
        2 => c::Snappy::decompress(&mut input, keep),
        3 => c::Lz4::decompress(&mut input, keep),
        4 => c::Zstd::decompress(&mut input, keep),
        other => {
            return Err(BatchError::Corrupt(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    out.map_err(|e| BatchError::Corrupt(format!("cannot decompress the records: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn ours(n: usize) -> Bytes {
        let values: Vec<Vec<u8>> = (0..n).map(|i| format!("value-{i}").into_bytes()).collect();
        let headers = [("h", Some(&b"x"[..])), ("nil", None)];
        let records: Vec<NewRecord<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                key: (i % 2 == 0).then_some(&b"k"[..]),
                value: Some(v),
                headers: if i == 0 { &headers } else { &[] },
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect();
        let mut out = BytesMut::new();
        let size = encode_batch(&records, &mut out);
        assert_eq!(size, out.len());
        out.freeze()
    }

    #[test]
    fn an_encoded_batch_validates_and_decodes_with_the_reference_decoder() {
        let b = ours(3);
        let info = batch::validate(&b).expect("valid batch");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count, 3);
        let decoded = RecordBatchDecoder::decode(&mut b.clone()).expect("decodes");
        let values: Vec<_> = decoded
            .records
            .iter()
            .map(|r| r.value.clone().expect("value"))
            .collect();
        assert_eq!(values, vec!["value-0", "value-1", "value-2"]);
        assert_eq!(decoded.records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(decoded.records[1].key, None);
        assert_eq!(decoded.records[0].headers.len(), 2);
        assert_eq!(decoded.records[2].timestamp, 1_700_000_000_002);
    }

    #[test]
    fn reading_our_batch_gives_every_record_in_place() {
        let sealed = batch::seal(ours(3), 40, 1, None);
        let parsed = BatchRecords::parse(&sealed).expect("parses");
        let got: Vec<_> = parsed.iter().collect::<Result<_, _>>().expect("records");
        assert_eq!(got.len(), 3);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [40, 41, 42]
        );
        assert_eq!(got[1].value, Some(&b"value-1"[..]));
        assert_eq!(got[2].timestamp_ms, 1_700_000_000_002);
        let headers: Vec<_> = got[0].headers().collect();
        assert_eq!(
            headers,
            vec![(&b"h"[..], Some(&b"x"[..])), (&b"nil"[..], None)]
        );
        // The value is a view into the sealed batch, not a copy.
        let v = got[1].value.expect("value");
        let range = sealed.as_ptr_range();
        assert!(range.contains(&v.as_ptr()));
    }

    #[test]
    fn log_append_time_replaces_every_record_timestamp() {
        let sealed = batch::seal(ours(2), 0, 1, Some(5));
        let parsed = BatchRecords::parse(&sealed).expect("parses");
        assert!(parsed.iter().all(|r| r.expect("record").timestamp_ms == 5));
    }

    #[test]
    fn compressed_batches_from_the_reference_encoder_are_read() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<Record> = (0..5)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    sequence: -1,
                    timestamp: 100 + i,
                    key: None,
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: Default::default(),
                    delete_horizon: false,
                })
                .collect();
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .expect("encodes");
            // The reference encoder may write several batches: read each.
            let mut got = Vec::new();
            let mut parsed = Vec::new();
            for info in batch::validate(&buf).expect("valid batches") {
                parsed.push(
                    BatchRecords::parse(&buf[info.start..info.start + info.len]).expect("parses"),
                );
            }
            for p in &parsed {
                for r in p.iter() {
                    got.push(r.expect("record"));
                }
            }
            assert_eq!(got.len(), 5, "{compression:?}");
            assert_eq!(got[4].value, Some(&b"v4"[..]));
            assert_eq!(got[3].offset, 3);
            assert_eq!(got[2].timestamp_ms, 102);
        }
    }

    #[test]
    fn truncated_or_garbled_batches_give_errors_not_panics() {
        let b = ours(4);
        for cut in 0..b.len() {
            if let Ok(parsed) = BatchRecords::parse(&b[..cut]) {
                let _ = parsed.iter().count();
            }
        }
        let mut garbled = b.to_vec();
        for i in HEADER_BYTES..garbled.len() {
            garbled[i] = 0xff;
            if let Ok(parsed) = BatchRecords::parse(&garbled) {
                let _ = parsed.iter().collect::<Vec<_>>();
            }
        }
        let mut wrong_count = b.to_vec();
        wrong_count[57..61].copy_from_slice(&9i32.to_be_bytes());
        let parsed = BatchRecords::parse(&wrong_count).expect("header parses");
        assert!(parsed.iter().any(|r| r.is_err()));
    }

    #[test]
    fn a_builder_writes_the_same_batch_as_encode_batch_and_starts_afresh() {
        let mut b = BatchBuilder::new();
        assert!(b.is_empty());
        assert!(b.finish().is_empty());
        for round in 0..2 {
            let values: Vec<Vec<u8>> = (0..3).map(|i| format!("value-{i}").into_bytes()).collect();
            for (i, v) in values.iter().enumerate() {
                let headers = [(&b"h"[..], Some(&b"x"[..])), (&b"nil"[..], None)];
                let n = if i == 0 { 2 } else { 0 };
                b.push(
                    1_700_000_000_000 + i as i64,
                    (i % 2 == 0).then_some(&b"k"[..]),
                    Some(v),
                    headers[..n].iter().copied(),
                );
            }
            assert_eq!(b.count(), 3);
            let built = b.finish();
            assert_eq!(built, ours(3), "round {round}");
            assert!(b.is_empty());
        }
    }

    #[test]
    fn a_builder_takes_large_values_and_timestamps_that_go_back() {
        let big = vec![7u8; 70_000];
        let mut b = BatchBuilder::new();
        b.push(10, None, Some(&big), std::iter::empty());
        b.push(3, Some(b""), None, std::iter::empty());
        let built = b.finish();
        batch::validate(&built).expect("valid");
        let decoded = RecordBatchDecoder::decode(&mut built.clone()).expect("decodes");
        assert_eq!(decoded.records[0].value.as_deref(), Some(&big[..]));
        assert_eq!(decoded.records[1].timestamp, 3);
        assert_eq!(decoded.records[1].value, None);
        assert_eq!(batch::max_timestamp(&built), Some(10));
    }

    proptest::proptest! {
        #[test]
        fn varlong_sizes_match_what_is_written(v in proptest::prelude::any::<i64>()) {
            let mut out = BytesMut::new();
            put_varlong(&mut out, v);
            proptest::prop_assert_eq!(out.len(), varlong_len(v));
        }

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(parsed) = BatchRecords::parse(&bytes) {
                for r in parsed.iter().take(1000) {
                    let _ = r.map(|r| r.headers().count());
                }
            }
        }
    }
}
