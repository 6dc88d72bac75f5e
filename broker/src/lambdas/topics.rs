//! The topic record adaptor: a lambda bound under `/cms/topics` sees records, not batches.
//!
//! A Kafka partition's key `/cms/topics/T/p` stores one record batch per
//! version. For such a version the handler runs once per record, read in place
//! ([`BatchRecords`]): the record key as key, the record value as value, the
//! record's offset as seq, its timestamp (ms, as µs) as timestamp, and the
//! batch's version as version. Control batches (transaction markers) are
//! skipped. What the handler emits to a destination under `/cms/topics/T2` is
//! appended to partition p of T2 as one batch per input batch (see
//! `output.rs`), with each input record's key and timestamp.
//!
//! A record whose call fails writes nothing; the others still write, and the
//! upcall is counted as one error naming how many records failed.

use std::sync::Arc;

use kascade_core::{Key, LambdaContext, LambdaError, ObjectVersion};
use kascade_wire::kafka::batch::ATTR_CONTROL;
use kascade_wire::kafka::records::BatchRecords;

use super::output::{RecordMeta, Writer};
use super::{Call, Handler, HandlerLambda, Input};
use crate::kafka::topics::TOPICS_PREFIX;

/// The partition a key names when it is a Kafka partition (`/cms/topics/T/p`).
pub fn partition_of(key: &Key) -> Option<i32> {
    let rest = key
        .as_str()
        .strip_prefix(TOPICS_PREFIX)?
        .strip_prefix('/')?;
    let (topic, partition) = rest.split_once('/')?;
    if topic.is_empty() {
        return None;
    }
    parse_partition(partition)
}

/// A partition number: decimal digits only, within `i32`.
pub(crate) fn parse_partition(text: &str) -> Option<i32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Runs `lambda`'s handler on every record of the batch stored in `object`.
pub(crate) fn call_records<H: Handler>(
    lambda: &HandlerLambda<H>,
    ctx: &LambdaContext<'_>,
    object: &Arc<ObjectVersion>,
    partition: i32,
) -> Result<(), LambdaError> {
    let attributes = object
        .value
        .get(21..23)
        .map_or(0, |a| i16::from_be_bytes([a[0], a[1]]));
    if attributes & ATTR_CONTROL != 0 {
        return Ok(());
    }
    let records = BatchRecords::parse(&object.value)
        .map_err(|e| LambdaError(format!("{}: {e}", object.key)))?;
    let mut writer = Writer::new(ctx, &lambda.host, object, Some(partition))?;
    let mut call = Call::new(ctx, object, lambda.handler.max_output_bytes());
    let (mut total, mut failed, mut first_error) = (0u32, 0u32, None);
    for record in records.iter() {
        let record = record.map_err(|e| LambdaError(format!("{}: {e}", object.key)))?;
        total += 1;
        let input = Input {
            key: record.key.unwrap_or_default(),
            value: record.value.unwrap_or_default(),
            version: object.version,
            seq: record.offset as u64,
            timestamp_us: (record.timestamp_ms.max(0) as u64).saturating_mul(1000),
        };
        match lambda.handler.handle(&input, &mut call) {
            Ok(()) => {
                let meta = RecordMeta {
                    key: record.key,
                    timestamp_ms: record.timestamp_ms,
                };
                for output in call.take_outputs() {
                    writer.write(output, &meta)?;
                }
            }
            Err(e) => {
                call.take_outputs();
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    writer.finish()?;
    match first_error {
        None => Ok(()),
        Some(e) => Err(LambdaError(format!(
            "{failed} of {total} records of {} at offset {} failed; the first: {e}",
            object.key, object.seq
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partition_keys_are_partitions() {
        let p = |k: &str| partition_of(&Key::new(k).unwrap());
        assert_eq!(p("/cms/topics/orders/0"), Some(0));
        assert_eq!(p("/cms/topics/orders/12"), Some(12));
        assert_eq!(p("/cms/topics/orders"), None);
        assert_eq!(p("/cms/topics/orders/x"), None);
        assert_eq!(p("/cms/topics/orders/+1"), None);
        assert_eq!(p("/cms/topics/orders/0/extra"), None);
        assert_eq!(p("/cms/topicsx/orders/0"), None);
        assert_eq!(p("/cms/topics/orders/99999999999"), None);
        assert_eq!(p("/sensors/0"), None);
    }
}
