//! Metadata: the broker, and the topics asked for (all when none are named),
//! each partition led by this node with its real leader epoch.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;

use super::{blocking, broker_id, str_bytes, topic_name};
use crate::kafka::topics::{validate_name, Topic};
use crate::kafka::State;

/// Describes the cluster and the requested topics.
pub(super) fn handle(state: &State, version: i16, request: MetadataRequest) -> MetadataResponse {
    let node = broker_id(state);
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(&state.advertised_host))
        .with_port(state.advertised_port);
    // v0: an empty list means every topic; v1+: null means every topic.
    let wanted = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match wanted {
        None => state
            .topics
            .all()
            .iter()
            .map(|t| describe(state, t))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|w| {
                let found = match &w.name {
                    Some(name) => state.topics.get(name),
                    None => state.topics.by_id(w.topic_id),
                };
                match (found, w.name) {
                    (Some(t), _) => describe(state, &t),
                    (None, Some(name)) => {
                        let auto = state.auto_create_topics
                            && (version < 4 || request.allow_auto_topic_creation);
                        match auto_create(state, &name, auto) {
                            Ok(t) => describe(state, &t),
                            Err(code) => MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_error_code(code.code()),
                        }
                    }
                    (None, None) => MetadataResponseTopic::default()
                        .with_topic_id(w.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                }
            })
            .collect(),
    };
    let mut response = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes(&state.cluster_id)))
        .with_controller_id(node)
        .with_topics(topics);
    // v8-10 answer what the AdminClient's describe_cluster asks for here.
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = super::describe_cluster::CLUSTER_OPERATIONS;
    }
    response
}

/// Creates `name` when auto-creation allows it, or says why not.
fn auto_create(state: &State, name: &str, allowed: bool) -> Result<Arc<Topic>, ResponseError> {
    if validate_name(name).is_err() {
        return Err(ResponseError::InvalidTopicException);
    }
    if !allowed {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    blocking(|| {
        state
            .topics
            .create(name, state.num_partitions, -1, Default::default())
            .or_else(|e| state.topics.get(name).ok_or(e))
    })
    .map_err(|e| {
        tracing::warn!(topic = name, "auto-creating a topic failed: {e}");
        e.kafka()
    })
}

/// One topic's metadata.
pub(crate) fn describe(state: &State, topic: &Topic) -> MetadataResponseTopic {
    let node = broker_id(state);
    let epoch = topic.leader_epoch();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            (0..topic.partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_leader_epoch(epoch)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}
