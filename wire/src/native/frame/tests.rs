use proptest::prelude::*;

use super::*;

/// Owned data for one frame of every kind, so a strategy can build it and a
/// test can borrow a `Frame` from it.
#[derive(Clone, Debug)]
enum Owned {
    Hello(u16, u16, u8, u32, String),
    Welcome(u16, u8, u8, u32, u32, String),
    Publish(
        i32,
        i64,
        String,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        Vec<u8>,
    ),
    Subscribe(i64, String, Vec<i32>),
    Unsubscribe,
    Put(String, Vec<u8>),
    Get(u8, u64, String),
    Trigger(String, Vec<u8>),
    List(String),
    Release,
    Bye,
    Ack(i32, i64, u64, i64),
    Notify(i32, u32, i64, Vec<u8>),
    Error(u16, String),
    Object(u64, u64, u32, u64, String, Vec<u8>),
    Keys(Vec<(String, u64, u64)>),
    SubscribeOk(Vec<(i32, i64)>),
    Attach(String, String),
    UpcallDone(i32, String),
    Upcall(u64, u64, u32, u64, String, Vec<u8>),
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u32>(),
            text()
        )
            .prop_map(|(a, b, c, d, e)| Owned::Hello(a, b, c, d, e)),
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            text()
        )
            .prop_map(|(a, b, c, d, e, f)| Owned::Welcome(a, b, c, d, e, f)),
        (
            any::<i32>(),
            any::<i64>(),
            text(),
            proptest::option::of(bytes()),
            proptest::collection::vec((text(), proptest::option::of(bytes())), 0..4),
            bytes()
        )
            .prop_map(|(a, b, c, d, e, f)| Owned::Publish(a, b, c, d, e, f)),
        (
            any::<i64>(),
            text(),
            proptest::collection::vec(any::<i32>(), 0..6)
        )
            .prop_map(|(a, b, c)| Owned::Subscribe(a, b, c)),
        Just(Owned::Unsubscribe),
        (text(), bytes()).prop_map(|(a, b)| Owned::Put(a, b)),
        (0u8..4, any::<u64>(), text()).prop_map(|(a, b, c)| Owned::Get(
            a,
            if a == 0 { 0 } else { b },
            c
        )),
        (text(), bytes()).prop_map(|(a, b)| Owned::Trigger(a, b)),
        text().prop_map(Owned::List),
        Just(Owned::Release),
        Just(Owned::Bye),
        (any::<i32>(), any::<i64>(), any::<u64>(), any::<i64>())
            .prop_map(|(a, b, c, d)| Owned::Ack(a, b, c, d)),
        (any::<i32>(), any::<u32>(), any::<i64>(), bytes())
            .prop_map(|(a, b, c, d)| Owned::Notify(a, b, c, d)),
        (any::<u16>(), text()).prop_map(|(a, b)| Owned::Error(a, b)),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            text(),
            bytes()
        )
            .prop_map(|(a, b, c, d, e, f)| Owned::Object(a, b, c, d, e, f)),
        proptest::collection::vec((text(), any::<u64>(), any::<u64>()), 0..4).prop_map(Owned::Keys),
        proptest::collection::vec((any::<i32>(), any::<i64>()), 0..4).prop_map(Owned::SubscribeOk),
        (text(), text()).prop_map(|(a, b)| Owned::Attach(a, b)),
        (any::<i32>(), text()).prop_map(|(a, b)| Owned::UpcallDone(a, b)),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            text(),
            bytes()
        )
            .prop_map(|(a, b, c, d, e, f)| Owned::Upcall(a, b, c, d, e, f)),
    ]
}

/// Builds the frame and hands it to `f` (the borrowed pieces live on this stack).
fn with_frame<R>(o: &Owned, id: u64, f: impl FnOnce(Frame<'_>) -> R) -> R {
    let headers: Vec<Header<'_>>;
    let keys: Vec<KeyInfo<'_>>;
    let body = match o {
        Owned::Hello(a, b, c, d, e) => Body::Hello(Hello {
            min_version: *a,
            max_version: *b,
            byte_order: *c,
            ring_capacity: *d,
            client_name: e,
        }),
        Owned::Welcome(a, b, c, d, e, n) => Body::Welcome(Welcome {
            version: *a,
            byte_order: *b,
            alignment: *c,
            ring_capacity: *d,
            max_payload: *e,
            server_name: n,
        }),
        Owned::Publish(p, t, topic, key, hs, value) => {
            headers = hs
                .iter()
                .map(|(n, v)| Header {
                    name: n,
                    value: v.as_deref(),
                })
                .collect();
            Body::Publish(Publish {
                partition: *p,
                timestamp_ms: *t,
                topic,
                key: key.as_deref(),
                headers: Headers::List(&headers),
                value,
            })
        }
        Owned::Subscribe(from, topic, parts) => Body::Subscribe(Subscribe {
            from: *from,
            topic,
            partitions: Seq::Slice(parts),
        }),
        Owned::Unsubscribe => Body::Unsubscribe,
        Owned::Put(k, v) => Body::Put(KeyValue { key: k, value: v }),
        Owned::Trigger(k, v) => Body::Trigger(KeyValue { key: k, value: v }),
        Owned::Get(sel, arg, key) => Body::Get(Get {
            at: match sel {
                0 => GetAt::Latest,
                1 => GetAt::Version(*arg),
                2 => GetAt::Seq(*arg),
                _ => GetAt::TimeUs(*arg),
            },
            key,
        }),
        Owned::List(p) => Body::List(p),
        Owned::Release => Body::Release,
        Owned::Bye => Body::Bye,
        Owned::Ack(a, b, c, d) => Body::Ack(Ack {
            partition: *a,
            offset: *b,
            version: *c,
            timestamp: *d,
        }),
        Owned::Notify(a, b, c, d) => Body::Notify(Notify {
            partition: *a,
            record_count: *b,
            base_offset: *c,
            batch: d,
        }),
        Owned::Error(c, m) => Body::Error(ErrorFrame {
            code: *c,
            message: m,
        }),
        Owned::Object(a, b, c, d, k, v) => Body::Object(Object {
            version: *a,
            seq: *b,
            count: *c,
            timestamp_us: *d,
            key: k,
            value: v,
        }),
        Owned::Keys(ks) => {
            keys = ks
                .iter()
                .map(|(k, s, n)| KeyInfo {
                    key: k,
                    start_seq: *s,
                    next_seq: *n,
                })
                .collect();
            Body::Keys(Seq::Slice(&keys))
        }
        Owned::SubscribeOk(s) => Body::SubscribeOk(Seq::Slice(s)),
        Owned::Attach(n, t) => Body::Attach(Attach { name: n, token: t }),
        Owned::UpcallDone(s, m) => Body::UpcallDone(UpcallDone {
            status: *s,
            message: m,
        }),
        Owned::Upcall(a, b, c, d, k, v) => Body::Upcall(Object {
            version: *a,
            seq: *b,
            count: *c,
            timestamp_us: *d,
            key: k,
            value: v,
        }),
    };
    f(Frame::new(id, body))
}

/// Where the frame's last byte string (value or batch) starts, if it has one.
fn value_of<'a>(f: &Frame<'a>) -> Option<&'a [u8]> {
    match f.body {
        Body::Publish(p) => Some(p.value),
        Body::Put(kv) | Body::Trigger(kv) => Some(kv.value),
        Body::Notify(n) => Some(n.batch),
        Body::Object(o) | Body::Upcall(o) => Some(o.value),
        _ => None,
    }
}

proptest! {
    #[test]
    fn every_frame_round_trips(o in owned(), id in any::<u64>()) {
        with_frame(&o, id, |frame| {
            let mut buf = Vec::new();
            let n = encode(&frame, &mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            prop_assert_eq!(frame.encoded_len().unwrap(), buf.len());
            let back = decode(&buf).unwrap();
            prop_assert_eq!(back, frame);
            prop_assert_eq!(peek_header(&buf), Some((frame.body.kind(), id)));
            // Re-encoding the decoded (borrowed-bytes) form gives the same bytes.
            let mut again = bytes::BytesMut::new();
            encode(&back, &mut again).unwrap();
            prop_assert_eq!(&again[..], &buf[..]);
            if let Some(v) = value_of(&back) {
                let at = v.as_ptr() as usize - buf.as_ptr() as usize;
                prop_assert_eq!(at % 8, 0, "the value starts 8-aligned within the frame");
            }
            Ok(())
        })?;
    }

    #[test]
    fn every_truncation_is_a_typed_error(o in owned()) {
        with_frame(&o, 7, |frame| {
            let mut buf = Vec::new();
            encode(&frame, &mut buf).unwrap();
            for cut in 0..buf.len() {
                let err = decode(&buf[..cut]).unwrap_err();
                prop_assert!(
                    matches!(err, FrameError::Truncated { .. } | FrameError::BodyLength { .. }),
                    "cut at {}: {:?}", cut, err
                );
            }
            // The same truncation with the header's length fixed up to match.
            for cut in HEADER_LEN..buf.len() {
                let mut short = buf[..cut].to_vec();
                short[4..8].copy_from_slice(&((cut - HEADER_LEN) as u32).to_le_bytes());
                let err = decode(&short).unwrap_err();
                prop_assert!(
                    matches!(err, FrameError::Truncated { .. } | FrameError::Invalid { .. }),
                    "cut at {}: {:?}", cut, err
                );
            }
            Ok(())
        })?;
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn garbage_with_a_valid_header_never_panics(k in 0u8..80, body in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut buf = vec![k, 0, 0, 0];
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&9u64.to_le_bytes());
        buf.extend_from_slice(&body);
        if let Ok(f) = decode(&buf) {
            // Whatever decodes re-encodes to the same bytes: the format is canonical.
            let mut again = Vec::new();
            encode(&f, &mut again).unwrap();
            prop_assert_eq!(again, buf);
        }
    }
}

#[test]
fn header_errors_are_typed() {
    assert_eq!(
        decode(&[]),
        Err(FrameError::Truncated {
            what: "frame kind",
            need: 1,
            have: 0
        })
    );
    let mut f = vec![kind::BYE, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&1u64.to_le_bytes());
    assert_eq!(decode(&f), Ok(Frame::new(1, Body::Bye)));
    f[0] = 200;
    assert_eq!(decode(&f), Err(FrameError::UnknownKind(200)));
    f[0] = kind::BYE;
    f[1] = 1;
    assert_eq!(decode(&f), Err(FrameError::Reserved("frame flags")));
    f[1] = 0;
    f[4] = 3;
    assert_eq!(
        decode(&f),
        Err(FrameError::BodyLength {
            header: 3,
            actual: 0
        })
    );
    f[4] = 1;
    f.push(0);
    assert_eq!(decode(&f), Err(FrameError::Trailing(1)));
}

#[test]
fn a_huge_count_is_refused_without_allocating() {
    // Keys announcing u32::MAX entries with none present.
    let mut f = vec![kind::KEYS, 0, 0, 0, 4, 0, 0, 0];
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&f), Err(FrameError::Truncated { .. })));
    // A value announcing 4 GiB.
    let mut f = vec![kind::PUT, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&[1, 0, b'k']);
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&[0; 1]);
    let body = (f.len() - HEADER_LEN) as u32;
    f[4..8].copy_from_slice(&body.to_le_bytes());
    assert!(matches!(
        decode(&f),
        Err(FrameError::Truncated { what: "value", .. })
    ));
}

#[test]
fn bad_utf8_and_nulls_are_typed() {
    let mut f = vec![kind::LIST, 0, 0, 0, 4, 0, 0, 0];
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&[2, 0, 0xff, 0xfe]);
    assert_eq!(decode(&f), Err(FrameError::Utf8("prefix")));
    let hs = [Header {
        name: "h",
        value: None,
    }];
    let frame = Frame::new(
        3,
        Body::Publish(Publish {
            partition: -1,
            timestamp_ms: -1,
            topic: "t",
            key: None,
            headers: Headers::List(&hs),
            value: b"v",
        }),
    );
    let mut buf = Vec::new();
    encode(&frame, &mut buf).unwrap();
    // The key's length (-1, null) sits after partition, timestamp and the topic.
    let key_at = HEADER_LEN + 12 + 3;
    buf[key_at..key_at + 4].copy_from_slice(&(-5i32).to_le_bytes());
    assert_eq!(
        decode(&buf),
        Err(FrameError::Invalid {
            what: "key",
            value: -5
        })
    );
}

#[test]
fn too_long_fields_cannot_be_encoded() {
    let long = "x".repeat(70_000);
    let frame = Frame::new(1, Body::List(&long));
    assert!(matches!(
        encode(&frame, &mut Vec::new()),
        Err(FrameError::TooLong { what: "prefix", .. })
    ));
}
