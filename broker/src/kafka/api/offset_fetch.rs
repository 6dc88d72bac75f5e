//! OffsetFetch: a group's committed offsets (one group v1-7, several v8+),
//! with their leader epoch and metadata.
//!
//! An offset committed for a topic that has since been deleted (or deleted
//! and created again) is not returned: it carries the old topic's id.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::kafka::groups::offsets::CommittedOffset;
use crate::kafka::State;

/// One partition's answer: offset, leader epoch, metadata.
type Answer = (i32, i64, i32, String);

type TopicAnswers = Vec<(String, Vec<Answer>)>;

/// The committed offsets of one group, with stale ones hidden.
fn fetch_group(
    state: &State,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<TopicAnswers, ResponseError> {
    let committed = state.groups.committed(group_id, wanted.as_deref())?;
    let all = wanted.is_none();
    Ok(committed
        .into_iter()
        .filter_map(|(topic, parts)| {
            let id = state.topics.get(&topic).map(|t| t.id);
            let live = |c: &Option<CommittedOffset>| {
                c.as_ref().filter(|c| Some(c.topic_id) == id).cloned()
            };
            let answers: Vec<Answer> = parts
                .iter()
                .filter_map(|(p, c)| match live(c) {
                    Some(c) => Some((*p, c.offset, c.leader_epoch, c.metadata)),
                    None if all => None,
                    None => Some((*p, -1, -1, String::new())),
                })
                .collect();
            (!answers.is_empty() || !all).then_some((topic, answers))
        })
        .collect())
}

/// Answers every group (or the one group) asked for.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(state, &g.group_id.0, wanted) {
                    Err(e) => group.with_error_code(e.code()),
                    Ok(topics) => group.with_topics(
                        topics
                            .into_iter()
                            .map(|(t, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&t))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, offset, epoch, metadata)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(&metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let partition = |p: i32, offset: i64, epoch: i32, metadata: &str, error: i16| {
        let r = OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_metadata(Some(str_bytes(metadata)))
            .with_error_code(error);
        if version >= 5 {
            r.with_committed_leader_epoch(epoch)
        } else {
            r
        }
    };
    match fetch_group(state, &request.group_id.0, wanted.clone()) {
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, o, e, m)| partition(p, o, e, &m, 0))
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) if version >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
        Err(e) => {
            // v1 has no group error: every partition carries it.
            let topics = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|p| partition(p, -1, -1, "", e.code()))
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}
