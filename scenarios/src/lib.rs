//! Named scenarios (a workload crossed with the faults it may meet) and seed sweeps over them.
//!
//! A scenario fixes what may happen; each seed's swarm options (`sim::options`) decide what does.
//! Sweeps are what `cargo test` runs (in the madsim build) and what `ci/sim sweep` prints.

use sim::options::FaultMix;

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub faults: FaultMix,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "single-quiet",
        description: "one broker, producers and consumers, no faults: the baseline every run must pass",
        faults: FaultMix::NONE,
    },
    Scenario {
        name: "single-crash",
        description: "one broker crashing and restarting (unsynced writes lost or torn) under disk faults",
        faults: FaultMix { crash: true, disk: true, ..FaultMix::NONE },
    },
    Scenario {
        name: "single-chaos",
        description: "one broker under every fault: crashes, pauses, partitions, clock skew, disk faults, latency",
        faults: FaultMix::ALL,
    },
];

pub fn scenario_find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|scenario| scenario.name == name)
}

/// The command that replays one seed.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("ci/sim run --scenario {scenario} --seed {seed}")
}

#[cfg(madsim)]
pub use sweep::*;

#[cfg(madsim)]
pub mod planted;

#[cfg(madsim)]
mod sweep {
    use super::*;
    use sim::world::{RunResult, Verdict};

    /// Runs one seed of a scenario.
    pub fn run(scenario: &Scenario, seed: u64, trace_lines: bool) -> RunResult {
        sim::world::run(scenario.name, scenario.faults, seed, trace_lines, None)
    }

    #[derive(Debug, Default)]
    pub struct SweepSummary {
        pub seeds: u64,
        pub failures: Vec<(u64, Verdict)>,
        pub simulated: std::time::Duration,
    }

    /// Runs `seeds`; `progress` sees each result as it lands.
    pub fn sweep(
        scenario: &Scenario,
        seeds: std::ops::Range<u64>,
        mut progress: impl FnMut(u64, &RunResult),
    ) -> SweepSummary {
        let mut summary = SweepSummary::default();
        for seed in seeds {
            let result = run(scenario, seed, false);
            summary.seeds += 1;
            summary.simulated += result.simulated;
            progress(seed, &result);
            if !result.verdict.is_pass() {
                summary.failures.push((seed, result.verdict.clone()));
            }
        }
        summary
    }
}
