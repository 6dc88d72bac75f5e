//! # kascade: the broker
//!
//! Serves the engine (`kascade-core`) to the world. This crate owns the
//! configuration, the embeddable entry point [`serve`], and the `kascade`
//! binary's command line, and maps the faces of Kascade onto the engine: the
//! Kafka listener ([`kafka`]: topics as pools, partitions as keys, offsets as
//! seqs) and the admin HTTP API ([`admin`]: pools, topics, K/V objects, lambdas
//! and pipelines, described by OpenAPI), and the native fast path ([`native`]:
//! shared-memory and TCP listeners, publish and push subscriptions).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = kascade::Config::default();
//! kascade::serve(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod config;
pub mod gpu;
pub mod kafka;
pub mod lambdas;
pub mod native;
pub mod server;

pub use config::Config;
pub use server::{serve, Broker, ServeError};
