//! The native fast path, broker side: the listeners (`--native unix:///path`
//! for shared memory, `--native-tcp host:port`), one polling core thread that
//! serves every native connection, and the subscriptions that push stored
//! batches to subscribers.
//!
//! - [`poller`]: the core thread. It spins over every connection's request
//!   ring for `--native-spin-us`, then parks in epoll on all their doorbells
//!   and sockets (`--native-wait block|spin|busy`); N clients never mean N
//!   spinning threads. Handshakes run on short-lived threads of their own, so
//!   a slow client never holds the core up.
//! - [`connection`]: one connection's requests (publish, subscribe, put, get,
//!   trigger, list) and its answers, with a queue for answers that find the
//!   client's response ring full.
//! - [`publish`]: Publish frames already queued for one partition are
//!   coalesced into one Kafka v2 batch and appended through the Kafka produce
//!   path (`append_batches`), so Kafka consumers read them unchanged. A
//!   persistent topic's acks wait for durability on a tokio task, never on
//!   the core thread.
//! - [`subscriptions`]: the registry and the pump (see there).
//!
//! A client that dies, breaks the protocol or corrupts its rings is closed
//! alone: its subscriptions, mapping and descriptors are freed, one line is
//! logged, and `kascade_native_closed_total{reason}` counts it.

mod connection;
mod epoll;
mod poller;
mod publish;
mod subscriptions;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kascade_wire::native::sys::EventFd;
use kascade_wire::native::{Listener, NativeError, ServerOptions, WaitStrategy};

use crate::config::{Config, WaitMode};
use crate::kafka::State;

pub use publish::{murmur2, murmur2_partition, COALESCE_BYTES};

/// The file name of the shared-memory listener's socket in the data dir.
pub const SOCKET_NAME: &str = "native.sock";

/// The default shared-memory socket of a broker with `data_dir`:
/// `<data_dir>/native.sock`, made absolute.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    let path = data_dir.join(SOCKET_NAME);
    std::path::absolute(&path).unwrap_or(path)
}

/// Why the native listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum NativeStartError {
    /// A setting is unusable.
    #[error("{0}")]
    Setting(String),
    /// A listener could not bind.
    #[error("native listener {url}: {source}")]
    Listen {
        /// The URL.
        url: String,
        /// Why.
        source: NativeError,
    },
    /// The core thread could not be set up.
    #[error("native core thread: {0}")]
    Io(#[from] std::io::Error),
}

/// The native listeners' settings, resolved from the broker's [`Config`].
#[derive(Clone, Debug)]
pub struct NativeSettings {
    /// The shared-memory listener, `unix:///absolute/path`; `None` when off.
    pub shm: Option<String>,
    /// The TCP listener, `tcp://host:port`; `None` when off.
    pub tcp: Option<String>,
    /// How the core thread waits when idle.
    pub wait: WaitStrategy,
    /// Ring capacity per connection (clients may ask for another, within limits).
    pub ring_bytes: u32,
}

impl NativeSettings {
    /// Reads `--native`, `--native-tcp`, `--native-wait`, `--native-spin-us`
    /// and `--native-ring-bytes`.
    pub fn from_config(config: &Config) -> Result<NativeSettings, NativeStartError> {
        let shm = match config.native.as_deref().map(str::trim) {
            None | Some("") => Some(format!(
                "unix://{}",
                default_socket(&config.data_dir).display()
            )),
            Some("off") | Some("none") => None,
            Some(url) => {
                let path = url
                    .strip_prefix("unix://")
                    .or_else(|| url.strip_prefix("shm://"))
                    .unwrap_or(url);
                let path = Path::new(path);
                let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                Some(format!("unix://{}", path.display()))
            }
        };
        let tcp = match config.native_tcp.as_deref().map(str::trim) {
            None | Some("") | Some("off") | Some("none") => None,
            Some(addr) => Some(if addr.starts_with("tcp://") {
                addr.to_string()
            } else {
                format!("tcp://{addr}")
            }),
        };
        let wait = match config.native_wait {
            WaitMode::Block => WaitStrategy::Block,
            WaitMode::Spin => WaitStrategy::SpinThenPark {
                spin_us: config.native_spin_us,
            },
            WaitMode::Busy => WaitStrategy::BusyPoll,
        };
        let ring_bytes = config.native_ring_bytes;
        if !ring_bytes.is_power_of_two() || !(64 << 10..=64 << 20).contains(&ring_bytes) {
            return Err(NativeStartError::Setting(format!(
                "--native-ring-bytes {ring_bytes}: use a power of two from 65536 (64 KiB) to 67108864 (64 MiB)"
            )));
        }
        Ok(NativeSettings {
            shm,
            tcp,
            wait,
            ring_bytes,
        })
    }
}

/// Counters and gauges of the native path (handles made once, not per message).
pub(crate) struct NativeMetrics {
    /// Open native connections.
    pub(crate) connections: metrics::Gauge,
    /// Live partition subscriptions.
    pub(crate) subscriptions: metrics::Gauge,
    /// Records published natively.
    pub(crate) publishes: metrics::Counter,
    /// Batches appended for native publishes.
    pub(crate) batches: metrics::Counter,
    /// Notify frames written to subscribers.
    pub(crate) notifies: metrics::Counter,
}

impl NativeMetrics {
    fn new() -> NativeMetrics {
        NativeMetrics {
            connections: metrics::gauge!("kascade_native_connections"),
            subscriptions: metrics::gauge!("kascade_native_subscriptions"),
            publishes: metrics::counter!("kascade_native_published_records_total"),
            batches: metrics::counter!("kascade_native_published_batches_total"),
            notifies: metrics::counter!("kascade_native_notifies_total"),
        }
    }

    /// Counts a closed connection by why it closed.
    pub(crate) fn closed(reason: &'static str) {
        metrics::counter!("kascade_native_closed_total", "reason" => reason).increment(1);
    }
}

/// What the core thread, the subscriptions and the ack tasks share.
pub(crate) struct NativeShared {
    /// The Kafka face: topics, and the append path native publishes share.
    pub(crate) kafka: Arc<State>,
    /// Live subscriptions.
    pub(crate) registry: Arc<subscriptions::Registry>,
    /// Where acks that wait for durability run.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Metric handles.
    pub(crate) metrics: Arc<NativeMetrics>,
    /// Where lambda processes attach.
    pub(crate) processes: Arc<crate::lambdas::process::registry::Registry>,
}

/// The running native listeners and their core thread.
pub struct NativeServer {
    shm_url: Option<String>,
    tcp_url: Option<String>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    registry: Arc<subscriptions::Registry>,
}

impl NativeServer {
    /// Binds the listeners `settings` names and starts the core thread.
    /// `runtime` runs the acks that wait for a persistent topic's fsync;
    /// `processes` is where external lambda processes attach.
    pub fn start(
        kafka: Arc<State>,
        settings: &NativeSettings,
        runtime: tokio::runtime::Handle,
        processes: Arc<crate::lambdas::process::registry::Registry>,
    ) -> Result<NativeServer, NativeStartError> {
        let mut listeners = Vec::new();
        let mut shm_url = None;
        let mut tcp_url = None;
        for (url, slot) in [(&settings.shm, &mut shm_url), (&settings.tcp, &mut tcp_url)] {
            let Some(url) = url else { continue };
            let bind = |source| NativeStartError::Listen {
                url: url.clone(),
                source,
            };
            let listener = Listener::bind(url).map_err(bind)?;
            *slot = Some(listener.url().map_err(bind)?);
            listeners.push(listener);
        }
        let registry = subscriptions::Registry::new(kafka.engine.clone());
        let hooked = Arc::downgrade(&registry);
        let hook: crate::kafka::AppendHook = Arc::new(move |topic, key, written| {
            if let Some(registry) = hooked.upgrade() {
                registry.appended(topic, key, written);
            }
        });
        if kafka.append_hook.set(hook).is_err() {
            return Err(NativeStartError::Setting(
                "this broker's Kafka face already serves native subscriptions".into(),
            ));
        }
        let shared = Arc::new(NativeShared {
            kafka,
            registry: registry.clone(),
            runtime,
            metrics: Arc::new(NativeMetrics::new()),
            processes,
        });
        let options = ServerOptions {
            wait: settings.wait,
            ring_capacity: settings.ring_bytes,
            server_name: format!("kascade {}", env!("CARGO_PKG_VERSION")),
            ..ServerOptions::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::new(true)?);
        let poller = poller::Poller::new(
            shared,
            listeners,
            options,
            settings.wait,
            stop.clone(),
            wake.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("kascade-native".into())
            .spawn(move || poller.run())?;
        Ok(NativeServer {
            shm_url,
            tcp_url,
            stop,
            wake,
            thread: Some(thread),
            registry,
        })
    }

    /// The shared-memory URL clients connect to (`shm:///...`), if listening.
    pub fn shm_url(&self) -> Option<&str> {
        self.shm_url.as_deref()
    }

    /// The TCP URL clients connect to (`tcp://host:port`, the real port), if listening.
    pub fn tcp_url(&self) -> Option<&str> {
        self.tcp_url.as_deref()
    }

    /// Closes every native connection and the listeners (removing the socket
    /// file) and waits for the core thread. Blocking.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.signal();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the native core thread panicked");
            }
        }
        self.registry.clear();
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_resolve_defaults_off_and_urls() {
        let config = Config {
            data_dir: PathBuf::from("rel/data"),
            ..Config::default()
        };
        let s = NativeSettings::from_config(&config).unwrap();
        let shm = s.shm.unwrap();
        assert!(shm.starts_with("unix:///"), "{shm}");
        assert!(shm.ends_with("rel/data/native.sock"), "{shm}");
        assert_eq!(s.tcp, None);
        assert_eq!(s.wait, WaitStrategy::SpinThenPark { spin_us: 50 });
        assert_eq!(s.ring_bytes, 4 << 20);

        let config = Config {
            native: Some("off".into()),
            native_tcp: Some("127.0.0.1:0".into()),
            native_wait: WaitMode::Busy,
            native_ring_bytes: 64 << 10,
            ..Config::default()
        };
        let s = NativeSettings::from_config(&config).unwrap();
        assert_eq!(s.shm, None);
        assert_eq!(s.tcp.as_deref(), Some("tcp://127.0.0.1:0"));
        assert_eq!(s.wait, WaitStrategy::BusyPoll);

        let config = Config {
            native: Some("shm:///run/k.sock".into()),
            native_wait: WaitMode::Block,
            ..Config::default()
        };
        let s = NativeSettings::from_config(&config).unwrap();
        assert_eq!(s.shm.as_deref(), Some("unix:///run/k.sock"));
        assert_eq!(s.wait, WaitStrategy::Block);

        for bad in [1000, 32 << 10, 128 << 20] {
            let config = Config {
                native_ring_bytes: bad,
                ..Config::default()
            };
            let e = NativeSettings::from_config(&config)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--native-ring-bytes"), "{e}");
        }
    }
}
