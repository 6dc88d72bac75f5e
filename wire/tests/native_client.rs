//! The native client against a server speaking the protocol over real
//! sockets and shared memory: publish, subscribe (pushed records, in place),
//! put/get/trigger/list, errors, credits, over shm and tcp.

mod common;

use std::time::Duration;

use common::{TestRecord, ToyServer};
use kafka_protocol::records::Compression;
use kascade_wire::native::frame::error_code;
use kascade_wire::native::{
    Client, ClientOptions, GetAt, NativeError, Offset, ServerOptions, Transport, WaitStrategy,
};

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

/// A server on a fresh Unix socket (shm) and one on a TCP port.
fn servers(wait: WaitStrategy) -> (tempfile::TempDir, Vec<ToyServer>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        wait,
        ..ServerOptions::default()
    };
    let shm = ToyServer::start(
        &format!("unix://{}/native.sock", dir.path().display()),
        opts.clone(),
    );
    let tcp = ToyServer::start("tcp://127.0.0.1:0", opts);
    (dir, vec![shm, tcp])
}

fn connect(url: &str, wait: WaitStrategy) -> Client {
    Client::connect_with(
        url,
        ClientOptions {
            wait,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn publish_then_receive(wait: WaitStrategy) {
    let (_dir, servers) = servers(wait);
    for server in &servers {
        let mut sub = connect(&server.url, wait);
        let mut publisher = connect(&server.url, wait);
        let s = sub.subscribe("orders", &[0], Offset::Earliest).unwrap();
        assert_eq!(s.starts, vec![(0, 0)]);
        for i in 0..3u8 {
            let at = publisher
                .publish(
                    "orders",
                    Some(0),
                    Some(&[b'k', i]),
                    &[i; 100],
                    &[("h", &[i])],
                )
                .unwrap();
            assert_eq!((at.partition, at.offset), (0, i64::from(i)));
        }
        for i in 0..3u8 {
            let d = sub.next_record(WAIT).unwrap().expect("a record");
            assert_eq!(
                (d.topic(), d.partition(), d.offset()),
                ("orders", 0, i64::from(i))
            );
            assert_eq!(d.subscription(), s.id);
            assert_eq!(d.key(), Some(&[b'k', i][..]));
            assert_eq!(d.value(), &[i; 100][..]);
            assert_eq!(
                d.headers().collect::<Vec<_>>(),
                vec![(&b"h"[..], Some(&[i][..]))]
            );
            assert_eq!(d.timestamp_ms(), 1_700_000_000_000 + i64::from(i));
        }
        assert!(sub
            .next_record(Some(Duration::from_millis(20)))
            .unwrap()
            .is_none());
    }
}

#[test]
fn published_records_are_pushed_to_a_subscriber_spin_then_park() {
    publish_then_receive(WaitStrategy::SpinThenPark { spin_us: 50 });
}

#[test]
fn published_records_are_pushed_to_a_subscriber_blocking() {
    publish_then_receive(WaitStrategy::Block);
}

#[test]
fn published_records_are_pushed_to_a_subscriber_busy_polling() {
    publish_then_receive(WaitStrategy::BusyPoll);
}

#[test]
fn publish_nowait_then_flush_gives_offsets_in_order() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = connect(&server.url, WaitStrategy::default());
        let ids: Vec<u64> = (0..500)
            .map(|i| {
                c.publish_nowait("bulk", Some(1), None, format!("v{i}").as_bytes(), &[])
                    .unwrap()
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let acks = c.flush().unwrap();
        assert_eq!(acks.len(), 500);
        for (i, a) in acks.iter().enumerate() {
            assert_eq!((a.partition, a.offset), (1, i as i64));
        }
        assert!(c.flush().unwrap().is_empty());
        // A failure among queued publishes is reported after all are collected.
        c.publish_nowait("bulk", Some(1), None, b"x", &[]).unwrap();
        c.publish_nowait("missing-topic", None, None, b"x", &[])
            .unwrap();
        c.publish_nowait("bulk", Some(1), None, b"y", &[]).unwrap();
        let err = c.flush().unwrap_err();
        assert!(
            matches!(
                err,
                NativeError::Server {
                    code: error_code::UNKNOWN_TOPIC_OR_PARTITION,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            c.publish("bulk", Some(1), None, b"z", &[]).unwrap().offset,
            502
        );
    }
}

#[test]
fn records_pushed_while_waiting_for_an_answer_are_kept() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = connect(&server.url, WaitStrategy::default());
        c.subscribe("news", &[], Offset::Latest).unwrap();
        // Our own publishes are pushed back to us while we wait for the acks.
        for i in 0..5u8 {
            c.publish("news", Some(i32::from(i % 2)), None, &[i], &[])
                .unwrap();
        }
        c.put("/kv/a", b"1").unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = c.next_record(WAIT).unwrap().unwrap();
            got.push((d.partition(), d.offset(), d.value().to_vec()));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, 0, vec![0]),
                (0, 1, vec![2]),
                (0, 2, vec![4]),
                (1, 0, vec![1]),
                (1, 1, vec![3])
            ]
        );
    }
}

#[test]
fn put_get_trigger_and_list() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = connect(&server.url, WaitStrategy::default());
        let w1 = c.put("/kv/x", b"one").unwrap();
        let w2 = c.put("/kv/x", b"two").unwrap();
        assert_eq!((w1.seq, w2.seq), (0, 1));
        assert!(w2.version > w1.version);
        let latest = c.get("/kv/x", GetAt::Latest).unwrap().unwrap();
        assert_eq!(
            (latest.key.as_str(), latest.value.as_slice(), latest.seq),
            ("/kv/x", &b"two"[..], 1)
        );
        assert_eq!(
            c.get("/kv/x", GetAt::Seq(0)).unwrap().unwrap().value,
            b"one"
        );
        assert_eq!(
            c.get("/kv/x", GetAt::Version(w1.version))
                .unwrap()
                .unwrap()
                .value,
            b"one"
        );
        assert!(c.get("/kv/nothing", GetAt::Latest).unwrap().is_none());
        c.trigger("/kv/t", b"fire").unwrap();
        assert!(
            c.get("/kv/t", GetAt::Latest).unwrap().is_none(),
            "a trigger stores nothing"
        );
        c.put("/kv/y", b"").unwrap();
        c.put("/other", b"").unwrap();
        let keys: Vec<(String, u64)> = c
            .list("/kv/")
            .unwrap()
            .into_iter()
            .map(|k| (k.key, k.next_seq))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("/kv/t".into(), 0),
                ("/kv/x".into(), 2),
                ("/kv/y".into(), 1)
            ]
        );
    }
}

#[test]
fn a_subscription_from_inside_a_batch_skips_the_records_before_it() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let recs: Vec<TestRecord<'_>> = (0..5)
            .map(|i| (None, &b"abcde"[i..i + 1], vec![("n", None)]))
            .collect();
        server.append("multi", 0, &recs, Compression::None);
        let mut c = connect(&server.url, WaitStrategy::default());
        c.subscribe("multi", &[0], Offset::At(2)).unwrap();
        for (offset, v) in [(2, b"c"), (3, b"d"), (4, b"e")] {
            let d = c.next_record(WAIT).unwrap().unwrap();
            assert_eq!((d.offset(), d.value()), (offset, &v[..]));
            assert_eq!(d.key(), None);
            assert_eq!(d.headers().collect::<Vec<_>>(), vec![(&b"n"[..], None)]);
        }
        assert!(c
            .next_record(Some(Duration::from_millis(20)))
            .unwrap()
            .is_none());
    }
}

#[test]
fn compressed_batches_are_delivered_decoded() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let value = vec![b'z'; 4000];
        let recs: Vec<TestRecord<'_>> = (0..3)
            .map(|_| (Some(&b"key"[..]), &value[..], vec![]))
            .collect();
        server.append("zipped", 1, &recs, Compression::Lz4);
        let mut c = connect(&server.url, WaitStrategy::default());
        c.subscribe("zipped", &[1], Offset::Earliest).unwrap();
        for offset in 0..3 {
            let d = c.next_record(WAIT).unwrap().unwrap();
            assert_eq!(
                (d.partition(), d.offset(), d.key(), d.value()),
                (1, offset, Some(&b"key"[..]), &value[..])
            );
        }
        // Publishing to an lz4 topic of the toy server stores compressed too.
        c.publish("lz4-topic", Some(0), None, b"x", &[]).unwrap();
    }
}

#[test]
fn a_slow_subscriber_holds_back_the_server_and_loses_nothing() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = Client::connect_with(
            &server.url,
            ClientOptions {
                ring_capacity: 64 << 10,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        assert_eq!(c.ring_capacity(), 64 << 10);
        c.subscribe("flood", &[0], Offset::Earliest).unwrap();
        // 3 MB pushed into a 64 KiB ring: the server waits for credits.
        let value = vec![7u8; 1000];
        for _ in 0..3000 {
            server.append("flood", 0, &[(None, &value[..], vec![])], Compression::None);
        }
        std::thread::sleep(Duration::from_millis(50));
        for offset in 0..3000 {
            let d = c.next_record(WAIT).unwrap().unwrap();
            assert_eq!(d.offset(), offset);
            assert_eq!(d.value().len(), 1000);
        }
    }
}

#[test]
fn unsubscribe_stops_the_records() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = connect(&server.url, WaitStrategy::default());
        let s = c.subscribe("t", &[0], Offset::Latest).unwrap();
        c.publish("t", Some(0), None, b"1", &[]).unwrap();
        assert_eq!(c.next_record(WAIT).unwrap().unwrap().value(), b"1");
        c.unsubscribe(s.id).unwrap();
        c.publish("t", Some(0), None, b"2", &[]).unwrap();
        assert!(c
            .next_record(Some(Duration::from_millis(50)))
            .unwrap()
            .is_none());
        assert!(matches!(c.unsubscribe(s.id), Err(NativeError::Protocol(_))));
    }
}

#[test]
fn an_oversized_frame_is_refused_and_the_connection_stays_usable() {
    let (_dir, servers) = servers(WaitStrategy::default());
    for server in &servers {
        let mut c = Client::connect_with(
            &server.url,
            ClientOptions {
                ring_capacity: 64 << 10,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let max = c.max_payload();
        assert_eq!(max, 32 * 1024 - 8);
        let err = c
            .publish("big", Some(0), None, &vec![0; max], &[])
            .unwrap_err();
        assert!(matches!(err, NativeError::TooLarge { .. }), "{err}");
        assert_eq!(
            c.publish("big", Some(0), None, &vec![0; max - 100], &[])
                .unwrap()
                .offset,
            0
        );
    }
}

#[test]
fn the_transport_follows_the_url() {
    let (_dir, servers) = servers(WaitStrategy::default());
    assert_eq!(
        connect(&servers[0].url, WaitStrategy::default()).transport(),
        Transport::Shm
    );
    assert_eq!(
        connect(&servers[1].url, WaitStrategy::default()).transport(),
        Transport::Tcp
    );
    assert_eq!(
        connect(&servers[1].url, WaitStrategy::default()).server_name(),
        "kascade"
    );
    let err = Client::connect("rdma://127.0.0.1:1").err().unwrap();
    if cfg!(feature = "rdma") {
        assert!(
            matches!(err, NativeError::NoRdmaDevice(_) | NativeError::Connect(_)),
            "{err}"
        );
    } else {
        assert!(matches!(err, NativeError::RdmaNotBuilt), "{err}");
        assert!(err.to_string().contains("built without the `rdma` feature"));
    }
    let err = Client::connect("shm:///nonexistent/dir/native.sock")
        .err()
        .unwrap();
    assert!(matches!(err, NativeError::Connect(_)), "{err}");
}
