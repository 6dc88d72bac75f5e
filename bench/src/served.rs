//! The broker under test: a real `kascade serve` child process, the CPU it
//! and this process use, and its topics (made with librdkafka's admin client).
//!
//! Shared by the benchmarks that drive a running broker (`kafka`, `native`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Largest message the clients and topics accept: room for 1 MiB values and their framing.
pub const MAX_MESSAGE: &str = "2097152";
/// Retention of the benchmark's topics: bounds the broker's memory at 1 MiB values.
pub const RETENTION_BYTES: &str = "268435456";

/// The storage of a topic on the broker under test (`kascade.storage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// In memory only: acks=all returns once the batch is applied.
    Volatile,
    /// On disk: acks=all waits for the fdatasync that covers the batch.
    Persistent,
}

impl Storage {
    /// The name of the `kascade.storage` topic setting.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Volatile => "volatile",
            Storage::Persistent => "persistent",
        }
    }
}

/// The flags of a benchmark that drives a `kascade serve` process.
#[derive(clap::Args, Debug, Clone)]
pub struct ServedArgs {
    /// A short smoke run (a few seconds in all), for CI.
    #[arg(long)]
    pub quick: bool,
    /// Measured milliseconds of each throughput case (default 1000, or 40 with --quick);
    /// each paced latency case runs three times as long.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// The `kascade` binary to run (default: the one beside this binary).
    #[arg(long, env = "KASCADE_BIN")]
    pub kascade_bin: Option<PathBuf>,
}

impl ServedArgs {
    /// How long each part runs.
    pub fn budget(&self) -> crate::Budget {
        crate::Budget::new(self.quick, self.duration_ms)
    }

    /// The `kascade` binary to run, or exits with a message saying how to build it.
    pub fn bin_or_exit(&self) -> PathBuf {
        match kascade_bin(self.kascade_bin.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
}

/// A `kascade serve` child process on a free loopback port; killed on drop.
pub struct Broker {
    /// The process.
    pub child: Child,
    /// Its Kafka listener, `127.0.0.1:port`.
    pub addr: String,
    /// Its "kascade is ready" log line (fields `name=value`).
    pub ready: String,
    log: PathBuf,
}

impl Broker {
    /// Starts `bin serve` with its data dir and log under `root`, the Kafka
    /// listener on a free port and `extra` flags, and waits until it says it is ready.
    pub fn start(bin: &Path, root: &Path, extra: &[String]) -> Result<Broker, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let data = root.join("broker-data");
        let log = root.join("broker.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("creating {log:?}: {e}"))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&addr)
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("KASCADE_LOG", "info")
            .env("NO_COLOR", "1")
            // The settings of the machine running the benchmark must not leak into it.
            .env_remove("KASCADE_CONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut broker = Broker {
            child,
            addr,
            ready: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("kascade is ready")) {
                broker.ready = line.to_string();
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "kascade serve exited ({status}) before it was ready:\n{}",
                    broker.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kascade serve was not ready within 30 s:\n{}",
                    broker.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of `name=` in the ready line (`kafka`, `admin`, `native`, ...).
    pub fn field(&self, name: &str) -> Option<String> {
        log_field(&self.ready, name)
    }

    /// The last 20 lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The broker's resident memory, from `/proc`.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// A note when the broker exited during the run.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the broker exited during the run ({status}):\n{}",
                self.log_tail()
            )),
            _ => None,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name=` in a log line of `key=value` fields (quotes trimmed).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"').to_string())
}

/// The `kascade` binary: `explicit` (a flag or `KASCADE_BIN`), else the one beside this binary.
pub fn kascade_bin(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(b) = explicit {
        return Ok(b.to_path_buf());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = me.with_file_name("kascade");
    if beside.exists() {
        return Ok(beside);
    }
    // `cargo run` of an example or a test puts the binary one level deeper.
    if let Some(up) = me.parent().and_then(Path::parent) {
        let b = up.join("kascade");
        if b.exists() {
            return Ok(b);
        }
    }
    Err(format!(
        "no kascade binary beside {}: run `cargo build --release -p kascade` or set KASCADE_BIN",
        me.display()
    ))
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (`pid` may be "self").
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU used by this process and the broker over a measured interval.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    at: Instant,
    me: Option<Duration>,
    broker: Option<Duration>,
}

impl CpuMark {
    /// Marks the start of an interval.
    pub fn now(broker_pid: Option<u32>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            me: cpu_time("self"),
            broker: broker_pid.and_then(|p| cpu_time(&p.to_string())),
        }
    }

    /// (this process, broker) CPU since `self`, as a share of one core.
    pub fn share_since(&self, broker_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
        let later = CpuMark::now(broker_pid);
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let share = |a: Option<Duration>, b: Option<Duration>| {
            Some(b?.saturating_sub(a?).as_secs_f64() / wall)
        };
        (share(self.me, later.me), share(self.broker, later.broker))
    }
}

/// A CPU share as cores used ("0.85 cores"), or "?".
pub fn cores(c: Option<f64>) -> String {
    c.map_or("?".into(), |c| format!("{c:.2} cores"))
}

/// Creates and deletes topics on the broker under test with the admin client.
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    rt: tokio::runtime::Runtime,
}

impl Admin {
    /// An admin client of the broker at `bootstrap`.
    pub fn new(bootstrap: &str) -> Result<Admin, String> {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| format!("creating the admin client: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Admin { client, rt })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .operation_timeout(Some(Duration::from_secs(10)))
    }

    /// Creates a one-partition topic of `storage`.
    pub fn create(&self, name: &str, storage: Storage) -> Result<(), String> {
        let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1))
            .set("kascade.storage", storage.name())
            .set("max.message.bytes", MAX_MESSAGE)
            .set("retention.bytes", RETENTION_BYTES);
        let results = self
            .rt
            .block_on(self.client.create_topics([&topic], &Self::options()))
            .map_err(|e| format!("creating topic {name}: {e}"))?;
        for r in results {
            r.map_err(|(t, code)| format!("creating topic {t}: {code}"))?;
        }
        Ok(())
    }

    /// Deletes a topic, releasing what it holds; failures are reported, not fatal.
    pub fn delete(&self, name: &str) {
        let result = self
            .rt
            .block_on(self.client.delete_topics(&[name], &Self::options()));
        let err = match result {
            Ok(rs) => rs
                .into_iter()
                .find_map(|r| r.err())
                .map(|(t, c)| format!("{t}: {c}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = err {
            println!("  note: deleting topic {name} failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_fields_are_found_by_name() {
        let line = "2026-11-26T05:43:48Z  INFO kascade::server: kascade is ready data_dir=/tmp/d \
                    kafka=127.0.0.1:1 native=shm:///tmp/d/s.sock native_tcp=off name=\"x\"";
        assert_eq!(
            log_field(line, "native").as_deref(),
            Some("shm:///tmp/d/s.sock")
        );
        assert_eq!(log_field(line, "native_tcp").as_deref(), Some("off"));
        assert_eq!(log_field(line, "kafka").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(log_field(line, "name").as_deref(), Some("x"));
        assert_eq!(log_field(line, "tcp"), None);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_time("self").expect("/proc/self/stat is readable");
        // Busy work until the kernel's tick-grained count moves; the guard only stops a hang.
        let guard = Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        let after = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let now = cpu_time("self").expect("/proc/self/stat is readable");
            if now > before || Instant::now() > guard {
                break now;
            }
        };
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
