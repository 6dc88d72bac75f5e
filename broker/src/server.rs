//! The embeddable entry point: open the engine, serve until a shutdown future resolves, stop cleanly.

use std::future::Future;
use std::sync::Arc;

use kascade_core::Engine;

use crate::config::Config;
use crate::lambdas::LambdaHost;

/// Why a broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not open its data dir.
    #[error("could not open the engine: {0}")]
    Engine(#[from] kascade_core::Error),
    /// The admin listener could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The Kafka listener could not start.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::ListenError),
    /// The native listeners could not start.
    #[error(transparent)]
    Native(#[from] crate::native::NativeStartError),
    /// A blocking task of the broker failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A running broker: the engine and, as they land, its listeners.
pub struct Broker {
    engine: Engine,
    lambdas: Arc<LambdaHost>,
}

impl Broker {
    /// Opens the engine on the configured data dir (blocking: recovery reads the log),
    /// with the broker's lambda kinds registered so stored bindings come back.
    pub fn open(config: &Config) -> Result<Broker, ServeError> {
        let lambdas = LambdaHost::new();
        // Restored `process` bindings start their programs as the engine opens:
        // they need the native URL before the listener is up (they retry until it is).
        if let Ok(native) = crate::native::NativeSettings::from_config(config) {
            lambdas.set_native_url(native.shm.or(native.tcp));
        }
        let builder = crate::gpu::attach(config, &lambdas, Engine::builder(config.engine()));
        let engine = lambdas.register(builder).open()?;
        Ok(Broker { engine, lambdas })
    }

    /// The engine, for in-process use and tests.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the broker's lambda kinds share (their link to the Kafka face).
    pub fn lambdas(&self) -> &Arc<LambdaHost> {
        &self.lambdas
    }

    /// Flushes and stops the engine.
    pub fn shutdown(self) {
        self.engine.shutdown();
    }
}

/// Runs a broker until `shutdown` resolves, then stops it cleanly.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    // The admin listener first: it installs the metrics recorder, so the
    // engine's recovery is counted too, and a taken port fails fast.
    let token = config.admin_token()?;
    let native_settings = crate::native::NativeSettings::from_config(&config)?;
    let admin_listener = crate::admin::bind(&config.admin_listen, token.is_some()).await?;
    let admin_bound =
        admin_listener
            .local_addr()
            .map_err(|source| crate::admin::AdminError::Bind {
                addr: config.admin_listen.clone(),
                source,
            })?;
    let open_config = config.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(&open_config))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
    let listener = crate::kafka::bind(&config).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| crate::kafka::ListenError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let engine = broker.engine().clone();
    let state_config = config.clone();
    let state = tokio::task::spawn_blocking(move || {
        crate::kafka::State::open(engine, &state_config, bound)
    })
    .await
    .map_err(|e| ServeError::Task(e.to_string()))??;
    let state = Arc::new(state);
    broker.lambdas().attach_kafka(&state);
    let kafka = tokio::spawn(crate::kafka::accept_loop(listener, state.clone()));
    let admin_state = std::sync::Arc::new(crate::admin::AdminState {
        engine: broker.engine().clone(),
        kafka: state.clone(),
        token,
        max_body_bytes: config.admin_max_body_bytes,
    });
    let admin = tokio::spawn(crate::admin::serve(admin_listener, admin_state));
    let native = crate::native::NativeServer::start(
        state.clone(),
        &native_settings,
        tokio::runtime::Handle::current(),
        broker.lambdas().processes().clone(),
    )?;
    broker
        .lambdas()
        .set_native_url(native.shm_url().or(native.tcp_url()).map(str::to_owned));
    let pools = broker.engine().pools().len();
    tracing::info!(
        data_dir = %config.data_dir.display(),
        kafka = %bound,
        advertised = %format!("{}:{}", state.advertised_host, state.advertised_port),
        admin = %admin_bound,
        native = %native.shm_url().unwrap_or("off"),
        native_tcp = %native.tcp_url().unwrap_or("off"),
        pools,
        "kascade is ready"
    );
    shutdown.await;
    tracing::info!("shutting down");
    kafka.abort();
    admin.abort();
    let host = broker.lambdas().clone();
    tokio::task::spawn_blocking(move || host.stop_processes())
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?;
    tokio::task::spawn_blocking(move || native.shutdown())
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?;
    drop(state);
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?;
    tracing::info!("kascade stopped");
    Ok(())
}
