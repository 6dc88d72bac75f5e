//! aiokafka (asyncio Python) against a `kascade serve` process; the checks are in
//! `python/aiokafka_checks.py`.

use compat_tests::{Broker, Client};

fn checks(checks: &[&str]) {
    let broker = Broker::start();
    broker.run_checks(&mut Client::python(&broker, "aiokafka_checks.py"), checks);
}

#[test]
fn metadata_topics_and_unknown_topics() {
    checks(&["metadata", "topics", "unknown_topic"]);
}

#[test]
fn records_round_trip_in_every_codec_and_size() {
    checks(&[
        "roundtrip",
        "codecs",
        "large_messages",
        "oversized",
        "key_partitioning",
        "order",
        "idempotent",
    ]);
}

#[test]
fn offsets_for_times_and_seek() {
    checks(&["offsets_for_times", "seek"]);
}

#[test]
fn topic_configs_partitions_and_record_deletion() {
    checks(&["configs", "create_partitions", "delete_records"]);
}

#[test]
fn consumer_group_rebalances_and_resumes_from_committed_offsets() {
    checks(&["group_rebalance", "group_admin"]);
}
