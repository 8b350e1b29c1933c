//! The controller: Kafka's active controller (`QuorumController`) as a sans-IO state machine.
//! It runs on the Raft leader only, decides what goes into the metadata log, and keeps its own
//! `MetadataImage` ahead of the committed one: every operation applies the records it returns
//! at once, so the next decision sees them (Kafka's active controller does the same). When
//! leadership changes or a proposal is lost, the shell throws the controller away and builds a
//! new one from the committed image (`Controller::new`).
//!
//! Each operation takes `index`, the Raft index its records will get (the shell's
//! `last_index + 1`: one operation is one Raft entry, applied as one batch), and returns a
//! `Proposal`: the records to propose (maybe none) and the reply to send once the log has
//! committed `reply_after`. Time is `now_ms` of the node's monotonic clock; the rng is injected.
//!
//! Modules: `brokers` (registration, heartbeats, session expiry, fencing), `election` (who
//! leads when a broker leaves or arrives, and preferred-leader election), `partitions` (the ISR
//! changes leaders ask for: AlterPartition), `topics` (create, delete, add partitions), `configs`,
//! `producer_ids`, `requests` (a retried call gets its first try's outcome: `decide_once`), and
//! `import` (a pre-Raft data dir's topics, once). Start with `brokers`.

mod brokers;
mod configs;
mod election;
pub mod errors;
mod import;
mod partitions;
mod producer_ids;
mod requests;
mod topics;

#[cfg(test)]
mod model;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use brokers::{BrokerHeartbeat, BrokerRegistrationRequest, HeartbeatReply, RegistrationReply};
pub use configs::{ConfigAlter, ConfigChange};
pub use errors::ApiError;
pub use import::{Import, TopicImport};
pub use partitions::AlterPartition;
pub use producer_ids::ProducerIdBlock;
pub use topics::{PartitionsCreate, TopicCreate, TopicCreated};

use crate::image::{MetadataImage, MetadataOffset};
use crate::planted::PlantedBug;
use crate::records::{BrokerId, MetadataRecord};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The controller's settings, with Kafka's defaults in `kafka_defaults`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A broker that has not heartbeated for this long is fenced
    /// (`broker.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// CreateTopics' partition count when the request says -1 (`num.partitions`).
    pub partitions_default: i32,
    /// CreateTopics' replication factor when the request says -1
    /// (`default.replication.factor`).
    pub replication_factor_default: i16,
    /// How often the preferred-leader election runs (`leader.imbalance.check.interval.seconds`,
    /// with `auto.leader.rebalance.enable`). Kafka's 10% imbalance threshold is not kept: every
    /// partition whose preferred replica can lead is moved back at each check.
    pub leader_rebalance_interval_ms: u64,
}

impl ControllerConfig {
    pub fn kafka_defaults() -> ControllerConfig {
        ControllerConfig {
            session_timeout_ms: 9_000,
            partitions_default: 1,
            replication_factor_default: 1,
            leader_rebalance_interval_ms: 300_000,
        }
    }
}

/// What an operation decided: records to propose as one Raft entry, and the reply to send once
/// the log has committed `reply_after` (the operation's own entry, or, when it wrote nothing,
/// the last entry this controller proposed: the reply may describe state that entry made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal<R> {
    pub records: Vec<MetadataRecord>,
    pub reply: R,
    pub reply_after: MetadataOffset,
}

impl<R> Proposal<R> {
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Proposal<S> {
        Proposal {
            records: self.records,
            reply: f(self.reply),
            reply_after: self.reply_after,
        }
    }
}

pub struct Controller {
    config: ControllerConfig,
    /// The committed image plus everything this controller proposed since it was built.
    image: MetadataImage,
    /// When each registered broker's session ends unless it heartbeats (ms, monotonic).
    session_deadlines: BTreeMap<BrokerId, u64>,
    /// When the next preferred-leader election may run (ms, monotonic): at most one per
    /// `leader_rebalance_interval_ms`.
    rebalance_at: u64,
    rng: ChaCha8Rng,
    planted: Option<PlantedBug>,
}

impl Controller {
    /// A controller for a new Raft leader, from the committed image. Every registered broker
    /// gets a fresh session: the old leader's heartbeats are unknown here (Kafka does the same).
    pub fn new(
        config: ControllerConfig,
        image: MetadataImage,
        now_ms: u64,
        rng: ChaCha8Rng,
    ) -> Controller {
        image.check_invariants();
        let deadline = now_ms.saturating_add(config.session_timeout_ms);
        let session_deadlines = image
            .brokers()
            .map(|broker| (broker.broker_id, deadline))
            .collect();
        let rebalance_at = now_ms.saturating_add(config.leader_rebalance_interval_ms);
        Controller {
            config,
            image,
            session_deadlines,
            rebalance_at,
            rng,
            planted: None,
        }
    }

    /// Switches on a planted bug (tests and the simulator's self-test only).
    #[cfg(feature = "planted-bugs")]
    pub fn with_planted_bug(mut self, bug: PlantedBug) -> Controller {
        self.planted = Some(bug);
        self
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The committed image plus this controller's proposals.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// When `tick` next has work: the earliest session deadline of an unfenced broker, or the
    /// next preferred-leader election while some partition's preferred replica could lead and
    /// does not (no timer otherwise: a balanced or single-broker cluster has none).
    pub fn next_deadline(&self) -> Option<u64> {
        let rebalance = election::preferred_pending(&self.image).then_some(self.rebalance_at);
        self.session_deadline_next()
            .into_iter()
            .chain(rebalance)
            .min()
    }

    /// The earliest session deadline of an unfenced broker.
    pub fn session_deadline_next(&self) -> Option<u64> {
        self.session_deadlines
            .iter()
            .filter(|(broker_id, _)| self.image.broker_is_live(**broker_id))
            .map(|(_, deadline)| *deadline)
            .min()
    }

    /// An operation's answer: its proposal, or a refusal that writes nothing. A refusal too
    /// waits for the last proposal: it was decided on state that may not have committed yet
    /// (a registration in flight makes an older epoch stale), as Kafka's controller waits.
    fn answer<R>(
        &mut self,
        index: MetadataOffset,
        decided: Result<Proposal<R>, ApiError>,
    ) -> Proposal<Result<R, ApiError>> {
        match decided {
            Ok(proposal) => proposal.map(Ok),
            Err(error) => self.batch(index).finish(Err(error)),
        }
    }

    /// Starts the batch of records one operation proposes at `index`.
    fn batch(&mut self, index: MetadataOffset) -> Batch<'_> {
        assert!(
            index > self.image.offset(),
            "proposal at index {index}, but this controller already proposed up to {}",
            self.image.offset()
        );
        Batch {
            image: &mut self.image,
            rng: &mut self.rng,
            index,
            records: Vec::new(),
        }
    }
}

/// Records being decided: each is applied to the controller's image as it is pushed, so the
/// next decision of the same operation sees it.
struct Batch<'a> {
    image: &'a mut MetadataImage,
    rng: &'a mut ChaCha8Rng,
    index: MetadataOffset,
    records: Vec<MetadataRecord>,
}

impl Batch<'_> {
    fn image(&self) -> &MetadataImage {
        self.image
    }

    fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }

    fn push(&mut self, record: MetadataRecord) {
        tracing::debug!(index = ?self.index, ?record, "controller proposes");
        self.image.apply_record(self.index, &record);
        self.records.push(record);
    }

    /// Ends the batch: the proposal with `reply`, to be sent after this batch's entry commits
    /// (or, if it wrote nothing, after the last entry proposed before it).
    fn finish<R>(self, reply: R) -> Proposal<R> {
        if !self.records.is_empty() {
            self.image.batch_end(self.index);
        }
        Proposal {
            records: self.records,
            reply,
            reply_after: self.image.offset(),
        }
    }
}
