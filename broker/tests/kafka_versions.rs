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
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, DescribeLogDirsRequest,
    DescribeProducersRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestKind, ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_raw::{decode_response, request_frame, sized, try_request_frame, Broker, Conn, Reply};
use uuid::Uuid;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const MEMBER_ID_REQUIRED: i16 = 79;

/// A consumer group with one member that has joined and synced.
const STABLE_GROUP: &str = "g-stable";
/// A group with committed offsets and no members.
const COMMIT_GROUP: &str = "g-commit";

/// What the requests need to know: the test topic and a connection for set-up.
struct Ctx {
    setup: Conn,
    topic: &'static str,
    topic_id: Uuid,
    /// `STABLE_GROUP`'s member id and generation, once it is set up.
    stable: Option<(String, i32)>,
}

impl Ctx {
    /// A set-up call that must succeed.
    fn setup_call(&mut self, api: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
        self.setup
            .call(api, version, &request)
            .unwrap_or_else(|e| panic!("set-up {api:?} v{version}: {e}"))
    }

    /// Joins `group` as its only member (JoinGroup v9 twice, then SyncGroup
    /// v5); returns the member id and generation.
    fn join_and_sync(&mut self, group: &str) -> (String, i32) {
        let mut member = String::new();
        for _ in 0..2 {
            let req = RequestKind::JoinGroup(join_request(group, &member, 9));
            match self.setup_call(ApiKey::JoinGroup, 9, req) {
                ResponseKind::JoinGroup(r) if r.error_code == MEMBER_ID_REQUIRED => {
                    member = r.member_id.to_string();
                }
                ResponseKind::JoinGroup(r) if r.error_code == 0 => {
                    let generation = r.generation_id;
                    let req = RequestKind::SyncGroup(sync_request(group, &member, generation, 5));
                    match self.setup_call(ApiKey::SyncGroup, 5, req) {
                        ResponseKind::SyncGroup(s) if s.error_code == 0 => {}
                        other => panic!("set-up sync of {group}: {other:?}"),
                    }
                    return (member, generation);
                }
                other => panic!("set-up join of {group}: {other:?}"),
            }
        }
        panic!("set-up join of {group} did not complete in two rounds");
    }

    /// `STABLE_GROUP`'s member and generation, joining it the first time.
    fn stable(&mut self) -> (String, i32) {
        if self.stable.is_none() {
            self.stable = Some(self.join_and_sync(STABLE_GROUP));
        }
        self.stable.clone().unwrap_or_default()
    }

    /// Commits offset 1 of the test topic's partition 0 for `group`, with no member.
    fn commit(&mut self, group: &str) {
        let req = RequestKind::OffsetCommit(commit_request(group, self.topic, 8));
        match self.setup_call(ApiKey::OffsetCommit, 8, req) {
            ResponseKind::OffsetCommit(r) if r.topics[0].partitions[0].error_code == 0 => {}
            other => panic!("set-up commit for {group}: {other:?}"),
        }
    }
}

fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}

fn join_request(group: &str, member: &str, version: i16) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(60_000)
        .with_member_id(str_bytes(member))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str_bytes("range"))
            .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]);
    if version >= 1 {
        r = r.with_rebalance_timeout_ms(60_000);
    }
    r
}

fn sync_request(group: &str, member: &str, generation: i32, version: i16) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(str_bytes(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(str_bytes(member))
            .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))]);
    if version >= 5 {
        r = r
            .with_protocol_type(Some(str_bytes("consumer")))
            .with_protocol_name(Some(str_bytes("range")));
    }
    r
}

/// Commits offset 1 of `topic`'s partition 0 for `group`, with no member (a
/// standalone consumer's commit).
fn commit_request(group: &str, topic: &str, version: i16) -> OffsetCommitRequest {
    let mut r = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)
                .with_committed_metadata(Some(str_bytes("")))])]);
    if version >= 1 {
        r = r.with_generation_id_or_member_epoch(-1);
    }
    r
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
        ApiKey::FindCoordinator => {
            let r = if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![str_bytes(STABLE_GROUP)])
            } else {
                FindCoordinatorRequest::default().with_key(str_bytes(STABLE_GROUP))
            };
            RequestKind::FindCoordinator(r)
        }
        ApiKey::JoinGroup => {
            RequestKind::JoinGroup(join_request(&format!("g-join-v{version}"), "", version))
        }
        ApiKey::SyncGroup => {
            let (member, generation) = ctx.stable();
            RequestKind::SyncGroup(sync_request(STABLE_GROUP, &member, generation, version))
        }
        ApiKey::Heartbeat => {
            let (member, generation) = ctx.stable();
            RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(group_id(STABLE_GROUP))
                    .with_generation_id(generation)
                    .with_member_id(str_bytes(&member)),
            )
        }
        ApiKey::LeaveGroup => {
            let group = format!("g-leave-v{version}");
            let (member, _) = ctx.join_and_sync(&group);
            let r = LeaveGroupRequest::default().with_group_id(group_id(&group));
            RequestKind::LeaveGroup(if version >= 3 {
                r.with_members(vec![
                    MemberIdentity::default().with_member_id(str_bytes(&member))
                ])
            } else {
                r.with_member_id(str_bytes(&member))
            })
        }
        ApiKey::OffsetCommit => {
            RequestKind::OffsetCommit(commit_request(COMMIT_GROUP, ctx.topic, version))
        }
        ApiKey::OffsetFetch => {
            ctx.commit(COMMIT_GROUP);
            RequestKind::OffsetFetch(if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(COMMIT_GROUP))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(name(ctx.topic))
                        .with_partition_indexes(vec![0])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(group_id(COMMIT_GROUP))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(name(ctx.topic))
                        .with_partition_indexes(vec![0])]))
            })
        }
        ApiKey::ListGroups => {
            ctx.stable();
            RequestKind::ListGroups(ListGroupsRequest::default())
        }
        ApiKey::DescribeGroups => {
            ctx.stable();
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![group_id(STABLE_GROUP)]),
            )
        }
        ApiKey::DeleteGroups => {
            let group = format!("g-delete-v{version}");
            ctx.commit(&group);
            RequestKind::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(vec![group_id(&group)]),
            )
        }
        ApiKey::OffsetDelete => {
            let group = format!("g-offset-delete-v{version}");
            ctx.commit(&group);
            RequestKind::OffsetDelete(
                OffsetDeleteRequest::default()
                    .with_group_id(group_id(&group))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(name(ctx.topic))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ])]),
            )
        }
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(str_bytes(ctx.topic))
                    .with_configuration_keys(None),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(str_bytes("0"))
                    .with_configuration_keys(None),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(ctx.topic))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(str_bytes("retention.ms"))
                    .with_value(Some(str_bytes("604800000")))])]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(str_bytes(ctx.topic))
                    .with_configs(vec![incremental::AlterableConfig::default()
                        .with_name(str_bytes("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(str_bytes("604800000")))]),
            ]),
        ),
        ApiKey::CreatePartitions => {
            let topic = format!("grown-v{version}");
            create_topic(&mut ctx.setup, &topic, 1);
            RequestKind::CreatePartitions(
                CreatePartitionsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(name(&topic))
                        .with_count(2)
                        .with_assignments(None)]),
            )
        }
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(name(ctx.topic))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(0)])]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(
            DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                .with_name(name(ctx.topic))
                .with_partition_indexes(vec![0])]),
        ),
        ApiKey::OffsetForLeaderEpoch => {
            RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default().with_topics(
                vec![OffsetForLeaderTopic::default()
                .with_topic(name(ctx.topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_leader_epoch(0)])],
            ))
        }
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
        ResponseKind::FindCoordinator(r) => {
            let (code, node) = if version >= 4 {
                let c = r.coordinators.first().ok_or("no coordinator")?;
                (c.error_code, c.node_id.0)
            } else {
                (r.error_code, r.node_id.0)
            };
            if (code, node) != (0, 0) {
                return fail("want node 0 as the coordinator".into());
            }
        }
        ResponseKind::JoinGroup(r) => {
            let want = if version >= 4 { MEMBER_ID_REQUIRED } else { 0 };
            if r.error_code != want || r.member_id.is_empty() {
                return fail(format!("want error {want} and a member id"));
            }
        }
        ResponseKind::SyncGroup(r) => {
            if r.error_code != 0 || r.assignment.is_empty() {
                return fail("want the current assignment".into());
            }
        }
        ResponseKind::Heartbeat(r) => {
            if r.error_code != 0 {
                return fail("want no error".into());
            }
        }
        ResponseKind::LeaveGroup(r) => {
            if r.error_code != 0 || r.members.iter().any(|m| m.error_code != 0) {
                return fail("want the member gone".into());
            }
            if version >= 3 && r.members.len() != 1 {
                return fail("want one member result".into());
            }
        }
        ResponseKind::OffsetCommit(r) => {
            let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
            if p.error_code != 0 {
                return fail("want the commit accepted".into());
            }
        }
        ResponseKind::OffsetFetch(r) => {
            let (code, offset) = if version >= 8 {
                let g = r.groups.first().ok_or("no group")?;
                let p = g.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
                (g.error_code.max(p.error_code), p.committed_offset)
            } else {
                let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
                (r.error_code.max(p.error_code), p.committed_offset)
            };
            if (code, offset) != (0, 1) {
                return fail("want the committed offset 1".into());
            }
        }
        ResponseKind::ListGroups(r) => {
            if r.error_code != 0 || !r.groups.iter().any(|g| g.group_id.0.as_str() == STABLE_GROUP) {
                return fail(format!("want {STABLE_GROUP} listed"));
            }
        }
        ResponseKind::DescribeGroups(r) => {
            let g = r.groups.first().ok_or("no group")?;
            if g.error_code != 0 || g.group_state.as_str() != "Stable" || g.members.len() != 1 {
                return fail("want a stable group with one member".into());
            }
        }
        ResponseKind::DeleteGroups(r) => {
            if r.results.len() != 1 || r.results[0].error_code != 0 {
                return fail("want the group deleted".into());
            }
        }
        ResponseKind::OffsetDelete(r) => {
            let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
            if r.error_code != 0 || p.error_code != 0 {
                return fail("want the offset deleted".into());
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            if r.results.len() != 2 || r.results.iter().any(|c| c.error_code != 0 || c.configs.is_empty()) {
                return fail("want the topic's and the broker's configs".into());
            }
        }
        ResponseKind::AlterConfigs(r) => {
            if r.responses.len() != 1 || r.responses[0].error_code != 0 {
                return fail("want the config altered".into());
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            if r.responses.len() != 1 || r.responses[0].error_code != 0 {
                return fail("want the config altered".into());
            }
        }
        ResponseKind::CreatePartitions(r) => {
            if r.results.len() != 1 || r.results[0].error_code != 0 {
                return fail("want the partition added".into());
            }
        }
        ResponseKind::DeleteRecords(r) => {
            let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
            if (p.error_code, p.low_watermark) != (0, 0) {
                return fail("want low watermark 0".into());
            }
        }
        ResponseKind::DescribeCluster(r) => {
            if r.error_code != 0 || r.brokers.len() != 1 || r.cluster_id.is_empty() {
                return fail("want one broker and a cluster id".into());
            }
        }
        ResponseKind::DescribeLogDirs(r) => {
            if r.error_code != 0 || r.results.is_empty() || r.results.iter().any(|d| d.error_code != 0) {
                return fail("want the data dir".into());
            }
        }
        ResponseKind::DescribeProducers(r) => {
            let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
            if p.error_code != 0 {
                return fail("want partition 0 described".into());
            }
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or("no partition")?;
            if p.error_code != 0 || p.end_offset < 1 {
                return fail("want epoch 0's end offset".into());
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
        stable: None,
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

/// xorshift64*: a fixed seed, so any failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Damages a request body in one to three places: a flipped byte, or an
/// extreme 16-, 32- or 64-bit value written over whatever field is there.
fn mutate(body: &mut [u8], rng: &mut Rng) {
    const EXTREMES: [i64; 6] = [0, -1, i64::MAX, i64::MIN, i32::MAX as i64, i32::MIN as i64];
    for _ in 0..1 + rng.below(3) {
        if body.is_empty() {
            return;
        }
        let at = rng.below(body.len());
        let value = EXTREMES[rng.below(EXTREMES.len())];
        match rng.below(4) {
            0 => body[at] ^= 1 << rng.below(8),
            1 => put(body, at, &(value as i16).to_be_bytes()),
            2 => put(body, at, &(value as i32).to_be_bytes()),
            _ => put(body, at, &value.to_be_bytes()),
        }
    }
}

fn put(body: &mut [u8], at: usize, bytes: &[u8]) {
    let end = (at + bytes.len()).min(body.len());
    body[at..end].copy_from_slice(&bytes[..end - at]);
}

/// Valid requests of every served (API, version) with a few bytes damaged:
/// each gets a response that decodes in its version, or its connection is
/// closed, or it is held (a long poll); never a panic, never harm to a
/// connection that was open all along.
#[test]
fn damaged_minimal_requests_never_hurt_the_broker() {
    const MUTANTS: usize = 12;
    let mut broker = Broker::start(&[]);
    let mut setup = broker.connect();
    let topic = "versions";
    let topic_id = create_topic(&mut setup, topic, 2);
    let mut ctx = Ctx {
        setup,
        topic,
        topic_id,
        stable: None,
    };
    let mut sentinel = broker.connect();
    let mut rng = Rng(0x6d75_7461_6e74_7321);
    let (mut answered, mut closed, mut held) = (0, 0, 0);
    for &(api, min, max) in kascade::kafka::api::SERVED {
        for version in min..=max {
            // The every-version test reports requests this file cannot build.
            let Some(request) = minimal_request(api, version, &mut ctx) else {
                continue;
            };
            let Ok(frame) = try_request_frame(api, version, 1, &request) else {
                continue;
            };
            for _ in 0..MUTANTS {
                let mut body = frame[4..].to_vec();
                let mut tail = body.split_off(8); // keep API key, version and correlation id
                mutate(&mut tail, &mut rng);
                body.extend_from_slice(&tail);
                let mut conn = broker.connect();
                let good = request_frame(
                    ApiKey::ApiVersions,
                    0,
                    2,
                    &RequestKind::ApiVersions(ApiVersionsRequest::default()),
                );
                let mut both = sized(&body);
                both.extend_from_slice(&good);
                conn.send_raw(&both);
                loop {
                    match conn.read_within(std::time::Duration::from_secs(2)) {
                        None => {
                            held += 1;
                            break;
                        }
                        Some(Reply::Closed) => {
                            closed += 1;
                            break;
                        }
                        Some(Reply::Frame(f)) => {
                            let id = i32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                            if id == 2 {
                                answered += 1;
                                break;
                            }
                            if let Err(e) = decode_response(f, api, version, 1) {
                                panic!("{api:?} v{version} answered a damaged request badly: {e}\nrequest: {body:02x?}");
                            }
                        }
                    }
                }
                drop(conn);
                broker.assert_alive(&format!("a damaged {api:?} v{version}: {body:02x?}"));
            }
            if let Err(e) = sentinel.check_healthy() {
                panic!("after damaged {api:?} v{version} requests, the connection open all along broke: {e}");
            }
        }
    }
    eprintln!("damaged requests: {answered} answered, {closed} closed, {held} held");
    broker.drain_logs();
    let errors: Vec<&String> = broker.seen.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "the broker logged errors: {errors:#?}");
    broker.stop();
}
