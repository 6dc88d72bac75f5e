//! # kascade: the broker
//!
//! Serves the engine (`kascade-core`) to the world. This crate owns the
//! configuration, the embeddable entry point [`serve`], and the `kascade`
//! binary's command line. The Kafka face, the admin API and the native
//! listeners are mapped onto the engine here as they land; today the broker
//! opens the engine on its data dir and runs until it is told to stop.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = kascade::Config::default();
//! kascade::serve(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod server;

pub use config::Config;
pub use server::{serve, Broker, ServeError};
