//! FindCoordinator: this node coordinates every group (single key v0-3,
//! batched keys v4+). Transactions are not served yet, so a transactional id
//! gets COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{broker_id, str_bytes};
use crate::kafka::groups::Groups;
use crate::kafka::State;

/// Key type of a consumer group.
const GROUP: i8 = 0;
/// Key type of a transactional id.
const TRANSACTION: i8 = 1;

/// Why `key` of `key_type` has no coordinator here, if it has none.
fn refusal(key_type: i8, key: &str) -> Option<(ResponseError, &'static str)> {
    match key_type {
        GROUP if Groups::valid_group_id(key) => None,
        GROUP => Some((
            ResponseError::InvalidRequest,
            "the group id is empty or too long",
        )),
        TRANSACTION => Some((
            ResponseError::CoordinatorNotAvailable,
            "transactions are not served by this broker",
        )),
        _ => Some((
            ResponseError::InvalidRequest,
            "only group coordinators are served",
        )),
    }
}

/// Answers with this broker for every group key.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let host = str_bytes(&state.advertised_host);
    let port = state.advertised_port;
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match refusal(request.key_type, key) {
                    None => c
                        .with_node_id(broker_id(state))
                        .with_host(host.clone())
                        .with_port(port),
                    Some((e, why)) => c
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::default())
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(why))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match refusal(request.key_type, &request.key) {
        None => response
            .with_node_id(broker_id(state))
            .with_host(host)
            .with_port(port),
        Some((e, why)) => {
            let response = response
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(why)))
            } else {
                response
            }
        }
    }
}
