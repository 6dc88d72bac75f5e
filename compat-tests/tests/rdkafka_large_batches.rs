//! librdkafka (the `rdkafka` crate) against a real `kascade serve` process:
//! batches from 100 B to 1 MiB values come back byte for byte, at the offsets
//! they were given, with the client checking every batch's CRC. Requests of
//! 64 KiB or more are read into a buffer of their own and their lone batch is
//! stored without a copy; multi-partition requests and small frames are copied.
//! The persistent topic is read again after a restart of the broker.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The `kascade` binary `cargo test --workspace` built beside this test (or `KASCADE_BIN`).
fn kascade_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("KASCADE_BIN") {
        return b.into();
    }
    let me = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<this test> -> target/<profile>/kascade
    let bin = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kascade"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: build it (cargo build -p kascade) or set KASCADE_BIN",
        bin.display()
    );
    bin
}

/// A broker process, killed on drop.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, addr: &str) -> Broker {
    let child = Command::new(kascade_bin())
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            addr,
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kascade");
    let broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "kascade never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Distinct, position-dependent bytes, so a misplaced or stale batch shows.
fn value(topic: &str, i: usize, size: usize) -> Vec<u8> {
    let seed = topic.bytes().fold(i as u64 * 0x9E37_79B9, |h, b| {
        h.rotate_left(5) ^ u64::from(b)
    });
    (0..size)
        .map(|j| (seed.wrapping_mul(j as u64 + 1) >> 7) as u8)
        .collect()
}

const SIZES: [usize; 5] = [100, 1_000, 70_000, 300_000, 1 << 20];
const PER_PARTITION: usize = 40;

fn create_topics(addr: &str, topics: &[(&str, i32, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, storage)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(1))
                .set("kascade.storage", storage)
                .set("max.message.bytes", "2097152")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in rt
        .block_on(admin.create_topics(new.iter(), &opts))
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// Produces `PER_PARTITION` values of every size to each partition; flushes now and then
/// so that batches of one and of several partitions both occur.
fn produce(addr: &str, topic: &str, partitions: i32) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("message.max.bytes", "2097152")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..PER_PARTITION * partitions as usize {
        let v = value(topic, i, SIZES[i % SIZES.len()]);
        let partition = (i % partitions as usize) as i32;
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(&v[..])
            .partition(partition);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 17 == 0 {
            producer.flush(Duration::from_secs(30)).expect("flush");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads every partition from offset 0 and checks offsets and bytes.
fn check(addr: &str, topic: &str, partitions: i32) {
    for partition in 0..partitions {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("group.id", "compat-large-batches")
            .set("enable.auto.commit", "false")
            .set("check.crcs", "true")
            .set("receive.message.max.bytes", "104857600")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(0))
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let expected: Vec<usize> = (0..PER_PARTITION * partitions as usize)
            .filter(|i| i % partitions as usize == partition as usize)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < expected.len() {
            assert!(
                Instant::now() < deadline,
                "{topic}/{partition}: only {got} of {} messages",
                expected.len()
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap_or_else(|e| panic!("{topic}/{partition}: {e}"));
            assert_eq!(m.offset(), got as i64, "{topic}/{partition} offset");
            let i = expected[got];
            let want = value(topic, i, SIZES[i % SIZES.len()]);
            assert!(
                m.payload() == Some(&want[..]),
                "{topic}/{partition} offset {got}: {} bytes differ from the {} produced",
                m.payload().map_or(0, <[u8]>::len),
                want.len()
            );
            got += 1;
        }
    }
}

#[test]
fn batches_up_to_1_mib_come_back_byte_for_byte_before_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let topics = [
        ("large-volatile", 1, "volatile"),
        ("large-persistent", 1, "persistent"),
        ("large-three-partitions", 3, "volatile"),
    ];
    {
        let _broker = start(dir.path(), &addr);
        create_topics(&addr, &topics);
        for (name, partitions, _) in topics {
            produce(&addr, name, partitions);
            check(&addr, name, partitions);
        }
    }
    let _broker = start(dir.path(), &addr);
    check(&addr, "large-persistent", 1);
}
