//! The idempotent producer against the real server (in-process, on a `MemDisk`): InitProducerId
//! hands out distinct ids, a retried batch gets its original offset and is stored once, a gap is
//! OUT_OF_ORDER_SEQUENCE_NUMBER and an old epoch INVALID_PRODUCER_EPOCH.

use bytes::Bytes;
use client::{Admin, ClientConfig, Connection, Consumer, ConsumerConfig, TopicPartition};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use wire::batch::build::{batch_encode_with, RecordSpec};
use wire::{RequestKind, ResponseKind};

mod common;

fn batch(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> Bytes {
    let specs: Vec<RecordSpec> = (0..records)
        .map(|index| RecordSpec {
            value: Some(Bytes::from(format!("s{sequence}-{index}"))),
            timestamp: 1,
            ..Default::default()
        })
        .collect();
    batch_encode_with(
        &specs,
        Compression::None,
        producer_id,
        epoch,
        sequence,
        false,
    )
    .into_bytes()
}

/// Produces `records` to t-0 and returns (error code, base offset).
async fn produce(connection: &mut Connection, records: Bytes) -> (i16, i64) {
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records))]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![topic]);
    let ResponseKind::Produce(response) = connection
        .request(RequestKind::Produce(request))
        .await
        .unwrap()
    else {
        panic!("not a produce response");
    };
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

async fn init_producer_id(connection: &mut Connection, transactional: bool) -> (i16, i64, i16) {
    // The crate's default is an empty transactional id, which Kafka refuses; idempotent
    // producers send null.
    let transactional_id = transactional.then(|| TransactionalId(StrBytes::from_static_str("tx")));
    let request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_transactional_id(transactional_id);
    let ResponseKind::InitProducerId(response) = connection
        .request(RequestKind::InitProducerId(request))
        .await
        .unwrap()
    else {
        panic!("not an InitProducerId response");
    };
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

#[tokio::test]
async fn retries_are_stored_once_and_gaps_and_old_epochs_refused() {
    let address = common::broker_start(|_| {}).await;
    let config = ClientConfig::new([address.clone()]);
    Admin::new(config.clone())
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut connection = Connection::connect(&address, &config).await.unwrap();

    let (error, first_id, epoch) = init_producer_id(&mut connection, false).await;
    assert_eq!((error, epoch), (0, 0));
    let (_, second_id, _) = init_producer_id(&mut connection, false).await;
    assert_ne!(first_id, second_id, "every producer gets its own id");
    let (error, _, _) = init_producer_id(&mut connection, true).await;
    assert_eq!(
        error,
        ResponseError::InvalidRequest.code(),
        "no transactions yet"
    );

    let id = first_id;
    assert_eq!(produce(&mut connection, batch(id, 0, 0, 2)).await, (0, 0));
    assert_eq!(produce(&mut connection, batch(id, 0, 2, 3)).await, (0, 2));
    assert_eq!(
        produce(&mut connection, batch(second_id, 0, 0, 1)).await,
        (0, 5)
    );
    // The retry of the first batch: its original offset, nothing appended.
    assert_eq!(produce(&mut connection, batch(id, 0, 0, 2)).await, (0, 0));
    assert_eq!(produce(&mut connection, batch(id, 0, 2, 3)).await, (0, 2));
    let gap = ResponseError::OutOfOrderSequenceNumber.code();
    assert_eq!(
        produce(&mut connection, batch(id, 0, 7, 1)).await,
        (gap, -1)
    );
    // A bumped epoch starts at 0; then the old epoch is fenced.
    assert_eq!(
        produce(&mut connection, batch(id, 1, 1, 1)).await,
        (gap, -1)
    );
    assert_eq!(produce(&mut connection, batch(id, 1, 0, 1)).await, (0, 6));
    let fenced = ResponseError::InvalidProducerEpoch.code();
    assert_eq!(
        produce(&mut connection, batch(id, 0, 5, 1)).await,
        (fenced, -1)
    );

    let mut consumer = Consumer::new(config, ConsumerConfig::kafka_defaults());
    let end = consumer
        .list_offsets(&TopicPartition::new("t", 0), -1)
        .await
        .unwrap();
    assert_eq!(
        end.offset, 7,
        "two batches of 2 and 3, one of 1, one of 1: no retry stored"
    );
}
