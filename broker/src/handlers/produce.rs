//! Produce: validate every batch, append in request order, then answer once the batches are
//! durable (acks=1: fsynced here; acks=all: on a partition with one replica also fsynced here,
//! on a replicated one once the leader core's HW covers them, i.e. fsynced on every ISR
//! member; acks=0: no answer).
//!
//! Replicated partitions (`replica::shell`): an acks=all produce is refused with
//! NOT_ENOUGH_REPLICAS before anything is appended while the ISR is smaller than
//! `min.insync.replicas`; after the append it parks on the core, which answers OK,
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank meanwhile) or NOT_LEADER_OR_FOLLOWER (the
//! leadership ended: the write may or may not survive). The image decides who may write: a
//! core missing or at another leader epoch than the image's answers NOT_LEADER_OR_FOLLOWER.
//!
//! Validation happens before any append, so a rejected partition leaves its log untouched: the
//! envelope (`ValidatedBatch`: lengths, magic, CRC), the size limit, then every record
//! (`wire::records_validate`, as Kafka's LogValidator: codec, bounded decompression, record
//! structure, offsets, attribute bits, keys on compacted topics). The
//! append runs synchronously in the connection's reader, preserving the order of pipelined
//! produces; only the wait for the group-commit fsync is asynchronous.
//!
//! Batches with a producer id go through the log's producer state first (`storage::
//! producer_state`): a retry of a batch already in the log is answered with the original offsets
//! once those are durable, a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER and an old epoch
//! INVALID_PRODUCER_EPOCH (also an epoch a transaction marker fenced), before anything is
//! appended. Transactional batches open their producer's transaction in the partition
//! (`write_txn_markers` ends it); control batches from clients are refused (INVALID_RECORD).

use crate::broker::Broker;
use crate::handlers::errors::{batch_error_code, log_error_code, record_error_code, NONE};
use crate::handlers::{Reply, ResponseFuture};
use crate::partition::Partition;
use crate::planted::Bug;
use bytes::Bytes;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use wire::{records_validate, RecordError, RecordRules, ResponseKind, ValidatedBatch};

/// A partition's outcome, before durability is known.
struct Appended {
    response: PartitionProduceResponse,
    wait: Option<Wait>,
}

/// What a partition's answer waits for (a produce's, or a transaction marker's).
pub(crate) enum Wait {
    /// The last offset that must be durable here (one replica, or acks=1).
    Durable(Arc<Partition>, i64),
    /// The leader core's answer (replicated, acks=all), to request `RequestId` of the core at
    /// leader epoch `i32`.
    Replicated(
        crate::replica::shell::AckReceiver,
        Arc<Partition>,
        crate::replica::RequestId,
        i32,
    ),
}

impl Wait {
    /// Waits up to `timeout`; the error to answer with, if any. A replicated wait that times
    /// out is cancelled at the core (the write may still be committed later).
    pub(crate) async fn outcome(self, timeout: Duration) -> Option<ResponseError> {
        match self {
            Wait::Durable(partition, last_offset) => {
                let outcome =
                    runtime::time::timeout(timeout, partition.durable_wait(last_offset)).await;
                match outcome {
                    Ok(true) => None,
                    Ok(false) => Some(ResponseError::KafkaStorageError),
                    Err(_) => Some(ResponseError::RequestTimedOut),
                }
            }
            Wait::Replicated(receiver, partition, request, leader_epoch) => {
                match runtime::time::timeout(timeout, receiver).await {
                    Ok(Ok(Ok(()))) => None,
                    Ok(Ok(Err(error))) => Some(error.code()),
                    // The core went without answering (the partition was deleted).
                    Ok(Err(_)) => Some(ResponseError::NotLeaderOrFollower),
                    Err(_) => {
                        // Only on the core it parked on: ids are per core.
                        let mut replica = partition.replica();
                        let led = replica
                            .as_mut()
                            .filter(|led| led.core.leader_epoch() == leader_epoch);
                        if let Some(led) = led {
                            led.ack_cancel(request);
                        }
                        Some(ResponseError::RequestTimedOut)
                    }
                }
            }
        }
    }
}

pub fn handle(broker: &Arc<Broker>, request: ProduceRequest, _version: i16) -> Reply {
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        let partitions: Vec<Appended> = topic
            .partition_data
            .into_iter()
            .map(|data| {
                if !matches!(acks, -1..=1) {
                    return rejected(
                        data.index,
                        ResponseError::InvalidRequiredAcks,
                        "acks must be -1, 0 or 1",
                    );
                }
                partition_append(broker, &name, data, acks)
            })
            .collect();
        topics.push((topic.name, partitions));
    }
    if acks == 0 {
        return Reply::None;
    }
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0).max(1));
    Reply::Later(durable_response(topics, timeout))
}

fn rejected(index: i32, error: ResponseError, message: &str) -> Appended {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(message.to_string())));
    Appended {
        response,
        wait: None,
    }
}

fn partition_append(
    broker: &Arc<Broker>,
    topic: &str,
    data: PartitionProduceData,
    acks: i16,
) -> Appended {
    let index = data.index;
    let access = crate::cluster_mode::Access::Produce;
    // Batches are stamped with the partition's leader epoch: the image's in cluster mode (so
    // the epoch cache, OffsetForLeaderEpoch and diverging epochs follow leader changes), 0 on
    // a single node, which never changes leadership.
    let served = broker.partition_served(topic, index, access, None);
    let (partition, leader_epoch, replicated) = match served {
        Ok(served) => (served.partition, served.leader_epoch, served.replicated),
        Err(ResponseError::UnknownTopicOrPartition) => {
            let error = ResponseError::UnknownTopicOrPartition;
            return rejected(index, error, "unknown topic or partition");
        }
        Err(error) => return rejected(index, error, "this broker does not lead the partition"),
    };
    let Some(records) = data.records else {
        return rejected(index, ResponseError::InvalidRecord, "no records");
    };
    if partition.durable().failed {
        return rejected(
            index,
            ResponseError::KafkaStorageError,
            "partition offline after a disk error",
        );
    }
    let batches = match batches_validate(&partition, records) {
        Ok(batches) => batches,
        Err(refusal) => {
            tracing::warn!(topic, partition = index, reason = %refusal.message, "rejected produce");
            return refusal.into_appended(index);
        }
    };
    let now_ms = broker.clock.wall_ms();
    if replicated {
        return replicated_append(&partition, batches, (leader_epoch, acks), now_ms);
    }
    let produced = partition.log().produce(batches, leader_epoch, now_ms);
    let produced = match produced {
        Ok(produced) => produced,
        Err(error) => {
            match &error {
                storage::LogError::Sequence(_) => {
                    tracing::info!(topic, partition = index, %error, "refused a produce")
                }
                _ => tracing::error!(topic, partition = index, %error, "append failed"),
            }
            partition.offline_if_sync_failed();
            return rejected(index, log_error_code(&error), &error.to_string());
        }
    };
    produced_note(&partition, &produced);
    // A duplicate waits for its original's fsync, which may still be under way: the client must
    // not hear "stored" before the first attempt is durable.
    Appended {
        response: produced_response(index, &produced),
        wait: Some(Wait::Durable(partition, produced.last_offset)),
    }
}

fn produced_note(partition: &Partition, produced: &storage::Produced) {
    if produced.duplicate {
        tracing::debug!(
            topic = %partition.topic,
            partition = partition.index,
            base_offset = produced.first.base_offset,
            "duplicate batch answered with its original offsets"
        );
    } else {
        partition.flush_request();
    }
}

fn produced_response(index: i32, produced: &storage::Produced) -> PartitionProduceResponse {
    let first = produced.first;
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(NONE)
        .with_base_offset(first.base_offset)
        .with_log_append_time_ms(first.log_append_time_ms)
        .with_log_start_offset(first.log_start_offset)
}

/// The append on a replicated partition led here: under the log's lock, then the core's. The
/// core must lead at the image's epoch; acks=all must be admitted (min.insync.replicas) before
/// anything is written and then parks on the core; a duplicate waits for the HW to cover its
/// original. Followers parked at the log end are woken.
fn replicated_append(
    partition: &Arc<Partition>,
    batches: Vec<ValidatedBatch>,
    (leader_epoch, acks): (i32, i16),
    now_ms: i64,
) -> Appended {
    let index = partition.index;
    let (produced, receiver) = {
        let mut log = partition.log();
        let mut replica = partition.replica();
        let Some(led) = replica.as_mut().filter(|led| led.writable(leader_epoch)) else {
            let message = "this broker's leadership is starting or ending; refresh metadata";
            return rejected(index, ResponseError::NotLeaderOrFollower, message);
        };
        if acks == -1 {
            if let Err(error) = led.core.append_admit() {
                let message = "the in-sync replicas are fewer than min.insync.replicas";
                return rejected(index, error.code(), message);
            }
        }
        let produced = match log.produce(batches, leader_epoch, now_ms) {
            Ok(produced) => produced,
            Err(error) => {
                match &error {
                    storage::LogError::Sequence(_) => {
                        tracing::info!(topic = %partition.topic, partition = index, %error, "refused a produce")
                    }
                    _ => {
                        tracing::error!(topic = %partition.topic, partition = index, %error, "append failed")
                    }
                }
                drop((replica, log));
                partition.offline_if_sync_failed();
                return rejected(index, log_error_code(&error), &error.to_string());
            }
        };
        let mut outputs = Vec::new();
        led.log_end_feed(&mut outputs, log.log_end_offset());
        led.outputs_apply(outputs);
        let receiver = (acks == -1).then(|| led.ack_wait(produced.last_offset + 1));
        (produced, receiver)
    };
    produced_note(partition, &produced);
    // Followers parked at the log end read the new batches (and consumers, if the HW moved).
    partition.readers_wake();
    let wait = match receiver {
        Some((receiver, request)) => {
            Wait::Replicated(receiver, partition.clone(), request, leader_epoch)
        }
        None => Wait::Durable(partition.clone(), produced.last_offset),
    };
    Appended {
        response: produced_response(index, &produced),
        wait: Some(wait),
    }
}

/// Why a partition's data was refused, before anything was appended.
struct Refusal {
    error: ResponseError,
    message: String,
    /// Produce v8's per-record errors: (index in the batch, message).
    record_errors: Vec<(i32, &'static str)>,
}

impl Refusal {
    fn new(error: ResponseError, message: String) -> Refusal {
        Refusal {
            error,
            message,
            record_errors: Vec::new(),
        }
    }

    /// Records without a key on a compacted topic are named one by one, as Kafka does.
    fn records(error: &RecordError) -> Refusal {
        let mut refusal = Refusal::new(record_error_code(error), error.to_string());
        if let RecordError::KeyMissing { indexes } = error {
            let message = "a compacted topic refuses records without a key";
            refusal.record_errors = indexes.iter().map(|&index| (index, message)).collect();
        }
        refusal
    }

    fn into_appended(self, index: i32) -> Appended {
        let mut appended = rejected(index, self.error, &self.message);
        appended.response.record_errors = self
            .record_errors
            .into_iter()
            .map(|(batch_index, message)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(batch_index)
                    .with_batch_index_error_message(Some(StrBytes::from_static_str(message)))
            })
            .collect();
        appended
    }
}

/// Every check a partition's data must pass before any of it is appended: the envelopes
/// (lengths, magic, CRC), `max.message.bytes`, then every record against the topic's rules.
fn batches_validate(partition: &Partition, records: Bytes) -> Result<Vec<ValidatedBatch>, Refusal> {
    let batches = match ValidatedBatch::validate_all(records) {
        Ok(batches) if !batches.is_empty() => batches,
        Ok(_) => {
            let message = "no records".to_string();
            return Err(Refusal::new(ResponseError::InvalidRecord, message));
        }
        Err(error) => return Err(Refusal::new(batch_error_code(&error), error.to_string())),
    };
    let (limit, rules) = {
        let log = partition.log();
        let config = log.config();
        let rules = RecordRules {
            decompressed_bytes_max: config.max_message_bytes as usize,
            key_required: config.cleanup_policy.compacts(),
        };
        (config.max_message_bytes as usize, rules)
    };
    if let Some(batch) = batches.iter().find(|batch| batch.size() > limit) {
        let message = format!(
            "batch of {} bytes exceeds max.message.bytes {limit}",
            batch.size()
        );
        return Err(Refusal::new(ResponseError::MessageTooLarge, message));
    }
    if Bug::active(partition.planted(), Bug::SkipsRecordValidation) {
        return Ok(batches);
    }
    // Outside the log's lock: inflating a batch must not stall the partition's readers.
    for batch in &batches {
        records_validate(batch, &rules).map_err(|error| Refusal::records(&error))?;
    }
    Ok(batches)
}

fn durable_response(
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<Appended>)>,
    timeout: Duration,
) -> ResponseFuture {
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for Appended { mut response, wait } in partitions {
                let error = match wait {
                    None => None,
                    Some(wait) => wait.outcome(timeout).await,
                };
                if let Some(error) = error {
                    response = response.with_error_code(error.code()).with_base_offset(-1);
                }
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
    })
}
