//! One handler per Kafka API, and the table of what this broker serves.
//!
//! A handler is `handle(state, version, request) -> response`. The table
//! [`SERVED`] is the single source of truth: ApiVersions advertises exactly
//! it, and the decoder refuses anything outside it before a handler runs.

mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
pub(crate) mod produce;
mod sync_group;

use std::net::SocketAddr;

use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kascade_wire::kafka::codec::Request;
use kascade_wire::kafka::{ApiKey, RequestKind, ResponseKind};

use super::State;

/// Every API this broker serves, with the versions it serves.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    // kafka-protocol 0.18 says 0-6 but its request struct only decodes 0-5.
    (ApiKey::InitProducerId, 0, 5),
    // Consumer groups. OffsetCommit v10 and OffsetFetch v10 are left out:
    // kafka-protocol 0.18 cannot decode those requests.
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Admin.
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// A produce whose batches are appended and whose answer waits for durability.
pub use produce::Started as ProduceStarted;

/// Appends a produce request's batches now, in the order the connection read
/// them; await [`ProduceStarted::finish`] for the response.
pub fn start_produce(
    state: &State,
    version: i16,
    request: kafka_protocol::messages::ProduceRequest,
) -> ProduceStarted {
    produce::start(state, version, request)
}

/// The served version range of `key`, if it is served.
pub fn served_range(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Runs the handler for `request`; `None` means send no response (acks=0
/// produce) or, for a request that has no handler, close the connection.
pub async fn handle(state: &State, request: Request, peer: SocketAddr) -> Option<ResponseKind> {
    let v = request.version;
    Some(match request.body {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(v, r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(state, v, r)),
        RequestKind::Produce(r) => {
            ResponseKind::Produce(produce::start(state, v, r).finish().await?)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(state, v, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(state, v, r)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(state, v, r))
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(state, v, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(state, v, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(state, v, r))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = request.header.client_id.as_deref().unwrap_or("");
            ResponseKind::JoinGroup(join_group::handle(state, v, r, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(state, v, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(state, v, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group::handle(state, v, r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(state, v, r))
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch::handle(state, v, r)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(state, v, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(state, v, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(state, v, r))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(state, v, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(state, v, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::handle(state, v, r))
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs::handle(state, v, r))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(state, v, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(state, v, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(state, v, r))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(state, v, r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(describe_producers::handle(state, v, r))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(state, v, r))
        }
        other => {
            tracing::error!(request = ?std::mem::discriminant(&other), "served API without a handler");
            return None;
        }
    })
}

/// Runs blocking engine work (a durable put waits for fsync) without
/// stalling the other connections of this runtime worker.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A string in the protocol's shape.
pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A topic name in the protocol's shape.
pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// This broker's id in the protocol's shape.
pub(crate) fn broker_id(state: &State) -> BrokerId {
    BrokerId(state.node_id)
}
