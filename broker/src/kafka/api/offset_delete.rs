//! OffsetDelete: drops a group's committed offsets for partitions it does not consume.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::blocking;
use crate::kafka::State;

/// Deletes the offsets; a partition of a subscribed topic gets GROUP_SUBSCRIBED_TO_TOPIC.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let mut known = Vec::new();
    let mut checked: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::new();
    for t in &request.topics {
        let exists = state.topics.get(&t.name.0);
        let parts = t
            .partitions
            .iter()
            .map(|p| match &exists {
                Some(topic) if topic.key(p.partition_index).is_some() => {
                    known.push((t.name.0.to_string(), p.partition_index));
                    (p.partition_index, None)
                }
                _ => (
                    p.partition_index,
                    Some(ResponseError::UnknownTopicOrPartition),
                ),
            })
            .collect();
        checked.push(parts);
    }
    let results = match blocking(|| state.groups.delete_offsets(&request.group_id.0, &known)) {
        Ok(r) => r,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .zip(checked)
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, err)| {
                    let err = match err {
                        Some(e) => Some(e),
                        None => results.next().and_then(|r| r.err()),
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(err.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
