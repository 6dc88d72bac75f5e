//! `decode_request` on arbitrary frame bodies with every API and version
//! served: it never panics (nor aborts on a huge length), and what it returns
//! agrees with the fixed header fields it read by hand.
//!
//! (It does not check that a decoded request re-encodes to the same bytes:
//! kafka-protocol 0.18 does not round-trip unknown tagged fields with tags
//! of 2^31 and above, which a broker never re-encodes.)
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kascade_wire::kafka::codec::{decode_request, DecodeError};
use libfuzzer_sys::fuzz_target;

fn serve_all(key: ApiKey) -> Option<(i16, i16)> {
    let v = key.valid_versions();
    Some((v.min, v.max))
}

fuzz_target!(|data: &[u8]| {
    let fixed = data.first_chunk::<8>().map(|h| {
        (
            i16::from_be_bytes([h[0], h[1]]),
            i16::from_be_bytes([h[2], h[3]]),
            i32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        )
    });
    match (
        decode_request(Bytes::copy_from_slice(data), &serve_all),
        fixed,
    ) {
        (Err(DecodeError::TooShort(n)), None) => assert_eq!(n, data.len()),
        (_, None) => panic!("a frame under 8 bytes must be TooShort"),
        (Ok(r), Some((key, version, correlation_id))) => {
            assert_eq!(r.api_key as i16, key);
            assert_eq!(r.version, version);
            assert_eq!(r.header.request_api_key, key);
            assert_eq!(r.header.request_api_version, version);
            assert_eq!(r.header.correlation_id, correlation_id);
            let range = r.api_key.valid_versions();
            assert!(version >= range.min && version <= range.max);
        }
        (Err(e), Some((key, version, correlation_id))) => match e {
            DecodeError::TooShort(_) => panic!("TooShort for {} bytes", data.len()),
            DecodeError::UnknownApiKey {
                api_key,
                correlation_id: c,
            } => {
                assert_eq!((api_key, c), (key, correlation_id));
                assert!(ApiKey::try_from(key).is_err());
            }
            DecodeError::UnsupportedVersion {
                api_key,
                version: v,
                correlation_id: c,
            } => {
                assert_eq!((api_key as i16, v, c), (key, version, correlation_id));
                let range = api_key.valid_versions();
                assert!(v < range.min || v > range.max);
            }
            DecodeError::Malformed {
                api_key,
                version: v,
                correlation_id: c,
                ..
            } => assert_eq!((api_key as i16, v, c), (key, version, correlation_id)),
        },
    }
});
