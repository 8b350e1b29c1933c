//! The cluster world (`Workload::ClusterMetadata`, scenario `cluster-metadata`): 3 or 5 madsim
//! nodes, each with its own `SimDisk` and skewed clock, each running
//! `cluster::node::ClusterNode` (voter, controller and broker registration). Admin clients send
//! CreateTopics, DeleteTopics and CreatePartitions to random nodes; a nemesis crashes (every
//! kind), pauses, isolates (often the controller leader), splits the network majority/minority
//! and cuts one-way links; a minority of disks meet the seed's disk faults. Then heal, wait for
//! the cluster to settle, and hand `checker::metadata_log` what every node showed.
//!
//! The node is driven through `ClusterNode::start`, not `broker::serve`: the broker's cluster
//! mode is another branch's work; this world checks the control plane alone.
//!
//! Each node reports from inside itself (an observer task on its status and image watches), and
//! admin calls run inside the node they target (a request channel), so every byte they send
//! leaves from that node's address, as a broker's admin handler would.

use crate::disk::{CrashKind, DiskFaults, SimDisk};
use crate::options::{ClusterPolicy, Options};
use crate::recorder::Recorder;
use crate::world::BrokerNode;
use checker::metadata_log::{
    AdminOp, FinalNode, MetaEvent, MetaEventKind, MetadataHistory, TopicShape,
};
use cluster::controller::{PartitionsCreate, TopicCreate};
use cluster::image::MetadataImage;
use cluster::node::{
    BrokerEndpoint, ClusterConfig, ClusterError, ClusterHandle, ClusterNode, ClusterTiming,
};
use cluster::raft::Role;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::{Rng, RngCore};
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use runtime::sync::{mpsc, oneshot};
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
            ClusterBug::Raft(cluster::raft::RaftBug::SendBeforePersist) => "send-before-persist",
            ClusterBug::Raft(cluster::raft::RaftBug::ApplyUncommitted) => "apply-uncommitted",
            ClusterBug::Raft(cluster::raft::RaftBug::SnapshotWithoutIndex) => {
                "snapshot-without-index"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<ClusterBug> {
        ClusterBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the nodes and the admin clients write down, shared by every task of the run.
#[derive(Clone)]
pub struct MetaLog {
    recorder: Recorder,
    events: Arc<Mutex<Vec<MetaEvent>>>,
}

impl MetaLog {
    fn push(&self, node: i32, kind: MetaEventKind) {
        let time_ns = self.recorder.elapsed().as_nanos() as u64;
        lock(&self.events).push(MetaEvent {
            time_ns,
            node,
            kind,
        });
    }
}

enum AdminCall {
    Create(Vec<TopicCreate>),
    Delete(Vec<String>),
    Grow(Vec<PartitionsCreate>),
}

enum AdminReply {
    /// Answered: per-item error code (0: done), and the node's image right after.
    Done(Vec<i16>, BTreeMap<String, TopicShape>, u64),
    /// Refused as a whole: nothing happened.
    Refused,
    /// Timed out or the node stopped: it may have happened.
    Unknown(String),
}

struct AdminRequest {
    call: AdminCall,
    reply: oneshot::Sender<AdminReply>,
}

/// What the supervisor knows of each node's current incarnation.
#[derive(Default)]
struct Nodes {
    handles: BTreeMap<i32, ClusterHandle>,
    admins: BTreeMap<i32, mpsc::UnboundedSender<AdminRequest>>,
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
    let log = MetaLog {
        recorder: recorder.clone(),
        events: Default::default(),
    };
    let shared: Arc<Mutex<Nodes>> = Default::default();
    let nodes = nodes_start(options, &policy, planted, &log, &shared);
    *lock(disks) = nodes.iter().map(|node| node.disk.clone()).collect();
    recorder.note(&format!("start {} cluster node(s)", nodes.len()));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let known: Arc<Mutex<BTreeMap<String, u32>>> = Default::default();
    let admins: Vec<_> = (0..policy.admin_count)
        .map(|index| {
            runtime::spawn(admin_run(
                index,
                policy.clone(),
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
    // A node whose disk failed it (a read error, ENOSPC, a failed fsync) stops its metadata
    // log rather than trust it; an operator restarts it after the alert, as `heal` does for a
    // broker's failed fsync.
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
    let settled = settle(options, &shared, recorder).await;
    let finals = finals_read(&shared);
    let mut history = lock(history);
    history.events = std::mem::take(&mut *lock(&log.events));
    history.finals = finals;
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

fn nodes_start(
    options: &Options,
    policy: &ClusterPolicy,
    planted: Option<ClusterBug>,
    log: &MetaLog,
    shared: &Arc<Mutex<Nodes>>,
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
            let config = ClusterConfig {
                node_id,
                voters: voters.clone(),
                controller_listen: Some(voters[&node_id].clone()),
                dir: "/data/__cluster_metadata".into(),
                disk: disk.clone(),
                clock: Clock::with_wall_offset_ms(skew),
                seed: 0,
                broker: BrokerEndpoint {
                    host: ip(node_id).to_string(),
                    port: BROKER_PORT,
                },
                rack: None,
                timing: timing(policy),
                partitions_default: 1,
                replication_factor_default: 1,
                planted: match planted {
                    Some(ClusterBug::Controller(bug)) => Some(bug),
                    _ => None,
                },
                raft_planted: match planted {
                    Some(ClusterBug::Raft(bug)) => Some(bug),
                    _ => None,
                },
            };
            let name = format!("node-{node_id}");
            let incarnations = Arc::new(Mutex::new(stream_rng(
                options.seed,
                Stream::Incarnation,
                node_id as u32,
            )));
            let log = log.clone();
            let shared = shared.clone();
            let id = handle
                .create_node()
                .name(&name)
                .ip(ip(node_id))
                .init(move || {
                    let seed = lock(&incarnations).next_u64();
                    node_main(
                        ClusterConfig {
                            seed,
                            ..config.clone()
                        },
                        log.clone(),
                        shared.clone(),
                    )
                })
                .build()
                .id();
            BrokerNode {
                id,
                name,
                address: format!("{}:{BROKER_PORT}", ip(node_id)),
                disk,
            }
        })
        .collect()
}

/// One incarnation of a node: start (retrying, as a supervisor would, when the metadata log
/// cannot be opened), report, and serve admin calls.
async fn node_main(config: ClusterConfig, log: MetaLog, shared: Arc<Mutex<Nodes>>) {
    let node_id = config.node_id;
    log.push(node_id, MetaEventKind::Started);
    let handle = loop {
        match ClusterNode::start(config.clone()).await {
            Ok(handle) => break handle,
            Err(error) => {
                tracing::warn!(%error, "cluster node failed to start; retrying");
                runtime::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let (sender, mut requests) = mpsc::unbounded_channel();
    {
        let mut nodes = lock(&shared);
        nodes.handles.insert(node_id, handle.clone());
        nodes.admins.insert(node_id, sender);
    }
    runtime::spawn(observe(node_id, handle.clone(), log));
    while let Some(request) = requests.recv().await {
        runtime::spawn(admin_serve(handle.clone(), request));
    }
}

/// Reports every change of (term, leader) and of the applied image.
async fn observe(node_id: i32, handle: ClusterHandle, log: MetaLog) {
    let mut status = handle.status_watch();
    let mut image = handle.image_watch();
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
fn image_digest(image: &MetadataImage) -> u64 {
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

async fn admin_serve(handle: ClusterHandle, request: AdminRequest) {
    fn done<T>(results: Vec<(String, Result<T, cluster::controller::ApiError>)>) -> Vec<i16> {
        let code = |result: &Result<T, cluster::controller::ApiError>| match result {
            Ok(_) => 0,
            Err(error) => error.code,
        };
        results.iter().map(|(_, result)| code(result)).collect()
    }
    let answer = match request.call {
        AdminCall::Create(topics) => handle.create_topics(topics, false).await.map(done),
        AdminCall::Delete(names) => handle.delete_topics(names).await.map(done),
        AdminCall::Grow(grows) => handle.create_partitions(grows, false).await.map(done),
    };
    let reply = match answer {
        Ok(done) => {
            let image = handle.image();
            AdminReply::Done(done, image_topics(&image), image.offset())
        }
        Err(ClusterError::Refused(_)) => AdminReply::Refused,
        Err(error) => AdminReply::Unknown(error.to_string()),
    };
    let _ = request.reply.send(reply);
}

/// One admin client: one operation at a time at a random node, until `stop`.
async fn admin_run(
    index: usize,
    policy: ClusterPolicy,
    shared: Arc<Mutex<Nodes>>,
    log: MetaLog,
    known: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut rng: ChaCha8Rng,
) {
    let mut created = 0;
    let mut op_next = (index as u64) << 32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        runtime::time::sleep(policy.admin_interval.mul_f64(rng.gen_range(0.5..1.5))).await;
        let node_id = rng.gen_range(1..=policy.node_count as i32);
        let Some(sender) = lock(&shared).admins.get(&node_id).cloned() else {
            continue;
        };
        let names: Vec<(String, u32)> = lock(&known)
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect();
        let choice = rng.gen_range(0..10);
        let (call, admin) = match (choice, names.is_empty()) {
            (0..=4, _) | (_, true) => {
                created += 1;
                let name = format!("c{index}-{created}");
                let partitions = rng.gen_range(1..=3);
                let replication = rng.gen_range(1..=policy.node_count.min(3)) as i16;
                let create = TopicCreate {
                    name: name.clone(),
                    partition_count: partitions as i32,
                    replication_factor: replication,
                    configs: BTreeMap::new(),
                };
                (
                    AdminCall::Create(vec![create]),
                    AdminOp::CreateTopics(vec![(name, partitions)]),
                )
            }
            (5..=6, false) => {
                let (name, _) = names[rng.gen_range(0..names.len())].clone();
                (
                    AdminCall::Delete(vec![name.clone()]),
                    AdminOp::DeleteTopics(vec![name]),
                )
            }
            _ => {
                let (name, count) = names[rng.gen_range(0..names.len())].clone();
                let total = count + rng.gen_range(1..=2);
                let grow = PartitionsCreate {
                    name: name.clone(),
                    partition_count: total as i32,
                };
                (
                    AdminCall::Grow(vec![grow]),
                    AdminOp::CreatePartitions(vec![(name, total)]),
                )
            }
        };
        op_next += 1;
        let op = op_next;
        let (reply, answer) = oneshot::channel();
        log.push(
            node_id,
            MetaEventKind::Invoke {
                op,
                admin: admin.clone(),
            },
        );
        if sender.send(AdminRequest { call, reply }).is_err() {
            // The node's incarnation is gone: the call never left.
            log.push(node_id, MetaEventKind::Fail { op });
            continue;
        }
        let deadline = ClusterTiming::fast().request_timeout + Duration::from_secs(5);
        match runtime::time::timeout(deadline, answer).await {
            Ok(Ok(AdminReply::Done(codes, _, applied)))
                if codes.iter().any(|&code| ambiguous(&admin, code)) =>
            {
                // The node retries across leader changes: a retry of a call whose first try
                // committed meets its own effect (the topic already there, or already gone).
                // A Kafka client retrying meets the same; the outcome is unknown.
                log.recorder.count("admin-retry-ambiguous");
                log.recorder.note(&format!(
                    "admin {op} node-{node_id} {admin:?}: {codes:?} at {applied} (ambiguous)"
                ));
                log.push(node_id, MetaEventKind::Info { op });
            }
            Ok(Ok(AdminReply::Done(codes, topics, applied))) => {
                let done: Vec<bool> = codes.iter().map(|&code| code == 0).collect();
                {
                    let mut known = lock(&known);
                    let items: Vec<(String, u32)> = match &admin {
                        AdminOp::CreateTopics(items) | AdminOp::CreatePartitions(items) => {
                            items.clone()
                        }
                        AdminOp::DeleteTopics(names) => {
                            names.iter().map(|name| (name.clone(), 0)).collect()
                        }
                    };
                    for ((name, count), &done) in items.into_iter().zip(&done) {
                        match (&admin, done) {
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
                log.recorder.note(&format!(
                    "admin {op} node-{node_id} {admin:?}: ok {done:?} at {applied}"
                ));
                log.push(node_id, MetaEventKind::Ok { op, done });
                log.push(node_id, MetaEventKind::Image { applied, topics });
            }
            Ok(Ok(AdminReply::Refused)) => {
                log.recorder
                    .note(&format!("admin {op} node-{node_id} {admin:?}: refused"));
                log.push(node_id, MetaEventKind::Fail { op });
            }
            Ok(Ok(AdminReply::Unknown(reason))) => {
                log.recorder
                    .note(&format!("admin {op} node-{node_id} {admin:?}: {reason}"));
                log.push(node_id, MetaEventKind::Info { op });
            }
            // The node died with the call in flight, or never answered.
            Ok(Err(_)) | Err(_) => {
                log.recorder
                    .note(&format!("admin {op} node-{node_id} {admin:?}: no answer"));
                log.push(node_id, MetaEventKind::Info { op });
            }
        }
    }
}

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;

/// Whether an item's refusal may be a retry meeting the call's own first, committed, try.
fn ambiguous(admin: &AdminOp, code: i16) -> bool {
    match admin {
        AdminOp::CreateTopics(_) => code == TOPIC_ALREADY_EXISTS,
        AdminOp::DeleteTopics(_) => code == UNKNOWN_TOPIC_OR_PARTITION,
        AdminOp::CreatePartitions(_) => code == INVALID_PARTITIONS,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Crash,
    Pause,
    Isolate,
    IsolateOutbound,
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
fn leader_now(shared: &Mutex<Nodes>) -> Option<(i32, u64)> {
    let nodes = lock(shared);
    nodes
        .handles
        .iter()
        .filter(|(_, handle)| handle.status_watch().has_changed().is_ok())
        .map(|(_, handle)| handle.status())
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
        faults.push(Fault::Crash);
    }
    if options.pause {
        faults.push(Fault::Pause);
    }
    if options.network_partition {
        faults.extend([
            Fault::Isolate,
            Fault::IsolateOutbound,
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
        if matches!(fault, Fault::Isolate | Fault::IsolateOutbound)
            && rng.gen_bool(policy.split_rate)
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
            Fault::Crash => {
                let kind = CrashKind::ALL[rng.gen_range(0..CrashKind::ALL.len())];
                if let (false, Some((_, term))) = (aimed.is_empty(), leader) {
                    runtime::spawn(election_time(shared.clone(), recorder.clone(), term));
                }
                crate::nemesis::crash(
                    &handle, &recorder, node, kind, duration, "nemesis", &mut rng,
                )
                .await;
            }
            Fault::Pause => {
                recorder.note(&format!(
                    "nemesis pause {}{aimed} for={duration:?}",
                    node.name
                ));
                handle.pause(node.id);
                runtime::time::sleep(duration).await;
                handle.resume(node.id);
                recorder.note(&format!("nemesis resume {}", node.name));
            }
            Fault::Isolate | Fault::IsolateOutbound => {
                recorder.note(&format!(
                    "nemesis {fault:?} {}{aimed} for={duration:?}",
                    node.name
                ));
                match fault {
                    Fault::Isolate => net.clog_node(node.id),
                    _ => net.clog_node_out(node.id),
                }
                runtime::time::sleep(duration).await;
                net.unclog_node(node.id);
                recorder.note(&format!("nemesis heal-network {}", node.name));
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

/// Waits, up to the liveness deadline, until every node runs, all follow one leader in one
/// term, all applied the same index, and every node's image has every broker live.
async fn settle(options: &Options, shared: &Mutex<Nodes>, recorder: &Recorder) -> bool {
    let deadline = recorder.elapsed() + options.liveness_duration;
    let node_count = options.broker_count;
    while recorder.elapsed() < deadline {
        if settled(shared, node_count) {
            recorder.note(&format!("settled at {:?}", recorder.elapsed()));
            return true;
        }
        runtime::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn settled(shared: &Mutex<Nodes>, node_count: usize) -> bool {
    let finals = finals_read(shared);
    if finals.len() != node_count {
        return false;
    }
    let views: BTreeSet<(u64, Option<i32>, u64, u64)> = finals
        .values()
        .map(|node| (node.term, node.leader, node.applied, node.image_digest))
        .collect();
    let live = finals.values().all(|node| {
        node.brokers.len() == node_count && node.brokers.values().all(|fenced| !fenced)
    });
    views.len() == 1 && views.iter().all(|(_, leader, _, _)| leader.is_some()) && live
}

/// Every running node's state now.
fn finals_read(shared: &Mutex<Nodes>) -> BTreeMap<i32, FinalNode> {
    let nodes = lock(shared);
    nodes
        .handles
        .iter()
        .filter(|(_, handle)| handle.status_watch().has_changed().is_ok())
        .map(|(&node_id, handle)| {
            let status = handle.status();
            let image = handle.image();
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
            };
            (node_id, final_node)
        })
        .collect()
}
