//! Topics: list, create, describe and delete, through the same registry the
//! Kafka CreateTopics and DeleteTopics requests use.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{blocking, ApiError, ErrorBody, JsonBody, Shared};
use crate::kafka::topics::Topic;

/// A topic in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicSummary {
    /// The topic's name.
    pub name: String,
    /// Its id (a UUID).
    pub id: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Configs set on the topic (defaults are not listed).
    pub configs: BTreeMap<String, String>,
}

/// A topic to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
    #[schema(example = "orders", pattern = "^[a-zA-Z0-9._-]{1,249}$")]
    pub name: String,
    /// Number of partitions; the broker's `--num-partitions` when absent.
    #[serde(default)]
    pub partitions: Option<i32>,
    /// 1 (or -1 for the broker's default) on a single node.
    #[serde(default)]
    pub replication_factor: Option<i16>,
    /// Kafka topic configs (`retention.ms`, `kascade.storage`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// One partition: its log's first and next offsets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionInfo {
    /// The partition number.
    pub partition: i32,
    /// The first offset still held (the log start).
    pub start_offset: u64,
    /// The offset the next record gets (the log end, Kafka's high watermark).
    pub end_offset: u64,
    /// The current leader epoch.
    pub leader_epoch: i32,
}

/// A topic with its partitions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Its id (a UUID).
    pub id: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionInfo>,
    /// Configs set on the topic (defaults are not listed).
    pub configs: BTreeMap<String, String>,
}

fn summary(topic: &Topic) -> TopicSummary {
    TopicSummary {
        name: topic.name.clone(),
        id: topic.id.to_string(),
        partitions: topic.partitions,
        configs: topic.configs.clone(),
    }
}

fn description(state: &Shared, topic: &Topic) -> Result<TopicDescription, ApiError> {
    let mut partitions = Vec::with_capacity(topic.partitions.max(0) as usize);
    for p in 0..topic.partitions {
        let Some(key) = topic.key(p) else { continue };
        let bounds = state.engine.bounds(key)?;
        partitions.push(PartitionInfo {
            partition: p,
            start_offset: bounds.start_seq,
            end_offset: bounds.next_seq,
            leader_epoch: topic.leader_epoch(),
        });
    }
    Ok(TopicDescription {
        name: topic.name.clone(),
        id: topic.id.to_string(),
        partitions,
        configs: topic.configs.clone(),
    })
}

/// Lists every topic, by name.
#[utoipa::path(operation_id = "list_topics", get, path = "/v1/topics", tag = "topics",
    responses((status = 200, description = "Every topic", body = Vec<TopicSummary>)))]
pub async fn list(State(state): State<Shared>) -> Json<Vec<TopicSummary>> {
    Json(
        state
            .kafka
            .topics
            .all()
            .iter()
            .map(|t| summary(t))
            .collect(),
    )
}

/// Creates a topic (as Kafka's CreateTopics does).
#[utoipa::path(operation_id = "create_topic", post, path = "/v1/topics", tag = "topics", request_body = CreateTopic,
    responses(
        (status = 201, description = "Created", body = TopicDescription),
        (status = 400, description = "An invalid name, partition count, replication factor or config", body = ErrorBody),
        (status = 409, description = "The topic exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<CreateTopic>,
) -> Result<(StatusCode, Json<TopicDescription>), ApiError> {
    let partitions = request.partitions.unwrap_or(state.kafka.num_partitions);
    let replication = request.replication_factor.unwrap_or(1);
    let worker = state.clone();
    let topic = blocking(move || {
        Ok(worker
            .kafka
            .topics
            .create(&request.name, partitions, replication, request.configs)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(description(&state, &topic)?)))
}

/// A topic's partitions with their start and end offsets, and its configs.
#[utoipa::path(operation_id = "describe_topic", get, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "The topic's name", pattern = "^[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 200, description = "The topic", body = TopicDescription),
        (status = 404, description = "No such topic", body = ErrorBody)))]
pub async fn describe(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<TopicDescription>, ApiError> {
    let topic = state
        .kafka
        .topics
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("topic {name:?} does not exist")))?;
    Ok(Json(description(&state, &topic)?))
}

/// Deletes a topic and all its records.
#[utoipa::path(operation_id = "delete_topic", delete, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "The topic's name", pattern = "^[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such topic", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || Ok(state.kafka.topics.delete(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
