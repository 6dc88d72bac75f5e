//! The bytes of one log record: `[len u32][crc32c u32][payload]`, little-endian.
//!
//! A record is one sequencer update: the versions of a put or an atomic
//! `put_many`, or a trim. Decoding never panics on bad input: every length is
//! checked against what is left.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::key::Key;
use crate::object::{IdempotenceToken, ObjectVersion};

/// Bytes before a record's payload: length and checksum.
pub const HEADER_LEN: usize = 8;

const KIND_PUT: u8 = 1;
const KIND_TRIM: u8 = 2;

/// One stored version together with the idempotence token that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedVersion {
    /// The version as applied (shared with the store: logging a version copies nothing).
    pub object: Arc<ObjectVersion>,
    /// The token the put carried, replayed into the dedup table on recovery.
    pub token: Option<IdempotenceToken>,
}

/// One update as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRecord {
    /// The versions of one put, remove or atomic `put_many`.
    Put(Vec<LoggedVersion>),
    /// A key's history before `start_seq` was dropped.
    Trim {
        /// The key trimmed.
        key: Key,
        /// The new first seq.
        start_seq: u64,
        /// The shard version current when the trim ran.
        version: u64,
    },
}

impl LogRecord {
    /// The highest shard version the record mentions.
    pub fn max_version(&self) -> u64 {
        match self {
            LogRecord::Put(versions) => {
                versions.iter().map(|v| v.object.version).max().unwrap_or(0)
            }
            LogRecord::Trim { version, .. } => *version,
        }
    }

    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u64_le(0); // header placeholder
        match self {
            LogRecord::Put(versions) => {
                out.put_u8(KIND_PUT);
                out.put_u32_le(versions.len() as u32);
                for v in versions {
                    encode_version(v, out);
                }
            }
            LogRecord::Trim {
                key,
                start_seq,
                version,
            } => {
                out.put_u8(KIND_TRIM);
                put_str(out, key.as_str());
                out.put_u64_le(*start_seq);
                out.put_u64_le(*version);
            }
        }
        let payload_len = out.len() - start - HEADER_LEN;
        let crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
        out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a payload whose checksum was already verified; `Err` names what is malformed.
    pub fn decode(payload: Bytes) -> Result<LogRecord, &'static str> {
        let mut buf = payload;
        let kind = get_u8(&mut buf)?;
        let record = match kind {
            KIND_PUT => {
                let n = get_u32(&mut buf)? as usize;
                if n == 0 || n > buf.remaining() {
                    return Err("bad version count");
                }
                let mut versions = Vec::with_capacity(n);
                for _ in 0..n {
                    versions.push(decode_version(&mut buf)?);
                }
                LogRecord::Put(versions)
            }
            KIND_TRIM => LogRecord::Trim {
                key: get_key(&mut buf)?,
                start_seq: get_u64(&mut buf)?,
                version: get_u64(&mut buf)?,
            },
            _ => return Err("unknown record kind"),
        };
        if buf.has_remaining() {
            return Err("trailing bytes after record");
        }
        Ok(record)
    }
}

fn encode_version(v: &LoggedVersion, out: &mut BytesMut) {
    let o = &v.object;
    put_str(out, o.key.as_str());
    out.put_u64_le(o.version);
    out.put_u64_le(o.seq);
    out.put_u32_le(o.count);
    out.put_u64_le(o.timestamp_us);
    out.put_u64_le(o.prev_version);
    let flags = u8::from(o.tombstone)
        | (u8::from(o.affinity.is_some()) << 1)
        | (u8::from(v.token.is_some()) << 2);
    out.put_u8(flags);
    if let Some(a) = &o.affinity {
        put_str(out, a.as_str());
    }
    if let Some(t) = &v.token {
        out.put_u64_le(t.writer);
        out.put_u32_le(t.epoch);
        out.put_i64_le(t.sequence);
    }
    out.put_u32_le(o.value.len() as u32);
    out.put_slice(&o.value);
}

fn decode_version(buf: &mut Bytes) -> Result<LoggedVersion, &'static str> {
    let key = get_key(buf)?;
    let version = get_u64(buf)?;
    let seq = get_u64(buf)?;
    let count = get_u32(buf)?;
    let timestamp_us = get_u64(buf)?;
    let prev_version = get_u64(buf)?;
    let flags = get_u8(buf)?;
    if flags & !0b111 != 0 {
        return Err("unknown flags");
    }
    let affinity = if flags & 2 != 0 {
        Some(get_key(buf)?)
    } else {
        None
    };
    let token = if flags & 4 != 0 {
        Some(IdempotenceToken {
            writer: get_u64(buf)?,
            epoch: get_u32(buf)?,
            sequence: get_u64(buf)? as i64,
        })
    } else {
        None
    };
    let len = get_u32(buf)? as usize;
    if len > buf.remaining() {
        return Err("value longer than record");
    }
    let value = buf.split_to(len);
    Ok(LoggedVersion {
        object: Arc::new(ObjectVersion {
            key,
            version,
            seq,
            count,
            timestamp_us,
            prev_version,
            affinity,
            tombstone: flags & 1 != 0,
            value,
        }),
        token,
    })
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16_le(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn get_u8(buf: &mut Bytes) -> Result<u8, &'static str> {
    buf.try_get_u8().map_err(|_| "record truncated")
}
fn get_u32(buf: &mut Bytes) -> Result<u32, &'static str> {
    buf.try_get_u32_le().map_err(|_| "record truncated")
}
fn get_u64(buf: &mut Bytes) -> Result<u64, &'static str> {
    buf.try_get_u64_le().map_err(|_| "record truncated")
}
fn get_key(buf: &mut Bytes) -> Result<Key, &'static str> {
    let len = buf.try_get_u16_le().map_err(|_| "record truncated")? as usize;
    if len > buf.remaining() {
        return Err("key longer than record");
    }
    let raw = buf.split_to(len);
    let s = std::str::from_utf8(&raw).map_err(|_| "key is not UTF-8")?;
    Key::new(s).map_err(|_| "stored key is invalid")
}

/// Reads one framed record at the start of `buf`.
pub enum Frame {
    /// A whole, checksummed record and its framed length.
    Record(LogRecord, usize),
    /// Fewer bytes than the frame needs: a torn write when at the end of the log.
    Incomplete,
    /// The frame is whole but fails its checksum or decoding.
    Bad(String),
}

/// Parses the frame at the start of `buf` without panicking on any input.
pub fn read_frame(buf: &Bytes) -> Frame {
    if buf.len() < HEADER_LEN {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Frame::Bad("zero-length record".into());
    }
    if buf.len() - HEADER_LEN < len {
        return Frame::Incomplete;
    }
    let payload = buf.slice(HEADER_LEN..HEADER_LEN + len);
    if crc32c::crc32c(&payload) != crc {
        return Frame::Bad("CRC32C mismatch".into());
    }
    match LogRecord::decode(payload) {
        Ok(record) => Frame::Record(record, HEADER_LEN + len),
        Err(why) => Frame::Bad(why.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(key: &str, v: u64, value: &[u8], token: bool) -> LoggedVersion {
        LoggedVersion {
            object: Arc::new(ObjectVersion {
                key: Key::new(key).unwrap(),
                version: v,
                seq: v * 2,
                count: 2,
                timestamp_us: 1_700_000_000_000_000 + v,
                prev_version: v.saturating_sub(1),
                affinity: token.then(|| Key::new("/aff").unwrap()),
                tombstone: value.is_empty(),
                value: Bytes::copy_from_slice(value),
            }),
            token: token.then_some(IdempotenceToken {
                writer: 7,
                epoch: 1,
                sequence: -3,
            }),
        }
    }

    #[test]
    fn records_round_trip() {
        let records = [
            LogRecord::Put(vec![
                version("/a/b", 3, b"hello", true),
                version("/a/c", 4, b"", false),
            ]),
            LogRecord::Trim {
                key: Key::new("/a/b").unwrap(),
                start_seq: 9,
                version: 4,
            },
        ];
        for r in records {
            let mut out = BytesMut::new();
            r.encode(&mut out);
            match read_frame(&out.freeze()) {
                Frame::Record(back, _) => assert_eq!(back, r),
                _ => panic!("did not decode"),
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = read_frame(&Bytes::from(bytes.clone()));
            let _ = LogRecord::decode(Bytes::from(bytes));
        }

        #[test]
        fn any_flipped_byte_is_caught(pos in 0usize..60, bit in 0u8..8) {
            let mut out = BytesMut::new();
            LogRecord::Put(vec![version("/a/b", 3, b"hello world", true)]).encode(&mut out);
            let pos = pos % out.len();
            out[pos] ^= 1 << bit;
            prop_assert!(!matches!(read_frame(&out.freeze()), Frame::Record(..)));
        }
    }
}
