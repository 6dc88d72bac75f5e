//! DescribeCluster: the cluster id, this broker (which is also the
//! controller of its one-node cluster) and, when asked, the operations a
//! client may perform on the cluster: all of them, as there are no ACLs.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::{broker_id, str_bytes};
use crate::kafka::State;

/// Endpoint type: brokers.
const BROKERS: i8 = 1;

/// ACL operations that apply to the cluster resource, as bits of
/// `cluster_authorized_operations`: CREATE (5), ALTER (7), DESCRIBE (8),
/// CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10), ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12).
pub(crate) const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Describes the one-node cluster.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = broker_id(state);
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&state.cluster_id))
        .with_controller_id(node);
    if version >= 1 {
        response.endpoint_type = request.endpoint_type;
        if request.endpoint_type != BROKERS {
            return response
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(str_bytes(
                    "kascade serves broker endpoints only (endpoint type 1); it has no separate controllers",
                )));
        }
    }
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(str_bytes(&state.advertised_host))
        .with_port(state.advertised_port);
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    response.with_brokers(vec![broker])
}
