//! Consumer groups: Kafka's classic group protocol and committed offsets.
//!
//! Module map, leaves first:
//! - `mod.rs` (here): the vocabulary (requests, responses, errors) and `GroupConfig`'s limits.
//! - `classic`: one group's membership state machine (Empty, PreparingRebalance,
//!   CompletingRebalance, Stable, Dead) and its committed offsets. Pure.
//! - `coordinator`: `Coordinator`, every group this node coordinates behind one
//!   `step(outputs, input)`; orders offset commits behind their fsync. Pure: no clock, no I/O,
//!   randomness (member ids) from an injected `ChaCha8Rng`.
//! - `records`: the `__consumer_offsets` key/value formats (Kafka's own).
//! - `shell`: the async shell: a mutex around the `Coordinator`, replies as oneshot channels,
//!   writes to the internal topic's partitions, a timer task, and recovery by replay at startup.
//!
//! **Invariant:** the core never sees a clock: time arrives in inputs as a `Duration` since the
//! shell started, so the same input sequence always yields the same outputs.
//! **Invariant:** an offset commit is acknowledged, and visible to OffsetFetch, only after the
//! record carrying it is durable in `__consumer_offsets`.
//! **Invariant:** a transactional offset commit (TxnOffsetCommit) is written as a transactional
//! batch of its producer and stays pending, invisible to OffsetFetch, until a COMMIT marker for
//! that producer is durable on the group's partition (then it becomes the committed offset) or
//! an ABORT marker is (then it is dropped); replay applies the markers found in the log.

pub mod classic;
pub mod coordinator;
pub mod records;
pub mod shell;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use std::time::Duration;

pub use classic::{Group, GroupState};
pub use coordinator::{Coordinator, Input, Output};

/// Identifies one request awaiting a reply from the core; chosen by the shell, unique.
pub type RequestId = u64;
/// Identifies one write to `__consumer_offsets`; chosen by the core, increasing.
pub type WriteId = u64;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's `offset.metadata.max.bytes`: the metadata string stored with a committed offset.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Protocol metadata (a subscription) or an assignment, per member. Kafka has no explicit limit
/// (only the request size); ours keeps one group's memory bounded: members x this.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;
/// Protocols one member may offer (librdkafka offers one per assignor, usually 1-3).
pub const MEMBER_PROTOCOLS_MAX: usize = 16;
/// Group ids, member ids, instance ids, client ids and protocol names are at most this long: they
/// are keys in memory and in `__consumer_offsets`.
pub const GROUP_NAME_BYTES_MAX: usize = 255;

/// Kafka's group coordinator settings, with units. `kafka_defaults()` is Kafka's broker defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Kafka's `group.min.session.timeout.ms`: shorter sessions would flood us with heartbeats.
    pub session_timeout_min: Duration,
    /// Kafka's `group.max.session.timeout.ms`: longer ones would keep dead members for too long.
    pub session_timeout_max: Duration,
    /// Kafka's `group.max.size`: members beyond this get GROUP_MAX_SIZE_REACHED.
    pub group_size_max: usize,
    /// Kafka's `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this
    /// long for more members, so consumers started together cause one rebalance, not one each.
    pub initial_rebalance_delay: Duration,
    /// Partitions of `__consumer_offsets` when this broker creates it; afterwards the topic's own
    /// count decides (changing it would move groups to other partitions and lose their offsets).
    pub offsets_topic_partitions: i32,
}

impl GroupConfig {
    /// Kafka's defaults, except `offsets_topic_partitions` (see `OFFSETS_TOPIC_PARTITIONS_DEFAULT`)
    /// and `group_size_max` (Kafka: unbounded).
    pub fn kafka_defaults() -> GroupConfig {
        GroupConfig {
            session_timeout_min: Duration::from_millis(6_000),
            session_timeout_max: Duration::from_millis(1_800_000),
            group_size_max: GROUP_SIZE_MAX_DEFAULT,
            initial_rebalance_delay: Duration::from_millis(3_000),
            offsets_topic_partitions: OFFSETS_TOPIC_PARTITIONS_DEFAULT,
        }
    }
}

/// Kafka creates 50 partitions so that coordinator load spreads over large clusters. Each partition
/// here is a directory, three open files and a flusher task on every node, replayed at every start
/// (including every simulated restart); 16 still spreads groups over up to 16 coordinators once
/// replication arrives, at a third of the startup cost.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: i32 = 16;
/// Bounds one group's memory (members x `MEMBER_METADATA_BYTES_MAX` x 2).
pub const GROUP_SIZE_MAX_DEFAULT: usize = 1000;

/// A partition of a user topic, as groups commit offsets for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A committed offset, as stored and as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    /// Wall-clock time of the commit, in ms since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// One protocol a member supports (e.g. "range"), with its subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// JoinGroup, validated by the handler (lengths, counts) and the core (timeouts, protocols).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+ (KIP-394): an unknown member first gets an id and MEMBER_ID_REQUIRED.
    pub member_id_required: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (and their metadata for the chosen protocol).
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, per member id; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// Heartbeat, and the identity part of OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ batches them; v0-2 send one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// TxnOffsetCommit: offsets a transaction commits, pending until its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCommitRequest {
    pub group_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    /// v3+: -1 and "" unless the producer is also the group's member (KIP-447).
    pub generation_id: i32,
    pub member_id: String,
    /// Partitions the handler already checked (topic exists, metadata size).
    pub offsets: Vec<(TopicPartition, Committed)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub member: MemberRef,
    /// Partitions the handler already checked (topic exists, metadata size).
    pub offsets: Vec<(TopicPartition, Committed)>,
}

/// What a group looks like to DescribeGroups and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Why a group request failed; `handlers::errors::group_error_code` picks the Kafka code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("invalid group id {group_id:?}")]
    InvalidGroupId { group_id: String },
    #[error("unknown member {member_id:?}")]
    UnknownMemberId { member_id: String },
    /// KIP-394: rejoin with this id.
    #[error("member id required; use {member_id:?}")]
    MemberIdRequired { member_id: String },
    #[error("generation {generation_id} is not the group's {current}")]
    IllegalGeneration { generation_id: i32, current: i32 },
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("no protocol in common with the group, or protocol type mismatch")]
    InconsistentGroupProtocol,
    #[error("session timeout {timeout_ms} ms is outside {min_ms}..={max_ms} ms")]
    InvalidSessionTimeout {
        timeout_ms: u128,
        min_ms: u128,
        max_ms: u128,
    },
    #[error("the group already has {members} members")]
    GroupMaxSizeReached { members: usize },
    #[error("instance {group_instance_id:?} now belongs to another member")]
    FencedInstanceId { group_instance_id: String },
    #[error("group {group_id:?} does not exist")]
    GroupIdNotFound { group_id: String },
    #[error("group {group_id:?} still has members")]
    NonEmptyGroup { group_id: String },
    /// OffsetDelete of a topic an active member still consumes: it would commit again at once.
    #[error("the group still consumes topic {topic:?}")]
    GroupSubscribedToTopic { topic: String },
    /// TxnOffsetCommit from a producer epoch a marker already ended: a zombie.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {fenced_by}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        fenced_by: i16,
    },
    /// The group is being deleted, or its write to `__consumer_offsets` failed: retry.
    #[error("the coordinator is not available: {reason}")]
    CoordinatorNotAvailable { reason: &'static str },
    /// This broker does not lead the group's partition of a replicated `__consumer_offsets`
    /// (any more): find the coordinator again.
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// This broker just became the group's coordinator and is still loading its partition.
    #[error("the group's coordinator is loading its state")]
    CoordinatorLoadInProgress,
}
