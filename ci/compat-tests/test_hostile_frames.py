"""Hostile request frames against the real binary (issue 8 §1): lengths that claim far more
than the frame holds, unsupported API keys with hostile bodies, and a barrage of mutated real
clients' frames. Each may close its own connection; the broker must stay up and keep serving
real clients."""

import random
import socket
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "wire" / "fuzz" / "corpus.txt"


def send_raw(broker, body, read_timeout=2.0):
    """Sends one length-prefixed frame; returns what came back before the broker closed or
    went quiet (the connection may be closed, which is fine)."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        sock.settimeout(read_timeout)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return received


def assert_serving(broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if "hostile-alive" not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic("hostile-alive", 1, 1)])["hostile-alive"].result(timeout=30)
    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("hostile-alive", b"still here", on_delivery=lambda error, _: errors.append(error))
    assert producer.flush(30) == 0
    assert errors == [None]
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hostile"})
    low, high = consumer.get_watermark_offsets(TopicPartition("hostile-alive", 0), timeout=10)
    consumer.close()
    assert high >= 1
    assert broker.process.poll() is None, "the broker exited"


def test_huge_lengths_and_unsupported_keys_do_not_kill_the_broker(broker):
    assert_serving(broker)
    hostile = [
        # The 18-byte request from the issue: Metadata v1 asking for 2^31-1 topics.
        bytes.fromhex("0003000100000001ffff7fffffff"),
        # Metadata v12, a compact array of 2^32-2 topics.
        bytes.fromhex("0003000c00000001ffff00ffffffff0f"),
        # Keys the broker does not serve, with the same hostile body.
        bytes.fromhex("002b000000000001ffff7fffffff"),
        bytes.fromhex("0031000000000001ffff7fffffff"),
        bytes.fromhex("0037000000000001ffff7fffffff"),
    ]
    for body in hostile:
        send_raw(broker, body)
        assert broker.process.poll() is None, f"the broker died on {body.hex()}"
    assert_serving(broker)


def test_two_thousand_mutated_real_frames_do_not_kill_the_broker(broker):
    frames = [bytes.fromhex(line.split()[-1]) for line in CORPUS.read_text().splitlines()
              if line.startswith("request ")]
    rng = random.Random(8)
    for _ in range(2000):
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(8, max(9, len(frame)))
            if rng.random() < 0.5:
                frame[at:at + 4] = struct.pack(">i", rng.choice([0x7fffffff, -2, rng.getrandbits(31)]))
            else:
                frame[at:at + 1] = bytes([rng.getrandbits(8)])
        send_raw(broker, bytes(frame), read_timeout=0.05)
        assert broker.process.poll() is None, f"the broker died on {bytes(frame).hex()}"
    assert_serving(broker)
