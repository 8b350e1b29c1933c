//! The partition replica core (issue 13): the leader's and the follower's state for one
//! partition, the high watermark, ISR decisions and acks=all waiters. Sans-IO like `group/`:
//! no clock (time arrives as a `Duration`), no I/O, no locks; decisions that need the controller
//! (AlterPartition) are outputs, never actions.
//!
//! The leader side is wired into serving by `shell` (a `Leader` per replicated partition led
//! here, fed by Produce, Fetch, the flusher and the image). The follower side's fetcher is
//! issue 13's follower task.
//!
//! Module map:
//! - `mod.rs` (here): the vocabulary: `PartitionState` (the controller's word), `ReplicaConfig`,
//!   `AckError`.
//! - `fetcher`: the follower's shell: one fetcher task per source broker driving a `Follower`
//!   per followed partition (fetch, validate, append or truncate, group commit).
//! - `leader`: `Leader`, the leader side: followers' progress, the HW over the ISR, shrink and
//!   expand proposals, acks=all waiters.
//! - `follower`: `Follower`, the follower side: what to fetch, and the truncation a diverging
//!   epoch asks for.
//! - `planted`: `ReplicaBug`, the issue-13 bugs that live in this core.
//! - `shell`: `Replicas` and `Led`, the I/O around `Leader`: roles from the image, acks=all
//!   waiters, the tick task, AlterPartition proposals.
//!
//! **The durability rule of this project:** a replica's offset counts for the HW only once that
//! replica has fsynced it; the leader's own end counts only once its group commit returned. The
//! follower keeps this by sending a fetch only when everything it appended is fsynced: its
//! fetch offset is then its durable end, and the leader may count it as such (Kafka's Fetch has
//! no separate durable offset). One fetch in flight per follower, each fsync a group commit of
//! everything the previous fetch returned: the fsync sits in the follower's round trip, but a
//! fetch carries everything appended since the last one, so it costs latency, not throughput.
//!
//! **Invariant:** the HW never moves backwards, and every offset below it is durable on every
//! member of the ISR the controller holds (the leader counts the larger of its current and its
//! proposed ISR while a change is in flight, KIP-497, so a shrink cannot raise it early).
//! **Invariant:** an acks=all write is acknowledged only once the HW covers it, never by a
//! leader that lost its leadership. **Invariant:** `leader ∈ ISR`, `|ISR| >= 1`.

pub mod fetcher;
pub mod follower;
pub mod leader;
pub mod planted;
pub mod shell;

#[cfg(test)]
mod tests;

use kafka_protocol::ResponseError;
use std::collections::BTreeSet;
use std::time::Duration;

pub use follower::{FetchAnswer, FetchPosition, Follower};
pub use leader::{FetchRefused, Leader, Output};
pub use planted::ReplicaBug;

pub type BrokerId = i32;
/// Identifies one acks=all produce waiting on the HW; chosen by the shell, unique.
pub type RequestId = u64;

/// A partition as the controller committed it (the image's `PartitionImage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: BTreeSet<BrokerId>,
    pub partition_epoch: i32,
}

/// The settings the core needs, with units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max: Duration,
    /// The topic's `min.insync.replicas`: acks=all needs an ISR at least this large.
    pub min_insync: usize,
}

/// Why an acks=all produce is refused or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// |ISR| < min.insync.replicas when it was to be appended: nothing was written.
    NotEnoughReplicas,
    /// Written, and the HW covers it, but the ISR shrank below min.insync.replicas meanwhile.
    NotEnoughReplicasAfterAppend,
    /// This replica is not (or no longer) the leader: the write may or may not survive.
    NotLeaderOrFollower,
}

impl AckError {
    pub fn code(self) -> ResponseError {
        match self {
            AckError::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
            AckError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
            AckError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        }
    }
}
