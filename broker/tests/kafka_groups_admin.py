"""The consumer-group admin calls of confluent-kafka (librdkafka) against a
broker: list (with a state filter), describe, list/alter offsets, delete.

Usage: kafka_groups_admin.py BOOTSTRAP TOPIC GROUP
Exits non-zero (with the reason) when an answer is not what Kafka gives."""

import sys
import time

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, TOPIC, GROUP = sys.argv[1:4]
HANG_GUARD_S = 60


def check(ok, why):
    if not ok:
        print(why)
        sys.exit(1)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
for f in admin.create_topics([NewTopic(TOPIC, 2, 1)]).values():
    f.result()
producer = Producer({"bootstrap.servers": BOOTSTRAP})
for i in range(10):
    producer.produce(TOPIC, value=b"x", partition=i % 2)
check(producer.flush(30) == 0, "produce did not finish")

consumer = Consumer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": GROUP,
        "client.id": "admin-test",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.subscribe([TOPIC])
consumed = 0
start = time.monotonic()
while consumed < 10:
    check(time.monotonic() - start < HANG_GUARD_S, f"consumed only {consumed}")
    m = consumer.poll(0.2)
    if m is not None and not m.error():
        consumed += 1
consumer.commit(asynchronous=False)

stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result()
check([g.group_id for g in stable.valid] == [GROUP], f"stable groups: {stable.valid}")

described = admin.describe_consumer_groups([GROUP])[GROUP].result()
check(described.state == ConsumerGroupState.STABLE, f"state {described.state}")
check(described.partition_assignor == "range", f"assignor {described.partition_assignor}")
check(len(described.members) == 1, f"members {described.members}")
member = described.members[0]
check(member.client_id == "admin-test", f"client id {member.client_id}")
assigned = sorted((tp.topic, tp.partition) for tp in member.assignment.topic_partitions)
check(assigned == [(TOPIC, 0), (TOPIC, 1)], f"assignment {assigned}")


def offsets():
    got = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(GROUP)])[GROUP].result()
    return sorted((tp.topic, tp.partition, tp.offset) for tp in got.topic_partitions)


check(offsets() == [(TOPIC, 0, 5), (TOPIC, 1, 5)], f"committed {offsets()}")

# Offsets of a group with members cannot be altered or the group deleted.
try:
    admin.delete_consumer_groups([GROUP])[GROUP].result()
    check(False, "a group with a member was deleted")
except KafkaException as e:
    check(e.args[0].name() == "NON_EMPTY_GROUP", f"delete of a live group: {e}")

consumer.close()  # LeaveGroup: the group is empty and keeps its offsets
empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result()
check([g.group_id for g in empty.valid] == [GROUP], f"empty groups: {empty.valid}")
altered = admin.alter_consumer_group_offsets(
    [ConsumerGroupTopicPartitions(GROUP, [TopicPartition(TOPIC, 0, 3)])]
)[GROUP].result()
check(all(tp.error is None for tp in altered.topic_partitions), f"alter: {altered}")
check(offsets() == [(TOPIC, 0, 3), (TOPIC, 1, 5)], f"after alter {offsets()}")

admin.delete_consumer_groups([GROUP])[GROUP].result()
left = admin.list_consumer_groups().result()
check(left.valid == [], f"groups after delete: {left.valid}")
check(offsets() == [], f"offsets after delete {offsets()}")
print("ok")
