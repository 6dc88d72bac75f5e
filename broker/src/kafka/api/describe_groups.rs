//! DescribeGroups: state, protocol and members of each group.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::kafka::groups::{GroupState, Groups};
use crate::kafka::State;

/// With no authorizer, a client may do everything Kafka allows on a group:
/// READ (3), DELETE (6) and DESCRIBE (8), as an ACL operation bitfield.
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Describes each group asked for.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let mut described = DescribedGroup::default().with_group_id(id.clone());
            if version >= 3 && request.include_authorized_operations {
                described = described.with_authorized_operations(ALL_GROUP_OPERATIONS);
            }
            if !Groups::valid_group_id(id) {
                return described
                    .with_error_code(ResponseError::InvalidGroupId.code())
                    .with_group_state(str_bytes(GroupState::Dead.name()));
            }
            let Some(summary) = state.groups.describe(id) else {
                // Kafka answers Dead with no error before v6, GROUP_ID_NOT_FOUND since.
                let described = described.with_group_state(str_bytes(GroupState::Dead.name()));
                return if version >= 6 {
                    described
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(&format!("group {} not found", id.0))))
                } else {
                    described
                };
            };
            let members = summary
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        member.with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                    } else {
                        member
                    }
                })
                .collect();
            described
                .with_group_state(str_bytes(summary.state.name()))
                .with_protocol_type(str_bytes(&summary.protocol_type))
                .with_protocol_data(str_bytes(&summary.protocol_name))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
