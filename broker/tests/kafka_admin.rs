//! The Kafka admin APIs against a real `kascade serve` process: the
//! confluent-kafka AdminClient (kafka_admin.py, librdkafka underneath) for
//! what it covers, raw kafka-protocol requests on a socket for the rest and
//! for every version of every admin API.

mod spawn;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

/// A broker process on a temp data dir, stopped (SIGTERM) on drop.
struct Broker {
    child: Child,
    addr: String,
    _log: mpsc::Receiver<String>,
}

impl Broker {
    /// Starts `kascade serve` on a free port and waits until it is ready.
    fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Starts `kascade serve` listening on `listen` and waits until it is ready.
    fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Broker {
        let served = spawn::serve(listen, data_dir, extra);
        let addr = served.kafka_addr();
        Broker {
            child: served.child,
            addr,
            _log: served.log,
        }
    }

    /// Stops the broker cleanly and waits for it to exit.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        spawn::stop(&mut self.child);
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr)
    }

    /// Runs a scenario of kafka_admin.py against this broker.
    fn python(&self, scenario: &str, data_dir: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_admin.py");
        let out = Command::new(python())
            .arg(script)
            .args([&self.addr, scenario])
            .arg(absolute(data_dir))
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "scenario {scenario} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).expect("absolute path")
}

/// A raw Kafka connection speaking kafka-protocol's messages.
struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `request` at `version` and reads its response.
    fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        self.correlation_id += 1;
        let api_key = ApiKey::try_from(R::KEY).expect("known API");
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("kafka-admin-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api_key.request_header_version(version))
            .expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).expect("send request");
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version}: no response: {e}"));
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).expect("read response");
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(
            &mut buf,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .expect("decode response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        <R::Response as Decodable>::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version}: undecodable response: {e}"))
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let response = self.call(7, &request);
        assert_eq!(response.topics[0].error_code, 0, "{response:?}");
    }

    /// Appends one batch of `values` to partition `p`; returns its base offset.
    fn produce(
        &mut self,
        name: &str,
        p: i32,
        values: &[&[u8]],
        producer: Option<(i64, i16, i32)>,
    ) -> i64 {
        let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if base_sequence < 0 {
                    -1
                } else {
                    base_sequence + i as i32
                },
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v)),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode batch");
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic(name))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(batch.freeze())),
                ])]);
        let response = self.call(9, &request);
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "{partition:?}");
        partition.base_offset
    }

    /// The log start and end of a partition, from ListOffsets.
    fn offsets(&mut self, name: &str, p: i32) -> (i64, i64) {
        let query = |timestamp| {
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp),
                    ])])
        };
        let earliest = self.call(7, &query(-2));
        let latest = self.call(7, &query(-1));
        (
            earliest.topics[0].partitions[0].offset,
            latest.topics[0].partitions[0].offset,
        )
    }

    /// Fetches partition `p` from `offset`: the error code and the bytes returned.
    fn fetch(&mut self, name: &str, p: i32, offset: i64) -> (i16, usize) {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic(name))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let response = self.call(12, &request);
        let data = &response.responses[0].partitions[0];
        (
            data.error_code,
            data.records.as_ref().map_or(0, |r| r.len()),
        )
    }

    fn incremental_alter(&mut self, name: &str, key: &str, value: Option<&str>) -> i16 {
        let operation = if value.is_some() { 0 } else { 1 };
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str(name))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(str(key))
                        .with_config_operation(operation)
                        .with_value(value.map(str)),
                ]),
        ]);
        self.call(1, &request).responses[0].error_code
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic(s: &str) -> TopicName {
    TopicName(str(s))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

#[test]
fn admin_client_describes_and_alters_topic_and_broker_configs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &["--num-partitions", "3"]);
    broker.python("configs", dir.path());
}

#[test]
fn admin_client_creates_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.python("partitions", dir.path());
}

#[test]
fn admin_client_describes_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.python("describe_cluster", dir.path());

    // A request for the controllers' endpoints is answered with an error, not a closed connection.
    let mut client = broker.client();
    let metadata = client.call(12, &MetadataRequest::default().with_topics(None));
    for v in 0..=2 {
        let response = client.call(
            v,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        );
        assert_eq!(response.error_code, 0);
        assert_eq!(Some(&response.cluster_id), metadata.cluster_id.as_ref());
        assert_eq!(response.controller_id, BrokerId(0));
        let b = &response.brokers[..];
        assert_eq!(b.len(), 1);
        assert_eq!(
            (b[0].broker_id, format!("{}:{}", b[0].host, b[0].port)),
            (BrokerId(0), broker.addr.clone())
        );
        // No ACLs: every cluster operation (ALTER=7, DESCRIBE=8, ...) is allowed.
        assert_ne!(response.cluster_authorized_operations & (1 << 7), 0);
        assert_ne!(response.cluster_authorized_operations & (1 << 8), 0);
    }
    let response = client.call(1, &DescribeClusterRequest::default().with_endpoint_type(2));
    assert_eq!(
        response.error_code,
        code(ResponseError::UnsupportedEndpointType)
    );
    assert_eq!(response.endpoint_type, 2);
    let response = client.call(2, &DescribeClusterRequest::default());
    assert_eq!(response.error_code, 0);
    assert_eq!(response.brokers.len(), 1);
    assert!(!response.brokers[0].is_fenced);
    assert_eq!(response.cluster_authorized_operations, i32::MIN);
}

#[test]
fn topic_config_changes_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.python("effects", dir.path());
}

#[test]
fn segment_bytes_change_rolls_the_topics_log_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    client.create_topic("segments", 1);
    let pool_dir = dir.path().join("pools").join("%2Fcms%2Ftopics%2Fsegments");
    let segments = || count_files(&pool_dir, "log");
    let chunk = vec![7u8; 100 << 10];
    let write_mib = |client: &mut Client, mib: usize| {
        for _ in 0..mib * 10 {
            client.produce("segments", 0, &[&chunk], None);
        }
    };
    write_mib(&mut client, 2);
    let before = segments();
    assert!(
        before >= 1,
        "the topic's pool has a log: {}",
        pool_dir.display()
    );

    assert_eq!(
        client.incremental_alter("segments", "segment.bytes", Some("1048576")),
        0
    );
    write_mib(&mut client, 3);
    let after = segments();
    assert!(
        after >= before + 2,
        "3 MiB in 1 MiB segments rolled the log at least twice: {before} -> {after} segments"
    );
}

fn count_files(dir: &Path, ext: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path, ext)
            } else {
                usize::from(path.extension().is_some_and(|x| x == ext))
            }
        })
        .sum()
}

#[test]
fn delete_records_moves_the_log_start_for_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.python("delete_records", dir.path());

    // kafka_admin.py wrote offsets 0-9 and deleted up to 4.
    let mut client = broker.client();
    assert_eq!(client.offsets("trimmed", 0), (4, 10));
    assert_eq!(
        client.fetch("trimmed", 0, 3).0,
        code(ResponseError::OffsetOutOfRange)
    );
    let (error, bytes) = client.fetch("trimmed", 0, 4);
    assert_eq!(error, 0);
    assert!(bytes > 0, "offset 4 is still readable");

    let delete = |client: &mut Client, name: &str, p: i32, offset: i64| {
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic(name))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(p)
                        .with_offset(offset),
                ])]);
        let response = client.call(2, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    // Deleting below the log start changes nothing.
    assert_eq!(delete(&mut client, "trimmed", 0, 2), (0, 4));
    assert_eq!(
        delete(&mut client, "trimmed", 0, 11),
        (code(ResponseError::OffsetOutOfRange), -1)
    );
    assert_eq!(
        delete(&mut client, "trimmed", 0, -7),
        (code(ResponseError::OffsetOutOfRange), -1)
    );
    // -1 deletes up to the high watermark.
    assert_eq!(delete(&mut client, "trimmed", 0, -1), (0, 10));
    assert_eq!(client.offsets("trimmed", 0), (10, 10));
    assert_eq!(
        client.fetch("trimmed", 0, 9).0,
        code(ResponseError::OffsetOutOfRange)
    );
    assert_eq!(client.fetch("trimmed", 0, 10), (0, 0));
    assert_eq!(
        delete(&mut client, "trimmed", 1, 0),
        (code(ResponseError::UnknownTopicOrPartition), -1)
    );
    assert_eq!(
        delete(&mut client, "nope", 0, 0),
        (code(ResponseError::UnknownTopicOrPartition), -1)
    );
    // New records continue the log after the deleted ones.
    assert_eq!(client.produce("trimmed", 0, &[b"after"], None), 10);

    // The trim is durable: it holds after a restart.
    drop(client);
    broker.stop();
    let broker = Broker::start(dir.path(), &[]);
    assert_eq!(broker.client().offsets("trimmed", 0), (10, 11));
}

#[test]
fn describe_log_dirs_reports_the_data_dir_and_partition_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    client.create_topic("sized", 2);
    client.create_topic("empty", 1);
    for i in 0..5 {
        let value = vec![b'v'; 1000 * (i + 1)];
        client.produce("sized", 1, &[&value, b"second record"], None);
    }
    // The stored batches, as one fetch from the start returns them all.
    let (error, all) = client.fetch("sized", 1, 0);
    assert_eq!(error, 0);
    let expected = all as i64;
    assert!(expected > 15_000, "{expected}");

    let data_dir = absolute(dir.path()).display().to_string();
    for version in 1..=4 {
        let all = client.call(
            version,
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        assert_eq!(all.results.len(), 1);
        let result = &all.results[0];
        assert_eq!(result.error_code, 0);
        assert_eq!(result.log_dir.as_str(), data_dir);
        if version >= 4 {
            assert!(
                result.total_bytes > 0 && (0..=result.total_bytes).contains(&result.usable_bytes),
                "v{version}: volume of {} / {} bytes",
                result.usable_bytes,
                result.total_bytes
            );
        }
        let mut seen: Vec<(String, i32, i64)> = result
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.partition_index, p.partition_size))
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("empty".to_string(), 0, 0),
                ("sized".to_string(), 0, 0),
                ("sized".to_string(), 1, expected),
            ],
            "v{version}"
        );

        let some = client.call(
            version,
            &DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic("sized"))
                    .with_partitions(vec![1, 7]),
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic("missing"))
                    .with_partitions(vec![0]),
            ])),
        );
        let topics = &some.results[0].topics;
        assert_eq!(topics.len(), 1, "v{version}: only what the broker holds");
        assert_eq!(topics[0].partitions.len(), 1);
        assert_eq!(topics[0].partitions[0].partition_size, expected);
    }
}

#[test]
fn describe_producers_lists_an_idempotent_producer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.python("idempotent", dir.path());

    let mut client = broker.client();
    let request = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(topic("idempotent"))
            .with_partition_indexes(vec![0, 1]),
        describe_producers_request::TopicRequest::default()
            .with_name(topic("missing"))
            .with_partition_indexes(vec![0]),
    ]);
    let response = client.call(0, &request);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.active_producers.len(), 1, "{partition:?}");
    let producer = &partition.active_producers[0];
    assert!(producer.producer_id.0 >= 0, "{producer:?}");
    assert_eq!(producer.producer_epoch, 0);
    assert_eq!(producer.last_sequence, 4, "five records, sequences 0-4");
    assert_eq!(
        (
            producer.last_timestamp,
            producer.coordinator_epoch,
            producer.current_txn_start_offset
        ),
        (-1, -1, -1)
    );
    assert_eq!(
        response.topics[0].partitions[1].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        response.topics[1].partitions[0].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );

    // A raw idempotent producer: its sequences are tracked too.
    let init = client.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(init.error_code, 0);
    let id = (init.producer_id.0, init.producer_epoch, 0);
    client.produce("idempotent", 0, &[b"a", b"b", b"c"], Some(id));
    client.produce("idempotent", 0, &[b"d", b"e"], Some((id.0, id.1, 3)));
    let response = client.call(0, &request);
    let mine = response.topics[0].partitions[0]
        .active_producers
        .iter()
        .find(|p| p.producer_id.0 == init.producer_id.0)
        .expect("the raw producer is listed");
    assert_eq!(
        (mine.producer_epoch, mine.last_sequence),
        (i32::from(init.producer_epoch), 4)
    );
}

#[test]
fn a_consumer_validates_its_position_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The consumer reconnects to the same address, so the port must stay.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let broker = Broker::start_on(&listen, dir.path(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_admin.py");
    let mut python = Command::new(python())
        .arg(script)
        .args([&listen, "validate_after_restart"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdout = BufReader::new(python.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the scenario's output");
    if line.trim() != "READY" {
        let out = python.wait_with_output().expect("python exits");
        panic!(
            "the scenario did not get ready: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    broker.stop();
    let _broker = Broker::start_on(&listen, dir.path(), &[]);
    python
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(b"go\n")
        .expect("tell the scenario to go on");
    let mut rest = String::new();
    stdout
        .read_to_string(&mut rest)
        .expect("read the scenario's output");
    let out = python.wait_with_output().expect("python exits");
    assert!(
        out.status.success(),
        "scenario failed:\n{rest}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// OffsetForLeaderEpoch for `(current_leader_epoch, leader_epoch)` on one partition.
fn epoch_end(
    client: &mut Client,
    version: i16,
    name: &str,
    p: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic(name))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(p)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    let response = client.call(version, &request);
    let e = &response.topics[0].partitions[0];
    (e.error_code, e.leader_epoch, e.end_offset)
}

#[test]
fn offset_for_leader_epoch_follows_the_epochs_of_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    client.create_topic("epochs", 1);
    client.produce("epochs", 0, &[b"0", b"1", b"2"], None);
    for v in 2..=4 {
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, -1, 0),
            (0, 0, 3),
            "v{v}"
        );
    }
    drop(client);
    broker.stop();

    // The restart starts epoch 1 at offset 3.
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    client.produce("epochs", 0, &[b"3", b"4"], None);
    for v in 2..=4 {
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, 1, 0),
            (0, 0, 3),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, 1, 1),
            (0, 1, 5),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, -1, 1),
            (0, 1, 5),
            "v{v}"
        );
        // Newer than the current epoch, or -1: undefined, as Kafka answers.
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, -1, 2),
            (0, -1, -1),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, -1, -1),
            (0, -1, -1),
            "v{v}"
        );
        // The caller's view of the current epoch is checked first.
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, 0, 0).0,
            code(ResponseError::FencedLeaderEpoch),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 0, 2, 1).0,
            code(ResponseError::UnknownLeaderEpoch),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "epochs", 1, -1, 0).0,
            code(ResponseError::UnknownTopicOrPartition),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut client, v, "missing", 0, -1, 0).0,
            code(ResponseError::UnknownTopicOrPartition),
            "v{v}"
        );
    }
    // Metadata agrees on the current epoch.
    let metadata = client.call(
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("epochs"))),
        ])),
    );
    assert_eq!(metadata.topics[0].partitions[0].leader_epoch, 1);
    drop(client);
    broker.stop();

    // Epoch 2 starts where epoch 1 ended; an epoch with no records ends where it began.
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    assert_eq!(epoch_end(&mut client, 4, "epochs", 0, 2, 1), (0, 1, 5));
    assert_eq!(epoch_end(&mut client, 4, "epochs", 0, 2, 2), (0, 2, 5));
    client.produce("epochs", 0, &[b"5"], None);
    assert_eq!(epoch_end(&mut client, 4, "epochs", 0, 2, 2), (0, 2, 6));
    assert_eq!(epoch_end(&mut client, 4, "epochs", 0, 2, 0), (0, 0, 3));
}

#[test]
fn describe_configs_honours_keys_versions_and_resource_checks() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &["--node-id", "7"]);
    let mut client = broker.client();
    client.create_topic("described", 1);
    assert_eq!(
        client.incremental_alter("described", "retention.ms", Some("60000")),
        0
    );

    let resource = |resource_type: i8, name: &str, keys: Option<&[&str]>| {
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(str(name))
            .with_configuration_keys(keys.map(|k| k.iter().map(|s| str(s)).collect()))
    };
    for version in 1..=4 {
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(version >= 3)
            .with_resources(vec![
                resource(
                    2,
                    "described",
                    Some(&["retention.ms", "segment.bytes", "not.a.config"]),
                ),
                resource(2, "missing", None),
                resource(4, "7", Some(&["broker.id", "node.id"])),
                resource(4, "", Some(&["num.partitions"])),
                resource(4, "3", None),
                resource(8, "7", None),
                resource(2, "bad/name", None),
            ]);
        let response = client.call(version, &request);
        let results = &response.results;
        assert_eq!(results.len(), 7, "v{version}");

        let topic = &results[0];
        assert_eq!(topic.error_code, 0);
        let names: Vec<&str> = topic.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["retention.ms", "segment.bytes"],
            "v{version}: only the keys asked for"
        );
        let retention = &topic.configs[0];
        assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("60000"));
        assert_eq!(retention.config_source, 1);
        assert!(!retention.read_only);
        let synonyms: Vec<(&str, i8)> = retention
            .synonyms
            .iter()
            .map(|s| (s.value.as_ref().map_or("", |v| v.as_str()), s.source))
            .collect();
        assert_eq!(synonyms, [("60000", 1), ("604800000", 5)], "v{version}");
        let segment = &topic.configs[1];
        assert_eq!(segment.config_source, 5);
        if version >= 3 {
            assert_eq!(retention.config_type, 5, "LONG");
            assert_eq!(segment.config_type, 3, "INT");
            assert!(retention.documentation.is_some());
        }

        assert_eq!(
            results[1].error_code,
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert!(results[1].error_message.is_some());

        let broker_ids: Vec<(&str, &str, i8)> = results[2]
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.value.as_ref().map_or("", |v| v.as_str()),
                    c.config_source,
                )
            })
            .collect();
        assert_eq!(
            broker_ids,
            [("broker.id", "7", 4), ("node.id", "7", 4)],
            "v{version}"
        );
        assert!(results[2].configs.iter().all(|c| c.read_only));
        assert_eq!(results[3].error_code, 0);
        assert_eq!(results[3].configs.len(), 1);
        assert_eq!(results[3].configs[0].config_source, 5);
        assert_eq!(results[4].error_code, code(ResponseError::InvalidRequest));
        assert_eq!(results[5].error_code, code(ResponseError::InvalidRequest));
        assert_eq!(
            results[6].error_code,
            code(ResponseError::InvalidTopicException)
        );
    }
    // Without include_synonyms and include_documentation there are neither.
    for version in 3..=4 {
        let request = DescribeConfigsRequest::default().with_resources(vec![resource(
            2,
            "described",
            Some(&["retention.ms"]),
        )]);
        let response = client.call(version, &request);
        let retention = &response.results[0].configs[0];
        assert!(retention.synonyms.is_empty(), "v{version}");
        assert_eq!(retention.documentation, None, "v{version}");
    }
}

#[test]
fn every_admin_api_answers_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let mut client = broker.client();
    client.create_topic("versions", 1);
    client.produce("versions", 0, &[b"a", b"b"], None);

    let served = client.call(3, &ApiVersionsRequest::default());
    let range = |key: ApiKey| {
        let k = served
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} is advertised"));
        let all = key.valid_versions();
        assert_eq!(
            (k.min_version, k.max_version),
            (all.min, all.max),
            "{key:?}"
        );
        all.min..=all.max
    };

    for v in range(ApiKey::DescribeConfigs) {
        let r = client.call(
            v,
            &DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(str("versions"))
                        .with_configuration_keys(None),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(str("0"))
                        .with_configuration_keys(None),
                ]),
        );
        assert!(
            r.results
                .iter()
                .all(|r| r.error_code == 0 && !r.configs.is_empty()),
            "v{v}: {r:?}"
        );
    }
    for v in range(ApiKey::AlterConfigs) {
        let r = client.call(
            v,
            &AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(str("versions"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(str("retention.ms"))
                        .with_value(Some(str(&(3_600_000 + i64::from(v)).to_string())))]),
            ]),
        );
        assert_eq!(r.responses[0].error_code, 0, "v{v}");
        assert_eq!(
            r.responses[0].error_message, None,
            "v{v}: null when there is no error"
        );
    }
    for v in range(ApiKey::IncrementalAlterConfigs) {
        let r = client.call(
            v,
            &IncrementalAlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(str("versions"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(str("retention.bytes"))
                                .with_config_operation(0)
                                .with_value(Some(str("1000000"))),
                        ]),
                ]),
        );
        assert_eq!(r.responses[0].error_code, 0, "v{v}");
        assert_eq!(
            r.responses[0].error_message, None,
            "v{v}: null when there is no error"
        );
    }
    let mut partitions = 1;
    for v in range(ApiKey::CreatePartitions) {
        partitions += 1;
        let r = client.call(
            v,
            &CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("versions"))
                        .with_count(partitions),
                ]),
        );
        assert_eq!(r.results[0].error_code, 0, "v{v}");
    }
    for v in range(ApiKey::DeleteRecords) {
        let r = client.call(
            v,
            &DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic("versions"))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(1),
                    ]),
            ]),
        );
        assert_eq!(r.topics[0].partitions[0].low_watermark, 1, "v{v}");
    }
    for v in range(ApiKey::DescribeCluster) {
        let r = client.call(
            v,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        );
        assert_eq!((r.error_code, r.brokers.len()), (0, 1), "v{v}");
        assert!(r.cluster_authorized_operations > 0, "v{v}");
    }
    for v in range(ApiKey::DescribeLogDirs) {
        let r = client.call(v, &DescribeLogDirsRequest::default().with_topics(None));
        assert_eq!(r.results.len(), 1, "v{v}");
    }
    for v in range(ApiKey::DescribeProducers) {
        let r = client.call(
            v,
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic("versions"))
                    .with_partition_indexes(vec![0]),
            ]),
        );
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "v{v}");
    }
    for v in range(ApiKey::OffsetForLeaderEpoch) {
        assert_eq!(
            epoch_end(&mut client, v, "versions", 0, 0, 0),
            (0, 0, 2),
            "v{v}"
        );
    }
}

/// The Python with the Kafka clients: the test command's venv (`KASCADE_PYTHON`), else `python3`.
fn python() -> String {
    std::env::var("KASCADE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}
