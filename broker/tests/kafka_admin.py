"""Kafka admin APIs of kascade driven by the confluent-kafka AdminClient (librdkafka).

Run by broker/tests/kafka_admin.rs against a broker it started:
    python3 kafka_admin.py HOST:PORT SCENARIO
Each scenario asserts what a user of the AdminClient sees and exits non-zero
on the first difference.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclOperation,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

TIMEOUT = 30


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(a, name, partitions=1, config=None):
    futures = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    futures[name].result(TIMEOUT)


def describe(a, resource_type, name):
    resource = ConfigResource(resource_type, name)
    return a.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)


def error_of(future):
    """The KafkaError a future fails with; fails the test when it succeeds."""
    try:
        future.result(TIMEOUT)
    except KafkaException as e:
        return e.args[0]
    raise AssertionError("expected the request to fail, it succeeded")


def produce(bootstrap, topic, values, partition=0, timestamp=None, **config):
    """Produces each value as its own batch; returns the delivery errors (None for success)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **config})
    errors = []
    for v in values:
        kwargs = {"partition": partition, "value": v}
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        p.produce(topic, on_delivery=lambda err, msg: errors.append(err), **kwargs)
        p.flush(TIMEOUT)
    assert len(errors) == len(values), f"{len(errors)} of {len(values)} deliveries reported"
    return errors


def watermarks(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT, cached=False)
    finally:
        c.close()


def consume_one(bootstrap, topic, offset):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "one", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg
        raise AssertionError(f"no message at {topic}/0@{offset}")
    finally:
        c.close()


def scenario_configs(bootstrap, data_dir):
    a = admin(bootstrap)
    create_topic(a, "configs", config={"retention.ms": "3600000"})

    # Describe: every topic config, set ones dynamic, the others default.
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert len(entries) >= 20, sorted(entries)
    retention = entries["retention.ms"]
    assert retention.value == "3600000", retention
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, retention.source
    assert not retention.is_default and not retention.is_read_only
    segment = entries["segment.bytes"]
    assert segment.value == "1073741824" and segment.is_default, segment
    assert segment.source == ConfigSource.DEFAULT_CONFIG.value, segment.source
    assert entries["cleanup.policy"].value == "delete"
    assert entries["max.message.bytes"].value == "1048588"

    # Broker configs: the flags the broker was started with, static; the rest defaults.
    broker = describe(a, ResourceType.BROKER, "0")
    assert broker["broker.id"].value == "0", broker["broker.id"]
    assert broker["num.partitions"].value == "3", broker["num.partitions"]
    assert broker["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert broker["log.dirs"].value == data_dir, (broker["log.dirs"].value, data_dir)
    assert broker["log.dirs"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert broker["default.replication.factor"].value == "1"
    assert broker["default.replication.factor"].source == ConfigSource.DEFAULT_CONFIG.value
    assert broker["compression.type"].value == "producer"
    assert broker["auto.create.topics.enable"].value == "false"
    assert int(broker["socket.request.max.bytes"].value) > 0
    assert broker["listeners"].value.startswith("PLAINTEXT://127.0.0.1:")
    assert broker["broker.id"].is_read_only

    # An unknown topic fails on its own.
    missing = ConfigResource(ResourceType.TOPIC, "no-such-topic")
    err = error_of(a.describe_configs([missing], request_timeout=TIMEOUT)[missing])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err

    # AlterConfigs replaces every dynamic config: retention.ms returns to its default.
    resource = ConfigResource(ResourceType.TOPIC, "configs", set_config={"retention.bytes": "5000000"})
    a.alter_configs([resource], validate_only=True)[resource].result(TIMEOUT)
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert entries["retention.ms"].value == "3600000", "validate_only changed nothing"
    assert entries["retention.bytes"].is_default
    a.alter_configs([resource])[resource].result(TIMEOUT)
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert entries["retention.bytes"].value == "5000000" and not entries["retention.bytes"].is_default
    assert entries["retention.ms"].value == "604800000" and entries["retention.ms"].is_default

    # Invalid values are refused with a message a person can act on.
    for name, value, words in [
        ("retention.ms", "soon", "integer"),
        ("cleanup.policy", "compact", "compaction is not implemented"),
        ("message.timestamp.type", "Later", "LogAppendTime"),
        ("no.such.config", "1", "unknown topic config"),
    ]:
        bad = ConfigResource(ResourceType.TOPIC, "configs", set_config={name: value})
        err = error_of(a.alter_configs([bad])[bad])
        assert err.code() == KafkaError.INVALID_CONFIG, (name, err)
        assert words in err.str(), (name, err.str())

    # Broker configs are static.
    static = ConfigResource(ResourceType.BROKER, "0", set_config={"num.partitions": "5"})
    err = error_of(a.alter_configs([static])[static])
    assert err.code() == KafkaError.INVALID_REQUEST, err
    assert "static" in err.str(), err.str()

    # IncrementalAlterConfigs: SET and DELETE touch only the named configs.
    def incremental(*ops, validate_only=False):
        r = ConfigResource(ResourceType.TOPIC, "configs", incremental_configs=list(ops))
        return a.incremental_alter_configs([r], validate_only=validate_only)[r]

    incremental(
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
        validate_only=True,
    ).result(TIMEOUT)
    assert describe(a, ResourceType.TOPIC, "configs")["retention.ms"].is_default
    incremental(
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ).result(TIMEOUT)
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert entries["retention.ms"].value == "120000", entries["retention.ms"]
    assert entries["retention.bytes"].value == "-1" and entries["retention.bytes"].is_default

    # APPEND and SUBTRACT work on list configs; appending a present item changes nothing.
    incremental(
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND)
    ).result(TIMEOUT)
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert entries["cleanup.policy"].value == "delete", entries["cleanup.policy"]
    assert entries["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    err = error_of(
        incremental(
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)
        )
    )
    assert err.code() == KafkaError.INVALID_CONFIG and "compaction" in err.str(), err
    err = error_of(
        incremental(
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)
        )
    )
    assert err.code() == KafkaError.INVALID_CONFIG, err
    err = error_of(
        incremental(ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND))
    )
    assert err.code() == KafkaError.INVALID_CONFIG and "list configs" in err.str(), err
    # A refused change leaves everything as it was.
    entries = describe(a, ResourceType.TOPIC, "configs")
    assert entries["cleanup.policy"].value == "delete"
    assert entries["retention.ms"].value == "120000"

    # The storage kind is fixed at creation; a replacing alter keeps it.
    create_topic(a, "in-memory", config={"kascade.storage": "volatile"})
    resource = ConfigResource(ResourceType.TOPIC, "in-memory", set_config={"retention.ms": "60000"})
    a.alter_configs([resource])[resource].result(TIMEOUT)
    entries = describe(a, ResourceType.TOPIC, "in-memory")
    assert entries["kascade.storage"].value == "volatile", entries["kascade.storage"]
    assert entries["retention.ms"].value == "60000"
    err = error_of(
        incremental(ConfigEntry("kascade.storage", "volatile", incremental_operation=AlterConfigOpType.SET))
    )
    assert err.code() == KafkaError.INVALID_CONFIG and "cannot change" in err.str(), err

    r = ConfigResource(
        ResourceType.BROKER,
        "0",
        incremental_configs=[
            ConfigEntry("num.partitions", "5", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    err = error_of(a.incremental_alter_configs([r])[r])
    assert err.code() == KafkaError.INVALID_REQUEST and "static" in err.str(), err


def scenario_partitions(bootstrap, _data_dir):
    a = admin(bootstrap)
    create_topic(a, "grow", partitions=2)

    a.create_partitions([NewPartitions("grow", 4)], validate_only=True)["grow"].result(TIMEOUT)
    assert len(a.list_topics("grow", timeout=TIMEOUT).topics["grow"].partitions) == 2

    a.create_partitions([NewPartitions("grow", 4)])["grow"].result(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(a.list_topics("grow", timeout=TIMEOUT).topics["grow"].partitions) != 4:
        assert time.monotonic() < deadline, "metadata never showed 4 partitions"
        time.sleep(0.1)

    # The new partitions take records.
    assert produce(bootstrap, "grow", [b"into the new partition"], partition=3) == [None]
    assert watermarks(bootstrap, "grow", 3) == (0, 1)

    for count in (4, 3):
        err = error_of(a.create_partitions([NewPartitions("grow", count)])["grow"])
        assert err.code() == KafkaError.INVALID_PARTITIONS, (count, err)
    err = error_of(a.create_partitions([NewPartitions("grow", 6, replica_assignment=[[0], [0]])])["grow"])
    assert err.code() == KafkaError.INVALID_REQUEST, err
    err = error_of(a.create_partitions([NewPartitions("missing", 6)])["missing"])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def scenario_delete_records(bootstrap, _data_dir):
    a = admin(bootstrap)
    create_topic(a, "trimmed")
    assert produce(bootstrap, "trimmed", [b"record %d" % i for i in range(10)]) == [None] * 10
    assert watermarks(bootstrap, "trimmed") == (0, 10)

    result = a.delete_records([TopicPartition("trimmed", 0, 4)])
    deleted = result[TopicPartition("trimmed", 0, 4)].result(TIMEOUT)
    assert deleted.low_watermark == 4, deleted
    assert watermarks(bootstrap, "trimmed") == (4, 10)
    assert consume_one(bootstrap, "trimmed", 4).value() == b"record 4"

    # A consumer that must not skip records is told its offset is gone.
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "strict",
            "auto.offset.reset": "error",
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition("trimmed", 0, 1)])
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert time.monotonic() < deadline, "no offset-out-of-range error"
            msg = c.poll(1.0)
            if msg is not None and msg.error() is not None:
                assert msg.error().code() == KafkaError._AUTO_OFFSET_RESET, msg.error()
                assert "out of range" in msg.error().str().lower(), msg.error().str()
                break
            assert msg is None, f"read {msg.value()} below the log start"
    finally:
        c.close()

    tp = TopicPartition("trimmed", 0, 11)
    err = error_of(a.delete_records([tp])[tp])
    assert err.code() == KafkaError.OFFSET_OUT_OF_RANGE, err


def scenario_describe_cluster(bootstrap, _data_dir):
    a = admin(bootstrap)
    host, port = bootstrap.rsplit(":", 1)
    plain = a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert plain.cluster_id and plain.cluster_id == a.list_topics(timeout=TIMEOUT).cluster_id
    assert plain.controller.id == 0, plain.controller
    assert [(n.id, n.host, n.port) for n in plain.nodes] == [(0, host, int(port))], plain.nodes
    assert not plain.authorized_operations, plain.authorized_operations

    full = a.describe_cluster(include_authorized_operations=True, request_timeout=TIMEOUT).result(TIMEOUT)
    ops = set(full.authorized_operations or [])
    for op in (AclOperation.DESCRIBE, AclOperation.ALTER, AclOperation.ALTER_CONFIGS, AclOperation.CREATE):
        assert op in ops, (op, ops)


def scenario_effects(bootstrap, _data_dir):
    a = admin(bootstrap)
    create_topic(a, "effects")

    def set_config(name, value):
        op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
        r = ConfigResource(ResourceType.TOPIC, "effects", incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
        a.incremental_alter_configs([r])[r].result(TIMEOUT)

    # max.message.bytes is the limit a produced batch must fit.
    big = b"x" * 4000
    assert produce(bootstrap, "effects", [big]) == [None]
    set_config("max.message.bytes", "1000")
    [err] = produce(bootstrap, "effects", [big], retries=0)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert produce(bootstrap, "effects", [b"small"]) == [None]
    set_config("max.message.bytes", None)
    assert produce(bootstrap, "effects", [big]) == [None]

    # message.timestamp.type=LogAppendTime replaces the producer's timestamp.
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    _, end = watermarks(bootstrap, "effects")
    assert produce(bootstrap, "effects", [b"old"], timestamp=1000) == [None]
    assert consume_one(bootstrap, "effects", end).timestamp() == (TIMESTAMP_CREATE_TIME, 1000)
    set_config("message.timestamp.type", "LogAppendTime")
    before_ms = int(time.time() * 1000)
    assert produce(bootstrap, "effects", [b"stamped"], timestamp=1000) == [None]
    kind, ts = consume_one(bootstrap, "effects", end + 1).timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME and ts >= before_ms - 1000, (kind, ts)
    set_config("message.timestamp.type", None)

    # retention.bytes: a partition keeps only what fits (always its newest batch).
    low, end = watermarks(bootstrap, "effects")
    assert low == 0 and end > 3, (low, end)
    set_config("retention.bytes", "1")
    assert produce(bootstrap, "effects", [b"newest"]) == [None]
    assert watermarks(bootstrap, "effects") == (end, end + 1)
    set_config("retention.bytes", None)

    # retention.ms: batches older than it go.
    assert produce(bootstrap, "effects", [b"a", b"b", b"c"]) == [None] * 3
    low, end = watermarks(bootstrap, "effects")
    assert end - low == 4, (low, end)
    set_config("retention.ms", "1")
    time.sleep(0.05)  # so the batches above are older than 1 ms
    assert produce(bootstrap, "effects", [b"fresh"]) == [None]
    assert watermarks(bootstrap, "effects") == (end, end + 1)


def scenario_idempotent(bootstrap, _data_dir):
    a = admin(bootstrap)
    create_topic(a, "idempotent")
    errors = produce(bootstrap, "idempotent", [b"once %d" % i for i in range(5)], **{"enable.idempotence": True})
    assert errors == [None] * 5, errors


def scenario_validate_after_restart(bootstrap, _data_dir):
    """A consumer checks its position with OffsetForLeaderEpoch when a restart
    starts a new leader epoch (KIP-320), and goes on reading where it was.
    Prints READY, then waits for a line on stdin while the broker restarts."""
    import logging

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    lines = Lines()
    logger = logging.getLogger("librdkafka")
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)

    a = admin(bootstrap)
    create_topic(a, "restarted")
    assert produce(bootstrap, "restarted", [b"0", b"1", b"2"]) == [None] * 3
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "validating",
            "auto.offset.reset": "error",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
            "debug": "consumer,fetch",
            "logger": logger,
        }
    )
    try:
        c.assign([TopicPartition("restarted", 0, 0)])
        got = []

        def read_until(n):
            deadline = time.monotonic() + TIMEOUT
            while len(got) < n:
                assert time.monotonic() < deadline, f"read only {got}"
                msg = c.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    # Losing the connection while the broker restarts is expected; nothing else is.
                    assert msg.error().code() == KafkaError._TRANSPORT, msg.error()
                    continue
                got.append(msg.value())

        read_until(3)
        print("READY", flush=True)
        sys.stdin.readline()
        assert produce(bootstrap, "restarted", [b"3", b"4"]) == [None] * 2
        read_until(5)
        assert got == [b"0", b"1", b"2", b"3", b"4"], got
    finally:
        c.close()
    validated = [line for line in lines.lines if "validation succeeded" in line]
    assert validated, "\n".join(line for line in lines.lines if "VALID" in line)
    assert "broker end offset 3" in validated[0], validated


SCENARIOS = {name[len("scenario_"):]: f for name, f in globals().items() if name.startswith("scenario_")}

if __name__ == "__main__":
    bootstrap, scenario, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    SCENARIOS[scenario](bootstrap, data_dir)
    print(f"scenario {scenario}: ok")
