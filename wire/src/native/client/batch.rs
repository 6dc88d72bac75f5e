//! Reading the records of a Kafka v2 record batch (a Notify's payload) in place.
//!
//! Uncompressed batches are walked without copying: each record is described
//! by byte ranges into the batch, so a [`Delivery`](super::Delivery) can hand
//! out views of the ring. Compressed batches are decoded (decompressed) by
//! `kafka-protocol`'s record decoder into owned records.
//!
//! This is the client's own small parser until the shared
//! `kafka::records` module lands; everything here is bounds-checked and
//! returns `None`/an error on malformed bytes, never panics.

use std::ops::Range;

use bytes::Bytes;

use crate::kafka::batch::{ATTR_LOG_APPEND_TIME, HEADER_BYTES};

/// The batch header fields the client needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchHead {
    pub(crate) base_offset: i64,
    pub(crate) attributes: i16,
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) record_count: u32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Reads a v2 batch header; `None` when the bytes are not one.
pub(crate) fn head(batch: &[u8]) -> Option<BatchHead> {
    if batch.len() < HEADER_BYTES || batch[16] != 2 {
        return None;
    }
    let len = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]);
    if usize::try_from(len).ok()? + 12 != batch.len() {
        return None;
    }
    let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]);
    Some(BatchHead {
        base_offset: be_i64(batch, 0),
        attributes: i16::from_be_bytes([batch[21], batch[22]]),
        base_timestamp: be_i64(batch, 27),
        max_timestamp: be_i64(batch, 35),
        record_count: u32::try_from(count).ok()?,
    })
}

impl BatchHead {
    pub(crate) fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    pub(crate) fn is_control(&self) -> bool {
        self.attributes & crate::kafka::batch::ATTR_CONTROL != 0
    }

    /// A record's timestamp: log-append time wins over the producer's.
    pub(crate) fn timestamp(&self, delta: i64) -> i64 {
        if self.attributes & ATTR_LOG_APPEND_TIME != 0 {
            self.max_timestamp
        } else {
            self.base_timestamp.wrapping_add(delta)
        }
    }
}

/// One record of an uncompressed batch, as ranges into the batch bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    pub(crate) offset_delta: i64,
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    /// The headers' bytes and count (walk with [`HeaderWalk`]).
    pub(crate) headers: Range<usize>,
    pub(crate) header_count: usize,
}

/// A cursor over bytes reading Kafka's zig-zag varints.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    end: usize,
}

impl Cur<'_> {
    fn varlong(&mut self) -> Option<i64> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            if self.at >= self.end {
                return None;
            }
            let byte = self.b[self.at];
            self.at += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }

    fn take_i8(&mut self) -> Option<()> {
        if self.at >= self.end {
            return None;
        }
        self.at += 1;
        Some(())
    }

    /// A varint length then that many bytes; -1 is null.
    fn nullable(&mut self) -> Option<Option<Range<usize>>> {
        let len = self.varlong()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        if len > self.end - self.at {
            return None;
        }
        let r = self.at..self.at + len;
        self.at += len;
        Some(Some(r))
    }
}

/// Reads the record starting at `at` (which must be inside `batch`); returns
/// it and where the next one starts.
pub(crate) fn record_at(batch: &[u8], at: usize) -> Option<(RecordSpan, usize)> {
    let mut c = Cur {
        b: batch,
        at,
        end: batch.len(),
    };
    let len = usize::try_from(c.varlong()?).ok()?;
    if len > c.end - c.at {
        return None;
    }
    let end = c.at + len;
    c.end = end;
    c.take_i8()?;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varlong()?;
    let key = c.nullable()?;
    let value = c.nullable()?;
    let header_count = usize::try_from(c.varlong()?).ok()?;
    let headers_start = c.at;
    for _ in 0..header_count {
        c.nullable()?.filter(|r| std::str::from_utf8(&batch[r.clone()]).is_ok())?;
        c.nullable()?;
    }
    if c.at != end {
        return None;
    }
    Some((
        RecordSpan {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers: headers_start..end,
            header_count,
        },
        end,
    ))
}

/// Walks headers a [`record_at`] call has checked.
pub(crate) struct HeaderWalk<'a> {
    cur: Cur<'a>,
    left: usize,
}

impl<'a> HeaderWalk<'a> {
    pub(crate) fn new(batch: &'a [u8], headers: Range<usize>, count: usize) -> HeaderWalk<'a> {
        HeaderWalk {
            cur: Cur {
                b: batch,
                at: headers.start,
                end: headers.end,
            },
            left: count,
        }
    }
}

impl<'a> Iterator for HeaderWalk<'a> {
    type Item = (&'a str, Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.cur.b;
        let name = self.cur.nullable()?.map_or("", |r| std::str::from_utf8(&b[r]).unwrap_or(""));
        let value = self.cur.nullable()?.map(|r| &b[r]);
        Some((name, value))
    }
}

/// One record decoded out of a compressed batch.
#[derive(Clone, Debug)]
pub(crate) struct OwnedRecord {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<(String, Option<Bytes>)>,
}

/// Decompresses and decodes a compressed batch.
pub(crate) fn decode_compressed(batch: &[u8]) -> Result<Vec<OwnedRecord>, String> {
    let mut bytes = Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control)
        .map(|r| OwnedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(compression: Compression) -> Vec<u8> {
        let mut headers = IndexMap::new();
        headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"hv")));
        headers.insert(StrBytes::from_static_str("n"), None);
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 10 + i,
                sequence: i as i32,
                timestamp: 1000 + i,
                key: (i != 1).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; i as usize * 5])),
                headers: if i == 2 { headers.clone() } else { IndexMap::new() },
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn uncompressed_records_are_read_in_place() {
        let b = batch(Compression::None);
        let h = head(&b).unwrap();
        assert_eq!((h.base_offset, h.record_count, h.compression()), (10, 3, 0));
        let mut at = HEADER_BYTES;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (r, next) = record_at(&b, at).unwrap();
            let key = r.key.clone().map(|k| b[k].to_vec());
            let value = b[r.value.clone().unwrap()].to_vec();
            let headers: Vec<_> = HeaderWalk::new(&b, r.headers.clone(), r.header_count).collect();
            seen.push((h.base_offset + r.offset_delta, h.timestamp(r.timestamp_delta), key, value, headers.len()));
            at = next;
        }
        assert_eq!(at, b.len());
        assert_eq!(seen[0], (10, 1000, Some(b"k0".to_vec()), vec![], 0));
        assert_eq!(seen[1], (11, 1001, None, vec![b'v'; 5], 0));
        assert_eq!(seen[2].4, 2);
        let (r, _) = record_at(&b, {
            let (_, n) = record_at(&b, HEADER_BYTES).unwrap();
            record_at(&b, n).unwrap().1
        })
        .unwrap();
        let hs: Vec<_> = HeaderWalk::new(&b, r.headers, r.header_count).collect();
        assert_eq!(hs, vec![("h", Some(&b"hv"[..])), ("n", None)]);
    }

    #[test]
    fn compressed_records_are_decoded() {
        let b = batch(Compression::Lz4);
        assert_eq!(head(&b).unwrap().compression(), 3);
        let rs = decode_compressed(&b).unwrap();
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[2].offset, 12);
        assert_eq!(rs[1].value.as_deref(), Some(&[b'v'; 5][..]));
    }

    #[test]
    fn garbage_records_are_refused() {
        let b = batch(Compression::None);
        for cut in HEADER_BYTES..b.len() {
            let _ = record_at(&b[..cut], HEADER_BYTES);
        }
        assert!(head(&b[..b.len() - 1]).is_none());
        let mut bad = b.clone();
        bad[HEADER_BYTES] = 0x7f; // a record length far past the end
        assert!(record_at(&bad, HEADER_BYTES).is_none());
    }
}
