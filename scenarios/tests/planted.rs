//! The harness tests itself (madsim build with `--features planted-bugs`): every planted bug is
//! caught within `SEEDS_MAX` seeds of the crash scenario. The clean build passing those same
//! seeds is `sweep.rs`'s `sweep_single_crash`.
#![cfg(all(madsim, feature = "planted-bugs"))]

use scenarios::planted::{campaign, HuntMode};

/// The bound on seeds-to-detection; the figures in the closing note say how close each bug is.
const SEEDS_MAX: u64 = 200;

/// Planted bugs the simulator is known to miss within `SEEDS_MAX` seeds today, each an open
/// weakness of the harness, not a pass: `ci/sim planted` still hunts and prints them.
/// markers-before-durable-decision escaped until the transaction scenario aimed power losses at
/// the moment a commit decision is appended (`decision-appended`); it is caught in 14 of 200
/// single-txn seeds, first at seed 16.
/// snapshot-without-index escaped 200 cluster-metadata seeds until half of them drew a small
/// snapshot interval (`ClusterPolicy::snapshot_interval_entries`): a run's few hundred entries
/// never reached the default 1024.
/// send-before-persist was caught in 1 of 200 cluster-metadata seeds until power losses were
/// aimed at the moment a Raft batch is written and not yet synced (`raft-written`): now 76 of
/// 200 (fenced-broker-leads 197, apply-uncommitted 171, snapshot-without-index 86).
const ESCAPES_KNOWN: &[&str] = &[];

#[test]
fn every_planted_bug_is_caught() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_gregor-sim"));
    let outcomes = campaign(binary, SEEDS_MAX, HuntMode::FirstCatch, &[], None);
    assert!(!outcomes.is_empty(), "the feature plants bugs");
    let escaped: Vec<String> = outcomes
        .iter()
        .filter(|outcome| outcome.caught_at.is_none())
        .filter(|outcome| !ESCAPES_KNOWN.contains(&outcome.bug.name()))
        .map(|outcome| outcome.to_string())
        .collect();
    for outcome in &outcomes {
        println!("{outcome}");
    }
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
}
