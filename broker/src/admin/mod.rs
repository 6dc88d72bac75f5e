//! The admin HTTP/JSON API: pools, topics, K/V objects, lambdas and pipelines
//! under `/v1`, `/health` and Prometheus `/metrics` at the root, and the OpenAPI
//! document of all of it at `/openapi.json`.
//!
//! One file per resource ([`pools`], [`topics`], [`kv`], [`lambdas`],
//! [`pipelines`]); [`auth`] checks the bearer token, [`error`] shapes every
//! failure as `{"error": "..."}`, [`openapi`] gathers the document that utoipa
//! generates from the handlers' annotations. Paths whose last part is a key or
//! a prefix (`/v1/kv/{key}`, `/v1/pools/{prefix}`) take the rest of the path,
//! slashes included: `/v1/kv/sensors/t1` is the key `/sensors/t1`.
//!
//! Without a token the listener binds loopback addresses only; with one
//! (`--admin-token`), any address, and every route but `/health` needs
//! `Authorization: Bearer <token>`.

pub mod auth;
pub mod error;
pub mod gpu;
pub mod kv;
pub mod lambdas;
pub mod openapi;
pub mod pipelines;
pub mod pools;
pub mod topics;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kascade_core::Engine;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::config::Secret;
pub use error::{ApiError, ErrorBody};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("admin listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A non-loopback address was asked for without a token.
    #[error("admin listener on {0}: an address beyond loopback needs an admin token (set --admin-token or KASCADE_ADMIN_TOKEN), or listen on 127.0.0.1:PORT")]
    NotLoopback(String),
}

/// What the admin handlers work on.
pub struct AdminState {
    /// The engine.
    pub engine: Engine,
    /// The Kafka face: its topic registry and defaults.
    pub kafka: Arc<crate::kafka::State>,
    /// The bearer token every route but `/health` requires, if one is set.
    pub token: Option<Secret>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// The shared admin state the handlers receive.
pub type Shared = Arc<AdminState>;

/// The process-wide Prometheus recorder, installed once (a process has one
/// global `metrics` recorder); later brokers in the same process share it.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only its own view"
            );
        }
        handle
    })
}

/// Binds the admin listener; an address beyond loopback only when a token protects it.
pub async fn bind(addr: &str, has_token: bool) -> Result<TcpListener, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AdminError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    if !bound.ip().is_loopback() && !has_token {
        return Err(AdminError::NotLoopback(addr.to_string()));
    }
    // Install the recorder now, so metrics recorded from here on are kept.
    prometheus();
    Ok(listener)
}

/// The admin routes over `state`.
pub fn router(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/gpu", get(gpu::status))
        .route("/v1/pools", get(pools::list).post(pools::create))
        .route(
            "/v1/pools/{*prefix}",
            get(pools::describe)
                .patch(pools::alter)
                .delete(pools::remove),
        )
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/v1/topics/{name}",
            get(topics::describe).delete(topics::delete),
        )
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::remove),
        )
        .route("/v1/trigger/{*key}", post(kv::trigger))
        .route("/v1/lambda-kinds", get(lambdas::kinds))
        .route("/v1/lambdas", get(lambdas::list).post(lambdas::deploy))
        .route(
            "/v1/lambdas/{name}",
            get(lambdas::inspect)
                .put(lambdas::replace)
                .delete(lambdas::remove),
        )
        .route("/v1/pipelines", get(pipelines::list).post(pipelines::load))
        .route(
            "/v1/pipelines/{name}",
            get(pipelines::describe)
                .put(pipelines::replace)
                .delete(pipelines::remove),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), json_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves the admin routes until the task is dropped.
pub async fn serve(listener: TcpListener, state: Shared) {
    let app = router(state);
    let peer: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(?peer, "admin listener stopped: {e}");
    }
}

/// Liveness: answers `ok` once the broker serves.
#[utoipa::path(operation_id = "health", get, path = "/health", tag = "broker", security(()),
    responses((status = 200, description = "The broker is up", body = String, content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "ok\n"
}

/// Prometheus metrics of the engine, the Kafka face and the lambdas.
#[utoipa::path(operation_id = "metrics", get, path = "/metrics", tag = "broker",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no admin route {method} {}: see /openapi.json for the routes",
        uri.path()
    ))
}

/// Turns every error answer that is not JSON yet (axum's own: a body over the
/// limit, a method the path does not take, a malformed path or query) into
/// `{"error": ...}` with the same status.
async fn json_errors(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the admin API's limit of {} bytes (--admin-max-body-bytes)",
            state.max_body_bytes
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{path} does not take {method}: see /openapi.json for the routes")
        }
        _ => {
            let body = axum::body::to_bytes(response.into_body(), 64 << 10)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_string();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_string()
            } else {
                text
            }
        }
    };
    let mut answer = error::error_response(status, message);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// Runs blocking engine work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("admin task failed: {e}")))?
}

/// A JSON request body, whatever its content type says; a parse error is a 400
/// that names what is wrong, a body over the limit a 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = RawBody::from_request(request, state).await?.0;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")).into_response())
    }
}

/// A request body as bytes; a body over the limit is a 413.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(|e| match e.status() {
                // Left as axum's text: `json_errors` words it with the configured limit.
                StatusCode::PAYLOAD_TOO_LARGE => e.into_response(),
                status => ApiError::new(status, e.body_text()).into_response(),
            })
    }
}
