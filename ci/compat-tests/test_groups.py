"""Consumer groups with real clients: three group members share a 6-partition topic, one is killed
(SIGKILL, so it neither commits nor leaves), the other two take over its partitions after its
session expires; every produced message is consumed at least once, and the committed offsets
survive a SIGKILL restart of the broker. Run once with confluent-kafka (librdkafka) and once with
kafka-python's group consumer. Each member is its own process so that the kill is real.

Run as a script (`python test_groups.py worker ...`) this file is one group member."""

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PARTITIONS = 6
MESSAGES_PER_PHASE = 300
SESSION_TIMEOUT_MS = 6000  # The broker's group.min.session.timeout.ms: failover is quick.
DEADLINE_S = 90


# ---- The group member process. ----

def worker_confluent(bootstrap, topic, group, out):
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500,
                         "partition.assignment.strategy": "range"})
    assigned = []

    def on_assign(_consumer, partitions):
        assigned[:] = [p.partition for p in partitions]
        out.write(json.dumps({"assigned": assigned}) + "\n")
        out.flush()

    consumer.subscribe([topic], on_assign=on_assign)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        out.write(json.dumps({"partition": message.partition(), "offset": message.offset(),
                              "value": message.value().decode()}) + "\n")
        out.flush()
        consumer.commit(message=message, asynchronous=False)
    consumer.close()  # Leaves the group.


def worker_kafka_python(bootstrap, topic, group, out):
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=500)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            out.write(json.dumps({"assigned": sorted(p.partition for p in assigned)}) + "\n")
            out.flush()

    consumer.subscribe([topic], listener=Listener())
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        batch = consumer.poll(timeout_ms=200)
        for messages in batch.values():
            for message in messages:
                out.write(json.dumps({"partition": message.partition, "offset": message.offset,
                                      "value": message.value.decode()}) + "\n")
        out.flush()
        if batch:
            consumer.commit()
    consumer.close()


WORKERS = {"confluent": worker_confluent, "kafka-python": worker_kafka_python}


# ---- The test, driving the member processes. ----

class Member:
    def __init__(self, client, broker, topic, group, directory: Path, index):
        self.path = directory / f"{client}-{index}.jsonl"
        self.path.touch()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "worker", client, broker.bootstrap, topic, group, str(self.path)],
            stderr=open(directory / f"{client}-{index}.stderr", "w"))

    def events(self):
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def values(self):
        return {event["value"] for event in self.events() if "value" in event}

    def assignment(self):
        assigned = [event["assigned"] for event in self.events() if "assigned" in event]
        return assigned[-1] if assigned else None

    def stop(self, sig):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=30)


def wait_until(condition, what, timeout_s=DEADLINE_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def produce(broker, topic, start, count):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for index in range(start, start + count):
        producer.produce(topic, key=f"k{index}".encode(), value=f"m{index}".encode())
    assert producer.flush(30) == 0


def committed(broker, topic, group):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def end_offsets(broker, topic):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)}
    consumer.close()
    return ends


@pytest.mark.parametrize("client", sorted(WORKERS))
def test_group_failover_and_durable_offsets(broker, tmp_path, client):
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = f"groups-{client}", f"group-{client}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    produce(broker, topic, 0, MESSAGES_PER_PHASE)

    members = [Member(client, broker, topic, group, tmp_path, index) for index in range(3)]
    try:
        # The group forms: every member owns two of the six partitions, and reads.
        def divided():
            assignments = [m.assignment() for m in members]
            return all(a is not None and len(a) == 2 for a in assignments) and \
                sorted(p for a in assignments for p in a) == list(range(PARTITIONS))
        wait_until(divided, "three members with two partitions each")
        wait_until(lambda: all(m.values() for m in members), "every member consuming")

        # Crash one member: no commit, no LeaveGroup. Its session expires; the others take over.
        victim = members.pop()
        victim.stop(signal.SIGKILL)
        orphaned = victim.assignment()
        produce(broker, topic, MESSAGES_PER_PHASE, MESSAGES_PER_PHASE)
        wait_until(lambda: all(m.assignment() and len(m.assignment()) == 3 for m in members),
                   "the survivors to take over the victim's partitions")
        expected = {f"m{i}" for i in range(2 * MESSAGES_PER_PHASE)}
        wait_until(lambda: expected <= set().union(victim.values(), *(m.values() for m in members)),
                   "every message consumed at least once")
        survivors_read = set().union(*(m.values() for m in members))
        taken_over = {e["partition"] for m in members for e in m.events() if "value" in e}
        assert set(orphaned) <= taken_over, "the victim's partitions were read by the survivors"
        assert {f"m{i}" for i in range(MESSAGES_PER_PHASE, 2 * MESSAGES_PER_PHASE)} <= survivors_read
    finally:
        for member in members:
            member.stop(signal.SIGTERM)

    # Every message was consumed and committed: committed offsets are the log ends, durably.
    ends = end_offsets(broker, topic)
    assert sum(ends.values()) == 2 * MESSAGES_PER_PHASE
    assert committed(broker, topic, group) == ends
    broker.restart(signal.SIGKILL)
    assert committed(broker, topic, group) == ends


def test_admin_lists_describes_and_deletes_groups(broker):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = "groups-admin", "group-admin"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    # A simple consumer (assign(), generation -1) commits to an empty group.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)],
                    asynchronous=False)
    consumer.close()
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group in {g.group_id for g in listed.valid}
    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert described.state.name == "EMPTY" and not described.members
    admin.delete_consumer_groups([group])[group].result(timeout=30)
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}

    # The internal topic is listed, but users cannot write to it (INVALID_TOPIC_EXCEPTION).
    assert "__consumer_offsets" in admin.list_topics(timeout=10).topics
    from confluent_kafka import KafkaError, Producer
    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 10000})
    producer.produce("__consumer_offsets", value=b"forged", partition=0,
                     on_delivery=lambda error, _message: errors.append(error))
    producer.flush(30)
    assert errors and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors


if __name__ == "__main__" and sys.argv[1] == "worker":
    _, _, worker_client, worker_bootstrap, worker_topic, worker_group, worker_out = sys.argv
    with open(worker_out, "a") as worker_file:
        WORKERS[worker_client](worker_bootstrap, worker_topic, worker_group, worker_file)
