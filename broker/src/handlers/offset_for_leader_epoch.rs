//! OffsetForLeaderEpoch (API 23, KIP-101/279/320): per partition, the end offset of a leader
//! epoch in this leader's log (`leader_epoch::end_offset_for`). Followers ask it to find where
//! their log diverges from the leader's; consumers (KIP-320) to check that their position
//! survived a leader change.
//!
//! Only the leader answers, whatever `replica_id` says (v3+: a follower's id, -1 for a
//! consumer, -2 for debugging), as Kafka 3+ does (`ReplicaManager.lastOffsetForLeaderEpoch`
//! always fetches only from the leader); `current_leader_epoch` is checked first
//! (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH). A partition without an answer (no epoch asked,
//! or one newer than the leader's) gets NONE with -1/-1, Kafka's UNDEFINED.

use crate::broker::Broker;
use crate::cluster_mode::Access;
use crate::handlers::errors::NONE;
use crate::leader_epoch;
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> ResponseKind {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| partition_answer(broker, topic.topic.0.as_str(), asked))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(topics))
}

fn partition_answer(
    broker: &Arc<Broker>,
    topic: &str,
    asked: &OffsetForLeaderPartition,
) -> EpochEndOffset {
    let answer = EpochEndOffset::default()
        .with_partition(asked.partition)
        .with_leader_epoch(-1)
        .with_end_offset(-1);
    let current = leader_epoch::from_wire(asked.current_leader_epoch);
    let (partition, leader_epoch) =
        match broker.partition_serving_at(topic, asked.partition, Access::Read, current) {
            Ok(found) => found,
            Err(error) => return answer.with_error_code(error.code()),
        };
    let log = partition.log();
    match leader_epoch::end_offset_for(&log, asked.leader_epoch, leader_epoch) {
        Some((epoch, end_offset)) => answer
            .with_error_code(NONE)
            .with_leader_epoch(epoch)
            .with_end_offset(end_offset),
        None => answer.with_error_code(NONE),
    }
}
