//! The broker's side of the cluster node (`cluster::node`), which decides topics, leaders and
//! producer-id blocks through the Raft metadata log. There is one mode: with no `--voters` the
//! node is its own single voter (zero config), with them one of a quorum.
//!
//! - `node_config`: the node's settings, from the broker's.
//! - `unfenced_wait`: a broker serves once the controller has registered and unfenced it.
//! - `legacy_import`: a data dir written before the metadata log existed (topics in
//!   `gregor-topics.json` alone, no `__cluster_metadata/`) is imported once, through the
//!   controller, keeping its topic ids; until the import is applied no reconcile may run, or it
//!   would remove every topic the image does not have yet.
//! - `reconcile`: makes the local logs match the image: every partition whose replicas include
//!   this broker has a log, topics the image no longer has (or has under a new id) lose theirs.
//!   It goes through `Topics`, whose ordering keeps it crash-safe (logs opened before the
//!   metadata file names them, the file rewritten before logs are removed); a restart finds
//!   the same image and converges again.
//! - `partition_role`: what a Produce/Fetch/ListOffsets may do with a partition here.
//!
//! The internal topics (`__consumer_offsets`, `__transaction_state`) are each node's own on a
//! lone voter; in a cluster of several voters they are topics of the image, replicated
//! (`placement`, `internal_replication_factor`), and the group and transaction coordinators
//! follow their partitions' leadership (`group::shell`, `txn::shell`).

use crate::broker::{Broker, NodeContext};
use crate::config::BrokerConfig;
use crate::server::ServeError;
use crate::topics::{is_internal, TopicError, Topics};
use cluster::controller::TopicImport;
use cluster::image::MetadataImage;
use cluster::node::{BrokerEndpoint, ClusterConfig, ClusterHandle, ClusterTiming};
use cluster::records::TopicId;
use kafka_protocol::ResponseError;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// What the simulator changes of a cluster-mode node; production leaves every field empty.
/// Each is a setting `gregor broker` has no flag for, on purpose: none belongs in production.
#[derive(Clone, Default)]
pub struct ClusterHooks {
    /// Replaces `ClusterTiming::production()`: the simulator's short ticks and sessions.
    pub timing: Option<ClusterTiming>,
    /// Planted control-plane bugs (features `planted-bugs`), for the simulator's self-test.
    pub planted: Option<cluster::PlantedBug>,
    pub raft_planted: Option<cluster::raft::RaftBug>,
    /// Handed the node's handle once it started, before the broker opens: how the simulator
    /// observes each node's Raft status and applied images for its checker.
    pub observer: Option<ClusterObserver>,
}

/// See `ClusterHooks::observer`.
pub type ClusterObserver = Arc<dyn Fn(&ClusterHandle) + Send + Sync>;

impl std::fmt::Debug for ClusterHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHooks")
            .field("timing", &self.timing)
            .field("planted", &self.planted)
            .field("raft_planted", &self.raft_planted)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Where the internal topics (`__consumer_offsets`, `__transaction_state`) live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each node's own topic, every partition held by its coordinator from the start.
    Local,
    /// A topic of the metadata image, replicated; a coordinator holds a partition while this
    /// broker leads it.
    Replicated,
}

/// Where the internal topics live: replicated through the image in a cluster of several
/// voters, the node's own on a lone voter (whose data dirs keep their committed offsets and
/// transactions).
pub fn placement(config: &BrokerConfig) -> Placement {
    match config.voters.len() > 1 {
        true => Placement::Replicated,
        false => Placement::Local,
    }
}

/// Whether topic `name` is the node's own, outside the image: an internal topic, unless
/// replicated.
pub fn node_local(name: &str, placement: Placement) -> bool {
    is_internal(name) && placement == Placement::Local
}

/// The replication factor of an internal topic the image holds: Kafka's
/// `offsets.topic.replication.factor` (3), or every broker of a smaller cluster.
pub fn internal_replication_factor(image: &MetadataImage) -> i16 {
    let brokers = image.brokers().count().max(1);
    i16::try_from(brokers.min(3)).expect("at most 3")
}

/// The metadata log's directory inside the data dir.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// The cluster node's settings for this broker (`config` was validated).
pub fn node_config(config: &BrokerConfig, context: &NodeContext) -> ClusterConfig {
    let (host, port) = config.advertised();
    let hooks = &context.cluster_hooks;
    ClusterConfig {
        node_id: config.node_id,
        voters: config.voters_effective(),
        controller_listen: config.controller_address(),
        dir: config.data_dir.join(METADATA_DIR),
        disk: context.disk.clone(),
        clock: context.clock,
        seed: context.seed,
        broker: BrokerEndpoint {
            host,
            port: u16::try_from(port).unwrap_or(9092),
        },
        rack: config.rack.clone(),
        timing: hooks.timing.clone().unwrap_or_else(|| ClusterTiming {
            broker_heartbeat: config.broker_heartbeat_interval,
            broker_session_timeout: config.broker_session_timeout,
            ..ClusterTiming::production()
        }),
        partitions_default: config.default_partitions,
        // Kafka's default.replication.factor.
        replication_factor_default: 1,
        planted: hooks.planted,
        raft_planted: hooks.raft_planted,
    }
}

/// Resolves once the controller has registered and unfenced this broker; an error if the node
/// stopped first (its metadata log failed a write). A lone voter gets there within a few
/// fsyncs; a quorum's member waits for its quorum, as Kafka's broker waits before it serves.
pub async fn unfenced_wait(cluster: &ClusterHandle) -> Result<(), ServeError> {
    let mut status = cluster.status_watch();
    loop {
        {
            let now = status.borrow_and_update();
            if now.failed {
                return Err(ServeError::ClusterFailed);
            }
            if now.broker_epoch.is_some() && !now.fenced {
                return Ok(());
            }
        }
        if status.changed().await.is_err() {
            return Err(ServeError::ClusterFailed);
        }
    }
}

/// Imports what a data dir written before the metadata log existed holds, once: its topics
/// (non-internal, with no `hosted` set: a pre-Raft gregor hosted every partition), under
/// their ids, and producer ids above those its `producer-id-block` file covered. The
/// controller writes it as one entry and skips topics already imported under the same id, so a
/// crash anywhere repeats at most a harmless import; the reconcile that follows records the
/// hosted sets, after which nothing is imported again. Any topic refused stops the start.
pub async fn legacy_import(broker: &Broker) -> Result<(), ServeError> {
    let topics: Vec<TopicImport> = broker
        .topics()
        .list()
        .filter(|local| !is_internal(&local.name) && local.hosted.is_none())
        .map(|local| TopicImport {
            name: local.name.clone(),
            topic_id: TopicId(u128::from_be_bytes(local.topic_id)),
            partition_count: local.partition_count,
            configs: local.configs.clone(),
        })
        .collect();
    let data_dir = &broker.config.data_dir;
    let floor = crate::producer_ids::legacy_floor(&*broker.disk, data_dir).map_err(|error| {
        ServeError::Open(TopicError::Corrupt {
            path: data_dir.join(crate::producer_ids::FILE_NAME),
            message: error.to_string(),
        })
    })?;
    let cluster = broker.cluster();
    if topics.is_empty() && floor <= cluster.image().producer_id_next() {
        return Ok(());
    }
    let count = topics.len();
    let results = cluster.import_topics(topics, floor).await?;
    if let Some((name, Err(error))) = results.into_iter().find(|(_, result)| result.is_err()) {
        let message = error.to_string();
        return Err(ServeError::Import { name, message });
    }
    tracing::info!(
        topics = count,
        producer_id_floor = floor,
        "imported the pre-Raft data dir"
    );
    Ok(())
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
    offsets: Placement,
) -> Result<(), TopicError> {
    // Deleted topics, and names reused by a new topic: remove the old logs first. A replicated
    // `__consumer_offsets` too, such as the node-local one a lone voter or an older gregor
    // left (its committed offsets were this node's alone: they are not carried over).
    let stale: Vec<String> = topics
        .list()
        .filter(|local| !node_local(&local.name, offsets))
        .filter(|local| {
            image
                .topic_by_name(&local.name)
                .is_none_or(|topic| topic_id_bytes(topic.topic_id) != local.topic_id)
        })
        .map(|local| local.name.clone())
        .collect();
    for name in stale {
        if is_internal(&name) {
            tracing::warn!(
                topic = name,
                "removing the node-local topic: the image replicates it"
            );
        }
        topics.remove(&name)?;
    }
    // Node-local topics are each node's own: a name that reached the image anyway must not
    // take over the local topic.
    for topic in image
        .topics()
        .filter(|topic| !node_local(topic.name, offsets))
    {
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

/// Whether this broker may serve `access` on `topic`'s partition `index`, by the image, and at
/// which leader epoch: only its leader may. With more than one replica, the leader core
/// (`replica::shell`) decides what is acknowledged and readable.
///
/// `current_leader_epoch` is the epoch the client believes current (Fetch v9+, ListOffsets v4+,
/// OffsetForLeaderEpoch; `None` when it sent -1). As in Kafka's `Partition.getLocalLog`, it is
/// checked before leadership: a client behind the image gets FENCED_LEADER_EPOCH, one ahead of
/// it UNKNOWN_LEADER_EPOCH, both retriable after a metadata refresh.
pub fn partition_role(
    image: &MetadataImage,
    node_id: i32,
    topic: &str,
    index: i32,
    // Produce and reads are served alike today; kept so callers say what they do.
    _access: Access,
    current_leader_epoch: Option<i32>,
) -> Result<i32, ResponseError> {
    let Some(topic) = image.topic_by_name(topic) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let Some(partition) = image.partition(topic.topic_id, index) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    crate::leader_epoch::check(partition.leader_epoch, current_leader_epoch)?;
    match partition.leader() {
        None => return Err(ResponseError::LeaderNotAvailable),
        Some(leader) if leader != node_id => return Err(ResponseError::NotLeaderOrFollower),
        Some(_) => {}
    }
    Ok(partition.leader_epoch)
}

/// Reconciles after every image change, for as long as the broker serves. A failed pass (an
/// I/O error) is retried a second later even without a change.
pub async fn reconcile_loop(broker: Arc<Broker>) {
    let mut images = broker.cluster().image_watch();
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
    let cluster = broker.cluster().clone();
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

/// Images for unit tests of cluster-mode code.
#[cfg(test)]
pub(crate) mod testing {
    use cluster::records::{IncarnationId, MetadataRecord, RegisterBroker};

    /// Brokers `1..=count` registered (at 127.0.0.1:9000 + id, broker epoch = id) and unfenced.
    pub(crate) fn brokers_live(count: i32) -> Vec<MetadataRecord> {
        let registered = (1..=count).map(|id| {
            MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: id,
                incarnation_id: IncarnationId(id as u128),
                broker_epoch: i64::from(id),
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                rack: None,
            })
        });
        let unfenced = (1..=count).map(|id| MetadataRecord::UnfenceBroker {
            broker_id: id,
            broker_epoch: i64::from(id),
        });
        registered.chain(unfenced).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::records::{MetadataRecord, PartitionChange, PartitionRecord};
    use runtime::Disk;
    use std::path::Path;

    const A: TopicId = TopicId(0xa);
    const A_NEW: TopicId = TopicId(0xa2);
    const B: TopicId = TopicId(0xb);

    fn partition(topic_id: TopicId, partition: i32, replicas: &[i32]) -> MetadataRecord {
        MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    /// Brokers 1-3 registered and unfenced; topic `a`: a-0 on [1], a-1 on [2], a-2 on
    /// [1, 2, 3]; topic `b`: b-0 on [2].
    fn image() -> MetadataImage {
        let mut records = crate::cluster_mode::testing::brokers_live(3);
        records.extend([
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: A,
            },
            partition(A, 0, &[1]),
            partition(A, 1, &[2]),
            partition(A, 2, &[1, 2, 3]),
            MetadataRecord::Topic {
                name: "b".into(),
                topic_id: B,
            },
            partition(B, 0, &[2]),
        ]);
        let mut image = MetadataImage::new();
        image.apply_batch(1, &records);
        image
    }

    fn topics_open(disk: &Arc<runtime::MemDisk>) -> Topics {
        let disk: Arc<dyn Disk> = disk.clone();
        Topics::open(disk, "data".into(), 0, None).unwrap()
    }

    fn dirs(disk: &Arc<runtime::MemDisk>) -> Vec<String> {
        let mut names: Vec<String> = disk
            .list(Path::new("data"))
            .unwrap()
            .iter()
            .filter(|path| disk.is_dir(path))
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_the_leader_serves() {
        let image = image();
        let role =
            |node, topic, index, access| partition_role(&image, node, topic, index, access, None);
        assert_eq!(role(1, "a", 0, Access::Produce), Ok(0));
        assert_eq!(role(1, "a", 0, Access::Read), Ok(0));
        let not_leader = Err(ResponseError::NotLeaderOrFollower);
        assert_eq!(role(1, "a", 1, Access::Produce), not_leader);
        assert_eq!(role(1, "a", 1, Access::Read), not_leader);
        assert_eq!(role(1, "a", 2, Access::Read), Ok(0));
        assert_eq!(
            role(1, "a", 2, Access::Produce),
            Ok(0),
            "replicated: the core decides"
        );
        let unknown = Err(ResponseError::UnknownTopicOrPartition);
        assert_eq!(role(1, "a", 3, Access::Read), unknown);
        assert_eq!(role(1, "a", -1, Access::Read), unknown);
        assert_eq!(role(1, "c", 0, Access::Read), unknown);
    }

    #[test]
    fn an_offline_partition_answers_leader_not_available() {
        let mut image = image();
        let offline = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: B,
            partition: 0,
            leader: Some(cluster::records::LEADER_NONE),
            isr: None,
        });
        image.apply_batch(2, &[offline]);
        let role = partition_role(&image, 2, "b", 0, Access::Read, None);
        assert_eq!(role, Err(ResponseError::LeaderNotAvailable));
    }

    #[test]
    fn the_current_leader_epoch_is_checked_before_leadership() {
        let mut image = image();
        // a-2 (replicas 1, 2, 3) moves from leader 1 to leader 2: a new leader epoch.
        let change = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: A,
            partition: 2,
            leader: Some(2),
            isr: None,
        });
        image.apply_batch(2, &[change]);
        let epoch = image.partition(A, 2).unwrap().leader_epoch;
        assert_eq!(epoch, 1, "a leader change bumps the leader epoch");
        let role = |node, current| partition_role(&image, node, "a", 2, Access::Read, current);
        assert_eq!(role(2, None), Ok(1));
        assert_eq!(role(2, Some(1)), Ok(1));
        assert_eq!(role(2, Some(0)), Err(ResponseError::FencedLeaderEpoch));
        assert_eq!(role(2, Some(2)), Err(ResponseError::UnknownLeaderEpoch));
        // The old leader, asked at the old epoch, answers FENCED first, as Kafka's getLocalLog.
        assert_eq!(role(1, Some(0)), Err(ResponseError::FencedLeaderEpoch));
        assert_eq!(role(1, Some(1)), Err(ResponseError::NotLeaderOrFollower));
    }

    #[tokio::test]
    async fn reconcile_hosts_exactly_the_assigned_partitions_and_survives_a_restart() {
        let disk = runtime::MemDisk::new();
        let mut topics = topics_open(&disk);
        let image = image();
        reconcile(&mut topics, &image, 1, 0, Placement::Local).unwrap();
        assert_eq!(dirs(&disk), ["a-0", "a-2"]);
        assert!(topics.partition("a", 0).is_some());
        assert!(topics.partition("a", 1).is_none());
        assert!(topics.get("b").is_none(), "node 1 hosts nothing of b");
        reconcile(&mut topics, &image, 1, 0, Placement::Local).unwrap();
        assert_eq!(dirs(&disk), ["a-0", "a-2"], "idempotent");
        // A restart recovers the hosted set from the metadata file, removing nothing.
        drop(topics);
        let mut topics = topics_open(&disk);
        assert_eq!(dirs(&disk), ["a-0", "a-2"]);
        assert_eq!(topics.get("a").unwrap().hosted_indices(), [0, 2]);
        // CreatePartitions and a config change.
        let mut image = image;
        let retention = MetadataRecord::Config {
            topic_id: A,
            key: "retention.ms".into(),
            value: Some("60000".into()),
        };
        image.apply_batch(
            2,
            &[partition(A, 3, &[2]), partition(A, 4, &[1]), retention],
        );
        reconcile(&mut topics, &image, 1, 0, Placement::Local).unwrap();
        assert_eq!(dirs(&disk), ["a-0", "a-2", "a-4"]);
        let local = topics.get("a").unwrap();
        assert_eq!(local.partition_count, 5);
        assert_eq!(
            local.configs.get("retention.ms").map(String::as_str),
            Some("60000")
        );
        // The name reused by a new topic: the old logs go, the new topic's come.
        image.apply_batch(3, &[MetadataRecord::RemoveTopic { topic_id: A }]);
        image.apply_batch(
            4,
            &[
                MetadataRecord::Topic {
                    name: "a".into(),
                    topic_id: A_NEW,
                },
                partition(A_NEW, 0, &[2]),
                partition(A_NEW, 1, &[1]),
            ],
        );
        reconcile(&mut topics, &image, 1, 0, Placement::Local).unwrap();
        assert_eq!(dirs(&disk), ["a-1"]);
        assert_eq!(topics.get("a").unwrap().topic_id, topic_id_bytes(A_NEW));
        image.apply_batch(5, &[MetadataRecord::RemoveTopic { topic_id: A_NEW }]);
        reconcile(&mut topics, &image, 1, 0, Placement::Local).unwrap();
        assert!(dirs(&disk).is_empty());
        assert!(topics.get("a").is_none());
    }
}
