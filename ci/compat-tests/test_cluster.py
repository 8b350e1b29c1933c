"""Three real gregor processes on loopback form a cluster (issue 12): confluent-kafka's admin
client creates RF=3 topics through the controller, kcat sees three brokers with leaders spread,
and after a SIGKILL of the controller leader a new one is elected, topic creation keeps working,
and the killed node, restarted, rejoins unfenced. A SIGTERM of the controller leader hands Raft
leadership over before the process exits. A created topic reaches every broker's Metadata in
(printed) milliseconds."""

import signal
import socket
import struct
import subprocess
import time
import uuid

from conftest import BINARY
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30


def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def wait_for(what, check, timeout_s=TIMEOUT_S, interval_s=0.05):
    """Polls `check` until it returns something truthy; returns it and the seconds it took."""
    start = time.monotonic()
    last_error = None
    while time.monotonic() - start < timeout_s:
        try:
            value = check()
            if value:
                return value, time.monotonic() - start
        except Exception as error:  # noqa: BLE001 - a node may be down mid-election
            last_error = error
        time.sleep(interval_s)
    raise AssertionError(f"{what} not within {timeout_s}s (last error: {last_error})")


def described(client):
    """(controller id, {broker id: rack}) from DescribeCluster."""
    result = client.describe_cluster(request_timeout=5).result(10)
    controller = result.controller.id if result.controller else None
    return controller, {node.id: node.rack for node in result.nodes}


def controller_of(node):
    """The controller id `gregor cluster describe` reports through `node`, None without one."""
    output = subprocess.run([str(BINARY), "cluster", "describe", "--bootstrap", node.bootstrap],
                            capture_output=True, text=True, timeout=30).stdout
    for line in output.splitlines():
        if line.startswith("cluster ") and " controller " in line:
            word = line.rsplit(" controller ", 1)[1].split()[0]
            return int(word) if word.isdigit() else None
    return None


def quorum_of(node):
    """(leader, term) from the quorum line of `gregor cluster describe` (DescribeQuorum) through
    `node`; None without one."""
    output = subprocess.run([str(BINARY), "cluster", "describe", "--bootstrap", node.bootstrap],
                            capture_output=True, text=True, timeout=30).stdout
    for line in output.splitlines():
        if line.startswith("quorum __cluster_metadata-0: leader "):
            words = line.split()
            leader, term = words[3], words[5]
            return (int(leader) if leader.isdigit() else None), int(term)
    return None


def kcat_metadata(bootstrap):
    """kcat -L as JSON: brokers and topics."""
    import json
    output = subprocess.run(["kcat", "-b", bootstrap, "-L", "-J", "-m", "10"],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(output)


def create(client, name, partitions, replication_factor):
    futures = client.create_topics([NewTopic(name, partitions, replication_factor)],
                                   request_timeout=15, operation_timeout=15)
    futures[name].result(TIMEOUT_S)


def test_three_processes_form_a_cluster_with_rf3_topics_and_leaders_spread(cluster):
    client = admin(cluster)
    (controller, brokers), took = wait_for(
        "3 live brokers and a controller",
        lambda: (lambda d: d if d[0] is not None and len(d[1]) == 3 else None)(described(client)))
    print(f"cluster formed in {took:.2f}s, controller {controller}")
    assert brokers == {1: "r1", 2: "r2", 3: "r3"}
    name = f"rf3-{uuid.uuid4().hex[:8]}"
    create(client, name, 6, 3)
    metadata = kcat_metadata(cluster.nodes[0].bootstrap)
    assert sorted(broker["id"] for broker in metadata["brokers"]) == [1, 2, 3]
    topic = next(t for t in metadata["topics"] if t["topic"] == name)
    leaders = [partition["leader"] for partition in topic["partitions"]]
    assert len(leaders) == 6
    assert set(leaders) == {1, 2, 3}, f"leaders not spread: {leaders}"
    for partition in topic["partitions"]:
        assert sorted(replica["id"] for replica in partition["replicas"]) == [1, 2, 3]
    # Every node answers Metadata from the same image.
    for node in cluster.nodes:
        other = next(t for t in kcat_metadata(node.bootstrap)["topics"] if t["topic"] == name)
        assert [p["leader"] for p in other["partitions"]] == leaders
    # Replicated (issue 13): an acks=all write to every RF=3 partition is acknowledged once
    # every in-sync replica holds it (test_replication.py covers failover and figures).
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "message.timeout.ms": 20000})
    delivered = []
    for partition in range(6):
        producer.produce(name, f"v{partition}".encode(), partition=partition,
                         on_delivery=lambda error, message: delivered.append((error, message)))
    assert producer.flush(TIMEOUT_S) == 0
    assert [error for error, _ in delivered] == [None] * 6, delivered
    assert sorted(message.partition() for _, message in delivered) == list(range(6))
    del producer


def test_rf1_partitions_take_writes_on_their_leaders(cluster):
    client = admin(cluster)
    name = f"rf1-{uuid.uuid4().hex[:8]}"
    create(client, name, 3, 1)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    delivered = []
    for partition in range(3):
        producer.produce(name, f"v{partition}".encode(), partition=partition,
                         on_delivery=lambda error, message: delivered.append((error, message)))
    assert producer.flush(TIMEOUT_S) == 0
    assert [error for error, _ in delivered] == [None, None, None]
    del producer


def test_controller_leader_killed_new_one_elected_and_restarted_node_rejoins(cluster):
    client = admin(cluster)
    (old, _), _ = wait_for("a controller", lambda: (lambda d: d if d[0] else None)(described(client)))
    victim = cluster.node(old)
    survivor = next(node for i, node in enumerate(cluster.nodes) if i + 1 != old)
    (_, term_before), _ = wait_for("the quorum's term", lambda: quorum_of(survivor))
    victim.stop(signal.SIGKILL)
    bootstrap = ",".join(node.bootstrap for i, node in enumerate(cluster.nodes) if i + 1 != old)
    # A fresh client per look: librdkafka keeps the controller id of its last Metadata and
    # would wait for the dead node.
    fresh = lambda: AdminClient({"bootstrap.servers": bootstrap})  # noqa: E731
    # Timed with `gregor cluster describe` (DescribeCluster to a survivor): librdkafka sends
    # DescribeCluster to the controller it knows and would wait out its timeout on the dead one.
    new, election_s = wait_for(
        "a new controller",
        lambda: (lambda c: c if c not in (None, old) else None)(controller_of(survivor)),
        interval_s=0.02)
    print(f"controller {old} SIGKILLed; node {new} elected after {election_s:.3f}s")
    (leader, term_after), _ = wait_for("the new term", lambda: quorum_of(survivor))
    assert leader == new and term_after > term_before, (leader, term_before, term_after)
    name = f"after-kill-{uuid.uuid4().hex[:8]}"
    create(fresh(), name, 3, 2)
    # The killed node's session expires: it is fenced and leaves the live brokers.
    _, fenced_s = wait_for("the killed broker fenced", lambda: old not in described(fresh())[1])
    print(f"node {old} fenced {election_s + fenced_s:.2f}s after the kill")
    victim.start()
    (_, brokers), rejoin_s = wait_for(
        "the restarted node back, unfenced",
        lambda: (lambda d: d if old in d[1] else None)(described(fresh())))
    print(f"node {old} rejoined {rejoin_s:.2f}s after its restart")
    assert sorted(brokers) == [1, 2, 3]
    # `gregor cluster describe` shows it too, and no broker fenced.
    output = subprocess.run([str(BINARY), "cluster", "describe", "--bootstrap", victim.bootstrap],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    print(output)
    assert f"controller {new}" in output
    lines = output.splitlines()
    broker_lines = [line for line in lines if line.startswith("  ") and " rack r" in line]
    assert len(broker_lines) == 3 and not any("FENCED" in line for line in broker_lines), output
    create(admin(cluster), f"after-rejoin-{uuid.uuid4().hex[:8]}", 3, 3)


def metadata_topics(node):
    """The topic names a Metadata v1 request for all topics lists on `node` alone (a raw request:
    a client would ask whichever broker it likes)."""
    request = struct.pack(">hhih", 3, 1, 1, 0) + struct.pack(">i", -1)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", recv_exactly(sock, 4))[0]
        body = recv_exactly(sock, size)
    at = 4  # correlation id

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, body, at)
        at += struct.calcsize(fmt)
        return values

    def string():
        nonlocal at
        (length,) = take(">h")
        text = body[at:at + max(length, 0)].decode()
        at += max(length, 0)
        return text

    for _ in range(take(">i")[0]):  # brokers: id, host, port, rack
        take(">i")
        string()
        take(">i")
        string()
    take(">i")  # controller id
    names = set()
    for _ in range(take(">i")[0]):
        (error,) = take(">h")
        name = string()
        take(">b")  # is_internal
        for _ in range(take(">i")[0]):
            take(">hii")  # error, partition, leader
            for _ in range(2):  # replicas, isr
                (count,) = take(">i")
                take(f">{count}i")
        if error == 0:
            names.add(name)
    return names


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed mid-response")
        data += chunk
    return data


def test_created_topic_reaches_every_brokers_metadata(cluster):
    """The metadata propagation time: from CreateTopics' acknowledgement (the controller
    answers once its node applied the entry) to every broker's own Metadata listing the topic."""
    client = admin(cluster)
    wait_for("3 live brokers", lambda: len(described(client)[1]) == 3)
    times = []
    for _ in range(5):
        name = f"spread-{uuid.uuid4().hex[:8]}"
        create(client, name, 3, 3)
        acknowledged = time.monotonic()
        pending = set(range(len(cluster.nodes)))
        while pending:
            pending = {i for i in pending if name not in metadata_topics(cluster.nodes[i])}
            assert time.monotonic() - acknowledged < TIMEOUT_S, f"{name} missing on {pending}"
        times.append(time.monotonic() - acknowledged)
    print("metadata propagation after CreateTopics' acknowledgement (5 topics): "
          + ", ".join(f"{t * 1000:.1f} ms" for t in times))


def test_controller_leader_sigtermed_hands_leadership_over(cluster):
    """SIGTERM is controlled shutdown: the controller leader hands Raft leadership to another
    voter before it exits, so a new controller is there after about a round trip, not after an
    election timeout as on SIGKILL."""
    client = admin(cluster)
    (old, _), _ = wait_for(
        "3 live brokers and a controller",
        lambda: (lambda d: d if d[0] is not None and len(d[1]) == 3 else None)(described(client)))
    victim = cluster.node(old)
    survivor = next(node for i, node in enumerate(cluster.nodes) if i + 1 != old)
    signalled = time.monotonic()
    victim.process.send_signal(signal.SIGTERM)
    new, _ = wait_for(
        "a new controller",
        lambda: (lambda c: c if c not in (None, old) else None)(controller_of(survivor)),
        interval_s=0.01)
    election_s = time.monotonic() - signalled
    assert victim.process.wait(timeout=30) == 0
    exited_s = time.monotonic() - signalled
    print(f"controller {old} SIGTERMed: node {new} controller after {election_s:.3f}s "
          f"(the process exited after {exited_s:.3f}s)")
    victim.stop()
    victim.start()
    wait_for("the restarted node back, unfenced", lambda: old in described(admin(cluster))[1])
    create(admin(cluster), f"after-sigterm-{uuid.uuid4().hex[:8]}", 3, 3)


def test_cluster_flags_are_validated_at_startup(tmp_path):
    bad = [
        ["--node-id", "4", "--voters", "1@127.0.0.1:19491,2@127.0.0.1:19492"],
        ["--node-id", "1", "--voters", "1@127.0.0.1:19491,1@127.0.0.1:19492"],
        ["--node-id", "1", "--voters", "1@127.0.0.1"],
        ["--node-id", "0"],
    ]
    for args in bad:
        result = subprocess.run([str(BINARY), "broker", "--data-dir", str(tmp_path / "d"), *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert "invalid setting" in result.stderr, result.stderr
