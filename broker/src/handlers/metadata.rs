//! Metadata, from the metadata image: every live (registered, unfenced) broker
//! with its endpoint and rack, each partition's real leader, leader epoch, replicas and ISR, and
//! the Raft leader as the controller. A partition without a leader answers LEADER_NOT_AVAILABLE;
//! replicas on brokers that are not live are listed as offline (v5+).
//!
//! Unknown topics are auto-created through the controller when broker and request allow it;
//! the answer then waits for the records to be applied here. Internal topics are each node's
//! own and not in the image: this node lists its own, led by itself, marked internal (issue 13
//! replicates them).

use crate::broker::Broker;
use crate::cluster_mode::topic_id_bytes;
use crate::handlers::errors::NONE;
use crate::handlers::Reply;
use cluster::controller::TopicCreate;
use cluster::image::{MetadataImage, TopicImage};
use cluster::records::TopicId;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use uuid::Uuid;
use wire::ResponseKind;

/// What the request asks for, resolved against the image.
enum Wanted {
    Name(String),
    Id(Uuid),
}

pub fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> Reply {
    let cluster = broker.cluster().clone();
    // v0 has no null: an empty list means "all topics" there, and "none" from v1 on.
    let all = match &request.topics {
        None => true,
        Some(topics) => topics.is_empty() && version == 0,
    };
    if all {
        let image = cluster.image();
        let mut names: Vec<Wanted> = image
            .topics()
            .map(|t| Wanted::Name(t.name.into()))
            .collect();
        let topics = broker.topics();
        let internal = topics.list().filter(|t| broker.node_local(&t.name));
        names.extend(internal.map(|t| Wanted::Name(t.name.clone())));
        drop(topics);
        return Reply::Now(Box::new(response(broker, &image, &names, version)));
    }
    let wanted: Vec<Wanted> = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|topic| match topic.name {
            Some(name) => Wanted::Name(name.0.to_string()),
            None => Wanted::Id(topic.topic_id),
        })
        .collect();
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let image = cluster.image();
    let missing: Vec<TopicCreate> = wanted
        .iter()
        .filter_map(|wanted| match wanted {
            Wanted::Name(name) if image.topic_by_name(name).is_none() => Some(name.clone()),
            _ => None,
        })
        .filter(|name| !crate::topics::is_internal(name))
        .map(|name| TopicCreate {
            name,
            partition_count: -1,
            replication_factor: -1,
            configs: Default::default(),
        })
        .collect();
    if !auto_create || missing.is_empty() {
        return Reply::Now(Box::new(response(broker, &image, &wanted, version)));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        // Refusals (a bad name, a lost race) show as UNKNOWN_TOPIC_OR_PARTITION below; a topic
        // someone else created meanwhile is simply there.
        if let Err(error) = cluster.create_topics(missing, false).await {
            tracing::warn!(%error, "auto-create through the controller failed");
        }
        let _ = broker.reconcile();
        response(&broker, &cluster.image(), &wanted, version)
    }))
}

fn response(
    broker: &Arc<Broker>,
    image: &MetadataImage,
    wanted: &[Wanted],
    version: i16,
) -> ResponseKind {
    let cluster = broker.cluster();
    let brokers = image
        .brokers_live()
        .map(|registration| {
            let entry = MetadataResponseBroker::default()
                .with_node_id(BrokerId(registration.broker_id))
                .with_host(StrBytes::from_string(registration.host.clone()))
                .with_port(i32::from(registration.port));
            match version {
                0 => entry,
                _ => entry.with_rack(registration.rack.clone().map(StrBytes::from_string)),
            }
        })
        .collect();
    let topics = wanted
        .iter()
        .map(|wanted| {
            let found = match wanted {
                Wanted::Name(name) => image.topic_by_name(name),
                Wanted::Id(id) => image.topic(TopicId(u128::from_be_bytes(*id.as_bytes()))),
            };
            if let Some(internal) = match wanted {
                Wanted::Name(name) => internal_topic_response(broker, name, version),
                Wanted::Id(_) => None,
            } {
                return internal;
            }
            match (found, wanted) {
                (Some(topic), _) => topic_response(image, topic, version),
                (None, Wanted::Name(name)) => MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                (None, Wanted::Id(id)) => MetadataResponseTopic::default()
                    .with_topic_id(*id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            }
        })
        .collect();
    let controller = cluster.status().controller_leader.unwrap_or(-1);
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    let response = match version {
        0 => response,
        _ => response.with_controller_id(BrokerId(controller)),
    };
    let response = match version {
        0 | 1 => response,
        _ => response.with_cluster_id(Some(StrBytes::from_string(
            broker.config.cluster_id.clone(),
        ))),
    };
    ResponseKind::Metadata(response)
}

/// A node-local internal topic (`__consumer_offsets`, `__transaction_state`), if `name` is one
/// this node has: every partition led by this node alone.
fn internal_topic_response(
    broker: &Broker,
    name: &str,
    version: i16,
) -> Option<MetadataResponseTopic> {
    if !broker.node_local(name) {
        return None;
    }
    let topics = broker.topics();
    let local = topics.get(name)?;
    let node = BrokerId(broker.config.node_id);
    let partitions = (0..local.partition_count)
        .map(|index| {
            let entry = MetadataResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(index)
                .with_leader_id(node)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            match version {
                0..=6 => entry,
                _ => entry.with_leader_epoch(0),
            }
        })
        .collect();
    let response = MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_partitions(partitions);
    let response = match version {
        0 => response,
        _ => response.with_is_internal(true),
    };
    Some(match version {
        0..=9 => response,
        _ => response.with_topic_id(Uuid::from_bytes(local.topic_id)),
    })
}

fn topic_response(
    image: &MetadataImage,
    topic: &TopicImage,
    version: i16,
) -> MetadataResponseTopic {
    let ids = |brokers: &[i32]| brokers.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .zip(0..)
        .map(|(partition, index)| {
            let (error, leader) = match partition.leader() {
                Some(leader) => (NONE, leader),
                None => (ResponseError::LeaderNotAvailable.code(), -1),
            };
            let entry = MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader))
                .with_replica_nodes(ids(&partition.replicas))
                .with_isr_nodes(ids(&partition.isr));
            let entry = match version {
                0..=6 => entry,
                _ => entry.with_leader_epoch(partition.leader_epoch),
            };
            match version {
                0..=4 => entry,
                _ => {
                    let offline: Vec<i32> = partition
                        .replicas
                        .iter()
                        .copied()
                        .filter(|id| !image.broker_is_live(*id))
                        .collect();
                    entry.with_offline_replicas(ids(&offline))
                }
            }
        })
        .collect();
    let response = MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    let response = match version {
        0 => response,
        // A replicated `__consumer_offsets`.
        _ => response.with_is_internal(crate::topics::is_internal(&topic.name)),
    };
    match version {
        0..=9 => response,
        _ => response.with_topic_id(Uuid::from_bytes(topic_id_bytes(topic.topic_id))),
    }
}
