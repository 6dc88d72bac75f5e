//! The `kascade` binary: `kascade serve` runs a broker; the other subcommands are
//! clients of its admin API, and `pub`/`sub` of its native listener (see `cli/`).

mod cli;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Kascade: a Kafka-compatible pub/sub broker on a Cascade-style versioned K/V engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker (the default when no subcommand is given).
    Serve(kascade::Config),
    /// Create, list, describe and delete Kafka topics.
    Topic(cli::topic::TopicArgs),
    /// Put, get, list, remove and trigger versioned K/V objects.
    Kv(cli::kv::KvArgs),
    /// Deploy, list, inspect and remove lambdas.
    Lambda(cli::lambda::LambdaArgs),
    /// Load, list and remove pipelines.
    Pipeline(cli::pipeline::PipelineArgs),
    /// Create, list, change and remove pools.
    Pool(cli::pool::PoolArgs),
    /// Publish stdin lines as records through the native client (like `kcat -P`).
    Pub(cli::native::PubArgs),
    /// Print a topic's records as the broker pushes them (like `kcat -C`).
    Sub(cli::native::SubArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KASCADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match cli.command {
        Some(Command::Serve(_)) => {
            let serve = matches
                .subcommand_matches("serve")
                .context("internal: serve without its arguments")?;
            kascade::Config::from_matches(serve)?
        }
        None => kascade::Config::default_from_env()?,
        Some(Command::Topic(args)) => client_exit(cli::topic::run(args)),
        Some(Command::Kv(args)) => client_exit(cli::kv::run(args)),
        Some(Command::Lambda(args)) => client_exit(cli::lambda::run(args)),
        Some(Command::Pipeline(args)) => client_exit(cli::pipeline::run(args)),
        Some(Command::Pool(args)) => client_exit(cli::pool::run(args)),
        Some(Command::Pub(args)) => client_exit(cli::native::run_pub(args)),
        Some(Command::Sub(args)) => client_exit(cli::native::run_sub(args)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(async {
            // Install the handlers before the broker says it is ready, so no signal is missed.
            let shutdown = shutdown_signal()?;
            kascade::serve(config.clone(), shutdown)
                .await
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("serving with data dir {}", config.data_dir.display()))
}

/// Ends a client command: a failure is one line on stderr (no backtrace) and exit status 1.
fn client_exit(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1)
        }
    }
}

/// Installs the Ctrl-C (SIGINT) and SIGTERM handlers and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("received Ctrl-C"),
                _ = terminate.recv() => tracing::info!("received SIGTERM"),
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("received Ctrl-C");
    })
}
