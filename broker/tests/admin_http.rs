//! The admin HTTP listener of a real `kascade serve` process: `/health`,
//! Prometheus `/metrics`, and its refusal to listen beyond loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `GET path` over a plain socket; returns the whole response.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    out
}

/// The value of `name=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    let rest = &line[at + name.len() + 2..];
    rest.split_whitespace().next().unwrap_or_default()
}

#[test]
fn health_and_prometheus_metrics_are_served_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("KASCADE_LOG", "info")
        .env("NO_COLOR", "1")
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
    let ready = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("kascade logs that it is ready");
        if line.contains("kascade is ready") {
            break line;
        }
    };
    let admin = field(&ready, "admin").to_string();

    let health = get(&admin, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");

    // The first start stored the cluster id: the engine counted that put
    // (the counter is labelled per pool; sum the pools).
    let metrics = get(&admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let puts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kascade_puts_total"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unparsable sample {l:?}"))
        })
        .sum();
    assert!(
        puts >= 1.0,
        "kascade_puts_total sums to {puts} in {metrics}"
    );

    let missing = get(&admin, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_admin_address_beyond_loopback_is_refused_until_auth_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args([
            "serve",
            "--admin-listen",
            "0.0.0.0:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run kascade");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only loopback"), "{err}");
}
