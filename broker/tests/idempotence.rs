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
    let (error, transactional_id, epoch) = init_producer_id(&mut connection, true).await;
    assert_eq!(
        (error, epoch),
        (0, 0),
        "a transactional id gets its own producer id"
    );
    assert!(transactional_id > second_id);

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

/// A proxy in front of the broker that cuts the connection instead of delivering the response to
/// the first `drops` Produce requests it forwards: the broker stored the batch, the client never
/// heard, and retries.
async fn proxy_dropping_produce_responses(broker: String, drops: usize) -> String {
    use runtime::io::{AsyncReadExt, AsyncWriteExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = runtime::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let left = Arc::new(AtomicUsize::new(drops));
    runtime::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = runtime::net::TcpStream::connect(&broker).await.unwrap();
            let left = left.clone();
            runtime::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                // Correlation ids of Produce requests whose responses must be dropped.
                let (doomed_send, mut doomed) = runtime::sync::mpsc::unbounded_channel::<i32>();
                let upstream = runtime::spawn(async move {
                    loop {
                        let mut length = [0u8; 4];
                        if client_read.read_exact(&mut length).await.is_err() {
                            return;
                        }
                        let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
                        if client_read.read_exact(&mut frame).await.is_err() {
                            return;
                        }
                        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
                        let correlation = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                        let take = api_key == 0
                            && left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        if take {
                            let _ = doomed_send.send(correlation);
                        }
                        if server_write.write_all(&length).await.is_err()
                            || server_write.write_all(&frame).await.is_err()
                        {
                            return;
                        }
                    }
                });
                loop {
                    let mut length = [0u8; 4];
                    if server_read.read_exact(&mut length).await.is_err() {
                        break;
                    }
                    let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
                    if server_read.read_exact(&mut frame).await.is_err() {
                        break;
                    }
                    let correlation = i32::from_be_bytes(frame[0..4].try_into().unwrap());
                    let mut dropped = false;
                    while let Ok(doomed) = doomed.try_recv() {
                        dropped |= doomed == correlation;
                    }
                    if dropped {
                        break; // Hang up: the client never hears that its batch was stored.
                    }
                    if client_write.write_all(&length).await.is_err()
                        || client_write.write_all(&frame).await.is_err()
                    {
                        break;
                    }
                }
                upstream.abort();
            });
        }
    });
    address
}

/// What the client's producer stores when the first answer to each of its first two produces is
/// lost: with idempotence every record once, at the offset it was told; without, the retries
/// are stored again (which proves the proxy makes the broker see stored retries at all).
async fn produce_through_lossy_proxy(idempotence: bool) -> (Vec<i64>, i64) {
    let broker_address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let proxy = proxy_dropping_produce_responses(broker_address.clone(), 2).await;
    let advertised = proxy.clone();
    let _ = common::broker_start(move |config| {
        config.listen = broker_address;
        config.advertise = Some(advertised);
    })
    .await;
    let mut config = ClientConfig::new([proxy]);
    config.retry_backoff = std::time::Duration::from_millis(10);
    Admin::new(config.clone())
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer_config = client::ProducerConfig {
        idempotence,
        linger: std::time::Duration::ZERO,
        ..client::ProducerConfig::kafka_defaults()
    };
    let producer = client::Producer::new(config.clone(), producer_config);
    let mut offsets = Vec::new();
    for index in 0..6 {
        let mut record =
            client::ProducerRecord::new("t", None, Some(Bytes::from(format!("v{index}"))));
        record.partition = Some(0);
        offsets.push(producer.send(record).await.unwrap().offset);
    }
    let mut consumer = Consumer::new(config, ConsumerConfig::kafka_defaults());
    let end = consumer
        .list_offsets(&TopicPartition::new("t", 0), -1)
        .await
        .unwrap();
    (offsets, end.offset)
}

#[tokio::test]
async fn the_client_s_idempotent_retries_are_stored_once() {
    assert_eq!(
        produce_through_lossy_proxy(true).await,
        (vec![0, 1, 2, 3, 4, 5], 6)
    );
}

#[tokio::test]
async fn without_idempotence_the_same_retries_duplicate() {
    let (offsets, end) = produce_through_lossy_proxy(false).await;
    assert_eq!(
        end, 8,
        "both lost answers led to a second copy: {offsets:?}"
    );
}
