//! Consumer groups against a real `kascade serve` process: librdkafka
//! (confluent-kafka) for the two-consumer rebalance, raw Kafka requests on
//! real sockets for the protocol's corners.
//!
//! Waits are bounded only by hang guards; no assertion depends on timing.

mod spawn;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

const HANG_GUARD: Duration = Duration::from_secs(60);

// ----- a broker process -----

struct Broker {
    child: Child,
    addr: String,
    /// The log, drained on stop (in a mutex so tests may share the broker across threads).
    log: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Broker {
    /// Starts `kascade serve` on a free port and waits until it is ready.
    fn start(data_dir: &Path) -> Broker {
        Broker::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts `kascade serve` listening on `listen` and waits until it is ready.
    fn start_on(data_dir: &Path, listen: &str) -> Broker {
        let served = spawn::serve(listen, data_dir, &[]);
        let addr = served.kafka_addr();
        Broker {
            child: served.child,
            addr,
            log: std::sync::Mutex::new(served.log),
        }
    }

    /// Stops the broker with SIGTERM and waits for a clean exit.
    fn stop(mut self) {
        spawn::stop(&mut self.child);
        let log = self.log.lock().unwrap();
        while log.try_recv().is_ok() {}
    }

    /// Waits for a log line containing every one of `needles`.
    fn wait_for_log(&self, needles: &[&str]) {
        let log = self.log.lock().unwrap();
        loop {
            match log.recv_timeout(HANG_GUARD) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needles:?}: {e}"),
            }
        }
    }

    fn connect(&self) -> Conn {
        Conn::connect(&self.addr)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- a raw Kafka connection -----

struct Conn {
    stream: TcpStream,
    correlation_id: i32,
}

impl Conn {
    fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        Conn {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends one request and reads its response.
    fn call<R: Request>(&mut self, version: i16, request: R) -> R::Response {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("groups-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .unwrap_or_else(|e| panic!("no response to api {} v{version}: {e}", R::KEY));
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).unwrap();
        let mut buf = Bytes::from(buf);
        let header =
            ResponseHeader::decode(&mut buf, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        R::Response::decode(&mut buf, version).unwrap()
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn create_topic(conn: &mut Conn, name: &str, partitions: i32) {
    let r = conn.call(
        7,
        CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(s(name)))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    );
    assert_eq!(r.topics[0].error_code, 0, "create topic {name}");
}

/// A consumer's subscription metadata naming `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

struct Join<'a> {
    group: &'a str,
    member_id: &'a str,
    instance: Option<&'a str>,
    session_ms: i32,
    rebalance_ms: i32,
    metadata: Bytes,
}

impl<'a> Join<'a> {
    fn new(group: &'a str) -> Join<'a> {
        Join {
            group,
            member_id: "",
            instance: None,
            session_ms: 10_000,
            rebalance_ms: 10_000,
            metadata: Bytes::from_static(b"meta"),
        }
    }

    fn member(mut self, id: &'a str) -> Self {
        self.member_id = id;
        self
    }

    fn instance(mut self, id: &'a str) -> Self {
        self.instance = Some(id);
        self
    }

    fn timeouts(mut self, session_ms: i32, rebalance_ms: i32) -> Self {
        self.session_ms = session_ms;
        self.rebalance_ms = rebalance_ms;
        self
    }

    fn metadata(mut self, metadata: Bytes) -> Self {
        self.metadata = metadata;
        self
    }

    fn send(&self, conn: &mut Conn, version: i16) -> JoinGroupResponse {
        let mut r = JoinGroupRequest::default()
            .with_group_id(gid(self.group))
            .with_session_timeout_ms(self.session_ms)
            .with_member_id(s(self.member_id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(self.metadata.clone())]);
        if version >= 1 {
            r = r.with_rebalance_timeout_ms(self.rebalance_ms);
        }
        if version >= 5 {
            r = r.with_group_instance_id(self.instance.map(s));
        }
        conn.call(version, r)
    }

    /// Joins as a new member, answering MEMBER_ID_REQUIRED the way clients do.
    fn join_new(&self, conn: &mut Conn, version: i16) -> JoinGroupResponse {
        let r = self.send(conn, version);
        if r.error_code != code(ResponseError::MemberIdRequired) {
            return r;
        }
        let id = r.member_id.to_string();
        Join {
            member_id: &id,
            metadata: self.metadata.clone(),
            ..*self
        }
        .send(conn, version)
    }
}

fn sync(
    conn: &mut Conn,
    version: i16,
    group: &str,
    join: &JoinGroupResponse,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let mut r = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(join.generation_id)
        .with_member_id(join.member_id.clone())
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    if version >= 5 {
        r = r
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(join.protocol_name.clone());
    }
    conn.call(version, r)
}

fn heartbeat(conn: &mut Conn, group: &str, member: &str, generation: i32) -> i16 {
    conn.call(
        4,
        HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(member))
            .with_generation_id(generation),
    )
    .error_code
}

fn heartbeat_static(
    conn: &mut Conn,
    group: &str,
    member: &str,
    instance: &str,
    generation: i32,
) -> i16 {
    conn.call(
        4,
        HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(member))
            .with_group_instance_id(Some(s(instance)))
            .with_generation_id(generation),
    )
    .error_code
}

/// Heartbeats until the answer is `want` (a rebalance starting, a member expiring).
fn heartbeat_until(
    conn: &mut Conn,
    group: &str,
    member: &str,
    generation: i32,
    want: ResponseError,
) {
    let start = Instant::now();
    loop {
        let got = heartbeat(conn, group, member, generation);
        if got == code(want) {
            return;
        }
        assert_eq!(got, 0, "unexpected heartbeat error");
        assert!(
            start.elapsed() < HANG_GUARD,
            "heartbeat never answered {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn commit(
    conn: &mut Conn,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64, i32, &str)],
) -> Vec<i16> {
    let partitions = offsets
        .iter()
        .map(|&(p, o, epoch, meta)| {
            let mut part = OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(o)
                .with_committed_metadata(Some(s(meta)));
            if version >= 6 {
                part = part.with_committed_leader_epoch(epoch);
            }
            part
        })
        .collect();
    let mut r = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(partitions)]);
    if version <= 4 {
        r = r.with_retention_time_ms(-1);
    }
    conn.call(version, r).topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// `(partition, offset, leader epoch, metadata)` as OffsetFetch reports them.
fn fetch(
    conn: &mut Conn,
    version: i16,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i32, i64, i32, String)> {
    if version >= 8 {
        let r = conn.call(
            version,
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(partitions.to_vec())]))]),
        );
        assert_eq!(r.groups[0].error_code, 0);
        return r.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| {
                let meta = p.metadata.as_deref().unwrap_or("").to_string();
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    meta,
                )
            })
            .collect();
    }
    let r = conn.call(
        version,
        OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(partitions.to_vec())])),
    );
    assert_eq!(r.error_code, 0);
    r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0);
            let meta = p.metadata.as_deref().unwrap_or("").to_string();
            (
                p.partition_index,
                p.committed_offset,
                p.committed_leader_epoch,
                meta,
            )
        })
        .collect()
}

fn describe(
    conn: &mut Conn,
    version: i16,
    group: &str,
) -> describe_groups_response::DescribedGroup {
    let mut r = conn.call(
        version,
        DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
    );
    r.groups.remove(0)
}

fn list(conn: &mut Conn, version: i16, states: &[&str]) -> Vec<(String, String)> {
    let mut req = ListGroupsRequest::default();
    if version >= 4 {
        req = req.with_states_filter(states.iter().map(|x| s(x)).collect());
    }
    let r = conn.call(version, req);
    assert_eq!(r.error_code, 0);
    r.groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect()
}

// ----- the tests -----

#[test]
fn two_consumers_rebalance_when_one_leaves_and_the_other_resumes_from_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    // Eager (range) and incremental (cooperative-sticky) rebalancing.
    for assignor in ["range", "cooperative-sticky"] {
        let (topic, group) = (format!("handover-{assignor}"), format!("group-{assignor}"));
        let stdout = run_script(
            &broker,
            "kafka_groups_rebalance.py",
            &[&topic, &group, assignor],
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(report["processed"], 400, "{assignor}: {report}");
        assert_eq!(report["c1"], 40, "{assignor}: {report}");
        assert_eq!(report["c2"], 360, "{assignor}: {report}");
        assert_eq!(
            report["c2_final_partitions"],
            serde_json::json!([0, 1, 2, 3]),
            "{assignor}: {report}"
        );
        assert!(
            report["taken_over"].as_u64().unwrap() > 0,
            "{assignor}: {report}"
        );
        // The group's committed offsets are the log ends: 100 records per partition.
        let mut conn = broker.connect();
        let offsets = fetch(&mut conn, 7, &group, &topic, &[0, 1, 2, 3]);
        assert!(offsets.iter().all(|&(_, o, _, _)| o == 100), "{offsets:?}");
    }
    broker.stop();
}

/// Runs one of the confluent-kafka scripts next to this file against `broker`.
fn run_script(broker: &Broker, script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(&path)
        .arg(&broker.addr)
        .args(args)
        .output()
        .expect("python3 with confluent-kafka runs the script");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_admin_client_lists_describes_alters_and_deletes_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let out = run_script(
        &broker,
        "kafka_groups_admin.py",
        &["admin-topic", "admin-group"],
    );
    assert_eq!(out.trim(), "ok");
    broker.stop();
}

#[test]
fn a_consumer_rejoins_after_a_broker_restart_and_resumes_from_its_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let addr = broker.addr.clone();
    let script = format!(
        "{}/tests/kafka_groups_restart.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut consumer = Command::new(python())
        .args([
            script.as_str(),
            addr.as_str(),
            "restart-topic",
            "restart-group",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with confluent-kafka runs the consumer");
    let mut lines = BufReader::new(consumer.stdout.take().expect("stdout piped")).lines();
    let paused = lines.next().expect("the consumer reports").expect("utf-8");
    assert_eq!(paused, "paused", "the consumer failed before the restart");
    // Membership is in memory: the restarted broker knows no members, so the
    // consumer must rejoin; its offsets come back from the engine.
    broker.stop();
    let broker = Broker::start_on(dir.path(), &addr);
    let mut stdin = consumer.stdin.take().expect("stdin piped");
    writeln!(stdin, "restarted").unwrap();
    let report = lines.next().expect("the consumer reports").expect("utf-8");
    assert!(consumer.wait().unwrap().success(), "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("one JSON line");
    assert_eq!(report["processed"], 100, "{report}");
    // The restarted broker formed a new generation for the rejoined consumer.
    broker.wait_for_log(&["join phase complete", "group=restart-group"]);
    broker.stop();
}

#[test]
fn a_first_join_without_a_member_id_gets_member_id_required_then_joins() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    for version in [4, 9] {
        let group = format!("mid-{version}");
        let first = Join::new(&group).send(&mut conn, version);
        assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
        assert!(!first.member_id.is_empty(), "the member id comes back");
        let id = first.member_id.to_string();
        let joined = Join::new(&group).member(&id).send(&mut conn, version);
        assert_eq!(joined.error_code, 0);
        assert_eq!(
            (joined.generation_id, &*joined.leader, &*joined.member_id),
            (1, &*id, &*id)
        );
        assert_eq!(joined.members.len(), 1);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        let synced = sync(&mut conn, 5, &group, &joined, &[(&id, b"mine")]);
        assert_eq!(
            (synced.error_code, &synced.assignment[..]),
            (0, &b"mine"[..])
        );
        assert_eq!(heartbeat(&mut conn, &group, &id, 1), 0);
    }
    // Before v4 a first join gets its member id at once.
    let old = Join::new("mid-old").send(&mut conn, 3);
    assert_eq!((old.error_code, old.generation_id), (0, 1));
    assert!(!old.member_id.is_empty());
    broker.stop();
}

#[test]
fn a_static_member_that_rejoins_replaces_its_old_id_which_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    let group = "static";
    // Static members get their id without MEMBER_ID_REQUIRED.
    let first = Join::new(group).instance("pod-1").send(&mut conn, 5);
    assert_eq!((first.error_code, first.generation_id), (0, 1));
    let old_id = first.member_id.to_string();
    assert_eq!(&*first.leader, old_id.as_str());
    assert_eq!(first.members[0].group_instance_id.as_deref(), Some("pod-1"));
    let synced = sync(&mut conn, 5, group, &first, &[(&old_id, b"p0,p1")]);
    assert_eq!(synced.error_code, 0);

    // The process restarts: same instance id, no member id.
    let again = Join::new(group).instance("pod-1").send(&mut conn, 5);
    assert_eq!(again.error_code, 0);
    let new_id = again.member_id.to_string();
    assert_ne!(new_id, old_id);
    // No rebalance: same generation, and (before v9) the old leader id, so
    // the rejoined leader does not compute an assignment nobody would get.
    assert_eq!(again.generation_id, 1);
    assert_eq!(&*again.leader, old_id.as_str());
    let resynced = sync(&mut conn, 5, group, &again, &[]);
    assert_eq!(
        (resynced.error_code, &resynced.assignment[..]),
        (0, &b"p0,p1"[..])
    );

    // Whoever still uses the old id is fenced.
    assert_eq!(
        heartbeat_static(&mut conn, group, &old_id, "pod-1", 1),
        code(ResponseError::FencedInstanceId)
    );
    assert_eq!(heartbeat_static(&mut conn, group, &new_id, "pod-1", 1), 0);
    let fenced = Join::new(group)
        .member(&old_id)
        .instance("pod-1")
        .send(&mut conn, 5);
    assert_eq!(fenced.error_code, code(ResponseError::FencedInstanceId));

    // JoinGroup v9: the rejoining static leader is told to skip the assignment.
    let v9 = Join::new(group).instance("pod-1").send(&mut conn, 9);
    assert_eq!(v9.error_code, 0);
    assert!(v9.skip_assignment);
    assert_eq!(v9.leader, v9.member_id);
    assert_eq!(v9.generation_id, 1);
    let described = describe(&mut conn, 5, group);
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id, v9.member_id);
    assert_eq!(
        described.members[0].group_instance_id.as_deref(),
        Some("pod-1")
    );
    broker.stop();
}

#[test]
fn a_member_without_heartbeats_expires_and_the_others_rebalance_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let group = "expiry";
    // Two members join one generation (the second join waits for the first to rejoin).
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            let mut conn = broker.connect();
            let mut j = Join::new(group)
                .timeouts(10_000, 5_000)
                .join_new(&mut conn, 5);
            // The first member may complete a generation alone, then rejoin for the second.
            while j.members.len() != 2 && j.leader == j.member_id {
                let id = j.member_id.to_string();
                let synced = sync(&mut conn, 5, group, &j, &[]);
                if synced.error_code == 0 {
                    heartbeat_until(
                        &mut conn,
                        group,
                        &id,
                        j.generation_id,
                        ResponseError::RebalanceInProgress,
                    );
                }
                j = Join::new(group)
                    .member(&id)
                    .timeouts(10_000, 5_000)
                    .send(&mut conn, 5);
            }
            (conn, j)
        });
        std::thread::sleep(Duration::from_millis(200));
        // B has a short session: it is the one that goes silent.
        let b = scope.spawn(|| {
            let mut conn = broker.connect();
            let j = Join::new(group)
                .timeouts(1_500, 5_000)
                .join_new(&mut conn, 5);
            (conn, j)
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let ((mut conn_a, join_a), (mut conn_b, join_b)) = (a, b);
    assert_eq!(join_a.generation_id, join_b.generation_id);
    let (leader, follower) = if join_a.leader == join_a.member_id {
        ((&mut conn_a, &join_a), (&mut conn_b, &join_b))
    } else {
        ((&mut conn_b, &join_b), (&mut conn_a, &join_a))
    };
    assert_eq!(leader.1.members.len(), 2);
    let generation = leader.1.generation_id;
    let (leader_id, follower_id) = (
        leader.1.member_id.to_string(),
        follower.1.member_id.to_string(),
    );
    std::thread::scope(|scope| {
        let f = scope.spawn(|| sync(follower.0, 5, group, follower.1, &[]));
        let l = sync(
            leader.0,
            5,
            group,
            leader.1,
            &[(&leader_id, b"L"), (&follower_id, b"F")],
        );
        assert_eq!((l.error_code, &l.assignment[..]), (0, &b"L"[..]));
        let f = f.join().unwrap();
        assert_eq!(
            (f.error_code, &f.assignment[..]),
            (0, &b"F"[..]),
            "the follower waited for the leader's assignment"
        );
    });
    // The follower goes silent; the leader keeps heartbeating until the group rebalances.
    heartbeat_until(
        leader.0,
        group,
        &leader_id,
        generation,
        ResponseError::RebalanceInProgress,
    );
    let rejoined = Join::new(group)
        .member(&leader_id)
        .timeouts(10_000, 5_000)
        .send(leader.0, 5);
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(rejoined.members.len(), 1, "the silent member is gone");
    assert_eq!(
        heartbeat(follower.0, group, &follower_id, generation),
        code(ResponseError::UnknownMemberId)
    );
    // Generation fencing: the old generation is refused.
    let stale = sync(leader.0, 5, group, leader.1, &[]);
    assert_eq!(stale.error_code, code(ResponseError::IllegalGeneration));
    assert_eq!(
        heartbeat(leader.0, group, &leader_id, generation),
        code(ResponseError::IllegalGeneration)
    );
    broker.stop();
}

#[test]
fn a_rebalance_completes_at_its_timeout_without_the_member_that_did_not_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut admin = broker.connect();
    create_topic(&mut admin, "fenced", 1);
    let group = "slow-rejoin";
    let mut conn_a = broker.connect();
    // A alone, stable.
    let a = Join::new(group)
        .timeouts(30_000, 4_000)
        .join_new(&mut conn_a, 5);
    let a_id = a.member_id.to_string();
    assert_eq!(
        sync(&mut conn_a, 5, group, &a, &[(&a_id, b"all")]).error_code,
        0
    );
    // B joins: a rebalance starts; A does not rejoin (its session is long).
    let b = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let mut conn = broker.connect();
            let j = Join::new(group)
                .timeouts(30_000, 4_000)
                .join_new(&mut conn, 5);
            (conn, j)
        });
        // During the rebalance A may still commit with its generation.
        heartbeat_until(
            &mut conn_a,
            group,
            &a_id,
            a.generation_id,
            ResponseError::RebalanceInProgress,
        );
        assert_eq!(
            commit(
                &mut conn_a,
                8,
                group,
                &a_id,
                a.generation_id,
                "fenced",
                &[(0, 5, 0, "")]
            ),
            vec![0]
        );
        waiting.join().unwrap()
    });
    let (mut conn_b, b) = b;
    assert_eq!(b.error_code, 0);
    assert_eq!(b.generation_id, a.generation_id + 1);
    assert_eq!(b.leader, b.member_id, "the member that rejoined leads");
    assert_eq!(
        b.members.len(),
        1,
        "the member that did not rejoin was removed"
    );
    // A is out; the group is between join and sync, where commits wait for the assignment.
    assert_eq!(
        heartbeat(&mut conn_a, group, &a_id, a.generation_id),
        code(ResponseError::UnknownMemberId)
    );
    let b_id = b.member_id.to_string();
    assert_eq!(
        commit(
            &mut conn_b,
            8,
            group,
            &b_id,
            b.generation_id,
            "fenced",
            &[(0, 6, 0, "")]
        ),
        vec![code(ResponseError::RebalanceInProgress)]
    );
    assert_eq!(
        commit(
            &mut conn_a,
            8,
            group,
            &a_id,
            a.generation_id,
            "fenced",
            &[(0, 7, 0, "")]
        ),
        vec![code(ResponseError::UnknownMemberId)]
    );
    assert_eq!(
        sync(&mut conn_b, 5, group, &b, &[(&b_id, b"all")]).error_code,
        0
    );
    assert_eq!(
        commit(
            &mut conn_b,
            8,
            group,
            &b_id,
            b.generation_id,
            "fenced",
            &[(0, 8, 0, "")]
        ),
        vec![0]
    );
    assert_eq!(
        commit(
            &mut conn_b,
            8,
            group,
            &b_id,
            a.generation_id,
            "fenced",
            &[(0, 9, 0, "")]
        ),
        vec![code(ResponseError::IllegalGeneration)]
    );
    // A simple consumer (generation -1) may not commit into a live group.
    assert_eq!(
        commit(&mut conn_b, 8, group, "", -1, "fenced", &[(0, 10, 0, "")]),
        vec![code(ResponseError::UnknownMemberId)]
    );
    assert_eq!(fetch(&mut conn_b, 8, group, "fenced", &[0])[0].1, 8);
    broker.stop();
}

#[test]
fn several_members_leave_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let group = "exodus";
    // Three static members join one generation.
    let joined: Vec<(Conn, JoinGroupResponse)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["m1", "m2", "m3"]
            .into_iter()
            .map(|instance| {
                let broker = &broker;
                scope.spawn(move || {
                    let mut conn = broker.connect();
                    let mut j = Join::new(group)
                        .instance(instance)
                        .timeouts(30_000, 20_000)
                        .send(&mut conn, 5);
                    // Early joiners may finish a smaller generation first; rejoin until all three are in.
                    loop {
                        assert_eq!(j.error_code, 0);
                        let id = j.member_id.to_string();
                        let synced = sync(&mut conn, 5, group, &j, &[]);
                        if synced.error_code == 0 {
                            let described = describe(&mut conn, 5, group);
                            if described.members.len() == 3 && &*described.group_state == "Stable" {
                                return (conn, j);
                            }
                            heartbeat_until(
                                &mut conn,
                                group,
                                &id,
                                j.generation_id,
                                ResponseError::RebalanceInProgress,
                            );
                        }
                        j = Join::new(group)
                            .member(&id)
                            .instance(instance)
                            .timeouts(30_000, 20_000)
                            .send(&mut conn, 5);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let generation = joined[0].1.generation_id;
    assert!(joined.iter().all(|(_, j)| j.generation_id == generation));
    let ids: Vec<String> = joined
        .iter()
        .map(|(_, j)| j.member_id.to_string())
        .collect();
    let mut conn = broker.connect();
    let left = conn.call(
        5,
        LeaveGroupRequest::default()
            .with_group_id(gid(group))
            .with_members(vec![
                MemberIdentity::default()
                    .with_member_id(s(&ids[0]))
                    .with_group_instance_id(Some(s("m1"))),
                // By instance id alone, as an admin removing a static member does.
                MemberIdentity::default().with_group_instance_id(Some(s("m2"))),
                MemberIdentity::default().with_member_id(s("nobody")),
            ]),
    );
    assert_eq!(left.error_code, 0);
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, 0, code(ResponseError::UnknownMemberId)]);
    // The one left rebalances alone.
    let (mut conn3, _) = joined.into_iter().nth(2).unwrap();
    heartbeat_until(
        &mut conn3,
        group,
        &ids[2],
        generation,
        ResponseError::RebalanceInProgress,
    );
    let alone = Join::new(group)
        .member(&ids[2])
        .instance("m3")
        .send(&mut conn3, 5);
    assert_eq!((alone.error_code, alone.members.len()), (0, 1));
    assert_eq!(alone.generation_id, generation + 1);
    // LeaveGroup v0: the last member leaves; a group left with neither
    // members nor offsets is forgotten (Kafka drops it at its next cleanup).
    let last = conn.call(
        0,
        LeaveGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(&ids[2])),
    );
    assert_eq!(last.error_code, 0);
    assert_eq!(&*describe(&mut conn, 5, group).group_state, "Dead");
    assert!(list(&mut conn, 5, &[]).is_empty());
    broker.stop();
}

#[test]
fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    create_topic(&mut conn, "durable", 3);
    // A group id that is no valid key segment as it is.
    let group = "team/a b%c/../é";
    let errors = commit(
        &mut conn,
        9,
        group,
        "",
        -1,
        "durable",
        &[(0, 11, 3, "first"), (2, 33, 4, "")],
    );
    assert_eq!(errors, vec![0, 0]);
    // An unknown partition is refused, the rest of the request is not.
    assert_eq!(
        commit(
            &mut conn,
            9,
            group,
            "",
            -1,
            "durable",
            &[(1, 22, 5, "second"), (7, 1, 0, "")]
        ),
        vec![0, code(ResponseError::UnknownTopicOrPartition)]
    );
    broker.stop();

    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    let want = vec![
        (0, 11, 3, "first".to_string()),
        (1, 22, 5, "second".to_string()),
        (2, 33, 4, String::new()),
    ];
    assert_eq!(fetch(&mut conn, 9, group, "durable", &[0, 1, 2]), want);
    // Before v5 there is no leader epoch; -1 comes back as the decoder's default.
    let v4 = fetch(&mut conn, 4, group, "durable", &[0, 1, 2]);
    assert_eq!(
        v4.iter()
            .map(|p| (p.0, p.1, p.3.clone()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|p| (p.0, p.1, p.3.clone()))
            .collect::<Vec<_>>()
    );
    assert!(list(&mut conn, 4, &[]).contains(&(group.to_string(), "Empty".to_string())));
    broker.stop();
}

#[test]
fn list_describe_delete_groups_and_offset_delete() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    create_topic(&mut conn, "ledger", 2);
    create_topic(&mut conn, "other", 1);
    // A simple consumer's group: offsets only.
    let simple = "simple:group";
    assert_eq!(
        commit(
            &mut conn,
            7,
            simple,
            "",
            -1,
            "ledger",
            &[(0, 4, 0, "m0"), (1, 5, 0, "m1")]
        ),
        vec![0, 0]
    );
    // A live consumer group subscribed to "ledger".
    let live = "live";
    let j = Join::new(live)
        .metadata(subscription(&["ledger"]))
        .join_new(&mut conn, 7);
    let id = j.member_id.to_string();
    assert_eq!(sync(&mut conn, 5, live, &j, &[(&id, b"a")]).error_code, 0);
    assert_eq!(
        commit(
            &mut conn,
            8,
            live,
            &id,
            j.generation_id,
            "ledger",
            &[(0, 1, 0, "")]
        ),
        vec![0]
    );
    assert_eq!(
        commit(
            &mut conn,
            8,
            live,
            &id,
            j.generation_id,
            "other",
            &[(0, 2, 0, "")]
        ),
        vec![0]
    );

    let all = list(&mut conn, 5, &[]);
    assert_eq!(
        all,
        vec![
            (live.to_string(), "Stable".to_string()),
            (simple.to_string(), "Empty".to_string())
        ]
    );
    assert_eq!(
        list(&mut conn, 4, &["empty"]),
        vec![(simple.to_string(), "Empty".to_string())]
    );
    assert_eq!(list(&mut conn, 0, &[]).len(), 2);

    let described = describe(&mut conn, 5, live);
    assert_eq!(
        (described.error_code, &*described.group_state),
        (0, "Stable")
    );
    assert_eq!(
        (&*described.protocol_type, &*described.protocol_data),
        ("consumer", "range")
    );
    assert_eq!(described.members.len(), 1);
    assert_eq!(&described.members[0].client_id, "groups-test");
    assert_eq!(&described.members[0].client_host, "/127.0.0.1");
    assert_eq!(&described.members[0].member_assignment[..], b"a");
    let empty = describe(&mut conn, 6, simple);
    assert_eq!(
        (empty.error_code, &*empty.group_state, empty.members.len()),
        (0, "Empty", 0)
    );

    // OffsetDelete: a live group keeps offsets of topics it consumes.
    let deleted = conn.call(
        0,
        OffsetDeleteRequest::default()
            .with_group_id(gid(live))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("ledger")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ]),
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("other")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ]),
            ]),
    );
    assert_eq!(deleted.error_code, 0);
    assert_eq!(
        deleted.topics[0].partitions[0].error_code,
        code(ResponseError::GroupSubscribedToTopic)
    );
    assert_eq!(deleted.topics[1].partitions[0].error_code, 0);
    assert_eq!(fetch(&mut conn, 8, live, "other", &[0])[0].1, -1);
    assert_eq!(fetch(&mut conn, 8, live, "ledger", &[0])[0].1, 1);
    // An empty group may lose any offset.
    let deleted = conn.call(
        0,
        OffsetDeleteRequest::default()
            .with_group_id(gid(simple))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("ledger")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(1)
                ])]),
    );
    assert_eq!(
        (
            deleted.error_code,
            deleted.topics[0].partitions[0].error_code
        ),
        (0, 0)
    );
    assert_eq!(
        fetch(&mut conn, 7, simple, "ledger", &[0, 1]),
        vec![(0, 4, 0, "m0".to_string()), (1, -1, -1, String::new())]
    );
    let unknown = conn.call(0, OffsetDeleteRequest::default().with_group_id(gid("nope")));
    assert_eq!(unknown.error_code, code(ResponseError::GroupIdNotFound));

    // DeleteGroups: only empty groups go.
    let r = conn.call(
        2,
        DeleteGroupsRequest::default().with_groups_names(vec![gid(simple), gid(live), gid("nope")]),
    );
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![
            0,
            code(ResponseError::NonEmptyGroup),
            code(ResponseError::GroupIdNotFound)
        ]
    );
    assert_eq!(
        fetch(&mut conn, 7, simple, "ledger", &[0])[0].1,
        -1,
        "offsets went with the group"
    );
    assert_eq!(&*describe(&mut conn, 5, simple).group_state, "Dead");
    let gone = describe(&mut conn, 6, simple);
    assert_eq!(gone.error_code, code(ResponseError::GroupIdNotFound));
    assert_eq!(
        list(&mut conn, 5, &[]),
        vec![(live.to_string(), "Stable".to_string())]
    );

    // The live group's member leaves: the group is empty, keeps its offsets, and can be deleted.
    let left = conn.call(
        3,
        LeaveGroupRequest::default()
            .with_group_id(gid(live))
            .with_members(vec![MemberIdentity::default().with_member_id(s(&id))]),
    );
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(
        list(&mut conn, 4, &["Empty"]),
        vec![(live.to_string(), "Empty".to_string())]
    );
    assert_eq!(fetch(&mut conn, 8, live, "ledger", &[0])[0].1, 1);
    let r = conn.call(
        2,
        DeleteGroupsRequest::default().with_groups_names(vec![gid(live)]),
    );
    assert_eq!(r.results[0].error_code, 0);
    assert!(list(&mut conn, 5, &[]).is_empty());
    broker.stop();
}

#[test]
fn every_version_of_every_group_api_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut conn = broker.connect();
    create_topic(&mut conn, "versions", 1);

    for v in 0..=6 {
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req = req.with_coordinator_keys(vec![s("g1"), s("g2")]);
        } else {
            req = req.with_key(s("g1"));
        }
        let r = conn.call(v, req.clone());
        if v >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            assert!(
                r.coordinators
                    .iter()
                    .all(|c| c.error_code == 0 && c.port > 0),
                "v{v}"
            );
        } else {
            assert_eq!((r.error_code, r.node_id.0), (0, 0), "v{v}");
            assert!(r.port > 0);
        }
        if v >= 1 {
            let txn = conn.call(v, req.with_key_type(1));
            let code_ = if v >= 4 {
                txn.coordinators[0].error_code
            } else {
                txn.error_code
            };
            assert_eq!(code_, code(ResponseError::CoordinatorNotAvailable), "v{v}");
        }
    }

    for v in 0..=9i16 {
        let group = format!("v{v}");
        let j = Join::new(&group).join_new(&mut conn, v);
        assert_eq!((j.error_code, j.generation_id), (0, 1), "JoinGroup v{v}");
        let id = j.member_id.to_string();
        let sv = v.min(5);
        let synced = sync(&mut conn, sv, &group, &j, &[(&id, b"x")]);
        assert_eq!(
            (synced.error_code, &synced.assignment[..]),
            (0, &b"x"[..]),
            "SyncGroup v{sv}"
        );
        let hv = v.min(4);
        let hb = conn.call(
            hv,
            HeartbeatRequest::default()
                .with_group_id(gid(&group))
                .with_member_id(s(&id))
                .with_generation_id(1),
        );
        assert_eq!(hb.error_code, 0, "Heartbeat v{hv}");
        let cv = v.clamp(2, 9);
        assert_eq!(
            commit(
                &mut conn,
                cv,
                &group,
                &id,
                1,
                "versions",
                &[(0, i64::from(v), 2, "m")]
            ),
            vec![0],
            "OffsetCommit v{cv}"
        );
        let fv = v.clamp(1, 9);
        let got = fetch(&mut conn, fv, &group, "versions", &[0]);
        assert_eq!(
            (got[0].1, &*got[0].3),
            (i64::from(v), "m"),
            "OffsetFetch v{fv}"
        );
        let dv = v.min(6);
        let d = describe(&mut conn, dv, &group);
        assert_eq!(
            (d.error_code, &*d.group_state),
            (0, "Stable"),
            "DescribeGroups v{dv}"
        );
        let lv = v.min(5);
        assert!(
            list(&mut conn, lv, &[]).iter().any(|(g, _)| *g == group),
            "ListGroups v{lv}"
        );
        let leave_v = v.min(5);
        let req = if leave_v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&id))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_member_id(s(&id))
        };
        let left = conn.call(leave_v, req);
        assert_eq!(left.error_code, 0, "LeaveGroup v{leave_v}");
        let del_v = v.min(2);
        let r = conn.call(
            del_v,
            DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]),
        );
        assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{del_v}");
    }
    // Error answers in every version: an empty group id, an unknown group.
    for v in 1..=9 {
        let r = if v >= 8 {
            conn.call(
                v,
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default().with_group_id(gid(""))
                ]),
            )
            .groups[0]
                .error_code
        } else {
            let r = conn.call(
                v,
                OffsetFetchRequest::default()
                    .with_group_id(gid(""))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("versions")))
                        .with_partition_indexes(vec![0])])),
            );
            if v >= 2 {
                r.error_code
            } else {
                r.topics[0].partitions[0].error_code
            }
        };
        assert_eq!(r, code(ResponseError::InvalidGroupId), "OffsetFetch v{v}");
    }
    for v in 2..=9 {
        assert_eq!(
            commit(&mut conn, v, "", "", -1, "versions", &[(0, 1, 0, "")]),
            vec![code(ResponseError::InvalidGroupId)],
            "OffsetCommit v{v}"
        );
    }
    for v in 0..=6 {
        let d = describe(&mut conn, v, "");
        assert_eq!(
            d.error_code,
            code(ResponseError::InvalidGroupId),
            "DescribeGroups v{v}"
        );
    }
    for v in 0..=4 {
        let hb = conn.call(
            v,
            HeartbeatRequest::default()
                .with_group_id(gid("unknown"))
                .with_member_id(s("m"))
                .with_generation_id(1),
        );
        assert_eq!(
            hb.error_code,
            code(ResponseError::UnknownMemberId),
            "Heartbeat v{v}"
        );
    }
    for v in 0..=5 {
        let r = conn.call(
            v,
            SyncGroupRequest::default()
                .with_group_id(gid("unknown"))
                .with_member_id(s("m"))
                .with_generation_id(1),
        );
        assert_eq!(
            r.error_code,
            code(ResponseError::UnknownMemberId),
            "SyncGroup v{v}"
        );
        let req = LeaveGroupRequest::default().with_group_id(gid("unknown"));
        let left = if v >= 3 {
            conn.call(
                v,
                req.with_members(vec![MemberIdentity::default().with_member_id(s("m"))]),
            )
            .members[0]
                .error_code
        } else {
            conn.call(v, req.with_member_id(s("m"))).error_code
        };
        assert_eq!(
            left,
            code(ResponseError::UnknownMemberId),
            "LeaveGroup v{v}"
        );
    }
    for v in 0..=9 {
        let j = Join::new("unknown").member("m").send(&mut conn, v);
        assert_eq!(
            j.error_code,
            code(ResponseError::UnknownMemberId),
            "JoinGroup v{v}"
        );
    }
    for v in 0..=2 {
        let r = conn.call(
            v,
            DeleteGroupsRequest::default().with_groups_names(vec![gid("unknown")]),
        );
        assert_eq!(
            r.results[0].error_code,
            code(ResponseError::GroupIdNotFound),
            "DeleteGroups v{v}"
        );
    }
    // Errors that answer with a group id the engine could not store.
    let too_long = "g".repeat(2000);
    let j = Join::new(&too_long).send(&mut conn, 5);
    assert_eq!(j.error_code, code(ResponseError::InvalidGroupId));
    let j = Join::new("").send(&mut conn, 0);
    assert_eq!(j.error_code, code(ResponseError::InvalidGroupId));
    let r = Join::new("short").timeouts(10, 10).send(&mut conn, 5);
    assert_eq!(r.error_code, code(ResponseError::InvalidSessionTimeout));
    broker.stop();
}

/// The Python with the Kafka clients: the test command's venv (`KASCADE_PYTHON`), else `python3`.
fn python() -> String {
    std::env::var("KASCADE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}
