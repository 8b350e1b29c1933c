//! WriteTxnMarkers (v1; v0 differs only by its encoding, which the protocol crate no longer
//! decodes): the transaction coordinator's order to end a producer's transaction
//! in some partitions. Per marker, per partition, a control batch (COMMIT or ABORT) is appended
//! through the partition's log (`PartitionLog::append_marker`), which closes the producer's open
//! transaction there, fences older producer epochs and deposed coordinators. Only the
//! partition's leader writes it, stamped with its leader epoch, and the answer goes out once
//! the marker is as durable as an acks=all produce: fsynced here on a single replica, covered
//! by the HW on a replicated partition (fsynced on every ISR member, admitted only while the
//! ISR has `min.insync.replicas`), so a COMMIT the coordinator hears of can no longer be taken
//! back by a crash or a failover.
//!
//! Per-partition errors: UNKNOWN_TOPIC_OR_PARTITION (final: the topic is gone),
//! NOT_LEADER_OR_FOLLOWER / NOT_ENOUGH_REPLICAS / REQUEST_TIMED_OUT (retried by the
//! coordinator, which routes by the image), KAFKA_STORAGE_ERROR (offline partition, or the
//! fsync failed), INVALID_PRODUCER_EPOCH (an epoch older than the producer's),
//! TRANSACTION_COORDINATOR_FENCED (a coordinator epoch older than the last marker's).
//!
//! The appends happen when `append_all` runs, in request order like produce; only the wait
//! for durability is asynchronous. The coordinator calls `write` directly for the partitions
//! this broker leads, and sends the request to the leader for the others.

use crate::broker::Broker;
use crate::group::OFFSETS_TOPIC;
use crate::handlers::errors::{log_error_code, NONE};
use crate::handlers::produce::Wait;
use crate::handlers::Reply;
use crate::replica::AckError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use wire::ResponseKind;

/// How long a request's markers wait, together, to be durable: past it the coordinator hears
/// REQUEST_TIMED_OUT for those not yet durable and sends them again. Shorter than the
/// coordinator's request timeouts (`txn::sender::REQUEST_TIMEOUT`), so the answers that did
/// arrive in time are used.
pub(crate) const MARKER_WAIT_MAX: Duration = Duration::from_secs(10);

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
    /// What the marker must reach before it is answered as written.
    wait: Option<Wait>,
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
        // One deadline for every partition: the waits run in turn.
        let clock = self.broker.clock;
        let deadline = clock.now() + MARKER_WAIT_MAX;
        let mut results = Vec::with_capacity(self.markers.len());
        for (producer_id, epoch, commit, topics) in self.markers {
            let mut topic_results = Vec::with_capacity(topics.len());
            for (name, partitions) in topics {
                let mut partition_results = Vec::with_capacity(partitions.len());
                for Written { mut result, wait } in partitions {
                    if let Some(wait) = wait {
                        // AFTER_APPEND: the HW covers the marker, the ISR shrank meanwhile.
                        let left = deadline.saturating_duration_since(clock.now());
                        let error = wait.outcome(left).await.filter(|error| {
                            *error != AckError::NotEnoughReplicasAfterAppend.code()
                        });
                        if let Some(error) = error {
                            result.error_code = error.code();
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
    let access = crate::cluster_mode::Access::Produce;
    let served = match broker.partition_served(target.topic, target.index, access, None) {
        Ok(served) => served,
        Err(error) => return failed(error),
    };
    let partition = served.partition;
    if partition.durable().failed {
        return failed(ResponseError::KafkaStorageError);
    }
    let appended = {
        let mut log = partition.log();
        let mut replica = partition.replica();
        let led = match served.replicated {
            false => None,
            true => match replica
                .as_mut()
                .filter(|led| led.writable(served.leader_epoch))
            {
                None => return failed(ResponseError::NotLeaderOrFollower),
                Some(led) => {
                    if let Err(error) = led.core.append_admit() {
                        return failed(error.code());
                    }
                    Some(led)
                }
            },
        };
        let appended = log.append_marker(
            target.producer_id,
            target.producer_epoch,
            target.coordinator_epoch,
            target.commit,
            served.leader_epoch,
            now_ms,
        );
        appended.map(|info| {
            let wait = match led {
                None => Wait::Durable(partition.clone(), info.base_offset),
                Some(led) => {
                    let mut outputs = Vec::new();
                    led.log_end_feed(&mut outputs, log.log_end_offset());
                    led.outputs_apply(outputs);
                    let (receiver, request) = led.ack_wait(info.base_offset + 1);
                    let epoch = served.leader_epoch;
                    Wait::Replicated(receiver, partition.clone(), request, epoch)
                }
            };
            (info, wait)
        })
    };
    match appended {
        Ok((info, wait)) => {
            partition.flush_request();
            partition.readers_wake();
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
                wait: Some(wait),
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
            partition.offline_if_sync_failed();
            failed(log_error_code(&error))
        }
    }
}
