//! Transactions on the partition side, through the handlers on a `MemDisk` (so a power loss can
//! be staged): transactional batches hold the last stable offset (LSO) back until
//! WriteTxnMarkers decides them; read_committed fetches stop at the LSO and list the aborted
//! transactions; ListOffsets answers the LSO for read_committed; markers fence old producer
//! epochs and deposed coordinators; and a restart rebuilds the same LSO and aborted index.

mod common;

use broker::handlers::{self, write_txn_markers, Reply};
use broker::{Broker, BrokerConfig};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::batch::build::{batch_encode_with, RecordSpec};
use wire::codec::{request_decode, request_encode};
use wire::frame::frame_split;
use wire::{ApiKey, RequestKind, ResponseKind, ValidatedBatch};

async fn broker_open(disk: Arc<runtime::MemDisk>) -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    common::broker_open(config, disk, 3).await
}

/// Power loss: every byte not yet synced is gone; then a fresh start.
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

/// Topic "t", one partition, small segments (two data batches each): markers land in
/// segments that close.
async fn topic_create(broker: &Arc<Broker>) {
    common::topic_create(broker, "t", 1, &[("segment.bytes", "1024")]).await;
}

/// A batch of `values` (padded to 400 bytes each); transactional if `producer_id` is not -1.
fn batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Bytes {
    let specs: Vec<RecordSpec> = values
        .iter()
        .map(|value| RecordSpec {
            value: Some(Bytes::from(format!("{value:-<400}"))),
            timestamp: 1_000,
            ..Default::default()
        })
        .collect();
    let transactional = producer_id >= 0;
    batch_encode_with(
        &specs,
        Compression::None,
        producer_id,
        epoch,
        sequence,
        transactional,
    )
    .into_bytes()
}

/// Produces `records` to t-0: (error code, base offset).
async fn produce(broker: &Arc<Broker>, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_transactional_id(Some(TransactionalId(text("tx"))))
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(text("t")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records)),
            ])]);
    let ResponseKind::Produce(response) =
        call(broker, ApiKey::Produce, 9, RequestKind::Produce(request)).await
    else {
        panic!("a Produce response");
    };
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn markers(
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    partitions: &[(&str, i32)],
) -> WriteTxnMarkersRequest {
    let topics = partitions
        .iter()
        .map(|(topic, index)| {
            write_txn_markers_request::WritableTxnMarkerTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partition_indexes(vec![*index])
        })
        .collect();
    WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_coordinator_epoch(coordinator_epoch)
            .with_transaction_result(commit)
            .with_topics(topics),
    ])
}

/// Every partition's error code, in request order.
fn marker_errors(response: &WriteTxnMarkersResponse) -> Vec<i16> {
    response
        .markers
        .iter()
        .flat_map(|marker| &marker.topics)
        .flat_map(|topic| &topic.partitions)
        .map(|partition| partition.error_code)
        .collect()
}

/// WriteTxnMarkers through the wire at `version`.
async fn mark(broker: &Arc<Broker>, version: i16, request: WriteTxnMarkersRequest) -> Vec<i16> {
    let body = RequestKind::WriteTxnMarkers(request);
    let ResponseKind::WriteTxnMarkers(response) =
        call(broker, ApiKey::WriteTxnMarkers, version, body).await
    else {
        panic!("a WriteTxnMarkers response");
    };
    marker_errors(&response)
}

/// What a fetch of t-0 from `offset` answered.
#[derive(Debug)]
struct Fetched {
    high_watermark: i64,
    last_stable_offset: i64,
    /// (base offset, is control) of each batch.
    batches: Vec<(i64, bool)>,
    /// (producer id, first offset); `None` for read_uncommitted.
    aborted: Option<Vec<(i64, i64)>>,
}

async fn fetch(broker: &Arc<Broker>, offset: i64, read_committed: bool) -> Fetched {
    fetch_waiting(broker, offset, read_committed, 0).await
}

/// A fetch that may park up to `max_wait_ms` for one byte.
async fn fetch_waiting(
    broker: &Arc<Broker>,
    offset: i64,
    read_committed: bool,
    max_wait_ms: i32,
) -> Fetched {
    let request = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(text("t")))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(response) =
        call(broker, ApiKey::Fetch, 12, RequestKind::Fetch(request)).await
    else {
        panic!("a Fetch response");
    };
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let records = partition.records.clone().unwrap_or_default();
    let batches = ValidatedBatch::validate_all(records)
        .unwrap()
        .iter()
        .map(|batch| (batch.header().base_offset, batch.header().is_control()))
        .collect();
    Fetched {
        high_watermark: partition.high_watermark,
        last_stable_offset: partition.last_stable_offset,
        batches,
        aborted: partition.aborted_transactions.as_ref().map(|aborted| {
            aborted
                .iter()
                .map(|txn| (txn.producer_id.0, txn.first_offset))
                .collect()
        }),
    }
}

/// ListOffsets latest of t-0 at isolation level `isolation_level`.
async fn latest(broker: &Arc<Broker>, read_committed: bool) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(text("t")))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
            ])]);
    let ResponseKind::ListOffsets(response) = call(
        broker,
        ApiKey::ListOffsets,
        5,
        RequestKind::ListOffsets(request),
    )
    .await
    else {
        panic!("a ListOffsets response");
    };
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.offset
}

const A: i64 = 100;
const B: i64 = 200;
const C: i64 = 300;

#[tokio::test]
async fn markers_decide_what_read_committed_readers_see() {
    let disk = runtime::MemDisk::new();
    let broker = broker_open(disk.clone()).await;
    topic_create(&broker).await;
    assert_eq!(
        produce(&broker, batch(-1, -1, -1, &["plain0"])).await,
        (0, 0)
    );
    assert_eq!(
        produce(&broker, batch(A, 0, 0, &["a0", "a1"])).await,
        (0, 1)
    );
    assert_eq!(produce(&broker, batch(B, 0, 0, &["b0"])).await, (0, 3));
    assert_eq!(
        produce(&broker, batch(-1, -1, -1, &["plain1"])).await,
        (0, 4)
    );

    let uncommitted = fetch(&broker, 0, false).await;
    assert_eq!(
        (uncommitted.high_watermark, uncommitted.last_stable_offset),
        (5, 1)
    );
    assert_eq!(uncommitted.batches.len(), 4);
    assert_eq!(
        uncommitted.aborted, None,
        "read_uncommitted gets no aborted list"
    );
    let committed = fetch(&broker, 0, true).await;
    assert_eq!(
        committed.batches,
        [(0, false)],
        "nothing at or above the LSO"
    );
    assert_eq!(committed.aborted, Some(Vec::new()));
    assert!(fetch(&broker, 1, true).await.batches.is_empty());
    assert_eq!(
        (latest(&broker, false).await, latest(&broker, true).await),
        (5, 1)
    );

    // A aborts (over the wire); B commits (the coordinator's direct call).
    assert_eq!(
        mark(&broker, 1, markers(A, 0, 0, false, &[("t", 0)])).await,
        [0]
    );
    assert_eq!(
        (latest(&broker, false).await, latest(&broker, true).await),
        (6, 3),
        "the abort is durable: B is the oldest open transaction"
    );
    let response = write_txn_markers::write(&broker, markers(B, 0, 3, true, &[("t", 0)])).await;
    assert_eq!(marker_errors(&response), [0]);
    assert_eq!(response.markers[0].producer_id.0, B);
    assert_eq!(
        (latest(&broker, false).await, latest(&broker, true).await),
        (7, 7)
    );

    let committed = fetch(&broker, 0, true).await;
    assert_eq!(committed.last_stable_offset, 7);
    assert_eq!(
        committed.batches,
        [
            (0, false),
            (1, false),
            (3, false),
            (4, false),
            (5, true),
            (6, true)
        ]
    );
    assert_eq!(committed.aborted, Some(vec![(A, 1)]));
    assert_eq!(
        fetch(&broker, 5, true).await.aborted,
        Some(vec![(A, 1)]),
        "ends at 5"
    );
    assert_eq!(fetch(&broker, 6, true).await.aborted, Some(Vec::new()));

    // Fencing: an empty abort with a newer epoch fences A's epoch 0; a deposed coordinator's
    // marker is refused; unknown partitions are named.
    assert_eq!(
        mark(&broker, 1, markers(A, 1, 0, false, &[("t", 0)])).await,
        [0]
    );
    let fenced = produce(&broker, batch(A, 0, 2, &["zombie"])).await;
    assert_eq!(fenced, (ResponseError::InvalidProducerEpoch.code(), -1));
    assert_eq!(
        mark(&broker, 1, markers(A, 0, 0, true, &[("t", 0)])).await,
        [ResponseError::InvalidProducerEpoch.code()]
    );
    assert_eq!(
        mark(&broker, 1, markers(B, 0, 2, false, &[("t", 0)])).await,
        [ResponseError::TransactionCoordinatorFenced.code()]
    );
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        mark(
            &broker,
            1,
            markers(B, 0, 3, false, &[("t", 9), ("nope", 0)])
        )
        .await,
        [unknown, unknown]
    );

    // C stays open across a power loss: the same LSO and aborted index after the restart,
    // rebuilt from the producer snapshots, the log and the closed segments' .txnindex.
    assert_eq!(produce(&broker, batch(C, 0, 0, &["c0"])).await, (0, 8));
    assert_eq!(
        produce(&broker, batch(-1, -1, -1, &["plain2"])).await,
        (0, 9)
    );
    let before = fetch(&broker, 0, true).await;
    assert_eq!((before.high_watermark, before.last_stable_offset), (10, 8));
    let broker = power_loss_and_restart(broker, &disk).await;
    let after = fetch(&broker, 0, true).await;
    assert_eq!(
        (
            after.high_watermark,
            after.last_stable_offset,
            &after.batches,
            &after.aborted
        ),
        (10, 8, &before.batches, &before.aborted)
    );
    assert_eq!(latest(&broker, true).await, 8);
    assert_eq!(
        produce(&broker, batch(A, 0, 2, &["zombie"])).await.0,
        ResponseError::InvalidProducerEpoch.code(),
        "the fence survives the restart"
    );
    assert_eq!(
        mark(&broker, 1, markers(C, 0, 0, false, &[("t", 0)])).await,
        [0]
    );
    let done = fetch(&broker, 0, true).await;
    assert_eq!(done.last_stable_offset, 11);
    assert_eq!(done.aborted, Some(vec![(A, 1), (C, 8)]));
    assert!(!done.batches.contains(&(11, false)));
}

#[tokio::test]
async fn a_parked_read_committed_fetch_wakes_when_a_marker_decides() {
    let broker = broker_open(runtime::MemDisk::new()).await;
    topic_create(&broker).await;
    assert_eq!(produce(&broker, batch(A, 0, 0, &["a0"])).await, (0, 0));
    let clock = runtime::Clock::system();
    let started = clock.now();
    let parked = {
        let broker = broker.clone();
        runtime::spawn(async move { fetch_waiting(&broker, 0, true, 20_000).await })
    };
    runtime::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !parked.is_finished(),
        "nothing stable to read: the fetch parks"
    );
    let response = write_txn_markers::write(&broker, markers(A, 0, 0, true, &[("t", 0)])).await;
    assert_eq!(marker_errors(&response), [0]);
    let fetched = parked.await.unwrap();
    assert!(
        clock.now() - started < std::time::Duration::from_secs(10),
        "woken by the marker, not the timeout"
    );
    assert_eq!(fetched.last_stable_offset, 2);
    assert_eq!(fetched.batches, [(0, false), (1, true)]);
}

#[tokio::test]
async fn a_marker_the_disk_refuses_is_a_storage_error() {
    let disk = runtime::MemDisk::new();
    let broker = broker_open(disk.clone()).await;
    topic_create(&broker).await;
    assert_eq!(produce(&broker, batch(A, 0, 0, &["a0"])).await, (0, 0));
    disk.full_set(true);
    assert_eq!(
        mark(&broker, 1, markers(A, 0, 0, true, &[("t", 0)])).await,
        [ResponseError::KafkaStorageError.code()]
    );
    disk.full_set(false);
    assert_eq!(
        mark(&broker, 1, markers(A, 0, 0, true, &[("t", 0)])).await,
        [0]
    );
    assert_eq!(latest(&broker, true).await, 2);
}
