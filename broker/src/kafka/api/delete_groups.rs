//! DeleteGroups: removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::blocking;
use crate::kafka::State;

/// Deletes each group; a group with members gets NON_EMPTY_GROUP.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .iter()
        .map(|id| {
            let result = blocking(|| state.groups.delete_group(id));
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
