"""aiokafka (asyncio) against a kascade broker: see checks.py."""

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka import errors as Errors

from checks import CheckFailed, expect, expect_eq, run, unique

TIMEOUT = 30


def error_codes(obj):
    """Every error_code in a decoded response, depth first."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "error_code":
                found.append(v)
            else:
                found.extend(error_codes(v))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found.extend(error_codes(v))
    return found


def ok(resp, what):
    codes = error_codes(resp.to_object())
    expect(codes and all(c == 0 for c in codes), f"{what}: error codes {codes} in {resp}")
    return resp


class Admin:
    def __init__(self, b):
        self.a = AIOKafkaAdminClient(bootstrap_servers=b, request_timeout_ms=TIMEOUT * 1000)

    async def __aenter__(self):
        await self.a.start()
        return self.a

    async def __aexit__(self, *exc):
        await self.a.close()


async def create(b, topic, partitions=1, configs=None):
    async with Admin(b) as a:
        ok(await a.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})]),
           f"create {topic}")


async def produce_all(b, topic, records, **extra):
    conf = {"bootstrap_servers": b, "linger_ms": 5, "request_timeout_ms": TIMEOUT * 1000}
    conf.update(extra)
    p = AIOKafkaProducer(**conf)
    await p.start()
    try:
        futs = [await p.send(topic, key=k, value=v, **kw) for k, v, kw in records]
        return [await f for f in futs]
    finally:
        await p.stop()


def consumer(b, **extra):
    conf = {"bootstrap_servers": b, "group_id": None, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "request_timeout_ms": TIMEOUT * 1000}
    conf.update(extra)
    return AIOKafkaConsumer(**conf)


async def read(c, count, deadline=TIMEOUT):
    got = []
    end = time.monotonic() + deadline
    while len(got) < count:
        if time.monotonic() > end:
            raise CheckFailed(f"read {len(got)} of {count} records within {deadline}s")
        for recs in (await c.getmany(timeout_ms=500)).values():
            got.extend(recs)
    return got


async def read_partitions(b, topic, partitions, count, **extra):
    c = consumer(b, **extra)
    await c.start()
    try:
        c.assign([TopicPartition(topic, p) for p in partitions])
        await c.seek_to_beginning()
        got = await read(c, count)
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        await c.stop()


async def until(deadline_s, what, step):
    end = time.monotonic() + deadline_s
    while not step():
        if time.monotonic() > end:
            raise CheckFailed(f"gave up after {deadline_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def check_metadata(b):
    topic = unique("meta")
    await create(b, topic, partitions=3)
    async with Admin(b) as a:
        expect(topic in await a.list_topics(), "topic listed")
        [t] = await a.describe_topics([topic])
        expect_eq(t["error_code"], 0, "topic error")
        expect_eq(sorted(p["partition"] for p in t["partitions"]), [0, 1, 2], "partitions")
        cluster = await a.describe_cluster()
        expect_eq(len(cluster["brokers"]), 1, f"brokers in {cluster}")
    c = consumer(b)
    await c.start()
    try:
        expect(topic in await c.topics(), "topic seen by a consumer")
        ends = await c.end_offsets([TopicPartition(topic, p) for p in range(3)])
        expect_eq(sorted(tp.partition for tp in ends), [0, 1, 2], "partitions seen by a consumer")
    finally:
        await c.stop()


async def check_topics(b):
    topic = unique("topics")
    async with Admin(b) as a:
        ok(await a.create_topics([NewTopic(topic, 2, 1)]), "create")
        again = await a.create_topics([NewTopic(topic, 2, 1)])
        expect_eq(error_codes(again.to_object()), [Errors.TopicAlreadyExistsError.errno], "create twice")
        ok(await a.delete_topics([topic]), "delete")
        expect(topic not in await a.list_topics(), "deleted topic still listed")
        again = await a.delete_topics([topic])
        expect_eq(error_codes(again.to_object()), [Errors.UnknownTopicOrPartitionError.errno],
                  "delete twice")


async def check_unknown_topic(b):
    missing = unique("missing")
    p = AIOKafkaProducer(bootstrap_servers=b, request_timeout_ms=3000)
    await p.start()
    try:
        await asyncio.wait_for(p.send_and_wait(missing, b"x"), 10)
        raise CheckFailed("producing to an unknown topic succeeded")
    except (Errors.KafkaTimeoutError, Errors.UnknownTopicOrPartitionError, asyncio.TimeoutError):
        pass
    finally:
        await p.stop()
    async with Admin(b) as a:
        expect(missing not in await a.list_topics(), "the topic was auto-created")


async def check_roundtrip(b):
    topic = unique("roundtrip")
    await create(b, topic)
    ts = int(time.time() * 1000) - 60_000
    records = [
        (b"k0", b"v0", {"headers": [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "timestamp_ms": ts}),
        (None, b"no key", {"timestamp_ms": ts + 1}),
        (b"k0", None, {"timestamp_ms": ts + 2}),
        (b"", b"", {}),
    ]
    meta = await produce_all(b, topic, records)
    expect_eq([m.offset for m in meta], [0, 1, 2, 3], "offsets")
    got = await read_partitions(b, topic, [0], 4)
    expect_eq([r.key for r in got], [r[0] for r in records], "keys")
    expect_eq([r.value for r in got], [r[1] for r in records], "values")
    expect_eq(list(got[0].headers), [("h1", b"a"), ("h2", b""), ("h1", b"dup")], "headers")
    expect_eq([r.timestamp for r in got[:3]], [ts, ts + 1, ts + 2], "timestamps")


async def check_codecs(b):
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        topic = unique(f"codec-{codec}")
        await create(b, topic)
        records = [(f"k{i}".encode(), (f"value {i} " * 20).encode(), {}) for i in range(300)]
        await produce_all(b, topic, records, compression_type=codec, linger_ms=50)
        got = await read_partitions(b, topic, [0], len(records))
        expect_eq([r.offset for r in got], list(range(300)), f"{codec}: offsets")
        expect_eq([(r.key, r.value) for r in got], [(k, v) for k, v, _ in records], f"{codec}: records")


async def check_large_messages(b):
    topic = unique("large")
    await create(b, topic, configs={"max.message.bytes": str(3 << 20)})
    big = [bytes([i]) * (1 << 20) for i in range(2)]
    await produce_all(b, topic, [(None, v, {}) for v in big], max_request_size=4 << 20)
    got = await read_partitions(b, topic, [0], 2, max_partition_fetch_bytes=2 << 20)
    expect([r.value for r in got] == big, "1 MiB values came back changed")


async def check_oversized(b):
    topic = unique("oversized")
    await create(b, topic, configs={"max.message.bytes": str(1 << 20)})
    try:
        await produce_all(b, topic, [(None, b"x" * (2 << 20), {})], max_request_size=8 << 20)
        raise CheckFailed("a 2 MiB message was accepted by a 1 MiB topic")
    except Errors.MessageSizeTooLargeError:
        pass
    await produce_all(b, topic, [(None, b"small", {})])


async def check_key_partitioning(b):
    topic = unique("keys")
    await create(b, topic, partitions=4)
    meta = await produce_all(b, topic, [(f"key-{i % 17}".encode(), str(i).encode(), {}) for i in range(340)])
    where = {}
    for i, m in enumerate(meta):
        where.setdefault(i % 17, set()).add(m.partition)
    expect(all(len(s) == 1 for s in where.values()), f"a key in two partitions: {where}")
    expect(len({next(iter(s)) for s in where.values()}) > 1, "17 keys all in one partition")


async def check_order(b):
    topic = unique("order")
    await create(b, topic, partitions=3)
    n = 10_000
    await produce_all(b, topic, [(None, str(i).encode(), {"partition": i % 3}) for i in range(n)],
                      linger_ms=20, max_batch_size=64 * 1024)
    got = await read_partitions(b, topic, range(3), n)
    for part in range(3):
        values = [int(r.value) for r in got if r.partition == part]
        expect_eq(values, list(range(part, n, 3)), f"partition {part} in order")


async def check_offsets_for_times(b):
    topic = unique("times")
    await create(b, topic)
    base = int(time.time() * 1000) - 100_000
    await produce_all(b, topic, [(None, str(i).encode(), {"timestamp_ms": base + 1000 * i}) for i in range(10)])
    c = consumer(b)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        for ts, want in [(base, 0), (base + 4500, 5), (base + 9000, 9)]:
            got = (await c.offsets_for_times({tp: ts}))[tp]
            expect_eq((got.offset, got.timestamp), (want, base + 1000 * want), f"offset for time {ts - base}")
        expect_eq((await c.offsets_for_times({tp: base + 10_000}))[tp], None, "a time after the end")
        expect_eq((await c.beginning_offsets([tp]))[tp], 0, "beginning")
        expect_eq((await c.end_offsets([tp]))[tp], 10, "end")
    finally:
        await c.stop()


async def check_seek(b):
    topic = unique("seek")
    await create(b, topic)
    await produce_all(b, topic, [(None, str(i).encode(), {}) for i in range(20)])
    c = consumer(b, max_poll_records=3)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 10)
        expect_eq([r.offset for r in await read(c, 3)], [10, 11, 12], "after seek to 10")
        c.seek(tp, 2)
        expect_eq([r.offset for r in await read(c, 3)], [2, 3, 4], "after seek back to 2")
        await c.seek_to_end(tp)
        expect_eq(await c.position(tp), 20, "position at end")
    finally:
        await c.stop()


async def check_idempotent(b):
    topic = unique("idem")
    await create(b, topic, partitions=2)
    await produce_all(b, topic, [(f"k{i % 5}".encode(), str(i).encode(), {}) for i in range(2000)],
                      enable_idempotence=True, acks="all")
    got = await read_partitions(b, topic, [0, 1], 2000)
    expect_eq(sorted(int(r.value) for r in got), list(range(2000)), "exactly the produced records")


async def check_configs(b):
    topic = unique("configs")
    await create(b, topic, configs={"retention.ms": "7200000"})
    async with Admin(b) as a:
        def value(resps, name):
            for r in resps:
                for res in r.to_object()["resources"]:
                    for entry in res["config_entries"]:
                        if entry["config_names"] == name:
                            return entry["config_value"]
            return None

        resps = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        expect_eq(value(resps, "retention.ms"), "7200000", "retention.ms as created")
        for r in await a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       {"retention.ms": "60000"})]):
            ok(r, "alter")
        resps = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        expect_eq(value(resps, "retention.ms"), "60000", "retention.ms after alter")


async def check_create_partitions(b):
    topic = unique("grow")
    await create(b, topic, partitions=2)
    async with Admin(b) as a:
        ok(await a.create_partitions({topic: NewPartitions(4)}), "create partitions")
        [t] = await a.describe_topics([topic])
        expect_eq(len(t["partitions"]), 4, "partitions after")
    await produce_all(b, topic, [(None, b"x", {"partition": 3})])


async def check_delete_records(b):
    topic = unique("trim")
    await create(b, topic)
    await produce_all(b, topic, [(None, str(i).encode(), {}) for i in range(10)])
    async with Admin(b) as a:
        low = await a.delete_records({TopicPartition(topic, 0): RecordsToDelete(4)})
        expect_eq(low, {TopicPartition(topic, 0): 4}, "low watermarks")
    got = await read_partitions(b, topic, [0], 6)
    expect_eq([r.offset for r in got], list(range(4, 10)), "records left")


class Member:
    """A group member polling in a task of its own, committing after each batch."""

    def __init__(self, b, group, topic):
        self.c = consumer(b, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=500,
                          max_poll_interval_ms=30000)
        self.topic = topic
        self.seen = []
        self.stopping = False

    async def start(self):
        await self.c.start()
        self.c.subscribe([self.topic])
        self.task = asyncio.create_task(self.run())
        return self

    async def run(self):
        while not self.stopping:
            batch = await self.c.getmany(timeout_ms=200)
            for recs in batch.values():
                self.seen.extend((r.partition, r.offset, r.value) for r in recs)
            if batch:
                await self.c.commit()

    def assigned(self):
        return sorted(tp.partition for tp in self.c.assignment())

    async def leave(self):
        self.stopping = True
        await asyncio.wait_for(self.task, TIMEOUT)
        await self.c.stop()


async def check_group_rebalance(b):
    topic = unique("group")
    group = unique("g")
    await create(b, topic, partitions=4)
    first = [f"a{i}".encode() for i in range(200)]
    await produce_all(b, topic, [(None, v, {"partition": i % 4}) for i, v in enumerate(first)])
    m1 = await Member(b, group, topic).start()
    m2 = await Member(b, group, topic).start()
    await until(60, "two members to share 200 records",
                lambda: len(m1.seen) + len(m2.seen) >= 200 and m1.assigned() and m2.assigned())
    expect_eq(sorted(v for _, _, v in m1.seen + m2.seen), sorted(first), "first batch read once")
    expect_eq(sorted(m1.assigned() + m2.assigned()), [0, 1, 2, 3], "assignments cover the topic")
    await m2.leave()
    m1.seen.clear()
    second = [f"b{i}".encode() for i in range(200)]
    await produce_all(b, topic, [(None, v, {"partition": i % 4}) for i, v in enumerate(second)])
    await until(60, "the remaining member to read the second batch", lambda: len(m1.seen) >= 200)
    await asyncio.sleep(0.5)
    expect_eq(m1.assigned(), [0, 1, 2, 3], "the remaining member has every partition")
    expect_eq(sorted(v for _, _, v in m1.seen), sorted(second), "second batch read once")
    await m1.leave()
    await produce_all(b, topic, [(None, b"c", {"partition": 0})])
    m3 = await Member(b, group, topic).start()
    await until(60, "a new member to read the new record", lambda: m3.seen)
    await asyncio.sleep(0.5)
    await m3.leave()
    expect_eq([v for _, _, v in m3.seen], [b"c"], "what a new member reads")


async def check_group_admin(b):
    topic = unique("gadmin")
    group = unique("ga")
    await create(b, topic, partitions=2)
    await produce_all(b, topic, [(None, b"x", {"partition": q}) for q in (0, 1)])
    m = await Member(b, group, topic).start()
    await until(60, "the member to read 2 records", lambda: len(m.seen) >= 2)
    async with Admin(b) as a:
        groups = await a.list_consumer_groups()
        expect(any(g[0] == group for g in groups), f"{group} listed: {groups}")
        [desc] = await a.describe_consumer_groups([group])
        expect(group in str(desc.to_object()), f"{group} described: {desc}")
        await m.leave()
        offsets = await a.list_consumer_group_offsets(group)
        expect_eq(sorted((tp.partition, om.offset) for tp, om in offsets.items()), [(0, 1), (1, 1)],
                  "committed offsets")


def sync(fn):
    return lambda b: asyncio.run(fn(b))


run({name: sync(fn) for name, fn in {
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
}.items()})
