//! The broker: configuration, clock, disk, topics, and the state every handler shares.

use crate::config::BrokerConfig;
use crate::group::shell::GroupCoordinator;
use crate::group::OFFSETS_TOPIC;
use crate::partition::Partition;
use crate::producer_ids::{ProducerIdError, ProducerIds};
use crate::replica::shell::Replicas;
use crate::server::ServeError;
use crate::topics::{TopicError, Topics};
use crate::txn::shell::TxnCoordinator;
use crate::txn::TRANSACTION_STATE_TOPIC;
use cluster::node::{ClusterHandle, ClusterNode};
use kafka_protocol::ResponseError;
use runtime::rng::{stream_rng, Stream};
use runtime::{Clock, Disk};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a node gets from its environment: production passes the system clock, the real disk and
/// an OS seed; the simulator passes a skewed clock, a faulty in-memory disk and a derived seed.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub clock: Clock,
    pub disk: Arc<dyn Disk>,
    pub seed: u64,
    /// Cluster mode's simulator hooks; `ClusterHooks::default()` (none) in production.
    pub cluster_hooks: crate::cluster_mode::ClusterHooks,
}

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub clock: Clock,
    /// The node's disk, through which handlers reach aimed-fault sites (`runtime::buggify`).
    pub disk: Arc<dyn Disk>,
    topics: Mutex<Topics>,
    /// Consumer groups and committed offsets (`__consumer_offsets`).
    groups: Arc<GroupCoordinator>,
    /// InitProducerId's durable id blocks, shared with the transaction coordinator.
    producer_ids: Arc<Mutex<ProducerIds>>,
    /// Transactions (`__transaction_state`).
    txn: Arc<TxnCoordinator>,
    /// The cluster node: the metadata image and the controller (a lone voter by default).
    cluster: ClusterHandle,
    /// The leader cores of the replicated partitions led here (`replica::shell`).
    replicas: Replicas,
}

/// A partition a data-plane request may use here (`Broker::partition_served`).
#[derive(Debug)]
pub struct Served {
    pub partition: Arc<Partition>,
    /// The image's leader epoch (`leader_epoch::SINGLE_NODE` for internal topics).
    pub leader_epoch: i32,
    /// The image gives it more than one replica: a leader core decides its HW and acks.
    pub replicated: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broker {
    /// Starts the cluster node (`cluster_mode::node_config`: a lone voter unless `voters` are
    /// given), then `open_on` it.
    pub async fn open(
        config: BrokerConfig,
        context: NodeContext,
    ) -> Result<Arc<Broker>, ServeError> {
        let node = ClusterNode::start(crate::cluster_mode::node_config(&config, &context)).await?;
        if let Some(observer) = &context.cluster_hooks.observer {
            observer(&node);
        }
        Broker::open_on(config, context, node).await
    }

    /// Recovers the data dir and returns a broker ready to serve on `cluster`: once the
    /// controller has registered and unfenced it, a data dir written before the metadata log
    /// existed is imported (`cluster_mode::legacy_import`, once), the local logs are brought in
    /// line with the image, and a first block of producer ids is at hand.
    pub async fn open_on(
        config: BrokerConfig,
        context: NodeContext,
        cluster: ClusterHandle,
    ) -> Result<Arc<Broker>, ServeError> {
        let broker = Broker::open_with(config, context, cluster)?;
        crate::cluster_mode::unfenced_wait(broker.cluster()).await?;
        crate::cluster_mode::legacy_import(&broker).await?;
        broker.reconcile()?;
        // Markers are routed by the image: not before it is current and the logs match it (a
        // partition the image does not have yet would count as deleted, its marker skipped).
        let sender = crate::txn::sender::BrokerMarkerSender::new(Arc::downgrade(&broker));
        broker.txn.start(Arc::new(sender));
        let block = broker.cluster().allocate_producer_ids().await?;
        broker.producer_id_block_add(block.first, block.size);
        Ok(broker)
    }

    fn open_with(
        config: BrokerConfig,
        context: NodeContext,
        cluster: ClusterHandle,
    ) -> Result<Arc<Broker>, TopicError> {
        let now_ms = context.clock.wall_ms();
        let mut topics = Topics::open(
            context.disk.clone(),
            config.data_dir.clone(),
            now_ms,
            config.planted,
        )?;
        let node_index = config.node_id as u32;
        // The coordinator's member ids come from its own stream.
        let groups_rng = stream_rng(context.seed, Stream::Groups, node_index);
        let groups = GroupCoordinator::open(
            &mut topics,
            config.groups.clone(),
            crate::cluster_mode::placement(&config),
            context.clock,
            groups_rng,
            config.planted,
        )?;
        let producer_ids = Arc::new(Mutex::new(ProducerIds::clustered()));
        let txn = TxnCoordinator::open(
            &topics,
            config.transactions.clone(),
            crate::cluster_mode::placement(&config),
            groups.read(|core| core.partition_count()),
            config.node_id,
            context.clock,
            stream_rng(context.seed, Stream::Transactions, node_index),
            producer_ids.clone(),
            config.planted,
        )?;
        let replicas = Replicas::new(
            config.node_id,
            config.replica,
            config.planted,
            context.clock,
        );
        let broker = Arc::new(Broker {
            replicas,
            producer_ids,
            txn,
            config,
            clock: context.clock,
            disk: context.disk,
            topics: Mutex::new(topics),
            groups,
            cluster,
        });
        broker.replicas.broker_set(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// The cluster node.
    pub fn cluster(&self) -> &ClusterHandle {
        &self.cluster
    }

    /// Opens the logs of partitions the image assigns here and removes those of topics it no
    /// longer has; then starts, updates or ends the leader cores of replicated partitions
    /// (`Replicas::roles_apply`), also after a failed pass, so a lost leadership is never kept.
    pub fn reconcile(&self) -> Result<(), TopicError> {
        let image = self.cluster.image();
        let now_ms = self.clock.wall_ms();
        let offsets = self.groups.topic();
        let result = crate::cluster_mode::reconcile(
            &mut self.topics(),
            &image,
            self.config.node_id,
            now_ms,
            offsets,
        );
        // Not under the topics lock: the cores are reached through the logs' locks.
        let partition_of = |name: &str, index, topic_id| {
            crate::replica::shell::partition_hosted(&self.topics(), name, index, topic_id)
        };
        self.replicas.roles_apply(&image, partition_of);
        // After the cores: a replicated `__consumer_offsets` partition loads once its core runs.
        let offsets_partition = |index| self.topics().partition(OFFSETS_TOPIC, index);
        self.groups
            .leadership_apply(&image, self.config.node_id, offsets_partition);
        let txn_partition = |index| self.topics().partition(TRANSACTION_STATE_TOPIC, index);
        self.txn
            .leadership_apply(&image, self.config.node_id, txn_partition);
        result
    }

    /// The leader cores of the replicated partitions led here.
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    /// The partition a Produce, Fetch or ListOffsets addresses, if this broker may serve it:
    /// only those it leads (`cluster_mode::partition_role`). Node-local internal topics
    /// (`Broker::node_local`) are served by every node from its own.
    pub fn partition_serving(
        &self,
        topic: &str,
        index: i32,
        access: crate::cluster_mode::Access,
    ) -> Result<Arc<Partition>, ResponseError> {
        self.partition_serving_at(topic, index, access, None)
            .map(|(partition, _)| partition)
    }

    /// `partition_serving` for a request that names the leader epoch it believes current
    /// (`leader_epoch::check`), with the partition's leader epoch: the image's in cluster mode,
    /// `leader_epoch::SINGLE_NODE` for internal topics (each node's own).
    pub fn partition_serving_at(
        &self,
        topic: &str,
        index: i32,
        access: crate::cluster_mode::Access,
        current_leader_epoch: Option<i32>,
    ) -> Result<(Arc<Partition>, i32), ResponseError> {
        self.partition_served(topic, index, access, current_leader_epoch)
            .map(|served| (served.partition, served.leader_epoch))
    }

    /// `partition_serving_at`, also telling whether the partition is replicated.
    pub fn partition_served(
        &self,
        topic: &str,
        index: i32,
        access: crate::cluster_mode::Access,
        current_leader_epoch: Option<i32>,
    ) -> Result<Served, ResponseError> {
        if !self.node_local(topic) {
            let image = self.cluster.image();
            let node_id = self.config.node_id;
            let role = crate::cluster_mode::partition_role(
                &image,
                node_id,
                topic,
                index,
                access,
                current_leader_epoch,
            );
            let leader_epoch = role?;
            let replicated = image
                .topic_by_name(topic)
                .and_then(|found| image.partition(found.topic_id, index))
                .is_some_and(|partition| partition.replicas.len() > 1);
            // Led here by the image but not open yet: the reconciler is a step behind.
            let partition = self
                .topics()
                .partition(topic, index)
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            // Nor served before its leader core runs at the image's epoch: without one, reads
            // would stop at the local fsynced end instead of the replicated HW, past records an
            // old leader never got committed (cluster-partition 13, a seeker's ListOffsets
            // Latest from a returning leader the reconciler had not reached).
            if replicated && !partition.led_at(leader_epoch) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            return Ok(Served {
                partition,
                leader_epoch,
                replicated,
            });
        }
        let partition = self
            .topics()
            .partition(topic, index)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let leader_epoch = crate::leader_epoch::SINGLE_NODE;
        crate::leader_epoch::check(leader_epoch, current_leader_epoch)?;
        Ok(Served {
            partition,
            leader_epoch,
            replicated: false,
        })
    }

    /// Kafka's debugging consumer (Fetch `replica_id` -2): any replica of a partition serves
    /// its own copy, leader or not (`Partition::high_watermark_own` bounds it). The epoch a
    /// request names is still checked against the image's.
    pub fn partition_local(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: Option<i32>,
    ) -> Result<Served, ResponseError> {
        if self.node_local(topic) {
            let access = crate::cluster_mode::Access::Read;
            return self.partition_served(topic, index, access, current_leader_epoch);
        }
        let image = self.cluster.image();
        let found = image
            .topic_by_name(topic)
            .and_then(|found| image.partition(found.topic_id, index))
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        crate::leader_epoch::check(found.leader_epoch, current_leader_epoch)?;
        let partition = self
            .topics()
            .partition(topic, index)
            .ok_or(ResponseError::NotLeaderOrFollower)?;
        Ok(Served {
            partition,
            leader_epoch: found.leader_epoch,
            replicated: found.replicas.len() > 1,
        })
    }

    /// The partition count of topic `name` (0 if unknown): the image's, or for a node-local
    /// topic the node's own. Not the local logs': a broker hosts only some partitions of a
    /// topic, or none, yet coordinates commits of any (OffsetCommit is checked against it).
    pub fn partition_count(&self, name: &str) -> i32 {
        if self.node_local(name) {
            return self
                .topics()
                .get(name)
                .map_or(0, |local| local.partition_count);
        }
        let image = self.cluster.image();
        let count = image
            .topic_by_name(name)
            .map_or(0, |topic| topic.partitions.len());
        i32::try_from(count).expect("partition count fits i32")
    }

    /// Whether topic `name` is this node's own, outside the image (`cluster_mode::node_local`).
    pub fn node_local(&self, name: &str) -> bool {
        crate::cluster_mode::node_local(name, self.groups.topic())
    }

    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    pub fn txn(&self) -> &Arc<TxnCoordinator> {
        &self.txn
    }

    /// A producer id never issued before on this data dir (InitProducerId).
    pub fn producer_id_new(&self) -> Result<i64, ProducerIdError> {
        lock(&self.producer_ids).next_id()
    }

    /// Whether the producer-id refill task should ask the controller for a block.
    pub fn producer_id_block_wanted(&self) -> bool {
        lock(&self.producer_ids).block_wanted()
    }

    /// A producer-id block the controller allocated to this broker.
    pub fn producer_id_block_add(&self, first: i64, size: i64) {
        lock(&self.producer_ids).block_add(first, size);
    }

    pub fn topics(&self) -> MutexGuard<'_, Topics> {
        lock(&self.topics)
    }
}
