//! Starting a real `kascade serve` process for a test: its flags, a reader of
//! its log lines, and the wait for "kascade is ready". Shared by the test files
//! that run the binary, so each one only adds what it tests.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long to wait for a log line: a guard against a hung test, not a speed check.
pub const LOG_GUARD: Duration = Duration::from_secs(60);

/// A started `kascade serve` process.
pub struct Served {
    /// The process.
    pub child: Child,
    /// Its log lines (stderr), as they arrive.
    pub log: mpsc::Receiver<String>,
    /// The "kascade is ready" line.
    pub ready: String,
}

impl Served {
    /// The Kafka listener's address, from the ready line.
    pub fn kafka_addr(&self) -> String {
        field(&self.ready, "kafka").unwrap_or_else(|| panic!("no kafka= in {:?}", self.ready))
    }

    /// The admin listener's address, from the ready line.
    pub fn admin_addr(&self) -> String {
        field(&self.ready, "admin").unwrap_or_else(|| panic!("no admin= in {:?}", self.ready))
    }
}

/// The `kascade` binary the tests start: the one cargo built beside them, or
/// `KASCADE_SERVE_BIN` when the test binary was carried to another machine
/// (`.ci/gpu-check.sh` runs prebuilt test binaries on a GPU host).
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("KASCADE_SERVE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kascade").into())
}

/// The `kascade serve` command with the Kafka listener on `listen`, the admin
/// listener on `admin`, `data_dir`, and `extra` flags.
pub fn command(listen: &str, admin: &str, data_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args([
        "serve",
        "--admin-listen",
        admin,
        "--listen",
        listen,
        "--data-dir",
    ])
    .arg(data_dir)
    .args(extra)
    .env("KASCADE_LOG", "info")
    .env("NO_COLOR", "1")
    // Settings of the machine running the tests must not leak into them.
    .env_remove("KASCADE_CONFIG")
    .env_remove("KASCADE_ADMIN_TOKEN")
    .env_remove("KASCADE_ADMIN_TOKEN_FILE");
    cmd
}

/// Starts `kascade serve` (see [`command`]), the admin listener on a free
/// loopback port, and waits until it says it is ready.
pub fn serve(listen: &str, data_dir: &Path, extra: &[&str]) -> Served {
    let mut child = command(listen, "127.0.0.1:0", data_dir, extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kascade");
    let log = log_lines(&mut child);
    let ready = wait_for(&log, "kascade is ready");
    Served { child, log, ready }
}

/// Reads a child's stderr lines onto a channel from a thread of its own.
pub fn log_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next log line containing `needle`; panics past [`LOG_GUARD`].
pub fn wait_for(log: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match log.recv_timeout(LOG_GUARD) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line containing {needle:?}: {e}"),
        }
    }
}

/// The value of `name=` in a structured log line.
pub fn field(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(str::to_string)
}

/// Sends SIGTERM and waits for a clean exit (0), unless the test is already failing.
pub fn stop(child: &mut Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
    let status = child.wait().expect("wait for kascade");
    assert!(
        status.success() || std::thread::panicking(),
        "kascade exited with {status:?}"
    );
}
