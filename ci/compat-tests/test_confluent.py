"""confluent-kafka (librdkafka) against the real broker: admin, produce with every compression
codec, keys and headers, read back by offset, order per partition, restart, ListOffsets by time."""

import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, name, partitions=PARTITIONS, config=None):
    client = admin(broker)  # Keep the client alive until its futures resolve.
    futures = client.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(timeout=30)


def produce(broker, topic, records, codec="none", acks="all"):
    """Produces (key, value, headers, partition) tuples; returns their delivery reports."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "compression.codec": codec,
                         "linger.ms": 5})
    reports = []

    def delivered(error, message):
        reports.append((error, message.topic(), message.partition(), message.offset(), message.key(),
                        message.value()))

    for key, value, headers, partition in records:
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
    assert producer.flush(30) == 0
    assert all(error is None for error, *_ in reports), reports
    return reports


def consume_all(broker, topic, partitions=PARTITIONS, expected=None, timeout_s=30):
    """Reads every partition from offset 0 via manual assignment."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (expected is None or len(messages) < expected):
        message = consumer.poll(0.5)
        if message is None:
            if expected is None:
                break
            continue
        if message.error():
            raise KafkaException(message.error())
        messages.append(message)
    consumer.close()
    return messages


def test_admin_create_list_describe_delete(broker):
    name = "admin-topic"
    create_topic(broker, name, partitions=2, config={"retention.ms": "3600000"})
    client = admin(broker)
    metadata = client.list_topics(timeout=10)
    assert name in metadata.topics
    assert sorted(metadata.topics[name].partitions) == [0, 1]
    leader = metadata.topics[name].partitions[0].leader
    assert leader in metadata.brokers
    # Creating it again is refused with TOPIC_ALREADY_EXISTS.
    with pytest.raises(KafkaException):
        client.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=10)
    resource = ConfigResource("topic", name)
    configs = client.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"
    client.create_partitions([NewPartitions(name, 4)])[name].result(timeout=10)
    assert len(client.list_topics(timeout=10).topics[name].partitions) == 4
    client.delete_topics([name])[name].result(timeout=10)
    assert name not in client.list_topics(timeout=10).topics


def test_invalid_topic_names_and_replication_are_refused(broker):
    client = admin(broker)
    for bad in [NewTopic("bad/name", 1, 1), NewTopic("too-replicated", 1, 3)]:
        with pytest.raises(KafkaException):
            client.create_topics([bad])[bad.topic].result(timeout=10)


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_consume_every_codec(broker, codec):
    topic = f"codec-{codec}"
    create_topic(broker, topic)
    records = []
    for i in range(300):
        key = f"key-{i % 7}".encode() if i % 2 == 0 else None
        headers = [("index", str(i).encode()), ("codec", codec.encode())]
        records.append((key, f"value-{i}".encode() * (1 + i % 5), headers, None))
    reports = produce(broker, topic, records, codec=codec)
    assert len(reports) == len(records)
    # Offsets are unique per partition.
    offsets = [(partition, offset) for _, _, partition, offset, _, _ in reports]
    assert len(set(offsets)) == len(offsets)

    messages = consume_all(broker, topic, expected=len(records))
    assert len(messages) == len(records)
    by_value = {m.value(): m for m in messages}
    for key, value, headers, _ in records:
        message = by_value[value]
        assert message.key() == key
        assert message.headers() == headers
    # Per partition, offsets read back are strictly increasing and match the delivery reports.
    for partition in range(PARTITIONS):
        read = [m.offset() for m in messages if m.partition() == partition]
        assert read == sorted(read) and len(set(read)) == len(read)
        acked = sorted(offset for _, _, p, offset, _, _ in reports if p == partition)
        assert read == acked
    # Every key lands in exactly one partition.
    partitions_by_key = {}
    for message in messages:
        if message.key() is not None:
            partitions_by_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(parts) == 1 for parts in partitions_by_key.values())


def test_explicit_partition_and_order(broker):
    topic = "ordered"
    create_topic(broker, topic)
    records = [(None, f"{i}".encode(), None, 1) for i in range(1000)]
    produce(broker, topic, records)
    messages = consume_all(broker, topic, expected=1000)
    assert [m.partition() for m in messages] == [1] * 1000
    assert [int(m.value()) for m in messages] == list(range(1000))
    assert [m.offset() for m in messages] == list(range(1000))


def test_data_survives_restart_and_kill(broker):
    topic = "durable"
    create_topic(broker, topic)
    records = [(f"k{i}".encode(), f"v{i}".encode(), None, None) for i in range(500)]
    produce(broker, topic, records)
    broker.restart(signal.SIGTERM)
    assert sorted(m.value() for m in consume_all(broker, topic, expected=500)) == sorted(r[1] for r in records)
    # acks=all means fsynced: even SIGKILL right after the acknowledgement loses nothing.
    more = [(None, f"after-{i}".encode(), None, 0) for i in range(200)]
    produce(broker, topic, more)
    broker.restart(signal.SIGKILL)
    values = {m.value() for m in consume_all(broker, topic, expected=700)}
    assert values == {r[1] for r in records + more}
    # The topic is still known after restarts, with its partition count.
    assert len(admin(broker).list_topics(timeout=10).topics[topic].partitions) == PARTITIONS


def test_offsets_for_times(broker):
    topic = "timestamps"
    create_topic(broker, topic, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    base = 1_700_000_000_000
    for i in range(10):
        producer.produce(topic, value=f"t{i}".encode(), partition=0, timestamp=base + i * 1000)
        producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "times"})
    lookups = [TopicPartition(topic, 0, base + 4500), TopicPartition(topic, 0, base - 1),
               TopicPartition(topic, 0, base + 99_000)]
    found = [consumer.offsets_for_times([tp], timeout=10)[0].offset for tp in lookups]
    assert found == [5, 0, -1]
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 10)
    consumer.close()


def test_unknown_topic_is_reported(broker):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 3000})
    errors = []
    producer.produce("no-such-topic", value=b"x", on_delivery=lambda error, _m: errors.append(error))
    producer.flush(10)
    assert errors and errors[0] is not None
