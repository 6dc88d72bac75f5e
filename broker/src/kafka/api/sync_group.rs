//! SyncGroup: the leader hands in the assignment; every member gets its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::kafka::State;

/// Answers with the member's assignment once the leader has sent it.
pub(super) async fn handle(
    state: &State,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let result = state
        .groups
        .sync(
            &request.group_id.0,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            request.protocol_type.as_deref(),
            request.protocol_name.as_deref(),
            assignments,
        )
        .await;
    let response = SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(result.protocol_name.as_deref().map(str_bytes))
    } else {
        response
    }
}
