//! Lambdas between Kafka topics, with a real Kafka client (confluent-kafka,
//! lambda_topics.py) producing to the input topic and consuming the output topic.
//!
//! Bindings are made once in-process, on a data dir that the real `kascade
//! serve` binary then opens (the stored bindings come back after the
//! restart), and once with the `kascade lambda deploy` CLI against the admin
//! HTTP API of a running broker (deploy, then replace while records flow).

#![cfg(feature = "wasm")] // the tests bind the example WebAssembly lambda

mod lambda_support;
mod spawn;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use kascade::{Broker, Config};
use kascade_core::EmitMode;
use lambda_support::*;
use serde::Deserialize;

fn python() -> String {
    std::env::var("KASCADE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lambda_topics.py")
}

/// Runs lambda_topics.py to completion; its stdout.
fn client(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "lambda_topics.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts lambda_topics.py without waiting for it.
fn client_in_background(args: &[&str]) -> Child {
    Command::new(python())
        .arg(script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python")
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the producer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One consumed record.
#[derive(Debug, Deserialize)]
struct Record {
    p: i32,
    o: i64,
    k: Option<String>,
    v: String,
    ts: i64,
}

/// Every record of `topic`'s partitions, `count` in all, by partition then offset.
fn consume(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<Vec<Record>> {
    let out = client(&[
        "consume",
        bootstrap,
        topic,
        &partitions.to_string(),
        &count.to_string(),
    ]);
    let mut by_partition: Vec<Vec<Record>> = (0..partitions).map(|_| Vec::new()).collect();
    for line in out.lines() {
        let r: Record = serde_json::from_str(line).unwrap();
        by_partition[r.p as usize].push(r);
    }
    for records in &mut by_partition {
        records.sort_by_key(|r| r.o);
    }
    by_partition
}

/// Checks partition `p` of a topic two lambdas fed from `produce`'s records:
/// dense offsets from 0, the input's keys and timestamps, and `value(i)` per input i.
fn check_partition(records: &[Record], p: i32, partitions: i32, value: impl Fn(usize) -> String) {
    let inputs: Vec<usize> = (0..)
        .map(|j| p as usize + j * partitions as usize)
        .take(records.len())
        .collect();
    for (j, (r, i)) in records.iter().zip(inputs).enumerate() {
        assert_eq!(r.o, j as i64, "partition {p}: offsets are dense");
        assert_eq!(
            r.k.as_deref(),
            Some(format!("k{p}").as_str()),
            "the input's key"
        );
        assert_eq!(r.ts, 1_700_000_000_000 + i as i64, "the input's timestamp");
        assert_eq!(r.v, value(i), "partition {p} offset {j}");
    }
}

#[test]
fn stored_bindings_run_in_the_served_binary_from_topic_to_topic() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    {
        let broker = Broker::open(&config).unwrap();
        let engine = broker.engine();
        engine
            .bind(wasm_binding(
                "shout",
                "/cms/topics/words",
                "kascade_handle",
                &[("/cms/topics/shouts", EmitMode::Put)],
            ))
            .unwrap();
        engine
            .bind(c_binding(
                "echo",
                "/cms/topics/words",
                "forward",
                &[("/cms/topics/echo", EmitMode::Put)],
            ))
            .unwrap();
        broker.shutdown();
    }
    let mut served = spawn::serve("127.0.0.1:0", dir.path(), &[]);
    let bootstrap = served.kafka_addr();
    client(&["create", &bootstrap, "words:2", "shouts:2", "echo:2"]);
    let n = 600;
    client(&["produce", &bootstrap, "words", "2", "0", &n.to_string()]);
    let shouts = consume(&bootstrap, "shouts", 2, n);
    let echo = consume(&bootstrap, "echo", 2, n);
    for p in 0..2 {
        assert_eq!(shouts[p as usize].len(), n / 2, "shouts partition {p}");
        assert_eq!(echo[p as usize].len(), n / 2, "echo partition {p}");
        check_partition(&shouts[p as usize], p, 2, |i| format!("V{i}"));
        check_partition(&echo[p as usize], p, 2, |i| format!("v{i}"));
    }
    spawn::stop(&mut served.child);
}

/// Runs the `kascade` CLI against the admin API at `admin`; its stdout.
fn cli(admin: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args(args)
        .args(["--admin", admin])
        .output()
        .expect("run kascade");
    assert!(
        out.status.success(),
        "kascade {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The counters of lambda `name`, from `kascade lambda inspect --json`.
fn lambda_stats(admin: &str, name: &str) -> serde_json::Value {
    let info: serde_json::Value =
        serde_json::from_str(&cli(admin, &["lambda", "inspect", name, "--json"])).unwrap();
    info["stats"].clone()
}

#[test]
fn a_wasm_lambda_deployed_with_the_cli_is_replaced_while_kafka_records_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = spawn::serve("127.0.0.1:0", dir.path(), &[]);
    let bootstrap = served.kafka_addr();
    let admin = format!("http://{}", served.admin_addr());
    client(&["create", &bootstrap, "in:1", "out:1"]);
    let files = tempfile::tempdir().unwrap();
    let module = files.path().join("kascade_wasm_lambda.wasm");
    std::fs::write(&module, example_wasm()).unwrap();
    let config_file = |handler: &str| {
        let path = files.path().join(format!("{handler}.json"));
        std::fs::write(&path, serde_json::to_vec(&wasm_config(handler)).unwrap()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (upper, forward) = (config_file("kascade_handle"), config_file("forward"));
    // Version 1 (the module as uploaded: its default handler) upper-cases;
    // version 2 forwards: each output record says which one ran.
    cli(
        &admin,
        &[
            "lambda",
            "deploy",
            "live",
            "--prefix",
            "/cms/topics/in",
            "--wasm",
            module.to_str().unwrap(),
            "--dest",
            "/cms/topics/out",
        ],
    );
    // A lambda whose destination topic does not exist: every upcall fails, counted.
    cli(
        &admin,
        &[
            "lambda",
            "deploy",
            "lost",
            "--prefix",
            "/cms/topics/in",
            "--kind",
            "wasm",
            "--config-file",
            &forward,
            "--dest",
            "/cms/topics/nowhere",
        ],
    );
    let out_next = || -> u64 {
        let list: serde_json::Value =
            serde_json::from_str(&cli(&admin, &["kv", "ls", "/cms/topics/out", "--json"])).unwrap();
        list["keys"][0]["next_seq"].as_u64().unwrap_or(0)
    };
    let phase = 400;
    let swaps = [&forward, &upper, &forward];
    for (i, config) in swaps.iter().enumerate() {
        let start = (i * phase).to_string();
        let producer =
            client_in_background(&["produce", &bootstrap, "in", "1", &start, &phase.to_string()]);
        let before = out_next();
        eventually("records of this phase flow through", || {
            out_next() >= before + 50
        });
        cli(
            &admin,
            &[
                "lambda",
                "deploy",
                "live",
                "--replace",
                "--prefix",
                "/cms/topics/in",
                "--kind",
                "wasm",
                "--config-file",
                config,
                "--dest",
                "/cms/topics/out",
            ],
        );
        finish(producer);
    }
    let n = swaps.len() * phase;
    let out = consume(&bootstrap, "out", 1, n);
    assert_eq!(out[0].len(), n, "one output record per input record");
    let mut runs = Vec::new();
    for (i, r) in out[0].iter().enumerate() {
        assert_eq!(r.o, i as i64);
        let version = if r.v == format!("V{i}") {
            1
        } else if r.v == format!("v{i}") {
            2
        } else {
            panic!("output {i} is {:?}, from no input", r.v);
        };
        if runs.last() != Some(&version) {
            runs.push(version);
        }
    }
    assert!(
        runs.len() <= swaps.len() + 1,
        "versions interleaved: {runs:?}"
    );
    assert!(runs.contains(&1) && runs.contains(&2), "{runs:?}");
    eventually(
        "every upcall of the lambda without its topic is counted failed",
        || {
            let s = lambda_stats(&admin, "lost");
            s["calls"].as_u64() > Some(0) && s["calls"] == s["errors"]
        },
    );
    let live = lambda_stats(&admin, "live");
    assert_eq!(live["errors"], 0, "{live}");
    assert!(
        live["mean_lag_ns"].is_u64(),
        "inspect shows the queue lag: {live}"
    );
    spawn::stop(&mut served.child);
}
