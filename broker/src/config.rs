//! The broker's settings: every one a flag, an env var (`KASCADE_...`) and a default.

use std::path::PathBuf;

use kascade_core::{EngineConfig, WaitPolicy};

/// How idle engine threads wait for work, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitMode {
    /// Park at once: least CPU, a 30-45 µs wake-up on an idle vCPU.
    Block,
    /// Spin `--upcall-spin-us`, then park (the default).
    Spin,
    /// Never park: lowest latency, a core busy per waiting thread.
    Busy,
}

/// Settings of a broker, from flags, env vars and defaults.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Directory holding persistent pools and the engine's metadata.
    #[arg(long, env = "KASCADE_DATA_DIR", default_value = "./kascade-data")]
    pub data_dir: PathBuf,
    /// Upcall worker threads running lambdas.
    #[arg(long, env = "KASCADE_UPCALL_WORKERS", default_value_t = 2)]
    pub upcall_workers: usize,
    /// How idle upcall workers wait.
    #[arg(long, env = "KASCADE_UPCALL_WAIT", value_enum, default_value_t = WaitMode::Spin)]
    pub upcall_wait: WaitMode,
    /// Microseconds an idle upcall worker spins before it parks (with `--upcall-wait spin`).
    #[arg(long, env = "KASCADE_UPCALL_SPIN_US", default_value_t = 200)]
    pub upcall_spin_us: u64,
    /// Address the Kafka listener binds (IPv4 loopback by default).
    #[arg(long, env = "KASCADE_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// `host:port` clients are told to connect to; the bound address when unset.
    #[arg(long, env = "KASCADE_ADVERTISED")]
    pub advertised: Option<String>,
    /// This broker's Kafka node id.
    #[arg(long, env = "KASCADE_NODE_ID", default_value_t = 0)]
    pub node_id: i32,
    /// Create a topic when a client asks for one that does not exist (Kafka's
    /// `auto.create.topics.enable`; off by default, as in Redpanda).
    #[arg(long, env = "KASCADE_AUTO_CREATE_TOPICS", default_value_t = false, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic or of a CreateTopics request that leaves it to the broker.
    #[arg(long, env = "KASCADE_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: i32,
    /// Address of the admin HTTP listener (`/health`, Prometheus `/metrics`); loopback only for now.
    #[arg(long, env = "KASCADE_ADMIN_LISTEN", default_value = "127.0.0.1:9644")]
    pub admin_listen: String,
    /// Largest Kafka request frame accepted; a bigger one closes the connection.
    #[arg(long, env = "KASCADE_MAX_FRAME_BYTES", default_value_t = kascade_wire::kafka::frame::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kascade-data"),
            upcall_workers: 2,
            upcall_wait: WaitMode::Spin,
            upcall_spin_us: 200,
            listen: "127.0.0.1:9092".into(),
            advertised: None,
            node_id: 0,
            auto_create_topics: false,
            num_partitions: 1,
            admin_listen: "127.0.0.1:9644".into(),
            max_frame_bytes: kascade_wire::kafka::frame::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl Config {
    /// The settings `kascade` with no subcommand runs with: defaults overridden by `KASCADE_*` env vars.
    pub fn default_from_env() -> Config {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        <Only as clap::Parser>::parse_from(["kascade"]).config
    }

    /// The engine's share of the settings.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            data_dir: Some(self.data_dir.clone()),
            upcall_workers: self.upcall_workers,
            upcall_wait: match self.upcall_wait {
                WaitMode::Block => WaitPolicy::Block,
                WaitMode::Spin => WaitPolicy::SpinThenPark {
                    spin_us: self.upcall_spin_us,
                },
                WaitMode::Busy => WaitPolicy::BusyPoll,
            },
        }
    }
}
