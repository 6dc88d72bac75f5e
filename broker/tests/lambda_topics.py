"""Kafka client side of broker/tests/lambda_topics.rs (confluent-kafka, librdkafka underneath).

    python3 lambda_topics.py create BOOTSTRAP TOPIC:PARTITIONS ...
    python3 lambda_topics.py produce BOOTSTRAP TOPIC PARTITIONS START COUNT
        record i (START <= i < START + COUNT) goes to partition i % PARTITIONS with
        key "k<p>", value "v<i>", create time 1700000000000 + i ms; a flush every
        50 records makes many batches
    python3 lambda_topics.py consume BOOTSTRAP TOPIC PARTITIONS COUNT
        reads every partition from offset 0 until COUNT distinct offsets arrived;
        prints one JSON line per record: {"p", "o", "k", "v", "ts"}

The Rust test checks what it prints; this script only moves records.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 60


def create(bootstrap, specs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = []
    for spec in specs:
        name, partitions = spec.split(":")
        topics.append(NewTopic(name, num_partitions=int(partitions), replication_factor=1))
    for name, future in admin.create_topics(topics).items():
        future.result(TIMEOUT)
        print(f"created {name}")


def produce(bootstrap, topic, partitions, start, count):
    # Idempotent, so a retry under load never writes a record twice.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": True}
    )
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    for i in range(start, start + count):
        p = i % partitions
        producer.produce(
            topic,
            key=f"k{p}".encode(),
            value=f"v{i}".encode(),
            partition=p,
            timestamp=1_700_000_000_000 + i,
            on_delivery=delivered,
        )
        if i % 50 == 49:
            producer.flush(TIMEOUT)
    left = producer.flush(TIMEOUT)
    if left or failures:
        sys.exit(f"{left} records undelivered, failures: {failures[:5]}")
    print(f"produced {count}")


def consume(bootstrap, topic, partitions, count):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "lambda-topics-check",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = 0
    # A Kafka consumer delivers at least once: a re-fetch after a retried
    # request can hand out an offset again. Count each offset once; the log's
    # own duplicates would still show as extra offsets with repeated values.
    seen = set()
    redelivered = 0
    deadline = time.time() + TIMEOUT
    while got < count and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            sys.exit(f"consume error: {msg.error()}")
        if (msg.partition(), msg.offset()) in seen:
            redelivered += 1
            continue
        seen.add((msg.partition(), msg.offset()))
        key = msg.key()
        print(
            json.dumps(
                {
                    "p": msg.partition(),
                    "o": msg.offset(),
                    "k": None if key is None else key.decode(),
                    "v": msg.value().decode(),
                    "ts": msg.timestamp()[1],
                }
            )
        )
        got += 1
    consumer.close()
    if redelivered:
        print(f"note: {redelivered} records were delivered again", file=sys.stderr)
    if got < count:
        sys.exit(f"only {got} of {count} records arrived on {topic}")


def main():
    command, bootstrap, *rest = sys.argv[1:]
    if command == "create":
        create(bootstrap, rest)
    elif command == "produce":
        produce(bootstrap, rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif command == "consume":
        consume(bootstrap, rest[0], int(rest[1]), int(rest[2]))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
