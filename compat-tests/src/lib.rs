//! # compat-tests: real clients against a real broker
//!
//! This crate owns the conformance tests that run existing Kafka clients
//! (kcat, confluent-kafka, kafka-python, aiokafka, kafkajs, rdkafka) and the
//! native client against a `kascade serve` process. The Kafka face lands with
//! the next issue, and its tests with it; the broker's own process tests
//! (signals, data dir, restart) live in `broker/tests/serve.rs`.
