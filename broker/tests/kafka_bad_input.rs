//! Hostile and broken input on the Kafka port of a real `kascade serve`
//! process: bad frames close only their own connection, bad record sets get
//! the right Kafka error and leave the log as it was, and through it all a
//! connection that was open from the start keeps getting correct answers.

mod kafka_raw;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest,
    ListOffsetsRequest, ProduceRequest, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_raw::{decode_response, header_bytes, request_frame, sized, Broker, Conn, Reply};

const MAX_FRAME: usize = 1 << 20;

fn served() -> &'static [(ApiKey, i16, i16)] {
    kascade::kafka::api::SERVED
}

/// xorshift64*: a fixed seed, so any failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// After each hostile input: the broker lives and the open connection still works.
fn still_fine(broker: &mut Broker, sentinel: &mut Conn, after: &str) {
    broker.assert_alive(after);
    if let Err(e) = sentinel.check_healthy() {
        broker.drain_logs();
        panic!(
            "after {after}, the connection open all along broke: {e}\nlog:\n{}",
            broker.seen.join("\n")
        );
    }
}

/// Sends `bytes` on a fresh connection and insists that the broker closes it.
fn refused(broker: &mut Broker, bytes: &[u8], what: &str) {
    let mut conn = broker.connect();
    conn.send_raw(bytes);
    if let Err(e) = conn.expect_closed() {
        panic!("{what}: {e}");
    }
}

/// Sends `junk` then, on the same connection, a good ApiVersions v0 request;
/// the broker may answer the junk (with a response that decodes) or close
/// the connection, but never anything else. Returns whether it answered.
fn junk_then_good(conn: &mut Conn, junk: &[u8], junk_api: Option<(ApiKey, i16, i32)>) -> bool {
    let good_id = conn.correlation();
    let good = request_frame(
        ApiKey::ApiVersions,
        0,
        good_id,
        &RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let mut both = junk.to_vec();
    both.extend_from_slice(&good);
    conn.send_raw(&both);
    loop {
        match conn.read() {
            Reply::Closed => return false,
            Reply::Frame(frame) => {
                let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                if id == good_id {
                    decode_response(frame, ApiKey::ApiVersions, 0, good_id)
                        .unwrap_or_else(|e| panic!("the good request's answer: {e}"));
                    return true;
                }
                let Some((api, version, junk_id)) = junk_api else {
                    panic!("an answer (correlation id {id}) to random bytes");
                };
                if let Err(e) = decode_response(frame, api, version, junk_id) {
                    panic!("the answer to a junk {api:?} v{version} body: {e}");
                }
            }
        }
    }
}

#[test]
fn hostile_frames_close_only_their_own_connection() {
    let mut broker = Broker::start(&["--max-frame-bytes", &MAX_FRAME.to_string()]);
    let mut sentinel = broker.connect();
    still_fine(&mut broker, &mut sentinel, "start-up");
    // A connection that sent half a frame and then went quiet, for the whole test.
    let slow = request_frame(
        ApiKey::ApiVersions,
        0,
        77,
        &RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let mut half = broker.connect();
    half.send_raw(&slow[..7]);

    // Truncated frames: the size says more than is sent, then the client leaves.
    let metadata = RequestKind::Metadata(Default::default());
    let whole = request_frame(ApiKey::Metadata, 4, 1, &metadata);
    for cut in [1, 4, 6, 10, whole.len() - 1] {
        let mut conn = broker.connect();
        conn.send_raw(&whole[..cut]);
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        conn.expect_closed()
            .unwrap_or_else(|e| panic!("truncated at {cut}: {e}"));
        drop(conn);
        still_fine(
            &mut broker,
            &mut sentinel,
            &format!("a frame cut at {cut} bytes"),
        );
    }

    // Oversized and negative sizes close the connection with a clear log line.
    for len in [MAX_FRAME as i32 + 1, 0x0100_0000, i32::MAX] {
        refused(&mut broker, &len.to_be_bytes(), &format!("size {len}"));
        still_fine(&mut broker, &mut sentinel, &format!("size {len}"));
    }
    broker.wait_log(&format!(
        "frame of {} bytes exceeds the limit of {MAX_FRAME} bytes",
        MAX_FRAME + 1
    ));
    for len in [-1, -4096, i32::MIN] {
        refused(&mut broker, &len.to_be_bytes(), &format!("size {len}"));
        still_fine(&mut broker, &mut sentinel, &format!("size {len}"));
    }
    broker.wait_log("frame announces a negative length (-1)");

    // Frames shorter than the fixed request header.
    for n in 0..=7 {
        refused(
            &mut broker,
            &sized(&vec![0u8; n]),
            &format!("{n}-byte frame"),
        );
        still_fine(&mut broker, &mut sentinel, &format!("a {n}-byte frame"));
    }
    broker.wait_log("request frame of 3 bytes is shorter than a request header");

    // Unknown API keys.
    for key in [-1i16, 93, 999, i16::MAX, i16::MIN] {
        assert!(ApiKey::try_from(key).is_err(), "{key} is a real API key");
        refused(
            &mut broker,
            &sized(&header_bytes(key, 0, 5, 1)),
            &format!("API key {key}"),
        );
        still_fine(&mut broker, &mut sentinel, &format!("API key {key}"));
    }
    broker.wait_log("unknown API key 999");

    // APIs Kafka has but this broker does not serve.
    for api in ApiKey::iter().filter(|a| !served().iter().any(|(s, _, _)| s == a)) {
        let version = api.valid_versions().min;
        let frame = sized(&header_bytes(api as i16, version, 5, 1));
        refused(&mut broker, &frame, &format!("unserved {api:?}"));
        still_fine(&mut broker, &mut sentinel, &format!("unserved {api:?}"));
    }

    // Versions outside the served range of every served API but ApiVersions.
    for &(api, min, max) in served() {
        if api == ApiKey::ApiVersions {
            continue;
        }
        for version in [min - 1, max + 1, -1, i16::MAX, i16::MIN] {
            if (min..=max).contains(&version) {
                continue;
            }
            let frame = sized(&header_bytes(api as i16, version, 5, 1));
            refused(&mut broker, &frame, &format!("{api:?} v{version}"));
            still_fine(&mut broker, &mut sentinel, &format!("{api:?} v{version}"));
        }
    }
    broker.wait_log("is not supported by this broker");

    // Garbage bodies behind a good header, for every served (API, version),
    // including lengths that announce billions of elements.
    let mut rng = Rng(0x6b61_7363_6164_6521);
    let mut answered = 0;
    let mut closed = 0;
    for &(api, min, max) in served() {
        for version in min..=max {
            let mut bodies: Vec<Vec<u8>> = (0..3).map(|_| rng.bytes(64)).collect();
            bodies.push([0x7f, 0xff, 0xff, 0xff].repeat(8));
            bodies.push(vec![0xff; 24]);
            bodies.push(Vec::new());
            for body in bodies {
                let mut conn = broker.connect();
                let id = conn.correlation();
                let mut frame =
                    header_bytes(api as i16, version, id, api.request_header_version(version));
                frame.extend_from_slice(&body);
                if junk_then_good(&mut conn, &sized(&frame), Some((api, version, id))) {
                    answered += 1;
                } else {
                    closed += 1;
                }
                drop(conn);
                still_fine(
                    &mut broker,
                    &mut sentinel,
                    &format!("{api:?} v{version} with body {body:02x?}"),
                );
            }
        }
    }
    assert!(closed > 0, "no garbage body was refused");
    eprintln!("garbage bodies: {answered} answered, {closed} closed");

    // Random whole frames, then random bytes with no framing at all.
    for i in 0..200 {
        let mut conn = broker.connect();
        let junk = if i % 2 == 0 {
            sized(&rng.bytes(128))
        } else {
            rng.bytes(128)
        };
        if i % 2 == 1 {
            // Whatever size it announces, the client then stops sending.
            conn.send_raw(&junk);
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            while let Reply::Frame(_) = conn.read() {}
        } else {
            junk_then_good(&mut conn, &junk, None);
        }
        drop(conn);
        still_fine(
            &mut broker,
            &mut sentinel,
            &format!("random bytes {junk:02x?}"),
        );
    }

    // The half-sent frame waited through all of that; finishing it gets it answered.
    half.send_raw(&slow[7..]);
    match half.read() {
        Reply::Frame(frame) => {
            decode_response(frame, ApiKey::ApiVersions, 0, 77).expect("the slow request's answer");
        }
        Reply::Closed => panic!("the connection with a half-sent frame was closed"),
    }
    still_fine(&mut broker, &mut sentinel, "the end");
    broker.stop();
}

#[test]
fn api_versions_too_new_gets_v0_unsupported_version_listing_our_ranges() {
    let mut broker = Broker::start(&[]);
    let mut sentinel = broker.connect();
    let max = served()
        .iter()
        .find(|(k, _, _)| *k == ApiKey::ApiVersions)
        .map(|&(_, _, max)| max)
        .expect("ApiVersions is served");
    for version in [max + 1, 100, i16::MAX, -1] {
        let mut conn = broker.connect();
        let id = conn.correlation();
        // A newer client sends a body we cannot know; flexible header, some bytes.
        let mut frame = header_bytes(ApiKey::ApiVersions as i16, version, id, 2);
        frame.extend_from_slice(&[3, b'n', b'e', b'w', 2, b'9', 0, 0x42, 0x42]);
        conn.send_raw(&sized(&frame));
        let Reply::Frame(mut answer) = conn.read() else {
            panic!("ApiVersions v{version}: the connection was closed");
        };
        // Always a v0 response: header v0, body v0.
        let header = ResponseHeader::decode(&mut answer, 0).expect("header v0");
        assert_eq!(header.correlation_id, id);
        let body = ApiVersionsResponse::decode(&mut answer, 0).expect("body v0");
        assert!(answer.is_empty(), "bytes left after a v0 ApiVersions body");
        assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION for v{version}");
        let listed: Vec<(i16, i16, i16)> = body
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let ours: Vec<(i16, i16, i16)> = served()
            .iter()
            .map(|&(k, min, max)| (k as i16, min, max))
            .collect();
        assert_eq!(listed, ours, "the fallback lists exactly the served ranges");
        // The client retries on the same connection with a version we serve.
        let retry = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("kascade-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        match conn.call(ApiKey::ApiVersions, max, &retry) {
            Ok(ResponseKind::ApiVersions(r)) => assert_eq!(r.error_code, 0),
            other => panic!("retry at v{max}: {other:?}"),
        }
        still_fine(
            &mut broker,
            &mut sentinel,
            &format!("ApiVersions v{version}"),
        );
    }
    broker.stop();
}

const TOPIC: &str = "bad-records";

fn records(n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // -1 for the first record and in step with the offsets after it:
            // no producer sequence, and the encoder keeps them in one batch.
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a batch");
    out.freeze()
}

/// A one-message v0 or v1 message set, as pre-0.11 clients write them.
fn legacy_message_set(magic: u8) -> Bytes {
    let mut message = vec![magic, 0];
    if magic == 1 {
        message.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    }
    message.extend_from_slice(&(-1i32).to_be_bytes()); // null key
    message.extend_from_slice(&5i32.to_be_bytes());
    message.extend_from_slice(b"hello");
    let mut out = 0i64.to_be_bytes().to_vec();
    out.extend_from_slice(&(4 + message.len() as i32).to_be_bytes());
    out.extend_from_slice(&crc32_ieee(&message).to_be_bytes());
    out.extend_from_slice(&message);
    Bytes::from(out)
}

fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Edits a batch's header and recomputes its CRC, so only the edit is wrong.
fn edited(batch: &Bytes, edit: impl FnOnce(&mut [u8])) -> Bytes {
    let mut b = batch.to_vec();
    assert_eq!(
        12 + i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize,
        b.len(),
        "one batch"
    );
    edit(&mut b);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Produces at v9 with acks=all: (error code, base offset, error message).
fn produce_why(conn: &mut Conn, records: Option<Bytes>) -> (i16, i64, String) {
    let req = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(records)])]),
    );
    match conn.call(ApiKey::Produce, 9, &req) {
        Ok(ResponseKind::Produce(r)) => {
            let p = &r.responses[0].partition_responses[0];
            let why = p.error_message.as_ref().map_or("", |m| m.as_str());
            (p.error_code, p.base_offset, why.to_string())
        }
        other => panic!("produce: {other:?}"),
    }
}

/// Produces at v9 with acks=all: (error code, base offset).
fn produce(conn: &mut Conn, records: Option<Bytes>) -> (i16, i64) {
    let (code, base, _) = produce_why(conn, records);
    (code, base)
}

fn latest_offset(conn: &mut Conn) -> i64 {
    let req = RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]),
    );
    match conn.call(ApiKey::ListOffsets, 7, &req) {
        Ok(ResponseKind::ListOffsets(r)) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.error_code, 0);
            p.offset
        }
        other => panic!("list offsets: {other:?}"),
    }
}

/// Fetches from `offset`: (error code, high watermark, record bytes).
fn fetch_from(conn: &mut Conn, offset: i64) -> (i16, i64, usize) {
    let req = RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    match conn.call(ApiKey::Fetch, 11, &req) {
        Ok(ResponseKind::Fetch(r)) => {
            let p = &r.responses[0].partitions[0];
            let bytes = p.records.as_ref().map_or(0, |r| r.len());
            (p.error_code, p.high_watermark, bytes)
        }
        other => panic!("fetch: {other:?}"),
    }
}

#[test]
fn bad_record_sets_get_the_right_error_and_leave_the_log_unchanged() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let create = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    match conn.call(ApiKey::CreateTopics, 7, &create) {
        Ok(ResponseKind::CreateTopics(r)) => assert_eq!(r.topics[0].error_code, 0),
        other => panic!("create topic: {other:?}"),
    }
    let good = records(3);
    assert_eq!(produce(&mut conn, Some(good.clone())), (0, 0));
    let end = latest_offset(&mut conn);
    assert_eq!(end, 3);

    const CORRUPT_MESSAGE: i16 = 2;
    const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    const INVALID_RECORD: i16 = 87;
    let mut flipped_body = good.to_vec();
    let last = flipped_body.len() - 1;
    flipped_body[last] ^= 0x40;
    let mut flipped_crc = good.to_vec();
    flipped_crc[18] ^= 1;
    let mut longer = good.to_vec();
    longer[8..12].copy_from_slice(&(good.len() as i32 - 12 + 1).to_be_bytes());
    let mut shorter = good.to_vec();
    shorter[8..12].copy_from_slice(&(good.len() as i32 - 12 - 5).to_be_bytes());
    let mut negative = good.to_vec();
    negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    let mut good_then_bad = good.to_vec();
    good_then_bad.extend_from_slice(&flipped_crc);
    let mut trailing = good.to_vec();
    trailing.extend_from_slice(&[0, 0, 0, 0, 0]);
    let cases: Vec<(&str, Option<Bytes>, i16)> = vec![
        (
            "a flipped bit in a record",
            Some(flipped_body.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a flipped bit in the CRC",
            Some(flipped_crc.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a batch length past the end",
            Some(longer.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a batch length short of the end",
            Some(shorter.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a negative batch length",
            Some(negative.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a truncated batch",
            Some(good.slice(..good.len() - 1)),
            CORRUPT_MESSAGE,
        ),
        (
            "a batch cut inside its header",
            Some(good.slice(..40)),
            CORRUPT_MESSAGE,
        ),
        (
            "a good batch then a corrupt one",
            Some(good_then_bad.into()),
            CORRUPT_MESSAGE,
        ),
        (
            "a good batch then trailing bytes",
            Some(trailing.into()),
            CORRUPT_MESSAGE,
        ),
        ("an empty record set", Some(Bytes::new()), CORRUPT_MESSAGE),
        ("no record set", None, CORRUPT_MESSAGE),
        (
            "a record count one too high",
            Some(edited(&good, |b| {
                b[57..61].copy_from_slice(&4i32.to_be_bytes())
            })),
            CORRUPT_MESSAGE,
        ),
        (
            "a record count of zero",
            Some(edited(&good, |b| {
                b[57..61].copy_from_slice(&0i32.to_be_bytes())
            })),
            CORRUPT_MESSAGE,
        ),
        (
            "a last offset delta that disagrees with the count",
            Some(edited(&good, |b| {
                b[23..27].copy_from_slice(&7i32.to_be_bytes())
            })),
            CORRUPT_MESSAGE,
        ),
        (
            "a v0 message set",
            Some(legacy_message_set(0)),
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ),
        (
            "a v1 message set",
            Some(legacy_message_set(1)),
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ),
        (
            "magic 3",
            Some(edited(&good, |b| b[16] = 3)),
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ),
        (
            "a control batch",
            Some(edited(&good, |b| b[22] |= 0x20)),
            INVALID_RECORD,
        ),
        (
            "a transactional batch",
            Some(edited(&good, |b| b[22] |= 0x10)),
            INVALID_RECORD,
        ),
    ];
    for (what, set, code) in cases {
        let (error, base, why) = produce_why(&mut conn, set);
        assert_eq!((error, base), (code, -1), "{what}: {why}");
        assert!(!why.is_empty(), "{what}: no error message");
        assert_eq!(latest_offset(&mut conn), end, "{what} changed the log end");
        let (error, high_watermark, bytes) = fetch_from(&mut conn, end);
        assert_eq!(
            (error, high_watermark, bytes),
            (0, end, 0),
            "{what}: a fetch from the old end"
        );
        broker.assert_alive(what);
    }
    // The log was never touched: all of it is the one good batch, and the next
    // good batch lands right after it.
    let (error, high_watermark, bytes) = fetch_from(&mut conn, 0);
    assert_eq!((error, high_watermark, bytes), (0, end, good.len()));
    assert_eq!(produce(&mut conn, Some(records(2))), (0, end));
    assert_eq!(latest_offset(&mut conn), end + 2);
    broker.stop();
}
