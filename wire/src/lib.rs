//! # kascade-wire: bytes to messages and back
//!
//! This crate owns every wire format Kascade speaks and nothing that stores
//! data: Kafka framing and codec, the native frame format, the transports
//! (shared memory, TCP, RDMA) with their shared ring logic, and the native
//! client. It does no storage and knows nothing of the engine; the broker maps
//! its messages onto `kascade-core`.
//!
//! Today it holds the Kafka side ([`kafka`]): framing with a length limit
//! checked before any decoding, request and response header versions per API,
//! and record-batch validation and sealing. The native fast path ([`native`])
//! holds the native frame codec, the shared ring, the shm / tcp / rdma
//! transports, the broker's per-connection API and the native client.

pub mod kafka;
pub mod native;
