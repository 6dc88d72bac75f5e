//! DeleteRecords: move each partition's log start up to an offset by
//! trimming the partition's key; the records before it are gone for good.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::blocking;
use crate::kafka::State;

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Trims each partition independently.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topics.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let Some(key) = topic.as_ref().and_then(|t| t.key(p.partition_index)) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    match trim(state, key, p.offset) {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(code) => result.with_error_code(code.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Trims one partition before `offset`; returns the new log start.
fn trim(state: &State, key: &kascade_core::Key, offset: i64) -> Result<i64, ResponseError> {
    let end = state
        .engine
        .bounds(key)
        .map_err(|_| ResponseError::KafkaStorageError)?
        .next_seq;
    let offset = match offset {
        HIGH_WATERMARK => end,
        o => u64::try_from(o).map_err(|_| ResponseError::OffsetOutOfRange)?,
    };
    if offset > end {
        return Err(ResponseError::OffsetOutOfRange);
    }
    match blocking(|| state.engine.trim(key, offset)) {
        Ok(start) => Ok(start as i64),
        Err(kascade_core::Error::SeqOutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
        Err(e) => {
            tracing::error!(%key, "delete records failed: {e}");
            Err(ResponseError::KafkaStorageError)
        }
    }
}
