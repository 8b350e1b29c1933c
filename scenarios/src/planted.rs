//! The harness tests itself: each planted bug (broker feature `planted-bugs`) must be caught by
//! the checker (or the liveness phase, or an assertion) within a bounded number of seeds, and
//! the same seeds must pass with no bug switched on.

use crate::{scenario_find, Scenario};
use broker::planted::Bug;
use std::fmt;

/// Planted bugs run in the crash scenario: every one of them needs a crash to show.
pub const PLANTED_SCENARIO: &str = "single-crash";

#[derive(Debug)]
pub struct Outcome {
    pub bug: Bug,
    /// The first seed whose run failed, and how.
    pub caught_at: Option<(u64, String)>,
    pub seeds_tried: u64,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.caught_at {
            Some((seed, verdict)) => write!(
                f,
                "{}: caught at seed {seed} ({} seeds) by {verdict}",
                self.bug.name(),
                self.seeds_tried
            ),
            None => write!(
                f,
                "{}: ESCAPED ({} seeds)",
                self.bug.name(),
                self.seeds_tried
            ),
        }
    }
}

fn scenario() -> &'static Scenario {
    scenario_find(PLANTED_SCENARIO).expect("the planted scenario exists")
}

/// Runs seeds `0..seeds_max` with `bug` planted until one fails.
pub fn hunt(bug: Bug, seeds_max: u64) -> Outcome {
    let scenario = scenario();
    for seed in 0..seeds_max {
        let result = sim::world::run(scenario.name, scenario.faults, seed, false, Some(bug));
        if !result.verdict.is_pass() {
            let verdict = result.verdict.to_string();
            return Outcome {
                bug,
                caught_at: Some((seed, verdict)),
                seeds_tried: seed + 1,
            };
        }
    }
    Outcome {
        bug,
        caught_at: None,
        seeds_tried: seeds_max,
    }
}

/// Every planted bug, hunted; empty when the build lacks the feature (nothing is planted then).
pub fn campaign(seeds_max: u64) -> Vec<Outcome> {
    if !cfg!(feature = "planted-bugs") {
        return Vec::new();
    }
    Bug::ALL.iter().map(|bug| hunt(*bug, seeds_max)).collect()
}
