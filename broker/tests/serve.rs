//! `kascade serve` as a user runs it: a real process, real signals, a real data dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kascade_core::{Get, Key, PoolConfig, Put, Storage};

/// Starts the binary and returns it once it logged that it is ready, with its log lines so far.
fn start(data_dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("KASCADE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kascade");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for(&rx, "kascade is ready");
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line containing {needle:?}: {e}"),
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, rx) = start(dir.path());
        signal(&child, sig);
        wait_for(&rx, "kascade stopped");
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "exit status {status:?} after signal {sig}"
        );
    }
    assert!(
        dir.path().join("pools").is_dir(),
        "the data dir holds the system pool"
    );
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _rx) = start(dir.path());
    let second = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another kascade"), "{err}");
    signal(&first, libc::SIGTERM);
    assert!(first.wait().unwrap().success());
}

#[test]
fn data_written_before_a_restart_of_the_binary_is_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let config = kascade::Config {
        data_dir: dir.path().to_path_buf(),
        ..kascade::Config::default()
    };
    let key = Key::new("/sensors/t1").unwrap();
    {
        let broker = kascade::Broker::open(&config).unwrap();
        let engine = broker.engine();
        engine
            .create_pool(PoolConfig::new("/sensors", Storage::Persistent))
            .unwrap();
        for i in 0..10 {
            engine
                .put(Put::new(key.clone(), format!("reading {i}")))
                .unwrap();
        }
        broker.shutdown();
    }
    // The binary recovers the same data dir and stops again.
    let (mut child, rx) = start(dir.path());
    signal(&child, libc::SIGTERM);
    wait_for(&rx, "kascade stopped");
    assert!(child.wait().unwrap().success());

    let broker = kascade::Broker::open(&config).unwrap();
    let engine = broker.engine();
    assert_eq!(
        engine
            .pools()
            .iter()
            .filter(|p| p.prefix == "/sensors")
            .count(),
        1
    );
    let latest = engine.get(&key, Get::Latest).unwrap().expect("kept");
    assert_eq!((latest.seq, &latest.value[..]), (9, &b"reading 9"[..]));
    assert_eq!(
        engine.get(&key, Get::Seq(3)).unwrap().unwrap().value,
        "reading 3"
    );
}
