//! # kascade-wire: bytes to messages and back
//!
//! This crate owns every wire format Kascade speaks and nothing that stores
//! data: Kafka framing and codec, the native frame format, the transports
//! (shared memory, TCP, RDMA) with their shared ring logic, and the native
//! client. It does no storage and knows nothing of the engine; the broker maps
//! its messages onto `kascade-core`.
//!
//! It is empty today: the Kafka codec lands with the Kafka-face issue and the
//! native protocol with the fast-path issue.
