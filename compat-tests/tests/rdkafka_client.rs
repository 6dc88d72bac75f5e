//! librdkafka through the `rdkafka` crate's own APIs (producers, consumers,
//! the admin client) against a real `kascade serve` process, one broker per
//! test: metadata, topic and config administration, record round trips
//! (keys, headers, timestamps, null keys, tombstones), every codec this
//! librdkafka build has, size limits, key partitioning, order, consumer
//! groups, offset lookups, seeks, the idempotent producer, partitions and
//! records administration, group administration and unknown topics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use compat_tests::Broker;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, Timestamp, TopicPartitionList};

/// How long one wait for the broker (a delivery, a rebalance, a fetch) may take.
const WAIT: Duration = Duration::from_secs(10);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn config(b: &Broker, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap());
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    config(b, &[]).create().expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(WAIT))
}

/// Creates a topic with `partitions` partitions and the given configs.
fn create(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = rt()
        .block_on(admin(b).create_topics([&t], &opts()))
        .expect("create topics");
    assert_eq!(res, vec![Ok(name.to_string())], "creating {name}");
}

fn future_producer(b: &Broker, extra: &[(&str, &str)]) -> FutureProducer {
    config(b, extra).create().expect("producer")
}

/// Sends one record and waits for its delivery report.
fn send(
    rt: &tokio::runtime::Runtime,
    p: &FutureProducer,
    rec: FutureRecord<'_, [u8], [u8]>,
) -> Result<(i32, i64), KafkaError> {
    rt.block_on(p.send(rec, Timeout::After(WAIT)))
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
}

/// A consumer outside any group reading `partition` of `topic` from `from`.
fn assigned(b: &Broker, topic: &str, partition: i32, from: Offset) -> BaseConsumer {
    let c: BaseConsumer = config(
        b,
        &[
            ("group.id", "rdkafka-client-reader"),
            ("enable.auto.commit", "false"),
            ("check.crcs", "true"),
        ],
    )
    .create()
    .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .expect("partition list");
    c.assign(&tpl).expect("assign");
    c
}

/// Polls `c` until `n` messages arrived (or panics after `WAIT`).
fn take(b: &Broker, c: &BaseConsumer, n: usize) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived; broker log:\n{}",
            got.len(),
            b.log_tail(40)
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            got.push(m.expect("a message").detach());
        }
    }
    got
}

/// Reads `n` messages of `topic`/`partition` from offset 0.
fn read_all(b: &Broker, topic: &str, partition: i32, n: usize) -> Vec<OwnedMessage> {
    take(b, &assigned(b, topic, partition, Offset::Beginning), n)
}

#[test]
fn metadata_lists_the_broker_topics_partitions_and_leaders() {
    let b = Broker::start();
    create(&b, "meta-a", 3, &[]);
    create(&b, "meta-b", 1, &[]);
    let c: BaseConsumer = config(&b, &[]).create().expect("client");
    let md = c.fetch_metadata(None, WAIT).expect("metadata");
    assert_eq!(md.brokers().len(), 1, "one broker");
    let broker = &md.brokers()[0];
    let port: i32 = b
        .bootstrap()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert_eq!(broker.port(), port);
    assert_eq!(broker.host(), "127.0.0.1");
    let topics: BTreeMap<&str, _> = md.topics().iter().map(|t| (t.name(), t)).collect();
    for (name, n) in [("meta-a", 3), ("meta-b", 1)] {
        let t = topics
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {:?}", topics.keys()));
        assert_eq!(t.error(), None, "{name}");
        let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{name} partitions");
        for p in t.partitions() {
            assert_eq!(p.leader(), broker.id(), "{name}/{} leader", p.id());
            assert_eq!(p.error(), None);
            assert_eq!(p.replicas(), &[broker.id()]);
            assert_eq!(p.isr(), &[broker.id()]);
        }
    }
    let one = c.fetch_metadata(Some("meta-a"), WAIT).expect("metadata");
    assert_eq!(one.topics().len(), 1);
    assert_eq!(one.topics()[0].partitions().len(), 3);
}

#[test]
fn admin_creates_describes_alters_and_deletes_topics() {
    let b = Broker::start();
    let a = admin(&b);
    let rt = rt();
    create(&b, "adm", 2, &[("retention.ms", "123456")]);
    let again = NewTopic::new("adm", 2, TopicReplication::Fixed(1));
    let res = rt
        .block_on(a.create_topics([&again], &opts()))
        .expect("create");
    assert_eq!(
        res,
        vec![Err(("adm".into(), RDKafkaErrorCode::TopicAlreadyExists))]
    );

    let describe = |name: &str| -> HashMap<String, Option<String>> {
        let res = rt
            .block_on(a.describe_configs([&ResourceSpecifier::Topic("adm")], &opts()))
            .expect("describe");
        assert_eq!(res.len(), 1);
        let r = res.into_iter().next().expect("one").expect("described");
        assert!(
            r.get(name).is_some(),
            "{name} in {:?}",
            r.entry_map().keys()
        );
        r.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    let cfg = describe("retention.ms");
    assert_eq!(cfg["retention.ms"].as_deref(), Some("123456"));
    assert_eq!(cfg["cleanup.policy"].as_deref(), Some("delete"));

    let alter = AlterConfig::new(ResourceSpecifier::Topic("adm")).set("retention.ms", "999");
    let res = rt
        .block_on(a.alter_configs([&alter], &opts()))
        .expect("alter");
    assert_eq!(res.len(), 1);
    assert!(res[0].is_ok(), "alter: {:?}", res[0]);
    assert_eq!(
        describe("retention.ms")["retention.ms"].as_deref(),
        Some("999")
    );

    let bad = AlterConfig::new(ResourceSpecifier::Topic("adm")).set("no.such.config", "1");
    // rdkafka 0.39 reports every AlterConfigs resource as Ok (it never reads
    // the per-resource error), so the refusal shows in what is stored: a
    // replacing alter that had been applied would have reset retention.ms.
    rt.block_on(a.alter_configs([&bad], &opts()))
        .expect("alter");
    let cfg = describe("retention.ms");
    assert_eq!(cfg["retention.ms"].as_deref(), Some("999"), "unchanged");
    assert!(!cfg.contains_key("no.such.config"));

    let res = rt
        .block_on(a.delete_topics(&["adm"], &opts()))
        .expect("delete");
    assert_eq!(res, vec![Ok("adm".to_string())]);
    let md = a
        .inner()
        .fetch_metadata(None, WAIT)
        .expect("metadata after delete");
    assert!(
        md.topics().iter().all(|t| t.name() != "adm"),
        "adm is gone from the metadata"
    );
    let res = rt
        .block_on(a.delete_topics(&["adm"], &opts()))
        .expect("delete again");
    assert_eq!(
        res,
        vec![Err((
            "adm".into(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
}

#[test]
fn keys_headers_timestamps_null_keys_and_tombstones_round_trip() {
    let b = Broker::start();
    create(&b, "rt", 1, &[]);
    let p = future_producer(&b, &[("linger.ms", "0")]);
    let rt = rt();
    let ts0 = 1_700_000_000_000_i64;
    // (key, payload, headers, timestamp)
    type Rec = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        i64,
    );
    let recs: Vec<Rec> = vec![
        (Some(b"k1".to_vec()), Some(b"v1".to_vec()), vec![], ts0),
        (None, Some(b"no key".to_vec()), vec![], ts0 + 1),
        (Some(b"k2".to_vec()), None, vec![], ts0 + 2),
        (
            Some(b"k3".to_vec()),
            Some(vec![0, 255, 1, 254]),
            vec![
                ("h1".into(), Some(b"one".to_vec())),
                ("h2".into(), None),
                ("h1".into(), Some(vec![])),
            ],
            ts0 - 5_000,
        ),
        (
            None,
            None,
            vec![("only".into(), Some(b"header".to_vec()))],
            1,
        ),
        (Some(vec![]), Some(vec![]), vec![], ts0 + 3),
    ];
    for (i, (k, v, h, ts)) in recs.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (hk, hv) in h {
            headers = headers.insert(Header {
                key: hk,
                value: hv.as_deref(),
            });
        }
        let mut rec = FutureRecord::<[u8], [u8]>::to("rt")
            .timestamp(*ts)
            .headers(headers);
        if let Some(k) = k {
            rec = rec.key(&k[..]);
        }
        if let Some(v) = v {
            rec = rec.payload(&v[..]);
        }
        assert_eq!(send(&rt, &p, rec).expect("delivered"), (0, i as i64));
    }
    let got = read_all(&b, "rt", 0, recs.len());
    for (i, (m, (k, v, h, ts))) in got.iter().zip(&recs).enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), k.as_deref(), "key of {i}");
        assert_eq!(m.payload(), v.as_deref(), "payload of {i}");
        assert_eq!(
            m.timestamp(),
            Timestamp::CreateTime(*ts),
            "timestamp of {i}"
        );
        let hs: Vec<(String, Option<Vec<u8>>)> = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(&hs, h, "headers of {i}");
    }
}

/// The codecs this librdkafka build can produce with.
fn codecs(b: &Broker) -> Vec<&'static str> {
    let features = config(b, &[])
        .create_native_config()
        .expect("native config")
        .get("builtin.features")
        .expect("builtin.features");
    let mut out = vec!["none"];
    for (feature, codec) in [
        ("gzip", "gzip"),
        ("snappy", "snappy"),
        ("lz4", "lz4"),
        ("zstd", "zstd"),
    ] {
        if features.split(',').any(|f| f == feature) {
            out.push(codec);
        }
    }
    out
}

#[test]
fn every_codec_of_this_librdkafka_build_round_trips() {
    let b = Broker::start();
    let codecs = codecs(&b);
    // The crate's default features give gzip (libz); snappy and lz4 are built in.
    for c in ["none", "gzip", "snappy", "lz4"] {
        assert!(codecs.contains(&c), "{c} missing from {codecs:?}");
    }
    create(&b, "codecs", codecs.len() as i32, &[]);
    const N: usize = 300;
    let value = |codec: &str, i: usize| format!("{codec} record {i} ").repeat(1 + i % 20);
    for (p, codec) in codecs.iter().enumerate() {
        let producer: BaseProducer =
            config(&b, &[("compression.codec", codec), ("linger.ms", "20")])
                .create()
                .expect("producer");
        for i in 0..N {
            let v = value(codec, i);
            let k = i.to_string();
            producer
                .send(
                    BaseRecord::to("codecs")
                        .partition(p as i32)
                        .key(&k)
                        .payload(&v),
                )
                .expect("queued");
        }
        producer.flush(WAIT).expect("flush");
    }
    for (p, codec) in codecs.iter().enumerate() {
        let got = read_all(&b, "codecs", p as i32, N);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.offset(), i as i64, "{codec}");
            assert_eq!(m.key(), Some(i.to_string().as_bytes()), "{codec} key {i}");
            assert_eq!(
                m.payload(),
                Some(value(codec, i).as_bytes()),
                "{codec} payload {i}"
            );
        }
    }
}

#[test]
fn a_message_over_the_topics_max_message_bytes_is_refused() {
    let b = Broker::start();
    create(&b, "small", 1, &[("max.message.bytes", "1024")]);
    let p = future_producer(
        &b,
        &[
            ("message.max.bytes", "1000000"),
            ("message.timeout.ms", "8000"),
        ],
    );
    let rt = rt();
    let big = vec![7u8; 10_000];
    let err = send(&rt, &p, FutureRecord::to("small").payload(&big[..]))
        .expect_err("a 10 kB message in a 1 kB topic");
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        "broker log:\n{}",
        b.log_tail(20)
    );
    let ok = send(&rt, &p, FutureRecord::to("small").payload(&b"fits"[..]));
    assert_eq!(
        ok.expect("a small message"),
        (0, 0),
        "nothing was stored before"
    );
    let got = read_all(&b, "small", 0, 1);
    assert_eq!(got[0].payload(), Some(&b"fits"[..]));
}

#[test]
fn the_same_key_always_goes_to_the_same_partition() {
    let b = Broker::start();
    create(&b, "keyed", 4, &[]);
    let p = future_producer(&b, &[]);
    let rt = rt();
    let mut placed: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut per_partition = [0usize; 4];
    let futures: Vec<_> = (0..200)
        .map(|i| {
            let key = format!("key-{}", i % 40);
            let fut = p
                .send_result(
                    FutureRecord::to("keyed")
                        .key(key.as_bytes())
                        .payload(&b"x"[..]),
                )
                .map_err(|(e, _)| e)
                .expect("queued");
            (key, fut)
        })
        .collect();
    for (key, fut) in futures {
        let d = rt
            .block_on(fut)
            .expect("a delivery report")
            .map_err(|(e, _)| e)
            .expect("delivered");
        placed.entry(key).or_default().insert(d.partition);
        per_partition[d.partition as usize] += 1;
    }
    for (key, parts) in &placed {
        assert_eq!(parts.len(), 1, "{key} went to {parts:?}");
    }
    assert!(
        per_partition.iter().filter(|n| **n > 0).count() > 1,
        "40 keys spread over more than one partition: {per_partition:?}"
    );
    for (partition, n) in per_partition.iter().enumerate() {
        let got = read_all(&b, "keyed", partition as i32, *n);
        for m in &got {
            let key = std::str::from_utf8(m.key().expect("a key")).expect("utf-8");
            assert_eq!(placed[key], BTreeSet::from([partition as i32]));
        }
    }
}

#[test]
fn ten_thousand_records_keep_their_order_on_one_partition() {
    let b = Broker::start();
    create(&b, "order", 1, &[]);
    const N: usize = 10_000;
    let producer: BaseProducer = config(&b, &[("linger.ms", "5")])
        .create()
        .expect("producer");
    for i in 0..N {
        let v = i.to_string();
        let mut rec = BaseRecord::<(), String>::to("order").payload(&v);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(WAIT).expect("flush");
    let got = read_all(&b, "order", 0, N);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.payload(), Some(i.to_string().as_bytes()));
    }
    let (lo, hi) = assigned(&b, "order", 0, Offset::Beginning)
        .fetch_watermarks("order", 0, WAIT)
        .expect("watermarks");
    assert_eq!((lo, hi), (0, N as i64));
}

fn group_member(b: &Broker, group: &str) -> BaseConsumer {
    let c: BaseConsumer = config(
        b,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "200"),
            ("partition.assignment.strategy", "range"),
        ],
    )
    .create()
    .expect("group member");
    c.subscribe(&["grp"]).expect("subscribe");
    c
}

fn produce_n(b: &Broker, topic: &str, partitions: i32, from: usize, n: usize) {
    let producer: BaseProducer = config(b, &[]).create().expect("producer");
    for i in from..from + n {
        let v = i.to_string();
        producer
            .send(
                BaseRecord::<(), String>::to(topic)
                    .partition((i % partitions as usize) as i32)
                    .payload(&v),
            )
            .expect("queued");
    }
    producer.flush(WAIT).expect("flush");
}

fn partitions_of(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

#[test]
fn a_consumer_group_rebalances_when_a_member_leaves_and_resumes_from_commits() {
    let b = Broker::start();
    create(&b, "grp", 4, &[]);
    produce_n(&b, "grp", 4, 0, 200);
    let first = group_member(&b, "g1");
    let second = group_member(&b, "g1");
    // (partition, offset) -> payload, for everything either member received.
    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    macro_rules! poll {
        ($c:expr, $seen:expr) => {{
            match $c.poll(Duration::from_millis(50)) {
                Some(m) => {
                    let m = m.expect("a message");
                    let v =
                        String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf-8");
                    $seen.insert((m.partition(), m.offset()), v);
                    Some((m.partition(), m.offset()))
                }
                None => None,
            }
        }};
    }
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no split of 4 partitions: {:?} / {:?}, {} seen; broker log:\n{}",
            partitions_of(&first),
            partitions_of(&second),
            seen.len(),
            b.log_tail(40)
        );
        poll!(first, seen);
        poll!(second, seen);
        let (a, c) = (partitions_of(&first), partitions_of(&second));
        if seen.len() == 200 && !a.is_empty() && !c.is_empty() && a.len() + c.len() == 4 {
            assert!(a.is_disjoint(&c), "{a:?} and {c:?} overlap");
            break;
        }
    }
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    second
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let moved = partitions_of(&second);
    let committed = second.committed(WAIT).expect("committed offsets");
    for e in committed.elements() {
        if moved.contains(&e.partition()) {
            assert_eq!(
                e.offset(),
                Offset::Offset(50),
                "commit of {}",
                e.partition()
            );
        }
    }
    // The second member closes (revokes its partitions, sends LeaveGroup)
    // while the first keeps polling, as a live member does. Its handle is then
    // forgotten, not dropped: destroying the closed handle (rd_kafka_destroy
    // in the crate's Drop) does not return within 15 s while the other member
    // lives, though the close itself finishes in milliseconds and the broker
    // has already rebalanced; the same close through confluent-kafka returns
    // at once, so this is left to the client side.
    second.close_queue().expect("close the second member");
    let deadline = Instant::now() + WAIT;
    while !second.closed() {
        assert!(
            Instant::now() < deadline,
            "the second member did not close; broker log:\n{}",
            b.log_tail(60)
        );
        if let Some(m) = second.poll(Duration::from_millis(50)) {
            panic!("a closing member got {:?}", m.map(|m| m.offset()));
        }
        poll!(first, seen);
    }
    std::mem::forget(second);

    produce_n(&b, "grp", 4, 200, 200);
    // The first member now gets all four partitions; on the moved ones it must
    // start at the second member's commit (50), not at 0 and not later.
    let mut first_after: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while !(seen.len() == 400 && partitions_of(&first).len() == 4) {
        assert!(
            Instant::now() < deadline,
            "after the leave: {:?} assigned, {} of 400 seen; broker log:\n{}",
            partitions_of(&first),
            seen.len(),
            b.log_tail(40)
        );
        if let Some((p, o)) = poll!(first, seen) {
            if moved.contains(&p) {
                first_after.entry(p).or_insert(o);
            }
        }
    }
    for p in &moved {
        assert_eq!(first_after.get(p), Some(&50), "resume point on {p}");
    }
    let all: BTreeSet<String> = seen.values().cloned().collect();
    assert_eq!(all, (0..400).map(|i| i.to_string()).collect());
}

#[test]
fn offsets_for_times_and_seek_find_the_right_records() {
    let b = Broker::start();
    create(&b, "times", 1, &[]);
    let p = future_producer(&b, &[]);
    let rt = rt();
    let ts0 = 1_600_000_000_000_i64;
    for i in 0..10i64 {
        let v = i.to_string();
        send(
            &rt,
            &p,
            FutureRecord::to("times")
                .payload(v.as_bytes())
                .timestamp(ts0 + 1000 * i),
        )
        .expect("delivered");
    }
    let c = assigned(&b, "times", 0, Offset::Beginning);
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .expect("tpl");
        let res = c.offsets_for_times(tpl, WAIT).expect("offsets for times");
        let e = res.find_partition("times", 0).expect("partition 0");
        assert!(e.error().is_ok(), "{:?}", e.error());
        e.offset()
    };
    assert_eq!(lookup(ts0), Offset::Offset(0));
    assert_eq!(lookup(ts0 + 3500), Offset::Offset(4));
    assert_eq!(lookup(ts0 + 9000), Offset::Offset(9));
    assert_eq!(lookup(ts0 - 1), Offset::Offset(0));
    assert_eq!(lookup(ts0 + 9001), Offset::End);

    let got = take(&b, &c, 10);
    assert_eq!(got[9].payload(), Some(&b"9"[..]));
    c.seek("times", 0, Offset::Offset(3), WAIT).expect("seek");
    let again = take(&b, &c, 7);
    let offsets: Vec<i64> = again.iter().map(Message::offset).collect();
    assert_eq!(offsets, (3..10).collect::<Vec<_>>());
    assert_eq!(again[0].payload(), Some(&b"3"[..]));
    c.seek("times", 0, Offset::OffsetTail(2), WAIT)
        .expect("seek");
    let tail = take(&b, &c, 2);
    assert_eq!(tail[0].offset(), 8);
    assert_eq!(tail[1].offset(), 9);
}

#[test]
fn the_idempotent_producer_delivers_each_record_once_in_order() {
    let b = Broker::start();
    create(&b, "idem", 2, &[]);
    let producer: BaseProducer = config(
        &b,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("max.in.flight.requests.per.connection", "5"),
        ],
    )
    .create()
    .expect("producer");
    const N: usize = 2000;
    for i in 0..N {
        let v = i.to_string();
        let mut rec = BaseRecord::<(), String>::to("idem")
            .partition((i % 2) as i32)
            .payload(&v);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(WAIT).expect("flush");
    for partition in 0..2 {
        let got = read_all(&b, "idem", partition, N / 2);
        for (j, m) in got.iter().enumerate() {
            assert_eq!(m.offset(), j as i64);
            let want = (2 * j + partition as usize).to_string();
            assert_eq!(m.payload(), Some(want.as_bytes()));
        }
        let (_, hi) = assigned(&b, "idem", partition, Offset::Beginning)
            .fetch_watermarks("idem", partition, WAIT)
            .expect("watermarks");
        assert_eq!(hi, (N / 2) as i64, "no duplicates on {partition}");
    }
}

#[test]
fn create_partitions_adds_usable_partitions() {
    let b = Broker::start();
    create(&b, "grow", 1, &[]);
    let a = admin(&b);
    let rt = rt();
    let res = rt
        .block_on(a.create_partitions([&NewPartitions::new("grow", 3)], &opts()))
        .expect("create partitions");
    assert_eq!(res, vec![Ok("grow".to_string())]);
    let md = a
        .inner()
        .fetch_metadata(Some("grow"), WAIT)
        .expect("metadata");
    assert_eq!(md.topics()[0].partitions().len(), 3);
    let res = rt
        .block_on(a.create_partitions([&NewPartitions::new("grow", 2)], &opts()))
        .expect("create partitions");
    assert_eq!(
        res,
        vec![Err(("grow".into(), RDKafkaErrorCode::InvalidPartitions))]
    );
    let p = future_producer(&b, &[]);
    let d = send(
        &rt,
        &p,
        FutureRecord::to("grow").partition(2).payload(&b"new"[..]),
    )
    .expect("delivered to the new partition");
    assert_eq!(d, (2, 0));
    let got = read_all(&b, "grow", 2, 1);
    assert_eq!(got[0].payload(), Some(&b"new"[..]));
}

#[test]
fn delete_records_moves_the_low_watermark() {
    let b = Broker::start();
    create(&b, "trim", 1, &[]);
    produce_n(&b, "trim", 1, 0, 10);
    let a = admin(&b);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trim", 0, Offset::Offset(4))
        .expect("tpl");
    let res = rt()
        .block_on(a.delete_records(&tpl, &opts()))
        .expect("delete records");
    let e = res.find_partition("trim", 0).expect("partition 0");
    assert!(e.error().is_ok(), "{:?}", e.error());
    assert_eq!(e.offset(), Offset::Offset(4), "the new low watermark");
    let c = assigned(&b, "trim", 0, Offset::Beginning);
    assert_eq!(c.fetch_watermarks("trim", 0, WAIT).expect("wm"), (4, 10));
    let got = take(&b, &c, 6);
    assert_eq!(got[0].offset(), 4);
    assert_eq!(got[0].payload(), Some(&b"4"[..]));
    assert_eq!(got[5].offset(), 9);
}

#[test]
fn groups_are_listed_and_deleted() {
    let b = Broker::start();
    create(&b, "grp", 1, &[]);
    produce_n(&b, "grp", 1, 0, 5);
    let member = group_member(&b, "listed");
    take(&b, &member, 5);
    member
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let groups = member.fetch_group_list(None, WAIT).expect("group list");
    let g = groups
        .groups()
        .iter()
        .find(|g| g.name() == "listed")
        .unwrap_or_else(|| {
            panic!(
                "listed in {:?}",
                groups.groups().iter().map(|g| g.name()).collect::<Vec<_>>()
            )
        });
    assert_eq!(g.protocol_type(), "consumer");
    assert_eq!(g.members().len(), 1, "one member");
    assert_eq!(g.state(), "Stable");

    let a = admin(&b);
    let rt = rt();
    let res = rt
        .block_on(a.delete_groups(&["listed"], &opts()))
        .expect("delete groups");
    assert_eq!(
        res,
        vec![Err(("listed".into(), RDKafkaErrorCode::NonEmptyGroup))],
        "a group with a member is not deleted"
    );
    drop(member);
    let res = rt
        .block_on(a.delete_groups(&["listed"], &opts()))
        .expect("delete groups");
    assert_eq!(res, vec![Ok("listed".to_string())]);
    let groups = a.inner().fetch_group_list(None, WAIT).expect("group list");
    assert!(groups.groups().iter().all(|g| g.name() != "listed"));
    let res = rt
        .block_on(a.delete_groups(&["listed"], &opts()))
        .expect("delete groups");
    assert_eq!(
        res,
        vec![Err(("listed".into(), RDKafkaErrorCode::GroupIdNotFound))]
    );
}

#[test]
fn a_missing_topic_is_unknown_when_auto_create_is_off() {
    let b = Broker::start();
    let c: BaseConsumer = config(&b, &[("allow.auto.create.topics", "true")])
        .create()
        .expect("client");
    let md = c.fetch_metadata(Some("missing"), WAIT).expect("metadata");
    assert_eq!(md.topics().len(), 1);
    assert_eq!(
        md.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    let p = future_producer(
        &b,
        &[
            ("message.timeout.ms", "3000"),
            ("topic.metadata.propagation.max.ms", "500"),
        ],
    );
    let err = send(&rt(), &p, FutureRecord::to("missing").payload(&b"x"[..]))
        .expect_err("no topic to produce to");
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    let md = c.fetch_metadata(None, WAIT).expect("metadata");
    assert!(
        md.topics().iter().all(|t| t.name() != "missing"),
        "not created"
    );
}
