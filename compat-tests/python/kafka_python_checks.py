"""kafka-python against a kascade broker: see checks.py."""

import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource
from kafka import errors as Errors

from checks import CheckFailed, expect, expect_eq, run, unique, until

TIMEOUT = 30


def admin(b):
    return KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=TIMEOUT * 1000)


def create(b, topic, partitions=1, configs=None):
    a = admin(b)
    try:
        a.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                 "configs": configs or {}}})
    finally:
        a.close()


def producer(b, **extra):
    conf = {"bootstrap_servers": b, "linger_ms": 5, "request_timeout_ms": TIMEOUT * 1000}
    conf.update(extra)
    return KafkaProducer(**conf)


def produce_all(p, topic, records):
    """Sends (key, value, kwargs) records and waits for each; returns their metadata."""
    futures = [p.send(topic, key=k, value=v, **kw) for k, v, kw in records]
    p.flush(TIMEOUT)
    return [f.get(TIMEOUT) for f in futures]


def consumer(b, **extra):
    conf = {"bootstrap_servers": b, "group_id": None, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "request_timeout_ms": TIMEOUT * 1000 + 1000}
    conf.update(extra)
    return KafkaConsumer(**conf)


def read(c, count, deadline=TIMEOUT):
    got = []
    end = time.monotonic() + deadline
    while len(got) < count:
        if time.monotonic() > end:
            raise CheckFailed(f"read {len(got)} of {count} records within {deadline}s")
        for recs in c.poll(timeout_ms=500).values():
            got.extend(recs)
    return got


def read_partitions(b, topic, partitions, count, **extra):
    c = consumer(b, **extra)
    try:
        c.assign([TopicPartition(topic, p) for p in partitions])
        c.seek_to_beginning()
        got = read(c, count)
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def check_metadata(b):
    topic = unique("meta")
    create(b, topic, partitions=3)
    a = admin(b)
    try:
        expect(topic in a.list_topics(), "topic listed")
        [t] = a.describe_topics([topic])
        expect_eq(t["error_code"], 0, "topic error")
        expect_eq(sorted(p["partition_index"] for p in t["partitions"]), [0, 1, 2], "partitions")
        cluster = a.describe_cluster()
        expect_eq(len(cluster["brokers"]), 1, f"brokers in {cluster}")
    finally:
        a.close()
    c = consumer(b)
    try:
        expect_eq(c.partitions_for_topic(topic), {0, 1, 2}, "partitions seen by a consumer")
    finally:
        c.close()


def check_topics(b):
    a = admin(b)
    try:
        topic = unique("topics")
        a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
        try:
            a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
            raise CheckFailed("creating an existing topic succeeded")
        except Errors.TopicAlreadyExistsError:
            pass
        a.delete_topics([topic])
        until(10, "the topic to disappear", lambda: topic not in a.list_topics())
        try:
            a.delete_topics([topic])
            raise CheckFailed("deleting a deleted topic succeeded")
        except Errors.UnknownTopicOrPartitionError:
            pass
    finally:
        a.close()


def check_unknown_topic(b):
    missing = unique("missing")
    p = producer(b, max_block_ms=3000)
    try:
        p.send(missing, b"x").get(TIMEOUT)
        raise CheckFailed("producing to an unknown topic succeeded")
    except (Errors.KafkaTimeoutError, Errors.UnknownTopicOrPartitionError):
        pass
    finally:
        p.close()
    a = admin(b)
    try:
        expect(missing not in a.list_topics(), "the topic was auto-created")
    finally:
        a.close()


def check_roundtrip(b):
    topic = unique("roundtrip")
    create(b, topic)
    ts = int(time.time() * 1000) - 60_000
    records = [
        (b"k0", b"v0", {"headers": [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "timestamp_ms": ts}),
        (None, b"no key", {"timestamp_ms": ts + 1}),
        (b"k0", None, {"timestamp_ms": ts + 2}),
        (b"", b"", {}),
    ]
    p = producer(b)
    meta = produce_all(p, topic, records)
    p.close()
    expect_eq([m.offset for m in meta], [0, 1, 2, 3], "offsets")
    got = read_partitions(b, topic, [0], 4)
    expect_eq([r.key for r in got], [r[0] for r in records], "keys")
    expect_eq([r.value for r in got], [r[1] for r in records], "values")
    expect_eq(list(got[0].headers), [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "headers")
    expect_eq([r.timestamp for r in got[:3]], [ts, ts + 1, ts + 2], "timestamps")
    expect_eq(got[0].timestamp_type, 0, "create time")


def check_codecs(b):
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        topic = unique(f"codec-{codec}")
        create(b, topic)
        records = [(f"k{i}".encode(), (f"value {i} " * 20).encode(), {}) for i in range(300)]
        p = producer(b, compression_type=codec, linger_ms=50)
        produce_all(p, topic, records)
        p.close()
        got = read_partitions(b, topic, [0], len(records))
        expect_eq([r.offset for r in got], list(range(300)), f"{codec}: offsets")
        expect_eq([(r.key, r.value) for r in got], [(k, v) for k, v, _ in records], f"{codec}: records")


def check_large_messages(b):
    topic = unique("large")
    create(b, topic, configs={"max.message.bytes": str(3 << 20)})
    p = producer(b, max_request_size=4 << 20)
    big = [bytes([i]) * (1 << 20) for i in range(2)]
    produce_all(p, topic, [(None, v, {}) for v in big])
    p.close()
    got = read_partitions(b, topic, [0], 2, max_partition_fetch_bytes=2 << 20)
    expect([r.value for r in got] == big, "1 MiB values came back changed")


def check_oversized(b):
    topic = unique("oversized")
    create(b, topic, configs={"max.message.bytes": str(1 << 20)})
    p = producer(b, max_request_size=8 << 20, retries=0)
    try:
        p.send(topic, b"x" * (2 << 20)).get(TIMEOUT)
        raise CheckFailed("a 2 MiB message was accepted by a 1 MiB topic")
    except Errors.MessageSizeTooLargeError:
        pass
    produce_all(p, topic, [(None, b"small", {})])
    p.close()


def check_key_partitioning(b):
    topic = unique("keys")
    create(b, topic, partitions=4)
    p = producer(b)
    meta = produce_all(p, topic, [(f"key-{i % 17}".encode(), str(i).encode(), {}) for i in range(340)])
    p.close()
    where = {}
    for i, m in enumerate(meta):
        where.setdefault(i % 17, set()).add(m.partition)
    expect(all(len(s) == 1 for s in where.values()), f"a key in two partitions: {where}")
    expect(len({next(iter(s)) for s in where.values()}) > 1, "17 keys all in one partition")


def check_order(b):
    topic = unique("order")
    create(b, topic, partitions=3)
    n = 10_000
    p = producer(b, linger_ms=20, batch_size=64 * 1024)
    produce_all(p, topic, [(None, str(i).encode(), {"partition": i % 3}) for i in range(n)])
    p.close()
    got = read_partitions(b, topic, range(3), n)
    for part in range(3):
        values = [int(r.value) for r in got if r.partition == part]
        expect_eq(values, list(range(part, n, 3)), f"partition {part} in order")


def check_offsets_for_times(b):
    topic = unique("times")
    create(b, topic)
    base = int(time.time() * 1000) - 100_000
    p = producer(b)
    produce_all(p, topic, [(None, str(i).encode(), {"timestamp_ms": base + 1000 * i}) for i in range(10)])
    p.close()
    c = consumer(b)
    try:
        tp = TopicPartition(topic, 0)
        for ts, want in [(base, 0), (base + 4500, 5), (base + 9000, 9)]:
            got = c.offsets_for_times({tp: ts})[tp]
            expect_eq(got.offset, want, f"offset for time {ts - base}")
            expect_eq(got.timestamp, base + 1000 * want, "its timestamp")
        expect_eq(c.offsets_for_times({tp: base + 10_000})[tp], None, "a time after the end")
        expect_eq(c.beginning_offsets([tp])[tp], 0, "beginning")
        expect_eq(c.end_offsets([tp])[tp], 10, "end")
    finally:
        c.close()


def check_seek(b):
    topic = unique("seek")
    create(b, topic)
    p = producer(b)
    produce_all(p, topic, [(None, str(i).encode(), {}) for i in range(20)])
    p.close()
    c = consumer(b, max_poll_records=3)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 10)
        expect_eq([r.offset for r in read(c, 3)], [10, 11, 12], "after seek to 10")
        c.seek(tp, 2)
        expect_eq([r.offset for r in read(c, 3)], [2, 3, 4], "after seek back to 2")
        c.seek_to_end(tp)
        expect_eq(c.position(tp), 20, "position at end")
    finally:
        c.close()


def check_idempotent(b):
    topic = unique("idem")
    create(b, topic, partitions=2)
    p = producer(b, enable_idempotence=True, acks="all")
    produce_all(p, topic, [(f"k{i % 5}".encode(), str(i).encode(), {}) for i in range(2000)])
    p.close()
    got = read_partitions(b, topic, [0, 1], 2000)
    expect_eq(sorted(int(r.value) for r in got), list(range(2000)), "exactly the produced records")


def check_configs(b):
    topic = unique("configs")
    create(b, topic, configs={"retention.ms": "7200000"})
    a = admin(b)
    try:
        res = a.describe_configs([ConfigResource("topic", topic)], config_filter="all")
        configs = res["topic"][topic]
        expect_eq(configs["retention.ms"]["value"], "7200000", "retention.ms as created")
        expect("max.message.bytes" in configs, "max.message.bytes described")
        a.alter_configs([ConfigResource("topic", topic, configs={"retention.ms": "60000"})],
                        raise_on_unknown=False)
        res = a.describe_configs([ConfigResource("topic", topic)], config_filter="all")
        expect_eq(res["topic"][topic]["retention.ms"]["value"], "60000", "retention.ms after alter")
    finally:
        a.close()


def check_create_partitions(b):
    topic = unique("grow")
    create(b, topic, partitions=2)
    a = admin(b)
    try:
        a.create_partitions({topic: 4})
        until(10, "4 partitions", lambda: len(a.describe_topics([topic])[0]["partitions"]) == 4)
    finally:
        a.close()
    p = producer(b)
    produce_all(p, topic, [(None, b"x", {"partition": 3})])
    p.close()


def check_delete_records(b):
    topic = unique("trim")
    create(b, topic)
    p = producer(b)
    produce_all(p, topic, [(None, str(i).encode(), {}) for i in range(10)])
    p.close()
    a = admin(b)
    try:
        a.delete_records({TopicPartition(topic, 0): 4})
    finally:
        a.close()
    c = consumer(b)
    try:
        expect_eq(c.beginning_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)], 4,
                  "beginning after delete")
    finally:
        c.close()
    got = read_partitions(b, topic, [0], 6)
    expect_eq([r.offset for r in got], list(range(4, 10)), "records left")


class Member(threading.Thread):
    """A group member polling on a thread of its own, committing after each poll."""

    def __init__(self, b, group, topic):
        super().__init__(daemon=True)
        self.c = consumer(b, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=500,
                          max_poll_interval_ms=30000, auto_offset_reset="earliest")
        self.c.subscribe([topic])
        self.seen = []
        self.stop = threading.Event()
        self.error = None
        self.start()

    def run(self):
        try:
            while not self.stop.is_set():
                # A long poll: kafka-python 3.0.12 can leave its heartbeat off when
                # a poll times out in the middle of a rebalance.
                batch = self.c.poll(timeout_ms=2000)
                for recs in batch.values():
                    self.seen.extend((r.partition, r.offset, r.value) for r in recs)
                if batch:
                    self.c.commit()
        except Exception as e:  # noqa: BLE001 - reported by the check
            self.error = e
        finally:
            self.c.close(autocommit=False)

    def assigned(self):
        return sorted(tp.partition for tp in self.c.assignment())

    def leave(self):
        self.stop.set()
        self.join(TIMEOUT)
        if self.error:
            raise CheckFailed(f"member failed: {self.error!r}")


def check_group_rebalance(b):
    topic = unique("group")
    group = unique("g")
    create(b, topic, partitions=4)
    p = producer(b)
    first = [f"a{i}".encode() for i in range(200)]
    produce_all(p, topic, [(None, v, {"partition": i % 4}) for i, v in enumerate(first)])
    m1, m2 = Member(b, group, topic), Member(b, group, topic)
    until(60, "two members to share 200 records",
          lambda: len(m1.seen) + len(m2.seen) >= 200 and m1.assigned() and m2.assigned())
    expect_eq(sorted(v for _, _, v in m1.seen + m2.seen), sorted(first), "first batch read once")
    expect_eq(sorted(m1.assigned() + m2.assigned()), [0, 1, 2, 3], "assignments cover the topic")
    m2.leave()
    m1.seen.clear()
    second = [f"b{i}".encode() for i in range(200)]
    produce_all(p, topic, [(None, v, {"partition": i % 4}) for i, v in enumerate(second)])
    until(60, "the remaining member to read the second batch", lambda: len(m1.seen) >= 200)
    time.sleep(0.5)
    expect_eq(m1.assigned(), [0, 1, 2, 3], "the remaining member has every partition")
    expect_eq(sorted(v for _, _, v in m1.seen), sorted(second), "second batch read once")
    m1.leave()
    produce_all(p, topic, [(None, b"c", {"partition": 0})])
    p.close()
    m3 = Member(b, group, topic)
    until(60, "a new member to read the new record", lambda: m3.seen)
    time.sleep(0.5)
    m3.leave()
    expect_eq([v for _, _, v in m3.seen], [b"c"], "what a new member reads")


def check_group_admin(b):
    topic = unique("gadmin")
    group = unique("ga")
    create(b, topic, partitions=2)
    p = producer(b)
    produce_all(p, topic, [(None, b"x", {"partition": q}) for q in (0, 1)])
    p.close()
    m = Member(b, group, topic)
    until(60, "the member to read 2 records", lambda: len(m.seen) >= 2)
    a = admin(b)
    try:
        groups = a.list_groups()
        expect(group in str(groups), f"{group} listed: {groups}")
        desc = a.describe_groups([group])
        expect(group in str(desc), f"{group} described: {desc}")
        m.leave()
        offsets = a.list_group_offsets({group: None})[group]
        expect_eq(sorted((tp.partition, om.offset) for tp, om in offsets.items()), [(0, 1), (1, 1)],
                  "committed offsets")
        a.delete_groups([group])
        expect(group not in str(a.list_groups()), "listed after delete")
    finally:
        a.close()


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
