"""Config changes, record deletion and offset deletion from real admin clients: confluent-kafka's
AdminClient (alter_configs, incremental_alter_configs, describe_configs, delete_records) and
kafka-python's KafkaAdminClient (alter_configs both ways, delete_records, delete_group_offsets),
against the real broker, across a restart."""

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewTopic, ResourceType)

TIMEOUT_S = 30


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def new_topic(broker, partitions=1, config=None):
    name = f"admin-{uuid.uuid4().hex[:8]}"
    client = admin(broker)
    client.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(TIMEOUT_S)
    return name


def topic_resource(name, **kwargs):
    return ConfigResource(ResourceType.TOPIC, name, **kwargs)


def described(broker, name):
    """{key: (value, source)} of a topic, from DescribeConfigs."""
    client = admin(broker)
    futures = client.describe_configs([topic_resource(name)])
    entries = next(iter(futures.values())).result(TIMEOUT_S)
    return {key: (entry.value, entry.source) for key, entry in entries.items()}


def incremental(broker, name, entries, validate_only=False):
    client = admin(broker)
    futures = client.incremental_alter_configs(
        [topic_resource(name, incremental_configs=entries)], validate_only=validate_only)
    return next(iter(futures.values())).result(TIMEOUT_S)


def produce(broker, topic, count, partition=0):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for index in range(count):
        producer.produce(topic, value=f"v{index}".encode(), partition=partition)
    assert producer.flush(TIMEOUT_S) == 0


def watermarks(broker, topic, partition=0):
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"w-{uuid.uuid4()}"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    finally:
        consumer.close()


def test_admin_incremental_alter_configs_then_describe_and_restart(broker):
    name = new_topic(broker, config={"segment.ms": "3600000"})
    entries = [
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        # Kafka 3.x accepts and ignores it; so must gregor.
        ConfigEntry("message.format.version", "2.8-IV1", incremental_operation=AlterConfigOpType.SET),
    ]
    incremental(broker, name, entries[:1], validate_only=True)
    assert described(broker, name)["retention.ms"][1] == ConfigSource.DEFAULT_CONFIG.value
    incremental(broker, name, entries)
    expected = {
        "retention.ms": ("86400000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
        "segment.ms": ("604800000", ConfigSource.DEFAULT_CONFIG.value),
        "cleanup.policy": ("compact,delete", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
    }
    configs = described(broker, name)
    assert {key: configs[key] for key in expected} == expected
    broker.restart()
    configs = described(broker, name)
    assert {key: configs[key] for key in expected} == expected, "survives a restart"


def test_admin_alter_configs_replaces_the_whole_set(broker):
    name = new_topic(broker, config={"retention.ms": "1000000"})
    client = admin(broker)
    futures = client.alter_configs([topic_resource(name, set_config={"segment.bytes": "1048576"})])
    next(iter(futures.values())).result(TIMEOUT_S)
    configs = described(broker, name)
    assert configs["segment.bytes"] == ("1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert configs["retention.ms"][1] == ConfigSource.DEFAULT_CONFIG.value


def test_admin_refusals_are_per_resource(broker):
    name = new_topic(broker)
    client = admin(broker)
    resources = [
        topic_resource(name, set_config={"retention.ms": "soon"}),
        topic_resource("admin-no-such-topic", set_config={"retention.ms": "1"}),
        ConfigResource(ResourceType.BROKER, "1", set_config={"num.partitions": "3"}),
        topic_resource(new_topic(broker), set_config={"retention.ms": "5000"}),
    ]
    futures = client.alter_configs(resources)
    outcomes = []
    for resource in resources:
        try:
            futures[resource].result(TIMEOUT_S)
            outcomes.append("ok")
        except KafkaException as error:
            outcomes.append(error.args[0].name())
    assert outcomes == ["INVALID_CONFIG", "UNKNOWN_TOPIC_OR_PART", "INVALID_REQUEST", "ok"]
    with pytest.raises(KafkaException) as refused:
        incremental(broker, name, [ConfigEntry("no.such.config", "1",
                                               incremental_operation=AlterConfigOpType.SET)])
    assert "no.such.config" in refused.value.args[0].str()


def test_admin_delete_records_moves_the_earliest_offset(broker):
    name = new_topic(broker, partitions=2)
    produce(broker, name, 10)
    client = admin(broker)
    futures = client.delete_records([TopicPartition(name, 0, 4)])
    deleted = next(iter(futures.values())).result(TIMEOUT_S)
    assert deleted.low_watermark == 4
    assert watermarks(broker, name) == (4, 10)
    futures = client.delete_records([TopicPartition(name, 1, 5)])
    with pytest.raises(KafkaException) as refused:
        next(iter(futures.values())).result(TIMEOUT_S)
    assert refused.value.args[0].name() == "OFFSET_OUT_OF_RANGE"
    broker.restart()
    assert watermarks(broker, name) == (4, 10), "the log start survives a restart"
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"d-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(name, 0)])
    first = None
    for _ in range(60):
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            first = message.offset()
            break
    consumer.close()
    assert first == 4, "a consumer from the earliest offset starts at the new log start"


def test_admin_kafka_python_alter_configs_delete_records_and_group_offsets(broker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition
    from kafka.admin import ConfigResource as KafkaConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    name = new_topic(broker)
    produce(broker, name, 6)
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        for incremental_api in (True, False):
            value = "7200000" if incremental_api else "10800000"
            resource = KafkaConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": value})
            client.alter_configs([resource], incremental=incremental_api)
            assert described(broker, name)["retention.ms"][0] == value
        partition = KafkaTopicPartition(name, 0)
        client.delete_records({partition: 2})
        assert watermarks(broker, name) == (2, 6)
        group = f"g-{uuid.uuid4().hex[:8]}"
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                 enable_auto_commit=False)
        consumer.commit({partition: OffsetAndMetadata(5, "", -1)})
        consumer.close()
        assert client.list_group_offsets(group)[group][partition].offset == 5
        results = client.delete_group_offsets(group, [partition])
        assert results[partition].errno == 0, results
        assert partition not in client.list_group_offsets(group)[group]
    finally:
        client.close()
