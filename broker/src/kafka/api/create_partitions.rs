//! CreatePartitions: grow topics to a new partition count, or only validate
//! the change. New partitions start empty at the current leader epoch.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::{blocking, str_bytes};
use crate::kafka::State;

/// Grows each topic independently.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut times_named: BTreeMap<String, usize> = BTreeMap::new();
    for t in &request.topics {
        *times_named.entry(t.name.0.to_string()).or_default() += 1;
    }
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let outcome = if times_named.get(&name).is_some_and(|&n| n > 1) {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic {name} is named more than once in the request"),
                ))
            } else if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                Err((
                    ResponseError::InvalidRequest,
                    "manual replica assignment is not supported on a single node: leave assignments out".to_string(),
                ))
            } else {
                blocking(|| {
                    state
                        .topics
                        .create_partitions(&name, t.count, request.validate_only)
                })
                .map(|_| ())
                .map_err(|e| (e.kafka(), e.to_string()))
            };
            let result = CreatePartitionsTopicResult::default().with_name(t.name);
            match outcome {
                Ok(()) => result,
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
