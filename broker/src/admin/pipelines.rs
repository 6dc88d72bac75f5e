//! Pipelines: load a data-flow graph described in TOML or JSON (the engine's
//! `PipelineSpec`), list them with each stage's counters, replace, remove.
//!
//! Each vertex runs as the lambda `<pipeline>.<vertex>`; its counters (calls,
//! errors, mean time per call) show where a pipeline's time goes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kascade_core::{BindingSpec, PipelineSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::lambdas::{check_kind, check_loops, stats_of, DestinationBody, Stats};
use super::{blocking, ApiError, ErrorBody, RawBody, Shared};

/// One stage of a pipeline, as loaded.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VertexBody {
    /// The stage's name, unique in its pipeline.
    pub name: String,
    /// The prefix whose versions it receives.
    pub prefix: String,
    /// A registered lambda kind.
    pub kind: String,
    /// The kind's config.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where its output goes.
    #[serde(default)]
    pub destinations: Vec<DestinationBody>,
}

/// A pipeline description (JSON form; the TOML form has the same fields, `[[vertex]]` tables).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PipelineBody {
    /// The pipeline's name.
    #[schema(example = "farm", pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    /// Its stages.
    pub vertex: Vec<VertexBody>,
}

/// A stage of a loaded pipeline with its counters.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VertexInfo {
    /// The stage's name.
    pub name: String,
    /// The lambda running it: `<pipeline>.<vertex>`.
    pub lambda: String,
    /// The prefix it receives.
    pub prefix: String,
    /// Its lambda kind.
    pub kind: String,
    /// Where its output goes.
    pub destinations: Vec<DestinationBody>,
    /// False when it could not be built at start (see the broker's log).
    pub active: bool,
    /// Its counters: where the pipeline's time goes.
    pub stats: Stats,
}

/// A loaded pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PipelineInfo {
    /// Its name.
    pub name: String,
    /// Its stages, in the order described.
    pub vertices: Vec<VertexInfo>,
}

fn info(spec: &PipelineSpec, stats: &HashMap<String, Stats>) -> PipelineInfo {
    PipelineInfo {
        name: spec.name.clone(),
        vertices: spec
            .vertices
            .iter()
            .zip(spec.bindings())
            .map(|(v, b)| VertexInfo {
                name: v.name.clone(),
                prefix: v.prefix.clone(),
                kind: v.kind.clone(),
                destinations: v.destinations.iter().map(DestinationBody::from).collect(),
                active: stats.contains_key(&b.name),
                stats: stats.get(&b.name).cloned().unwrap_or_default(),
                lambda: b.name,
            })
            .collect(),
    }
}

fn parse(body: &[u8]) -> Result<PipelineSpec, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("a pipeline description must be UTF-8 TOML or JSON"))?;
    Ok(PipelineSpec::parse(text)?)
}

async fn load_spec(state: &Shared, spec: PipelineSpec) -> Result<PipelineInfo, ApiError> {
    for v in &spec.vertices {
        check_kind(state, &v.kind)
            .map_err(|e| ApiError::bad_request(format!("vertex {}: {}", v.name, e.message)))?;
    }
    let new = spec.bindings();
    let stored = state.engine.binding_specs();
    let active: Vec<String> = state
        .engine
        .lambda_stats()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let replaced: Vec<String> = state
        .engine
        .pipelines()
        .iter()
        .filter(|p| p.name == spec.name)
        .flat_map(|p| p.bindings())
        .map(|b| b.name)
        .collect();
    for b in &new {
        if stored.iter().any(|s| s.name == b.name)
            || (active.contains(&b.name) && !replaced.contains(&b.name))
        {
            return Err(ApiError::conflict(format!(
                "vertex {} would run as the lambda {}, a name already deployed: rename the vertex or remove that lambda",
                b.name, b.name
            )));
        }
    }
    let mut others: Vec<BindingSpec> = stored;
    for p in state.engine.pipelines() {
        if p.name != spec.name {
            others.extend(p.bindings());
        }
    }
    check_loops(&others, &new)?;
    let engine = state.engine.clone();
    let loaded = spec.clone();
    blocking(move || Ok(engine.load_pipeline(loaded)?)).await?;
    Ok(info(&spec, &stats_of(state)))
}

/// Lists the loaded pipelines with each stage's counters.
#[utoipa::path(operation_id = "list_pipelines", get, path = "/v1/pipelines", tag = "pipelines",
    responses((status = 200, description = "The pipelines, by name", body = Vec<PipelineInfo>)))]
pub async fn list(State(state): State<Shared>) -> Json<Vec<PipelineInfo>> {
    let stats = stats_of(&state);
    Json(
        state
            .engine
            .pipelines()
            .iter()
            .map(|p| info(p, &stats))
            .collect(),
    )
}

/// Loads a pipeline from TOML or JSON; it survives restart.
#[utoipa::path(operation_id = "load_pipeline", post, path = "/v1/pipelines", tag = "pipelines",
    request_body(description = "The pipeline in JSON, or in TOML (`name = ...` and `[[vertex]]` tables)",
        content((PipelineBody = "application/json"), (String = "application/toml"))),
    responses(
        (status = 201, description = "Loaded: every vertex bound", body = PipelineInfo),
        (status = 400, description = "Not a valid description, an unknown kind, or a loop", body = ErrorBody),
        (status = 409, description = "A pipeline of this name is loaded (replace it with PUT), or a vertex's lambda name is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn load(
    State(state): State<Shared>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<PipelineInfo>), ApiError> {
    let spec = parse(&body)?;
    if state.engine.pipelines().iter().any(|p| p.name == spec.name) {
        return Err(ApiError::conflict(format!(
            "a pipeline named {} is loaded: replace it with PUT /v1/pipelines/{}",
            spec.name, spec.name
        )));
    }
    Ok((StatusCode::CREATED, Json(load_spec(&state, spec).await?)))
}

/// One pipeline with each stage's counters.
#[utoipa::path(operation_id = "describe_pipeline", get, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses(
        (status = 200, description = "The pipeline", body = PipelineInfo),
        (status = 404, description = "No such pipeline", body = ErrorBody)))]
pub async fn describe(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PipelineInfo>, ApiError> {
    let spec = state
        .engine
        .pipelines()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no pipeline named {name:?} is loaded")))?;
    Ok(Json(info(&spec, &stats_of(&state))))
}

/// Loads or replaces the pipeline of this name (the body's name must match).
#[utoipa::path(operation_id = "replace_pipeline", put, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    request_body(description = "The pipeline in JSON or TOML",
        content((PipelineBody = "application/json"), (String = "application/toml"))),
    responses(
        (status = 200, description = "Loaded or replaced", body = PipelineInfo),
        (status = 400, description = "Not a valid description, a name unlike the path's, an unknown kind, or a loop", body = ErrorBody),
        (status = 409, description = "A vertex's lambda name is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn replace(
    State(state): State<Shared>,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<PipelineInfo>, ApiError> {
    let spec = parse(&body)?;
    if spec.name != name {
        return Err(ApiError::bad_request(format!(
            "the description names pipeline {:?}, the path {name:?}",
            spec.name
        )));
    }
    Ok(Json(load_spec(&state, spec).await?))
}

/// Removes a pipeline and unbinds its vertices.
#[utoipa::path(operation_id = "remove_pipeline", delete, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such pipeline", body = ErrorBody)))]
pub async fn remove(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let engine = state.engine.clone();
    let n = name.clone();
    if blocking(move || Ok(engine.remove_pipeline(&n)?)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no pipeline named {name:?} is loaded"
        )))
    }
}
