//! DescribeQuorum (API 55, KIP-595): the metadata log's Raft quorum, partition 0 of
//! `__cluster_metadata`, as this node knows it (Kafka's brokers forward it to the active
//! controller; here every node answers from its own cluster status, so the leader's answer is the
//! full one): the leader, the leader epoch (the Raft term), the high watermark (the commit index)
//! and every voter with its log end offset where the leader knows it (raft-rs's
//! `Progress::matched`; -1 elsewhere, and on a node that does not lead). A Raft index N is the
//! Kafka offset just past the N entries, so the index is the log end offset as it stands.
//! v2 lists each voter's controller listener (none for a zero-config node, which is its own lone
//! voter and binds no controller listener).

use crate::broker::Broker;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// The metadata log's topic, as KRaft names it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// The name of the controller listener in v2's node list.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub fn handle(broker: &Arc<Broker>, request: DescribeQuorumRequest, version: i16) -> ResponseKind {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    partition_describe(broker, &topic.topic_name, partition.partition_index)
                })
                .map(|data| match version {
                    0 | 1 => data.with_error_message(None),
                    _ => data,
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    let mut response = DescribeQuorumResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_nodes(nodes(broker));
    }
    ResponseKind::DescribeQuorum(response)
}

fn partition_describe(
    broker: &Arc<Broker>,
    topic: &kafka_protocol::messages::TopicName,
    index: i32,
) -> PartitionData {
    let refused = |message: &'static str| {
        PartitionData::default()
            .with_partition_index(index)
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_error_message(Some(StrBytes::from_static_str(message)))
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_high_watermark(-1)
    };
    if topic.0.as_str() != METADATA_TOPIC || index != 0 {
        return refused("the only Raft quorum is the metadata log's, __cluster_metadata-0");
    }
    let cluster = broker.cluster();
    let status = cluster.status();
    let offset = |index: u64| i64::try_from(index).unwrap_or(i64::MAX);
    let voters = cluster
        .voters()
        .keys()
        .map(|id| {
            let end = status.replicated.get(id).map_or(-1, |end| offset(*end));
            ReplicaState::default()
                .with_replica_id(BrokerId(*id))
                .with_log_end_offset(end)
        })
        .collect();
    PartitionData::default()
        .with_partition_index(index)
        .with_leader_id(BrokerId(status.controller_leader.unwrap_or(-1)))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(offset(status.commit))
        .with_current_voters(voters)
}

/// v2: each voter's controller listener (`host:port` as `--voters` gives it).
fn nodes(broker: &Arc<Broker>) -> Vec<Node> {
    broker
        .cluster()
        .voters()
        .iter()
        .map(|(id, address)| {
            let listeners = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .map(|(host, port)| {
                    Listener::default()
                        .with_name(StrBytes::from_static_str(CONTROLLER_LISTENER))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port)
                })
                .into_iter()
                .collect();
            Node::default()
                .with_node_id(BrokerId(*id))
                .with_listeners(listeners)
        })
        .collect()
}
