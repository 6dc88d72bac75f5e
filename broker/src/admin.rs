//! The admin HTTP listener: `/health` and Prometheus metrics at `/metrics`.
//!
//! This is the first slice of the admin API (pools, topics, K/V objects,
//! lambdas and pipelines join it with the admin-API issue). Until bearer-token
//! auth lands with them, it binds loopback addresses only.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

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
    /// A non-loopback address was asked for.
    #[error("admin listener on {0}: only loopback addresses are allowed until token auth exists (use 127.0.0.1:PORT)")]
    NotLoopback(String),
}

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

/// Binds the admin listener, refusing addresses beyond loopback.
pub async fn bind(addr: &str) -> Result<TcpListener, AdminError> {
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
    if !bound.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr.to_string()));
    }
    // Install the recorder now, so metrics recorded from here on are kept.
    prometheus();
    Ok(listener)
}

/// Serves the admin routes until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let handle = prometheus().clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        );
    let peer: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(?peer, "admin listener stopped: {e}");
    }
}
