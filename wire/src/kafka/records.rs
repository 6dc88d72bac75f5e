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
    let start = out.len();
    let base_ts = first.timestamp_ms;
    let max_ts = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_ts);
    out.reserve(HEADER_BYTES + records.iter().map(encoded_hint).sum::<usize>());
    out.put_i64(0); // base offset: sealed by the broker
    out.put_i32(0); // batch length: patched below
    out.put_i32(-1); // leader epoch: sealed by the broker
    out.put_i8(2); // magic
    out.put_u32(0); // crc: patched below
    out.put_i16(0); // attributes: no compression, create time
    out.put_i32(records.len() as i32 - 1); // last offset delta
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(records.len() as i32);
    let mut body = Vec::with_capacity(64);
    for (i, r) in records.iter().enumerate() {
        body.clear();
        body.push(0); // attributes
        put_varlong(&mut body, r.timestamp_ms.wrapping_sub(base_ts));
        put_varlong(&mut body, i as i64);
        put_nullable(&mut body, r.key);
        put_nullable(&mut body, r.value);
        put_varlong(&mut body, r.headers.len() as i64);
        for (name, value) in r.headers {
            put_nullable(&mut body, Some(name.as_bytes()));
            put_nullable(&mut body, *value);
        }
        let mut len = Vec::with_capacity(5);
        put_varlong(&mut len, body.len() as i64);
        out.extend_from_slice(&len);
        out.extend_from_slice(&body);
    }
    let size = out.len() - start;
    let batch_length = (size - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 21..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    size
}

fn encoded_hint(r: &NewRecord<'_>) -> usize {
    24 + r.key.map_or(0, <[u8]>::len)
        + r.value.map_or(0, <[u8]>::len)
        + r.headers
            .iter()
            .map(|(k, v)| 10 + k.len() + v.map_or(0, <[u8]>::len))
            .sum::<usize>()
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
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

    proptest::proptest! {
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
