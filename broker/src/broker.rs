//! The broker: configuration, clock, disk, topics, and the state every handler shares.

use crate::config::BrokerConfig;
use crate::group::shell::GroupCoordinator;
use crate::producer_ids::{ProducerIdError, ProducerIds};
use crate::topics::{TopicError, Topics};
use crate::txn::shell::TxnCoordinator;
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
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broker {
    /// Recovers the data dir and returns a broker ready to serve.
    pub fn open(config: BrokerConfig, context: NodeContext) -> Result<Arc<Broker>, TopicError> {
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
        let producer_ids = ProducerIds::open(context.disk.clone(), &config.data_dir).map_err(
            |error| match error {
                ProducerIdError::Io { path, source } => TopicError::Io { path, source },
                error => TopicError::Corrupt {
                    path: config.data_dir.join(crate::producer_ids::FILE_NAME),
                    message: error.to_string(),
                },
            },
        )?;
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
        });
        let sender = crate::txn::shell::LocalMarkerSender {
            broker: Arc::downgrade(&broker),
        };
        broker.txn.start(Arc::new(sender));
        Ok(broker)
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
