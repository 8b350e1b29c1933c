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
//!   controlled shutdown (`lifecycle`);
//! - admin calls forwarded to the controller leader wherever it is, retried across leader
//!   changes, answered once their records are applied here too (`client`).

use crate::controller::{
    ApiError, ConfigAlter, PartitionsCreate, ProducerIdBlock, TopicCreate, TopicCreated,
};
use crate::image::{MetadataImage, MetadataOffset};
use crate::planted::PlantedBug;
use crate::raft::{RaftBug, Role};
use crate::records::{BrokerId, TopicId};
use runtime::sync::watch;
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
}

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
    pub controller_listen: String,
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
    /// The offset of the published image (the last applied index).
    pub applied: MetadataOffset,
    /// This broker's epoch once registered (None before, and while re-registering).
    pub broker_epoch: Option<i64>,
    /// Fenced until the controller has seen it caught up to its registration.
    pub fenced: bool,
    /// Controlled shutdown has started.
    pub shutting_down: bool,
}

/// How a caller starts a node.
pub struct ClusterNode;

impl ClusterNode {
    /// Binds the controller listener, opens (or bootstraps) the metadata log in `config.dir`,
    /// and starts the node's tasks: Raft, the controller driver, the RPC server and the broker
    /// lifecycle (registration then heartbeats). Returns at once; watch `status_watch` for
    /// `!fenced`.
    pub async fn start(config: ClusterConfig) -> Result<ClusterHandle, ClusterError> {
        let _ = config;
        Err(ClusterError::Stopped)
    }
}

/// What the broker holds. Cheap to clone; the node's tasks stop when the last clone is
/// dropped, on `kill`, or at the end of `shutdown`.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<()>,
    image: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<ClusterStatus>,
}

impl ClusterHandle {
    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Changes whenever a Raft ready applied entries (or installed a snapshot).
    pub fn image_watch(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    pub fn status(&self) -> ClusterStatus {
        self.status.borrow().clone()
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
        let _ = (&self.inner, topics, validate_only);
        Err(ClusterError::Stopped)
    }

    /// DeleteTopics by name; each deleted topic's id.
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> Result<TopicResults<TopicId>, ClusterError> {
        let _ = names;
        Err(ClusterError::Stopped)
    }

    /// CreatePartitions: each topic's new total count.
    pub async fn create_partitions(
        &self,
        requests: Vec<PartitionsCreate>,
        validate_only: bool,
    ) -> Result<TopicResults<()>, ClusterError> {
        let _ = (requests, validate_only);
        Err(ClusterError::Stopped)
    }

    /// Topic config changes (IncrementalAlterConfigs' SET/DELETE; AlterConfigs as a diff).
    pub async fn alter_configs(
        &self,
        alters: Vec<ConfigAlter>,
        validate_only: bool,
    ) -> Result<TopicResults<()>, ClusterError> {
        let _ = (alters, validate_only);
        Err(ClusterError::Stopped)
    }

    /// A block of producer ids for this broker (KIP-730), unique across the cluster.
    pub async fn allocate_producer_ids(&self) -> Result<ProducerIdBlock, ClusterError> {
        Err(ClusterError::Stopped)
    }

    /// Controlled shutdown: the broker asks the controller to move its partition leadership
    /// away (heartbeats with `want_shutdown` until told it may stop, bounded by
    /// `request_timeout`), then every task stops.
    pub async fn shutdown(self) {}

    /// Stops every task at once, as a crash would (tests; no controlled shutdown).
    pub fn kill(&self) {}
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}
