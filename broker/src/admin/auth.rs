//! The bearer token: when one is configured, every admin route but `/health`
//! needs `Authorization: Bearer <token>`, compared in constant time; anything
//! else is a 401 before the handler runs, so nothing changes.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::error_response;
use super::Shared;

/// The token a request carries, if it carries one the `Bearer` way.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// True when `given` is the configured token (the comparison takes the same time
/// wherever the first difference lies).
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// Middleware: lets `/health` and requests with the right token through, answers 401 otherwise.
pub async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let message = match bearer(&request) {
        Some(given) if token_matches(given, expected.0.as_bytes()) => {
            return next.run(request).await
        }
        Some(_) => "the admin token is wrong: send the token the broker was started with (--admin-token)",
        None => "this admin API needs a token: send Authorization: Bearer <token> (kascade --token or KASCADE_ADMIN_TOKEN)",
    };
    let mut response = error_response(StatusCode::UNAUTHORIZED, message.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"kascade\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cret!", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
        assert!(!token_matches(b"S3cret", b"s3cret"));
    }
}
