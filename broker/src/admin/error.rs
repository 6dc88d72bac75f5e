//! The admin API's one error type: a status code and a sentence a person can act on,
//! answered as `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kascade_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::kafka::topics::TopicError;

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

/// A failed admin request: the status to answer and the message.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The sentence for `{"error": ...}`.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or asks for something impossible.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: the thing named does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request conflicts with what exists.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500: the broker failed, not the request.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.message)
    }
}

/// `{"error": message}` with `status`.
pub fn error_response(status: StatusCode, message: String) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error: message })
        .unwrap_or_else(|_| br#"{"error":"unprintable error"}"#.to_vec());
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::InvalidKey { .. }
            | Error::InvalidPoolConfig { .. }
            | Error::ZeroCount(_)
            | Error::NotOneAffinitySet(_)
            | Error::Lambda(_)
            | Error::Pipeline(_) => StatusCode::BAD_REQUEST,
            Error::NoPool(_)
            | Error::UnknownPool(_)
            | Error::NotFound { .. }
            | Error::SeqOutOfRange { .. } => StatusCode::NOT_FOUND,
            Error::PoolExists(_)
            | Error::FencedEpoch { .. }
            | Error::OutOfOrderSequence { .. }
            | Error::DuplicateOutsideWindow { .. } => StatusCode::CONFLICT,
            Error::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ShardFailed(..) | Error::ShuttingDown | Error::Gpu(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Corrupt { .. } | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("admin request failed: {e}");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> ApiError {
        match e {
            TopicError::Engine(e) => e.into(),
            TopicError::Unknown(_) => ApiError::not_found(e.to_string()),
            TopicError::Exists(_) => ApiError::conflict(e.to_string()),
            TopicError::InvalidName(_)
            | TopicError::InvalidPartitions(_)
            | TopicError::InvalidReplication(_)
            | TopicError::InvalidConfig(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_get_the_status_a_client_can_act_on() {
        let cases = [
            (Error::NoPool("/x".into()), StatusCode::NOT_FOUND),
            (Error::PoolExists("/x".into()), StatusCode::CONFLICT),
            (Error::Lambda("bad".into()), StatusCode::BAD_REQUEST),
            (
                Error::ValueTooLarge {
                    key: "/x".into(),
                    size: 2,
                    limit: 1,
                },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status, status);
        }
    }
}
