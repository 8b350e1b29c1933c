"""Partition replication with real processes (issue 13): three gregor processes on loopback, a
topic at RF=3 with min.insync.replicas=2, and a confluent-kafka (librdkafka) producer with
acks=all and idempotence running while partition leaders are SIGKILLed and restarted. Every
acknowledged record must be read back at the offset it was acknowledged with, in the order it was
produced, and a consumer group keeps consuming across the failovers.

Printed figures (issue 13's note): failover time (leader kill to the first acks=all delivery on
that partition), RF=3 acks=all against RF=1 throughput at 100 B and 1 KiB (three processes share
two cores here, so the ratio is the figure), and end-to-end latency at RF=3."""

import signal
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Cluster

PARTITIONS = 3
KILLS = 4
TIMEOUT_S = 60
# A follower that stops fetching leaves the ISR after this long, so acks=all goes on with the
# two live replicas (min.insync.replicas=2) instead of waiting for the dead one's session. A
# killed leader is replaced once its session ends: 1.5 s here, Kafka's 9 s by default (measured
# 8.4-10.9 s failovers with it).
REPLICA_ARGS = ["--replica-lag-time-max-ms", "2000", "--broker-session-timeout-ms", "1500",
                "--broker-heartbeat-interval-ms", "300"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    instance = Cluster(tmp_path_factory.mktemp("gregor-replication"), extra_args=REPLICA_ARGS)
    instance.start()
    yield instance
    instance.stop()
    print(instance.logs())


def wait_for(what, check, timeout_s=TIMEOUT_S, interval_s=0.05):
    start = time.monotonic()
    last_error = None
    while time.monotonic() - start < timeout_s:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - a node may be down mid-failover
            last_error = error
        time.sleep(interval_s)
    raise AssertionError(f"{what} not within {timeout_s}s (last error: {last_error})")


def create(cluster, name, partitions, replication_factor, config=None):
    client = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = NewTopic(name, partitions, replication_factor, config=config or {})
    client.create_topics([topic], request_timeout=15, operation_timeout=15)[name].result(30)


def partitions_of(cluster, name):
    """{partition: (leader, sorted isr)} from a fresh client's Metadata."""
    client = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = client.list_topics(name, timeout=5).topics[name]
    assert topic.error is None, topic.error
    return {p.id: (p.leader, sorted(p.isrs)) for p in topic.partitions.values()}


def isr_full(cluster, name, size=3):
    view = partitions_of(cluster, name)
    return len(view) == PARTITIONS and all(len(isr) == size and leader >= 1
                                           for leader, isr in view.values())


def read_back(cluster, name, partitions, ends, timeout_s=TIMEOUT_S):
    """{partition: [(offset, value)]} read from offset 0 up to `ends[partition]`."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"r-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(name, p, 0) for p in range(partitions)])
    found = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    while any(len(found[p]) < ends.get(p, 0) for p in found):
        assert time.monotonic() < deadline, {p: len(found[p]) for p in found}
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        found[message.partition()].append((message.offset(), message.value()))
    consumer.close()
    return found


class GroupReader(threading.Thread):
    """A consumer-group member that consumes (and commits) for the whole test."""

    def __init__(self, cluster, topic):
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": cluster.bootstrap,
                                  "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                                  "session.timeout.ms": 6000, "enable.auto.commit": True,
                                  "auto.commit.interval.ms": 200})
        self.consumer.subscribe([topic])
        self.values = set()
        self.stop_wanted = threading.Event()

    def run(self):
        while not self.stop_wanted.is_set():
            message = self.consumer.poll(0.2)
            if message is not None and message.error() is None:
                self.values.add(message.value())
        self.consumer.close()


def test_acks_all_survives_leader_kills_with_every_ack_at_its_offset(cluster):
    name = f"repl-{uuid.uuid4().hex[:8]}"
    create(cluster, name, PARTITIONS, 3, {"min.insync.replicas": "2"})
    wait_for("full ISRs", lambda: isr_full(cluster, name))
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 2,
                         "message.timeout.ms": 120000, "retry.backoff.ms": 50,
                         "topic.metadata.refresh.interval.ms": 1000})
    acked = {p: [] for p in range(PARTITIONS)}  # partition -> [(offset, value, delivered at)]
    sent_at = {}  # value -> when it was handed to the producer
    failed = []
    lock = threading.Lock()

    def report(error, message):
        with lock:
            if error is not None:
                failed.append(error)
            else:
                acked[message.partition()].append(
                    (message.offset(), message.value(), time.monotonic()))

    stop = threading.Event()

    def produce_forever():
        sequence = 0
        while not stop.is_set():
            partition = sequence % PARTITIONS
            value = f"{partition}-{sequence:08d}".encode()
            try:
                with lock:
                    sent_at[value] = time.monotonic()
                producer.produce(name, value, partition=partition, on_delivery=report)
                sequence += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            if sequence % 50 == 0:
                time.sleep(0.01)
        producer.flush(120)

    group = GroupReader(cluster, name)
    group.start()
    writer = threading.Thread(target=produce_forever, daemon=True)
    writer.start()
    failovers = []
    for kill in range(KILLS):
        time.sleep(1.5)
        partition = kill % PARTITIONS
        leader, _ = partitions_of(cluster, name)[partition]
        victim = cluster.node(leader)
        with lock:
            acked_before = len(acked[partition])
        killed_at = time.monotonic()
        victim.stop(signal.SIGKILL)

        # Failover ends with the first acknowledgement of a record produced after the kill
        # (records acknowledged before it may still reach their callback after it).
        def first_after_kill():
            with lock:
                return min((at for _, value, at in acked[partition][acked_before:]
                            if sent_at[value] > killed_at), default=None)

        first = wait_for(f"an acks=all delivery on partition {partition} after node {leader}'s "
                         "kill", first_after_kill, interval_s=0.01)
        failovers.append(first - killed_at)
        victim.start()
        wait_for("full ISRs after the restart", lambda: isr_full(cluster, name))
    stop.set()
    writer.join(150)
    assert not failed, f"{len(failed)} deliveries failed, first: {failed[0]}"
    print("failover (leader SIGKILL to the first acks=all delivery of a record produced after "
          "it on its partition): "
          + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in failovers))

    ends = {}
    for partition, records in acked.items():
        offsets = [offset for offset, _, _ in records]
        assert offsets == sorted(offsets), f"partition {partition}: acks out of order"
        assert len(set(offsets)) == len(offsets), f"partition {partition}: an offset acked twice"
        ends[partition] = max(offsets) + 1 if offsets else 0
    found = read_back(cluster, name, PARTITIONS, ends)
    total = 0
    for partition, records in acked.items():
        stored = dict(found[partition])
        for offset, value, _ in records:
            assert stored.get(offset) == value, (
                f"partition {partition} offset {offset}: acked {value!r}, read {stored.get(offset)!r}")
        total += len(records)
        # Produced in order by one idempotent producer: values grow with offsets.
        values = [value for _, value in sorted(found[partition])]
        assert values == sorted(values), f"partition {partition}: records out of order"
    print(f"{total} acknowledged records across {KILLS} leader kills, all read back at their offsets")

    expected = {value for records in acked.values() for _, value, _ in records}
    wait_for("the consumer group to have read every acknowledged record",
             lambda: expected <= group.values, timeout_s=90)
    group.stop_wanted.set()
    group.join(30)


def throughput(cluster, name, size, count):
    """Records per second an acks=all producer gets, and its p50/p99 ack latency in ms."""
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 256 * 1024})
    latencies = []
    payload = b"x" * size

    def report(error, _message, sent):
        assert error is None, error
        latencies.append(time.monotonic() - sent)

    start = time.monotonic()
    for i in range(count):
        sent = time.monotonic()
        while True:
            try:
                producer.produce(name, payload, partition=i % PARTITIONS,
                                 on_delivery=lambda e, m, s=sent: report(e, m, s))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(120) == 0
    elapsed = time.monotonic() - start
    latencies.sort()
    return count / elapsed, latencies[len(latencies) // 2] * 1000, latencies[
        int(len(latencies) * 0.99)] * 1000


def test_throughput_and_latency_rf3_against_rf1(cluster):
    """Figures, not limits: RF=3 acks=all costs two follower round trips and two follower
    fsyncs per group commit, on the same two cores as the leader."""
    rf3 = f"tp3-{uuid.uuid4().hex[:8]}"
    rf1 = f"tp1-{uuid.uuid4().hex[:8]}"
    create(cluster, rf3, PARTITIONS, 3, {"min.insync.replicas": "2"})
    create(cluster, rf1, PARTITIONS, 1)
    wait_for("full ISRs", lambda: isr_full(cluster, rf3))
    for size, count in ((100, 20000), (1024, 10000)):
        rate3, p50_3, p99_3 = throughput(cluster, rf3, size, count)
        rate1, p50_1, p99_1 = throughput(cluster, rf1, size, count)
        print(f"{size} B acks=all: RF=3 {rate3:.0f} rec/s (ack p50 {p50_3:.1f} ms, p99 "
              f"{p99_3:.1f} ms), RF=1 {rate1:.0f} rec/s (p50 {p50_1:.1f} ms, p99 {p99_1:.1f} ms): "
              f"ratio {rate3 / rate1:.2f}")
        assert rate3 > 0 and rate1 > 0

    # End-to-end: produce one record at a time, a tail consumer sees it; RF=3.
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"e2e-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    ends = {p: o for p, o in enumerate([0] * PARTITIONS)}
    for p in range(PARTITIONS):
        _, high = consumer.get_watermark_offsets(TopicPartition(rf3, p), timeout=10)
        ends[p] = high
    consumer.assign([TopicPartition(rf3, p, ends[p]) for p in range(PARTITIONS)])
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0})
    latencies = []
    for i in range(200):
        sent = time.monotonic()
        producer.produce(rf3, f"e2e-{i}".encode(), partition=i % PARTITIONS)
        producer.poll(0)
        deadline = sent + 10
        while time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is not None and message.error() is None and \
                    message.value() == f"e2e-{i}".encode():
                latencies.append(time.monotonic() - sent)
                break
        else:
            raise AssertionError(f"e2e-{i} not consumed within 10 s")
    producer.flush(10)
    consumer.close()
    latencies.sort()
    print(f"end-to-end latency RF=3 acks=all (200 records): p50 "
          f"{latencies[100] * 1000:.1f} ms, p99 {latencies[198] * 1000:.1f} ms")


def committed_offset(cluster, group_id, name):
    """The group's committed offset of partition 0, read through a fresh member's OffsetFetch
    (which follows FindCoordinator to wherever the coordinator is now)."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group_id,
                         "enable.auto.commit": False})
    try:
        return consumer.committed([TopicPartition(name, 0)], timeout=5)[0].offset
    finally:
        consumer.close()


def coordinator_of(cluster, group_id):
    client = AdminClient({"bootstrap.servers": cluster.bootstrap})
    described = client.describe_consumer_groups([group_id], request_timeout=5)[group_id].result(10)
    return described.coordinator.id


def test_committed_offsets_survive_coordinator_kills(cluster):
    """__consumer_offsets is replicated (RF 3 on three brokers), so a group's coordinator moves
    with the leadership of its partition and rebuilds the group from the log: every committed
    offset outlives a SIGKILL of the coordinator, read back through the new one."""
    name = f"offsets-{uuid.uuid4().hex[:8]}"
    create(cluster, name, 1, 3, {"min.insync.replicas": "2"})
    group_id = f"g-{uuid.uuid4().hex[:8]}"
    # The coordinator checks commits against the cluster's topics, not its own logs: it hosts
    # at most one of these three single-replica partitions.
    spread = f"spread-{uuid.uuid4().hex[:8]}"
    create(cluster, spread, 3, 1)
    member = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group_id,
                       "enable.auto.commit": False})
    result = member.commit(offsets=[TopicPartition(name, 0, 1)] +
                           [TopicPartition(spread, index, 7) for index in range(3)],
                           asynchronous=False)
    assert all(partition.error is None for partition in result), result
    committed = member.committed([TopicPartition(spread, index) for index in range(3)], timeout=10)
    assert [partition.offset for partition in committed] == [7, 7, 7], committed
    member.close()
    offsets_topic = AdminClient({"bootstrap.servers": cluster.bootstrap}) \
        .list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"]
    assert offsets_topic.error is None, offsets_topic.error
    assert all(len(p.replicas) == 3 for p in offsets_topic.partitions.values()), \
        "__consumer_offsets is replicated on every broker of a three-broker cluster"
    moves = []
    for round_ in range(3):
        committed = 100 * (round_ + 1)
        member = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group_id,
                           "enable.auto.commit": False})
        def commit():
            result = member.commit(offsets=[TopicPartition(name, 0, committed)],
                                   asynchronous=False)
            return all(partition.error is None for partition in result)
        wait_for("a commit through the coordinator", commit)
        member.close()
        coordinator = wait_for("the group's coordinator", lambda: coordinator_of(cluster, group_id))
        victim = cluster.node(coordinator)
        killed_at = time.monotonic()
        victim.stop(signal.SIGKILL)
        read = wait_for(f"the committed offset through a new coordinator after node "
                        f"{coordinator}'s kill",
                        lambda: max(committed_offset(cluster, group_id, name), 0))
        moves.append(time.monotonic() - killed_at)
        assert read == committed, f"round {round_}: committed {committed}, read {read} after the kill"
        victim.start()
        wait_for("full ISRs of __consumer_offsets after the restart",
                 lambda: all(len(isr) == 3 for _, isr in
                             partitions_of_all(cluster, "__consumer_offsets").values()))
    print("group coordinator failover (SIGKILL to the committed offset read through the new "
          "coordinator): " + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in moves))


def partitions_of_all(cluster, name):
    client = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = client.list_topics(name, timeout=5).topics[name]
    assert topic.error is None, topic.error
    return {p.id: (p.leader, sorted(p.isrs)) for p in topic.partitions.values()}


def java_hash(text):
    """Java's String.hashCode, which Kafka's partitionFor uses for transactional ids."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def txn_coordinator_of(cluster, transactional_id):
    """The leader of the transactional id's partition of the replicated __transaction_state."""
    view = partitions_of_all(cluster, "__transaction_state")
    index = (java_hash(transactional_id) & 0x7FFFFFFF) % len(view)
    leader, _ = view[index]
    return leader if leader >= 1 else None


def test_transactions_span_brokers_and_survive_coordinator_kills(cluster):
    """A transaction writes to partitions led by every broker (three RF 3 partitions and three
    single-replica ones, spread): its coordinator sends each marker to that partition's leader.
    __transaction_state is replicated, so the coordinator moves with its partition's leadership
    when it is SIGKILLed between transactions and mid-transaction: the transactional producer
    goes on, and a read_committed consumer reads exactly the committed transactions, each
    record once; read_uncommitted sees the aborted ones too."""
    replicated = f"txn-rf3-{uuid.uuid4().hex[:8]}"
    create(cluster, replicated, 3, 3, {"min.insync.replicas": "2"})
    spread = f"txn-rf1-{uuid.uuid4().hex[:8]}"
    create(cluster, spread, 3, 1)
    leaders = {leader for leader, _ in partitions_of(cluster, spread).values()}
    transactional_id = f"tx-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": cluster.bootstrap,
                         "transactional.id": transactional_id, "transaction.timeout.ms": 60000,
                         "linger.ms": 2, "message.timeout.ms": 60000, "retry.backoff.ms": 50})
    producer.init_transactions(60)
    view = partitions_of_all(cluster, "__transaction_state")
    assert all(len(isr) == 3 for _, isr in view.values()), \
        "__transaction_state is replicated on every broker of a three-broker cluster"
    committed, aborted, failovers = [], [], []

    def kill_coordinator():
        coordinator = wait_for("the transaction coordinator",
                               lambda: txn_coordinator_of(cluster, transactional_id))
        victim = cluster.node(coordinator)
        victim.stop(signal.SIGKILL)
        return victim, time.monotonic()

    for round_ in range(6):
        commit = round_ % 3 != 1
        values = [f"{round_}-{i}".encode() for i in range(12)]
        killed = None
        while True:
            try:
                producer.begin_transaction()
                for i, value in enumerate(values):
                    producer.produce(replicated if i % 2 else spread, value=value,
                                     partition=i % 3)
                producer.flush(60)
                if round_ in (2, 4) and killed is None:
                    # Mid-transaction: its partitions are added, its records written.
                    killed = kill_coordinator()
                if commit:
                    producer.commit_transaction(60)
                else:
                    producer.abort_transaction(60)
                break
            except KafkaException as error:
                # A retriable failure leaves the transaction to abort and redo; anything else
                # (fenced, fatal) fails the test.
                if not error.args[0].txn_requires_abort():
                    raise
                producer.abort_transaction(60)
                aborted.extend(values)
        (committed if commit else aborted).extend(values)
        if killed is not None:
            victim, killed_at = killed
            failovers.append(time.monotonic() - killed_at)
            victim.start()
            wait_for("full ISRs of __transaction_state after the restart",
                     lambda: all(len(isr) == 3 for _, isr in
                                 partitions_of_all(cluster, "__transaction_state").values()))
    seen, every = [], []
    for topic in (replicated, spread):
        seen += read_values(cluster, topic, 3, "read_committed")
        every += read_values(cluster, topic, 3, "read_uncommitted")
    assert sorted(seen) == sorted(committed), (
        f"read_committed: {len(seen)} records, {len(set(seen) - set(committed))} not committed, "
        f"{len(set(committed) - set(seen))} committed ones missing")
    assert sorted(every) == sorted(committed + aborted), "read_uncommitted sees every record"
    print(f"transactions across {len(leaders)} partition leaders: {len(committed)} committed, "
          f"{len(aborted)} aborted records; commit after a coordinator SIGKILL took "
          + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in failovers))


def read_values(cluster, name, partitions, isolation, idle_s=3.0, timeout_s=TIMEOUT_S):
    """Every value of `name` a consumer with `isolation` reads from offset 0, until nothing more
    arrives for `idle_s`."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"r-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": isolation})
    consumer.assign([TopicPartition(name, p, 0) for p in range(partitions)])
    found = []
    deadline = time.monotonic() + timeout_s
    idle_until = time.monotonic() + idle_s
    while time.monotonic() < deadline and time.monotonic() < idle_until:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        found.append(message.value())
        idle_until = time.monotonic() + idle_s
    consumer.close()
    return found
