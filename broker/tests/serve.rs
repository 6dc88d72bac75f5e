//! `kascade serve` as a user runs it: a real process, real signals, a real data dir.

mod spawn;

use std::path::Path;
use std::process::Child;
use std::sync::mpsc;

use kascade_core::{Get, Key, PoolConfig, Put, Storage};

/// Starts the binary and returns it once it logged that it is ready, with its log lines so far.
fn start(data_dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let served = spawn::serve("127.0.0.1:0", data_dir, &[]);
    (served.child, served.log)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    spawn::wait_for(rx, needle)
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
    let second = spawn::command("127.0.0.1:0", "127.0.0.1:0", dir.path(), &[])
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
