//! Every `(api, version)` the broker advertises, asked for real: a minimal
//! valid request at that version must get a response that decodes at that
//! version, with the expected outcome. This catches responses that set a
//! field the version lacks (the encoder refuses them and the connection is
//! closed) as well as handlers that misread an old or a new version.
//!
//! The list comes from `kascade::kafka::api::SERVED`, so an API added there
//! without a minimal request here fails this test by name.

mod kafka_raw;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestKind,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_raw::{Broker, Conn};
use uuid::Uuid;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// What the requests need to know: the test topic and a connection for set-up.
struct Ctx {
    setup: Conn,
    topic: &'static str,
    topic_id: Uuid,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn one_record_batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a batch");
    out.freeze()
}

/// Creates `topic` with `partitions` partitions; returns its id.
fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) -> Uuid {
    let req = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
    );
    match conn.call(ApiKey::CreateTopics, 7, &req) {
        Ok(ResponseKind::CreateTopics(r)) if r.topics[0].error_code == 0 => r.topics[0].topic_id,
        other => panic!("creating {topic}: {other:?}"),
    }
}

/// A minimal valid request for `api` at `version`, or `None` when this test
/// has none for `api` yet. May do set-up on `ctx.setup` first.
fn minimal_request(api: ApiKey, version: i16, ctx: &mut Ctx) -> Option<RequestKind> {
    Some(match api {
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if version >= 3 {
                r = r
                    .with_client_software_name(str_bytes("kascade-versions-test"))
                    .with_client_software_version(str_bytes("1.0"));
            }
            RequestKind::ApiVersions(r)
        }
        ApiKey::Metadata => {
            let topic = |n: &str| MetadataRequestTopic::default().with_name(Some(name(n)));
            let mut r = MetadataRequest::default()
                .with_topics(Some(vec![topic(ctx.topic), topic("no-such-topic")]));
            if version >= 4 {
                r = r.with_allow_auto_topic_creation(false);
            }
            RequestKind::Metadata(r)
        }
        ApiKey::Produce => {
            let partition = |index| {
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(one_record_batch()))
            };
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(name(ctx.topic))
                        .with_topic_id(ctx.topic_id)
                        .with_partition_data(vec![partition(0), partition(99)])]),
            )
        }
        ApiKey::Fetch => {
            let partition = |p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)
            };
            let mut r = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name(ctx.topic))
                    .with_topic_id(ctx.topic_id)
                    .with_partitions(vec![partition(0), partition(99)])]);
            if version >= 7 {
                // Open an incremental fetch session: the response carries its id.
                r = r.with_session_id(0).with_session_epoch(0);
            }
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let partition = |p, ts| {
                ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(ts)
            };
            let mut r = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(ctx.topic))
                    .with_partitions(vec![
                        partition(0, -1),
                        partition(0, -2),
                        partition(99, -1),
                    ])]);
            if version >= 10 {
                r = r.with_timeout_ms(30_000);
            }
            RequestKind::ListOffsets(r)
        }
        ApiKey::CreateTopics => {
            let topic = |n: String| {
                CreatableTopic::default()
                    .with_name(name(&n))
                    .with_num_partitions(2)
                    .with_replication_factor(1)
            };
            RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![
                        topic(format!("created-v{version}")),
                        topic(ctx.topic.to_string()),
                    ]),
            )
        }
        ApiKey::DeleteTopics => {
            let doomed = format!("doomed-v{version}");
            create_topic(&mut ctx.setup, &doomed, 1);
            let mut r = DeleteTopicsRequest::default().with_timeout_ms(30_000);
            if version >= 6 {
                r = r.with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&doomed))),
                    DeleteTopicState::default().with_name(Some(name("never-existed"))),
                ]);
            } else {
                r = r.with_topic_names(vec![name(&doomed), name("never-existed")]);
            }
            RequestKind::DeleteTopics(r)
        }
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        ),
        _ => return None,
    })
}

/// Checks that the response says what the minimal request should get.
fn check(api: ApiKey, version: i16, response: &ResponseKind, ctx: &Ctx) -> Result<(), String> {
    let fail = |what: String| Err(format!("{what} in {response:?}"));
    match response {
        ResponseKind::ApiVersions(r) => {
            let listed: Vec<(i16, i16, i16)> = r
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            let ours: Vec<(i16, i16, i16)> = kascade::kafka::api::SERVED
                .iter()
                .map(|&(k, min, max)| (k as i16, min, max))
                .collect();
            if r.error_code != 0 || listed != ours {
                return fail("not exactly the served ranges".into());
            }
        }
        ResponseKind::Metadata(r) => {
            let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
            if r.brokers.len() != 1 || codes != [0, UNKNOWN_TOPIC_OR_PARTITION] {
                return fail("want one broker, the topic, and an unknown topic".into());
            }
            if r.topics[0].partitions.len() != 2 {
                return fail("want two partitions".into());
            }
            if version >= 10 && r.topics[0].topic_id != ctx.topic_id {
                return fail("wrong topic id".into());
            }
        }
        ResponseKind::Produce(r) => {
            let ps = &r.responses.first().ok_or("no topic")?.partition_responses;
            let got: Vec<(i32, i16)> = ps.iter().map(|p| (p.index, p.error_code)).collect();
            if got != [(0, 0), (99, UNKNOWN_TOPIC_OR_PARTITION)] || ps[0].base_offset < 0 {
                return fail("want partition 0 appended, 99 unknown".into());
            }
        }
        ResponseKind::Fetch(r) => {
            let ps = &r.responses.first().ok_or("no topic")?.partitions;
            let p0 = ps.iter().find(|p| p.partition_index == 0).ok_or("no partition 0")?;
            let p99 = ps.iter().find(|p| p.partition_index == 99).ok_or("no partition 99")?;
            if r.error_code != 0 || p0.error_code != 0 || p0.records.as_ref().is_none_or(|b| b.is_empty()) {
                return fail("want records from partition 0".into());
            }
            if p99.error_code == 0 {
                return fail("partition 99 does not exist".into());
            }
            if version >= 7 && r.session_id == 0 {
                return fail("no fetch session id".into());
            }
        }
        ResponseKind::ListOffsets(r) => {
            let ps = &r.topics.first().ok_or("no topic")?.partitions;
            let got: Vec<(i32, i16)> = ps.iter().map(|p| (p.partition_index, p.error_code)).collect();
            if got != [(0, 0), (0, 0), (99, UNKNOWN_TOPIC_OR_PARTITION)] {
                return fail("want latest and earliest of 0, 99 unknown".into());
            }
            if ps[0].offset < 1 || ps[1].offset != 0 {
                return fail("want latest >= 1, earliest 0".into());
            }
        }
        ResponseKind::CreateTopics(r) => {
            let got: Vec<(String, i16)> = r
                .topics
                .iter()
                .map(|t| (t.name.0.to_string(), t.error_code))
                .collect();
            let want = vec![
                (format!("created-v{version}"), 0),
                (ctx.topic.to_string(), TOPIC_ALREADY_EXISTS),
            ];
            if got != want {
                return fail(format!("want {want:?}"));
            }
        }
        ResponseKind::DeleteTopics(r) => {
            let codes: Vec<i16> = r.responses.iter().map(|t| t.error_code).collect();
            if codes != [0, UNKNOWN_TOPIC_OR_PARTITION] {
                return fail("want the doomed topic deleted, the other unknown".into());
            }
        }
        ResponseKind::InitProducerId(r) => {
            if r.error_code != 0 || r.producer_id.0 < 0 {
                return fail("want a producer id".into());
            }
        }
        _ => {
            return Err(format!(
                "no check for {api:?} responses in kafka_versions.rs: add one next to its minimal request"
            ))
        }
    }
    Ok(())
}

#[test]
fn every_served_api_version_answers_a_minimal_request_in_its_own_version() {
    let broker = Broker::start(&[]);
    let mut setup = broker.connect();
    let topic = "versions";
    let topic_id = create_topic(&mut setup, topic, 2);
    let mut ctx = Ctx {
        setup,
        topic,
        topic_id,
    };
    let mut failures = Vec::new();
    let mut passed = 0;
    for &(api, min, max) in kascade::kafka::api::SERVED {
        for version in min..=max {
            let Some(request) = minimal_request(api, version, &mut ctx) else {
                failures.push(format!(
                    "{api:?}: no minimal request in broker/tests/kafka_versions.rs; \
                     whoever adds {api:?} to SERVED must add one (and its check) there"
                ));
                break;
            };
            // A fresh connection each time: a failed encode closes it.
            let mut conn = broker.connect();
            let outcome = conn
                .call(api, version, &request)
                .and_then(|response| check(api, version, &response, &ctx));
            match outcome {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{api:?} v{version}: {e}")),
            }
        }
    }
    let mut broker = broker;
    broker.drain_logs();
    let errors: Vec<&String> = broker.seen.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(
        failures.is_empty(),
        "{} (api, version) pairs failed, {passed} passed:\n{}\nbroker errors:\n{errors:#?}",
        failures.len(),
        failures.join("\n")
    );
    assert!(errors.is_empty(), "the broker logged errors: {errors:#?}");
    broker.stop();
}
