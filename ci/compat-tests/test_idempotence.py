"""Idempotent producers against the real broker: kafka-python 3's default KafkaProducer() (which
is idempotent, KIP-679) and confluent-kafka with enable.idempotence=true produce and consume,
including while the broker is SIGKILLed and restarted under them: every acknowledged record is
read back exactly once."""

import signal
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer


def create_topic(broker, name, partitions):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def values(broker, topic, partitions, expected, timeout_s=60):
    """Every record's value, read from offset 0 of every partition, and the offsets per partition."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found, offsets = [], {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    idle_until = None
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            if len(found) >= expected:
                idle_until = idle_until or time.monotonic() + 2
                if time.monotonic() > idle_until:
                    break
            continue
        assert message.error() is None, message.error()
        found.append(message.value())
        offsets[message.partition()].append(message.offset())
    consumer.close()
    return found, offsets


def test_kafka_python_default_producer_is_idempotent(broker):
    create_topic(broker, "kp-idem", 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # The defaults: idempotent.
    assert producer.config["enable_idempotence"], "kafka-python 3 defaults to idempotence"
    sent = [producer.send("kp-idem", value=f"a{i}".encode()) for i in range(300)]
    producer.flush()
    assert all(future.get(timeout=30) for future in sent)

    # The same producer carries on after the broker is killed: its next sequences must be
    # accepted by the restarted broker, whose producer state came back from the disk.
    broker.restart(signal.SIGKILL)
    sent = [producer.send("kp-idem", value=f"b{i}".encode()) for i in range(300)]
    producer.flush()
    assert all(future.get(timeout=60) for future in sent)
    producer.close()

    found, offsets = values(broker, "kp-idem", 2, expected=600)
    assert sorted(found) == sorted([f"a{i}".encode() for i in range(300)] + [f"b{i}".encode() for i in range(300)])
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets)))


def test_confluent_idempotent_producer_survives_sigkill(broker):
    create_topic(broker, "ck-idem", 3)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                         "linger.ms": 2, "message.timeout.ms": 120000, "retry.backoff.ms": 50})
    delivered, failed = [], []

    def report(error, message):
        (failed if error else delivered).append((error, message.value()))

    stop = threading.Event()

    def kill_twice():
        for _ in range(2):
            time.sleep(0.7)
            broker.restart(signal.SIGKILL)
        stop.set()

    killer = threading.Thread(target=kill_twice)
    killer.start()
    index = 0
    while not stop.is_set() or index < 3000:
        producer.produce("ck-idem", value=f"c{index}".encode(), on_delivery=report)
        producer.poll(0)
        index += 1
        if index % 200 == 0:
            time.sleep(0.02)
    killer.join()
    assert producer.flush(120) == 0
    assert not failed, failed[:5]
    assert len(delivered) == index

    found, offsets = values(broker, "ck-idem", 3, expected=index)
    assert len(found) == len(set(found)), "a record was stored twice"
    assert sorted(found) == sorted(value for _, value in delivered)
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets)))
