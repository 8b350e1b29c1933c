//! The harness tests itself (madsim build with `--features planted-bugs`): every planted bug is
//! caught within `SEEDS_MAX` seeds of the crash scenario. The clean build passing those same
//! seeds is `sweep.rs`'s `sweep_single_crash`.
#![cfg(all(madsim, feature = "planted-bugs"))]

use scenarios::planted::{campaign, HuntMode};

/// The bound on seeds-to-detection; the figures in the closing note say how close each bug is.
/// 200 since the stream change of issue 10: recovery-skips-crc is first caught at seed 42 of
/// the new worlds (2 of 200 seeds), which is issue 10 section 6's to raise, not this bound's.
const SEEDS_MAX: u64 = 200;

#[test]
fn every_planted_bug_is_caught() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_gregor-sim"));
    let outcomes = campaign(binary, SEEDS_MAX, HuntMode::FirstCatch, &[]);
    assert!(!outcomes.is_empty(), "the feature plants bugs");
    let escaped: Vec<String> = outcomes
        .iter()
        .filter(|outcome| outcome.caught_at.is_none())
        .map(|outcome| outcome.to_string())
        .collect();
    for outcome in &outcomes {
        println!("{outcome}");
    }
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
}
