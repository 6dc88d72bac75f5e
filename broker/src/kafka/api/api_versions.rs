//! ApiVersions: the APIs and versions this broker serves, exactly [`super::SERVED`].

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kascade_wire::kafka::codec::api_version_list;

/// Answers with our served ranges.
pub(super) fn handle(_version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_version_list(super::SERVED))
        .with_finalized_features_epoch(-1)
}
