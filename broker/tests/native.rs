//! The native fast path against a real `kascade serve` process, over shared
//! memory and TCP: publish and push subscriptions (in order, many
//! subscribers, a slow one, resuming after a reconnect, volatile and
//! persistent topics), key partitioning, the K/V calls and the errors a
//! client gets.

mod http;
mod native_support;
mod spawn;

use std::sync::mpsc;

use kascade_wire::native::{frame::error_code, Client, GetAt, NativeError, Offset};
use native_support::{receive, Native, GUARD};

fn value(i: usize) -> Vec<u8> {
    format!("record-{i:05}").into_bytes()
}

#[test]
fn put_get_trigger_and_list_work_over_shm_and_tcp() {
    let b = Native::start(&[]);
    b.create_pool("/kv", "volatile");
    b.create_pool("/durable", "persistent");
    for (n, url) in b.urls().iter().enumerate() {
        let mut c = b.client(url, "kv");
        let key = format!("/kv/{n}/a");
        let w1 = c.put(&key, b"one").unwrap();
        let w2 = c.put(&key, b"two").unwrap();
        assert_eq!((w1.seq, w2.seq), (0, 1));
        assert!(w2.version > w1.version);
        let latest = c.get(&key, GetAt::Latest).unwrap().expect("stored");
        assert_eq!((latest.value.as_slice(), latest.seq), (&b"two"[..], 1));
        let first = c.get(&key, GetAt::Seq(0)).unwrap().expect("kept");
        assert_eq!(first.value, b"one");
        assert_eq!(
            c.get(&key, GetAt::Version(w1.version))
                .unwrap()
                .unwrap()
                .value,
            b"one"
        );
        assert!(c
            .get(&format!("/kv/{n}/none"), GetAt::Latest)
            .unwrap()
            .is_none());
        c.trigger(&key, b"ping").unwrap();
        // A trigger stores nothing.
        assert_eq!(c.get(&key, GetAt::Latest).unwrap().unwrap().value, b"two");
        let d = c.put(&format!("/durable/{n}"), b"kept").unwrap();
        assert_eq!(d.seq, 0);
        let listed = c.list(&format!("/kv/{n}")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].key.as_str(),
                listed[0].start_seq,
                listed[0].next_seq
            ),
            (key.as_str(), 0, 2)
        );
    }
}

#[test]
fn errors_say_what_is_wrong_and_keep_the_connection() {
    let b = Native::start(&[]);
    b.create_topic("t", 2, &[]);
    for url in b.urls() {
        let mut c = b.client(&url, "errors");
        let server = |r: Result<_, NativeError>| match r {
            Err(NativeError::Server { code, message }) => (code, message),
            Err(e) => panic!("not a server error: {e}"),
            Ok(_) => panic!("succeeded"),
        };
        let (code, m) = server(c.publish("nope", None, None, b"x", &[]).map(|_| ()));
        assert_eq!(code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
        assert!(m.contains("nope") && m.contains("does not exist"), "{m}");
        let (code, m) = server(c.publish("t", Some(7), None, b"x", &[]).map(|_| ()));
        assert_eq!(code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
        assert!(m.contains("no partition 7"), "{m}");
        let (code, _) = server(c.subscribe("t", &[5], Offset::Earliest).map(|_| ()));
        assert_eq!(code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
        let (code, m) = server(c.put("/cms/topics/t/0", b"x").map(|_| ()));
        assert_eq!(code, error_code::INVALID_KEY);
        assert!(m.contains("Kafka"), "{m}");
        let (code, _) = server(c.put("no-slash", b"x").map(|_| ()));
        assert_eq!(code, error_code::INVALID_KEY);
        let (code, m) = server(c.put("/nopool/x", b"x").map(|_| ()));
        assert_eq!(code, error_code::ENGINE);
        assert!(m.contains("no pool"), "{m}");
        // Still usable after every error.
        let p = c.publish("t", Some(1), None, b"fine", &[]).unwrap();
        assert_eq!(p.partition, 1);
    }
}

#[test]
fn acks_carry_each_records_offset_and_a_key_picks_kafkas_partition() {
    let b = Native::start(&[]);
    b.create_topic("v", 3, &[("kascade.storage", "volatile")]);
    b.create_topic("p", 3, &[]);
    for topic in ["v", "p"] {
        for url in b.urls() {
            let mut c = b.client(&url, "acks");
            // Queued publishes are coalesced; each still gets its own offset.
            let before = c.publish(topic, Some(2), None, b"first", &[]).unwrap();
            let ids: Vec<u64> = (0..500)
                .map(|i| {
                    c.publish_nowait(topic, Some(2), None, &value(i), &[])
                        .unwrap()
                })
                .collect();
            assert_eq!(ids.len(), 500);
            let acks = c.flush().unwrap();
            let offsets: Vec<i64> = acks.iter().map(|a| a.offset).collect();
            let want: Vec<i64> = (1..=500).map(|i| before.offset + i).collect();
            assert_eq!(offsets, want, "{topic} over {url}");
            assert!(acks.iter().all(|a| a.partition == 2));
            for key in [&b"alpha"[..], b"beta", b"k-17", b""] {
                let p = c.publish(topic, None, Some(key), b"v", &[]).unwrap();
                assert_eq!(p.partition, kascade::native::murmur2_partition(key, 3));
            }
        }
    }
}

/// Publishes `n` records to `topic` partition 0 from its own connection.
fn publish_all(url: &str, b: &Native, topic: &str, n: usize) {
    let mut c = b.client(url, "publisher");
    for i in 0..n {
        c.publish_nowait(
            topic,
            Some(0),
            Some(format!("k{i}").as_bytes()),
            &value(i),
            &[("i", i.to_string().as_bytes())],
        )
        .unwrap();
        if i % 100 == 99 {
            c.flush().unwrap();
        }
    }
    c.flush().unwrap();
}

#[test]
fn many_subscribers_each_get_every_record_in_order() {
    let b = Native::start(&[]);
    b.create_topic("vol", 1, &[("kascade.storage", "volatile")]);
    b.create_topic("dur", 1, &[]);
    const N: usize = 2000;
    for topic in ["vol", "dur"] {
        let (ready_tx, ready_rx) = mpsc::channel();
        let subscribers: Vec<_> = (0..4)
            .map(|i| {
                let url = b.urls()[i % 2].clone();
                let mut c = b.client(&url, "subscriber");
                let ready = ready_tx.clone();
                let topic = topic.to_string();
                std::thread::spawn(move || {
                    let sub = c.subscribe(&topic, &[], Offset::Latest).unwrap();
                    assert_eq!(sub.starts, vec![(0, 0)]);
                    ready.send(()).unwrap();
                    receive(&mut c, N)
                })
            })
            .collect();
        for _ in 0..4 {
            ready_rx.recv_timeout(GUARD).unwrap();
        }
        publish_all(&b.shm, &b, topic, N / 2);
        publish_all(&b.tcp, &b, topic, N / 2);
        for s in subscribers {
            let got = s.join().unwrap();
            let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>(), "{topic}");
            for (j, r) in got.iter().enumerate() {
                let i = j % (N / 2);
                assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
                assert_eq!(r.value, value(i));
                assert_eq!(
                    r.headers,
                    vec![(b"i".to_vec(), Some(i.to_string().into_bytes()))]
                );
            }
        }
    }
}

#[test]
fn a_slow_subscriber_gets_every_record_without_holding_up_the_others() {
    let b = Native::start(&[]);
    b.create_topic("t", 1, &[("kascade.storage", "volatile")]);
    // Far more than the slow subscriber's 64 KiB ring holds.
    const N: usize = 5000;
    let big = vec![b'x'; 200];
    let mut slow = b.client_with(&b.shm, "slow", 64 << 10);
    let mut fast = b.client(&b.tcp, "fast");
    slow.subscribe("t", &[0], Offset::Earliest).unwrap();
    fast.subscribe("t", &[0], Offset::Earliest).unwrap();
    // The slow one reads nothing until the publisher and the fast subscriber are done.
    let mut p = b.client(&b.shm, "publisher");
    for i in 0..N {
        p.publish_nowait("t", Some(0), None, &big, &[("i", i.to_string().as_bytes())])
            .unwrap();
    }
    let acks = p.flush().unwrap();
    assert_eq!(acks.last().unwrap().offset, N as i64 - 1);
    let got = receive(&mut fast, N);
    assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64));
    // Now it reads, slowly at first; nothing was dropped while it was full.
    let mut offsets = Vec::with_capacity(N);
    while offsets.len() < N {
        let d = slow.next_record(Some(GUARD)).unwrap().expect("a record");
        offsets.push(d.offset());
        drop(d);
        if offsets.len() < 50 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
}

#[test]
fn a_subscriber_that_reconnects_resumes_exactly_where_it_left_off() {
    let b = Native::start(&[]);
    b.create_topic("t", 2, &[]);
    for url in b.urls() {
        let mut p = b.client(&url, "publisher");
        let base = p.publish("t", Some(1), None, b"first", &[]).unwrap().offset;
        for i in 0..99 {
            p.publish_nowait("t", Some(1), None, &value(i), &[])
                .unwrap();
        }
        p.flush().unwrap();
        let mut c = b.client(&url, "reader");
        let sub = c.subscribe("t", &[1], Offset::At(base)).unwrap();
        assert_eq!(sub.starts, vec![(1, base)]);
        let first = receive(&mut c, 40);
        let last = first.last().unwrap().offset;
        assert_eq!(last, base + 39);
        drop(c);
        let mut c = b.client(&url, "reader again");
        let sub = c.subscribe("t", &[1], Offset::At(last + 1)).unwrap();
        assert_eq!(sub.starts, vec![(1, last + 1)]);
        let rest = receive(&mut c, 60);
        let offsets: Vec<i64> = rest.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (last + 1..base + 100).collect::<Vec<_>>());
        // Exactly the rest: nothing more is pushed.
        assert!(c
            .next_record(Some(std::time::Duration::from_millis(200)))
            .unwrap()
            .is_none());
        // Unsubscribing stops the pushes; new records go elsewhere.
        c.unsubscribe(sub.id).unwrap();
        p.publish("t", Some(1), None, b"after", &[]).unwrap();
        assert!(c
            .next_record(Some(std::time::Duration::from_millis(200)))
            .unwrap()
            .is_none());
        let mut again: Client = b.client(&url, "latest");
        let sub = again.subscribe("t", &[], Offset::Latest).unwrap();
        assert_eq!(sub.starts.len(), 2);
        assert_eq!(sub.starts[1], (1, base + 101));
    }
}
