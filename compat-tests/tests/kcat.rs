//! kcat (librdkafka's command-line client) against a `kascade serve` process.
//!
//! kcat has no admin commands, so topics here are auto-created (3 partitions)
//! by the broker, except where a test says otherwise.

use compat_tests::{Broker, Client};
use serde_json::Value;
use std::time::Duration;

fn broker() -> Broker {
    Broker::start_with(&["--auto-create-topics", "true", "--num-partitions", "3"])
}

/// Runs kcat with `args` (and `input` on stdin) and returns its stdout.
fn kcat(broker: &Broker, args: &[&str], input: Option<Vec<u8>>) -> String {
    let mut client = Client::kcat(broker);
    client.timeout(Duration::from_secs(60));
    client.args(args);
    if let Some(input) = input {
        client.stdin(input);
    }
    broker.run_ok(&mut client).stdout
}

/// Produces `input` (one record a line) to `topic` with extra kcat flags.
fn produce(broker: &Broker, topic: &str, flags: &[&str], input: impl Into<Vec<u8>>) {
    let mut args = vec!["-P", "-t", topic];
    args.extend_from_slice(flags);
    kcat(broker, &args, Some(input.into()));
}

/// Reads `topic` from `offset` to its end as kcat's JSON records.
fn consume(broker: &Broker, topic: &str, flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["-C", "-t", topic, "-e", "-J", "-Z"];
    if !flags.contains(&"-o") {
        args.extend_from_slice(&["-o", "beginning"]);
    }
    args.extend_from_slice(flags);
    kcat(broker, &args, None)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("kcat printed {:?}: {e}", compat_tests::clip(l, 500)))
        })
        .collect()
}

fn strs<'a>(records: &'a [Value], field: &str) -> Vec<Option<&'a str>> {
    records.iter().map(|r| r[field].as_str()).collect()
}

fn ints(records: &[Value], field: &str) -> Vec<i64> {
    records
        .iter()
        .map(|r| r[field].as_i64().unwrap_or(-1))
        .collect()
}

#[test]
fn metadata_lists_the_broker_and_its_topics() {
    let b = broker();
    produce(&b, "meta", &["-p", "2"], "x\n");
    let md: Value = serde_json::from_str(&kcat(&b, &["-L", "-J"], None)).expect("JSON metadata");
    let brokers = md["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{md}");
    assert_eq!(brokers[0]["name"].as_str(), Some(b.bootstrap()), "{md}");
    assert_eq!(md["controllerid"], brokers[0]["id"], "{md}");
    let topic = md["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic"] == "meta"))
        .unwrap_or_else(|| panic!("topic meta not listed: {md}"));
    let partitions = topic["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3, "{topic}");
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i as i64, "{p}");
        assert_eq!(p["leader"], brokers[0]["id"], "{p}");
    }
}

#[test]
fn keys_headers_null_keys_and_tombstones_round_trip() {
    let b = broker();
    produce(
        &b,
        "rt",
        &[
            "-p", "0", "-K", ":", "-Z", "-H", "h1=a", "-H", "h2=", "-H", "h1=dup",
        ],
        "k1:v1\nk1:\n:no key\nk2:v2\n",
    );
    let got = consume(&b, "rt", &["-p", "0"]);
    assert_eq!(ints(&got, "offset"), [0, 1, 2, 3], "{got:?}");
    assert_eq!(
        strs(&got, "key"),
        [Some("k1"), Some("k1"), None, Some("k2")],
        "{got:?}"
    );
    assert_eq!(
        strs(&got, "payload"),
        [Some("v1"), None, Some("no key"), Some("v2")],
        "null value (tombstone) and null key: {got:?}"
    );
    for r in &got {
        assert_eq!(
            r["headers"],
            serde_json::json!(["h1", "a", "h2", "", "h1", "dup"]),
            "{r}"
        );
        assert_eq!(r["tstype"], "create", "{r}");
    }
}

#[test]
fn every_codec_round_trips() {
    let b = broker();
    let input: String = (0..300)
        .map(|i| format!("key{i}:value {i} {}\n", "x".repeat(i % 50)))
        .collect();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        produce(
            &b,
            &topic,
            &["-p", "1", "-K", ":", "-z", codec, "-X", "linger.ms=20"],
            input.clone(),
        );
        let got = consume(&b, &topic, &["-p", "1"]);
        let lines: Vec<String> = got
            .iter()
            .map(|r| {
                format!(
                    "{}:{}\n",
                    r["key"].as_str().unwrap_or("?"),
                    r["payload"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(lines.concat(), input, "codec {codec}");
        assert_eq!(
            ints(&got, "offset"),
            (0..300).collect::<Vec<i64>>(),
            "codec {codec}"
        );
    }
}

#[test]
fn a_one_megabyte_message_round_trips_and_a_too_large_one_is_refused() {
    let b = broker();
    // Auto-created topics keep Kafka's default max.message.bytes (1048588).
    let big = "m".repeat(1_000_000);
    produce(
        &b,
        "big",
        &["-p", "0", "-X", "message.max.bytes=4000000"],
        format!("{big}\n"),
    );
    let got = consume(
        &b,
        "big",
        &["-p", "0", "-X", "fetch.message.max.bytes=2000000"],
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["payload"].as_str().map(str::len), Some(1_000_000));
    assert!(got[0]["payload"].as_str() == Some(big.as_str()));

    let mut client = Client::kcat(&b);
    client
        .args([
            "-P",
            "-t",
            "big",
            "-p",
            "0",
            "-X",
            "message.max.bytes=4000000",
        ])
        .stdin(format!("{}\n", "o".repeat(1_100_000)));
    let out = client.run();
    assert!(
        !out.succeeded(),
        "kcat reported success for a message over max.message.bytes\n{}",
        out.combined()
    );
    assert!(
        out.stderr.contains("Message size too large"),
        "{}",
        out.combined()
    );
    assert_eq!(
        consume(&b, "big", &["-p", "0"]).len(),
        1,
        "nothing was appended"
    );
}

#[test]
fn the_same_key_always_lands_in_the_same_partition() {
    let b = broker();
    let input: String = (0..300).map(|i| format!("key-{}:{i}\n", i % 13)).collect();
    produce(&b, "keyed", &["-K", ":"], input);
    let got = consume(&b, "keyed", &[]);
    assert_eq!(got.len(), 300);
    let mut home = std::collections::HashMap::new();
    for r in &got {
        let key = r["key"].as_str().expect("key").to_string();
        let p = r["partition"].as_i64().expect("partition");
        let first = *home.entry(key.clone()).or_insert(p);
        assert_eq!(first, p, "key {key} in partitions {first} and {p}");
    }
    let used: std::collections::HashSet<i64> = home.values().copied().collect();
    assert!(
        used.len() > 1,
        "13 keys all went to one partition: {home:?}"
    );
}

#[test]
fn ten_thousand_records_per_partition_keep_their_order() {
    let b = broker();
    for p in 0..3 {
        let input: String = (0..10_000).map(|i| format!("{p}-{i}\n")).collect();
        produce(
            &b,
            "order",
            &["-p", &p.to_string(), "-X", "linger.ms=20"],
            input,
        );
    }
    for p in 0..3 {
        let text = kcat(
            &b,
            &[
                "-C",
                "-t",
                "order",
                "-p",
                &p.to_string(),
                "-o",
                "beginning",
                "-e",
                "-f",
                "%o %s\n",
            ],
            None,
        );
        let want: String = (0..10_000).map(|i| format!("{i} {p}-{i}\n")).collect();
        assert!(
            text == want,
            "partition {p} out of order or incomplete: {} lines",
            text.lines().count()
        );
    }
}

#[test]
fn offsets_for_times_and_reads_from_an_offset() {
    let b = broker();
    // kcat -P cannot set a record's timestamp: one run per record, and the
    // times asked for are the ones the records got.
    for i in 0..5 {
        produce(
            &b,
            "times",
            &["-p", "0", "-X", "linger.ms=0"],
            format!("r{i}\n"),
        );
    }
    let got = consume(&b, "times", &["-p", "0"]);
    let ts = ints(&got, "ts");
    assert_eq!(ts.len(), 5);
    let out = kcat(&b, &["-Q", "-t", &format!("times:0:{}", ts[2])], None);
    let want_offset = ts
        .iter()
        .position(|&t| t >= ts[2])
        .expect("a record at or after") as i64;
    assert!(
        out.contains(&format!("times [0] offset {want_offset}")),
        "offset for time {}: {out}",
        ts[2]
    );
    let out = kcat(
        &b,
        &["-Q", "-t", &format!("times:0:{}", ts[4] + 60_000)],
        None,
    );
    assert!(
        out.contains("times [0] offset -1"),
        "a time after the end: {out}"
    );
    // Reading from an absolute offset, a relative one and with a count.
    let from = consume(&b, "times", &["-p", "0", "-o", "3"]);
    assert_eq!(strs(&from, "payload"), [Some("r3"), Some("r4")]);
    let last = consume(&b, "times", &["-p", "0", "-o", "-2"]);
    assert_eq!(strs(&last, "payload"), [Some("r3"), Some("r4")]);
    let two = kcat(
        &b,
        &[
            "-C", "-t", "times", "-p", "0", "-o", "1", "-c", "2", "-f", "%s\n",
        ],
        None,
    );
    assert_eq!(two, "r1\nr2\n");
}

#[test]
fn an_idempotent_producer_writes_each_record_once() {
    let b = broker();
    let input: String = (0..5000).map(|i| format!("k{}:{i}\n", i % 7)).collect();
    produce(
        &b,
        "idem",
        &["-K", ":", "-X", "enable.idempotence=true", "-X", "acks=all"],
        input,
    );
    let got = consume(&b, "idem", &[]);
    let mut values: Vec<i64> = got
        .iter()
        .map(|r| {
            r["payload"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1)
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..5000).collect::<Vec<i64>>());
}

#[test]
fn an_unknown_topic_is_reported_as_such() {
    let b = Broker::start();
    let out = kcat(&b, &["-L", "-t", "missing"], None);
    assert!(out.contains("Unknown topic or partition"), "{out}");
    let mut client = Client::kcat(&b);
    client.args(["-C", "-t", "missing", "-p", "0", "-e"]);
    let out = client.run();
    assert!(
        !out.succeeded(),
        "consuming an unknown topic succeeded\n{}",
        out.combined()
    );
    assert!(
        out.combined().contains("Unknown topic or partition"),
        "{}",
        out.combined()
    );
}

#[test]
fn a_group_consumer_resumes_from_its_committed_offsets() {
    let b = broker();
    produce(
        &b,
        "grp",
        &["-K", ":"],
        (0..30).map(|i| format!("k{i}:a{i}\n")).collect::<String>(),
    );
    let read = |b: &Broker| -> Vec<String> {
        let mut lines: Vec<String> = kcat(
            b,
            &[
                "-G",
                "kcat-group",
                "-X",
                "auto.offset.reset=earliest",
                "-e",
                "-f",
                "%s\n",
                "grp",
            ],
            None,
        )
        .lines()
        .map(str::to_string)
        .collect();
        lines.sort();
        lines
    };
    let mut want: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    want.sort();
    assert_eq!(read(&b), want, "the first run reads everything");
    produce(
        &b,
        "grp",
        &["-K", ":"],
        (0..5).map(|i| format!("k{i}:b{i}\n")).collect::<String>(),
    );
    let mut want: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    want.sort();
    assert_eq!(read(&b), want, "the second run reads only what is new");
}
