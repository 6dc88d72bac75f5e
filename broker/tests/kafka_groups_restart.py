"""A confluent-kafka (librdkafka) consumer across a broker restart: it
consumes half the records, the test restarts the broker on the same address,
and the consumer rejoins its group and goes on from its committed offsets.

Usage: kafka_groups_restart.py BOOTSTRAP TOPIC GROUP
Prints "paused" once half is consumed and waits for a line on stdin (the
broker has restarted); then prints one JSON line. A record counts as
processed once its offset commit succeeded; a record whose commit failed
(the group was rejoining) is left for redelivery. Exits non-zero on a record
processed twice or never. Waits are bounded only by a hang guard."""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, TOPIC, GROUP = sys.argv[1:4]
RECORDS = 100
HANG_GUARD_S = 120


def fail(why):
    print(json.dumps({"error": why}), flush=True)
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
for f in admin.create_topics([NewTopic(TOPIC, 2, 1)]).values():
    f.result()
producer = Producer({"bootstrap.servers": BOOTSTRAP, "log_level": 2})
for i in range(RECORDS):
    producer.produce(TOPIC, value=str(i).encode(), partition=i % 2)
if producer.flush(60) != 0:
    fail("produce did not finish")
del producer, admin  # only the consumer lives through the restart

consumer = Consumer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        # The restart makes connections fail for a moment; that is expected.
        "log_level": 2,
    }
)
consumer.subscribe([TOPIC])
seen = set()
commit_failures = 0


def consume_until(count):
    global commit_failures
    start = time.monotonic()
    while len(seen) < count:
        if time.monotonic() - start > HANG_GUARD_S:
            fail(f"processed only {len(seen)} of {count}")
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue  # a broker restart shows up as transient errors
        try:
            consumer.commit(message=msg, asynchronous=False)
        except KafkaException:
            commit_failures += 1
            continue
        value = int(msg.value())
        if value in seen:
            fail(f"record {value} processed twice")
        seen.add(value)


consume_until(RECORDS // 2)
print("paused", flush=True)
sys.stdin.readline()
consume_until(RECORDS)
consumer.close()
print(json.dumps({"processed": len(seen), "commit_failures": commit_failures}), flush=True)
