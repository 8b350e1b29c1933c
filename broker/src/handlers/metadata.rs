//! Metadata: brokers, topics, partitions and their leaders. On a single node this broker leads
//! every partition. Unknown topics are created only when both the broker
//! (`auto_create_topics`) and the request (`allow_auto_topic_creation`) allow it.

use crate::broker::Broker;
use crate::handlers::errors::{topic_error_code, NONE};
use crate::topics::TopicMetadata;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use uuid::Uuid;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> ResponseKind {
    let (host, port) = broker.config.advertised();
    let node_id = BrokerId(broker.config.node_id);
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node_id)
        .with_host(StrBytes::from_string(host))
        .with_port(port)];
    // v0 has no null: an empty list means "all topics" there, and "none" from v1 on.
    let all = match &request.topics {
        None => true,
        Some(topics) => topics.is_empty() && version == 0,
    };
    let topics: Vec<MetadataResponseTopic> = if all {
        let topics = broker.topics();
        topics
            .list()
            .map(|metadata| topic_response(broker, metadata))
            .collect()
    } else {
        let auto_create =
            broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let requested = request.topics.unwrap_or_default();
        requested
            .into_iter()
            .map(|topic| match topic.name {
                Some(name) => topic_by_name(broker, name.0.as_str(), auto_create),
                None => topic_by_id(broker, topic.topic_id),
            })
            .collect()
    };
    // v0 has no is_internal; from v1 on, internal topics say so (consumers skip them in regex
    // subscriptions).
    let topics = if version >= 1 {
        topics
            .into_iter()
            .map(|topic: MetadataResponseTopic| {
                let internal = topic
                    .name
                    .as_ref()
                    .is_some_and(|name| crate::topics::is_internal(name.0.as_str()));
                topic.with_is_internal(internal)
            })
            .collect()
    } else {
        topics
    };
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(StrBytes::from_string(
                broker.config.cluster_id.clone(),
            )))
            .with_controller_id(node_id)
            .with_topics(topics),
    )
}

fn topic_by_name(broker: &Arc<Broker>, name: &str, auto_create: bool) -> MetadataResponseTopic {
    let known = broker.topics().get(name).cloned();
    if let Some(metadata) = known {
        return topic_response(broker, &metadata);
    }
    let error_topic = |error: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_error_code(error.code())
    };
    if !auto_create {
        return error_topic(ResponseError::UnknownTopicOrPartition);
    }
    let topic_id = broker.topic_id_new();
    let now_ms = broker.clock.wall_ms();
    let partitions = broker.config.default_partitions;
    let created = broker
        .topics()
        .create(name, partitions, &Default::default(), topic_id, now_ms);
    match created {
        Ok(metadata) => topic_response(broker, &metadata),
        Err(crate::topics::TopicError::Exists { .. }) => match broker.topics().get(name).cloned() {
            Some(metadata) => topic_response(broker, &metadata),
            None => error_topic(ResponseError::UnknownTopicOrPartition),
        },
        Err(error) => {
            tracing::warn!(topic = name, %error, "auto-create failed");
            error_topic(topic_error_code(&error))
        }
    }
}

fn topic_by_id(broker: &Arc<Broker>, topic_id: Uuid) -> MetadataResponseTopic {
    let known = broker.topics().by_id(*topic_id.as_bytes()).cloned();
    match known {
        Some(metadata) => topic_response(broker, &metadata),
        None => MetadataResponseTopic::default()
            .with_topic_id(topic_id)
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

fn topic_response(broker: &Arc<Broker>, metadata: &TopicMetadata) -> MetadataResponseTopic {
    let node_id = BrokerId(broker.config.node_id);
    let partitions = (0..metadata.partition_count)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(index)
                .with_leader_id(node_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node_id])
                .with_isr_nodes(vec![node_id])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(
            metadata.name.clone(),
        ))))
        .with_topic_id(Uuid::from_bytes(metadata.topic_id))
        .with_is_internal(false)
        .with_partitions(partitions)
}
