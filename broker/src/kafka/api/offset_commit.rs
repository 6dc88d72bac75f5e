//! OffsetCommit: stores a group's consumed positions durably.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::blocking;
use crate::kafka::groups::offsets::{CommittedOffset, MAX_METADATA_BYTES};
use crate::kafka::groups::{now_ms, OffsetToCommit};
use crate::kafka::State;

/// A partition and whether it passed the broker's checks.
type Checked = (i32, Result<(), ResponseError>);

/// Checks each partition, commits the valid ones, answers per partition.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let now = now_ms();
    // The partitions that pass the checks, and each partition's own verdict.
    let mut valid = Vec::new();
    let mut slots: Vec<(usize, Vec<Checked>)> = Vec::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        let found = state.topics.get(&topic.name.0);
        let mut parts = Vec::new();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or("");
            let checked = match &found {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(t) if t.key(p.partition_index).is_none() => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Some(_) if metadata.len() > MAX_METADATA_BYTES => {
                    Err(ResponseError::OffsetMetadataTooLarge)
                }
                Some(t) => {
                    valid.push(OffsetToCommit {
                        topic: t.name.clone(),
                        partition: p.partition_index,
                        committed: CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: metadata.to_string(),
                            commit_timestamp_ms: now,
                            topic_id: t.id,
                        },
                    });
                    Ok(())
                }
            };
            parts.push((p.partition_index, checked));
        }
        slots.push((ti, parts));
    }
    let group_result = if valid.is_empty() {
        Ok(())
    } else {
        blocking(|| {
            state.groups.commit(
                &request.group_id.0,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id_or_member_epoch,
                valid,
            )
        })
    };
    let topics = slots
        .into_iter()
        .map(|(ti, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, checked)| {
                    let code = match checked.and(group_result) {
                        Ok(()) => 0,
                        Err(e) => e.code(),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(request.topics[ti].name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
