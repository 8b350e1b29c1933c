//! WriteTxnMarkers (v1; v0 differs only by its encoding, which the protocol crate no longer
//! decodes): the transaction coordinator's order to end a producer's transaction
//! in some partitions. Per marker, per partition, a control batch (COMMIT or ABORT) is appended
//! through the partition's log (`PartitionLog::append_marker`), which closes the producer's open
//! transaction there, fences older producer epochs and deposed coordinators; the answer goes
//! out once every marker written is fsynced (the group commit), so a COMMIT the coordinator
//! hears of can no longer be taken back by a crash.
//!
//! Per-partition errors: UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR (offline partition, or
//! the fsync failed), INVALID_PRODUCER_EPOCH (an epoch older than the producer's),
//! TRANSACTION_COORDINATOR_FENCED (a coordinator epoch older than the last marker's).
//!
//! The appends happen when `append_all` runs, in request order like produce; only the wait
//! for durability is asynchronous. The coordinator calls `write` directly for the partitions
//! this broker hosts.

use crate::broker::Broker;
use crate::group::OFFSETS_TOPIC;
use crate::handlers::errors::{log_error_code, NONE};
use crate::handlers::Reply;
use crate::partition::Partition;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: WriteTxnMarkersRequest, _version: i16) -> Reply {
    let pending = append_all(broker, request);
    Reply::Later(Box::pin(async move {
        ResponseKind::WriteTxnMarkers(pending.durable().await)
    }))
}

/// Writes every marker of `request` and answers once they are durable (the coordinator's
/// entry point for the partitions hosted here).
pub async fn write(
    broker: &Arc<Broker>,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    append_all(broker, request).durable().await
}

/// One partition's outcome before durability is known.
struct Written {
    result: WritableTxnMarkerPartitionResult,
    /// The partition and the marker's offset, which must be durable before answering.
    wait: Option<(Arc<Partition>, i64)>,
}

/// One topic's partitions of a marker.
type TopicWritten = (kafka_protocol::messages::TopicName, Vec<Written>);

/// The markers appended, waiting for their fsync.
pub struct Pending {
    broker: Arc<Broker>,
    /// Per marker: producer id, epoch, result, then per topic its name and partitions.
    markers: Vec<(i64, i16, bool, Vec<TopicWritten>)>,
}

impl Pending {
    /// The response, once every appended marker is durable (or its partition failed).
    pub async fn durable(self) -> WriteTxnMarkersResponse {
        let mut results = Vec::with_capacity(self.markers.len());
        for (producer_id, epoch, commit, topics) in self.markers {
            let mut topic_results = Vec::with_capacity(topics.len());
            for (name, partitions) in topics {
                let mut partition_results = Vec::with_capacity(partitions.len());
                for Written { mut result, wait } in partitions {
                    if let Some((partition, offset)) = wait {
                        if !partition.durable_wait(offset).await {
                            result.error_code = ResponseError::KafkaStorageError.code();
                        } else if name.as_str() == OFFSETS_TOPIC {
                            // The transaction's offsets in this partition become committed
                            // (or are dropped) now that its marker is durable.
                            self.broker.groups().txn_completed(
                                result.partition_index,
                                producer_id,
                                epoch,
                                commit,
                            );
                        }
                    }
                    partition_results.push(result);
                }
                topic_results.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(name)
                        .with_partitions(partition_results),
                );
            }
            results.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(producer_id.into())
                    .with_topics(topic_results),
            );
        }
        WriteTxnMarkersResponse::default().with_markers(results)
    }
}

/// Appends every marker of `request`, in order; nothing waits here.
pub fn append_all(broker: &Arc<Broker>, request: WriteTxnMarkersRequest) -> Pending {
    let now_ms = broker.clock.wall_ms();
    let markers = request
        .markers
        .into_iter()
        .map(|marker| {
            let producer_id = marker.producer_id.0;
            let topics = marker
                .topics
                .into_iter()
                .map(|topic| {
                    let partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|index| {
                            let target = MarkerTarget {
                                topic: topic.name.0.as_str(),
                                index: *index,
                                producer_id,
                                producer_epoch: marker.producer_epoch,
                                coordinator_epoch: marker.coordinator_epoch,
                                commit: marker.transaction_result,
                            };
                            partition_mark(broker, &target, now_ms)
                        })
                        .collect();
                    (topic.name, partitions)
                })
                .collect();
            (
                producer_id,
                marker.producer_epoch,
                marker.transaction_result,
                topics,
            )
        })
        .collect();
    Pending {
        broker: broker.clone(),
        markers,
    }
}

struct MarkerTarget<'a> {
    topic: &'a str,
    index: i32,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
}

fn partition_mark(broker: &Arc<Broker>, target: &MarkerTarget<'_>, now_ms: i64) -> Written {
    let failed = |error: ResponseError| Written {
        result: WritableTxnMarkerPartitionResult::default()
            .with_partition_index(target.index)
            .with_error_code(error.code()),
        wait: None,
    };
    let Some(partition) = broker.topics().partition(target.topic, target.index) else {
        return failed(ResponseError::UnknownTopicOrPartition);
    };
    if partition.durable().failed {
        return failed(ResponseError::KafkaStorageError);
    }
    let appended = partition.log().append_marker(
        target.producer_id,
        target.producer_epoch,
        target.coordinator_epoch,
        target.commit,
        now_ms,
    );
    match appended {
        Ok(info) => {
            partition.flush_request();
            tracing::debug!(
                topic = target.topic,
                partition = target.index,
                producer_id = target.producer_id,
                commit = target.commit,
                offset = info.base_offset,
                "transaction marker written"
            );
            Written {
                result: WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(target.index)
                    .with_error_code(NONE),
                wait: Some((partition, info.base_offset)),
            }
        }
        Err(error) => {
            match &error {
                storage::LogError::Sequence(_) => {
                    tracing::info!(topic = target.topic, partition = target.index, %error, "refused a transaction marker")
                }
                _ => {
                    tracing::error!(topic = target.topic, partition = target.index, %error, "transaction marker append failed")
                }
            }
            failed(log_error_code(&error))
        }
    }
}
