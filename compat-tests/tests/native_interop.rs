//! The native fast path and Kafka clients share one log: records published
//! with the native client (over shared memory and TCP) are read by librdkafka
//! (the `rdkafka` crate) with the same keys, values, headers and offsets;
//! records a Kafka producer writes are pushed to native subscribers at the
//! same offsets; and a key lands in the partition a Kafka producer using the
//! murmur2 partitioner (Java's default) picks for it.

use std::time::{Duration, Instant};

use compat_tests::Broker;
use kascade_wire::native::{Client, ClientOptions, Offset};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::TopicPartitionList;

/// A hang guard for each wait, not a speed check.
const WAIT: Duration = Duration::from_secs(20);

fn broker() -> Broker {
    Broker::start_with(&["--native-tcp", "127.0.0.1:0"])
}

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

fn create(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config(b, &[]).create().expect("admin");
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = rt()
        .block_on(admin.create_topics([&t], &AdminOptions::new().operation_timeout(Some(WAIT))))
        .expect("create topics");
    assert_eq!(res, vec![Ok(name.to_string())]);
}

fn native(url: &str) -> Client {
    Client::connect_with(
        url,
        ClientOptions {
            request_timeout: Some(WAIT),
            client_name: "compat-tests".into(),
            ..ClientOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Reads `n` messages of `topic`/`partition` from offset 0 with librdkafka (CRCs checked).
fn kafka_read(b: &Broker, topic: &str, partition: i32, n: usize) -> Vec<OwnedMessage> {
    let c: BaseConsumer = config(
        b,
        &[
            ("group.id", "native-interop"),
            ("enable.auto.commit", "false"),
            ("check.crcs", "true"),
        ],
    )
    .create()
    .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .expect("partition list");
    c.assign(&tpl).expect("assign");
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

fn headers_of(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn natively_published_records_are_read_by_a_kafka_consumer_at_the_same_offsets() {
    let b = broker();
    for (topic, configs) in [
        ("native-vol", &[("kascade.storage", "volatile")][..]),
        ("native-dur", &[][..]),
        (
            "native-lat",
            &[("message.timestamp.type", "LogAppendTime")][..],
        ),
    ] {
        create(&b, topic, 2, configs);
        let mut published = Vec::new();
        for url in [b.native_shm(), b.native_tcp()] {
            let mut c = native(&url);
            // One at a time, then a pipeline the broker coalesces into batches.
            for i in 0..5 {
                let key = format!("key-{i}");
                let value = format!("{url} single {i}");
                let p = c
                    .publish(
                        topic,
                        Some(1),
                        Some(key.as_bytes()),
                        value.as_bytes(),
                        &[("n", i.to_string().as_bytes())],
                    )
                    .unwrap();
                published.push((p.offset, Some(key), value, i.to_string()));
            }
            let mut queued = Vec::new();
            for i in 0..300 {
                let value = format!("{url} queued {i}");
                c.publish_nowait(
                    topic,
                    Some(1),
                    None,
                    value.as_bytes(),
                    &[("n", i.to_string().as_bytes())],
                )
                .unwrap();
                queued.push((None, value, i.to_string()));
            }
            let acks = c.flush().unwrap();
            for (a, (k, v, n)) in acks.iter().zip(queued) {
                assert_eq!(a.partition, 1);
                published.push((a.offset, k, v, n));
            }
        }
        let offsets: Vec<i64> = published.iter().map(|p| p.0).collect();
        assert_eq!(offsets, (0..published.len() as i64).collect::<Vec<_>>());
        let read = kafka_read(&b, topic, 1, published.len());
        for (m, (offset, key, value, n)) in read.iter().zip(&published) {
            assert_eq!(m.offset(), *offset, "{topic}");
            assert_eq!(m.partition(), 1);
            assert_eq!(
                m.key().map(<[u8]>::to_vec),
                key.as_ref().map(|k| k.clone().into_bytes())
            );
            assert_eq!(
                m.payload(),
                Some(value.as_bytes()),
                "{topic} offset {offset}"
            );
            assert_eq!(
                headers_of(m),
                vec![("n".to_string(), Some(n.clone().into_bytes()))]
            );
            assert!(m.timestamp().to_millis().is_some_and(|t| t > 0));
        }
    }
}

#[test]
fn kafka_produced_records_reach_native_subscribers_at_the_same_offsets() {
    let b = broker();
    create(&b, "from-kafka", 1, &[]);
    create(&b, "from-kafka-vol", 1, &[("kascade.storage", "volatile")]);
    for topic in ["from-kafka", "from-kafka-vol"] {
        // Subscribed before and after the records are produced, over both transports.
        let mut early: Vec<Client> = [b.native_shm(), b.native_tcp()]
            .iter()
            .map(|u| {
                let mut c = native(u);
                c.subscribe(topic, &[], Offset::Earliest).unwrap();
                c
            })
            .collect();
        let producer: FutureProducer =
            config(&b, &[("linger.ms", "5"), ("compression.type", "lz4")])
                .create()
                .expect("producer");
        let rt = rt();
        let mut sent = Vec::new();
        for i in 0..200 {
            let key = format!("k{i}");
            let value = format!("kafka value {i}");
            let headers = OwnedHeaders::new().insert(Header {
                key: "from",
                value: Some("rdkafka"),
            });
            let rec = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .headers(headers);
            let delivery = producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .expect("queued");
            sent.push((key, value, delivery));
        }
        let mut want = Vec::new();
        for (key, value, delivery) in sent {
            let d = rt
                .block_on(delivery)
                .expect("delivered")
                .map_err(|(e, _)| e)
                .expect("acked");
            want.push((d.offset, key, value));
        }
        want.sort();
        let mut late = native(&b.native_shm());
        late.subscribe(topic, &[0], Offset::At(50)).unwrap();
        for (who, c) in early.iter_mut().enumerate() {
            for (offset, key, value) in &want {
                let d = c
                    .next_record(Some(WAIT))
                    .unwrap()
                    .unwrap_or_else(|| panic!("subscriber {who}: nothing at offset {offset}"));
                assert_eq!(d.offset(), *offset);
                assert_eq!(d.key(), Some(key.as_bytes()));
                assert_eq!(d.value(), value.as_bytes());
                let headers: Vec<_> = d.headers().collect();
                assert_eq!(headers, vec![(&b"from"[..], Some(&b"rdkafka"[..]))]);
            }
        }
        for (offset, _, value) in &want[50..] {
            let d = late.next_record(Some(WAIT)).unwrap().expect("a record");
            assert_eq!((d.offset(), d.value()), (*offset, value.as_bytes()));
        }
    }
}

#[test]
fn a_key_lands_where_a_murmur2_kafka_producer_puts_it() {
    let b = broker();
    create(&b, "keys", 5, &[]);
    let producer: FutureProducer = config(&b, &[("partitioner", "murmur2_random")])
        .create()
        .expect("producer");
    let rt = rt();
    let mut c = native(&b.native_shm());
    for i in 0..40 {
        let key = format!("customer-{i}");
        let kafka = rt
            .block_on(producer.send(
                FutureRecord::to("keys").key(&key).payload("via kafka"),
                Timeout::After(WAIT),
            ))
            .expect("delivered");
        let ours = c
            .publish("keys", None, Some(key.as_bytes()), b"via native", &[])
            .unwrap();
        assert_eq!(ours.partition, kafka.partition, "{key}");
    }
}
