//! Leader epochs on the wire, through the codec and the handlers of a single-node broker:
//! OffsetForLeaderEpoch's answers from the epoch cache, Fetch's `current_leader_epoch` fencing
//! and diverging epoch (v12), and ListOffsets' leader epochs. The log holds epochs 0 (offsets
//! 0-2, produced) and 2 (offsets 3-4, appended as a leader at epoch 2 would), so the answers
//! have history to walk; the single node's own leader epoch is 0.

mod common;

use broker::handlers::{self, Reply};
use broker::{Broker, BrokerConfig};
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::codec::{request_decode, request_encode, response_encode};
use wire::frame::frame_split;
use wire::{ApiKey, RequestKind, ResponseKind};

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn batch(value: &str) -> wire::ValidatedBatch {
    let record = RecordSpec {
        value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
        timestamp: 1_000,
        ..Default::default()
    };
    batch_encode(&[record], Compression::None)
}

/// Encodes `request`, decodes it as the connection does, handles it, and checks the response
/// encodes at `version`.
async fn call(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    request: RequestKind,
) -> ResponseKind {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(3);
    let mut buffer = BytesMut::new();
    request_encode(&mut buffer, &header, &request).expect("the request encodes");
    let frame = frame_split(&mut buffer, 1 << 24).unwrap().unwrap();
    let decoded = request_decode(frame).expect("the request decodes");
    let response = match handlers::handle(broker, decoded) {
        Reply::None => panic!("no reply"),
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
    };
    let mut out = BytesMut::new();
    response_encode(&mut out, api_key, version, 3, &response)
        .unwrap_or_else(|error| panic!("{api_key:?} v{version} does not encode: {error}"));
    response
}

/// A broker with topic `t` (one partition): 3 batches at epoch 0, then 2 at epoch 2, durable.
async fn broker_with_history() -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    let broker = common::broker_open(config, runtime::MemDisk::new(), 11).await;
    common::topic_create(&broker, "t", 1, &[]).await;
    for value in ["a", "b", "c"] {
        let data = produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(batch(value).into_bytes()));
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("t"))
                .with_partition_data(vec![data])]);
        let ResponseKind::Produce(produced) =
            call(&broker, ApiKey::Produce, 9, RequestKind::Produce(request)).await
        else {
            panic!("not a Produce response");
        };
        assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    }
    let partition = broker.topics().partition("t", 0).unwrap();
    for value in ["d", "e"] {
        partition.log().append(batch(value), 2, 0).unwrap();
    }
    partition.flush_request();
    for _ in 0..500 {
        if partition.high_watermark() == 5 {
            break;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        partition.high_watermark(),
        5,
        "the epoch-2 batches are durable"
    );
    broker
}

/// (error, leader epoch, end offset) per (partition, current_leader_epoch, leader_epoch) asked.
async fn epochs_ask(
    broker: &Arc<Broker>,
    version: i16,
    asked: &[(i32, i32, i32)],
) -> Vec<(i16, i32, i64)> {
    let partitions = asked
        .iter()
        .map(|&(partition, current, epoch)| {
            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)
        })
        .collect();
    let mut request = OffsetForLeaderEpochRequest::default().with_topics(vec![
        offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
            .with_topic(name("t"))
            .with_partitions(partitions),
    ]);
    if version >= 3 {
        request = request.with_replica_id(BrokerId(2));
    }
    let request = RequestKind::OffsetForLeaderEpoch(request);
    let ResponseKind::OffsetForLeaderEpoch(response) =
        call(broker, ApiKey::OffsetForLeaderEpoch, version, request).await
    else {
        panic!("not an OffsetForLeaderEpoch response");
    };
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
        .collect()
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_from_the_epoch_cache_as_kafka() {
    let broker = broker_with_history().await;
    let none = 0;
    let unknown_epoch = ResponseError::UnknownLeaderEpoch.code();
    let unknown_partition = ResponseError::UnknownTopicOrPartition.code();
    for version in 2..=4 {
        let answers = epochs_ask(
            &broker,
            version,
            &[
                (0, -1, 0),
                (0, -1, 1),
                (0, -1, 2),
                (0, -1, 3),
                (0, -1, -1),
                (0, 0, 0),
                (0, 1, 0),
                (7, -1, 0),
            ],
        )
        .await;
        assert_eq!(
            answers,
            [
                (none, 0, 3),            // epoch 0 ends where epoch 2 starts
                (none, 0, 3),            // no epoch 1: the largest below it, 0
                (none, 2, 5),            // the latest epoch ends at the log end
                (none, -1, -1),          // newer than any: UNDEFINED
                (none, -1, -1),          // no epoch: UNDEFINED
                (none, 0, 3),            // the current leader epoch (0) matches
                (unknown_epoch, -1, -1), // a client ahead of the leader's epoch
                (unknown_partition, -1, -1),
            ],
            "v{version}"
        );
    }
    // Below every known epoch once the log start moved past epoch 0: Kafka answers that epoch
    // and where the known history begins.
    let partition = broker.topics().partition("t", 0).unwrap();
    partition.log().advance_log_start_offset(4).unwrap();
    let answers = epochs_ask(&broker, 4, &[(0, -1, 0), (0, -1, 1), (0, -1, 2)]).await;
    assert_eq!(answers, [(none, 0, 4), (none, 1, 4), (none, 2, 5)]);
}

/// Fetch v12 of `t`-0 at `fetch_offset`: (error, diverging (epoch, end), record bytes).
async fn fetch_at(
    broker: &Arc<Broker>,
    version: i16,
    fetch_offset: i64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
) -> (i16, (i32, i64), usize) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(name("t"))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(fetch_offset)
                .with_current_leader_epoch(current_leader_epoch)
                .with_last_fetched_epoch(last_fetched_epoch)
                .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(response) =
        call(broker, ApiKey::Fetch, version, RequestKind::Fetch(request)).await
    else {
        panic!("not a Fetch response");
    };
    let data = &response.responses[0].partitions[0];
    let diverging = (data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
    let bytes = data.records.as_ref().map_or(0, bytes::Bytes::len);
    (data.error_code, diverging, bytes)
}

#[tokio::test]
async fn fetch_fences_epochs_and_answers_a_diverging_epoch() {
    let broker = broker_with_history().await;
    let none = 0;
    let agree = (-1, -1);
    // A follower that holds epoch 0 up to offset 3 agrees with us: records.
    let (error, diverging, bytes) = fetch_at(&broker, 12, 3, -1, 0).await;
    assert_eq!((error, diverging), (none, agree));
    assert!(bytes > 0, "the epoch-2 batches are served");
    // One that holds epoch 0 past offset 3 diverges: truncate to epoch 0's end, no records.
    assert_eq!(fetch_at(&broker, 12, 5, -1, 0).await, (none, (0, 3), 0));
    // One whose last epoch (1) we never had: our epoch at or below it is 0, ending at 3.
    assert_eq!(fetch_at(&broker, 12, 3, -1, 1).await, (none, (0, 3), 0));
    // Holding epoch 2 up to the log end: no divergence (and nothing new to read).
    assert_eq!(fetch_at(&broker, 12, 5, -1, 2).await.0, none);
    assert_eq!(fetch_at(&broker, 12, 5, -1, 2).await.1, agree);
    // An epoch newer than the leader's: no end to compare with, OFFSET_OUT_OF_RANGE.
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    assert_eq!(
        fetch_at(&broker, 12, 5, -1, 3).await,
        (out_of_range, agree, 0)
    );
    // The current leader epoch, v9+: ours is 0.
    let unknown_epoch = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(fetch_at(&broker, 12, 0, 1, -1).await.0, unknown_epoch);
    assert_eq!(fetch_at(&broker, 9, 0, 1, -1).await.0, unknown_epoch);
    assert_eq!(fetch_at(&broker, 9, 0, 0, -1).await.0, none);
    // A fetch offset below the log start is out of range, diverging or not.
    let partition = broker.topics().partition("t", 0).unwrap();
    partition.log().advance_log_start_offset(4).unwrap();
    assert_eq!(
        fetch_at(&broker, 12, 3, -1, 0).await,
        (out_of_range, agree, 0)
    );
}

/// ListOffsets v`version` of `t`-0: (error, offset, leader epoch) per timestamp asked.
async fn offsets_list(
    broker: &Arc<Broker>,
    version: i16,
    current: i32,
    timestamps: &[i64],
) -> Vec<(i16, i64, i32)> {
    let partitions = timestamps
        .iter()
        .map(|&timestamp| {
            list_offsets_request::ListOffsetsPartition::default()
                .with_current_leader_epoch(current)
                .with_timestamp(timestamp)
        })
        .collect();
    let request = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(partitions),
    ]);
    let ResponseKind::ListOffsets(response) = call(
        broker,
        ApiKey::ListOffsets,
        version,
        RequestKind::ListOffsets(request),
    )
    .await
    else {
        panic!("not a ListOffsets response");
    };
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.offset, p.leader_epoch))
        .collect()
}

#[tokio::test]
async fn list_offsets_carries_leader_epochs_and_fences() {
    let broker = broker_with_history().await;
    // Latest: the leader's epoch (0 on a single node); earliest and a timestamp: the epoch of
    // the batch found.
    let answers = offsets_list(&broker, 6, -1, &[-1, -2, 1_000]).await;
    assert_eq!(answers, [(0, 5, 0), (0, 0, 0), (0, 0, 0)]);
    let partition = broker.topics().partition("t", 0).unwrap();
    partition.log().advance_log_start_offset(3).unwrap();
    let answers = offsets_list(&broker, 4, -1, &[-2, 1_000]).await;
    assert_eq!(answers, [(0, 3, 2), (0, 3, 2)], "epoch 2's batches");
    // Before v4 there is no leader epoch on the wire.
    assert_eq!(offsets_list(&broker, 3, -1, &[-2]).await, [(0, 3, -1)]);
    let unknown_epoch = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(offsets_list(&broker, 4, 1, &[-1]).await[0].0, unknown_epoch);
    assert_eq!(offsets_list(&broker, 4, 0, &[-1]).await[0].0, 0);
}
