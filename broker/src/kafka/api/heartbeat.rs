//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::kafka::State;

/// Refreshes the member's session.
pub(super) fn handle(state: &State, _version: i16, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = state.groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
