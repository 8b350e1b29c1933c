//! `gregor-sim`: the simulator's command line (run it through `ci/sim`, which builds it with
//! `--cfg madsim`). `list` names the scenarios; `run` replays one seed; `sweep` runs many;
//! `planted` proves the harness catches each planted bug.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!("gregor-sim must be built with RUSTFLAGS=\"--cfg madsim\": use ci/sim");
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli {
    use clap::{Parser, Subcommand};
    use scenarios::{replay_command, scenario_find, Scenario, SCENARIOS};
    use std::process::ExitCode;
    use std::time::Instant;

    #[derive(Parser)]
    #[command(name = "gregor-sim", about = "gregor's deterministic simulator")]
    struct Command {
        #[command(subcommand)]
        action: Action,
    }

    #[derive(Subcommand)]
    enum Action {
        /// Print the scenario names, one a line.
        List,
        /// Replay one seed: prints the verdict and `trace-hash: <hex>`; non-zero exit on failure.
        Run {
            #[arg(long)]
            scenario: String,
            #[arg(long)]
            seed: u64,
            /// Write the history as JSON here.
            #[arg(long)]
            history: Option<std::path::PathBuf>,
            /// Print every trace line.
            #[arg(long)]
            trace: bool,
            /// Switch on a planted bug (a build with the planted-bugs feature: `ci/sim planted`
            /// builds one), e.g. ack-before-fsync.
            #[arg(long)]
            planted: Option<String>,
        },
        /// Run seeds A..B (end exclusive) with a progress bar and a summary.
        Sweep {
            #[arg(long)]
            scenario: String,
            #[arg(long, value_parser = parse_range)]
            seeds: std::ops::Range<u64>,
        },
        /// Prove each planted bug is caught (needs the planted-bugs feature: `ci/sim planted`).
        Planted {
            /// Seeds to run per bug: all of them, for the catch rate.
            #[arg(long, default_value_t = 200)]
            seeds: u64,
            /// Hunt only these bugs (by name); all of them by default.
            #[arg(long)]
            bug: Vec<String>,
            /// Hunt in this scenario instead of each bug's own (`planted_scenario`).
            #[arg(long)]
            scenario: Option<String>,
        },
    }

    fn parse_range(text: &str) -> Result<std::ops::Range<u64>, String> {
        let (start, end) = text.split_once("..").ok_or("expected A..B")?;
        let start: u64 = start.parse().map_err(|_| "A is not a number")?;
        let end: u64 = end.parse().map_err(|_| "B is not a number")?;
        if end <= start {
            return Err("B must exceed A".into());
        }
        Ok(start..end)
    }

    fn scenario(name: &str) -> Result<&'static Scenario, ExitCode> {
        scenario_find(name).ok_or_else(|| {
            eprintln!("unknown scenario {name:?}; `ci/sim list` names them");
            ExitCode::from(2)
        })
    }

    pub fn main() -> ExitCode {
        // Logs only when asked (RUST_LOG=...): a sweep prints a progress bar, not log lines.
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let result = match Command::parse().action {
            Action::List => {
                SCENARIOS
                    .iter()
                    .for_each(|scenario| println!("{}", scenario.name));
                Ok(ExitCode::SUCCESS)
            }
            Action::Run {
                scenario: name,
                seed,
                history,
                trace,
                planted,
            } => run(&name, seed, history, trace, planted.as_deref()),
            Action::Sweep {
                scenario: name,
                seeds,
            } => sweep(&name, seeds),
            Action::Planted {
                seeds,
                bug,
                scenario: hunted_in,
            } => match hunted_in.as_deref().map(scenario).transpose() {
                Ok(_) => planted(seeds, &bug, hunted_in.as_deref()),
                Err(code) => Err(code),
            },
        };
        result.unwrap_or_else(|code| code)
    }

    /// A seed's wall-clock budget. A run with no verdict by then is hung: a spin that never lets
    /// simulated time move (single-groups seed 779 held a 1,000-seed sweep for an hour), which
    /// no simulated-time bound can catch. Healthy seeds take seconds, minutes on a loaded machine.
    const RUN_WALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(900);

    /// Ends the process with a `hung` verdict once `RUN_WALL_BUDGET` has passed, so a sweep
    /// counts the seed as failed and goes on.
    // Real time and a real thread on purpose: they watch the simulator from outside and never
    // touch the simulation, whose time is madsim's.
    #[allow(clippy::disallowed_methods)]
    fn watchdog_start(scenario: &str, seed: u64) {
        let replay = replay_command(scenario, seed);
        std::thread::spawn(move || {
            std::thread::sleep(RUN_WALL_BUDGET);
            println!(
                "verdict: hung: no verdict after {} s of wall time\nreplay: {replay}",
                RUN_WALL_BUDGET.as_secs()
            );
            std::process::exit(1);
        });
    }

    fn run(
        name: &str,
        seed: u64,
        history: Option<std::path::PathBuf>,
        trace: bool,
        planted: Option<&str>,
    ) -> Result<ExitCode, ExitCode> {
        let scenario = scenario(name)?;
        let planted = match planted {
            None => None,
            Some(name) => Some(sim::world::Planted::from_name(name).ok_or_else(|| {
                eprintln!("unknown planted bug {name:?}");
                ExitCode::from(2)
            })?),
        };
        watchdog_start(scenario.name, seed);
        let result = sim::world::run(
            scenario.name,
            scenario.faults,
            scenario.workload,
            seed,
            trace,
            planted,
        );
        if trace {
            result
                .trace_lines
                .iter()
                .for_each(|line| println!("{line}"));
        }
        println!("{}", result.summary());
        if let Some(path) = history {
            let json = serde_json::to_vec_pretty(&result.history).expect("histories serialize");
            // The simulator's CLI writes its report where asked: a tool's edge, not broker code.
            #[allow(clippy::disallowed_methods)]
            std::fs::write(&path, json).map_err(|error| {
                eprintln!("cannot write {}: {error}", path.display());
                ExitCode::FAILURE
            })?;
        }
        println!("simulated-seconds: {:.3}", result.simulated.as_secs_f64());
        println!("verdict: {}", result.verdict);
        println!("trace-hash: {:016x}", result.trace_hash);
        if result.verdict.is_pass() {
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}", result.report_text);
        println!("replay: {}", replay_command(name, seed));
        Ok(ExitCode::FAILURE)
    }

    fn binary() -> Result<std::path::PathBuf, ExitCode> {
        std::env::current_exe().map_err(|error| {
            eprintln!("cannot find this binary to run seeds: {error}");
            ExitCode::FAILURE
        })
    }

    #[allow(clippy::disallowed_methods)] // Wall-clock rate of the sweep: a tool's edge.
    fn sweep(name: &str, seeds: std::ops::Range<u64>) -> Result<ExitCode, ExitCode> {
        scenario(name)?;
        let binary = binary()?;
        let bar = indicatif::ProgressBar::new(seeds.end - seeds.start);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {elapsed} {msg}")
                .expect("valid template"),
        );
        let started = Instant::now();
        let jobs = scenarios::sweep::jobs_default();
        let summary = scenarios::sweep(&binary, name, seeds, None, jobs, |outcome| {
            bar.inc(1);
            if !outcome.pass {
                bar.println(format!(
                    "seed {}: {} -> {}",
                    outcome.seed,
                    outcome.verdict,
                    replay_command(name, outcome.seed)
                ));
            }
        });
        bar.finish_and_clear();
        let wall = started.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{:.2} seeds/s, {:.1} simulated s per wall s ({jobs} processes)",
            summary.seeds as f64 / wall,
            summary.simulated_s / wall
        );
        println!("{} seeds, {} failed", summary.seeds, summary.failures.len());
        let faults: Vec<String> = summary
            .fault_counts
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        println!("faults: {}", faults.join(" "));
        for failure in &summary.failures {
            println!(
                "  {}: {}",
                failure.verdict,
                replay_command(name, failure.seed)
            );
        }
        Ok(if summary.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    fn planted(seeds: u64, only: &[String], scenario: Option<&str>) -> Result<ExitCode, ExitCode> {
        let mode = scenarios::planted::HuntMode::Rate;
        let outcomes = scenarios::planted::campaign(&binary()?, seeds, mode, only, scenario);
        if outcomes.is_empty() {
            eprintln!(
                "no planted bugs in this build: run `ci/sim planted` (it enables the feature)"
            );
            return Err(ExitCode::from(2));
        }
        let mut escaped = false;
        for outcome in outcomes {
            println!("{outcome}");
            escaped |= outcome.caught_at.is_none();
        }
        Ok(if escaped {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
