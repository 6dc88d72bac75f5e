//! LeaveGroup: one member (v0-2) or several at once (v3+) leave a group.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::kafka::State;

/// Removes the members and rebalances the rest.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                if let Some(reason) = &m.reason {
                    tracing::debug!(member = %m.member_id, "leave: {reason}");
                }
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let response = LeaveGroupResponse::default();
    let results = match state.groups.leave(&request.group_id.0, &members) {
        Ok(results) => results,
        Err(e) => return response.with_error_code(e.code()),
    };
    if version < 3 {
        let code = results
            .first()
            .and_then(|r| r.err())
            .map_or(0, |e| e.code());
        return response.with_error_code(code);
    }
    let members = members
        .iter()
        .zip(results)
        .map(|((member_id, instance_id), r)| {
            MemberResponse::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance_id.as_deref().map(str_bytes))
                .with_error_code(r.err().map_or(0, |e| e.code()))
        })
        .collect();
    response.with_members(members)
}
