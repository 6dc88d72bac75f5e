//! The broker's settings: every one a flag, an env var (`KASCADE_...`), a key of
//! the config file (`--config kascade.toml`) and a default.
//!
//! Precedence, highest first: flag, env var, config file, default. The file's keys
//! are the flags' names in snake case (`--admin-listen` is `admin_listen`); the
//! commented `kascade.toml` at the repository root lists every one.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use kascade_core::{EngineConfig, WaitPolicy};
use serde::{Deserialize, Serialize};

/// A secret given on the command line, in the environment or in the config file;
/// its `Debug` form never shows it, so it stays out of logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("could not read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or holds an unknown or mistyped setting.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where TOML knows it.
        message: String,
    },
    /// The admin token file could not be read or is empty.
    #[error("admin token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Both a token and a token file were given.
    #[error("set either --admin-token (KASCADE_ADMIN_TOKEN) or --admin-token-file (KASCADE_ADMIN_TOKEN_FILE), not both")]
    TwoTokens,
    /// The command line did not parse into settings.
    #[error(transparent)]
    Args(#[from] clap::Error),
}

/// How idle engine threads wait for work, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    /// Park at once: least CPU, a 30-45 µs wake-up on an idle vCPU.
    Block,
    /// Spin `--upcall-spin-us`, then park (the default).
    Spin,
    /// Never park: lowest latency, a core busy per waiting thread.
    Busy,
}

/// Settings of a broker, from flags, env vars, the config file and defaults.
#[derive(Clone, Debug, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A TOML file holding any of these settings; flags and env vars override it.
    #[arg(long, env = "KASCADE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
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
    /// Address of the admin HTTP API; an address beyond loopback needs an admin token.
    #[arg(long, env = "KASCADE_ADMIN_LISTEN", default_value = "127.0.0.1:9644")]
    pub admin_listen: String,
    /// Bearer token every admin route but `/health` requires; none by default (then loopback only).
    #[arg(long, env = "KASCADE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// A file holding the admin token (surrounding whitespace is ignored), instead of `--admin-token`.
    #[arg(long, env = "KASCADE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest admin request body accepted (WASM uploads, K/V values); a bigger one gets 413.
    #[arg(long, env = "KASCADE_ADMIN_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub admin_max_body_bytes: usize,
    /// Largest Kafka request frame accepted; a bigger one closes the connection.
    #[arg(long, env = "KASCADE_MAX_FRAME_BYTES", default_value_t = kascade_wire::kafka::frame::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// The native (shared-memory) listener: `unix:///path/native.sock`, or `off`;
    /// `<data-dir>/native.sock` when unset.
    #[arg(long, env = "KASCADE_NATIVE")]
    pub native: Option<String>,
    /// The native protocol over TCP, `host:port` (port 0 picks one); off when unset.
    #[arg(long, env = "KASCADE_NATIVE_TCP")]
    pub native_tcp: Option<String>,
    /// How the native core thread waits when no native client has work.
    #[arg(long, env = "KASCADE_NATIVE_WAIT", value_enum, default_value_t = WaitMode::Spin)]
    pub native_wait: WaitMode,
    /// Microseconds the native core thread spins before it parks (with `--native-wait spin`).
    #[arg(long, env = "KASCADE_NATIVE_SPIN_US", default_value_t = 50)]
    pub native_spin_us: u32,
    /// Bytes of each native connection's request and response rings (clients may ask for 64 KiB-64 MiB).
    #[arg(long, env = "KASCADE_NATIVE_RING_BYTES", default_value_t = 4 << 20)]
    pub native_ring_bytes: u32,
    /// Use an NVIDIA GPU when its driver and a device are there (`auto`), or never (`off`);
    /// a build without the `cuda` feature never does.
    #[arg(long, env = "KASCADE_GPU", value_enum, default_value_t = crate::gpu::GpuMode::Auto)]
    pub gpu: crate::gpu::GpuMode,
    /// The CUDA device ordinal to use.
    #[arg(long, env = "KASCADE_GPU_DEVICE", default_value_t = 0)]
    pub gpu_device: usize,
    /// GPU memory for GPU-resident objects (pools with gpu = true), bytes; 0 takes a
    /// quarter of the device memory free at start.
    #[arg(long, env = "KASCADE_GPU_CACHE_BYTES", default_value_t = 0)]
    pub gpu_cache_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            config: None,
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
            admin_token: None,
            admin_token_file: None,
            admin_max_body_bytes: 64 << 20,
            max_frame_bytes: kascade_wire::kafka::frame::DEFAULT_MAX_FRAME_BYTES,
            native: None,
            native_tcp: None,
            native_wait: WaitMode::Spin,
            native_spin_us: 50,
            native_ring_bytes: 4 << 20,
            gpu: crate::gpu::GpuMode::Auto,
            gpu_device: 0,
            gpu_cache_bytes: 0,
        }
    }
}

/// A command that holds only the settings, to parse them on their own.
#[derive(clap::Parser)]
struct Only {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// The settings `kascade` with no subcommand runs with: defaults overridden by
    /// the file `KASCADE_CONFIG` names and by `KASCADE_*` env vars.
    pub fn default_from_env() -> Result<Config, ConfigError> {
        let matches =
            <Only as clap::CommandFactory>::command().try_get_matches_from(["kascade"])?;
        Config::from_matches(&matches)
    }

    /// The settings from parsed arguments (of `kascade serve`), with the config file's
    /// values for what neither a flag nor an env var set.
    pub fn from_matches(matches: &ArgMatches) -> Result<Config, ConfigError> {
        let config = Config::from_arg_matches(matches)?;
        let Some(path) = config.config.clone() else {
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        config.overlay_file(&path, &text, |key| matches.value_source(key))
    }

    /// Takes each setting the file `text` holds unless `source` says a flag or an env var set it.
    fn overlay_file(
        self,
        path: &Path,
        text: &str,
        source: impl Fn(&str) -> Option<ValueSource>,
    ) -> Result<Config, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let from_file: Config = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let file = serde_json::to_value(&from_file).map_err(|e| parse(e.to_string()))?;
        let mut merged = serde_json::to_value(&self).map_err(|e| parse(e.to_string()))?;
        for key in table.keys() {
            if matches!(
                source(key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            if let (Some(slot), Some(value)) = (merged.get_mut(key), file.get(key)) {
                *slot = value.clone();
            }
        }
        let mut config: Config =
            serde_json::from_value(merged).map_err(|e| parse(e.to_string()))?;
        config.config = self.config;
        Ok(config)
    }

    /// The admin token, from `--admin-token` or the file `--admin-token-file` names.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(_), Some(_)) => Err(ConfigError::TwoTokens),
            (Some(t), None) if t.0.is_empty() => Err(ConfigError::TokenFile {
                path: PathBuf::from("--admin-token"),
                reason: "the token is empty".into(),
            }),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(path)) => {
                let bad = |reason: String| ConfigError::TokenFile {
                    path: path.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(bad("the file is empty".into()));
                }
                Ok(Some(Secret(token.to_string())))
            }
            (None, None) => Ok(None),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (Config, ArgMatches) {
        let matches = <Only as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("kascade").chain(args.iter().copied()))
            .unwrap();
        (Config::from_arg_matches(&matches).unwrap(), matches)
    }

    #[test]
    fn the_default_impl_matches_the_flags_defaults() {
        let (parsed, _) = parse(&[]);
        let a = serde_json::to_value(&parsed).unwrap();
        let b = serde_json::to_value(Config::default()).unwrap();
        // Env vars of the machine running the test may set some; compare the rest.
        for (k, v) in b.as_object().unwrap() {
            let env = format!("KASCADE_{}", k.to_uppercase());
            if std::env::var_os(&env).is_none() {
                assert_eq!(&a[k], v, "{k}");
            }
        }
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let (config, matches) = parse(&["--listen", "127.0.0.1:1111"]);
        let text = "listen = \"127.0.0.1:2222\"\nnode_id = 7\nupcall_wait = \"busy\"\n";
        let config = config
            .overlay_file(Path::new("k.toml"), text, |k| matches.value_source(k))
            .unwrap();
        assert_eq!(config.listen, "127.0.0.1:1111");
        assert_eq!(config.node_id, 7);
        assert_eq!(config.upcall_wait, WaitMode::Busy);
    }

    #[test]
    fn an_unknown_or_mistyped_setting_in_the_file_is_refused_by_name() {
        let (config, matches) = parse(&[]);
        let err = config
            .clone()
            .overlay_file(Path::new("k.toml"), "lisen = \"x\"", |k| {
                matches.value_source(k)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = config
            .overlay_file(Path::new("k.toml"), "node_id = \"seven\"", |k| {
                matches.value_source(k)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_id"), "{err}");
    }

    #[test]
    fn a_token_and_a_token_file_together_are_refused() {
        let config = Config {
            admin_token: Some(Secret("a".into())),
            admin_token_file: Some(PathBuf::from("/nonexistent")),
            ..Config::default()
        };
        assert!(matches!(config.admin_token(), Err(ConfigError::TwoTokens)));
        assert!(!format!("{config:?}").contains("\"a\""));
    }
}
