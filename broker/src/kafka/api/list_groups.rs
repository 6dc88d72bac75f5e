//! ListGroups: every group this coordinator holds, filtered by state (v4+)
//! and type (v5+; every group here is a classic group).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::kafka::State;

/// The type of every group this broker coordinates.
const CLASSIC: &str = "classic";

/// Lists the groups that pass the filters.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let wants_state = |s: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(s))
    };
    let wants_classic = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|f| f.eq_ignore_ascii_case(CLASSIC));
    let groups = state
        .groups
        .list()
        .into_iter()
        .filter(|(_, s, _)| wants_classic && wants_state(s.name()))
        .map(|(id, s, protocol_type)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            match version {
                4 => g.with_group_state(str_bytes(s.name())),
                5.. => g
                    .with_group_state(str_bytes(s.name()))
                    .with_group_type(str_bytes(CLASSIC)),
                _ => g,
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
