//! Lambdas: deploy a registered kind on a prefix, list them with their counters,
//! inspect one, replace it (the new code takes over atomically), remove it.
//!
//! A lambda's `config` is its kind's: `forward` takes none; `wasm` takes
//! `{"module_base64": "<standard base64 of the .wasm>"}`; `cdylib` takes
//! `{"path": "/abs/path/lib.so"}` (each with optional fields: a handler, limits;
//! see docs/lambdas.md). A binding whose output would reach its own
//! input again (directly or through other lambdas and pipelines) is refused,
//! since it would upcall itself forever.

use std::collections::{HashMap, HashSet, VecDeque};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kascade_core::{BindingSpec, Destination, EmitMode, Prefix};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{blocking, ApiError, ErrorBody, JsonBody, Shared};

/// How a destination is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stored as a new version, then upcalled.
    #[default]
    Put,
    /// Upcalled only, never stored.
    Trigger,
}

/// Where a lambda's output goes: the input key's path under the bound prefix, under this prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationBody {
    /// The prefix output keys are formed under.
    #[schema(
        example = "/farm/scored",
        pattern = "^/([^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*)?$",
        max_length = 1024
    )]
    pub prefix: String,
    /// `put` (default) or `trigger`.
    #[serde(default)]
    pub mode: Mode,
}

/// A lambda to deploy.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployLambda {
    /// 1-128 letters, digits, `-`, `_` or `.`.
    #[schema(example = "scorer", pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    /// The prefix whose versions it receives.
    #[schema(
        example = "/farm/frames",
        pattern = "^/([^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*)?$",
        max_length = 1024
    )]
    pub prefix: String,
    /// A registered kind (see `GET /v1/lambda-kinds`).
    #[schema(example = "forward")]
    pub kind: String,
    /// The kind's config.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where its output goes.
    #[serde(default)]
    pub destinations: Vec<DestinationBody>,
}

/// A lambda's new code and binding, replacing the one of the same name.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceLambda {
    /// The prefix whose versions it receives.
    #[schema(
        pattern = "^/([^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*)?$",
        max_length = 1024
    )]
    pub prefix: String,
    /// A registered kind.
    pub kind: String,
    /// The kind's config.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where its output goes.
    #[serde(default)]
    pub destinations: Vec<DestinationBody>,
}

/// A lambda's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Upcalls made.
    pub calls: u64,
    /// Upcalls that failed (an error, a trap or a panic).
    pub errors: u64,
    /// Mean time in the lambda per call, nanoseconds.
    pub mean_ns: u64,
    /// Mean queue lag per call (its start minus the input's timestamp), nanoseconds.
    #[serde(default)]
    pub mean_lag_ns: u64,
}

/// A deployed lambda.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LambdaInfo {
    /// Its name.
    pub name: String,
    /// The prefix it is bound to.
    pub prefix: String,
    /// Its kind.
    pub kind: String,
    /// Where its output goes.
    pub destinations: Vec<DestinationBody>,
    /// False when its stored binding could not be built at start (see the broker's log).
    pub active: bool,
    /// Its counters since it was (re)deployed or the broker started.
    pub stats: Stats,
    /// Its config (inspect only; strings over 1024 characters show as their length unless `full=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// The registered lambda kinds.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Kinds {
    /// Their names, sorted.
    pub kinds: Vec<String>,
}

/// Options of an inspection.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InspectQuery {
    /// Show the config whole, long strings (a WASM module's base64) included.
    pub full: Option<bool>,
}

impl From<&Destination> for DestinationBody {
    fn from(d: &Destination) -> DestinationBody {
        DestinationBody {
            prefix: d.prefix.clone(),
            mode: match d.mode {
                EmitMode::Put => Mode::Put,
                EmitMode::Trigger => Mode::Trigger,
            },
        }
    }
}

impl From<&DestinationBody> for Destination {
    fn from(d: &DestinationBody) -> Destination {
        Destination {
            prefix: d.prefix.clone(),
            mode: match d.mode {
                Mode::Put => EmitMode::Put,
                Mode::Trigger => EmitMode::Trigger,
            },
        }
    }
}

/// Refuses a kind no one registered, naming those that are.
pub(crate) fn check_kind(state: &Shared, kind: &str) -> Result<(), ApiError> {
    let kinds = state.engine.lambda_kinds();
    if kinds.iter().any(|k| k == kind) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "no lambda kind named {kind:?} is registered; known kinds: {}",
        kinds.join(", ")
    )))
}

/// True when output under `destination` can land under `prefix`.
fn reaches(destination: &Prefix, prefix: &Prefix) -> bool {
    prefix.covers(destination.as_str()) || destination.covers(prefix.as_str())
}

/// Every binding in force that emits or receives: stored lambdas and pipeline vertices.
pub(crate) fn all_bindings(state: &Shared) -> Vec<BindingSpec> {
    let mut all = state.engine.binding_specs();
    for p in state.engine.pipelines() {
        all.extend(p.bindings());
    }
    all
}

/// Refuses `new` bindings when, with `others`, some output flows back to one of them:
/// it would upcall itself forever. Returns the loop in words.
pub(crate) fn check_loops(others: &[BindingSpec], new: &[BindingSpec]) -> Result<(), ApiError> {
    let names: HashSet<&str> = new.iter().map(|b| b.name.as_str()).collect();
    let mut nodes: Vec<(&BindingSpec, Prefix, Vec<Prefix>)> = Vec::new();
    for b in others
        .iter()
        .filter(|b| !names.contains(b.name.as_str()))
        .chain(new)
    {
        let prefix = Prefix::new(&b.prefix)?;
        let destinations = b
            .destinations
            .iter()
            .map(|d| Prefix::new(&d.prefix))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.push((b, prefix, destinations));
    }
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|(_, _, dests)| {
            (0..nodes.len())
                .filter(|&j| dests.iter().any(|d| reaches(d, &nodes[j].1)))
                .collect()
        })
        .collect();
    for start in (0..nodes.len()).filter(|&i| names.contains(nodes[i].0.name.as_str())) {
        // Breadth-first from `start`'s outputs; a way back to `start` is a loop.
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue: VecDeque<usize> = VecDeque::new();
        for &j in &edges[start] {
            parent.entry(j).or_insert(start);
            queue.push_back(j);
        }
        while let Some(at) = queue.pop_front() {
            if at == start {
                let mut path = vec![nodes[start].0.name.clone()];
                let mut cur = parent[&start];
                while cur != start {
                    path.push(nodes[cur].0.name.clone());
                    cur = parent[&cur];
                }
                path.push(nodes[start].0.name.clone());
                let last = path.len() - 1;
                path[1..last].reverse();
                return Err(ApiError::bad_request(format!(
                    "output would loop back to its input ({}): a lambda's destinations must not lead back to its own prefix",
                    path.join(" -> ")
                )));
            }
            for &j in &edges[at] {
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(j) {
                    e.insert(at);
                    queue.push_back(j);
                }
            }
        }
    }
    Ok(())
}

/// Every active binding's counters by name, as the lambda and pipeline listings show them.
pub(super) fn stats_of(state: &Shared) -> HashMap<String, Stats> {
    state
        .engine
        .lambda_stats()
        .into_iter()
        .map(|s| {
            (
                s.name,
                Stats {
                    calls: s.calls,
                    errors: s.errors,
                    mean_ns: s.mean_ns,
                    mean_lag_ns: s.mean_lag_ns,
                },
            )
        })
        .collect()
}

fn info(spec: &BindingSpec, stats: &HashMap<String, Stats>) -> LambdaInfo {
    LambdaInfo {
        name: spec.name.clone(),
        prefix: spec.prefix.clone(),
        kind: spec.kind.clone(),
        destinations: spec
            .destinations
            .iter()
            .map(DestinationBody::from)
            .collect(),
        active: stats.contains_key(&spec.name),
        stats: stats.get(&spec.name).cloned().unwrap_or_default(),
        config: None,
    }
}

/// Long strings (a module's base64) replaced by their length, for reading.
fn elide(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() > 1024 => Value::String(format!("<{} characters>", s.len())),
        Value::Array(a) => Value::Array(a.iter().map(elide).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), elide(v))).collect()),
        other => other.clone(),
    }
}

/// Why `name` cannot be deployed or replaced through this API, if it is taken by a
/// binding it does not manage (a pipeline vertex, or one built into the broker).
fn foreign(state: &Shared, name: &str) -> Option<ApiError> {
    if let Some(p) = state
        .engine
        .pipelines()
        .iter()
        .find(|p| p.bindings().iter().any(|b| b.name == name))
    {
        return Some(ApiError::conflict(format!(
            "{name} is a vertex of pipeline {}: change it through /v1/pipelines",
            p.name
        )));
    }
    let stored = state.engine.binding_specs().iter().any(|b| b.name == name);
    let active = state.engine.lambda_stats().iter().any(|s| s.name == name);
    (active && !stored).then(|| {
        ApiError::conflict(format!(
            "{name} is built into the broker; choose another name"
        ))
    })
}

async fn bind(state: &Shared, spec: BindingSpec) -> Result<LambdaInfo, ApiError> {
    check_kind(state, &spec.kind)?;
    check_loops(&all_bindings(state), std::slice::from_ref(&spec))?;
    let engine = state.engine.clone();
    let bound = spec.clone();
    blocking(move || Ok(engine.bind(bound)?)).await?;
    Ok(info(&spec, &stats_of(state)))
}

/// The registered lambda kinds.
#[utoipa::path(operation_id = "list_lambda_kinds", get, path = "/v1/lambda-kinds", tag = "lambdas",
    responses((status = 200, description = "The kinds a lambda may have", body = Kinds)))]
pub async fn kinds(State(state): State<Shared>) -> Json<Kinds> {
    Json(Kinds {
        kinds: state.engine.lambda_kinds(),
    })
}

/// Lists the deployed lambdas with their counters.
#[utoipa::path(operation_id = "list_lambdas", get, path = "/v1/lambdas", tag = "lambdas",
    responses((status = 200, description = "The deployed lambdas, by name", body = Vec<LambdaInfo>)))]
pub async fn list(State(state): State<Shared>) -> Json<Vec<LambdaInfo>> {
    let stats = stats_of(&state);
    Json(
        state
            .engine
            .binding_specs()
            .iter()
            .map(|s| info(s, &stats))
            .collect(),
    )
}

/// Deploys a lambda; it survives restart.
#[utoipa::path(operation_id = "deploy_lambda", post, path = "/v1/lambdas", tag = "lambdas", request_body = DeployLambda,
    responses(
        (status = 201, description = "Deployed and bound", body = LambdaInfo),
        (status = 400, description = "An invalid name, prefix, kind, config or destination, or a loop", body = ErrorBody),
        (status = 409, description = "A lambda of this name exists (replace it with PUT)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn deploy(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<DeployLambda>,
) -> Result<(StatusCode, Json<LambdaInfo>), ApiError> {
    if state
        .engine
        .binding_specs()
        .iter()
        .any(|b| b.name == request.name)
    {
        return Err(ApiError::conflict(format!(
            "a lambda named {} is deployed: replace it with PUT /v1/lambdas/{}",
            request.name, request.name
        )));
    }
    if let Some(e) = foreign(&state, &request.name) {
        return Err(e);
    }
    let spec = BindingSpec {
        name: request.name,
        prefix: request.prefix,
        kind: request.kind,
        config: request.config,
        destinations: request.destinations.iter().map(Destination::from).collect(),
    };
    Ok((StatusCode::CREATED, Json(bind(&state, spec).await?)))
}

/// One lambda: its binding, config and counters.
#[utoipa::path(operation_id = "inspect_lambda", get, path = "/v1/lambdas/{name}", tag = "lambdas",
    params(("name" = String, Path, description = "The lambda's name", pattern = "^[A-Za-z0-9._-]{1,128}$"), InspectQuery),
    responses(
        (status = 200, description = "The lambda", body = LambdaInfo),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "No such lambda", body = ErrorBody)))]
pub async fn inspect(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<InspectQuery>,
) -> Result<Json<LambdaInfo>, ApiError> {
    let spec = state
        .engine
        .binding_specs()
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no lambda named {name:?} is deployed")))?;
    let mut out = info(&spec, &stats_of(&state));
    out.config = Some(if query.full.unwrap_or(false) {
        spec.config.clone()
    } else {
        elide(&spec.config)
    });
    Ok(Json(out))
}

/// Deploys or replaces the lambda of this name: the new binding takes over atomically.
#[utoipa::path(operation_id = "replace_lambda", put, path = "/v1/lambdas/{name}", tag = "lambdas", request_body = ReplaceLambda,
    params(("name" = String, Path, description = "The lambda's name", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses(
        (status = 200, description = "Deployed or replaced", body = LambdaInfo),
        (status = 400, description = "An invalid name, prefix, kind, config or destination, or a loop", body = ErrorBody),
        (status = 409, description = "The name belongs to a pipeline vertex or the broker", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn replace(
    State(state): State<Shared>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ReplaceLambda>,
) -> Result<Json<LambdaInfo>, ApiError> {
    if let Some(e) = foreign(&state, &name) {
        return Err(e);
    }
    let spec = BindingSpec {
        name,
        prefix: request.prefix,
        kind: request.kind,
        config: request.config,
        destinations: request.destinations.iter().map(Destination::from).collect(),
    };
    Ok(Json(bind(&state, spec).await?))
}

/// Removes a lambda: it gets no further upcalls and is gone after a restart too.
#[utoipa::path(operation_id = "remove_lambda", delete, path = "/v1/lambdas/{name}", tag = "lambdas",
    params(("name" = String, Path, description = "The lambda's name", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such lambda", body = ErrorBody),
        (status = 409, description = "The name belongs to a pipeline vertex or the broker", body = ErrorBody)))]
pub async fn remove(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.engine.binding_specs().iter().any(|b| b.name == name) {
        return Err(foreign(&state, &name).unwrap_or_else(|| {
            ApiError::not_found(format!("no lambda named {name:?} is deployed"))
        }));
    }
    let engine = state.engine.clone();
    blocking(move || Ok(engine.unbind(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, prefix: &str, dests: &[&str]) -> BindingSpec {
        BindingSpec {
            name: name.into(),
            prefix: prefix.into(),
            kind: "forward".into(),
            config: serde_json::Value::Null,
            destinations: dests
                .iter()
                .map(|d| Destination {
                    prefix: d.to_string(),
                    mode: EmitMode::Put,
                })
                .collect(),
        }
    }

    #[test]
    fn a_chain_is_accepted_and_a_loop_is_refused_with_its_path() {
        let others = [spec("a", "/in", &["/mid"]), spec("b", "/mid", &["/out"])];
        assert!(check_loops(&others, &[spec("c", "/out", &["/done"])]).is_ok());
        let err = check_loops(&others, &[spec("c", "/out", &["/in/again"])]).unwrap_err();
        assert!(err.message.contains("c -> a -> b -> c"), "{}", err.message);
        let own = check_loops(&[], &[spec("d", "/x", &["/x/y"])]).unwrap_err();
        assert!(own.message.contains("d -> d"), "{}", own.message);
        // Replacing a binding drops its old edges.
        assert!(check_loops(&[spec("d", "/x", &["/x/y"])], &[spec("d", "/x", &["/z"])]).is_ok());
    }

    #[test]
    fn long_config_strings_are_elided() {
        let v = serde_json::json!({"module_base64": "A".repeat(5000), "n": 1});
        let e = elide(&v);
        assert_eq!(e["module_base64"], "<5000 characters>");
        assert_eq!(e["n"], 1);
    }
}
