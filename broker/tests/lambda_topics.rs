//! Lambdas between Kafka topics, with a real Kafka client (confluent-kafka,
//! lambda_topics.py) producing to the input topic and consuming the output topic.
//!
//! The admin HTTP API that deploys lambdas into a running binary is not here
//! yet, so bindings are made in-process: once on a data dir that the real
//! `kascade serve` binary then opens (the stored bindings come back after the
//! restart), and once on an in-process broker whose Kafka listener runs in
//! this test (to redeploy while records flow and read the counters).

#![cfg(feature = "wasm")] // the tests bind the example WebAssembly lambda

mod lambda_support;
mod spawn;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

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

#[test]
fn replacing_a_topic_lambda_while_records_flow_handles_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::open(&config).unwrap();
    let engine = broker.engine().clone();
    let listener = runtime.block_on(kascade::kafka::bind(&config)).unwrap();
    let bound = listener.local_addr().unwrap();
    let state = Arc::new(kascade::kafka::State::open(engine.clone(), &config, bound).unwrap());
    broker.lambdas().attach_kafka(&state);
    runtime.spawn(kascade::kafka::accept_loop(listener, state.clone()));
    let bootstrap = bound.to_string();
    client(&["create", &bootstrap, "in:1", "out:1"]);
    let bind = |name: &str, handler: &str, out: &str| {
        engine
            .bind(wasm_binding(
                name,
                "/cms/topics/in",
                handler,
                &[(out, EmitMode::Put)],
            ))
            .unwrap()
    };
    // Version 1 upper-cases, version 2 forwards: each output record says which ran.
    bind("live", "kascade_handle", "/cms/topics/out");
    // A lambda whose destination topic does not exist: every upcall fails, counted.
    bind("lost", "forward", "/cms/topics/nowhere");
    let out_key = key("/cms/topics/out/0");
    let phase = 400;
    let swaps = ["forward", "kascade_handle", "forward"];
    for (i, handler) in swaps.iter().enumerate() {
        let start = (i * phase).to_string();
        let producer =
            client_in_background(&["produce", &bootstrap, "in", "1", &start, &phase.to_string()]);
        let before = engine.bounds(&out_key).unwrap().next_seq;
        eventually("records of this phase flow through", || {
            engine.bounds(&out_key).unwrap().next_seq >= before + 50
        });
        bind("live", handler, "/cms/topics/out");
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
    let batches = versions(&engine, "/cms/topics/in/0").len() as u64;
    let lost = wait_calls(&engine, "lost", batches);
    assert_eq!(lost.errors, lost.calls, "{lost:?}");
    assert!(engine
        .get(&key("/cms/topics/nowhere/0"), kascade_core::Get::Latest)
        .is_err_and(|e| e.to_string().contains("pool")));
    drop(runtime);
    drop(state);
    broker.shutdown();
}
