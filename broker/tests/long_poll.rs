//! Long-polling fetches against the real server: a parked fetch answers as soon as a partition it
//! asked for becomes readable, and `min_bytes` accumulates across partitions.

mod common;

use bytes::Bytes;
use client::{Admin, ClientConfig, Connection};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::collections::BTreeMap;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::{RequestKind, ResponseKind};

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

fn batch() -> Bytes {
    let record = RecordSpec {
        value: Some("v".into()),
        timestamp: 1,
        ..Default::default()
    };
    batch_encode(&[record], Compression::None).bytes().clone()
}

fn produce(partition: i32) -> RequestKind {
    let data = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(batch()));
    let topic = TopicProduceData::default()
        .with_name(topic_name())
        .with_partition_data(vec![data]);
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![topic]),
    )
}

fn fetch(partitions: &[i32], min_bytes: i32, max_wait_ms: i32) -> RequestKind {
    let partitions = partitions
        .iter()
        .map(|&partition| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let topic = FetchTopic::default()
        .with_topic(topic_name())
        .with_partitions(partitions);
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]),
    )
}

/// Bytes of records per partition in a fetch response.
fn fetched_bytes(response: ResponseKind) -> Vec<usize> {
    let ResponseKind::Fetch(response) = response else {
        panic!("not a fetch response")
    };
    response.responses[0]
        .partitions
        .iter()
        .map(|data| data.records.as_ref().map_or(0, Bytes::len))
        .collect()
}

async fn setup() -> (Connection, Connection) {
    let address = common::broker_start(|_| {}).await;
    let config = ClientConfig::new([address.clone()]);
    Admin::new(config.clone())
        .create_topic("t", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let consumer = Connection::connect(&address, &config).await.unwrap();
    let producer = Connection::connect(&address, &config).await.unwrap();
    (consumer, producer)
}

#[tokio::test]
async fn parked_fetch_answers_within_50ms_of_a_produce_to_its_partition() {
    let (mut consumer, mut producer) = setup().await;
    let clock = runtime::Clock::system();
    consumer.request_send(fetch(&[0], 1, 5_000)).await.unwrap();
    runtime::time::sleep(Duration::from_millis(200)).await; // Parked by now.
                                                            // A produce to a partition the fetch did not ask for must not answer it.
    producer.request(produce(1)).await.unwrap();
    runtime::time::sleep(Duration::from_millis(100)).await;
    producer.request(produce(0)).await.unwrap();
    let acknowledged = clock.now();
    let response = consumer.response_receive().await.unwrap();
    let latency = clock.now() - acknowledged;
    assert_eq!(fetched_bytes(response), vec![batch().len()]);
    assert!(
        latency < Duration::from_millis(50),
        "woke after {latency:?}"
    );
}

#[tokio::test]
async fn min_bytes_accumulates_across_partitions_until_met() {
    let (mut consumer, mut producer) = setup().await;
    let clock = runtime::Clock::system();
    let one_batch = i32::try_from(batch().len()).unwrap();
    consumer
        .request_send(fetch(&[0, 1], 2 * one_batch, 5_000))
        .await
        .unwrap();
    let started = clock.now();
    runtime::time::sleep(Duration::from_millis(200)).await;
    producer.request(produce(0)).await.unwrap();
    // One batch is not enough: the fetch stays parked across this wake.
    runtime::time::sleep(Duration::from_millis(300)).await;
    producer.request(produce(1)).await.unwrap();
    let acknowledged = clock.now();
    let response = consumer.response_receive().await.unwrap();
    let answered = clock.now();
    assert_eq!(fetched_bytes(response), vec![batch().len(), batch().len()]);
    assert!(
        answered - started >= Duration::from_millis(500),
        "answered before min_bytes"
    );
    assert!(
        answered - acknowledged < Duration::from_millis(50),
        "woke after {:?}",
        answered - acknowledged
    );
}
