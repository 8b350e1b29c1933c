//! Leader epochs in cluster mode, over a real cluster node (a lone voter on loopback, `MemDisk`):
//! produced batches carry the image's leader epoch of their partition, so after a restart (the
//! broker re-registers, is fenced and unfenced, and its partition's leader epoch moves on)
//! OffsetForLeaderEpoch tells the two epochs' batches apart.

mod common;

use broker::handlers::{self, Reply};
use broker::{Broker, BrokerConfig};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::{RequestKind, ResponseKind};

/// A lone voter and its broker on `disk`, registered and unfenced; `seed` decides the node's
/// incarnation id (a restart needs a new one).
async fn broker_clustered(disk: Arc<runtime::MemDisk>, seed: u64) -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    config.listen = "127.0.0.1:19093".into();
    config.cluster_id = "test-cluster".into();
    common::broker_voter_open(config, disk, seed).await
}

async fn call(
    broker: &Arc<Broker>,
    api_key: wire::ApiKey,
    body: RequestKind,
    version: i16,
) -> ResponseKind {
    let header = RequestHeader::default().with_request_api_version(version);
    let frame = wire::RequestFrame {
        api_key,
        header,
        api_version: version,
        body,
    };
    match handlers::handle(broker, frame) {
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
        Reply::None => panic!("no reply"),
    }
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

/// The leader epoch of `e`-0 in the image once this node leads it.
async fn led_at(broker: &Arc<Broker>) -> i32 {
    for _ in 0..1000 {
        let image = broker.cluster().image();
        let led = image
            .topic_by_name("e")
            .and_then(|topic| image.partition(topic.topic_id, 0))
            .filter(|partition| partition.leader() == Some(1))
            .map(|partition| partition.leader_epoch);
        if let (Some(epoch), Ok(())) = (led, broker.reconcile()) {
            return epoch;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("e-0 not led here within 10 s");
}

async fn produce_one(broker: &Arc<Broker>) -> i16 {
    let record = RecordSpec {
        value: Some("v".into()),
        timestamp: 1_000,
        ..Default::default()
    };
    let data = produce_request::PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(
            batch_encode(&[record], Compression::None).into_bytes(),
        ));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name("e"))
            .with_partition_data(vec![data])]);
    let ResponseKind::Produce(response) = call(
        broker,
        wire::ApiKey::Produce,
        RequestKind::Produce(request),
        9,
    )
    .await
    else {
        panic!("not a Produce response");
    };
    response.responses[0].partition_responses[0].error_code
}

async fn epoch_end(broker: &Arc<Broker>, epoch: i32) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
        offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
            .with_topic(name("e"))
            .with_partitions(vec![
                offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                    .with_leader_epoch(epoch),
            ]),
    ]);
    let request = RequestKind::OffsetForLeaderEpoch(request);
    let ResponseKind::OffsetForLeaderEpoch(response) =
        call(broker, wire::ApiKey::OffsetForLeaderEpoch, request, 4).await
    else {
        panic!("not an OffsetForLeaderEpoch response");
    };
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.leader_epoch, answer.end_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_batches_carry_the_image_leader_epoch_across_a_restart() {
    let disk = runtime::MemDisk::new();
    let broker = broker_clustered(disk.clone(), 5).await;
    let topic = CreatableTopic::default()
        .with_name(name("e"))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let request = CreateTopicsRequest::default().with_topics(vec![topic]);
    call(
        &broker,
        wire::ApiKey::CreateTopics,
        RequestKind::CreateTopics(request),
        7,
    )
    .await;
    let first = led_at(&broker).await;
    assert_eq!(produce_one(&broker).await, 0);

    // A restart: the node re-registers (fenced, so the partition goes offline) and comes back.
    broker.cluster().kill();
    drop(broker);
    // A fresh controller port: the killed node's listener may not have let go of the old one.
    let broker = broker_clustered(disk, 6).await;
    let second = led_at(&broker).await;
    assert!(
        second > first,
        "leadership came back at a new epoch: {first} -> {second}"
    );
    assert_eq!(produce_one(&broker).await, 0);

    assert_eq!(
        epoch_end(&broker, first).await,
        (0, first, 1),
        "the first batch"
    );
    assert_eq!(
        epoch_end(&broker, second).await,
        (0, second, 2),
        "the log end"
    );
    let image = broker.cluster().image();
    let topic_id = image.topic_by_name("e").unwrap().topic_id;
    let partition = image.partition(topic_id, 0).unwrap().clone();
    let log_latest = broker
        .topics()
        .partition("e", 0)
        .unwrap()
        .log()
        .latest_epoch();
    assert_eq!(
        log_latest,
        Some(partition.leader_epoch),
        "stamped with the image's epoch"
    );
}
