//! The broker in cluster mode (`--voters`): the cluster node (`cluster::node`) decides topics,
//! leaders and producer-id blocks through the Raft metadata log; this module is the broker's
//! side of it.
//!
//! - `node_config`: the node's settings, from the broker's.
//! - `reconcile`: makes the local logs match the image: every partition whose replicas include
//!   this broker has a log, topics the image no longer has (or has under a new id) lose theirs.
//!   It goes through `Topics`, whose ordering keeps it crash-safe (logs opened before the
//!   metadata file names them, the file rewritten before logs are removed); a restart finds
//!   the same image and converges again.
//! - `partition_role`: what a Produce/Fetch/ListOffsets may do with a partition here.
//!
//! Internal topics (`__consumer_offsets`, `__transaction_state`) are not in the image: each
//! node keeps its own, as in single-node mode (replicated internal topics are issue 13).

use crate::broker::{Broker, NodeContext};
use crate::config::BrokerConfig;
use crate::topics::{is_internal, TopicError, Topics};
use cluster::image::MetadataImage;
use cluster::node::{BrokerEndpoint, ClusterConfig, ClusterTiming};
use cluster::records::TopicId;
use kafka_protocol::ResponseError;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The metadata log's directory inside the data dir.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// The cluster node's settings for this broker. `config` was validated: it is in cluster mode.
pub fn node_config(config: &BrokerConfig, context: &NodeContext) -> ClusterConfig {
    let (host, port) = config.advertised();
    ClusterConfig {
        node_id: config.node_id,
        voters: config.voters.clone(),
        controller_listen: config.controller_address().unwrap_or_default(),
        dir: config.data_dir.join(METADATA_DIR),
        disk: context.disk.clone(),
        clock: context.clock,
        seed: context.seed,
        broker: BrokerEndpoint {
            host,
            port: u16::try_from(port).unwrap_or(9092),
        },
        rack: config.rack.clone(),
        timing: ClusterTiming::production(),
        partitions_default: config.default_partitions,
        // Kafka's default.replication.factor.
        replication_factor_default: 1,
        planted: None,
        raft_planted: None,
    }
}

/// The image's topic id as the bytes Kafka's protocol carries.
pub fn topic_id_bytes(topic_id: TopicId) -> [u8; 16] {
    topic_id.0.to_be_bytes()
}

/// Brings the local logs in line with `image`. Idempotent; stops at the first I/O error (the
/// next image change, or the next call, tries again).
pub fn reconcile(
    topics: &mut Topics,
    image: &MetadataImage,
    node_id: i32,
    now_ms: i64,
) -> Result<(), TopicError> {
    // Deleted topics, and names reused by a new topic: remove the old logs first.
    let stale: Vec<String> = topics
        .list()
        .filter(|local| !is_internal(&local.name))
        .filter(|local| {
            image
                .topic_by_name(&local.name)
                .is_none_or(|topic| topic_id_bytes(topic.topic_id) != local.topic_id)
        })
        .map(|local| local.name.clone())
        .collect();
    for name in stale {
        topics.delete(&name)?;
    }
    // Internal topics are each node's own; the controller never creates them, and a name that
    // reached the image anyway must not take over the local topic.
    for topic in image.topics().filter(|topic| !is_internal(topic.name)) {
        let hosted: BTreeSet<i32> = topic
            .partitions
            .iter()
            .zip(0..)
            .filter(|(partition, _)| partition.replicas.contains(&node_id))
            .map(|(_, index)| index)
            .collect();
        let count = i32::try_from(topic.partitions.len()).expect("partition count fits i32");
        let configs = image
            .topic(topic.topic_id)
            .map(|topic| topic.configs.clone())
            .unwrap_or_default();
        let Some(local) = topics.get(topic.name) else {
            if !hosted.is_empty() {
                let id = topic_id_bytes(topic.topic_id);
                topics.create_hosted(topic.name, count, &configs, id, Some(hosted), now_ms)?;
            }
            continue;
        };
        let grown = local.partition_count != count || local.hosted.as_ref() != Some(&hosted);
        let reconfigured = local.configs != configs;
        if grown {
            topics.hosted_grow(topic.name, count, hosted, now_ms)?;
        }
        if reconfigured {
            topics.configs_replace(topic.name, &configs)?;
        }
    }
    Ok(())
}

/// What a data-plane request is about to do with a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Produce,
    Read,
}

/// Whether this broker may serve `access` on `topic`'s partition `index`, by the image:
/// only its leader may, and a produce only where the leader alone is every replica. With more
/// replicas there is no replication yet (issue 13): acknowledging a write only one replica
/// holds would break the promise of the topic's replication factor, so it is refused with
/// NOT_ENOUGH_REPLICAS.
pub fn partition_role(
    image: &MetadataImage,
    node_id: i32,
    topic: &str,
    index: i32,
    access: Access,
) -> Result<(), ResponseError> {
    let Some(topic) = image.topic_by_name(topic) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let Some(partition) = image.partition(topic.topic_id, index) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    match partition.leader() {
        None => return Err(ResponseError::LeaderNotAvailable),
        Some(leader) if leader != node_id => return Err(ResponseError::NotLeaderOrFollower),
        Some(_) => {}
    }
    if access == Access::Produce && partition.replicas.len() > 1 {
        return Err(ResponseError::NotEnoughReplicas);
    }
    Ok(())
}

/// Reconciles after every image change, for as long as the broker serves. A failed pass (an
/// I/O error) is retried a second later even without a change.
pub async fn reconcile_loop(broker: Arc<Broker>) {
    let Some(cluster) = broker.cluster() else {
        return;
    };
    let mut images = cluster.image_watch();
    loop {
        if let Err(error) = broker.reconcile() {
            tracing::error!(%error, "cannot open or remove partition logs the image asks for");
            runtime::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if images.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps a producer-id block from the controller in reserve, so InitProducerId rarely waits:
/// checks every `PRODUCER_ID_REFILL_POLL` and asks when the reserve is empty.
pub async fn producer_ids_refill(broker: Arc<Broker>) {
    let Some(cluster) = broker.cluster().cloned() else {
        return;
    };
    loop {
        if !broker.producer_id_block_wanted() {
            runtime::time::sleep(PRODUCER_ID_REFILL_POLL).await;
            continue;
        }
        match cluster.allocate_producer_ids().await {
            Ok(block) => broker.producer_id_block_add(block.first, block.size),
            Err(error) => {
                tracing::info!(%error, "no producer id block from the controller yet; retrying");
                runtime::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How often the refill task looks at the reserve. A block lasts 1,000 InitProducerIds.
const PRODUCER_ID_REFILL_POLL: Duration = Duration::from_millis(100);
