"""Time retention against the real broker (issue 8): records that confluent-kafka produces with
`timestamp=-1` (librdkafka's "no timestamp"; its header says MaxTimestamp 0) must survive
retention passes on a topic with the default 7-day retention.ms, as in Kafka, which ages such a
segment by its last modification. A control topic with a valid 1970 timestamp proves the passes
ran: Kafka deletes that one by time at once, and so must we."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

CHECK_INTERVAL_MS = 200
RECORDS = 5


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gregor") / "data"
    instance = Broker(data_dir, extra_args=["--retention-check-interval-ms", str(CHECK_INTERVAL_MS)])
    instance.start()
    yield instance
    instance.stop()
    print(instance.log_path.read_text(errors="replace")[-4000:])


def create_topic(broker, name):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)


def produce(broker, topic, timestamp):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    reports = []
    for index in range(RECORDS):
        producer.produce(topic, value=f"v{index}".encode(), timestamp=timestamp,
                         on_delivery=lambda error, message: reports.append(error))
    assert producer.flush(30) == 0
    assert reports == [None] * RECORDS


def consumer(broker):
    return Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{uuid.uuid4()}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def watermarks(broker, topic):
    client = consumer(broker)
    try:
        return client.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        client.close()


def test_untimed_records_survive_retention_passes(broker):
    untimed, control = f"untimed-{uuid.uuid4().hex[:8]}", f"epoch-{uuid.uuid4().hex[:8]}"
    create_topic(broker, untimed)
    create_topic(broker, control)
    produce(broker, untimed, timestamp=-1)
    produce(broker, control, timestamp=1_000)
    # The control topic's records are 56 years older than retention.ms: a pass deletes them.
    deadline = time.monotonic() + 30
    while watermarks(broker, control) != (RECORDS, RECORDS):
        assert time.monotonic() < deadline, f"no retention pass ran: {watermarks(broker, control)}"
        time.sleep(CHECK_INTERVAL_MS / 1000)
    # A few more passes, then the untimed records are all still there.
    time.sleep(5 * CHECK_INTERVAL_MS / 1000)
    assert watermarks(broker, untimed) == (0, RECORDS)
    client = consumer(broker)
    client.assign([TopicPartition(untimed, 0, 0)])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < RECORDS and time.monotonic() < deadline:
        message = client.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        values.append(message.value())
    client.close()
    assert values == [f"v{index}".encode() for index in range(RECORDS)]
