"""confluent-kafka (librdkafka) against a kascade broker: see checks.py."""

import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from checks import CheckFailed, expect, expect_eq, run, unique, until

TIMEOUT = 30


def admin(b):
    return AdminClient({"bootstrap.servers": b})


def create(b, topic, partitions=1, config=None):
    a = admin(b)
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    fs[topic].result(TIMEOUT)


def producer(b, **extra):
    conf = {"bootstrap.servers": b, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def produce_all(p, topic, records):
    """Produces (key, value, extra kwargs) records; returns delivered messages in order."""
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg)

    for key, value, kw in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=cb, **kw)
                break
            except BufferError:
                p.poll(0.1)
    left = p.flush(TIMEOUT)
    expect(not errors, f"delivery errors: {errors[:3]}")
    expect_eq(left, 0, "messages still queued after flush")
    expect_eq(len(delivered), len(records), "delivered count")
    return delivered


def consumer(b, group=None, **extra):
    conf = {
        "bootstrap.servers": b,
        "group.id": group or unique("reader"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    conf.update(extra)
    return Consumer(conf)


def read(c, count, deadline=TIMEOUT):
    """Polls until `count` messages arrived; fails on a consumer error."""
    got = []
    end = time.monotonic() + deadline
    while len(got) < count:
        if time.monotonic() > end:
            raise CheckFailed(f"read {len(got)} of {count} messages within {deadline}s")
        for m in c.consume(num_messages=min(1000, count - len(got)), timeout=0.5):
            if m.error():
                raise CheckFailed(f"consumer error: {m.error()}")
            got.append(m)
    return got


def read_partitions(b, topic, partitions, count, **extra):
    c = consumer(b, **extra)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        return read(c, count)
    finally:
        c.close()


# --- metadata and topics ---------------------------------------------------


def check_metadata(b):
    topic = unique("meta")
    create(b, topic, partitions=3)
    md = admin(b).list_topics(timeout=TIMEOUT)
    expect(md.cluster_id, "a cluster id")
    expect_eq(len(md.brokers), 1, "brokers")
    broker = next(iter(md.brokers.values()))
    host, port = b.rsplit(":", 1)
    expect_eq((broker.host, broker.port), (host, int(port)), "advertised address")
    expect_eq(md.controller_id, broker.id, "controller")
    t = md.topics.get(topic)
    expect(t is not None, f"{topic} listed")
    expect(t.error is None, f"topic error {t.error}")
    expect_eq(sorted(t.partitions), [0, 1, 2], "partitions")
    for p in t.partitions.values():
        expect_eq(p.leader, broker.id, "leader")
        expect_eq(list(p.replicas), [broker.id], "replicas")
        expect_eq(list(p.isrs), [broker.id], "isr")


def check_topics(b):
    a = admin(b)
    topic = unique("topics")
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                              config={"retention.ms": "3600000"})])[topic].result(TIMEOUT)
    # Creating it again: TOPIC_ALREADY_EXISTS.
    try:
        a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(TIMEOUT)
        raise CheckFailed("creating an existing topic succeeded")
    except KafkaException as e:
        expect_eq(e.args[0].code(), KafkaError.TOPIC_ALREADY_EXISTS, "error creating it twice")
    # A validate-only creation creates nothing.
    dry = unique("dry")
    a.create_topics([NewTopic(dry, num_partitions=1, replication_factor=1)],
                    validate_only=True)[dry].result(TIMEOUT)
    expect(dry not in a.list_topics(timeout=TIMEOUT).topics, "validate_only created the topic")
    # Invalid partition count.
    bad = unique("bad")
    try:
        a.create_topics([NewTopic(bad, num_partitions=0, replication_factor=1)])[bad].result(TIMEOUT)
        raise CheckFailed("a topic with 0 partitions was created")
    except (KafkaException, ValueError):
        pass
    # Describe.
    desc = a.describe_topics(TopicCollection([topic]))[topic].result(TIMEOUT)
    expect_eq(desc.name, topic, "described name")
    expect_eq(len(desc.partitions), 2, "described partitions")
    # Delete, then it is gone.
    a.delete_topics([topic])[topic].result(TIMEOUT)
    until(10, "the topic to disappear",
          lambda: topic not in a.list_topics(timeout=TIMEOUT).topics)
    try:
        a.delete_topics([topic])[topic].result(TIMEOUT)
        raise CheckFailed("deleting a deleted topic succeeded")
    except KafkaException as e:
        expect_eq(e.args[0].code(), KafkaError.UNKNOWN_TOPIC_OR_PART, "error deleting it twice")


def check_unknown_topic(b):
    a = admin(b)
    missing = unique("missing")
    md = a.list_topics(topic=missing, timeout=TIMEOUT)
    t = md.topics.get(missing)
    expect(t is not None and t.error is not None, f"metadata for {missing}: {t}")
    expect_eq(t.error.code(), KafkaError.UNKNOWN_TOPIC_OR_PART, "metadata error")
    p = producer(b, **{"message.timeout.ms": 5000, "topic.metadata.propagation.max.ms": 1000})
    errors = []
    p.produce(missing, value=b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT)
    expect_eq(len(errors), 1, "delivery reports")
    expect(errors[0] is not None, "producing to an unknown topic succeeded")
    expect(errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC),
           f"error producing to an unknown topic: {errors[0]}")
    # A consumer subscribed to it is told the topic is unknown.
    c = consumer(b, **{"allow.auto.create.topics": False, "topic.metadata.refresh.interval.ms": 1000})
    try:
        c.subscribe([missing])
        errs = []

        def poll_error():
            m = c.poll(0.5)
            if m is not None and m.error():
                errs.append(m.error())
            return errs

        until(TIMEOUT, "a consumer error for the unknown topic", poll_error)
        expect_eq(errs[0].code(), KafkaError.UNKNOWN_TOPIC_OR_PART, "consumer error")
    finally:
        c.close()
    expect(missing not in a.list_topics(timeout=TIMEOUT).topics, "the topic was auto-created")


# --- produce and consume ---------------------------------------------------


def check_roundtrip(b):
    topic = unique("roundtrip")
    create(b, topic)
    ts = int(time.time() * 1000) - 60_000
    records = [
        (b"k0", b"v0", {"headers": [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "timestamp": ts}),
        (None, b"no key", {"timestamp": ts + 1}),
        (b"k0", None, {"timestamp": ts + 2}),  # tombstone
        (b"", b"", {"headers": [("empty", None)]}),
        ("kü".encode(), bytes(range(256)), {}),
    ]
    delivered = produce_all(producer(b), topic, records)
    expect_eq([m.offset() for m in delivered], list(range(5)), "offsets")
    got = read_partitions(b, topic, [0], 5)
    expect_eq([m.offset() for m in got], list(range(5)), "read offsets")
    expect_eq([m.key() for m in got], [r[0] for r in records], "keys")
    expect_eq([m.value() for m in got], [r[1] for r in records], "values")
    expect_eq(got[0].headers(), [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "headers")
    expect_eq(got[3].headers(), [("empty", None)], "null header value")
    expect(got[1].headers() in (None, []), f"no headers: {got[1].headers()}")
    for i in range(3):
        expect_eq(got[i].timestamp(), (1, ts + i), f"timestamp of record {i}")
    expect_eq(got[4].timestamp()[0], 1, "create time type")


def check_codecs(b):
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = unique(f"codec-{codec}")
        create(b, topic)
        records = [(f"k{i}".encode(), (f"value {i} " * 20).encode(), {"headers": [("i", str(i).encode())]})
                   for i in range(500)]
        produce_all(producer(b, **{"compression.type": codec, "linger.ms": 50}), topic, records)
        got = read_partitions(b, topic, [0], len(records))
        expect_eq([m.offset() for m in got], list(range(len(records))), f"{codec}: offsets")
        expect_eq([(m.key(), m.value()) for m in got], [(k, v) for k, v, _ in records],
                  f"{codec}: records")
        expect_eq(got[499].headers(), [("i", b"499")], f"{codec}: headers")


def check_large_messages(b):
    topic = unique("large")
    create(b, topic, config={"max.message.bytes": str(3 << 20)})
    big = [bytes([i]) * (1 << 20) for i in range(3)]
    p = producer(b, **{"message.max.bytes": 4 << 20})
    produce_all(p, topic, [(None, v, {}) for v in big])
    got = read_partitions(b, topic, [0], 3, **{"fetch.max.bytes": 4 << 20,
                                              "max.partition.fetch.bytes": 1 << 20})
    expect_eq([len(m.value()) for m in got], [1 << 20] * 3, "sizes")
    expect([m.value() for m in got] == big, "1 MiB values came back changed")


def check_oversized(b):
    topic = unique("oversized")
    create(b, topic, config={"max.message.bytes": str(1 << 20)})
    p = producer(b, **{"message.max.bytes": 8 << 20})
    errors = []
    p.produce(topic, value=b"x" * (2 << 20), on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT)
    expect(errors and errors[0] is not None, "a 2 MiB message was accepted by a 1 MiB topic")
    expect_eq(errors[0].code(), KafkaError.MSG_SIZE_TOO_LARGE, "error")
    # The topic still takes messages that fit.
    produce_all(p, topic, [(None, b"small", {})])


def check_key_partitioning(b):
    topic = unique("keys")
    create(b, topic, partitions=4)
    records = [(f"key-{i % 17}".encode(), str(i).encode(), {}) for i in range(340)]
    delivered = produce_all(producer(b), topic, records)
    where = {}
    for m in delivered:
        where.setdefault(m.key(), set()).add(m.partition())
    expect(all(len(ps) == 1 for ps in where.values()), f"a key went to two partitions: {where}")
    expect(len({next(iter(ps)) for ps in where.values()}) > 1, "17 keys all in one partition")
    got = read_partitions(b, topic, range(4), len(records))
    for m in got:
        expect_eq({m.partition()}, where[m.key()], f"partition read back for {m.key()}")


def check_order(b):
    topic = unique("order")
    create(b, topic, partitions=3)
    n = 10_000
    records = [(None, f"{i}".encode(), {"partition": i % 3}) for i in range(n)]
    produce_all(producer(b, **{"linger.ms": 20}), topic, records)
    got = read_partitions(b, topic, range(3), n)
    for p in range(3):
        values = [int(m.value()) for m in got if m.partition() == p]
        expect_eq(values, list(range(p, n, 3)), f"partition {p} in order")
        expect_eq([m.offset() for m in got if m.partition() == p], list(range(len(values))),
                  f"partition {p} offsets")


def check_offsets_for_times(b):
    topic = unique("times")
    create(b, topic)
    base = int(time.time() * 1000) - 100_000
    produce_all(producer(b), topic,
                [(None, str(i).encode(), {"timestamp": base + 1000 * i}) for i in range(10)])
    c = consumer(b)
    try:
        for ts, want in [(base, 0), (base + 4500, 5), (base + 9000, 9), (base - 1, 0)]:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=TIMEOUT)
            expect_eq(tp.offset, want, f"offset for time {ts - base}")
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 10_000)], timeout=TIMEOUT)
        expect_eq(tp.offset, -1, "offset for a time after the last record")
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        expect_eq((low, high), (0, 10), "watermarks")
    finally:
        c.close()
    a = admin(b)
    lo = a.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()})
    expect_eq(lo[TopicPartition(topic, 0)].result(TIMEOUT).offset, 0, "admin earliest")
    lo = a.list_offsets({TopicPartition(topic, 0): OffsetSpec.latest()})
    expect_eq(lo[TopicPartition(topic, 0)].result(TIMEOUT).offset, 10, "admin latest")
    lo = a.list_offsets({TopicPartition(topic, 0): OffsetSpec.max_timestamp()})
    expect_eq(lo[TopicPartition(topic, 0)].result(TIMEOUT).offset, 9, "admin max timestamp")


def check_seek(b):
    topic = unique("seek")
    create(b, topic)
    produce_all(producer(b), topic, [(None, str(i).encode(), {}) for i in range(20)])
    c = consumer(b)
    try:
        c.assign([TopicPartition(topic, 0, 10)])
        expect_eq([m.offset() for m in read(c, 3)], [10, 11, 12], "read from an assigned offset")
        c.seek(TopicPartition(topic, 0, 2))
        got = read(c, 3)
        expect_eq([m.offset() for m in got], [2, 3, 4], "read after a seek back")
        expect_eq(got[0].value(), b"2", "value after seek")
        c.seek(TopicPartition(topic, 0, 18))
        expect_eq([m.offset() for m in read(c, 2)], [18, 19], "read after a seek forward")
    finally:
        c.close()


def check_idempotent(b):
    topic = unique("idem")
    create(b, topic, partitions=2)
    p = producer(b, **{"enable.idempotence": True, "acks": "all", "linger.ms": 10})
    records = [(f"k{i % 5}".encode(), str(i).encode(), {}) for i in range(2000)]
    produce_all(p, topic, records)
    produce_all(p, topic, records[:10])
    got = read_partitions(b, topic, [0, 1], 2010)
    values = sorted(int(m.value()) for m in got)
    expect_eq(values, sorted(list(range(2000)) + list(range(10))), "exactly the produced records")
    for part in (0, 1):
        offs = [m.offset() for m in got if m.partition() == part]
        expect_eq(offs, list(range(len(offs))), f"partition {part} offsets dense")


# --- admin: configs, partitions, records ------------------------------------


def check_configs(b):
    a = admin(b)
    topic = unique("configs")
    create(b, topic, config={"retention.ms": "7200000"})
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    expect_eq(entries["retention.ms"].value, "7200000", "retention.ms as created")
    expect(not entries["retention.ms"].is_default, "retention.ms is not a default")
    expect("max.message.bytes" in entries, "max.message.bytes described")
    expect(entries["cleanup.policy"].is_default, "cleanup.policy is a default")
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([res])[res].result(TIMEOUT)
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    expect_eq(entries["retention.ms"].value, "60000", "retention.ms after alter")
    expect_eq(entries["max.message.bytes"].value, "2000000", "max.message.bytes after alter")
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    a.incremental_alter_configs([res])[res].result(TIMEOUT)
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    expect(entries["retention.ms"].is_default, "retention.ms back to its default")
    # The broker's own configs can be described too.
    md = a.list_topics(timeout=TIMEOUT)
    broker = ConfigResource(ResourceType.BROKER, str(next(iter(md.brokers))))
    a.describe_configs([broker])[broker].result(TIMEOUT)
    # An unknown topic is an error.
    res = ConfigResource(ResourceType.TOPIC, unique("nope"))
    try:
        a.describe_configs([res])[res].result(TIMEOUT)
        raise CheckFailed("describing an unknown topic's configs succeeded")
    except KafkaException as e:
        expect_eq(e.args[0].code(), KafkaError.UNKNOWN_TOPIC_OR_PART, "error")


def check_create_partitions(b):
    a = admin(b)
    topic = unique("grow")
    create(b, topic, partitions=2)
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(TIMEOUT)
    until(10, "5 partitions in metadata",
          lambda: len(a.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions) == 5)
    produce_all(producer(b), topic, [(None, str(p).encode(), {"partition": p}) for p in range(5)])
    got = read_partitions(b, topic, range(5), 5)
    expect_eq(sorted((m.partition(), m.value()) for m in got),
              [(p, str(p).encode()) for p in range(5)], "one record in each partition")
    try:
        a.create_partitions([NewPartitions(topic, 3)])[topic].result(TIMEOUT)
        raise CheckFailed("shrinking a topic succeeded")
    except KafkaException as e:
        expect_eq(e.args[0].code(), KafkaError.INVALID_PARTITIONS, "error shrinking")


def check_delete_records(b):
    a = admin(b)
    topic = unique("trim")
    create(b, topic)
    produce_all(producer(b), topic, [(None, str(i).encode(), {}) for i in range(10)])
    tp = TopicPartition(topic, 0, 4)
    done = a.delete_records([tp])[tp].result(TIMEOUT)
    expect_eq(done.low_watermark, 4, "low watermark")
    c = consumer(b)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        expect_eq((low, high), (4, 10), "watermarks after delete")
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = read(c, 6)
        expect_eq([m.offset() for m in got], list(range(4, 10)), "records left")
    finally:
        c.close()


# --- consumer groups ------------------------------------------------------


def group_consumer(b, group):
    return consumer(b, group, **{
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 20000,
    })


def poll_into(c, seen, commit=True):
    m = c.poll(0.2)
    if m is None:
        return
    if m.error():
        raise CheckFailed(f"consumer error: {m.error()}")
    seen.append((m.partition(), m.offset(), m.value()))
    if commit:
        c.commit(message=m, asynchronous=False)


def check_group_rebalance(b):
    topic = unique("group")
    group = unique("g")
    create(b, topic, partitions=4)
    first = [(None, f"a{i}".encode(), {"partition": i % 4}) for i in range(200)]
    produce_all(producer(b), topic, first)
    c1, c2 = group_consumer(b, group), group_consumer(b, group)
    assigned = {1: [], 2: []}
    c1.subscribe([topic], on_assign=lambda c, ps: assigned.__setitem__(1, [p.partition for p in ps]))
    c2.subscribe([topic], on_assign=lambda c, ps: assigned.__setitem__(2, [p.partition for p in ps]))
    seen1, seen2 = [], []

    def both_busy():
        poll_into(c1, seen1)
        poll_into(c2, seen2)
        return len(seen1) + len(seen2) >= 200 and assigned[1] and assigned[2]

    until(60, "two members to share 200 records", both_busy)
    expect_eq(sorted(assigned[1] + assigned[2]), [0, 1, 2, 3], "the two assignments cover the topic")
    expect_eq(sorted(v for _, _, v in seen1 + seen2), sorted(v for _, v, _ in first),
              "first batch read once")
    expect(set(assigned[1]).isdisjoint(assigned[2]), f"overlapping assignments {assigned}")
    # One member leaves; the other takes over its partitions from their committed offsets.
    c2.close()
    second = [(None, f"b{i}".encode(), {"partition": i % 4}) for i in range(200)]
    produce_all(producer(b), topic, second)
    seen1.clear()
    until(60, "the remaining member to read the second batch",
          lambda: poll_into(c1, seen1) or len(seen1) >= 200)
    expect_eq(sorted(assigned[1]), [0, 1, 2, 3], "the remaining member has every partition")
    expect_eq(sorted(v for _, _, v in seen1), sorted(v for _, v, _ in second),
              "second batch read once, nothing lost nor repeated")
    c1.close()
    # A new member resumes from the committed offsets.
    produce_all(producer(b), topic, [(None, b"c", {"partition": 0})])
    c3 = group_consumer(b, group)
    c3.subscribe([topic])
    seen3 = []
    until(60, "a new member to read the one new record", lambda: poll_into(c3, seen3) or seen3)
    expect_eq([v for _, _, v in seen3], [b"c"], "what a new member reads first")
    committed = c3.committed([TopicPartition(topic, p) for p in range(4)], timeout=TIMEOUT)
    expect_eq(sorted(tp.offset for tp in committed), [100, 100, 100, 101], "committed offsets")
    c3.close()


def check_group_admin(b):
    a = admin(b)
    topic = unique("gadmin")
    group = unique("ga")
    create(b, topic, partitions=2)
    produce_all(producer(b), topic, [(None, b"x", {"partition": p}) for p in (0, 1)])
    c = group_consumer(b, group)
    c.subscribe([topic])
    seen = []
    until(60, "the member to read 2 records", lambda: poll_into(c, seen) or len(seen) >= 2)
    groups = a.list_consumer_groups().result(TIMEOUT)
    ids = [g.group_id for g in groups.valid]
    expect(group in ids, f"{group} listed while active: {ids}")
    [desc] = [f.result(TIMEOUT) for f in a.describe_consumer_groups([group]).values()]
    expect_eq(len(desc.members), 1, "members while active")
    expect_eq(str(desc.state).rsplit(".", 1)[-1], "STABLE", "state while active")
    c.close()
    [desc] = [f.result(TIMEOUT) for f in a.describe_consumer_groups([group]).values()]
    expect_eq(len(desc.members), 0, "members after the member left")
    expect_eq(str(desc.state).rsplit(".", 1)[-1], "EMPTY", "state after the member left")
    [offs] = [f.result(TIMEOUT) for f in
              a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()]
    expect_eq(sorted((tp.partition, tp.offset) for tp in offs.topic_partitions), [(0, 1), (1, 1)],
              "committed offsets listed")
    [f.result(TIMEOUT) for f in a.delete_consumer_groups([group]).values()]
    ids = [g.group_id for g in a.list_consumer_groups().result(TIMEOUT).valid]
    expect(group not in ids, f"{group} still listed after delete: {ids}")


run({
    "metadata": check_metadata,
    "topics": check_topics,
    "unknown_topic": check_unknown_topic,
    "roundtrip": check_roundtrip,
    "codecs": check_codecs,
    "large_messages": check_large_messages,
    "oversized": check_oversized,
    "key_partitioning": check_key_partitioning,
    "order": check_order,
    "offsets_for_times": check_offsets_for_times,
    "seek": check_seek,
    "idempotent": check_idempotent,
    "configs": check_configs,
    "create_partitions": check_create_partitions,
    "delete_records": check_delete_records,
    "group_rebalance": check_group_rebalance,
    "group_admin": check_group_admin,
})
