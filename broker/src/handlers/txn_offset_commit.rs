//! TxnOffsetCommit (API 28), v0-3: a transactional producer commits a group's offsets inside its
//! transaction. Per partition, the topic must exist and the metadata fit; the rest goes to the
//! group coordinator, which writes them as a transactional batch of the producer and keeps them
//! pending (invisible to OffsetFetch) until the transaction's marker reaches the group's
//! `__consumer_offsets` partition. The transaction coordinator is not asked here, as in Kafka:
//! the producer added the group with AddOffsetsToTxn, whose marker completes these offsets.
//! v3 (KIP-447) carries the member's generation, checked like OffsetCommit's.

use crate::broker::Broker;
use crate::group::{
    Committed, Input, Output, TopicPartition, TxnCommitRequest, OFFSET_METADATA_BYTES_MAX,
};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, name_check, reply_when};
use crate::handlers::txns::transactional_id_check;
use crate::handlers::Reply;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Each partition's answer: decided here (`Err`) or by the coordinator (`Ok`, pending).
type Verdicts = Vec<(TopicName, Vec<(i32, Result<(), ResponseError>)>)>;

pub fn handle(broker: &Arc<Broker>, request: TxnOffsetCommitRequest, _version: i16) -> Reply {
    let checked = transactional_id_check(request.transactional_id.as_str())
        .and_then(|_| group_id_check(request.group_id.as_str()))
        .and_then(|group_id| {
            let member_id = name_check(request.member_id.as_str(), ResponseError::UnknownMemberId)?;
            Ok((group_id, member_id))
        });
    let (group_id, member_id) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            let verdicts = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic
                        .partitions
                        .iter()
                        .map(|partition| (partition.partition_index, Err(error)))
                        .collect();
                    (topic.name.clone(), partitions)
                })
                .collect();
            return Reply::Now(Box::new(response(verdicts, Ok(()))));
        }
    };
    let wall_ms = broker.groups().wall_ms();
    let mut offsets = Vec::new();
    let mut verdicts: Verdicts = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let partition_count = broker.partition_count(topic.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let metadata = partition.committed_metadata.map(|m| m.to_string());
            let verdict = if !(0..partition_count).contains(&index) {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                let key = TopicPartition {
                    topic: topic.name.0.to_string(),
                    partition: index,
                };
                let committed = Committed {
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: metadata.unwrap_or_default(),
                    commit_timestamp_ms: wall_ms,
                };
                offsets.push((key, committed));
                Ok(())
            };
            partitions.push((index, verdict));
        }
        verdicts.push((topic.name, partitions));
    }
    let commit = TxnCommitRequest {
        group_id,
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        generation_id: request.generation_id,
        member_id,
        offsets,
    };
    let receiver = broker
        .groups()
        .submit(|request, now| Input::TxnOffsetCommit {
            request,
            now,
            commit,
        });
    reply_when(receiver, move |output| match output {
        Some(Output::TxnOffsetCommit { result, .. }) => {
            response(verdicts, result.map_err(|error| group_error_code(&error)))
        }
        _ => response(verdicts, Err(ResponseError::CoordinatorNotAvailable)),
    })
}

/// Partitions the handler accepted take the coordinator's `result`.
fn response(verdicts: Verdicts, result: Result<(), ResponseError>) -> ResponseKind {
    let topics = verdicts
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, verdict)| {
                    let code = match verdict.and(result) {
                        Ok(()) => NONE,
                        Err(error) => error.code(),
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
}
