//! Sweeps: many seeds, each replayed in its own `gregor-sim run` process, `jobs` at a time.
//!
//! Why processes: a seed must replay exactly as `ci/sim run` replays it, and simulations that
//! share a process do not (state outside our code, in the simulator's dependencies, survives one
//! runtime and nudges the next; two seeds of `single-crash` failed only after forty others had
//! run in the same process). A process per seed also uses both cores.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// One seed's outcome, as its process reported it.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    pub pass: bool,
    /// The verdict line (`pass`, `correctness: ...`, ...), or why the process failed.
    pub verdict: String,
    pub trace_hash: String,
    pub simulated_s: f64,
    /// How often the broker met and handled each kind of fault (the run's `sites:` line).
    pub sites: BTreeMap<String, u64>,
    /// The run's `faults:` line, by name: crash kinds and aimed-fault firings.
    pub fault_counts: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct SweepSummary {
    pub seeds: u64,
    pub failures: Vec<SeedOutcome>,
    pub simulated_s: f64,
    /// Every seed's fault counts, added up: what the sweep covered.
    pub fault_counts: BTreeMap<String, u64>,
}

fn spawn(
    binary: &Path,
    scenario: &str,
    seed: u64,
    planted: Option<&str>,
) -> std::io::Result<Child> {
    let mut command = Command::new(binary);
    command.args(["run", "--scenario", scenario, "--seed", &seed.to_string()]);
    if let Some(bug) = planted {
        command.args(["--planted", bug]);
    }
    command
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

fn outcome(seed: u64, child: std::io::Result<Child>) -> SeedOutcome {
    let output = child.and_then(Child::wait_with_output);
    let failed = |verdict: String| SeedOutcome {
        seed,
        pass: false,
        verdict,
        trace_hash: String::new(),
        simulated_s: 0.0,
        sites: BTreeMap::new(),
        fault_counts: BTreeMap::new(),
    };
    let output = match output {
        Ok(output) => output,
        Err(error) => return failed(format!("could not run the seed: {error}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout.lines().find_map(|line| {
            line.strip_prefix(name)
                .map(|value| value.trim().to_string())
        })
    };
    let Some(verdict) = field("verdict:") else {
        return failed(format!(
            "the run died ({}) before its verdict",
            output.status
        ));
    };
    SeedOutcome {
        seed,
        pass: output.status.success() && verdict == "pass",
        verdict,
        trace_hash: field("trace-hash:").unwrap_or_default(),
        simulated_s: field("simulated-seconds:")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
        sites: field("sites:").map_or_else(BTreeMap::new, |text| sim::sites::parse(&text)),
        fault_counts: field("faults:").map_or_else(BTreeMap::new, |line| counts_parse(&line)),
    }
}

/// Parses `name=count name=count ...`; malformed pairs are skipped.
fn counts_parse(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|pair| {
            let (name, count) = pair.split_once('=')?;
            Some((name.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// Runs one seed in its own process of `binary` (a `gregor-sim` built with `--cfg madsim`).
pub fn run_seed(binary: &Path, scenario: &str, seed: u64, planted: Option<&str>) -> SeedOutcome {
    outcome(seed, spawn(binary, scenario, seed, planted))
}

/// Runs `seeds` of `scenario`, `jobs` processes at a time; `progress` sees each outcome.
pub fn sweep(
    binary: &Path,
    scenario: &str,
    seeds: Range<u64>,
    planted: Option<&str>,
    jobs: usize,
    mut progress: impl FnMut(&SeedOutcome),
) -> SweepSummary {
    let mut summary = SweepSummary::default();
    let seeds: Vec<u64> = seeds.collect();
    for chunk in seeds.chunks(jobs.max(1)) {
        let children: Vec<(u64, std::io::Result<Child>)> = chunk
            .iter()
            .map(|seed| (*seed, spawn(binary, scenario, *seed, planted)))
            .collect();
        for (seed, child) in children {
            let outcome = outcome(seed, child);
            summary.seeds += 1;
            summary.simulated_s += outcome.simulated_s;
            for (name, count) in &outcome.fault_counts {
                *summary.fault_counts.entry(name.clone()).or_default() += count;
            }
            progress(&outcome);
            if !outcome.pass {
                summary.failures.push(outcome);
            }
        }
    }
    summary
}

/// Processes to run at once: one per core.
pub fn jobs_default() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}
