//! The cluster world (`Workload::ClusterMetadata`, scenario `cluster-metadata`): 3 or 5 madsim
//! nodes, each with its own `SimDisk` and skewed clock, each running `broker::serve` in cluster
//! mode exactly as `gregor broker --voters ...` would (Raft voter, controller, registration, the
//! reconciler, Metadata and DescribeCluster from the image, controlled shutdown). A node whose
//! `serve` returns an error (the `ClusterFailed` exit after a failed metadata-log write, or a
//! failed start) exits and is restarted by its supervisor, as in production. Admin clients on
//! their own nodes speak the Kafka protocol through `client::Admin` (CreateTopics with
//! RF <= brokers, DeleteTopics, CreatePartitions) at random brokers; a nemesis crashes (every
//! kind), pauses, isolates (often the controller leader), splits the network majority/minority
//! and cuts one-way links; a minority of disks meet the seed's disk faults; in most crashing
//! seeds power losses are aimed at the moment a Raft batch is written and not yet synced
//! (`raft-written`). Then heal, wait for the cluster to settle, read every broker's Metadata and
//! DescribeCluster, and hand `checker::metadata_log` what every node showed.
//!
//! Each node reports from inside itself: `serve` hands its `ClusterHandle` to the observer hook
//! (`broker::cluster_mode::ClusterHooks`), which keeps only the node's watches (never a handle,
//! which would keep a stopped node's tasks alive) and spawns the task that reports every (term,
//! leader) and applied image.

use crate::disk::{CrashKind, DiskFaults, SimDisk};
use crate::nemesis::Action;
use crate::options::{ClusterPolicy, Options};
use crate::recorder::Recorder;
use crate::world::BrokerNode;
use broker::cluster_mode::ClusterHooks;
use broker::{BrokerConfig, NodeContext};
use checker::metadata_log::{
    AdminOp, FinalNode, FinalPartition, MetaEvent, MetaEventKind, MetadataHistory, Served,
    TopicShape,
};
use client::{Admin, ClientError, NewTopic};
use cluster::image::MetadataImage;
use cluster::node::{ClusterHandle, ClusterStatus, ClusterTiming};
use cluster::raft::Role;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::{Rng, RngCore};
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use runtime::sync::{mpsc, watch};
use runtime::Clock;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const BROKER_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;

/// A planted control-plane bug (features `planted-bugs`): the controller's or the Raft glue's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterBug {
    Controller(cluster::PlantedBug),
    Raft(cluster::raft::RaftBug),
}

impl ClusterBug {
    pub const ALL: [ClusterBug; 4] = [
        ClusterBug::Controller(cluster::PlantedBug::FencedBrokerLeads),
        ClusterBug::Raft(cluster::raft::RaftBug::SendBeforePersist),
        ClusterBug::Raft(cluster::raft::RaftBug::ApplyUncommitted),
        ClusterBug::Raft(cluster::raft::RaftBug::SnapshotWithoutIndex),
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClusterBug::Controller(cluster::PlantedBug::FencedBrokerLeads) => "fenced-broker-leads",
            ClusterBug::Controller(cluster::PlantedBug::ElectOutsideIsr) => "elect-outside-isr",
            ClusterBug::Raft(cluster::raft::RaftBug::SendBeforePersist) => "send-before-persist",
            ClusterBug::Raft(cluster::raft::RaftBug::ApplyUncommitted) => "apply-uncommitted",
            ClusterBug::Raft(cluster::raft::RaftBug::SnapshotWithoutIndex) => {
                "snapshot-without-index"
            }
        }
    }

    /// Issue 13's control-plane bug, hunted in the cluster data scenarios.
    pub const REPLICATION: [ClusterBug; 1] =
        [ClusterBug::Controller(cluster::PlantedBug::ElectOutsideIsr)];

    pub fn from_name(name: &str) -> Option<ClusterBug> {
        let all = ClusterBug::ALL.into_iter();
        all.chain(ClusterBug::REPLICATION)
            .find(|bug| bug.name() == name)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the nodes and the admin clients write down, shared by every task of the run.
#[derive(Clone)]
pub struct MetaLog {
    pub(crate) recorder: Recorder,
    pub(crate) events: Arc<Mutex<Vec<MetaEvent>>>,
}

impl MetaLog {
    pub(crate) fn new(recorder: &Recorder) -> MetaLog {
        MetaLog {
            recorder: recorder.clone(),
            events: Default::default(),
        }
    }

    fn push(&self, node: i32, kind: MetaEventKind) {
        let time_ns = self.recorder.elapsed().as_nanos() as u64;
        lock(&self.events).push(MetaEvent {
            time_ns,
            node,
            kind,
        });
    }
}

/// One node incarnation's watches, handed over by the observer hook. Only receivers: a handle
/// would keep the node's tasks running after its `serve` returned.
pub(crate) struct NodeView {
    pub(crate) status: watch::Receiver<ClusterStatus>,
    pub(crate) image: watch::Receiver<Arc<MetadataImage>>,
}

impl NodeView {
    /// Whether the incarnation still runs: its tasks hold the senders.
    pub(crate) fn alive(&self) -> bool {
        self.status.has_changed().is_ok()
    }
}

/// What the world knows of each node's current incarnation.
#[derive(Default)]
pub(crate) struct Nodes {
    pub(crate) views: BTreeMap<i32, NodeView>,
}

/// The run, inside madsim: fills `history` and answers `Err` when the world never settled.
pub async fn simulate(
    options: &Options,
    recorder: &Recorder,
    disks: &Mutex<Vec<Arc<SimDisk>>>,
    planted: Option<ClusterBug>,
    history: &Mutex<MetadataHistory>,
) -> Result<(), String> {
    let policy = options
        .cluster
        .clone()
        .expect("the cluster workload draws its policy");
    if let Some(bug) = planted {
        recorder.note(&format!("planted bug {}", bug.name()));
    }
    let log = MetaLog::new(recorder);
    let shared: Arc<Mutex<Nodes>> = Default::default();
    let (exits, exited) = mpsc::unbounded_channel();
    let nodes = nodes_start(options, &policy, planted, &log, &shared, exits, &|_| {});
    *lock(disks) = nodes.iter().map(|node| node.disk.clone()).collect();
    recorder.note(&format!("start {} cluster node(s)", nodes.len()));
    crate::buggify::install(options, &nodes, recorder);
    let supervisor_rng = stream_rng(options.seed, Stream::Nemesis, 2);
    runtime::spawn(supervise(
        nodes.clone(),
        recorder.clone(),
        exited,
        supervisor_rng,
    ));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let known: Arc<Mutex<BTreeMap<String, u32>>> = Default::default();
    let addresses: Vec<String> = nodes.iter().map(|node| node.address.clone()).collect();
    let handle = Handle::current();
    let admins: Vec<_> = (0..policy.admin_count)
        .map(|index| {
            let client = handle
                .create_node()
                .name(format!("admin-{}", index + 1))
                .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 4, index as u8 + 1)))
                .build();
            client.spawn(admin_run(
                index,
                options.clone(),
                addresses.clone(),
                shared.clone(),
                log.clone(),
                known.clone(),
                stop.clone(),
                stream_rng(options.seed, Stream::Workload, index as u32),
            ))
        })
        .collect();
    let nemesis = runtime::spawn(nemesis_run(
        options.clone(),
        policy.clone(),
        nodes.clone(),
        shared.clone(),
        recorder.clone(),
        stream_rng(options.seed, Stream::Nemesis, 0),
    ));
    runtime::time::sleep(options.safety_duration).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = nemesis.await;
    recorder.note("safety phase over");
    let net = NetSim::current();
    for a in &nodes {
        for b in &nodes {
            net.unclog_link(a.id, b.id);
        }
    }
    crate::nemesis::heal(&nodes, recorder).await;
    // A node whose disk failed it (a read error, ENOSPC, a failed fsync) may have stopped its
    // metadata log and exited, or hold partitions offline; an operator restarts it after the
    // alert, as `heal` does for a broker's failed fsync.
    let mut heal_rng = stream_rng(options.seed, Stream::Nemesis, 1);
    for node in &nodes {
        if node.disk.faults_injected().iter().sum::<u64>() > 0 && !node.disk.is_down() {
            let handle = Handle::current();
            let down = Duration::from_millis(100);
            let kind = CrashKind::Process;
            crate::nemesis::crash(&handle, recorder, node, kind, down, "heal", &mut heal_rng).await;
        }
    }
    for admin in admins {
        let _ = admin.await;
    }
    recorder.note("liveness phase");
    let expect = Expect::every_node(options.broker_count);
    let settled = settle(options, &shared, recorder, &expect).await;
    let served = serve_probe(options, &nodes, &expect.live, recorder).await;
    // Settled again (a restarted node may still be registering), and the finals read with no
    // await before the events are taken, so no event lands after the finals were read.
    let settled = settled && settle(options, &shared, recorder, &expect).await;
    let finals = finals_read(&shared);
    let mut history = lock(history);
    history.events = std::mem::take(&mut *lock(&log.events));
    history.finals = finals;
    history.served = served;
    if history.finals.len() != nodes.len() {
        return Err(format!(
            "after heal only nodes {:?} run",
            history.finals.keys().collect::<Vec<_>>()
        ));
    }
    match settled {
        true => Ok(()),
        // The checker's liveness rules say what is wrong; the trace says it never settled.
        false => {
            recorder.note("the cluster did not settle before the liveness deadline");
            Ok(())
        }
    }
}

fn timing(policy: &ClusterPolicy) -> ClusterTiming {
    ClusterTiming {
        snapshot_interval_entries: policy.snapshot_interval_entries,
        ..ClusterTiming::fast()
    }
}

/// Starts the nodes, each `gregor broker --voters ...` on its own disk and clock; `configure`
/// adds the world's own broker settings (the data world's replica timing and planted bug).
pub(crate) fn nodes_start(
    options: &Options,
    policy: &ClusterPolicy,
    planted: Option<ClusterBug>,
    log: &MetaLog,
    shared: &Arc<Mutex<Nodes>>,
    exits: mpsc::UnboundedSender<usize>,
    configure: &dyn Fn(&mut BrokerConfig),
) -> Vec<BrokerNode> {
    let handle = Handle::current();
    let mut skew_rng = stream_rng(options.seed, Stream::ClockSkew, 0);
    let ip = |node_id: i32| IpAddr::V4(Ipv4Addr::new(10, 0, 1, node_id as u8));
    let voters: BTreeMap<i32, String> = (1..=policy.node_count as i32)
        .map(|node_id| (node_id, format!("{}:{CONTROLLER_PORT}", ip(node_id))))
        .collect();
    (1..=policy.node_count as i32)
        .map(|node_id| {
            let disk = SimDisk::new(stream_rng(options.seed, Stream::Disk, node_id as u32));
            // Every disk has the seed's fsync latency; only a minority has its faults.
            match node_id as usize <= policy.disk_faulty_nodes {
                true => disk.faults_set(options.disk_faults),
                false => disk.faults_set(DiskFaults {
                    sync_delay_max: options.disk_faults.sync_delay_max,
                    ..DiskFaults::default()
                }),
            }
            let skew = match options.clock_skew_ms_max {
                0 => 0,
                max => skew_rng.gen_range(-max..=max),
            };
            // What `gregor broker --node-id N --voters ... --listen ... --data-dir /data` runs.
            let address = format!("{}:{BROKER_PORT}", ip(node_id));
            let mut config = BrokerConfig::zero_config();
            config.node_id = node_id;
            config.listen = address.clone();
            config.data_dir = "/data".into();
            config.voters = voters.clone();
            configure(&mut config);
            let observer_log = log.clone();
            let observer_shared = shared.clone();
            let observer = move |handle: &ClusterHandle| {
                let view = NodeView {
                    status: handle.status_watch(),
                    image: handle.image_watch(),
                };
                lock(&observer_shared).views.insert(node_id, view);
                let (status, image) = (handle.status_watch(), handle.image_watch());
                runtime::spawn(observe(node_id, status, image, observer_log.clone()));
            };
            let context = NodeContext {
                clock: Clock::with_wall_offset_ms(skew),
                disk: disk.clone(),
                seed: 0,
                cluster_hooks: ClusterHooks {
                    timing: Some(timing(policy)),
                    planted: match planted {
                        Some(ClusterBug::Controller(bug)) => Some(bug),
                        _ => None,
                    },
                    raft_planted: match planted {
                        Some(ClusterBug::Raft(bug)) => Some(bug),
                        _ => None,
                    },
                    observer: Some(Arc::new(observer)),
                },
            };
            let name = format!("node-{node_id}");
            // Each start is a new process, which in production draws a fresh seed from the OS.
            let incarnations = Arc::new(Mutex::new(stream_rng(
                options.seed,
                Stream::Incarnation,
                node_id as u32,
            )));
            let (log, exits) = (log.clone(), exits.clone());
            let index = node_id as usize - 1;
            let id = handle
                .create_node()
                .name(&name)
                .ip(ip(node_id))
                .init(move || {
                    let seed = lock(&incarnations).next_u64();
                    let context = NodeContext {
                        seed,
                        ..context.clone()
                    };
                    node_main(config.clone(), context, log.clone(), index, exits.clone())
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

/// One incarnation of a node: `broker::serve` in cluster mode. An error (a start that failed,
/// or the `ClusterFailed` exit after a failed metadata-log write) ends the process: its
/// supervisor restarts it.
async fn node_main(
    config: BrokerConfig,
    context: NodeContext,
    log: MetaLog,
    index: usize,
    exits: mpsc::UnboundedSender<usize>,
) {
    let node_id = config.node_id;
    log.push(node_id, MetaEventKind::Started);
    match broker::serve(config, context, std::future::pending()).await {
        Ok(()) => return,
        Err(error) => {
            tracing::warn!(%error, "broker exited; its supervisor restarts it");
            let _ = exits.send(index);
        }
    }
    // The process is gone; the supervisor kills what is left of it and starts it again.
    std::future::pending::<()>().await;
}

/// The nodes' supervisor: restarts a node whose broker exited, a second later, from its disk
/// (a process exit keeps the page cache).
pub(crate) async fn supervise(
    nodes: Vec<BrokerNode>,
    recorder: Recorder,
    mut exited: mpsc::UnboundedReceiver<usize>,
    mut rng: ChaCha8Rng,
) {
    while let Some(index) = exited.recv().await {
        let node = nodes[index].clone();
        let (recorder, mut rng) = (recorder.clone(), stream_rng(rng.gen(), Stream::Nemesis, 3));
        runtime::spawn(async move {
            let handle = Handle::current();
            let kind = CrashKind::Process;
            let down = Duration::from_secs(1);
            crate::nemesis::crash(&handle, &recorder, &node, kind, down, "exit", &mut rng).await;
        });
    }
}

/// Reports every change of (term, leader) and of the applied image.
async fn observe(
    node_id: i32,
    mut status: watch::Receiver<ClusterStatus>,
    mut image: watch::Receiver<Arc<MetadataImage>>,
    log: MetaLog,
) {
    let mut seen_status = None;
    let mut seen_offset = None;
    loop {
        let now = status.borrow_and_update().clone();
        if seen_status != Some((now.term, now.controller_leader)) {
            seen_status = Some((now.term, now.controller_leader));
            log.push(
                node_id,
                MetaEventKind::Status {
                    term: now.term,
                    leader: now.controller_leader,
                },
            );
        }
        let current = image.borrow_and_update().clone();
        if seen_offset != Some(current.offset()) {
            seen_offset = Some(current.offset());
            log.push(
                node_id,
                MetaEventKind::Applied {
                    index: current.offset(),
                    digest: image_digest(&current),
                },
            );
        }
        runtime::select! {
            biased;
            changed = status.changed() => if changed.is_err() { return },
            changed = image.changed() => if changed.is_err() { return },
        }
    }
}

/// FNV-1a of the image's snapshot encoding (deterministic: struct order, BTreeMaps).
pub(crate) fn image_digest(image: &MetadataImage) -> u64 {
    image
        .snapshot_encode()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn image_topics(image: &MetadataImage) -> BTreeMap<String, TopicShape> {
    image
        .topics()
        .map(|topic| {
            let shape = TopicShape {
                partitions: topic.partitions.len() as u32,
            };
            (topic.name.to_string(), shape)
        })
        .collect()
}

/// How an admin call ended, from the client's side.
enum AdminOutcome {
    /// Answered: per item, done or a refusal that says nothing happened. The broker's
    /// forwarder retries a controller call across leader changes with the same request id, and
    /// the controller answers a retry of a decided call with its first answer, so a refusal is
    /// never a retry meeting its own first try (the checker's `refused-but-done`).
    Answered(Vec<bool>),
    /// Timed out, connection lost, or an answer that does not say: it may have happened.
    Unknown(String),
}

/// Kafka's UNKNOWN_SERVER_ERROR, REQUEST_TIMED_OUT, NOT_CONTROLLER.
const UNKNOWN_SERVER_ERROR: i16 = -1;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_CONTROLLER: i16 = 41;

/// An item's answer: its Kafka code, or `None` when the error says nothing of the outcome.
fn item_code(result: &Result<(), ClientError>) -> Option<i16> {
    match result {
        Ok(()) => Some(0),
        Err(error) => error.kafka_error().map(|error| error.code()),
    }
}

/// Per-item codes to an outcome. The broker answers REQUEST_TIMED_OUT and NOT_CONTROLLER when
/// its call to the controller got no answer (which may still commit), so those are unknown too.
fn outcome_classify(codes: Vec<Option<i16>>) -> AdminOutcome {
    let unknown = |code: &Option<i16>| {
        matches!(
            code,
            None | Some(UNKNOWN_SERVER_ERROR | REQUEST_TIMED_OUT | NOT_CONTROLLER)
        )
    };
    if let Some(code) = codes.iter().find(|code| unknown(code)) {
        return AdminOutcome::Unknown(format!("code {code:?}"));
    }
    AdminOutcome::Answered(codes.iter().map(|&code| code == Some(0)).collect())
}

/// One admin call through the Kafka protocol at `address`. The client does not retry: a retry
/// of its own would meet its first try's effect just as the broker's does.
async fn admin_call(
    options: &Options,
    address: &str,
    admin_op: &AdminOp,
    replication: i16,
) -> AdminOutcome {
    let mut config = crate::workload::client_config(options, &[address.to_string()]);
    // Longer than the broker's own wait for the controller, so the broker's answer arrives.
    config.request_timeout = ClusterTiming::fast().request_timeout + Duration::from_secs(5);
    config.retries = 0;
    let mut admin = Admin::new(config);
    let codes: Result<Vec<Option<i16>>, ClientError> = match admin_op {
        AdminOp::CreateTopics(items) => {
            let topics = items
                .iter()
                .map(|(name, partitions)| NewTopic {
                    name: name.clone(),
                    partitions: *partitions as i32,
                    replication_factor: replication,
                    configs: BTreeMap::new(),
                })
                .collect();
            admin.create_topics(topics).await.map(|results| {
                items
                    .iter()
                    .map(|(name, _)| results.get(name).and_then(item_code))
                    .collect()
            })
        }
        AdminOp::DeleteTopics(names) => admin.delete_topics(names).await.map(|results| {
            names
                .iter()
                .map(|name| results.get(name).and_then(item_code))
                .collect()
        }),
        AdminOp::CreatePartitions(items) => {
            let mut codes = Vec::new();
            for (name, total) in items {
                let result = admin.create_partitions(name, *total as i32).await;
                codes.push(item_code(&result));
            }
            Ok(codes)
        }
    };
    match codes {
        Ok(codes) => outcome_classify(codes),
        Err(error) => AdminOutcome::Unknown(error.to_string()),
    }
}

/// One admin client, on its own node: one operation at a time, bootstrapped at a random
/// broker, until `stop`. `Admin` sends the call to the controller that broker's Metadata names
/// (any broker when it names none), as Kafka's admin client does, so which broker acknowledged
/// is unknown: no `Image` event follows an answer.
#[allow(clippy::too_many_arguments)]
async fn admin_run(
    index: usize,
    options: Options,
    addresses: Vec<String>,
    shared: Arc<Mutex<Nodes>>,
    log: MetaLog,
    known: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut rng: ChaCha8Rng,
) {
    let policy = options
        .cluster
        .clone()
        .expect("the cluster workload draws its policy");
    let mut created = 0;
    let mut op_next = (index as u64) << 32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        runtime::time::sleep(policy.admin_interval.mul_f64(rng.gen_range(0.5..1.5))).await;
        let node_id = rng.gen_range(1..=policy.node_count as i32);
        let address = &addresses[node_id as usize - 1];
        let names: Vec<(String, u32)> = lock(&known)
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect();
        let choice = rng.gen_range(0..10);
        let mut replication = 1;
        let admin = match (choice, names.is_empty()) {
            (0..=4, _) | (_, true) => {
                created += 1;
                let name = format!("c{index}-{created}");
                let partitions = rng.gen_range(1..=3);
                replication = rng.gen_range(1..=policy.node_count.min(3)) as i16;
                AdminOp::CreateTopics(vec![(name, partitions)])
            }
            (5..=6, false) => {
                let (name, _) = names[rng.gen_range(0..names.len())].clone();
                AdminOp::DeleteTopics(vec![name])
            }
            _ => {
                let (name, count) = names[rng.gen_range(0..names.len())].clone();
                let total = count + rng.gen_range(1..=2);
                AdminOp::CreatePartitions(vec![(name, total)])
            }
        };
        op_next += 1;
        let op = op_next;
        log.push(
            node_id,
            MetaEventKind::Invoke {
                op,
                admin: admin.clone(),
            },
        );
        // Beyond the client's own request timeout: a call that hangs is an unknown outcome.
        let deadline = ClusterTiming::fast().request_timeout * 3;
        let call = admin_call(&options, address, &admin, replication);
        let outcome = runtime::time::timeout(deadline, call)
            .await
            .unwrap_or_else(|_| AdminOutcome::Unknown("no answer".into()));
        match outcome {
            AdminOutcome::Unknown(reason) => {
                log.recorder
                    .note(&format!("admin {op} node-{node_id} {admin:?}: {reason}"));
                log.push(node_id, MetaEventKind::Info { op });
            }
            AdminOutcome::Answered(done) => {
                known_update(&mut lock(&known), &admin, &done);
                log.recorder
                    .note(&format!("admin {op} node-{node_id} {admin:?}: ok {done:?}"));
                log.push(
                    node_id,
                    MetaEventKind::Ok {
                        op,
                        done: done.clone(),
                    },
                );
                if let (AdminOp::CreateTopics(items), [true]) = (&admin, done.as_slice()) {
                    let name = items[0].0.clone();
                    runtime::spawn(propagation_time(shared.clone(), log.recorder.clone(), name));
                }
            }
        }
    }
}

/// The topics an admin client knows of, after an answered operation.
fn known_update(known: &mut BTreeMap<String, u32>, admin: &AdminOp, done: &[bool]) {
    let items: Vec<(String, u32)> = match admin {
        AdminOp::CreateTopics(items) | AdminOp::CreatePartitions(items) => items.clone(),
        AdminOp::DeleteTopics(names) => names.iter().map(|name| (name.clone(), 0)).collect(),
    };
    for ((name, count), &done) in items.into_iter().zip(done) {
        match (admin, done) {
            (AdminOp::DeleteTopics(_), true) => {
                known.remove(&name);
            }
            (_, true) => {
                known.insert(name, count);
            }
            (_, false) => {}
        }
    }
}

/// Notes how long after CreateTopics was acknowledged the topic is in every running node's
/// image (the propagation figure): `propagated {topic}: N ms`. Nothing when a node stays
/// without it for 10 s (down, paused or cut off), or the topic is gone again meanwhile.
async fn propagation_time(shared: Arc<Mutex<Nodes>>, recorder: Recorder, topic: String) {
    let start = recorder.elapsed();
    while recorder.elapsed() < start + Duration::from_secs(10) {
        let everywhere = lock(&shared)
            .views
            .values()
            .filter(|view| view.alive())
            .all(|view| view.image.borrow().topic_by_name(&topic).is_some());
        if everywhere {
            let took = recorder.elapsed() - start;
            recorder.note(&format!("propagated {topic}: {} ms", took.as_millis()));
            return;
        }
        runtime::time::sleep(Duration::from_millis(1)).await;
    }
}

/// After heal, every node's broker as a Kafka client sees it: its Metadata's topics
/// (`client::Admin`) and its DescribeCluster v2 with fenced brokers included (a raw request:
/// the client crate does not speak it). A broker that answers neither within a few tries is
/// recorded as not serving.
pub(crate) async fn serve_probe(
    options: &Options,
    nodes: &[BrokerNode],
    live: &BTreeSet<i32>,
    recorder: &Recorder,
) -> BTreeMap<i32, Option<Served>> {
    let probe = Handle::current()
        .create_node()
        .name("probe")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 6, 1)))
        .build();
    let mut served = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let node_id = index as i32 + 1;
        if !live.contains(&node_id) {
            continue;
        }
        let (options, address) = (options.clone(), node.address.clone());
        let answer = probe
            .spawn(async move {
                for _ in 0..PROBE_TRIES {
                    if let Ok(answer) = serve_read(&options, &address).await {
                        return Some(answer);
                    }
                    runtime::time::sleep(Duration::from_millis(500)).await;
                }
                None
            })
            .await
            .ok()
            .flatten();
        let text = match &answer {
            Some(answer) => format!(
                "{} topic(s), brokers {:?}",
                answer.topics.len(),
                answer.brokers
            ),
            None => "no answer".to_string(),
        };
        recorder.note(&format!("probe node-{node_id}: {text}"));
        served.insert(node_id, answer);
    }
    served
}

const PROBE_TRIES: usize = 10;

async fn serve_read(options: &Options, address: &str) -> Result<Served, String> {
    let mut config = crate::workload::client_config(options, &[address.to_string()]);
    config.retries = 0;
    let metadata = Admin::new(config)
        .describe_cluster()
        .await
        .map_err(|error| error.to_string())?;
    let topics = metadata
        .topics
        .values()
        // A replicated `__consumer_offsets` is in the image, and so is a replicated
        // `__transaction_state` (more than one replica); node-local internal topics are not.
        .filter(|topic| {
            let replicated = topic.partitions.iter().any(|p| p.replicas.len() > 1);
            let transaction_state = topic.name == broker::txn::TRANSACTION_STATE_TOPIC;
            !topic.is_internal
                || topic.name == broker::group::OFFSETS_TOPIC
                || (transaction_state && replicated)
        })
        .map(|topic| {
            let shape = TopicShape {
                partitions: topic.partitions.len() as u32,
            };
            (topic.name.clone(), shape)
        })
        .collect();
    let brokers = crate::cluster_probe::describe_cluster(address, options.request_timeout).await?;
    Ok(Served { topics, brokers })
}

/// The cluster nemesis's faults: the single-node nemesis's, and two of its own.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A crash, pause or isolation of one node (`nemesis::act`).
    Node(Action),
    /// A minority cut off from the majority, both ways.
    Split,
    /// One link cut in one direction.
    OneWay,
}

/// Notes how long after the leader of `term` crashed a leader of a later term is known (the
/// election-time figure): `election after leader crash: N ms`.
async fn election_time(shared: Arc<Mutex<Nodes>>, recorder: Recorder, term: u64) {
    let start = recorder.elapsed();
    while recorder.elapsed() < start + Duration::from_secs(30) {
        if let Some((_, now)) = leader_now(&shared) {
            if now > term {
                let took = recorder.elapsed() - start;
                recorder.note(&format!(
                    "election after leader crash: {} ms",
                    took.as_millis()
                ));
                return;
            }
        }
        runtime::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The running node that shows itself leading in the highest term, with that term.
pub(crate) fn leader_now(shared: &Mutex<Nodes>) -> Option<(i32, u64)> {
    let nodes = lock(shared);
    nodes
        .views
        .values()
        .filter(|view| view.alive())
        .map(|view| view.status.borrow().clone())
        .filter(|status| status.role == Role::Leader)
        .max_by_key(|status| status.term)
        .map(|status| (status.node_id, status.term))
}

async fn nemesis_run(
    options: Options,
    policy: ClusterPolicy,
    nodes: Vec<BrokerNode>,
    shared: Arc<Mutex<Nodes>>,
    recorder: Recorder,
    mut rng: ChaCha8Rng,
) {
    let Some(interval_mean) = options.nemesis_interval_mean else {
        return;
    };
    let mut faults = Vec::new();
    if options.crash {
        faults.push(Fault::Node(Action::Crash));
    }
    if options.pause {
        faults.push(Fault::Node(Action::Pause));
    }
    if options.network_partition {
        faults.extend([
            Fault::Node(Action::Isolate),
            Fault::Node(Action::IsolateOutbound),
            Fault::Split,
            Fault::OneWay,
        ]);
    }
    let handle = Handle::current();
    let net = NetSim::current();
    loop {
        let uniform: f64 = rng.gen_range(f64::EPSILON..1.0);
        let wait = interval_mean.mul_f64(-uniform.ln()).min(interval_mean * 5);
        runtime::time::sleep(wait).await;
        if recorder.elapsed() >= options.safety_duration {
            return;
        }
        let mut fault = faults[rng.gen_range(0..faults.len())];
        if matches!(
            fault,
            Fault::Node(Action::Isolate | Action::IsolateOutbound)
        ) && rng.gen_bool(policy.split_rate)
        {
            fault = Fault::Split;
        }
        let aim_leader = rng.gen_bool(policy.leader_aim_rate);
        let random = rng.gen_range(0..nodes.len());
        let leader = leader_now(&shared);
        let (target, aimed) = match (aim_leader, leader) {
            (true, Some((leader, _))) => ((leader - 1) as usize, " (leader)"),
            _ => (random, ""),
        };
        let node = &nodes[target];
        let duration = Duration::from_millis(rng.gen_range(10..4_000));
        match fault {
            Fault::Node(action) => {
                if let (Action::Crash, false, Some((_, term))) = (action, aimed.is_empty(), leader)
                {
                    runtime::spawn(election_time(shared.clone(), recorder.clone(), term));
                }
                crate::nemesis::act(&handle, &recorder, node, action, duration, aimed, &mut rng)
                    .await;
            }
            Fault::Split => {
                // The target and a random rest of a minority on one side.
                let minority = rng.gen_range(1..=(nodes.len() - 1) / 2);
                let mut side: BTreeSet<usize> = BTreeSet::from([target]);
                while side.len() < minority {
                    side.insert(rng.gen_range(0..nodes.len()));
                }
                let names: Vec<&str> = side.iter().map(|&i| nodes[i].name.as_str()).collect();
                recorder.note(&format!(
                    "nemesis split {names:?}{aimed} from the rest for={duration:?}"
                ));
                let cut = |clog: bool| {
                    for &inside in &side {
                        for outside in (0..nodes.len()).filter(|i| !side.contains(i)) {
                            let (a, b) = (nodes[inside].id, nodes[outside].id);
                            match clog {
                                true => {
                                    net.clog_link(a, b);
                                    net.clog_link(b, a);
                                }
                                false => {
                                    net.unclog_link(a, b);
                                    net.unclog_link(b, a);
                                }
                            }
                        }
                    }
                };
                cut(true);
                runtime::time::sleep(duration).await;
                cut(false);
                recorder.note("nemesis heal-split");
            }
            Fault::OneWay => {
                let other = (target + rng.gen_range(1..nodes.len())) % nodes.len();
                let (from, to) = match rng.gen_bool(0.5) {
                    true => (node, &nodes[other]),
                    false => (&nodes[other], node),
                };
                recorder.note(&format!(
                    "nemesis one-way {} -/-> {}{aimed} for={duration:?}",
                    from.name, to.name
                ));
                net.clog_link(from.id, to.id);
                runtime::time::sleep(duration).await;
                net.unclog_link(from.id, to.id);
                recorder.note("nemesis heal-one-way");
            }
        }
    }
}

/// What a settled cluster looks like.
pub(crate) struct Expect {
    /// The nodes that run (all but one dead for good).
    pub(crate) live: BTreeSet<i32>,
    /// Every partition led by a live node, with every live replica in its ISR (the replicated
    /// data world).
    pub(crate) partitions: bool,
}

impl Expect {
    pub(crate) fn every_node(node_count: usize) -> Expect {
        Expect {
            live: (1..=node_count as i32).collect(),
            partitions: false,
        }
    }
}

/// Waits, up to the liveness deadline, until every live node runs, all follow one leader in
/// one term, all applied the same index, every node's image has every live broker unfenced,
/// and (when expected) every partition is whole.
pub(crate) async fn settle(
    options: &Options,
    shared: &Mutex<Nodes>,
    recorder: &Recorder,
    expect: &Expect,
) -> bool {
    let deadline = recorder.elapsed() + options.liveness_duration;
    while recorder.elapsed() < deadline {
        if settled(shared, expect) {
            recorder.note(&format!("settled at {:?}", recorder.elapsed()));
            return true;
        }
        runtime::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn settled(shared: &Mutex<Nodes>, expect: &Expect) -> bool {
    let finals = finals_read(shared);
    if !finals.keys().eq(expect.live.iter()) {
        return false;
    }
    // Each broker's current incarnation registered, unfenced, in every image: a node restarted
    // at heal may still show its previous registration, unfenced, until its new one lands.
    let epochs: BTreeMap<i32, Option<i64>> = {
        let nodes = lock(shared);
        let status = |view: &NodeView| view.status.borrow().clone();
        nodes
            .views
            .iter()
            .filter(|(node_id, _)| expect.live.contains(node_id))
            .map(|(&node_id, view)| (node_id, Some(status(view)).filter(|s| !s.fenced)))
            .map(|(node_id, status)| (node_id, status.and_then(|s| s.broker_epoch)))
            .collect()
    };
    let current = lock(shared)
        .views
        .values()
        .filter(|view| view.alive())
        .all(|view| {
            let image = view.image.borrow();
            epochs.iter().all(|(&node_id, epoch)| {
                epoch.is_some() && image.broker(node_id).map(|b| b.broker_epoch) == *epoch
            })
        });
    if !current {
        return false;
    }
    let views: BTreeSet<(u64, Option<i32>, u64, u64)> = finals
        .values()
        .map(|node| (node.term, node.leader, node.applied, node.image_digest))
        .collect();
    let live = finals.values().all(|node| {
        let unfenced = |node_id: &i32| node.brokers.get(node_id) == Some(&false);
        expect.live.iter().all(unfenced)
    });
    let whole = !expect.partitions || finals.values().all(|node| partitions_whole(node, expect));
    views.len() == 1 && views.iter().all(|(_, leader, _, _)| leader.is_some()) && live && whole
}

/// Every partition with a live replica is led by a live node and has every live replica in
/// its ISR (what `checker::metadata_log`'s replication rules ask after heal).
fn partitions_whole(node: &FinalNode, expect: &Expect) -> bool {
    let live = |node_id: &i32| expect.live.contains(node_id);
    node.partitions.values().flatten().all(|partition| {
        !partition.replicas.iter().any(live)
            || (partition.leader.as_ref().is_some_and(live)
                && partition
                    .replicas
                    .iter()
                    .filter(|replica| live(replica))
                    .all(|replica| partition.isr.contains(replica)))
    })
}

/// Every running node's state now.
pub(crate) fn finals_read(shared: &Mutex<Nodes>) -> BTreeMap<i32, FinalNode> {
    let nodes = lock(shared);
    nodes
        .views
        .iter()
        .filter(|(_, view)| view.alive())
        .map(|(&node_id, view)| {
            let status = view.status.borrow().clone();
            let image = view.image.borrow().clone();
            let final_node = FinalNode {
                term: status.term,
                leader: status.controller_leader,
                applied: image.offset(),
                image_digest: image_digest(&image),
                topics: image_topics(&image),
                brokers: image
                    .brokers()
                    .map(|broker| (broker.broker_id, broker.fenced))
                    .collect(),
                partitions: image_partitions(&image),
            };
            (node_id, final_node)
        })
        .collect()
}

fn image_partitions(image: &MetadataImage) -> BTreeMap<String, Vec<FinalPartition>> {
    image
        .topics()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| FinalPartition {
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    leader: partition.leader(),
                })
                .collect();
            (topic.name.to_string(), partitions)
        })
        .collect()
}
