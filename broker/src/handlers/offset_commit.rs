//! OffsetCommit (v2-9): per partition, the topic must exist and the metadata fit
//! `OFFSET_METADATA_BYTES_MAX`; the rest go to the coordinator as one write, acknowledged once
//! durable. Members commit with their generation; simple consumers (assign()) with generation -1
//! and no member id, accepted only while the group has no members.

use crate::broker::Broker;
use crate::group::{
    CommitRequest, Committed, Input, MemberRef, Output, TopicPartition, OFFSET_METADATA_BYTES_MAX,
};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, name_check, name_optional_check, reply_when};
use crate::handlers::Reply;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Each partition's answer: decided here (`Err`) or by the coordinator (`Ok`, pending).
type Verdicts = Vec<(TopicName, Vec<(i32, Result<(), ResponseError>)>)>;

pub fn handle(broker: &Arc<Broker>, request: OffsetCommitRequest, _version: i16) -> Reply {
    let member = match member_ref(&request) {
        Ok(member) => member,
        Err(error) => {
            let verdicts = verdicts_all(&request, Err(error));
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
    let commit = CommitRequest { member, offsets };
    let receiver = broker.groups().submit(|request, now| Input::OffsetCommit {
        request,
        now,
        commit,
    });
    reply_when(receiver, move |output| match output {
        Some(Output::OffsetCommit { result, .. }) => {
            response(verdicts, result.map_err(|error| group_error_code(&error)))
        }
        _ => response(verdicts, Err(ResponseError::CoordinatorNotAvailable)),
    })
}

fn member_ref(request: &OffsetCommitRequest) -> Result<MemberRef, ResponseError> {
    Ok(MemberRef {
        group_id: group_id_check(request.group_id.as_str())?,
        generation_id: request.generation_id_or_member_epoch,
        member_id: name_check(request.member_id.as_str(), ResponseError::UnknownMemberId)?,
        group_instance_id: name_optional_check(
            request.group_instance_id.as_ref(),
            ResponseError::InvalidRequest,
        )?,
    })
}

fn verdicts_all(request: &OffsetCommitRequest, verdict: Result<(), ResponseError>) -> Verdicts {
    request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| (partition.partition_index, verdict))
                .collect();
            (topic.name.clone(), partitions)
        })
        .collect()
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
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
}
