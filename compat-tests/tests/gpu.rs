//! A GPU lambda as the first stage of a Kafka pipeline, with librdkafka on both
//! ends: the example kernel (examples/gpu-lambda/threshold.cu) is deployed with
//! the `kascade lambda deploy --cuda` CLI against a real `kascade serve` built
//! with the `cuda` feature (`KASCADE_BIN`), float32 records are produced to a
//! topic whose batches are kept in GPU memory (`kascade.gpu=true`), and what a
//! consumer reads from the output topic is compared byte for byte with the same
//! computation on the CPU (examples/gpu-lambda/cpu.rs).
//!
//! Without a GPU (or with a broker built without the feature) it prints
//! `skipped: <why>` and passes; `.ci/gpu-check.sh` runs it on a GPU host.

#[path = "../../examples/gpu-lambda/cpu.rs"]
mod cpu;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use compat_tests::{kascade_bin, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const SOURCE: &str = include_str!("../../examples/gpu-lambda/threshold.cu");
const PTX: &str = include_str!("../../examples/gpu-lambda/threshold.ptx");
const LIMIT: f32 = 0.5;
/// A guard against a hung test, not a speed check.
const GUARD: Duration = Duration::from_secs(60);

/// `GET path` on the admin API, as JSON.
fn admin_get(b: &Broker, path: &str) -> Value {
    let mut s = TcpStream::connect(b.admin()).expect("connect to the admin API");
    s.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        b.admin()
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Runs the `kascade` CLI against the broker's admin API; its stdout.
fn cli(b: &Broker, args: &[&str]) -> String {
    let out = Command::new(kascade_bin())
        .args(args)
        .args(["--admin", &format!("http://{}", b.admin())])
        .env_remove("KASCADE_ADMIN_TOKEN")
        .output()
        .expect("run kascade");
    assert!(
        out.status.success(),
        "kascade {args:?} failed:\n{}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        b.log_tail(40)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn client(b: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap());
    c
}

/// A payload the threshold keeps at least one value of, so every record has output.
fn record_value(count: usize, seed: u64) -> Vec<u8> {
    let mut value = 0.75f32.to_le_bytes().to_vec();
    value.extend(cpu::payload(count, seed));
    value
}

#[test]
fn a_gpu_lambda_filters_kafka_records_and_a_consumer_reads_the_cpus_bytes() {
    let b = Broker::start();
    let report = admin_get(&b, "/v1/gpu");
    if report["available"] != true {
        let why = format!("no GPU: {}", report["reason"]);
        println!("skipped: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = client(&b).create().unwrap();
    let readings =
        NewTopic::new("readings", 2, TopicReplication::Fixed(1)).set("kascade.gpu", "true");
    let above = NewTopic::new("above", 2, TopicReplication::Fixed(1));
    for r in rt
        .block_on(admin.create_topics([&readings, &above], &AdminOptions::new()))
        .unwrap()
    {
        r.expect("topic created");
    }

    // Deploy with the CLI: CUDA C when the broker has NVRTC, else the committed PTX.
    let dir = tempfile::tempdir().unwrap();
    let (flag, file) = if report["nvrtc"] == true {
        ("--cuda", dir.path().join("threshold.cu"))
    } else {
        println!("note: the broker has no NVRTC: deploying the committed PTX");
        ("--ptx", dir.path().join("threshold.ptx"))
    };
    std::fs::write(&file, if flag == "--cuda" { SOURCE } else { PTX }).unwrap();
    let limit = LIMIT.to_string();
    cli(
        &b,
        &[
            "lambda",
            "deploy",
            "above",
            "--prefix",
            "/cms/topics/readings",
            "--dest",
            "/cms/topics/above",
            flag,
            file.to_str().unwrap(),
            "--kernel",
            "threshold",
            "--grid",
            "1",
            "--block",
            "1024",
            "--params-f32",
            &limit,
        ],
    );

    // Produce: records of 1 to 16 Ki float32s, several to a batch, both partitions.
    let producer: BaseProducer = client(&b)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut sent: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
    for i in 0..120u64 {
        let count = [1usize, 7, 250, 1024, 4093, 16 << 10][i as usize % 6];
        let value = record_value(count, i + 1);
        let key = format!("sensor-{i}");
        let partition = (i % 2) as i32;
        producer
            .send(
                BaseRecord::to("readings")
                    .key(&key)
                    .payload(&value)
                    .partition(partition),
            )
            .map_err(|(e, _)| e)
            .expect("queue a record");
        sent[partition as usize].push((key, value));
        producer.poll(Duration::ZERO);
    }
    producer.flush(GUARD).expect("every record delivered");

    // Consume the output topic and compare, per partition, in order.
    let consumer: BaseConsumer = client(&b)
        .set("group.id", "gpu-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..2 {
        assignment
            .add_partition_offset("above", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut got: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + GUARD;
    while got.iter().map(Vec::len).sum::<usize>() < 120 {
        assert!(
            Instant::now() < deadline,
            "only {:?} records on `above`; broker log:\n{}",
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            b.log_tail(40)
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("a record");
        got[m.partition() as usize].push((
            String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            m.payload().unwrap_or_default().to_vec(),
        ));
    }
    for p in 0..2 {
        assert_eq!(got[p].len(), sent[p].len(), "partition {p}");
        for (i, ((key, out), (sent_key, input))) in got[p].iter().zip(&sent[p]).enumerate() {
            assert_eq!(key, sent_key, "partition {p} record {i}");
            assert!(
                out == &cpu::threshold(input, LIMIT),
                "partition {p} record {i} ({key}): the GPU's {} bytes are not the CPU's",
                out.len()
            );
        }
    }

    // The batches were read in GPU memory, and the lambda never failed.
    let report = admin_get(&b, "/v1/gpu");
    let pools = report["pools"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["prefix"] == "/cms/topics/readings" && p["active"] == true),
        "{report}"
    );
    let cache = &report["cache"];
    assert!(
        cache["hits"].as_u64().unwrap() + cache["misses"].as_u64().unwrap() > 0,
        "{report}"
    );
    let inspect: Value =
        serde_json::from_str(&cli(&b, &["lambda", "inspect", "above", "--json"])).unwrap();
    assert_eq!(inspect["stats"]["errors"], 0, "{inspect}");
    assert!(
        inspect["stats"]["calls"].as_u64().unwrap() >= 2,
        "{inspect}"
    );
}
