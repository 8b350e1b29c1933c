//! The harness tests itself: each planted bug (broker feature `planted-bugs`) must be caught by
//! the checker (or the liveness phase, or an assertion) within a bounded number of seeds, and
//! the same seeds must pass with no bug switched on.

use broker::planted::Bug;
use sim::cluster_world::ClusterBug;
use sim::world::Planted;
use std::fmt;

/// The scenario that can show `bug`: storage and produce bugs need crashes, the group bug a
/// group whose members stall, the retention and compaction bugs a topic that deletes or
/// compacts.
pub fn planted_scenario(planted: Planted) -> &'static str {
    let bug = match planted {
        Planted::Broker(bug) => bug,
        // A replica outside the ISR elected: after a crash it leads without what the ISR
        // acknowledged, and the old leader truncates to it (lost-write, inconsistent-offsets).
        Planted::Cluster(bug) if ClusterBug::REPLICATION.contains(&bug) => return "cluster-crash",
        // Every other control-plane bug shows in the cluster world: a leader elected twice in a
        // term, a diverged log, an acknowledged topic lost, or a fenced broker leading (an
        // assertion).
        Planted::Cluster(_) => return "cluster-metadata",
    };
    match bug {
        // Issue 13's replication bugs (`Bug::REPLICATION`), in the replicated data world.
        // A follower that reports what it has not fsynced lets the HW pass it: a whole-cluster
        // power loss right after the ack, and the last ISR member, which leads again, lacks the
        // record (lost-write).
        Bug::AckBeforeFollowerFsync => "cluster-crash",
        // An HW over every replica rather than the ISR: a follower dead for good stalls acks=all
        // (the liveness phase's acks=all writes are never acknowledged).
        Bug::HwOverAllReplicas => "cluster-crash",
        // A follower that keeps a divergent tail (a leader cut off from its followers appended
        // it) and later leads serves other offsets for it (inconsistent-offsets).
        Bug::SkipTruncation => "cluster-partition",
        // A consumer reads above the HW from a leader cut off from its followers; the new
        // leader writes other records there (inconsistent-offsets).
        Bug::ReadAboveHw => "cluster-partition",
        // A leader cut off from the controller acks its waiters when deposed (lost-write).
        Bug::StaleLeaderAcks => "cluster-partition",
        // A leader that shrinks its ISR by itself advances the HW past a lagging follower the
        // controller still counts, and elects it after a cut (lost-write).
        Bug::IsrShrinkLocal => "cluster-partition",
        // A group moved to a new coordinator: only a cluster's replicated offsets topic moves.
        Bug::OffsetsLoadSkipsReplay | Bug::CoordinatorKeepsMovedGroups => "cluster-groups",
        // A transaction coordinator that moved, or markers for partitions led elsewhere: only
        // a cluster's replicated `__transaction_state` and spread leaders show them.
        Bug::TxnLoadSkipsReplay | Bug::MarkersOnlyLocal => "cluster-txn",
        Bug::CommitStaleGeneration | Bug::CommitAckBeforeFsync | Bug::OffsetsReplayKeepsFirst => {
            "single-groups"
        }
        Bug::RetentionByModifiedTime | Bug::RetentionSizeOneTooMany => "single-retention",
        Bug::CompactionKeepsFirst => "single-compaction",
        // Retries of stored batches come from crashes (a produce appended, its answer lost);
        // half of single-crash's seeds have idempotent, retrying producers.
        Bug::DedupAppendsAgain | Bug::ProducerStateNotRestored => "single-crash",
        // Only a transactional workload writes markers; a crash between the markers and the
        // decision's fsync tears a transaction.
        // A read_committed reader meets an open transaction (LSO); the processors' zombies
        // write after a new instance fenced them (a marker with the bumped epoch).
        Bug::MarkersBeforeDurableDecision
        | Bug::LsoFromHighWatermark
        | Bug::FencedProducerAccepted => "single-txn",
        _ => "single-crash",
    }
}

/// How a hunt spends its seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuntMode {
    /// Stop at the first seed that catches the bug (the self-test: is it caught at all?).
    FirstCatch,
    /// Run every seed, to measure the catch rate as well (`ci/sim planted`).
    Rate,
}

#[derive(Debug)]
pub struct Outcome {
    pub bug: Planted,
    /// The scenario hunted in.
    pub scenario: String,
    /// The first seed whose run failed, and how.
    pub caught_at: Option<(u64, String)>,
    pub seeds_tried: u64,
    /// Seeds that caught the bug, of `seeds_tried` (a rate only in `HuntMode::Rate`).
    pub seeds_caught: u64,
    pub mode: HuntMode,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.caught_at {
            Some((seed, verdict)) if self.mode == HuntMode::FirstCatch => write!(
                f,
                "{} ({}): caught at seed {seed} by {verdict}",
                self.bug.name(),
                self.scenario,
            ),
            Some((seed, verdict)) => write!(
                f,
                "{} ({}): first caught at seed {seed}, caught by {}/{} seeds ({:.0}%), first by {verdict}",
                self.bug.name(),
                self.scenario,
                self.seeds_caught,
                self.seeds_tried,
                100.0 * self.seeds_caught as f64 / self.seeds_tried.max(1) as f64,
            ),
            None => write!(
                f,
                "{} ({}): ESCAPED ({} seeds)",
                self.bug.name(),
                self.scenario,
                self.seeds_tried
            ),
        }
    }
}

/// Runs seeds `0..seeds_max` of `scenario` with `bug` planted (each in its own process of
/// `binary`), until one fails or, in `HuntMode::Rate`, through all of them.
pub fn hunt(
    binary: &std::path::Path,
    bug: Planted,
    scenario: &str,
    seeds_max: u64,
    mode: HuntMode,
) -> Outcome {
    let jobs = crate::sweep::jobs_default() as u64;
    let mut outcome = Outcome {
        bug,
        scenario: scenario.to_string(),
        caught_at: None,
        seeds_tried: 0,
        seeds_caught: 0,
        mode,
    };
    let mut start = 0;
    while start < seeds_max {
        let end = (start + jobs).min(seeds_max);
        let summary = crate::sweep(
            binary,
            scenario,
            start..end,
            Some(bug.name()),
            jobs as usize,
            |_| {},
        );
        outcome.seeds_tried = end;
        outcome.seeds_caught += summary.failures.len() as u64;
        if let Some(failure) = summary.failures.iter().min_by_key(|failure| failure.seed) {
            if outcome.caught_at.is_none() {
                outcome.caught_at = Some((failure.seed, failure.verdict.clone()));
            }
            if mode == HuntMode::FirstCatch {
                outcome.seeds_tried = failure.seed + 1;
                outcome.seeds_caught = 1;
                return outcome;
            }
        }
        start = end;
    }
    outcome
}

/// Issue 13's replication bugs: the broker's six and the controller's elect-outside-isr, each
/// hunted in the replicated data world (200-seed catch rates in issue 13's note: 4% to 57%).
pub fn replication_bugs() -> Vec<Planted> {
    let broker = Bug::REPLICATION.iter().map(|bug| Planted::Broker(*bug));
    broker
        .chain(ClusterBug::REPLICATION.into_iter().map(Planted::Cluster))
        .collect()
}

/// Every planted bug (or those named in `only`), hunted in its `planted_scenario` (or in
/// `scenario` when given); empty when the build lacks the feature (nothing is planted then).
pub fn campaign(
    binary: &std::path::Path,
    seeds_max: u64,
    mode: HuntMode,
    only: &[String],
    scenario: Option<&str>,
) -> Vec<Outcome> {
    if !cfg!(feature = "planted-bugs") {
        return Vec::new();
    }
    let broker = Bug::ALL.iter().map(|bug| Planted::Broker(*bug));
    let cluster = ClusterBug::ALL.into_iter().map(Planted::Cluster);
    broker
        .chain(cluster)
        .chain(replication_bugs())
        .filter(|bug| only.is_empty() || only.iter().any(|name| name == bug.name()))
        .map(|bug| {
            let scenario = scenario.unwrap_or(planted_scenario(bug));
            hunt(binary, bug, scenario, seeds_max, mode)
        })
        .collect()
}
