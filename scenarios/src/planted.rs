//! The harness tests itself: each planted bug (broker feature `planted-bugs`) must be caught by
//! the checker (or the liveness phase, or an assertion) within a bounded number of seeds, and
//! the same seeds must pass with no bug switched on.

use broker::planted::Bug;
use std::fmt;

/// The scenario that can show `bug`: storage and produce bugs need crashes, the group bug a
/// group whose members stall.
pub fn planted_scenario(bug: Bug) -> &'static str {
    match bug {
        Bug::CommitStaleGeneration => "single-groups",
        _ => "single-crash",
    }
}

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

/// Runs seeds `0..seeds_max` with `bug` planted (each in its own process of `binary`) until
/// one fails.
pub fn hunt(binary: &std::path::Path, bug: Bug, seeds_max: u64) -> Outcome {
    let scenario = planted_scenario(bug);
    let jobs = crate::sweep::jobs_default() as u64;
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
        if let Some(failure) = summary.failures.iter().min_by_key(|failure| failure.seed) {
            let caught_at = Some((failure.seed, failure.verdict.clone()));
            return Outcome {
                bug,
                caught_at,
                seeds_tried: failure.seed + 1,
            };
        }
        start = end;
    }
    Outcome {
        bug,
        caught_at: None,
        seeds_tried: seeds_max,
    }
}

/// Every planted bug, hunted; empty when the build lacks the feature (nothing is planted then).
pub fn campaign(binary: &std::path::Path, seeds_max: u64) -> Vec<Outcome> {
    if !cfg!(feature = "planted-bugs") {
        return Vec::new();
    }
    Bug::ALL
        .iter()
        .map(|bug| hunt(binary, *bug, seeds_max))
        .collect()
}
