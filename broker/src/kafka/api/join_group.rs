//! JoinGroup: joins (or rejoins) a member and waits for its rebalance.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::str_bytes;
use crate::kafka::groups::JoinRequest;
use crate::kafka::State;

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Joins the member and answers once the group's join phase completes.
pub(super) async fn handle(
    state: &State,
    version: i16,
    request: JoinGroupRequest,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    if let Some(reason) = &request.reason {
        tracing::debug!(group = %request.group_id.0, member = %request.member_id, "join: {reason}");
    }
    // v0 has no rebalance timeout: the session timeout serves as both.
    let rebalance_timeout = if version == 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
        session_timeout: millis(request.session_timeout_ms),
        rebalance_timeout: millis(rebalance_timeout),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let result = state.groups.join(&request.group_id.0, join).await;
    let members = result
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                .with_metadata(m.metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable.
    let protocol_name = match result.protocol_name.as_deref() {
        Some(n) => Some(str_bytes(n)),
        None if version < 7 => Some(str_bytes("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader))
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
}
