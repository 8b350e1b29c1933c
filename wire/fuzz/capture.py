#!/usr/bin/env python3
"""Captures real clients' frames for the wire fuzz corpus (wire/fuzz/corpus.txt).

Starts a gregor broker, puts a recording TCP proxy in front of it, and drives confluent-kafka
(librdkafka) and kafka-python through the proxy: metadata, topic admin, produce (plain and
compressed), fetch, list offsets, and a consumer group that commits. Every request frame, and
every response frame with the API key and version of its request, is kept (a few per key and
version) as one hex line: `request HEX` or `response KEY VERSION HEX`.

Usage (from the repository root, after ci/setup-compat and cargo build --bin gregor):
    .venv/bin/python wire/fuzz/capture.py target/debug/gregor > wire/fuzz/corpus.txt
"""

import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

FRAMES_PER_KIND = 3
BROKER_PORT = 29391
PROXY_PORT = 29392


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.lines = {}
        self.pending = {}  # correlation id -> (api key, version), per connection

    def keep(self, kind, line):
        with self.lock:
            kept = self.lines.setdefault(kind, [])
            if len(kept) < FRAMES_PER_KIND and line not in kept:
                kept.append(line)


def read_frame(sock):
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (length,) = struct.unpack(">i", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            return None
        body += chunk
    return header + body


def pump(source, sink, recorder, in_flight, direction):
    try:
        forward(source, sink, recorder, in_flight, direction)
    except OSError:
        pass  # The other direction closed the connection.
    for sock in [source, sink]:
        sock.close()


def forward(source, sink, recorder, in_flight, direction):
    while True:
        frame = read_frame(source)
        if frame is None:
            return
        body = frame[4:]
        if direction == "request":
            key, version, correlation = struct.unpack(">hhi", body[:8])
            in_flight[correlation] = (key, version)
            recorder.keep(("request", key, version), "request " + body.hex())
        else:
            (correlation,) = struct.unpack(">i", body[:4])
            key, version = in_flight.pop(correlation, (None, None))
            if key is not None:
                recorder.keep(("response", key, version), f"response {key} {version} {body.hex()}")
        sink.sendall(frame)


def proxy(recorder):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PROXY_PORT))
    listener.listen()
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", BROKER_PORT))
        in_flight = {}
        for args in [(client, upstream, "request"), (upstream, client, "response")]:
            threading.Thread(target=pump, args=(*args[:2], recorder, in_flight, args[2]), daemon=True).start()


def drive_confluent(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic("corpus-c", 2, 1)]).values():
        future.result()
    for compression in ["none", "gzip", "snappy", "lz4", "zstd"]:
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": compression, "linger.ms": 5})
        for i in range(20):
            producer.produce("corpus-c", key=f"k{i}".encode(), value=b"v" * i, headers=[("h", b"x")])
        producer.flush(10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "corpus-g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["corpus-c"])
    deadline = time.time() + 15
    seen = 0
    while seen < 100 and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    consumer.commit(asynchronous=False)
    consumer.get_watermark_offsets(TopicPartition("corpus-c", 0))
    consumer.close()
    admin.describe_configs([__import__("confluent_kafka.admin", fromlist=["ConfigResource"]).ConfigResource("topic", "corpus-c")])
    for future in admin.delete_topics(["corpus-c"]).values():
        future.result()


def drive_kafka_python(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("corpus-p", 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    for i in range(20):
        producer.send("corpus-p", key=b"k", value=b"v" * i)
    producer.flush()
    consumer = KafkaConsumer("corpus-p", bootstrap_servers=bootstrap, group_id="corpus-gp",
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    for _ in consumer:
        pass
    consumer.commit()
    consumer.close()
    admin.delete_topics(["corpus-p"])


def main():
    binary = sys.argv[1]
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as data:
        broker = subprocess.Popen([binary, "broker", "--listen", f"127.0.0.1:{BROKER_PORT}",
                                   "--advertise", f"127.0.0.1:{PROXY_PORT}", "--data-dir", data],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            threading.Thread(target=proxy, args=(recorder,), daemon=True).start()
            time.sleep(1.0)
            bootstrap = f"127.0.0.1:{PROXY_PORT}"
            for drive in [drive_confluent, drive_kafka_python]:
                try:
                    drive(bootstrap)
                except Exception as error:  # Keep what was captured; say what failed.
                    print(f"# {drive.__name__} stopped: {error}", file=sys.stderr)
        finally:
            broker.terminate()
            broker.wait()
    print("# Real clients' frames (wire/fuzz/capture.py): `request HEX` or `response KEY VERSION HEX`.")
    for kind in sorted(recorder.lines, key=str):
        for line in recorder.lines[kind]:
            print(line)


if __name__ == "__main__":
    main()
