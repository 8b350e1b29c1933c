//! The broker: configuration, clock, disk, topics, and the state every handler shares.

use crate::config::BrokerConfig;
use crate::group::shell::GroupCoordinator;
use crate::partition::Partition;
use crate::producer_ids::{ProducerIdError, ProducerIds};
use crate::topics::{TopicError, Topics};
use crate::txn::shell::TxnCoordinator;
use cluster::node::ClusterHandle;
use kafka_protocol::ResponseError;
use runtime::rng::{stream_rng, ChaCha8Rng, RngCore, Stream};
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
    rng: Mutex<ChaCha8Rng>,
    /// Consumer groups and committed offsets (`__consumer_offsets`).
    groups: Arc<GroupCoordinator>,
    /// InitProducerId's durable id blocks, shared with the transaction coordinator.
    producer_ids: Arc<Mutex<ProducerIds>>,
    /// Transactions (`__transaction_state`).
    txn: Arc<TxnCoordinator>,
    /// Cluster mode's node: the metadata image and the controller. `None` on a single node.
    cluster: Option<ClusterHandle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broker {
    /// Recovers the data dir and returns a broker ready to serve.
    pub fn open(config: BrokerConfig, context: NodeContext) -> Result<Arc<Broker>, TopicError> {
        Broker::open_with(config, context, None)
    }

    /// `open` in cluster mode: topics, leaders and producer ids come from `cluster`. The local
    /// logs are brought in line with its current image before the broker serves.
    pub fn open_clustered(
        config: BrokerConfig,
        context: NodeContext,
        cluster: ClusterHandle,
    ) -> Result<Arc<Broker>, TopicError> {
        let broker = Broker::open_with(config, context, Some(cluster))?;
        broker.reconcile()?;
        Ok(broker)
    }

    fn open_with(
        config: BrokerConfig,
        context: NodeContext,
        cluster: Option<ClusterHandle>,
    ) -> Result<Arc<Broker>, TopicError> {
        let now_ms = context.clock.wall_ms();
        let mut topics = Topics::open(
            context.disk.clone(),
            config.data_dir.clone(),
            now_ms,
            config.planted,
        )?;
        let node_index = config.node_id as u32;
        let rng = stream_rng(context.seed, Stream::Node, node_index);
        // The coordinator's member ids come from its own stream.
        let groups_rng = stream_rng(context.seed, Stream::Groups, node_index);
        let groups = GroupCoordinator::open(
            &mut topics,
            config.groups.clone(),
            context.clock,
            groups_rng,
            config.planted,
        )?;
        let producer_ids = match cluster {
            Some(_) => ProducerIds::clustered(),
            None => ProducerIds::open(context.disk.clone(), &config.data_dir).map_err(|error| {
                match error {
                    ProducerIdError::Io { path, source } => TopicError::Io { path, source },
                    error => TopicError::Corrupt {
                        path: config.data_dir.join(crate::producer_ids::FILE_NAME),
                        message: error.to_string(),
                    },
                }
            })?,
        };
        let producer_ids = Arc::new(Mutex::new(producer_ids));
        let txn = TxnCoordinator::open(
            &topics,
            config.transactions.clone(),
            groups.read(|core| core.partition_count()),
            config.node_id,
            context.clock,
            stream_rng(context.seed, Stream::Transactions, node_index),
            producer_ids.clone(),
            config.planted,
        )?;
        let broker = Arc::new(Broker {
            producer_ids,
            txn,
            config,
            clock: context.clock,
            disk: context.disk,
            topics: Mutex::new(topics),
            rng: Mutex::new(rng),
            groups,
            cluster,
        });
        let sender = crate::txn::shell::LocalMarkerSender {
            broker: Arc::downgrade(&broker),
        };
        broker.txn.start(Arc::new(sender));
        Ok(broker)
    }

    /// The cluster node, in cluster mode.
    pub fn cluster(&self) -> Option<&ClusterHandle> {
        self.cluster.as_ref()
    }

    /// Cluster mode: opens the logs of partitions the image assigns here and removes those of
    /// topics it no longer has. A no-op on a single node.
    pub fn reconcile(&self) -> Result<(), TopicError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let image = cluster.image();
        let now_ms = self.clock.wall_ms();
        crate::cluster_mode::reconcile(&mut self.topics(), &image, self.config.node_id, now_ms)
    }

    /// The partition a Produce, Fetch or ListOffsets addresses, if this broker may serve it:
    /// on a single node every partition it has; in cluster mode only those it leads
    /// (`cluster_mode::partition_role`). Internal topics are local on every node.
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
    /// `leader_epoch::SINGLE_NODE` on a single node and for internal topics.
    pub fn partition_serving_at(
        &self,
        topic: &str,
        index: i32,
        access: crate::cluster_mode::Access,
        current_leader_epoch: Option<i32>,
    ) -> Result<(Arc<Partition>, i32), ResponseError> {
        if let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| !crate::topics::is_internal(topic))
        {
            let image = cluster.image();
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
            // Led here by the image but not open yet: the reconciler is a step behind.
            let partition = self.topics().partition(topic, index);
            return partition
                .map(|partition| (partition, leader_epoch))
                .ok_or(ResponseError::NotLeaderOrFollower);
        }
        let partition = self
            .topics()
            .partition(topic, index)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let leader_epoch = crate::leader_epoch::SINGLE_NODE;
        crate::leader_epoch::check(leader_epoch, current_leader_epoch)?;
        Ok((partition, leader_epoch))
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

    /// Cluster mode: whether the producer-id refill task should ask the controller for a block.
    pub fn producer_id_block_wanted(&self) -> bool {
        lock(&self.producer_ids).block_wanted()
    }

    /// Cluster mode: a producer-id block the controller allocated to this broker.
    pub fn producer_id_block_add(&self, first: i64, size: i64) {
        lock(&self.producer_ids).block_add(first, size);
    }

    pub fn topics(&self) -> MutexGuard<'_, Topics> {
        lock(&self.topics)
    }

    /// A fresh random topic id (never all zeros, which Kafka reads as "no id").
    pub fn topic_id_new(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        while id == [0u8; 16] {
            lock(&self.rng).fill_bytes(&mut id);
        }
        id
    }
}
