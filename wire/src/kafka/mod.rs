//! Kafka's wire format: frames, request/response codec and record batches.
//!
//! The message structs come from the `kafka-protocol` crate; this module adds
//! what a broker must get right around them: a frame length limit enforced
//! before decoding, the header version for each `(api key, version)`, the
//! ApiVersions fallback for clients newer than us, and a hand-written record
//! batch validator (magic, size, CRC-32C) and sealer (base offset, leader
//! epoch, log-append time) for the produce path, which must be fast.

pub mod batch;
pub mod codec;
pub mod frame;
pub mod records;

pub use kafka_protocol;
pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
pub use kafka_protocol::ResponseError;
