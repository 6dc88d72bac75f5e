//! IncrementalAlterConfigs: set, delete, append to or subtract from single
//! topic configs, leaving the others as they are, or only validate the
//! change. Broker configs are static and refused.

use std::collections::BTreeSet;

use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::describe_configs::{
    check_broker_name, unsupported_resource, BROKER, BROKER_CONFIGS_ARE_STATIC, TOPIC,
};
use super::{blocking, str_bytes};
use crate::kafka::topics::{Topic, TOPIC_CONFIGS};
use crate::kafka::State;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// Topic configs whose value is a comma-separated list (APPEND and SUBTRACT apply).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

type Refusal = (ResponseError, String);

/// Alters each resource independently.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let validate_only = request.validate_only;
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let outcome = match r.resource_type {
                TOPIC => alter_topic(state, &name, &r, validate_only),
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Turns the operations into new values and applies them together.
fn alter_topic(
    state: &State,
    name: &str,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    let topic = state.topics.get(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        )
    })?;
    let mut seen = BTreeSet::new();
    let mut changes = Vec::with_capacity(resource.configs.len());
    for c in &resource.configs {
        let key = c.name.as_str();
        if !seen.insert(key) {
            return Err((
                ResponseError::InvalidRequest,
                format!("config {key} is given more than once"),
            ));
        }
        let value = c.value.as_ref().map(|v| v.as_str());
        changes.push((
            key.to_string(),
            new_value(&topic, key, c.config_operation, value)?,
        ));
    }
    blocking(|| {
        state
            .topics
            .alter_configs(name, &changes, true, validate_only)
    })
    .map(|_| ())
    .map_err(|e| (e.kafka(), e.to_string()))
}

/// The value `key` has after one operation; `None` returns it to its default.
fn new_value(
    topic: &Topic,
    key: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<Option<String>, Refusal> {
    let invalid_config = |why: String| Err((ResponseError::InvalidConfig, why));
    if !TOPIC_CONFIGS.iter().any(|d| d.name == key) {
        return invalid_config(format!("{key}: unknown topic config"));
    }
    let is_list = LIST_CONFIGS.contains(&key);
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    match operation {
        SET => match value {
            Some(v) => Ok(Some(v.to_string())),
            None => Err((
                ResponseError::InvalidRequest,
                format!("{key}: SET needs a value; use DELETE to return it to its default"),
            )),
        },
        DELETE => Ok(None),
        APPEND | SUBTRACT if !is_list => {
            let verb = if operation == APPEND {
                "APPEND"
            } else {
                "SUBTRACT"
            };
            invalid_config(format!(
                "{key}: {verb} applies to list configs ({}) only; use SET",
                LIST_CONFIGS.join(", ")
            ))
        }
        APPEND | SUBTRACT => {
            let current = topic.config(key).map(|(v, _)| v).unwrap_or_default();
            let mut items = list(&current);
            let given = list(value.unwrap_or_default());
            if operation == APPEND {
                for g in given {
                    if !items.contains(&g) {
                        items.push(g);
                    }
                }
            } else {
                items.retain(|i| !given.contains(i));
            }
            Ok(Some(items.join(",")))
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("{key}: unknown operation {other}: use SET (0), DELETE (1), APPEND (2) or SUBTRACT (3)"),
        )),
    }
}
