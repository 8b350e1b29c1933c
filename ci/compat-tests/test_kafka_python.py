"""kafka-python (a pure-Python client, independent of librdkafka) against the real broker."""

import signal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def consume(broker, topic, partitions, expected):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    while len(records) < expected:
        batch = consumer.poll(timeout_ms=2000)
        if not batch:
            break
        for messages in batch.values():
            records.extend(messages)
    consumer.close()
    return records


def test_admin_produce_consume_restart(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("kp-topic", num_partitions=2, replication_factor=1)])
    try:
        admin.create_topics([NewTopic("kp-topic", num_partitions=2, replication_factor=1)])
        raise AssertionError("second create should fail")
    except TopicAlreadyExistsError:
        pass
    assert "kp-topic" in admin.list_topics()
    admin.close()

    for compression in [None, "gzip"]:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=compression,
                                 enable_idempotence=False)
        futures = [producer.send("kp-topic", key=f"k{i % 5}".encode(), value=f"{compression}-{i}".encode(),
                                 headers=[("i", str(i).encode())]) for i in range(200)]
        producer.flush()
        metadata = [future.get(timeout=10) for future in futures]
        assert len({(m.partition, m.offset) for m in metadata}) == 200
        producer.close()

    records = consume(broker, "kp-topic", 2, expected=400)
    assert len(records) == 400
    for record in records:
        index = int(dict(record.headers)["i"])
        assert record.value.endswith(f"-{index}".encode())
        assert record.key == f"k{index % 5}".encode()
    for partition in range(2):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))

    broker.restart(signal.SIGKILL)
    assert len(consume(broker, "kp-topic", 2, expected=400)) == 400


def test_offsets_for_times_and_end_offsets(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("kp-times", num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    base = 1_600_000_000_000
    for i in range(5):
        producer.send("kp-times", value=b"x", partition=0, timestamp_ms=base + i * 10).get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    tp = TopicPartition("kp-times", 0)
    found = consumer.offsets_for_times({tp: base + 15})
    assert found[tp].offset == 2 and found[tp].timestamp == base + 20
    assert consumer.end_offsets([tp])[tp] == 5
    assert consumer.beginning_offsets([tp])[tp] == 0
    consumer.close()
