"""Issue 8, sections 2 and 4: poison batches against the real binary.

Each poison batch has a valid CRC (only its records are wrong), is sent in a hand-built Produce
v8 request over a raw socket, and must be refused with its Kafka error code and a message. The
partition must stay fully readable by confluent-kafka and kafka-python afterwards. Then a poison
batch is planted in a stopped broker's segment (as an old broker would have stored it) to show
that `gregor consume` reports it with its offset and stops, or skips it when asked."""

import socket
import struct
import subprocess

import pytest
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPartition

from conftest import BINARY

CORRUPT_MESSAGE = 2
INVALID_RECORD = 87


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(value: int) -> bytes:
    raw = (value << 1) ^ (value >> 63)
    raw &= (1 << 64) - 1
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def record(offset_delta: int, value: bytes, key: bytes = None) -> bytes:
    body = b"\x00" + varint(0) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(len(value)) + value + varint(0)
    return varint(len(body)) + body


def batch(section: bytes, count: int, attributes: int = 0, producer_id: int = -1,
          base_offset: int = 0, timestamp: int = 1000) -> bytes:
    """A RecordBatch v2 with a valid CRC around `section`; lastOffsetDelta is count - 1."""
    after_crc = struct.pack(">hiqqqhii", attributes, count - 1, timestamp, timestamp,
                            producer_id, -1, -1, count) + section
    crc = crc32c(after_crc)
    length = 4 + 1 + 4 + len(after_crc)  # partitionLeaderEpoch, magic, crc, the rest
    return struct.pack(">qiibI", base_offset, length, 0, 2, crc) + after_crc


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def produce(bootstrap: str, topic: str, records: bytes):
    """Sends one Produce v8 with acks=all; returns (error_code, error_message)."""
    body = struct.pack(">hhi", 0, 8, 7) + string("poison-test")
    body += struct.pack(">hhi", -1, -1, 5000)  # transactional_id null, acks, timeout
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
    body += struct.pack(">ii", 0, len(records)) + records
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        response = _read_frame(sock)
    # correlation id, topics[1], name, partitions[1], index, error_code, base_offset,
    # log_append_time, log_start_offset, record_errors[], error_message
    position = 4 + 4
    (name_length,) = struct.unpack_from(">h", response, position)
    position += 2 + name_length + 4 + 4
    (error_code,) = struct.unpack_from(">h", response, position)
    position += 2 + 8 + 8 + 8
    (record_error_count,) = struct.unpack_from(">i", response, position)
    assert record_error_count in (0, -1)
    position += 4
    (message_length,) = struct.unpack_from(">h", response, position)
    message = response[position + 2:position + 2 + message_length].decode() if message_length >= 0 else None
    return error_code, message


def _read_frame(sock) -> bytes:
    def exactly(count):
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data
    (length,) = struct.unpack(">i", exactly(4))
    return exactly(length)


ONE = record(0, b"poison")
POISON = {
    "garbage record bytes": (batch(b"\xff" * 20, 1), CORRUPT_MESSAGE),
    "record count 3 with 1 record": (batch(ONE, 3), CORRUPT_MESSAGE),
    "codec 7": (batch(ONE, 1, attributes=7), CORRUPT_MESSAGE),
    "gzip flag on a plain body": (batch(ONE, 1, attributes=1), CORRUPT_MESSAGE),
    "record length 2^40": (batch(varint(1 << 40) + ONE[1:], 1), CORRUPT_MESSAGE),
    "transactional bit with producerId -1": (batch(ONE, 1, attributes=0x10), INVALID_RECORD),
}


@pytest.fixture(scope="module")
def poisoned_topic(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("poison", num_partitions=1, replication_factor=1)]).values():
        future.result(10)
    # The hand-built batch is accepted when it is well-formed: the builder and CRC are right.
    assert produce(broker.bootstrap, "poison", batch(record(0, b"raw-0"), 1)) == (0, None)
    return "poison"


@pytest.mark.parametrize("name", list(POISON))
def test_poison_batch_is_refused(broker, poisoned_topic, name):
    records, expected = POISON[name]
    error_code, message = produce(broker.bootstrap, poisoned_topic, records)
    assert error_code == expected, message
    assert message, "a refusal says why"


def _values_confluent(bootstrap, topic):
    consumer = ConfluentConsumer({"bootstrap.servers": bootstrap, "group.id": "poison-check",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([ConfluentPartition(topic, 0, 0)])
    values = []
    while True:
        message = consumer.poll(10)
        assert message is not None, f"confluent-kafka stalled after {values}"
        if message.error():
            assert message.error().code() == -191, message.error()  # _PARTITION_EOF
            break
        values.append((message.offset(), message.value()))
    consumer.close()
    return values


def _values_kafka_python(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    partition = KafkaPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    end = consumer.end_offsets([partition])[partition]
    values = []
    while consumer.position(partition) < end:
        for messages in consumer.poll(timeout_ms=5000).values():
            values.extend((message.offset, message.value) for message in messages)
    consumer.close()
    return values


def test_poisoned_partition_stays_readable(broker, poisoned_topic):
    for _, (records, _) in POISON.items():
        produce(broker.bootstrap, poisoned_topic, records)
    confluent = ConfluentProducer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    confluent.produce(poisoned_topic, b"confluent-1", partition=0)
    assert confluent.flush(10) == 0
    kafka_python = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    kafka_python.send(poisoned_topic, b"kafka-python-2", partition=0).get(timeout=10)
    kafka_python.close()
    expected = [(0, b"raw-0"), (1, b"confluent-1"), (2, b"kafka-python-2")]
    assert _values_confluent(broker.bootstrap, poisoned_topic) == expected
    assert _values_kafka_python(broker.bootstrap, poisoned_topic) == expected


def _consume_cli(bootstrap, *flags):
    return subprocess.run(
        [str(BINARY), "consume", "cli-poison", "--bootstrap", bootstrap, "--from-beginning",
         "--idle-timeout-ms", "2000", *flags],
        capture_output=True, text=True, timeout=60)


def test_cli_consume_stops_at_a_poisoned_batch(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("cli-poison", num_partitions=1, replication_factor=1)]).values():
        future.result(10)
    good = batch(record(0, b"a") + record(1, b"b") + record(2, b"c"), 3)
    assert produce(broker.bootstrap, "cli-poison", good)[0] == 0
    # Plant what an unvalidating broker stored: CRC-valid, codec 7, then one good record.
    broker.stop()
    segment = broker.data_dir / "cli-poison-0" / "00000000000000000000.log"
    with open(segment, "ab") as log:
        log.write(batch(record(0, b"x"), 1, attributes=7, base_offset=3))
        log.write(batch(record(0, b"d"), 1, base_offset=4))
    broker.start()

    stopped = _consume_cli(broker.bootstrap)
    assert stopped.returncode != 0
    assert stopped.stdout.split() == ["a", "b", "c"], "each record printed once"
    assert "corrupt record batch at offset 3 of cli-poison-0" in stopped.stderr, stopped.stderr

    skipped = _consume_cli(broker.bootstrap, "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.split() == ["a", "b", "c", "d"]
    assert "skipping offsets 3..4 of cli-poison-0" in skipped.stderr, skipped.stderr
