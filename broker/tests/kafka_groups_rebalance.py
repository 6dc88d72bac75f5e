"""Two consumers in one group with confluent-kafka (librdkafka): one leaves,
the other takes over its partitions from the committed offsets.

Usage: kafka_groups_rebalance.py BOOTSTRAP TOPIC GROUP [ASSIGNOR]

A record counts as processed once its offset commit succeeded (commit after
each record, synchronously): a record whose commit failed in a rebalance is
processed again, by whoever owns its partition next (the consumer seeks back
to it if it still does, as an application retrying would). The script fails on a record processed twice or never.
It prints one JSON line with what each consumer processed. Every wait is
bounded by a generous deadline that only guards against a hang."""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, TOPIC, GROUP = sys.argv[1:4]
ASSIGNOR = sys.argv[4] if len(sys.argv) > 4 else "range"
PARTITIONS = 4
RECORDS = 400
FIRST_SHARE = 40  # records the first consumer processes before it leaves
HANG_GUARD_S = 120


def fail(why):
    print(json.dumps({"error": why, "assignor": ASSIGNOR}))
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
    f.result()

producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
for i in range(RECORDS):
    producer.produce(TOPIC, value=str(i).encode(), partition=i % PARTITIONS)
if producer.flush(60) != 0:
    fail("produce did not finish")


def consumer(name):
    return Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": GROUP,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": ASSIGNOR,
        }
    )


seen = {}  # value -> consumer that processed it
processed = {"c1": [], "c2": []}  # (partition, offset) in order
commit_failures = {}  # error name -> count


def take(name, c, msg, quota=None):
    """Processes one polled record: commit it, then count it."""
    if msg is None:
        return
    if msg.error():
        fail(f"{name}: {msg.error()}")
    if quota is not None and len(processed[name]) >= quota:
        return  # over its share: left uncommitted for whoever owns it next
    try:
        c.commit(message=msg, asynchronous=False)
    except KafkaException as e:
        # Fenced by a rebalance: not processed. Read it again if the partition
        # is still ours (an incremental rebalance keeps it); if it is not,
        # its next owner starts from the committed offset.
        name = e.args[0].name()
        commit_failures[name] = commit_failures.get(name, 0) + 1
        try:
            c.seek(TopicPartition(TOPIC, msg.partition(), msg.offset()))
        except KafkaException:
            pass
        return
    value = int(msg.value())
    if value in seen:
        fail(f"record {value} processed twice: by {seen[value]} and {name}")
    seen[value] = name
    processed[name].append((msg.partition(), msg.offset()))


c1, c2 = consumer("c1"), consumer("c2")
c1.subscribe([TOPIC])
c2.subscribe([TOPIC])
start = time.monotonic()


def check_hang(what):
    if time.monotonic() - start > HANG_GUARD_S:
        fail(f"gave up waiting for {what}; processed {len(seen)} records")


# Phase 1: both members share the partitions and c1 has done its share.
while not (
    len(processed["c1"]) >= FIRST_SHARE
    and c1.assignment()
    and c2.assignment()
    and len(c1.assignment()) + len(c2.assignment()) == PARTITIONS
):
    check_hang("both consumers to share the topic")
    take("c1", c1, c1.poll(0.05), quota=FIRST_SHARE)
    take("c2", c2, c2.poll(0.05))
c1_partitions = sorted(tp.partition for tp in c1.assignment())

# Phase 2: c1 leaves (LeaveGroup); c2 takes over from c1's committed offsets.
c1.close()
while len(seen) < RECORDS:
    check_hang("the remaining consumer to finish")
    take("c2", c2, c2.poll(0.1))
c2_partitions = sorted(tp.partition for tp in c2.assignment())
c2.close()

taken_over = [po for po in processed["c2"] if po[0] in c1_partitions]
print(
    json.dumps(
        {
            "processed": len(seen),
            "c1": len(processed["c1"]),
            "c2": len(processed["c2"]),
            "c1_partitions": c1_partitions,
            "c2_final_partitions": c2_partitions,
            "taken_over": len(taken_over),
            "commit_failures": commit_failures,
        }
    )
)
