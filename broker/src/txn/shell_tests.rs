//! The shell with a scripted `MarkerSender`: markers retried with backoff after failures until
//! every partition has one, a fenced answer ends a partition, and a coordinator reopened over
//! the same `__transaction_state` resends the markers of a decision it finds prepared.

use super::shell::{MarkerFuture, MarkerSender, TxnCoordinator};
use super::{Input, Output, TxnConfig, TxnState};
use crate::group::TopicPartition;
use crate::producer_ids::ProducerIds;
use crate::topics::Topics;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers each call with the next scripted step (`None`: the request is lost), then with
/// success for every partition.
#[derive(Debug, Default)]
struct Scripted {
    script: Mutex<VecDeque<Option<ResponseError>>>,
    requests: Mutex<Vec<WriteTxnMarkersRequest>>,
}

impl Scripted {
    fn new(script: &[Option<ResponseError>]) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script.iter().copied().collect()),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Every partition of `request` answered with `error` (`None`: success).
fn answered(
    request: &WriteTxnMarkersRequest,
    error: Option<ResponseError>,
) -> WriteTxnMarkersResponse {
    let code = error.map_or(0, |error| error.code());
    let markers = request
        .markers
        .iter()
        .map(|marker| {
            let topics = marker
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|index| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(*index)
                                .with_error_code(code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

impl MarkerSender for Scripted {
    fn leader(&self, _partition: &TopicPartition) -> Option<i32> {
        Some(1)
    }

    fn send(&self, _node_id: i32, request: WriteTxnMarkersRequest) -> MarkerFuture {
        self.requests.lock().unwrap().push(request.clone());
        let step = self.script.lock().unwrap().pop_front();
        let response = match step {
            Some(None) => Err("lost".to_string()),
            Some(Some(error)) => Ok(answered(&request, Some(error))),
            None => Ok(answered(&request, None)),
        };
        Box::pin(async move { response })
    }
}

fn open(topics: &mut Topics, sender: Arc<Scripted>) -> Arc<TxnCoordinator> {
    // Ids from one large block, as the controller would hand out.
    let mut producer_ids = ProducerIds::clustered();
    producer_ids.block_add(0, 1 << 40);
    let coordinator = TxnCoordinator::open(
        topics,
        TxnConfig {
            state_partitions: 2,
            ..TxnConfig::kafka_defaults()
        },
        crate::cluster_mode::Placement::Local,
        4,
        1,
        runtime::Clock::system(),
        runtime::rng::stream_rng(1, runtime::rng::Stream::Transactions, 0),
        Arc::new(Mutex::new(producer_ids)),
        None,
    )
    .unwrap();
    coordinator.topic_ensure(topics).unwrap();
    coordinator.start(sender);
    coordinator
}

fn topics_open(disk: &Arc<runtime::MemDisk>) -> Topics {
    Topics::open(disk.clone(), "data".into(), 0, None).unwrap()
}

/// Runs one transaction of `id` up to an answered EndTxn(commit) over partitions t-0 and t-1.
async fn prepared(coordinator: &Arc<TxnCoordinator>, id: &str) -> (i64, i16) {
    let receiver = coordinator.init_producer_id(id.to_string(), Duration::from_secs(60), None);
    let Ok(Output::InitProducerId {
        result: Ok(producer),
        ..
    }) = receiver.await
    else {
        panic!("init answered");
    };
    let partitions = [0, 1]
        .map(|partition| TopicPartition {
            topic: "t".to_string(),
            partition,
        })
        .to_vec();
    let receiver = coordinator.submit(|request, now, wall_ms| Input::AddPartitions {
        request,
        now,
        wall_ms,
        transactional_id: id.to_string(),
        producer_id: producer.0,
        epoch: producer.1,
        partitions,
    });
    assert!(matches!(
        receiver.await,
        Ok(Output::AddPartitions { result: Ok(()), .. })
    ));
    let receiver = coordinator.submit(|request, _, wall_ms| Input::EndTxn {
        request,
        wall_ms,
        transactional_id: id.to_string(),
        producer_id: producer.0,
        epoch: producer.1,
        commit: true,
    });
    assert!(matches!(
        receiver.await,
        Ok(Output::EndTxn { result: Ok(()), .. })
    ));
    producer
}

fn state(coordinator: &TxnCoordinator, id: &str) -> TxnState {
    coordinator.read(|core| core.describe(id).unwrap().metadata.state)
}

async fn completed(coordinator: &TxnCoordinator, id: &str) {
    for _ in 0..300 {
        if state(coordinator, id) == TxnState::CompleteCommit {
            return;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} stayed {:?}", state(coordinator, id));
}

#[tokio::test]
async fn markers_are_retried_until_every_partition_has_one() {
    let disk = runtime::MemDisk::new();
    let mut topics = topics_open(&disk);
    let timed_out = Some(ResponseError::RequestTimedOut);
    let sender = Scripted::new(&[None, timed_out, timed_out]);
    let coordinator = open(&mut topics, sender.clone());
    prepared(&coordinator, "a").await;
    completed(&coordinator, "a").await;
    assert_eq!(sender.calls(), 4, "lost, timed out twice, then written");
    let requests = sender.requests.lock().unwrap();
    assert!(
        requests.iter().all(|request| request == &requests[0]),
        "the same markers each time"
    );
    assert_eq!(requests[0].markers.len(), 1);
    assert!(requests[0].markers[0].transaction_result);
}

#[tokio::test]
async fn a_fenced_partition_is_done() {
    let disk = runtime::MemDisk::new();
    let mut topics = topics_open(&disk);
    let sender = Scripted::new(&[Some(ResponseError::InvalidProducerEpoch)]);
    let coordinator = open(&mut topics, sender.clone());
    prepared(&coordinator, "a").await;
    completed(&coordinator, "a").await;
    assert_eq!(sender.calls(), 1, "a fenced answer is final");
}

#[tokio::test]
async fn a_reopened_coordinator_resends_the_markers_of_a_prepared_decision() {
    let disk = runtime::MemDisk::new();
    let mut topics = topics_open(&disk);
    let down = Scripted::new(&[None; 1000]);
    let coordinator = open(&mut topics, down.clone());
    let producer = prepared(&coordinator, "a").await;
    runtime::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(state(&coordinator, "a"), TxnState::PrepareCommit);
    drop(coordinator);
    runtime::time::sleep(Duration::from_millis(50)).await;

    let up = Scripted::new(&[]);
    let reopened = open(&mut topics, up.clone());
    completed(&reopened, "a").await;
    let requests = up.requests.lock().unwrap();
    let marker = &requests[0].markers[0];
    assert_eq!((marker.producer_id.0, marker.producer_epoch), producer);
    assert!(marker.transaction_result, "the decision was commit");
}
