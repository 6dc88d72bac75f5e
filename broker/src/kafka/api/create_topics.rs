//! CreateTopics: create topics with partitions and configs, or only validate.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{blocking, str_bytes};
use crate::kafka::topics::{TopicError, TOPIC_CONFIGS};
use crate::kafka::State;

/// Creates each requested topic independently.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = if t.num_partitions == -1 {
                state.num_partitions
            } else {
                t.num_partitions
            };
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let outcome = if !t.assignments.is_empty() {
                Err(TopicError::InvalidPartitions(
                    "manual replica assignment is not supported on a single node".into(),
                ))
            } else if request.validate_only {
                state
                    .topics
                    .check_create(&name, partitions, t.replication_factor, &configs)
                    .map(|()| None)
            } else {
                blocking(|| {
                    state
                        .topics
                        .create(&name, partitions, t.replication_factor, configs.clone())
                })
                .map(Some)
            };
            let result = CreatableTopicResult::default()
                .with_name(t.name)
                .with_error_message(None);
            match outcome {
                Ok(created) => {
                    let result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_topic_id(created.map(|t| t.id).unwrap_or_default());
                    if version >= 5 {
                        result.with_configs(Some(config_list(&configs)))
                    } else {
                        result
                    }
                }
                Err(e) => result
                    .with_error_code(e.kafka().code())
                    .with_error_message(Some(str_bytes(&e.to_string())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

/// The created topic's configs, as CreateTopics v5+ returns them.
fn config_list(set: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = match set.get(d.name) {
                Some(v) => (v.clone(), 1),          // DYNAMIC_TOPIC_CONFIG
                None => (d.default.to_string(), 5), // DEFAULT_CONFIG
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(d.name))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(source)
        })
        .collect()
}
