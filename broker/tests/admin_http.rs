//! The admin HTTP listener of a real `kascade serve` process: `/health`,
//! Prometheus `/metrics`, and its refusal to listen beyond loopback.

mod spawn;

use std::io::{Read, Write};
use std::net::TcpStream;
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

#[test]
fn health_and_prometheus_metrics_are_served_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = spawn::serve("127.0.0.1:0", dir.path(), &[]);
    let admin = served.admin_addr();

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

    spawn::stop(&mut served.child);
}

#[test]
fn an_admin_address_beyond_loopback_is_refused_until_auth_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = spawn::command("127.0.0.1:0", "0.0.0.0:0", dir.path(), &[])
        .output()
        .expect("run kascade");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only loopback"), "{err}");
}
