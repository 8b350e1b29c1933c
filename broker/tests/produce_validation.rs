//! Produce validation against the real server (in-process, on a `MemDisk`), issue 8 section 2:
//! a batch whose CRC is valid but whose records are not is refused per partition, with its Kafka
//! error code and a message, and nothing of that partition is stored, while the other partitions
//! of the same request are appended.

use bytes::{Bytes, BytesMut};
use client::{Admin, ClientConfig, Connection, Consumer, ConsumerConfig, TopicPartition};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::batch::crc_compute;
use wire::{RequestKind, ResponseKind};

mod common;

async fn broker_start() -> String {
    common::broker_start(|_| {}).await
}

fn records(keys: &[Option<&'static str>]) -> Bytes {
    let specs: Vec<RecordSpec> = keys
        .iter()
        .map(|key| RecordSpec {
            key: key.map(|key| Bytes::from_static(key.as_bytes())),
            value: Some(Bytes::from_static(b"v")),
            timestamp: 1,
            ..Default::default()
        })
        .collect();
    batch_encode(&specs, Compression::None).into_bytes()
}

/// A copy of `batch` with its attributes replaced and the CRC recomputed: only the records
/// section can tell the broker that something is wrong.
fn with_attributes(batch: &Bytes, attributes: i16) -> Bytes {
    let mut bytes = BytesMut::from(&batch[..]);
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc_compute(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes.freeze()
}

fn produce(topic: &str, partitions: Vec<(i32, Bytes)>) -> RequestKind {
    let partition_data = partitions
        .into_iter()
        .map(|(index, records)| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(records))
        })
        .collect();
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(partition_data);
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![topic]),
    )
}

fn partition_responses(response: ResponseKind) -> Vec<PartitionProduceResponse> {
    let ResponseKind::Produce(mut response) = response else {
        panic!("not a produce response")
    };
    let mut partitions = response.responses.remove(0).partition_responses;
    partitions.sort_by_key(|partition| partition.index);
    partitions
}

/// One line per partition: index, error name, and the error message.
fn render(partitions: &[PartitionProduceResponse]) -> String {
    partitions
        .iter()
        .map(|partition| {
            let error = ResponseError::try_from_code(partition.error_code)
                .map_or("NONE".to_string(), |error| format!("{error:?}"));
            let message = partition.error_message.as_deref().unwrap_or("-");
            let record_errors: Vec<String> = partition
                .record_errors
                .iter()
                .map(|e| format!("{}", e.batch_index))
                .collect();
            format!(
                "p{} {error} record_errors=[{}] {message}\n",
                partition.index,
                record_errors.join(",")
            )
        })
        .collect()
}

async fn log_end_offsets(address: &str, topic: &str, count: i32) -> Vec<i64> {
    let mut consumer = Consumer::new(
        ClientConfig::new([address.to_string()]),
        ConsumerConfig::kafka_defaults(),
    );
    let mut ends = Vec::new();
    for partition in 0..count {
        let tp = TopicPartition::new(topic, partition);
        ends.push(consumer.list_offsets(&tp, -1).await.unwrap().offset);
    }
    ends
}

#[tokio::test]
async fn a_poisoned_partition_is_refused_and_its_neighbour_is_stored() {
    let address = broker_start().await;
    let mut admin = Admin::new(ClientConfig::new([address.clone()]));
    admin
        .create_topic("t", 3, 1, BTreeMap::new())
        .await
        .unwrap();
    let compacted = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    admin.create_topic("c", 1, 1, compacted).await.unwrap();
    let mut connection = Connection::connect(&address, &ClientConfig::new([address.clone()]))
        .await
        .unwrap();

    let good = records(&[Some("a"), None]);
    let request = produce(
        "t",
        vec![
            (0, with_attributes(&good, 7)),
            (1, good.clone()),
            (2, with_attributes(&good, 0x10)),
        ],
    );
    let response = connection.request(request).await.unwrap();
    insta::assert_snapshot!(render(&partition_responses(response)), @r"
    p0 CorruptMessage record_errors=[] compression codec 7 is unknown (0-4 are none, gzip, snappy, lz4, zstd)
    p1 NONE record_errors=[] -
    p2 InvalidRecord record_errors=[] a transactional batch needs a producer id (it has -1)
    ");
    assert_eq!(log_end_offsets(&address, "t", 3).await, vec![0, 2, 0]);

    let keyless = records(&[Some("a"), None, Some("b"), None]);
    let request = produce("c", vec![(0, keyless)]);
    let response = connection.request(request).await.unwrap();
    insta::assert_snapshot!(render(&partition_responses(response)), @r"
    p0 InvalidRecord record_errors=[1,3] a compacted topic refuses records without a key (2 of them, first 1)
    ");
    let request = produce("c", vec![(0, records(&[Some("a"), Some("b")]))]);
    let response = connection.request(request).await.unwrap();
    insta::assert_snapshot!(render(&partition_responses(response)), @"p0 NONE record_errors=[] -");
    assert_eq!(log_end_offsets(&address, "c", 1).await, vec![2]);
}
