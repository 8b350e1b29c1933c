"""Connection limits and clean shutdown against the real binary: 1,100 idle connections do not
lock a new confluent-kafka client out, and SIGTERM under produce load exits 0 with no panic."""

import resource
import signal
import socket
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

IDLE_CONNECTIONS = 1100
CLIENT_TIMEOUT_S = 10


def nofile_raise(wanted):
    """The broker inherits this process's descriptor limit; both need one per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def fresh_broker(tmp_path):
    nofile_raise(2 * IDLE_CONNECTIONS + 256)
    instance = Broker(tmp_path / "data")
    instance.start()
    yield instance
    instance.stop()
    print(instance.log_path.read_text(errors="replace")[-4000:])


def topic_create(bootstrap, name):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(
        timeout=CLIENT_TIMEOUT_S)


def test_idle_connections_do_not_lock_out_a_new_client(fresh_broker):
    idle = [socket.create_connection(("127.0.0.1", fresh_broker.port), timeout=5)
            for _ in range(IDLE_CONNECTIONS)]
    try:
        time.sleep(0.5)  # Let the broker accept every one of them.
        producer = Producer({"bootstrap.servers": fresh_broker.bootstrap,
                             "allow.auto.create.topics": False})
        topic_create(fresh_broker.bootstrap, "after-idle")
        producer.produce("after-idle", b"served")
        assert producer.flush(CLIENT_TIMEOUT_S) == 0, "the new client was not served"
    finally:
        for sock in idle:
            sock.close()


def test_sigterm_under_produce_load_exits_cleanly(fresh_broker):
    topic_create(fresh_broker.bootstrap, "load")
    stop = threading.Event()
    delivered = []

    def produce_loop():
        producer = Producer({"bootstrap.servers": fresh_broker.bootstrap, "acks": "all",
                             "linger.ms": 1, "message.timeout.ms": 5000})
        while not stop.is_set():
            try:
                producer.produce("load", b"x" * 100,
                                 on_delivery=lambda err, msg: delivered.append(err is None))
            except BufferError:
                pass
            producer.poll(0)
        producer.flush(1)

    threads = [threading.Thread(target=produce_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        assert any(delivered), "no load reached the broker"
        process = fresh_broker.process
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    fresh_broker.process = None
    log = fresh_broker.log_path.read_text(errors="replace")
    assert returncode == 0, log[-4000:]
    assert "panic" not in log.lower(), log[-4000:]
