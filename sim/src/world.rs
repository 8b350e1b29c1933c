//! One simulated run, top-down (TigerBeetle's vopr.zig): seed -> swarm options (logged) -> build
//! the world -> safety phase (workload + nemesis) -> heal -> liveness phase (final polls must see
//! every acknowledged write) -> check the history -> verdict.
//!
//! The brokers are `broker::serve`, the very startup path of `gregor broker`, each on its own
//! madsim node with its own `SimDisk` and skewed clock; the clients are the `client` crate
//! speaking the Kafka protocol over simulated TCP.

use crate::disk::SimDisk;
use crate::options::{FaultMix, Options, Workload};
use crate::recorder::Recorder;
use crate::sites::SiteCounts;
use crate::workload;
use broker::{BrokerConfig, NodeContext};
use checker::History;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use rand::{Rng, RngCore, SeedableRng};
use runtime::rng::{stream_rng, Stream};
use runtime::Clock;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

pub const TOPIC: &str = "t";
const BROKER_PORT: u16 = 9092;

/// A broker node and what outlives its restarts.
#[derive(Debug, Clone)]
pub struct BrokerNode {
    pub id: NodeId,
    pub name: String,
    pub address: String,
    pub disk: Arc<SimDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Something panicked: a violated invariant (an assertion) or a bug.
    Crash {
        reason: String,
    },
    /// After healing, the system did not catch up in time.
    Liveness {
        reason: String,
    },
    /// The checker found anomalies in the history.
    Correctness {
        anomalies: Vec<String>,
    },
}

impl Verdict {
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "pass"),
            Verdict::Crash { reason } => write!(f, "crash: {reason}"),
            Verdict::Liveness { reason } => write!(f, "liveness: {reason}"),
            Verdict::Correctness { anomalies } => {
                write!(
                    f,
                    "correctness: {} anomal{}",
                    anomalies.len(),
                    if anomalies.len() == 1 { "y" } else { "ies" }
                )?;
                for kind in anomalies.iter().take(3) {
                    write!(f, " [{kind}]")?;
                }
                Ok(())
            }
        }
    }
}

/// A planted bug: the broker's (`broker::planted::Bug`) or the control plane's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    Broker(broker::planted::Bug),
    Cluster(crate::cluster_world::ClusterBug),
}

impl Planted {
    pub fn name(self) -> &'static str {
        match self {
            Planted::Broker(bug) => bug.name(),
            Planted::Cluster(bug) => bug.name(),
        }
    }

    /// Every planted bug by name: the broker's, then the control plane's.
    pub fn from_name(name: &str) -> Option<Planted> {
        let broker = broker::planted::Bug::ALL.iter();
        broker
            .chain(broker::planted::Bug::REPLICATION)
            .find(|bug| bug.name() == name)
            .map(|bug| Planted::Broker(*bug))
            .or_else(|| crate::cluster_world::ClusterBug::from_name(name).map(Planted::Cluster))
    }
}

#[derive(Debug)]
pub struct RunResult {
    pub scenario: String,
    pub seed: u64,
    pub options: Options,
    pub verdict: Verdict,
    pub trace_hash: u64,
    pub trace_lines: Vec<String>,
    pub history: History,
    /// The cluster worlds' history (`Workload::ClusterMetadata`, `Workload::ClusterData`; empty
    /// otherwise).
    pub metadata: checker::metadata_log::MetadataHistory,
    pub report_text: String,
    pub simulated: Duration,
    /// How often the broker met and handled each kind of fault (`crate::sites`).
    pub sites: BTreeMap<String, u64>,
    /// Faults the disks injected, summed over brokers: read errors, bit flips, ENOSPC, failed
    /// syncs.
    pub disk_faults_injected: [u64; 4],
    /// Faults by name: crash kinds (`crash-process`, ...) and aimed-fault firings (`buggify-*`).
    pub fault_counts: std::collections::BTreeMap<String, u64>,
}

impl RunResult {
    pub fn summary(&self) -> String {
        let sends = self
            .history
            .events
            .iter()
            .filter(|e| e.kind == checker::EventKind::Ok && e.op.name() == "send")
            .count();
        let [read_errors, bitflips, nospace, sync_errors] = self.disk_faults_injected;
        format!(
            "scenario {} seed {}: {} events, {} acknowledged sends, {:.1} simulated s\noptions: {:?}\n\
             disk-faults: read-errors={read_errors} read-bitflips={bitflips} write-nospace={nospace} \
             sync-errors={sync_errors}\n\
             sites: {}\n{}",
            self.scenario,
            self.seed,
            self.history.events.len(),
            sends,
            self.simulated.as_secs_f64(),
            self.options,
            crate::sites::render(&self.sites),
            self.faults_line(),
        ) + &self.metadata_line()
    }

    /// The cluster world's tally (empty for other workloads): its events, admin operations
    /// acknowledged, and the final applied index.
    fn metadata_line(&self) -> String {
        use checker::metadata_log::MetaEventKind;
        if self.metadata.events.is_empty() && self.metadata.finals.is_empty() {
            return String::new();
        }
        let count = |pick: fn(&MetaEventKind) -> bool| {
            self.metadata
                .events
                .iter()
                .filter(|event| pick(&event.kind))
                .count()
        };
        let applied = self.metadata.finals.values().map(|node| node.applied).max();
        format!(
            "\nmetadata: {} events, admin ops invoked={} ok={} fail={} info={}, final applied {:?}",
            self.metadata.events.len(),
            count(|kind| matches!(kind, MetaEventKind::Invoke { .. })),
            count(|kind| matches!(kind, MetaEventKind::Ok { .. })),
            count(|kind| matches!(kind, MetaEventKind::Fail { .. })),
            count(|kind| matches!(kind, MetaEventKind::Info { .. })),
            applied,
        )
    }

    /// `faults: name=count ...`: which crash kinds and aimed faults this run saw. Sweeps add
    /// these lines up to show coverage.
    pub fn faults_line(&self) -> String {
        let counts: Vec<String> = self
            .fault_counts
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        format!("faults: {}", counts.join(" "))
    }
}

/// Runs one seed to a verdict, on a fresh thread. Panics inside the simulation become
/// `Verdict::Crash`.
///
/// Why a thread: std seeds each thread's HashMap keys from getrandom on first use, and madsim
/// serves getrandom from the simulation's rng, so the keys (and with them the iteration order of
/// maps inside madsim and our dependencies) are deterministic only if the thread's first map is
/// made inside the simulation. A thread that already made one (a test harness thread, an earlier
/// run) would replay the seed differently; the two-process determinism test caught this.
pub fn run(
    scenario: &str,
    mix: FaultMix,
    workload: Workload,
    seed: u64,
    trace_lines: bool,
    planted: Option<Planted>,
) -> RunResult {
    let scenario = scenario.to_string();
    #[allow(clippy::disallowed_methods)] // The reason is above; the simulation itself is seeded.
    let thread =
        std::thread::spawn(move || run_here(&scenario, mix, workload, seed, trace_lines, planted));
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn run_here(
    scenario: &str,
    mix: FaultMix,
    workload: Workload,
    seed: u64,
    trace_lines: bool,
    planted: Option<Planted>,
) -> RunResult {
    let options = Options::swarm(seed, mix, workload, &mut stream_rng(seed, Stream::Swarm, 0));
    // Counts the faults the broker meets, for the summary; logs as well when RUST_LOG asks.
    let sites = SiteCounts::default();
    // The filter is built on another thread: its hash maps would take this thread's std hash
    // keys from the OS before madsim seeds them, and a run with logs would not replay.
    #[allow(clippy::disallowed_methods)] // Not part of the simulation: only builds the filter.
    let log = std::env::var_os("RUST_LOG").is_some().then(|| {
        let filter = std::thread::spawn(tracing_subscriber::EnvFilter::from_default_env)
            .join()
            .expect("RUST_LOG is parsed");
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
    });
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(sites.layer()).with(log),
    );
    tracing::info!(?options, "swarm options");
    let mut config = madsim::Config::default();
    config.net.send_latency = options.network_latency.clone();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
    let recorder_slot: Arc<std::sync::Mutex<Option<Recorder>>> = Default::default();
    let slot = recorder_slot.clone();
    let disks: Arc<std::sync::Mutex<Vec<Arc<SimDisk>>>> = Default::default();
    let disks_slot = disks.clone();
    let simulation_options = options.clone();
    let metadata_slot: Arc<std::sync::Mutex<checker::metadata_log::MetadataHistory>> =
        Default::default();
    let metadata_shared = metadata_slot.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let recorder = Recorder::new(trace_lines);
            recorder.clock_skew_set(simulation_options.clock_skew_ms_max);
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(recorder.clone());
            let liveness = match (simulation_options.workload, planted) {
                (Workload::ClusterMetadata, planted) => {
                    let planted = match planted {
                        Some(Planted::Cluster(bug)) => Some(bug),
                        _ => None,
                    };
                    crate::cluster_world::simulate(
                        &simulation_options,
                        &recorder,
                        &disks_slot,
                        planted,
                        &metadata_shared,
                    )
                    .await
                }
                (
                    Workload::ClusterData | Workload::ClusterGroups | Workload::ClusterTxn,
                    planted,
                ) => {
                    crate::cluster_data::simulate(
                        &simulation_options,
                        &recorder,
                        &disks_slot,
                        planted,
                        &metadata_shared,
                    )
                    .await
                }
                (_, planted) => {
                    let planted = match planted {
                        Some(Planted::Broker(bug)) => Some(bug),
                        _ => None,
                    };
                    simulate(&simulation_options, &recorder, &disks_slot, planted).await
                }
            };
            (liveness, recorder.elapsed())
        })
    }));
    let recorder = recorder_slot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let (history, trace) = match &recorder {
        Some(recorder) => recorder.finish(),
        None => (History::default(), crate::trace::Trace::new(false)),
    };
    let fault_counts = recorder
        .map(|recorder| recorder.counts())
        .unwrap_or_default();
    let report = checker::check(&history);
    let metadata = std::mem::take(&mut *metadata_slot.lock().unwrap_or_else(|p| p.into_inner()));
    let metadata_anomalies = checker::metadata_log::check(&metadata);
    let mut report_text = report.render_text();
    for anomaly in &metadata_anomalies {
        report_text.push_str(&format!("{anomaly}\n"));
    }
    let disk_faults_injected = disks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|disk| disk.faults_injected())
        .fold([0; 4], |sum, one| {
            std::array::from_fn(|kind| sum[kind] + one[kind])
        });
    let (verdict, simulated) = match outcome {
        Err(panic) => (
            Verdict::Crash {
                reason: panic_message(&panic),
            },
            Duration::ZERO,
        ),
        Ok((Err(reason), simulated)) => (Verdict::Liveness { reason }, simulated),
        Ok((Ok(()), simulated)) if !metadata_anomalies.is_empty() => {
            let anomalies = metadata_anomalies
                .iter()
                .map(|anomaly| anomaly.kind().to_string())
                .collect();
            (Verdict::Correctness { anomalies }, simulated)
        }
        Ok((Ok(()), simulated)) if !report.is_valid() => {
            let anomalies = report
                .anomalies
                .iter()
                .map(|anomaly| anomaly.kind().to_string())
                .collect();
            (Verdict::Correctness { anomalies }, simulated)
        }
        Ok((Ok(()), simulated)) => (Verdict::Pass, simulated),
    };
    RunResult {
        scenario: scenario.to_string(),
        seed,
        options,
        verdict,
        trace_hash: trace.hash(),
        trace_lines: trace.lines().to_vec(),
        history,
        metadata,
        report_text,
        simulated,
        sites: sites.snapshot(),
        disk_faults_injected,
        fault_counts,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// The run itself, inside madsim. `Err` is a liveness failure.
async fn simulate(
    options: &Options,
    recorder: &Recorder,
    disks: &std::sync::Mutex<Vec<Arc<SimDisk>>>,
    planted: Option<broker::planted::Bug>,
) -> Result<(), String> {
    if let Some(bug) = planted {
        recorder.note(&format!("planted bug {}", bug.name()));
    }
    let brokers = brokers_start(options, planted);
    *disks.lock().unwrap_or_else(|p| p.into_inner()) =
        brokers.iter().map(|broker| broker.disk.clone()).collect();
    recorder.note(&format!("start {} broker(s)", brokers.len()));
    crate::buggify::install(options, &brokers, recorder);
    let bootstrap: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
    let transactions = options.workload == Workload::Transactions;
    match transactions {
        true => crate::txn_workload::topics_create(options, &bootstrap, recorder).await?,
        false => workload::topic_create(options, &bootstrap, recorder).await?,
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = match transactions {
        true => crate::txn_workload::start(options, &bootstrap, recorder, stop.clone()),
        false => workload::start(options, &bootstrap, recorder, stop.clone()),
    };
    let nemesis_rng = stream_rng(options.seed, Stream::Nemesis, 0);
    let nemesis = runtime::spawn(crate::nemesis::run(
        options.clone(),
        brokers.clone(),
        recorder.clone(),
        nemesis_rng,
        options.safety_duration,
    ));
    runtime::time::sleep(options.safety_duration).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = nemesis.await;
    recorder.note("safety phase over");
    crate::nemesis::heal(&brokers, recorder).await;
    for worker in workers {
        let _ = worker.await;
    }
    recorder.note("liveness phase");
    match transactions {
        true => crate::txn_workload::final_polls(options, &bootstrap, recorder).await,
        false => workload::final_polls(options, &bootstrap, recorder).await,
    }
}

fn brokers_start(options: &Options, planted: Option<broker::planted::Bug>) -> Vec<BrokerNode> {
    let handle = Handle::current();
    let mut skew_rng = stream_rng(options.seed, Stream::ClockSkew, 0);
    (1..=options.broker_count as i32)
        .map(|node_id| {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, node_id as u8));
            let address = format!("{ip}:{BROKER_PORT}");
            let disk = SimDisk::new(stream_rng(options.seed, Stream::Disk, node_id as u32));
            disk.faults_set(options.disk_faults);
            let skew = if options.clock_skew_ms_max > 0 {
                skew_rng.gen_range(-options.clock_skew_ms_max..=options.clock_skew_ms_max)
            } else {
                0
            };
            let mut config = BrokerConfig::zero_config();
            config.node_id = node_id;
            config.listen = address.clone();
            config.data_dir = "/data".into();
            config.retention_check_interval = options
                .log_policy
                .as_ref()
                .map_or(Duration::from_secs(5), |policy| policy.check_interval);
            config.planted = planted;
            let context = NodeContext {
                clock: Clock::with_wall_offset_ms(skew),
                disk: disk.clone(),
                seed: options.seed,
                cluster_hooks: Default::default(),
            };
            let name = format!("broker-{node_id}");
            // Each start is a new process, which in production draws a fresh seed from the OS:
            // member ids and topic ids must not repeat across restarts.
            let incarnations = Arc::new(std::sync::Mutex::new(stream_rng(
                options.seed,
                Stream::Incarnation,
                node_id as u32,
            )));
            let id = handle
                .create_node()
                .name(&name)
                .ip(ip)
                .init(move || {
                    let seed = incarnations
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .next_u64();
                    broker_main(
                        config.clone(),
                        NodeContext {
                            seed,
                            ..context.clone()
                        },
                    )
                })
                .build()
                .id();
            BrokerNode {
                id,
                name,
                address,
                disk,
            }
        })
        .collect()
}

/// A broker node's life: serve; if the data dir cannot be opened (an injected read error during
/// recovery) or the broker exits (`ClusterFailed`), restart it as an operator's supervisor would.
/// Each restart is a new process, which in production draws a fresh seed from the OS: a restart
/// that kept the seed kept the cluster node's incarnation id, so its controller calls' request
/// ids (node, incarnation, sequence from 0) met the previous process's in the controller's
/// table and got their answers: a producer-id block handed out twice, two producers with one
/// id, and dedup answering one producer's retry with the other's offset (single-crash 187,
/// inconsistent-offsets).
async fn broker_main(config: BrokerConfig, context: NodeContext) {
    let mut restarts = rand_chacha::ChaCha8Rng::seed_from_u64(context.seed);
    let mut seed = context.seed;
    loop {
        let context = NodeContext {
            seed,
            ..context.clone()
        };
        match broker::serve(config.clone(), context, std::future::pending()).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "broker failed to start; retrying");
                runtime::time::sleep(Duration::from_secs(1)).await;
                seed = restarts.next_u64();
            }
        }
    }
}
