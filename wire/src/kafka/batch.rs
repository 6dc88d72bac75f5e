//! Kafka record batches (magic 2): validation on produce, sealing in the sequencer.
//!
//! Batches are stored and served exactly as received, so the broker never
//! decompresses or re-encodes them. It checks the framing, the magic byte and
//! the CRC-32C, reads the few header fields it needs, and, once the engine has
//! placed the batch, writes the base offset and leader epoch (outside the CRC)
//! and, for log-append-time topics, the timestamp type and max timestamp
//! (inside it, so the CRC is recomputed).
//!
//! Layout of the 61-byte header, big-endian:
//! `base_offset i64 | batch_length i32 | leader_epoch i32 | magic i8 | crc u32 |
//! attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//! producer_id i64 | producer_epoch i16 | base_sequence i32 | record_count i32`.

use bytes::Bytes;

/// Size of a v2 batch header.
pub const HEADER_BYTES: usize = 61;
const LENGTH_AT: usize = 8;
const EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const COUNT_AT: usize = 57;
/// Bytes before the length field's end: `base_offset` and `batch_length`.
const LOG_OVERHEAD: usize = 12;

/// Attribute bit: the batch's timestamps are log-append times.
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: the batch is a control batch (transaction marker).
pub const ATTR_CONTROL: i16 = 1 << 5;

/// What is wrong with a produced record set; each maps to a Kafka error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Framing, sizes or counts do not add up (Kafka's CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// The CRC-32C does not match (CORRUPT_MESSAGE).
    #[error("record batch CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    Crc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// An old message format (magic 0 or 1) (UNSUPPORTED_FOR_MESSAGE_FORMAT).
    #[error(
        "message format v{0} is not supported; use a client that writes record batches (magic 2)"
    )]
    Magic(i8),
    /// A client sent a control batch or a transactional batch (INVALID_RECORD).
    #[error("{0}")]
    NotAllowed(&'static str),
}

/// The header fields of one validated batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Where the batch starts within the record set.
    pub start: usize,
    /// Its whole size in bytes, header included.
    pub len: usize,
    /// Records in the batch (`last_offset_delta + 1`).
    pub record_count: u32,
    /// The attributes word.
    pub attributes: i16,
    /// First record's timestamp, ms.
    pub base_timestamp: i64,
    /// Largest record timestamp, ms.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when none.
    pub producer_id: i64,
    /// Producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// First record's producer sequence, -1 when none.
    pub base_sequence: i32,
}

impl BatchInfo {
    /// True when the producer is idempotent (has an id and a sequence).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0
    }

    /// The compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Validates a produced record set: one or more whole v2 batches, each with a
/// good CRC, a sane record count, and neither control nor transactional bits.
///
/// Never panics, whatever the bytes.
pub fn validate(records: &[u8]) -> Result<Vec<BatchInfo>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0;
    if records.is_empty() {
        return Err(BatchError::Corrupt("empty record set".into()));
    }
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < MAGIC_AT + 1 {
            return Err(BatchError::Corrupt(format!(
                "{} trailing bytes are not a whole batch",
                rest.len()
            )));
        }
        let magic = rest[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        if rest.len() < HEADER_BYTES {
            return Err(BatchError::Corrupt(format!(
                "batch of {} bytes is shorter than its {HEADER_BYTES}-byte header",
                rest.len()
            )));
        }
        let declared = be_i32(rest, LENGTH_AT);
        let len = usize::try_from(declared)
            .ok()
            .and_then(|l| l.checked_add(LOG_OVERHEAD))
            .filter(|&l| l >= HEADER_BYTES && l <= rest.len())
            .ok_or_else(|| {
                BatchError::Corrupt(format!(
                    "batch length {declared} does not fit the {} bytes sent",
                    rest.len()
                ))
            })?;
        let batch = &rest[..len];
        let stored = u32::from_be_bytes([
            batch[CRC_AT],
            batch[CRC_AT + 1],
            batch[CRC_AT + 2],
            batch[CRC_AT + 3],
        ]);
        let computed = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        if stored != computed {
            return Err(BatchError::Crc { stored, computed });
        }
        let attributes = be_i16(batch, ATTRIBUTES_AT);
        if attributes & ATTR_CONTROL != 0 {
            return Err(BatchError::NotAllowed(
                "clients may not produce control batches",
            ));
        }
        if attributes & ATTR_TRANSACTIONAL != 0 {
            return Err(BatchError::NotAllowed(
                "transactional produce is not supported yet",
            ));
        }
        let last_delta = be_i32(batch, LAST_DELTA_AT);
        let count = be_i32(batch, COUNT_AT);
        if count <= 0 || last_delta != count - 1 {
            return Err(BatchError::Corrupt(format!(
                "record count {count} does not match last offset delta {last_delta}"
            )));
        }
        out.push(BatchInfo {
            start: at,
            len,
            record_count: count as u32,
            attributes,
            base_timestamp: be_i64(batch, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(batch, MAX_TIMESTAMP_AT),
            producer_id: be_i64(batch, PRODUCER_ID_AT),
            producer_epoch: be_i16(batch, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(batch, BASE_SEQUENCE_AT),
        });
        at += len;
    }
    Ok(out)
}

/// Writes a placed batch's position: base offset and leader epoch, plus, when
/// `log_append_time_ms` is given, the log-append-time attribute and max
/// timestamp, with the CRC recomputed.
///
/// `batch` must be one batch that [`validate`] accepted. It is patched in
/// place when this is its only reference, otherwise copied once.
pub fn seal(
    batch: Bytes,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> Bytes {
    if batch.len() < HEADER_BYTES {
        return batch;
    }
    let mut b = batch.try_into_mut().unwrap_or_else(|shared| {
        let mut copy = bytes::BytesMut::with_capacity(shared.len());
        copy.extend_from_slice(&shared);
        copy
    });
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
    b[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time_ms {
        let attributes = be_i16(&b, ATTRIBUTES_AT) | ATTR_LOG_APPEND_TIME;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    b.freeze()
}

/// The header fields of a stored batch (trusted: it passed [`validate`]).
pub fn base_offset(batch: &[u8]) -> Option<i64> {
    (batch.len() >= HEADER_BYTES).then(|| be_i64(batch, 0))
}

/// A stored batch's max timestamp (ms), for ListOffsets by time.
pub fn max_timestamp(batch: &[u8]) -> Option<i64> {
    (batch.len() >= HEADER_BYTES).then(|| be_i64(batch, MAX_TIMESTAMP_AT))
}

/// A stored batch's leader epoch.
pub fn leader_epoch(batch: &[u8]) -> Option<i32> {
    (batch.len() >= HEADER_BYTES).then(|| be_i32(batch, EPOCH_AT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn records(n: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: 42,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; 100])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.freeze()
    }

    #[test]
    fn accepts_real_batches_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let set = records(10, c);
            let info = validate(&set).unwrap();
            assert_eq!(info.len(), 1);
            assert_eq!(info[0].record_count, 10);
            assert_eq!(info[0].producer_id, 42);
            assert_eq!(info[0].max_timestamp, 1_009);
        }
    }

    #[test]
    fn seal_sets_offsets_and_log_append_time_and_keeps_the_crc_valid() {
        let set = records(3, Compression::None);
        let sealed = seal(set.clone(), 77, 5, Some(123_456));
        assert_eq!(validate(&sealed).unwrap()[0].max_timestamp, 123_456);
        assert_eq!(base_offset(&sealed), Some(77));
        assert_eq!(leader_epoch(&sealed), Some(5));
        let mut buf = sealed.clone();
        let decoded = RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(decoded.records[2].offset, 79);
        assert_eq!(decoded.records[0].timestamp_type, TimestampType::LogAppend);
        let plain = seal(set, 5, 0, None);
        assert_eq!(validate(&plain).unwrap()[0].max_timestamp, 1_002);
    }

    #[test]
    fn rejects_flipped_bits_truncation_and_old_magic() {
        let set = records(2, Compression::None);
        let mut flipped = set.to_vec();
        flipped[70] ^= 1;
        assert!(matches!(validate(&flipped), Err(BatchError::Crc { .. })));
        assert!(matches!(
            validate(&set[..set.len() - 1]),
            Err(BatchError::Corrupt(_))
        ));
        let mut old = set.to_vec();
        old[MAGIC_AT] = 1;
        assert_eq!(validate(&old), Err(BatchError::Magic(1)));
        let mut two = set.to_vec();
        two.extend_from_slice(&set);
        assert_eq!(validate(&two).unwrap().len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = validate(&bytes);
        }
    }
}
