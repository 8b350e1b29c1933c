//! Config changes, record deletion and offset deletion (AlterConfigs, IncrementalAlterConfigs,
//! DeleteRecords, OffsetDelete): through the handlers on a `MemDisk`, so a power loss can be
//! staged between a reply and a restart, and through the client against the in-process server,
//! as the CLI and other admin clients use them.

mod common;

use broker::handlers::{self, Reply};
use broker::{Broker, BrokerConfig, NodeContext};
use bytes::BytesMut;
use client::{Admin, ClientConfig, ConfigChange, TopicPartition};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::codec::{request_decode, request_encode};
use wire::frame::frame_split;
use wire::{ApiKey, RequestKind, ResponseKind};

async fn broker_open(disk: Arc<runtime::MemDisk>) -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    common::broker_open(config, disk, 3).await
}

/// Power loss: every byte and namespace change not yet synced is gone; then a fresh start.
async fn power_loss_and_restart(broker: Arc<Broker>, disk: &Arc<runtime::MemDisk>) -> Arc<Broker> {
    drop(broker);
    let mut rng = runtime::rng::stream_rng(1, runtime::rng::Stream::Disk, 0);
    disk.crash(runtime::disk::CrashOptions::LoseUnsynced, &mut rng);
    broker_open(disk.clone()).await
}

fn text(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// One request through the codec and the handler, as a connection would run it.
async fn call(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> ResponseKind {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1);
    let mut buffer = BytesMut::new();
    request_encode(&mut buffer, &header, &body).expect("encodes");
    let frame = frame_split(&mut buffer, 1 << 24).unwrap().unwrap();
    match handlers::handle(broker, request_decode(frame).expect("decodes")) {
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
        Reply::None => panic!("{api_key:?} is answered"),
    }
}

/// Produces one batch of `value_bytes` to partition 0 and returns its error code, after fsync.
async fn produce(broker: &Arc<Broker>, topic: &str, value_bytes: usize) -> i16 {
    let records = batch_encode(
        &[RecordSpec {
            // Keyed: the test turns the topic compacted, which refuses keyless records.
            key: Some(bytes::Bytes::from_static(b"k")),
            value: Some(vec![b'v'; value_bytes].into()),
            // Now: older records would be due for time retention at the next maintenance pass.
            timestamp: broker.clock.wall_ms(),
            ..Default::default()
        }],
        Compression::None,
    );
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(text(topic)))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.into_bytes())),
            ])]);
    let ResponseKind::Produce(response) =
        call(broker, ApiKey::Produce, 9, RequestKind::Produce(request)).await
    else {
        panic!("a Produce response");
    };
    response.responses[0].partition_responses[0].error_code
}

/// IncrementalAlterConfigs of topic `topic`: (operation, key, value) each; the resource's
/// error code and message.
async fn incremental(
    broker: &Arc<Broker>,
    topic: &str,
    changes: &[(i8, &str, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    let configs = changes
        .iter()
        .map(|(operation, key, value)| {
            incremental_alter_configs_request::AlterableConfig::default()
                .with_name(text(key))
                .with_config_operation(*operation)
                .with_value(value.map(text))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
    let body = RequestKind::IncrementalAlterConfigs(request);
    let ResponseKind::IncrementalAlterConfigs(response) =
        call(broker, ApiKey::IncrementalAlterConfigs, 1, body).await
    else {
        panic!("an IncrementalAlterConfigs response");
    };
    let resource = &response.responses[0];
    let message = resource.error_message.as_deref().unwrap_or_default();
    (resource.error_code, message.to_string())
}

/// DescribeConfigs of one key: (value, config source).
async fn describe(broker: &Arc<Broker>, topic: &str, key: &str) -> (String, i8) {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(topic))
            .with_configuration_keys(Some(vec![text(key)])),
    ]);
    let body = RequestKind::DescribeConfigs(request);
    let ResponseKind::DescribeConfigs(response) =
        call(broker, ApiKey::DescribeConfigs, 4, body).await
    else {
        panic!("a DescribeConfigs response");
    };
    let entry = &response.results[0].configs[0];
    let value = entry.value.as_deref().unwrap_or_default().to_string();
    (value, entry.config_source)
}

/// Kafka's `ConfigSource`: DYNAMIC_TOPIC_CONFIG and DEFAULT_CONFIG.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

#[tokio::test]
async fn altered_configs_apply_to_live_partitions_and_survive_a_power_loss() {
    let disk = runtime::MemDisk::new();
    let broker = broker_open(disk.clone()).await;
    common::topic_create(&broker, "t", 1, &[("retention.ms", "3600000")]).await;
    assert_eq!(produce(&broker, "t", 500).await, 0);
    let (code, _) = incremental(&broker, "t", &[(0, "max.message.bytes", Some("200"))], true).await;
    assert_eq!(code, 0);
    assert_eq!(
        produce(&broker, "t", 500).await,
        0,
        "validate_only changes nothing"
    );
    assert_eq!(
        describe(&broker, "t", "max.message.bytes").await.1,
        SOURCE_DEFAULT
    );
    let changes = [
        (0, "max.message.bytes", Some("200")),
        (0, "segment.bytes", Some("1024")),
        (1, "retention.ms", None),
        (2, "cleanup.policy", Some("compact")),
        (0, "message.format.version", Some("2.8-IV1")),
    ];
    assert_eq!(
        incremental(&broker, "t", &changes, false).await,
        (0, String::new())
    );
    let too_large = ResponseError::MessageTooLarge.code();
    assert_eq!(
        produce(&broker, "t", 500).await,
        too_large,
        "applied without a restart"
    );
    for _ in 0..8 {
        assert_eq!(produce(&broker, "t", 100).await, 0);
    }
    let segments = broker
        .topics()
        .partition("t", 0)
        .unwrap()
        .log()
        .segment_count();
    assert!(
        segments > 1,
        "the smaller segment.bytes rolled at the next appends"
    );
    let broker = power_loss_and_restart(broker, &disk).await;
    let expected = [
        (
            "cleanup.policy",
            ("compact,delete".to_string(), SOURCE_TOPIC),
        ),
        ("max.message.bytes", ("200".to_string(), SOURCE_TOPIC)),
        ("retention.ms", ("604800000".to_string(), SOURCE_DEFAULT)),
        ("segment.bytes", ("1024".to_string(), SOURCE_TOPIC)),
    ];
    for (key, want) in expected {
        assert_eq!(
            describe(&broker, "t", key).await,
            want,
            "{key} after a power loss"
        );
    }
    let overrides = broker.topics().get("t").unwrap().configs.clone();
    assert!(
        !overrides.contains_key("message.format.version"),
        "ignored, not stored"
    );
    let log_config = broker
        .topics()
        .partition("t", 0)
        .unwrap()
        .log()
        .config()
        .clone();
    assert_eq!(
        log_config.segment_bytes, 1024,
        "reopened logs obey the stored overrides"
    );
    assert_eq!(produce(&broker, "t", 500).await, too_large);
}

#[tokio::test]
async fn config_refusals_are_per_resource_and_name_the_key_and_the_fix() {
    let broker = broker_open(runtime::MemDisk::new()).await;
    common::topic_create(&broker, "t", 1, &[]).await;
    let mut rendered = Vec::new();
    for changes in [
        vec![(0, "retention.ms", Some("soon"))],
        vec![(0, "compression.type", Some("gzip"))],
        vec![(2, "segment.bytes", Some("1"))],
        vec![(3, "cleanup.policy", Some("delete"))],
        vec![(0, "retention.ms", Some("1")), (1, "retention.ms", None)],
    ] {
        let (code, message) = incremental(&broker, "t", &changes, false).await;
        rendered.push(format!("{code} {message}"));
    }
    let (code, message) = incremental(&broker, "nope", &[(1, "retention.ms", None)], false).await;
    rendered.push(format!("{code} {message}"));
    let (code, message) = incremental(&broker, "__consumer_offsets", &[], false).await;
    rendered.push(format!("{code} {message}"));
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(text("1")),
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("t"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_value(Some(text("5000")))]),
    ]);
    let body = RequestKind::AlterConfigs(request);
    let ResponseKind::AlterConfigs(response) = call(&broker, ApiKey::AlterConfigs, 2, body).await
    else {
        panic!("an AlterConfigs response");
    };
    for resource in &response.responses {
        let message = resource.error_message.as_deref().unwrap_or_default();
        rendered.push(format!("{} {message}", resource.error_code));
    }
    insta::assert_snapshot!(rendered.join("\n"), @r#"
    40 invalid value "soon" for retention.ms: expected an integer
    40 unknown topic config "compression.type"; gregor supports cleanup.policy, delete.retention.ms, index.interval.bytes, max.message.bytes, message.timestamp.type, min.insync.replicas, retention.bytes, retention.ms, segment.bytes, segment.ms, unclean.leader.election.enable
    40 config "segment.bytes" is not a list; use SET to change it (APPEND and SUBTRACT are for cleanup.policy)
    40 invalid value "" for cleanup.policy: expected delete, compact or compact,delete
    42 config "retention.ms" is named twice; name each key once
    3 topic "nope" does not exist; create it first or check the name
    17 topic "__consumer_offsets" is internal to the broker; its configs are fixed
    42 broker configs are static; set them with flags or the config file and restart
    0
    "#);
    // Nothing refused was applied: only AlterConfigs' own resource changed the topic.
    let overrides = broker.topics().get("t").unwrap().configs.clone();
    assert_eq!(
        overrides,
        BTreeMap::from([("retention.ms".into(), "5000".into())])
    );
}

async fn delete_records(broker: &Arc<Broker>, topic: &str, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_offset(offset),
            ]),
    ]);
    let body = RequestKind::DeleteRecords(request);
    let ResponseKind::DeleteRecords(response) = call(broker, ApiKey::DeleteRecords, 2, body).await
    else {
        panic!("a DeleteRecords response");
    };
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.low_watermark)
}

async fn earliest(broker: &Arc<Broker>, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2)
            ]),
    ]);
    let body = RequestKind::ListOffsets(request);
    let ResponseKind::ListOffsets(response) = call(broker, ApiKey::ListOffsets, 5, body).await
    else {
        panic!("a ListOffsets response");
    };
    response.topics[0].partitions[0].offset
}

#[tokio::test]
async fn delete_records_moves_the_log_start_durably_and_retention_drops_the_segments() {
    let disk = runtime::MemDisk::new();
    let broker = broker_open(disk.clone()).await;
    common::topic_create(&broker, "t", 1, &[("segment.bytes", "1024")]).await;
    for _ in 0..10 {
        assert_eq!(produce(&broker, "t", 300).await, 0);
    }
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    assert_eq!(delete_records(&broker, "t", 11).await, (out_of_range, -1));
    assert_eq!(delete_records(&broker, "t", -5).await, (out_of_range, -1));
    assert_eq!(
        delete_records(&broker, "nope", 1).await.0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let internal = delete_records(&broker, "__consumer_offsets", 0).await.0;
    assert_eq!(internal, ResponseError::InvalidTopicException.code());
    assert_eq!(delete_records(&broker, "t", 6).await, (0, 6));
    assert_eq!(
        delete_records(&broker, "t", 2).await,
        (0, 6),
        "never moves back"
    );
    assert_eq!(earliest(&broker, "t").await, 6);
    let base_offsets = || {
        let partition = broker.topics().partition("t", 0).unwrap();
        let dir = partition.log().dir().to_path_buf();
        let mut names: Vec<String> = runtime::Disk::list(&*disk, &dir)
            .unwrap()
            .iter()
            .filter_map(|path| {
                path.file_name()?
                    .to_str()?
                    .strip_suffix(".log")
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    };
    let segment = |base: i64| format!("{base:020}");
    assert_eq!(base_offsets(), [0, 2, 4, 6, 8].map(segment));
    broker::maintenance::pass(&broker).await;
    assert_eq!(
        base_offsets(),
        [6, 8].map(segment),
        "segments wholly below the log start go at the next pass"
    );
    let broker = power_loss_and_restart(broker, &disk).await;
    assert_eq!(
        earliest(&broker, "t").await,
        6,
        "the log start was fsynced before the reply"
    );
    assert_eq!(
        delete_records(&broker, "t", -1).await,
        (0, 10),
        "-1 is the high watermark"
    );
    let broker = power_loss_and_restart(broker, &disk).await;
    assert_eq!(earliest(&broker, "t").await, 10);
    assert_eq!(
        produce(&broker, "t", 10).await,
        0,
        "an emptied partition takes appends"
    );
}

fn commit_request(group_id: &str, topic: &str, partitions: &[(i32, i64)]) -> RequestKind {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partitions = partitions
        .iter()
        .map(|(index, offset)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*index)
                .with_committed_offset(*offset)
        })
        .collect();
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group_id)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)]),
    )
}

fn offset_delete_request(group_id: &str, topic: &str, partitions: &[i32]) -> RequestKind {
    use offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    let partitions = partitions
        .iter()
        .map(|index| OffsetDeleteRequestPartition::default().with_partition_index(*index))
        .collect();
    RequestKind::OffsetDelete(
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(text(group_id)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)]),
    )
}

fn committed(broker: &Arc<Broker>, group_id: &str) -> Vec<(i32, i64)> {
    broker.groups().read(|core| {
        core.group(group_id)
            .map(|group| {
                group
                    .offsets()
                    .iter()
                    .map(|(tp, c)| (tp.partition, c.offset))
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[tokio::test]
async fn deleted_group_offsets_stay_deleted_after_a_power_loss() {
    let disk = runtime::MemDisk::new();
    let broker = broker_open(disk.clone()).await;
    common::topic_create(&broker, "t", 4, &[]).await;
    let ResponseKind::OffsetCommit(_) = call(
        &broker,
        ApiKey::OffsetCommit,
        8,
        commit_request("g", "t", &[(0, 5), (1, 7)]),
    )
    .await
    else {
        panic!("an OffsetCommit response");
    };
    assert_eq!(committed(&broker, "g"), [(0, 5), (1, 7)]);
    let body = offset_delete_request("g", "t", &[0, 3]);
    let ResponseKind::OffsetDelete(response) = call(&broker, ApiKey::OffsetDelete, 0, body).await
    else {
        panic!("an OffsetDelete response");
    };
    assert_eq!(response.error_code, 0);
    let codes: Vec<(i32, i16)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(codes, [(0, 0), (3, 0)]);
    assert_eq!(committed(&broker, "g"), [(1, 7)]);
    let broker = power_loss_and_restart(broker, &disk).await;
    assert_eq!(
        committed(&broker, "g"),
        [(1, 7)],
        "the tombstone was fsynced before the reply"
    );
    let body = offset_delete_request("nope", "t", &[0]);
    let ResponseKind::OffsetDelete(response) = call(&broker, ApiKey::OffsetDelete, 0, body).await
    else {
        panic!("an OffsetDelete response");
    };
    assert_eq!(response.error_code, ResponseError::GroupIdNotFound.code());
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

async fn server_start() -> String {
    let address = free_address();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 13,
        cluster_hooks: Default::default(),
    };
    runtime::spawn(async move {
        broker::serve(config, context, std::future::pending())
            .await
            .expect("serves");
    });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            return address;
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

/// What `gregor topic alter|delete-records` and `gregor group delete-offsets` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_alters_configs_deletes_records_and_deletes_group_offsets() {
    let address = server_start().await;
    let mut admin = Admin::new(ClientConfig::new([address.as_str()]));
    admin
        .create_topic(
            "t",
            2,
            1,
            BTreeMap::from([("segment.ms".into(), "1000".into())]),
        )
        .await
        .expect("creates");
    let changes = [
        ConfigChange::Set {
            key: "retention.ms".into(),
            value: "60000".into(),
        },
        ConfigChange::Delete {
            key: "segment.ms".into(),
        },
        ConfigChange::Append {
            key: "cleanup.policy".into(),
            value: "compact".into(),
        },
    ];
    admin
        .incremental_alter_configs("t", &changes)
        .await
        .expect("alters");
    let configs = admin.describe_configs("t").await.expect("describes");
    let shown = |key: &str| {
        let entry = &configs[key];
        (entry.value.clone().unwrap_or_default(), entry.is_default)
    };
    assert_eq!(shown("retention.ms"), ("60000".into(), false));
    assert_eq!(shown("segment.ms"), ("604800000".into(), true));
    assert_eq!(shown("cleanup.policy"), ("compact,delete".into(), false));
    let refused = admin
        .incremental_alter_configs(
            "t",
            &[ConfigChange::Set {
                key: "retention.ms".into(),
                value: "-7".into(),
            }],
        )
        .await
        .expect_err("refused");
    assert_eq!(refused.kafka_error(), Some(ResponseError::InvalidConfig));
    assert!(refused.to_string().contains("retention.ms"), "{refused}");
    admin
        .alter_configs(
            "t",
            &BTreeMap::from([("segment.bytes".into(), "4096".into())]),
        )
        .await
        .expect("replaces");
    let configs = admin.describe_configs("t").await.expect("describes");
    assert!(
        configs["retention.ms"].is_default,
        "AlterConfigs replaces the whole set"
    );
    assert_eq!(configs["segment.bytes"].value.as_deref(), Some("4096"));

    let producer = client::Producer::new(
        ClientConfig::new([address.as_str()]),
        client::ProducerConfig::kafka_defaults(),
    );
    for index in 0..6 {
        let mut record = client::ProducerRecord::new("t", None, Some(format!("v{index}").into()));
        record.partition = Some(0);
        producer.send(record).await.expect("produces");
    }
    let offsets = BTreeMap::from([
        (TopicPartition::new("t", 0), 4),
        (TopicPartition::new("t", 1), 3),
    ]);
    let results = admin.delete_records(&offsets).await.expect("answers");
    assert_eq!(
        results[&TopicPartition::new("t", 0)].as_ref().ok(),
        Some(&4)
    );
    let error = results[&TopicPartition::new("t", 1)]
        .as_ref()
        .expect_err("past the end");
    assert_eq!(error.kafka_error(), Some(ResponseError::OffsetOutOfRange));
    let mut consumer = client::Consumer::new(
        ClientConfig::new([address.as_str()]),
        client::ConsumerConfig::kafka_defaults(),
    );
    let earliest = consumer
        .list_offsets(&TopicPartition::new("t", 0), -2)
        .await
        .expect("lists");
    assert_eq!(earliest.offset, 4, "consumers see the new earliest offset");

    let partitions = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
    let offsets = partitions.iter().map(|p| (p.clone(), 2)).collect();
    admin
        .group_offsets_set("g", &offsets)
        .await
        .expect("commits");
    let results = admin
        .delete_group_offsets("g", &partitions[..1])
        .await
        .expect("answers");
    assert!(results[&partitions[0]].is_ok(), "{results:?}");
    let left = admin.group_offsets("g", None).await.expect("fetches");
    assert_eq!(left, BTreeMap::from([(partitions[1].clone(), Some(2))]));
    let unknown = admin
        .delete_group_offsets("nope", &partitions)
        .await
        .expect_err("no such group");
    assert_eq!(unknown.kafka_error(), Some(ResponseError::GroupIdNotFound));
}
