//! The `kascade` command line as a client of a running broker: `pool`, `topic`,
//! `kv`, `lambda` and `pipeline`, in their text for people and with `--json`.

mod spawn;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A broker with a token, and the client command line that reaches it.
struct Setup {
    served: spawn::Served,
    url: String,
}

/// A test that fails half way still ends its broker.
impl Drop for Setup {
    fn drop(&mut self) {
        if let Ok(None) = self.served.child.try_wait() {
            let _ = self.served.child.kill();
            let _ = self.served.child.wait();
        }
    }
}

impl Setup {
    fn start(dir: &Path) -> Setup {
        let served = spawn::serve("127.0.0.1:0", dir, &["--admin-token", "s3cret"]);
        let url = format!("http://{}", served.admin_addr());
        Setup { served, url }
    }

    /// `kascade ARGS --admin URL --token s3cret`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kascade"));
        cmd.args(args)
            .args(["--admin", &self.url, "--token", "s3cret"])
            .env_remove("KASCADE_ADMIN_URL")
            .env_remove("KASCADE_ADMIN_TOKEN")
            .env("KASCADE_LOG", "warn");
        cmd
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run kascade");
        assert_success(args, &out);
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs a command with `--json`; returns its parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run kascade");
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `kascade kv get KEY` until it succeeds (a guard against a hang, not a speed check).
fn eventually_get(s: &Setup, key: &str) -> String {
    let deadline = Instant::now() + spawn::LOG_GUARD;
    loop {
        let out = s.cmd(&["kv", "get", key]).output().unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pools_and_topics_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::start(&dir.path().join("data"));

    let out = s.ok(&[
        "pool",
        "create",
        "/sensors",
        "--storage",
        "volatile",
        "--shards",
        "2",
    ]);
    assert!(
        out.contains(
            "created pool /sensors: volatile, 2 shards, per-key ordering, retention forever"
        ),
        "{out}"
    );
    let out = s.ok(&[
        "pool",
        "alter",
        "/sensors",
        "--retention-versions",
        "5",
        "--fsync",
        "10",
    ]);
    assert!(out.contains("retention 5 versions"), "{out}");
    let table = s.ok(&["pool", "ls"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("/sensors "))
        .unwrap_or_else(|| panic!("no /sensors row in\n{table}"));
    assert!(
        row.contains("volatile") && row.contains("every 10 ms"),
        "{row}"
    );
    assert!(
        table.lines().next().unwrap().starts_with("PREFIX"),
        "{table}"
    );
    let pools = s.json(&["pool", "ls"]);
    let sensors = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "/sensors")
        .unwrap();
    assert_eq!(sensors["retention"]["max_versions"], 5);
    assert_eq!(sensors["fsync"]["ms"], 10);
    let err = s.fails(&["pool", "alter", "/sensors", "--retention-versions", "0"]);
    assert!(
        err.contains("max_versions") && err.contains("HTTP 400"),
        "{err}"
    );

    let out = s.ok(&[
        "topic",
        "create",
        "orders",
        "-p",
        "2",
        "-c",
        "retention.ms=60000",
    ]);
    assert!(
        out.contains("created topic orders with 2 partitions"),
        "{out}"
    );
    let list = s.ok(&["topic", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("orders ") && l.contains("retention.ms=60000")),
        "{list}"
    );
    let d = s.ok(&["topic", "describe", "orders"]);
    assert!(d.contains("PARTITION") && d.lines().count() >= 5, "{d}");
    let d = s.json(&["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(d["partitions"][1]["end_offset"], 0);
    let err = s.fails(&["topic", "create", "orders"]);
    assert!(
        err.contains("already exists") && err.contains("HTTP 409"),
        "{err}"
    );
    let out = s.ok(&["topic", "delete", "orders"]);
    assert_eq!(out.trim(), "deleted topic orders");
    assert_eq!(s.json(&["topic", "list"]), serde_json::json!([]));

    assert!(s
        .ok(&["pool", "rm", "/sensors"])
        .contains("removed pool /sensors"));
    let err = s.fails(&["pool", "rm", "/sensors"]);
    assert!(err.contains("HTTP 404"), "{err}");
    spawn::stop(&mut s.served.child);
}

#[test]
fn kv_objects_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::start(&dir.path().join("data"));
    s.ok(&["pool", "create", "/sensors", "--storage", "persistent"]);

    let out = s.ok(&["kv", "put", "/sensors/t1", "21.5"]);
    assert!(out.starts_with("stored /sensors/t1: version "), "{out}");
    assert!(out.contains("seq 0"), "{out}");
    let file = dir.path().join("value.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).unwrap();
    let w = s.json(&["kv", "put", "/sensors/t1", "--file", file.to_str().unwrap()]);
    assert_eq!(w["seq"], 1);
    // From stdin.
    let mut child = s
        .cmd(&["kv", "put", "/sensors/t2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let out = s.cmd(&["kv", "get", "/sensors/t1"]).output().unwrap();
    assert_eq!(out.stdout, [0u8, 1, 2, 255], "the value's bytes, as stored");
    assert_eq!(s.ok(&["kv", "get", "/sensors/t1", "--seq", "0"]), "21.5");
    assert_eq!(s.ok(&["kv", "get", "/sensors/t2"]), "from stdin");
    let meta = s
        .cmd(&["kv", "get", "/sensors/t1", "--meta"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&meta.stderr).contains("seq 1, count 1"),
        "{meta:?}"
    );
    let j = s.json(&["kv", "get", "/sensors/t1", "--seq", "0"]);
    assert_eq!(j["value_base64"], "MjEuNQ==");
    assert_eq!(j["seq"], 0);

    let ls = s.ok(&["kv", "ls", "/sensors"]);
    let keys: Vec<&str> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(keys, ["/sensors/t1", "/sensors/t2"], "{ls}");
    let listed = s.json(&["kv", "ls", "/sensors", "--limit", "1"]);
    assert_eq!(listed["truncated"], true);

    assert!(s
        .ok(&["kv", "rm", "/sensors/t2"])
        .starts_with("removed /sensors/t2"));
    let err = s.fails(&["kv", "get", "/sensors/t2"]);
    assert!(
        err.contains("has no latest version") && err.contains("HTTP 404"),
        "{err}"
    );
    let err = s.fails(&["kv", "put", "sensors/t3", "x"]);
    assert!(err.contains("absolute"), "{err}");
    let err = s.fails(&["kv", "put", "/nowhere/x", "1"]);
    assert!(err.contains("create a pool"), "{err}");
    spawn::stop(&mut s.served.child);
}

#[test]
fn lambdas_and_pipelines_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::start(&dir.path().join("data"));
    s.ok(&["pool", "create", "/app", "--storage", "volatile"]);

    let out = s.ok(&[
        "lambda", "deploy", "fwd", "--prefix", "/app/in", "--kind", "forward", "--dest", "/app/out",
    ]);
    assert_eq!(
        out.trim(),
        "deployed lambda fwd (forward) on /app/in -> /app/out:put"
    );
    let out = s.ok(&["kv", "trigger", "/app/in/x", "hello"]);
    assert!(out.starts_with("triggered /app/in/x"), "{out}");
    assert_eq!(eventually_get(&s, "/app/out/x"), "hello");
    let ls = s.ok(&["lambda", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with("fwd "))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("forward") && row.ends_with("yes"), "{row}");
    let inspected = s.json(&["lambda", "inspect", "fwd"]);
    assert_eq!(inspected["stats"]["calls"], 1);
    assert!(s
        .ok(&["lambda", "inspect", "fwd"])
        .contains("calls:        1"));

    let out = s.ok(&[
        "lambda",
        "deploy",
        "fwd",
        "--prefix",
        "/app/in",
        "--kind",
        "forward",
        "--dest",
        "/app/other:trigger",
        "--replace",
    ]);
    assert!(out.contains("/app/other:trigger"), "{out}");
    let err = s.fails(&[
        "lambda", "deploy", "fwd", "--prefix", "/app/in", "--kind", "forward",
    ]);
    assert!(err.contains("--replace") || err.contains("PUT"), "{err}");
    let err = s.fails(&[
        "lambda", "deploy", "x", "--prefix", "/app/x", "--kind", "nope",
    ]);
    assert!(
        err.contains("known kinds") && err.contains("forward"),
        "{err}"
    );

    // A large config is uploaded with progress on stderr.
    let big = dir.path().join("big.json");
    std::fs::write(
        &big,
        serde_json::to_vec(&serde_json::json!({ "pad": "A".repeat(3 << 20) })).unwrap(),
    )
    .unwrap();
    let out = s
        .cmd(&[
            "lambda",
            "deploy",
            "big",
            "--prefix",
            "/app/big",
            "--kind",
            "forward",
            "--config-file",
            big.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_success(&["lambda", "deploy", "big"], &out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("uploading") && progress.contains("uploaded 3.0 MiB"),
        "{progress}"
    );
    // A WASM module goes up inside the config as module_base64.
    let wasm = dir.path().join("m.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let out = s
        .cmd(&[
            "lambda",
            "deploy",
            "w",
            "--prefix",
            "/app/w",
            "--wasm",
            wasm.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if out.status.success() {
        // A build with the wasm kind took the module.
        let l = s.json(&["lambda", "inspect", "w", "--full"]);
        assert_eq!(l["config"]["module_base64"], "AGFzbQEAAAA=");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("HTTP 400"), "{err}");
    }

    assert_eq!(s.ok(&["lambda", "rm", "fwd"]).trim(), "removed lambda fwd");
    assert!(s.fails(&["lambda", "rm", "fwd"]).contains("HTTP 404"));

    let toml = dir.path().join("farm.toml");
    std::fs::write(
        &toml,
        r#"
name = "farm"
[[vertex]]
name = "filter"
prefix = "/app/frames"
kind = "forward"
destinations = [{ prefix = "/app/scored", mode = "trigger" }]
[[vertex]]
name = "score"
prefix = "/app/scored"
kind = "forward"
destinations = [{ prefix = "/app/stored" }]
"#,
    )
    .unwrap();
    let out = s.ok(&["pipeline", "load", toml.to_str().unwrap()]);
    assert_eq!(out.trim(), "loaded pipeline farm with 2 vertices");
    s.ok(&["kv", "put", "/app/frames/cam1", "frame"]);
    assert_eq!(eventually_get(&s, "/app/stored/cam1"), "frame");
    let ls = s.ok(&["pipeline", "ls"]);
    assert!(ls.starts_with("pipeline farm"), "{ls}");
    assert!(
        ls.contains("filter") && ls.contains("/app/scored:trigger"),
        "{ls}"
    );
    let err = s.fails(&["pipeline", "load", toml.to_str().unwrap()]);
    assert!(err.contains("HTTP 409"), "{err}");
    let again = s.json(&["pipeline", "load", toml.to_str().unwrap(), "--replace"]);
    assert_eq!(again["name"], "farm");
    assert_eq!(
        s.ok(&["pipeline", "rm", "farm"]).trim(),
        "removed pipeline farm"
    );
    assert_eq!(s.json(&["pipeline", "ls"]), serde_json::json!([]));
    spawn::stop(&mut s.served.child);
}

#[test]
fn the_client_says_what_is_wrong_with_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::start(&dir.path().join("data"));

    let out = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args(["pool", "ls", "--admin", &s.url, "--token", "nope"])
        .env_remove("KASCADE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token is wrong") && err.contains("HTTP 401"),
        "{err}"
    );

    // The URL and the token from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args(["pool", "ls", "--json"])
        .env("KASCADE_ADMIN_URL", &s.url)
        .env("KASCADE_ADMIN_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_success(&["pool", "ls"], &out);
    let pools: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(pools
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["prefix"] == "/kascade"));

    // Nothing listening there: a port taken and released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let out = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args([
            "topic",
            "list",
            "--admin",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the admin API"), "{err}");
    spawn::stop(&mut s.served.child);
}
