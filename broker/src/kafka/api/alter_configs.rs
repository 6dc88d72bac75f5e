//! AlterConfigs: replace all of a topic's configs with the given set, or only
//! validate it. Broker configs are static and refused.

use std::collections::BTreeSet;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::describe_configs::{
    check_broker_name, unsupported_resource, BROKER, BROKER_CONFIGS_ARE_STATIC, TOPIC,
};
use super::{blocking, str_bytes};
use crate::kafka::State;

/// Alters each resource independently.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let validate_only = request.validate_only;
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let outcome = match r.resource_type {
                TOPIC => {
                    let changes: Vec<(String, Option<String>)> = r
                        .configs
                        .iter()
                        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                        .collect();
                    replace_topic_configs(state, &name, changes, validate_only)
                }
                BROKER => Err((
                    ResponseError::InvalidRequest,
                    check_broker_name(state, &name)
                        .err()
                        .unwrap_or_else(|| BROKER_CONFIGS_ARE_STATIC.to_string()),
                )),
                other => Err((ResponseError::InvalidRequest, unsupported_resource(other))),
            };
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match outcome {
                Ok(()) => response.with_error_message(None),
                Err((code, message)) => response
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Replaces a topic's configs; a null value leaves the config at its default.
fn replace_topic_configs(
    state: &State,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let mut seen = BTreeSet::new();
    if let Some((dup, _)) = changes.iter().find(|(k, _)| !seen.insert(k.clone())) {
        return Err((
            ResponseError::InvalidRequest,
            format!("config {dup} is given more than once"),
        ));
    }
    let topic = state.topics.get(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        )
    })?;
    let mut changes: Vec<(String, Option<String>)> =
        changes.into_iter().filter(|(_, v)| v.is_some()).collect();
    // The storage kind is fixed at creation, not one of the configs a
    // replace resets: keep it unless the request names it.
    if let Some(storage) = topic.configs.get("kascade.storage") {
        if !changes.iter().any(|(k, _)| k == "kascade.storage") {
            changes.push(("kascade.storage".into(), Some(storage.clone())));
        }
    }
    blocking(|| {
        state
            .topics
            .alter_configs(name, &changes, false, validate_only)
    })
    .map(|_| ())
    .map_err(|e| (e.kafka(), e.to_string()))
}
