//! # compat-tests: real clients against a real broker
//!
//! This crate owns the conformance tests that run existing Kafka clients
//! (kcat, confluent-kafka, kafka-python, aiokafka, kafkajs) against a
//! `kascade serve` process; the broker's own process tests (signals, data
//! dir, restart) live in `broker/tests/serve.rs`.
//!
//! The harness here starts a broker ([`Broker`]) on a free port with a
//! temporary data dir, and runs a client ([`Client`]) against it: a kcat
//! command, or a Python or JavaScript script from this crate's `python/` and
//! `js/` folders. A script takes the bootstrap address and the names of the
//! checks to run, prints `ok NAME` for each check that passed and
//! `FAIL NAME: why` for one that failed, and exits non-zero when any failed.
//! A test fails with the client's whole output and the broker's log.
//!
//! The clients are installed by `.ci/install-clients.sh` (the test command
//! `.ci/test.sh` runs it first); a missing client is a failure that says so.
//!
//! Where things are found:
//! - the broker binary: `KASCADE_BIN`, else `cargo build -p kascade` is run
//!   once per test binary and the binary is taken from the same target dir;
//! - Python: `KASCADE_PYTHON`, else `$HOME/.cache/kascade-venv/bin/python`;
//! - kafkajs: `KASCADE_NODE_MODULES`, else `compat-tests/js/node_modules`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a broker may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client run may take before it is killed and the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// At most this many characters of a client's stdout or stderr go into a failure message.
const SHOWN: usize = 12_000;
/// What to run when a client is missing.
pub const INSTALL_HINT: &str =
    "run `bash .ci/install-clients.sh` (the test command `.ci/test.sh` runs it first)";

/// The `kascade` binary the tests start.
pub fn kascade_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KASCADE_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "KASCADE_BIN={} is not a file", bin.display());
            return bin;
        }
        build_kascade()
    })
    .clone()
}

/// Builds the broker with the cargo running these tests, into the same
/// target dir and profile, and returns the binary's path.
fn build_kascade() -> PathBuf {
    // A test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lies in <target>/<profile>/deps")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "kascade", "--manifest-path"])
        .arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build kascade: {e} (or set KASCADE_BIN)"));
    assert!(
        out.status.success(),
        "cargo build -p kascade failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("kascade");
    assert!(bin.is_file(), "no kascade binary at {}", bin.display());
    bin
}

/// A `kascade serve` process on a free loopback port with a temporary data
/// dir; SIGTERM on drop (SIGKILL if it does not stop within 10 s).
pub struct Broker {
    child: Child,
    bootstrap: String,
    ready: String,
    admin: String,
    log: Arc<Mutex<Vec<String>>>,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with default settings.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with extra `kascade serve` flags, e.g.
    /// `["--auto-create-topics", "true"]`, and waits until it is ready.
    pub fn start_with(flags: &[&str]) -> Broker {
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        let mut child = Command::new(kascade_bin())
            .args([
                "serve",
                "--admin-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .args(flags)
            .env(
                "KASCADE_LOG",
                std::env::var("KASCADE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", kascade_bin().display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("kascade is ready") {
                    let _ = ready_tx.send(line.clone());
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut broker = Broker {
            child,
            bootstrap: String::new(),
            ready: String::new(),
            admin: String::new(),
            log,
            _data_dir: data_dir,
        };
        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "kascade did not become ready ({e}); its log:\n{}",
                broker.log()
            ),
        };
        broker.bootstrap = field(&line, "kafka=")
            .unwrap_or_else(|| panic!("no kafka= address in the ready line: {line}"));
        broker.admin = field(&line, "admin=")
            .unwrap_or_else(|| panic!("no admin= address in the ready line: {line}"));
        broker.ready = line;
        broker
    }

    /// The `host:port` clients bootstrap from.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The native shared-memory URL (`shm:///.../native.sock`) from the ready line.
    pub fn native_shm(&self) -> String {
        field(&self.ready, "native=")
            .filter(|u| u.starts_with("shm://"))
            .unwrap_or_else(|| panic!("no native= shm URL in the ready line: {}", self.ready))
    }

    /// The native TCP URL (`tcp://host:port`) from the ready line; start the
    /// broker with `--native-tcp 127.0.0.1:0` to have one.
    pub fn native_tcp(&self) -> String {
        field(&self.ready, "native_tcp=")
            .filter(|u| u.starts_with("tcp://"))
            .unwrap_or_else(|| panic!("no native_tcp= URL in the ready line: {}", self.ready))
    }

    /// The admin API's `host:port`.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// The last `n` lines of the broker's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Runs `client` against this broker and panics, with the client's output
    /// and the broker's log, unless it exits successfully.
    pub fn run_ok(&self, client: &mut Client) -> Output {
        let out = client.run();
        if !out.succeeded() {
            let missing = [
                "ModuleNotFoundError",
                "Cannot find module",
                "No module named",
            ]
            .iter()
            .any(|m| out.stderr.contains(m));
            panic!(
                "{} failed ({}){}{}\n--- client output ---\n{}\n--- broker log (last 60 lines) ---\n{}",
                client.describe(),
                out.status_text(),
                if missing {
                    format!("\na client library is missing: {INSTALL_HINT}")
                } else {
                    String::new()
                },
                out.failed_checks_summary(),
                out.combined(),
                self.log_tail(60)
            );
        }
        out
    }

    /// Runs a script check set (see [`Client::python`] and [`Client::node`])
    /// and asserts that every named check reported `ok`.
    pub fn run_checks(&self, client: &mut Client, checks: &[&str]) -> Output {
        client.args(checks.iter().copied());
        let out = self.run_ok(client);
        let missing: Vec<&str> = checks
            .iter()
            .copied()
            .filter(|c| {
                !out.stdout.lines().any(|l| {
                    l.strip_prefix("ok ")
                        .and_then(|rest| rest.strip_prefix(c))
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
                })
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{}: checks {missing:?} did not report ok\n--- client output ---\n{}",
            client.describe(),
            out.combined()
        );
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name` (e.g. `kafka=`) in a tracing log line.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_string())
}

/// What a client run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Exit status; `None` when it was killed for running past its time-out.
    pub status: Option<ExitStatus>,
    /// The time-out it ran under.
    pub timeout: Duration,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Output {
    /// Whether the client ended by itself with exit code 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How the run ended, in words.
    pub fn status_text(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {} s", self.timeout.as_secs()),
        }
    }

    /// Stdout then stderr, each clipped to its last few thousand characters.
    pub fn combined(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            clip(&self.stdout, SHOWN),
            clip(&self.stderr, SHOWN)
        )
    }

    /// The `FAIL ...` lines, if any, on one line each after a heading.
    pub fn failed_checks_summary(&self) -> String {
        let fails: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with("FAIL "))
            .collect();
        let mut s = String::new();
        if !fails.is_empty() {
            s.push_str("\nfailed checks:");
            for f in fails {
                let _ = write!(s, "\n  {f}");
            }
        }
        s
    }
}

/// A client command to run against a broker.
pub struct Client {
    name: String,
    cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Client {
    /// `kcat` with `-b bootstrap` and the given arguments.
    pub fn kcat(broker: &Broker) -> Client {
        let path = which("kcat").unwrap_or_else(|| panic!("kcat is not installed: {INSTALL_HINT}"));
        let mut cmd = Command::new(path);
        // `cargo test` puts the build's library dirs on LD_LIBRARY_PATH, among
        // them the librdkafka that the rdkafka crate built (without zstd):
        // kcat must use the system's.
        cmd.env_remove("LD_LIBRARY_PATH")
            .args(["-b", broker.bootstrap()]);
        Client {
            name: "kcat".into(),
            cmd,
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// The Python script `compat-tests/python/<script>` run by the clients'
    /// venv with the broker's address as its first argument.
    pub fn python(broker: &Broker, script: &str) -> Client {
        let python = python_bin();
        let path = crate_dir().join("python").join(script);
        assert!(path.is_file(), "no script {}", path.display());
        let mut cmd = Command::new(python);
        // confluent-kafka brings its own librdkafka; keep the build's off its path.
        cmd.env_remove("LD_LIBRARY_PATH")
            .arg("-u")
            .arg(&path)
            .arg(broker.bootstrap());
        Client {
            name: format!("python {script}"),
            cmd,
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// The Node script `compat-tests/js/<script>` with the broker's address
    /// as its first argument and kafkajs on its module path.
    pub fn node(broker: &Broker, script: &str) -> Client {
        let node = which("node").unwrap_or_else(|| panic!("node is not installed: {INSTALL_HINT}"));
        let modules = node_modules();
        let path = crate_dir().join("js").join(script);
        assert!(path.is_file(), "no script {}", path.display());
        let mut cmd = Command::new(node);
        cmd.arg(&path)
            .arg(broker.bootstrap())
            .env("NODE_PATH", &modules);
        Client {
            name: format!("node {script}"),
            cmd,
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Client
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable of the client.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Client {
        self.cmd.env(key, value);
        self
    }

    /// Kills the client and fails after `timeout` instead of [`CLIENT_TIMEOUT`].
    pub fn timeout(&mut self, timeout: Duration) -> &mut Client {
        self.timeout = timeout;
        self
    }

    /// Feeds `input` to the client's stdin.
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Client {
        self.stdin = Some(input.into());
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let args: Vec<String> = self
            .cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} [{}]", self.name, args.join(" "))
    }

    /// Runs the client to completion (or [`CLIENT_TIMEOUT`]) and collects its output.
    pub fn run(&mut self) -> Output {
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.describe()));
        if let Some(input) = self.stdin.take() {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        Output {
            status,
            timeout: self.timeout,
            stdout: String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
        }
    }
}

/// The last `max` characters of `s`, marked as clipped when longer.
pub fn clip(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(count - max).collect();
    format!("[... {} characters before ...]{tail}", count - max)
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// This crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv Python that has the Python clients.
pub fn python_bin() -> PathBuf {
    let python = match std::env::var_os("KASCADE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => home().join(".cache/kascade-venv/bin/python"),
    };
    assert!(
        python.is_file(),
        "the Python clients' venv is missing ({} not found): {INSTALL_HINT}",
        python.display()
    );
    python
}

/// The `node_modules` folder that holds kafkajs.
pub fn node_modules() -> PathBuf {
    let modules = match std::env::var_os("KASCADE_NODE_MODULES") {
        Some(p) => PathBuf::from(p),
        None => crate_dir().join("js/node_modules"),
    };
    assert!(
        modules.join("kafkajs").is_dir(),
        "kafkajs is not installed in {}: {INSTALL_HINT}",
        modules.display()
    );
    modules
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The full path of `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Declares the feature-area tests every scripted client runs, one `#[test]`
/// each, each on a broker of its own: `client_suite!(|broker| Client::python(broker, "x.py"));`.
/// The script prints `ok NAME` or `FAIL NAME: why` for every check it is asked for.
#[macro_export]
macro_rules! client_suite {
    ($client:expr) => {
        fn checks(checks: &[&str]) {
            let broker = $crate::Broker::start();
            let client: fn(&$crate::Broker) -> $crate::Client = $client;
            broker.run_checks(&mut client(&broker), checks);
        }

        #[test]
        fn metadata_topics_and_unknown_topics() {
            checks(&["metadata", "topics", "unknown_topic"]);
        }

        #[test]
        fn records_round_trip_in_every_codec_and_size() {
            checks(&[
                "roundtrip",
                "codecs",
                "large_messages",
                "oversized",
                "key_partitioning",
                "order",
                "idempotent",
            ]);
        }

        #[test]
        fn offsets_for_times_and_seek() {
            checks(&["offsets_for_times", "seek"]);
        }

        #[test]
        fn topic_configs_partitions_and_record_deletion() {
            checks(&["configs", "create_partitions", "delete_records"]);
        }

        #[test]
        fn consumer_group_rebalances_and_resumes_from_committed_offsets() {
            checks(&["group_rebalance", "group_admin"]);
        }
    };
}
