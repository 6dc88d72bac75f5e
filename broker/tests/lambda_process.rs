//! The `process` lambda kind with the real `kascade serve` binary: the
//! example program (wire/examples/process_lambda.rs, built here with cargo)
//! is deployed with `kascade lambda deploy --process`, started and supervised
//! by the broker, attached through the native client, and upcalled over it.

mod spawn;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kascade_wire::native::{Client, GetAt};
use serde_json::Value;

/// Hang guard for every wait below (never a timed assertion).
const GUARD: Duration = Duration::from_secs(60);

/// Builds the example once; its path.
fn example() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "kascade-wire", "--example", "process_lambda"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the example failed");
        // The test binary is target/<profile>/deps/<name>: the example is in
        // target/<profile>/examples.
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().unwrap().parent().unwrap();
        let path = profile.join("examples/process_lambda");
        assert!(path.exists(), "{} was not built", path.display());
        path
    })
}

/// A broker and the CLI that reaches it.
struct Setup {
    served: spawn::Served,
    admin: String,
    native: String,
}

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
        let s = Setup::restart(dir);
        s.ok(&["pool", "create", "/app", "--storage", "volatile"]);
        s
    }

    /// A broker on `dir` as it is (pools and bindings stored there come back).
    fn restart(dir: &Path) -> Setup {
        let served = spawn::serve("127.0.0.1:0", dir, &[]);
        let admin = format!("http://{}", served.admin_addr());
        let native = spawn::field(&served.ready, "native").expect("native= in the ready line");
        Setup {
            served,
            admin,
            native,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kascade"))
            .args(args)
            // By env, not --admin: arguments after `--` belong to the program.
            .env("KASCADE_ADMIN_URL", &self.admin)
            .env_remove("KASCADE_ADMIN_TOKEN")
            .env("KASCADE_LOG", "warn")
            .output()
            .expect("run kascade")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kascade {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Deploys the example as `name` on `prefix`, emitting to `dest`.
    fn deploy_example(&self, name: &str, prefix: &str, dest: &str) {
        let program = example().to_str().unwrap();
        let out = self.ok(&[
            "lambda",
            "deploy",
            name,
            "--prefix",
            prefix,
            "--dest",
            dest,
            "--process",
            "--",
            program,
        ]);
        assert!(out.contains("(process)"), "{out}");
    }

    /// The lambda's counters.
    fn stats(&self, name: &str) -> Value {
        let text = self.ok(&["lambda", "inspect", name, "--json"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        v["stats"].clone()
    }

    /// Waits until the lambda has made `calls` calls; its counters then.
    fn wait_calls(&self, name: &str, calls: u64) -> Value {
        let start = Instant::now();
        loop {
            let s = self.stats(name);
            if s["calls"].as_u64().unwrap() >= calls {
                return s;
            }
            assert!(start.elapsed() < GUARD, "{name}: {s} after {GUARD:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.native).unwrap()
    }

    /// The children of the broker process (the lambda processes it started).
    fn children(&self) -> Vec<u32> {
        let pid = self.served.child.id();
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let path = task.unwrap().path().join("children");
            if let Ok(text) = std::fs::read_to_string(path) {
                out.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
            }
        }
        out
    }

    /// Waits for exactly one child other than `not`; its pid.
    fn wait_child(&self, not: Option<u32>) -> u32 {
        let start = Instant::now();
        loop {
            let c = self.children();
            if c.len() == 1 && Some(c[0]) != not {
                return c[0];
            }
            assert!(start.elapsed() < GUARD, "children {c:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The values of `key`, oldest first.
fn values(c: &mut Client, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seq = 0;
    while let Some(o) = c.get(key, GetAt::Seq(seq)).unwrap() {
        out.push(String::from_utf8(o.value).unwrap());
        seq += 1;
    }
    out
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would say `Z` in its stat.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_process_upper_cases_each_value_in_order_per_key_and_errors_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::start(&dir.path().join("data"));
    s.deploy_example("upper", "/app/in", "/app/out");
    let mut c = s.client();
    let n = 100;
    for i in 0..n {
        for k in ["a", "b"] {
            c.put(&format!("/app/in/{k}"), format!("value {k} {i}").as_bytes())
                .unwrap();
        }
    }
    c.put("/app/in/a", b"fail please").unwrap();
    let stats = s.wait_calls("upper", 2 * n + 1);
    assert_eq!(stats["calls"], 2 * n + 1);
    assert_eq!(stats["errors"], 1, "{stats}");
    for k in ["a", "b"] {
        let expected: Vec<String> = (0..n)
            .map(|i| format!("VALUE {} {i}", k.to_uppercase()))
            .collect();
        assert_eq!(values(&mut c, &format!("/app/out/{k}")), expected);
    }
}

#[test]
fn a_killed_process_is_restarted_and_unbinding_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::start(&dir.path().join("data"));
    s.deploy_example("upper", "/app/in", "/app/out");
    let first = s.wait_child(None);
    let mut c = s.client();
    c.put("/app/in/k", b"one").unwrap();
    s.wait_calls("upper", 1);

    // SAFETY: kill(2) on a pid read from /proc; no memory is involved.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    // A put during the gap waits for the new process or fails; either way it is counted.
    c.put("/app/in/k", b"two").unwrap();
    let second = s.wait_child(Some(first));
    assert!(!alive(first));
    s.wait_calls("upper", 2);
    c.put("/app/in/k", b"three").unwrap();
    let stats = s.wait_calls("upper", 3);
    let out = values(&mut c, "/app/out/k");
    assert_eq!(out.first().map(String::as_str), Some("ONE"));
    assert_eq!(out.last().map(String::as_str), Some("THREE"));
    // "two" either came out or its failure was counted.
    assert_eq!(
        out.len() as u64 + stats["errors"].as_u64().unwrap(),
        3,
        "{out:?} {stats}"
    );

    let out = s.ok(&["lambda", "rm", "upper"]);
    assert_eq!(out.trim(), "removed lambda upper");
    let start = Instant::now();
    while alive(second) {
        assert!(start.elapsed() < GUARD, "{second} still runs after unbind");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reaped by the broker: no child is left.
    while !s.children().is_empty() {
        assert!(start.elapsed() < GUARD, "children {:?}", s.children());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_process_that_never_attaches_fails_calls_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::start(&dir.path().join("data"));
    let config = r#"{"command": ["/bin/sleep", "1000"], "call_timeout_ms": 200}"#;
    s.ok(&[
        "lambda", "deploy", "mute", "--prefix", "/app/in", "--kind", "process", "--config", config,
        "--dest", "/app/out",
    ]);
    let mut c = s.client();
    c.put("/app/in/x", b"a").unwrap();
    c.put("/app/in/y", b"b").unwrap();
    let stats = s.wait_calls("mute", 2);
    assert_eq!(stats["errors"], 2, "{stats}");
    // Only the process the broker started may attach: a wrong token or name is refused.
    let e = c.attach("mute", "not-the-token").unwrap_err().to_string();
    assert!(e.contains("token"), "{e}");
    let e = c.attach("nobody", "x").unwrap_err().to_string();
    assert!(e.contains("no process lambda"), "{e}");
    // The broker (and this connection) go on serving.
    c.put("/app/other", b"still here").unwrap();
    let o = c.get("/app/other", GetAt::Latest).unwrap().unwrap();
    assert_eq!(o.value, b"still here");
    assert_eq!(c.get("/app/out/x", GetAt::Latest).unwrap(), None);
}

#[test]
fn the_three_stage_pipeline_runs_with_a_process_stage() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::start(&dir.path().join("data"));
    for (p, storage) in [
        ("frames", "volatile"),
        ("filtered", "volatile"),
        ("scored", "trigger"),
        ("stored", "volatile"),
    ] {
        s.ok(&[
            "pool",
            "create",
            &format!("/farm/{p}"),
            "--storage",
            storage,
        ]);
    }
    let stage = |name: &str, kind: &str, config: Value, from: &str, to: &str, mode: &str| {
        serde_json::json!({
            "name": name,
            "prefix": format!("/farm/{from}"),
            "kind": kind,
            "config": config,
            "destinations": [{"prefix": format!("/farm/{to}"), "mode": mode}],
        })
    };
    let process = serde_json::json!({ "command": [example().to_str().unwrap()] });
    let spec = serde_json::json!({
        "name": "farm",
        "vertices": [
            stage("filter", "forward", Value::Null, "frames", "filtered", "put"),
            stage("score", "process", process, "filtered", "scored", "trigger"),
            stage("store", "forward", Value::Null, "scored", "stored", "put"),
        ],
    });
    let file = dir.path().join("farm.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    s.ok(&["pipeline", "load", file.to_str().unwrap()]);
    let mut c = s.client();
    let n = 50;
    for i in 0..n {
        for camera in ["cam1", "cam2"] {
            c.put(
                &format!("/farm/frames/{camera}"),
                format!("frame {camera} {i}").as_bytes(),
            )
            .unwrap();
        }
    }
    for camera in ["cam1", "cam2"] {
        let key = format!("/farm/stored/{camera}");
        let start = Instant::now();
        while values(&mut c, &key).len() < n {
            assert!(start.elapsed() < GUARD, "{key}: {:?}", values(&mut c, &key));
            std::thread::sleep(Duration::from_millis(50));
        }
        let expected: Vec<String> = (0..n)
            .map(|i| format!("FRAME {} {i}", camera.to_uppercase()))
            .collect();
        assert_eq!(values(&mut c, &key), expected, "in order, each once");
    }
    s.ok(&["pipeline", "rm", "farm"]);
    let start = Instant::now();
    while !s.children().is_empty() {
        assert!(start.elapsed() < GUARD, "children {:?}", s.children());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stored_process_binding_comes_back_after_a_restart_and_shutdown_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Setup::start(&data);
    s.deploy_example("upper", "/app/in", "/app/out");
    let first = s.wait_child(None);
    spawn::stop(&mut s.served.child);
    assert!(
        !alive(first),
        "the broker's shutdown stops its lambda processes"
    );
    drop(s);

    let s = Setup::restart(&data);
    s.wait_child(None);
    let mut c = s.client();
    c.put("/app/in/k", b"again").unwrap();
    s.wait_calls("upper", 1);
    assert_eq!(values(&mut c, "/app/out/k"), ["AGAIN"]);
}

#[test]
fn replacing_a_process_binding_swaps_the_process_and_a_bad_replacement_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::start(&dir.path().join("data"));
    s.deploy_example("upper", "/app/in", "/app/out");
    let first = s.wait_child(None);
    let program = example().to_str().unwrap();
    let bad = s.run(&[
        "lambda",
        "deploy",
        "upper",
        "--replace",
        "--prefix",
        "/app/in",
        "--dest",
        "no-slash",
        "--process",
        "--",
        program,
    ]);
    assert!(
        !bad.status.success(),
        "a destination that is no prefix is refused"
    );
    let mut c = s.client();
    c.put("/app/in/k", b"one").unwrap();
    s.wait_calls("upper", 1);
    assert_eq!(values(&mut c, "/app/out/k"), ["ONE"]);
    assert_eq!(
        s.children(),
        [first],
        "the bad replacement left the process alone"
    );

    s.ok(&[
        "lambda",
        "deploy",
        "upper",
        "--replace",
        "--prefix",
        "/app/in",
        "--dest",
        "/app/out2",
        "--process",
        "--",
        program,
    ]);
    let second = s.wait_child(Some(first));
    assert!(!alive(first));
    c.put("/app/in/k", b"two").unwrap();
    let start = Instant::now();
    while values(&mut c, "/app/out2/k").is_empty() {
        assert!(start.elapsed() < GUARD, "nothing reached /app/out2");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(values(&mut c, "/app/out2/k"), ["TWO"]);
    assert_eq!(s.children(), [second]);
}
