//! DescribeProducers: the idempotent producers that wrote to a partition,
//! from the engine's idempotence state for the partition's key.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::kafka::State;

/// Lists each requested partition's producers.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topics.get(&t.name);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|p| {
                    let response = PartitionResponse::default().with_partition_index(p);
                    let Some(key) = topic.as_ref().and_then(|t| t.key(p)) else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    match state.engine.writers_of(key) {
                        Ok(writers) => response.with_active_producers(
                            writers
                                .into_iter()
                                .map(|(writer, epoch, next)| producer(writer, epoch, next))
                                .collect(),
                        ),
                        Err(e) => response
                            .with_error_code(ResponseError::KafkaStorageError.code())
                            .with_error_message(Some(str_bytes(&e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// One producer's state; the engine keeps no timestamps and there are no
/// transactions yet, so those fields say "unknown" (-1).
fn producer(writer: u64, epoch: u32, next_sequence: i64) -> ProducerState {
    ProducerState::default()
        .with_producer_id(ProducerId(writer as i64))
        // The epoch was stored as Kafka's int16, widened unsigned.
        .with_producer_epoch(i32::from(epoch as u16 as i16))
        .with_last_sequence(last_sequence(next_sequence))
        .with_last_timestamp(-1)
        .with_coordinator_epoch(-1)
        .with_current_txn_start_offset(-1)
}

/// The last sequence written, given the next one expected: Kafka's
/// sequences wrap from i32::MAX to 0.
fn last_sequence(next_sequence: i64) -> i32 {
    if next_sequence <= 0 {
        return -1;
    }
    ((next_sequence - 1) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::last_sequence;

    #[test]
    fn last_sequence_wraps_as_kafka_sequences_do() {
        assert_eq!(last_sequence(0), -1);
        assert_eq!(last_sequence(5), 4);
        assert_eq!(last_sequence(i64::from(i32::MAX) + 1), i32::MAX);
        assert_eq!(last_sequence(i64::from(i32::MAX) + 3), 1);
    }
}
