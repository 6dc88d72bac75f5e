//! Request decoding and response encoding, with the right header version for
//! every `(api key, version)` pair.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;

/// A decoded request: its header and its body.
#[derive(Debug)]
pub struct Request {
    /// Which API.
    pub api_key: ApiKey,
    /// The API version the client chose.
    pub version: i16,
    /// The request header (correlation id, client id).
    pub header: RequestHeader,
    /// The request body.
    pub body: RequestKind,
}

/// Why a frame could not become a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed part of every request header.
    #[error("request frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    /// An API key this protocol does not define.
    #[error("unknown API key {api_key}")]
    UnknownApiKey {
        /// The key as sent.
        api_key: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// An API this broker does not serve, or a version outside the served range.
    #[error("{api_key:?} version {version} is not supported by this broker")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version asked for.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// The bytes do not decode as the announced request.
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
        /// What the decoder said.
        reason: String,
    },
}

/// Why a response could not be encoded (a broker bug: the handler built a
/// response that the chosen version cannot carry).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    /// The API.
    pub api_key: ApiKey,
    /// The version.
    pub version: i16,
    /// What the encoder said.
    pub reason: String,
}

/// The versions a broker serves for one API; `None` when it does not serve it.
pub trait Supported {
    /// The inclusive `(min, max)` range served for `api_key`.
    fn range(&self, api_key: ApiKey) -> Option<(i16, i16)>;
}

impl<F: Fn(ApiKey) -> Option<(i16, i16)>> Supported for F {
    fn range(&self, api_key: ApiKey) -> Option<(i16, i16)> {
        self(api_key)
    }
}

/// Decodes one frame body (length prefix already removed) into a request.
///
/// Never panics: the fixed header fields are read by hand after a length
/// check, and the crate's decoders are fenced in case one of them does.
pub fn decode_request(frame: Bytes, supported: &impl Supported) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let valid = api_key.valid_versions();
    let served = supported
        .range(api_key)
        .is_some_and(|(min, max)| version >= min && version <= max);
    if !served || version < valid.min || version > valid.max {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let mut buf = frame;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
        let body = RequestKind::decode(api_key, &mut buf, version)?;
        Ok::<_, anyhow::Error>((header, body))
    }))
    .map_err(|_| malformed("the decoder panicked".to_string()))?;
    let (header, body) = decoded.map_err(|e| malformed(e.to_string()))?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

/// Encodes a response frame (length prefix, header, body) onto `out`.
///
/// A Fetch response's absent `records` are sent as empty bytes, never as
/// null: librdkafka treats a null record set as an error.
pub fn encode_response(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &mut ResponseKind,
) -> Result<(), EncodeError> {
    if let ResponseKind::Fetch(fetch) = body {
        for topic in &mut fetch.responses {
            for partition in &mut topic.partitions {
                if partition.records.is_none() {
                    partition.records = Some(Bytes::new());
                }
            }
        }
    }
    let fail = |reason: String| EncodeError {
        api_key,
        version,
        reason,
    };
    let start = out.len();
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, api_key.response_header_version(version))
        .map_err(|e| fail(e.to_string()))?;
    body.encode(out, version).map_err(|e| fail(e.to_string()))?;
    patch_length(out, start).map_err(fail)
}

fn patch_length(out: &mut BytesMut, start: usize) -> Result<(), String> {
    let len = out.len() - start - 4;
    let len = i32::try_from(len).map_err(|_| format!("response of {len} bytes is too large"))?;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The ApiVersions answer for a client that asked with a version we don't
/// serve: version 0 with `UNSUPPORTED_VERSION`, still listing our ranges, so
/// the client can retry with a version we do serve (KIP-511).
pub fn encode_api_versions_fallback(
    out: &mut BytesMut,
    correlation_id: i32,
    ranges: &[(ApiKey, i16, i16)],
) -> Result<(), EncodeError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_version_list(ranges));
    let fail = |reason: String| EncodeError {
        api_key: ApiKey::ApiVersions,
        version: 0,
        reason,
    };
    let start = out.len();
    out.put_i32(0);
    out.put_i32(correlation_id);
    body.encode(out, 0).map_err(|e| fail(e.to_string()))?;
    patch_length(out, start).map_err(fail)
}

/// Our served ranges in ApiVersions' shape.
pub fn api_version_list(ranges: &[(ApiKey, i16, i16)]) -> Vec<ApiVersion> {
    ranges
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    fn serve_all(key: ApiKey) -> Option<(i16, i16)> {
        let v = key.valid_versions();
        Some((v.min, v.max))
    }

    fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn round_trips_every_metadata_version() {
        for version in 0..=ApiKey::Metadata.valid_versions().max {
            let body = RequestKind::Metadata(MetadataRequest::default());
            let req = decode_request(frame(ApiKey::Metadata, version, &body), &serve_all).unwrap();
            assert_eq!((req.api_key, req.version), (ApiKey::Metadata, version));
            assert_eq!(req.header.correlation_id, 7);
        }
    }

    #[test]
    fn short_unknown_and_unsupported_frames_are_typed_errors() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18, 0]), &serve_all),
            Err(DecodeError::TooShort(3))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1]), &serve_all),
            Err(DecodeError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 1
            })
        ));
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let only_v0 = |_: ApiKey| Some((0, 0));
        assert!(matches!(
            decode_request(frame(ApiKey::ApiVersions, 3, &body), &only_v0),
            Err(DecodeError::UnsupportedVersion {
                correlation_id: 7,
                ..
            })
        ));
        let mut truncated = frame(
            ApiKey::Metadata,
            12,
            &RequestKind::Metadata(MetadataRequest::default()),
        );
        truncated.truncate(truncated.len() - 1);
        assert!(matches!(
            decode_request(truncated, &serve_all),
            Err(DecodeError::Malformed { .. })
        ));
    }

    /// An array announcing `i32::MAX` elements with no bytes behind it used to
    /// make kafka-protocol allocate ~150 GB up front and abort the process
    /// (fixed in vendor/kafka-protocol); now it is a decode error.
    #[test]
    fn huge_array_and_string_lengths_are_malformed_not_an_abort() {
        let mut metadata_v0 = BytesMut::new();
        metadata_v0.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 1, 0, 1, b'x']);
        metadata_v0.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(metadata_v0.freeze(), &serve_all),
            Err(DecodeError::Malformed { .. })
        ));
        // Metadata v12 is flexible: a compact array length near u32::MAX.
        let mut metadata_v12 = BytesMut::new();
        metadata_v12.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 2, 0, 1, b'x', 0]);
        metadata_v12.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode_request(metadata_v12.freeze(), &serve_all),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn api_versions_fallback_is_v0_with_our_ranges() {
        let mut out = BytesMut::new();
        encode_api_versions_fallback(&mut out, 9, &[(ApiKey::Produce, 3, 9)]).unwrap();
        let mut body = out.freeze();
        assert_eq!(
            i32::from_be_bytes(body[..4].try_into().unwrap()) as usize,
            body.len() - 4
        );
        assert_eq!(i32::from_be_bytes(body[4..8].try_into().unwrap()), 9);
        let _ = body.split_to(8);
        let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert_eq!(resp.api_keys[0].max_version, 9);
    }
}
