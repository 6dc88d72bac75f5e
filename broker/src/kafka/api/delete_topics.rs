//! DeleteTopics: delete topics by name (v1-5) or by name or id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;

use super::{blocking, str_bytes, topic_name};
use crate::kafka::State;

/// Deletes each named topic and its data.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => state.topics.get(n),
                None => state.topics.by_id(id),
            };
            let result = DeletableTopicResult::default()
                .with_error_message(None)
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(id);
            let Some(topic) = topic else {
                let code = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                return result.with_error_code(code.code());
            };
            let result = result
                .with_name(Some(topic_name(&topic.name)))
                .with_topic_id(topic.id);
            match blocking(|| state.topics.delete(&topic.name)) {
                Ok(_) => result,
                Err(e) => result
                    .with_error_code(e.kafka().code())
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
