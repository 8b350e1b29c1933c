//! The running cluster node (issue 12): one process's share of the control plane. It glues the
//! Raft glue (`raft`), the metadata image (`image`) and the controller (`controller`) into
//! `ClusterNode::start(config) -> ClusterHandle`, which the broker holds.
//!
//! What a node runs, all on `runtime` (tokio in production, madsim in simulation):
//! - the metadata log: a `RaftNode` whose state machine is the `MetadataImage`, published on a
//!   watch channel after every ready (`machine`);
//! - the controller driver: while this node is the Raft leader, a `Controller` built from the
//!   committed image decides every operation; its records are proposed as one entry and the
//!   reply is sent once that entry is applied (`driver`);
//! - the controller listener: raft messages and controller RPCs share one port; an RPC
//!   connection opens with a magic that no raft frame can start with (`listener`, `rpc`);
//! - the broker lifecycle: register (fresh incarnation per start), heartbeat, unfence,
//!   controlled shutdown (`lifecycle`), then a Raft leadership handover (`shutdown`);
//! - admin calls forwarded to the controller leader wherever it is, retried across leader
//!   changes, answered once their records are applied here too (`client`).

mod client;
mod driver;
mod lifecycle;
mod listener;
mod machine;
pub mod rpc;
#[cfg(all(test, not(madsim)))]
mod tests;

use crate::controller::errors::UNKNOWN_SERVER_ERROR;
use crate::controller::ControllerConfig;
use crate::controller::{
    AlterPartition, ApiError, ConfigAlter, PartitionsCreate, ProducerIdBlock, TopicCreate,
    TopicCreated, TopicImport,
};
use crate::image::{MetadataImage, MetadataOffset, PartitionImage};
use crate::planted::PlantedBug;
use crate::raft::transport::{Transport, INBOUND_QUEUE_MAX};
use crate::raft::{NodeConfig, RaftNode};
use crate::raft::{RaftBug, Role};
use crate::records::{BrokerId, IncarnationId, TopicId};
use client::Forwarder;
use driver::{Driver, DriverParts};
use lifecycle::Lifecycle;
use machine::ImageMachine;
use rand::{Rng, SeedableRng};
use rpc::{Answer, Request, WireError};
use runtime::net::TcpListener;
use runtime::rng::ChaCha8Rng;
use runtime::sync::{mpsc, watch};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Per-topic results, in request order: the topic name and its outcome.
pub type TopicResults<T> = Vec<(String, Result<T, ApiError>)>;

/// The Kafka listener this node's broker advertises in its registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub host: String,
    pub port: u16,
}

/// The node's clocks: Raft ticks, broker heartbeats and sessions, request deadlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTiming {
    /// The length of one Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower stands (randomized in `[n, 2n)`).
    pub election_ticks: usize,
    /// Ticks between the Raft leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How often the broker heartbeats to the controller (`broker.heartbeat.interval.ms`).
    pub broker_heartbeat: Duration,
    /// A broker not heard from for this long is fenced (`broker.session.timeout.ms`).
    pub broker_session_timeout: Duration,
    /// How long an admin call or controller RPC keeps retrying across leader changes.
    pub request_timeout: Duration,
    /// Applied entries between two snapshots of the image (each followed by a log compaction).
    /// The simulator draws small values so that its short runs snapshot, compact and install
    /// snapshots on lagging followers.
    pub snapshot_interval_entries: u64,
    /// How often the controller moves leadership back to preferred replicas that are live and
    /// in the ISR (`leader.imbalance.check.interval.seconds`).
    pub leader_rebalance_interval: Duration,
}

/// Raft's default distance between snapshots of the image, in applied entries.
pub const SNAPSHOT_INTERVAL_ENTRIES: u64 = 1024;

impl ClusterTiming {
    /// Kafka's defaults for the broker side; Raft at 100 ms ticks (elections in 1-2 s).
    pub fn production() -> ClusterTiming {
        ClusterTiming {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            broker_heartbeat: Duration::from_millis(2_000),
            broker_session_timeout: Duration::from_millis(9_000),
            request_timeout: Duration::from_millis(30_000),
            snapshot_interval_entries: SNAPSHOT_INTERVAL_ENTRIES,
            leader_rebalance_interval: Duration::from_secs(300),
        }
    }

    /// Ten times faster, for tests and the simulator (elections in 200-400 ms).
    pub fn fast() -> ClusterTiming {
        ClusterTiming {
            tick: Duration::from_millis(20),
            election_ticks: 10,
            heartbeat_ticks: 2,
            broker_heartbeat: Duration::from_millis(200),
            broker_session_timeout: Duration::from_millis(1_500),
            request_timeout: Duration::from_millis(10_000),
            snapshot_interval_entries: SNAPSHOT_INTERVAL_ENTRIES,
            leader_rebalance_interval: Duration::from_secs(2),
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's id: its broker id and its Raft id (`node_id as u64`, so >= 1).
    pub node_id: BrokerId,
    /// Every voter's controller listener, `node id -> "host:port"`; this node is one of them.
    pub voters: BTreeMap<BrokerId, String>,
    /// Where this node's controller listener binds (raft messages and controller RPCs).
    /// `None` binds none, which only a lone voter may do: nobody has to reach it.
    pub controller_listen: Option<String>,
    /// The metadata log's directory, e.g. `<data-dir>/__cluster_metadata`.
    pub dir: PathBuf,
    pub disk: Arc<dyn runtime::Disk>,
    pub clock: runtime::Clock,
    /// The seed of this start's draws (Raft's election timeouts, the controller's placements,
    /// the incarnation id). A restart is a new process: give it a new seed.
    pub seed: u64,
    /// The Kafka listener this broker advertises.
    pub broker: BrokerEndpoint,
    pub rack: Option<String>,
    pub timing: ClusterTiming,
    /// CreateTopics' partition count for `-1` (`num.partitions`).
    pub partitions_default: i32,
    /// CreateTopics' replication factor for `-1` (`default.replication.factor`).
    pub replication_factor_default: i16,
    /// Planted controller bug (feature `planted-bugs`; inert otherwise).
    pub planted: Option<PlantedBug>,
    /// Planted Raft glue bug (feature `planted-bugs`; inert otherwise).
    pub raft_planted: Option<RaftBug>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .field("controller_listen", &self.controller_listen)
            .field("dir", &self.dir)
            .field("broker", &self.broker)
            .field("rack", &self.rack)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node could not start: a bad configuration, the listener, or the metadata log.
    #[error("cluster node: {0}")]
    Io(#[from] std::io::Error),
    /// No controller leader answered within `timing.request_timeout` (no quorum, or elections).
    /// The broker answers REQUEST_TIMED_OUT (or NOT_CONTROLLER) and the client retries.
    #[error("no controller answered in time")]
    Timeout,
    /// The controller refused the request as a whole (e.g. a stale broker epoch).
    #[error("controller refused: {0}")]
    Refused(ApiError),
    /// This broker is not registered yet (or is re-registering): it cannot ask for producer ids.
    #[error("broker not registered with the controller yet")]
    NotRegistered,
    /// The node is stopped or stopping.
    #[error("cluster node stopped")]
    Stopped,
}

/// A snapshot of what the node knows about itself and the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: BrokerId,
    pub role: Role,
    /// The Raft leader this node knows of, which is the controller.
    pub controller_leader: Option<BrokerId>,
    /// This node is the leader and its controller has caught up (takes requests).
    pub controller_active: bool,
    pub term: u64,
    pub commit: u64,
    /// Raft's applied index: every entry up to it is in the published image, whose own
    /// `offset()` may be a few (empty, leader-election) entries behind.
    pub applied: MetadataOffset,
    /// While this node leads: each voter's log end as it knows it (its own last index; 0 for a
    /// voter not heard from in this term). Empty otherwise. (DescribeQuorum.)
    pub replicated: BTreeMap<BrokerId, MetadataOffset>,
    /// This broker's epoch once registered (None before, and while re-registering).
    pub broker_epoch: Option<i64>,
    /// Fenced until the controller has seen it caught up to its registration.
    pub fenced: bool,
    /// Controlled shutdown has started.
    pub shutting_down: bool,
    /// The metadata log's disk failed: the node stopped (fail-stop, its Raft state may be
    /// ahead of its disk) and answers nothing more. Restart it from its directory, as Kafka's
    /// process exits on a log directory failure.
    pub failed: bool,
}

/// How a caller starts a node.
pub struct ClusterNode;

/// The node's rng streams, drawn from `ClusterConfig::seed` (independent by construction).
const RNG_STREAM_RAFT: u64 = 1;
const RNG_STREAM_CONTROLLER: u64 = 2;
const RNG_STREAM_INCARNATION: u64 = 3;

fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl ClusterNode {
    /// Binds the controller listener (if any), opens (or bootstraps) the metadata log in
    /// `config.dir`, and starts the node's tasks: Raft and the controller driver, the broker
    /// lifecycle (registration, then heartbeats), and the listener. Returns at once; watch
    /// `status_watch` for `!fenced`. A lone voter elects itself at once (`RaftNode::open`), so
    /// it registers and unfences within a few fsyncs.
    pub async fn start(config: ClusterConfig) -> Result<ClusterHandle, ClusterError> {
        config_check(&config)?;
        let listener = match &config.controller_listen {
            Some(address) => Some(TcpListener::bind(address.as_str()).await?),
            None => None,
        };
        let voters: Vec<u64> = config.voters.keys().map(|id| *id as u64).collect();
        let mut node_config = NodeConfig::new(config.node_id as u64, voters);
        node_config.election_ticks = config.timing.election_ticks;
        node_config.heartbeat_ticks = config.timing.heartbeat_ticks;
        node_config.snapshot_interval_entries = config.timing.snapshot_interval_entries.max(2);
        // Keep a short tail below each snapshot (a follower a few entries behind catches up
        // from the log), never the whole interval.
        node_config.snapshot_keep_entries = node_config
            .snapshot_keep_entries
            .min(node_config.snapshot_interval_entries / 4);
        node_config.planted = config.raft_planted;
        let raft_rng = rng_stream(config.seed, RNG_STREAM_RAFT);
        let node = RaftNode::open(
            node_config,
            config.disk.clone(),
            &config.dir,
            ImageMachine::default(),
            raft_rng,
        )?;
        let incarnation_id =
            IncarnationId(rng_stream(config.seed, RNG_STREAM_INCARNATION).gen::<u128>());

        let (image_sender, image) = watch::channel(Arc::new(MetadataImage::new()));
        let (status_sender, status) = watch::channel(ClusterStatus {
            node_id: config.node_id,
            role: Role::Follower,
            controller_leader: None,
            controller_active: false,
            term: 0,
            commit: 0,
            applied: 0,
            replicated: BTreeMap::new(),
            broker_epoch: None,
            fenced: true,
            shutting_down: false,
            failed: false,
        });
        let status_sender = Arc::new(status_sender);
        let (stop_sender, stop) = watch::channel(false);
        let (inbound_sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let (call_sender, calls) = mpsc::channel(driver::CALL_QUEUE_MAX);
        let peers = config
            .voters
            .iter()
            .filter(|(id, _)| **id != config.node_id)
            .map(|(id, address)| (*id as u64, address.clone()))
            .collect();
        let driver = Driver::new(
            node,
            DriverParts {
                transport: Transport::start(&peers),
                controller_config: ControllerConfig {
                    session_timeout_ms: duration_ms(config.timing.broker_session_timeout),
                    partitions_default: config.partitions_default,
                    replication_factor_default: config.replication_factor_default,
                    leader_rebalance_interval_ms: duration_ms(
                        config.timing.leader_rebalance_interval,
                    ),
                },
                planted: config.planted,
                clock: config.clock,
                rng: rng_stream(config.seed, RNG_STREAM_CONTROLLER),
                image: image_sender,
                status: status_sender.clone(),
            },
        );
        let forwarder = Arc::new(Forwarder::new(
            config.node_id,
            incarnation_id,
            config.voters.clone(),
            call_sender.clone(),
            status.clone(),
            config.timing.request_timeout,
            config.clock,
        ));
        let (shutdown_sender, shutdown) = watch::channel(false);
        let (handover_sender, handover) = watch::channel(false);
        let lifecycle = Lifecycle {
            broker_id: config.node_id,
            incarnation_id,
            endpoint: config.broker.clone(),
            rack: config.rack.clone(),
            interval: config.timing.broker_heartbeat,
            forwarder: forwarder.clone(),
            status: status_sender.clone(),
            shutdown,
        };
        let mut tasks = vec![
            runtime::spawn(driver.run(config.timing.tick, inbound, calls, handover)),
            runtime::spawn(lifecycle.run()),
        ];
        debug_assert_eq!(tasks.len(), LIFECYCLE_TASK + 1);
        if let Some(listener) = listener {
            let listen = listener::listen(listener, inbound_sender, call_sender, stop);
            tasks.push(runtime::spawn(listen));
        }
        tracing::info!(
            "cluster node {} started: controller listener {:?}, voters {:?}",
            config.node_id,
            config.controller_listen,
            config.voters
        );
        Ok(ClusterHandle {
            inner: Arc::new(Inner {
                tasks,
                stop: stop_sender,
                shutdown: shutdown_sender,
                handover: handover_sender,
                status_sender,
            }),
            forwarder,
            image,
            status,
            request_timeout: config.timing.request_timeout,
            election_timeout: config.timing.tick * config.timing.election_ticks as u32,
        })
    }
}

fn config_check(config: &ClusterConfig) -> Result<(), ClusterError> {
    let invalid = |message: String| {
        ClusterError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            message,
        ))
    };
    if let Some(id) = config.voters.keys().find(|id| **id < 1) {
        return Err(invalid(format!("voter id {id}: node ids start at 1")));
    }
    if !config.voters.contains_key(&config.node_id) {
        let message = format!(
            "node {} is not one of the voters {:?}",
            config.node_id, config.voters
        );
        return Err(invalid(message));
    }
    if config.controller_listen.is_none() && config.voters.len() > 1 {
        let message = format!(
            "node {} needs a controller listener: its peers {:?} must reach it",
            config.node_id, config.voters
        );
        return Err(invalid(message));
    }
    Ok(())
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where the lifecycle task is in `Inner::tasks` (`shutdown` waits for it).
const LIFECYCLE_TASK: usize = 1;

/// The node's tasks: stopped when the last handle goes, or on `kill`.
struct Inner {
    tasks: Vec<runtime::JoinHandle<()>>,
    /// Tells the listener's connection tasks to end.
    stop: watch::Sender<bool>,
    /// Asks the lifecycle for controlled shutdown.
    shutdown: watch::Sender<bool>,
    /// Asks the driver to hand Raft leadership over.
    handover: watch::Sender<bool>,
    status_sender: Arc<watch::Sender<ClusterStatus>>,
}

impl Inner {
    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.stop.send(true);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the broker holds. Cheap to clone; the node's tasks stop when the last clone is
/// dropped, on `kill`, or at the end of `shutdown`.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
    forwarder: Arc<Forwarder>,
    image: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<ClusterStatus>,
    request_timeout: Duration,
    /// Raft's (shortest) election timeout: how long a leadership handover may take.
    election_timeout: Duration,
}

impl ClusterHandle {
    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Changes whenever a Raft ready applied records (or installed a snapshot).
    pub fn image_watch(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    pub fn status(&self) -> ClusterStatus {
        self.status.borrow().clone()
    }

    /// Every voter's controller listener, `node id -> "host:port"` (`--voters`).
    pub fn voters(&self) -> &BTreeMap<BrokerId, String> {
        self.forwarder.voters()
    }

    /// Changes with leader, term, applied offset, and this broker's epoch and fencing.
    pub fn status_watch(&self) -> watch::Receiver<ClusterStatus> {
        self.status.clone()
    }

    /// CreateTopics, decided by the controller leader; returns once the records are applied
    /// here, so a Metadata request on this node that follows sees the topics.
    pub async fn create_topics(
        &self,
        topics: Vec<TopicCreate>,
        validate_only: bool,
    ) -> Result<TopicResults<TopicCreated>, ClusterError> {
        let request = Request::CreateTopics {
            topics: topics.into_iter().map(Into::into).collect(),
            validate_only,
        };
        match self.forwarder.call_applied(&request).await? {
            Answer::TopicsCreated(results) => Ok(results_from(results)),
            other => Err(answer_unexpected(other)),
        }
    }

    /// DeleteTopics by name; each deleted topic's id.
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> Result<TopicResults<TopicId>, ClusterError> {
        match self
            .forwarder
            .call_applied(&Request::DeleteTopics { names })
            .await?
        {
            Answer::TopicsDeleted(results) => Ok(results_from(results)),
            other => Err(answer_unexpected(other)),
        }
    }

    /// CreatePartitions: each topic's new total count.
    pub async fn create_partitions(
        &self,
        requests: Vec<PartitionsCreate>,
        validate_only: bool,
    ) -> Result<TopicResults<()>, ClusterError> {
        let request = Request::CreatePartitions {
            requests: requests.into_iter().map(Into::into).collect(),
            validate_only,
        };
        match self.forwarder.call_applied(&request).await? {
            Answer::PartitionsCreated(results) => Ok(results_from(results)),
            other => Err(answer_unexpected(other)),
        }
    }

    /// Topic config changes (IncrementalAlterConfigs' SET/DELETE; AlterConfigs as a diff).
    pub async fn alter_configs(
        &self,
        alters: Vec<ConfigAlter>,
        validate_only: bool,
    ) -> Result<TopicResults<()>, ClusterError> {
        let request = Request::AlterConfigs {
            alters: alters.into_iter().map(Into::into).collect(),
            validate_only,
        };
        match self.forwarder.call_applied(&request).await? {
            Answer::ConfigsAltered(results) => Ok(results_from(results)),
            other => Err(answer_unexpected(other)),
        }
    }

    /// A block of producer ids for this broker (KIP-730), unique across the cluster. A retry
    /// after a lost answer gets the same block (one call, one block: `controller::requests`).
    pub async fn allocate_producer_ids(&self) -> Result<ProducerIdBlock, ClusterError> {
        let status = self.status();
        let broker_epoch = status.broker_epoch.ok_or(ClusterError::NotRegistered)?;
        let request = Request::AllocateProducerIds {
            broker_id: status.node_id,
            broker_epoch,
        };
        match self.forwarder.call_applied(&request).await? {
            Answer::ProducerIds(Ok((first, size))) => Ok(ProducerIdBlock { first, size }),
            Answer::ProducerIds(Err(error)) => Err(ClusterError::Refused(error.into())),
            other => Err(answer_unexpected(other)),
        }
    }

    /// AlterPartition (KIP-497): this broker, leading `topic_id`-`partition` at `leader_epoch`
    /// with the state at `partition_epoch`, asks for the ISR `isr` (itself included). Returns
    /// the partition's new state once applied here. A refusal is `Refused` with its Kafka code
    /// (`controller::partitions`): FENCED_LEADER_EPOCH or NOT_LEADER_OR_FOLLOWER for a leader
    /// that was replaced, INVALID_UPDATE_VERSION for a proposal from an outdated ISR, ...; a
    /// `Timeout` may still have committed: a re-proposal then gets INVALID_UPDATE_VERSION and
    /// the image brings the state. A retry inside one call gets the first try's answer.
    pub async fn alter_partition(
        &self,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> Result<PartitionImage, ClusterError> {
        let status = self.status();
        let broker_epoch = status.broker_epoch.ok_or(ClusterError::NotRegistered)?;
        let request = Request::AlterPartition(AlterPartition {
            broker_id: status.node_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            isr,
        });
        match self.forwarder.call_applied(&request).await? {
            Answer::PartitionAltered(Ok(partition)) => Ok(partition),
            Answer::PartitionAltered(Err(error)) => Err(ClusterError::Refused(error.into())),
            other => Err(answer_unexpected(other)),
        }
    }

    /// The one-time import of a pre-Raft data dir (`controller::Import`): `topics` under their
    /// ids, every partition on this broker alone, and producer ids from `producer_id_floor` on.
    /// Needs this broker registered and unfenced; returns once the import is applied here.
    /// Idempotent: a topic already imported under the same id is answered Ok again.
    pub async fn import_topics(
        &self,
        topics: Vec<TopicImport>,
        producer_id_floor: i64,
    ) -> Result<TopicResults<()>, ClusterError> {
        let status = self.status();
        let broker_epoch = status.broker_epoch.ok_or(ClusterError::NotRegistered)?;
        let request = Request::ImportTopics {
            broker_id: status.node_id,
            broker_epoch,
            topics: topics.into_iter().map(Into::into).collect(),
            producer_id_floor,
        };
        match self.forwarder.call_applied(&request).await? {
            Answer::TopicsImported(Ok(results)) => Ok(results_from(results)),
            Answer::TopicsImported(Err(error)) => Err(ClusterError::Refused(error.into())),
            other => Err(answer_unexpected(other)),
        }
    }

    /// Controlled shutdown: the broker asks the controller to move its partition leadership
    /// away (heartbeats with `want_shutdown` until told it may stop, bounded by
    /// `request_timeout`); then, if this node leads the quorum, it hands Raft leadership to the
    /// most caught-up live voter and waits (an election timeout at most) until it hears from
    /// the new leader, so the cluster is not leaderless for an election timeout; then every
    /// task stops.
    pub async fn shutdown(self) {
        self.inner
            .status_sender
            .send_modify(|status| status.shutting_down = true);
        let _ = self.inner.shutdown.send(true);
        let lifecycle = &self.inner.tasks[LIFECYCLE_TASK];
        let finished = async {
            while !lifecycle.is_finished() {
                runtime::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = runtime::time::timeout(self.request_timeout, finished).await;
        self.leadership_hand_over().await;
        self.inner.stop();
    }

    async fn leadership_hand_over(&self) {
        let node_id = self.status().node_id;
        if self.status().role != Role::Leader {
            return;
        }
        let _ = self.inner.handover.send(true);
        let mut status = self.status.clone();
        let elsewhere = status.wait_for(|status| {
            status.role != Role::Leader && status.controller_leader.is_some_and(|id| id != node_id)
        });
        let moved = runtime::time::timeout(self.election_timeout, elsewhere)
            .await
            .is_ok_and(|found| found.is_ok());
        let status = self.status();
        if moved {
            tracing::info!(
                "node {node_id}: Raft leadership handed to node {:?} in term {}",
                status.controller_leader,
                status.term
            );
        } else {
            tracing::info!("node {node_id}: Raft leadership not handed over in time");
        }
    }

    /// Stops every task at once, as a crash would (tests; no controlled shutdown).
    pub fn kill(&self) {
        self.inner.stop();
    }
}

fn results_from<W, T: From<W>>(results: Vec<(String, Result<W, WireError>)>) -> TopicResults<T> {
    results
        .into_iter()
        .map(|(name, result)| (name, result.map(T::from).map_err(ApiError::from)))
        .collect()
}

fn answer_unexpected(answer: Answer) -> ClusterError {
    let message = format!("the controller answered with {answer:?}");
    ClusterError::Refused(ApiError::new(UNKNOWN_SERVER_ERROR, message))
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}
