//! The admin HTTP listener of a real `kascade serve` process: `/health`,
//! Prometheus `/metrics`, the bearer token, and its refusal to listen beyond
//! loopback without one.

mod http;
mod spawn;

use std::process::Stdio;

use http::Http;
use serde_json::json;

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
fn an_admin_address_beyond_loopback_is_refused_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = spawn::command("127.0.0.1:0", "0.0.0.0:0", dir.path(), &[])
        .env_remove("KASCADE_ADMIN_TOKEN")
        .output()
        .expect("run kascade");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs an admin token"), "{err}");
}

#[test]
fn with_a_token_the_admin_api_listens_beyond_loopback_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn::command(
        "127.0.0.1:0",
        "0.0.0.0:0",
        dir.path(),
        &["--admin-token", "s3cret"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn kascade");
    let log = spawn::log_lines(&mut child);
    let ready = spawn::wait_for(&log, "kascade is ready");
    let bound = spawn::field(&ready, "admin").unwrap();
    assert!(bound.starts_with("0.0.0.0:"), "{ready}");
    // Reached over loopback: the test sends nothing beyond this machine.
    let addr = bound.replace("0.0.0.0", "127.0.0.1");
    assert!(get(&addr, "/health").starts_with("HTTP/1.1 200"));
    let api = Http::new(&addr, Some("s3cret"));
    assert_eq!(api.get("/v1/pools").status, 200);
    assert_eq!(api.with_token(None).get("/v1/pools").status, 401);
    spawn::stop(&mut child);
}

/// Every way of sending no token or a wrong one is refused, and changes nothing.
fn refuses_without_the_token(api: &Http) {
    let anonymous = api.with_token(None);
    let wrong = api.with_token(Some("not-the-token"));
    assert_eq!(anonymous.get("/health").status, 200);
    for (client, why) in [(&anonymous, "needs a token"), (&wrong, "token is wrong")] {
        for answer in [
            client.get("/v1/pools"),
            client.get("/metrics"),
            client.get("/openapi.json"),
            client.get("/v1/kv?prefix=/"),
            client.get("/v1/nope"),
            client.json(
                "POST",
                "/v1/pools",
                &json!({"prefix": "/stolen", "storage": "volatile"}),
            ),
            client.json("POST", "/v1/topics", &json!({"name": "stolen"})),
            client.send("PUT", "/v1/kv/open/k", b"stolen", "application/octet-stream"),
            client.delete("/v1/kv/open/k"),
            client.delete("/v1/topics/kept"),
            client.delete("/v1/pools/open"),
            client.json(
                "POST",
                "/v1/lambdas",
                &json!({"name": "stolen", "prefix": "/open", "kind": "forward"}),
            ),
            client.send(
                "POST",
                "/v1/pipelines",
                b"name = \"stolen\"\n[[vertex]]\nname = \"v\"\nprefix = \"/open\"\nkind = \"forward\"\n",
                "application/toml",
            ),
        ] {
            assert_eq!(answer.status, 401, "{answer:?}");
            assert!(answer.error().contains(why), "{}", answer.error());
            assert!(answer.header("www-authenticate").is_some());
        }
    }
    // Nothing changed.
    let pools = api.get("/v1/pools").json();
    assert!(!pools.to_string().contains("/stolen"), "{pools}");
    assert!(pools.to_string().contains("\"/open\""), "{pools}");
    assert_eq!(api.get("/v1/kv/open/k").body, b"mine");
    let topics = api.get("/v1/topics").json();
    assert_eq!(topics.as_array().unwrap().len(), 1, "{topics}");
    assert_eq!(topics[0]["name"], "kept");
    assert_eq!(api.get("/v1/lambdas").json(), json!([]));
    assert_eq!(api.get("/v1/pipelines").json(), json!([]));
}

fn set_up(api: &Http) {
    let p = api.json(
        "POST",
        "/v1/pools",
        &json!({"prefix": "/open", "storage": "volatile"}),
    );
    assert_eq!(p.status, 201, "{p:?}");
    let t = api.json("POST", "/v1/topics", &json!({"name": "kept"}));
    assert_eq!(t.status, 201, "{t:?}");
    let k = api.send("PUT", "/v1/kv/open/k", b"mine", "application/octet-stream");
    assert_eq!(k.status, 200, "{k:?}");
}

#[test]
fn with_a_token_requests_without_it_get_401_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = spawn::serve("127.0.0.1:0", dir.path(), &["--admin-token", "s3cret"]);
    let api = Http::new(&served.admin_addr(), Some("s3cret"));
    set_up(&api);
    refuses_without_the_token(&api);
    // The scheme's name is case-insensitive, as HTTP says.
    let lower = get_with(&served.admin_addr(), "/v1/pools", "bearer s3cret");
    assert!(lower.starts_with("HTTP/1.1 200"), "{lower}");
    let basic = get_with(&served.admin_addr(), "/v1/pools", "Basic czNjcmV0");
    assert!(basic.starts_with("HTTP/1.1 401"), "{basic}");
    spawn::stop(&mut served.child);
}

#[test]
fn the_token_can_come_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-a-file\n").unwrap();
    let data = dir.path().join("a");
    let mut served = spawn::serve(
        "127.0.0.1:0",
        &data,
        &["--admin-token-file", token_file.to_str().unwrap()],
    );
    let api = Http::new(&served.admin_addr(), Some("from-a-file"));
    set_up(&api);
    refuses_without_the_token(&api);
    spawn::stop(&mut served.child);

    let data = dir.path().join("b");
    let mut child = spawn::command("127.0.0.1:0", "127.0.0.1:0", &data, &[])
        .env("KASCADE_ADMIN_TOKEN", "from-the-env")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kascade");
    let log = spawn::log_lines(&mut child);
    let ready = spawn::wait_for(&log, "kascade is ready");
    let api = Http::new(
        &spawn::field(&ready, "admin").unwrap(),
        Some("from-the-env"),
    );
    assert_eq!(api.get("/v1/pools").status, 200);
    assert_eq!(api.with_token(None).get("/v1/pools").status, 401);
    spawn::stop(&mut child);

    // A token and a token file together are a mistake, said before anything starts.
    let out = spawn::command(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &dir.path().join("c"),
        &[
            "--admin-token",
            "x",
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
}

/// `GET path` with an `Authorization` header, over a plain socket.
fn get_with(addr: &str, path: &str, authorization: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    out
}
