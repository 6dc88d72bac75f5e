//! OffsetForLeaderEpoch: where a leader epoch ended on a partition, so a
//! consumer can check that its position is still on the log after a change
//! of leadership (here: a broker restart, which starts a new epoch).
//!
//! Answers as Kafka's leader epoch cache does: the current epoch ends at the
//! log end; an older one at the start of the next newer epoch, reported
//! under the newest epoch at or below the one asked for; one older than all
//! at the start of the first epoch; one newer than the current, or -1,
//! is undefined (-1 / -1).

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use crate::kafka::topics::Topic;
use crate::kafka::State;

/// Answers each partition's query.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topics.get(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let response = EpochEndOffset::default().with_partition(p.partition);
                    let Some(topic) = topic.as_ref().filter(|t| t.key(p.partition).is_some())
                    else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let current = topic.leader_epoch();
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch != current {
                        let code = if p.current_leader_epoch > current {
                            ResponseError::UnknownLeaderEpoch
                        } else {
                            ResponseError::FencedLeaderEpoch
                        };
                        return response.with_error_code(code.code());
                    }
                    match end_of_epoch(state, topic, p.partition, p.leader_epoch) {
                        Some((epoch, end)) => {
                            response.with_leader_epoch(epoch).with_end_offset(end)
                        }
                        None => response.with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// `(epoch, end offset)` of `epoch` on `partition`, or `None` when undefined.
fn end_of_epoch(state: &State, topic: &Topic, partition: i32, epoch: i32) -> Option<(i32, i64)> {
    let current = topic.leader_epoch();
    if epoch == -1 || epoch > current {
        return None;
    }
    let p = usize::try_from(partition).ok()?;
    let first = topic.epochs.first()?;
    if epoch < first.epoch {
        return Some((epoch, first.start_offsets.get(p).copied().unwrap_or(0)));
    }
    match topic.epoch_end(p, epoch)? {
        (found, Some(end)) if found != current => Some((found, end)),
        (found, _) => {
            let key = topic.key(partition)?;
            let log_end = state.engine.bounds(key).ok()?.next_seq;
            Some((found, log_end as i64))
        }
    }
}
