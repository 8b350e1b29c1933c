//! The replicated data world (`Workload::ClusterData`, scenarios `cluster-crash`,
//! `cluster-partition`, `cluster-chaos`; with a consumer group, `Workload::ClusterGroups`,
//! scenario `cluster-groups`, where the nemesis aims at the group's coordinator: the leader of
//! its partition of the replicated `__consumer_offsets`; with `txn_workload`'s transactions,
//! `Workload::ClusterTxn`, scenario `cluster-txn`, where it aims at the transaction coordinators:
//! the leaders of the transactional ids' partitions of `__transaction_state`, or the data
//! partitions' leaders while that topic is not in the image): the cluster world's 3 or 5 nodes in cluster mode
//! (`cluster_world::nodes_start`, every node a voter and a broker), one topic with
//! `ReplicationPolicy::replication_factor` replicas and `min.insync.replicas` 2, and the data
//! workload (`workload`: acks=all producers, consumers of every partition, the final polls)
//! bootstrapped at every node. The recorder's history goes to the data checker, what the nodes
//! showed to `checker::metadata_log`, whose replication rules (`partition-offline`,
//! `isr-not-full`) judge the final images.
//!
//! The nemesis aims at partition leaders as the images name them: crashes of every kind; a
//! leader cut off from its followers, from the controller, or from the clients only; one-way
//! links; a link flapping every 100-300 ms; pauses and isolation; and power losses of the whole
//! cluster at once, half of them right after some node acknowledged a produce. In some seeds
//! one node dies for good midway (never restarted): its replicas are excused after heal, and the
//! rest must still take acks=all writes. After heal, the world waits until every partition has a
//! live leader and a full ISR, then writes once more to every partition (acks=all, each must be
//! acknowledged within the liveness deadline), reads everything back, and reads every live
//! replica's copy below its high watermark (Fetch with replica id -2) for `replicas-differ`.

use crate::cluster_world::{self, lock, Expect, MetaLog, Nodes};
use crate::disk::{CrashKind, SimDisk};
use crate::nemesis::Action;
use crate::options::{Options, ReplicationPolicy, Workload};
use crate::recorder::Recorder;
use crate::txn_workload::{TxnIds, TOPIC_INPUT, TOPIC_OUTPUT, TOPIC_SECOND};
use crate::workload::{self, VALUES_PER_PROCESS};
use crate::world::{BrokerNode, Planted, TOPIC};
use broker::group::coordinator::partition_for;
use broker::group::OFFSETS_TOPIC;
use broker::txn::TRANSACTION_STATE_TOPIC;
use broker::BrokerConfig;
use bytes::Bytes;
use checker::metadata_log::{MetadataHistory, ReplicaRead};
use checker::{EventKind, MicroOp, Op, Partition};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use rand::Rng;
use runtime::buggify::Site;
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use runtime::sync::mpsc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The process id of the liveness phase's writer (producers are 1.., consumers 100.., the final
/// reader 1000).
const FINAL_WRITER_PROCESS: u64 = 900;

/// The run, inside madsim: fills `history` (and the recorder's) and answers `Err` when the
/// world did not come back after heal.
pub async fn simulate(
    options: &Options,
    recorder: &Recorder,
    disks: &Mutex<Vec<Arc<SimDisk>>>,
    planted: Option<Planted>,
    history: &Mutex<MetadataHistory>,
) -> Result<(), String> {
    let policy = options
        .cluster
        .clone()
        .expect("the cluster data workload draws its cluster policy");
    let replication = options
        .replication
        .clone()
        .expect("the cluster data workload draws its replication policy");
    if let Some(bug) = planted {
        recorder.note(&format!("planted bug {}", bug.name()));
    }
    recorder.note(&format!(
        "replication factor {}, min.insync.replicas {}",
        replication.replication_factor, replication.min_insync
    ));
    let (cluster_bug, broker_bug) = match planted {
        Some(Planted::Cluster(bug)) => (Some(bug), None),
        Some(Planted::Broker(bug)) => (None, Some(bug)),
        None => (None, None),
    };
    let log = MetaLog::new(recorder);
    let shared: Arc<Mutex<Nodes>> = Default::default();
    let (exits, exited) = mpsc::unbounded_channel();
    let configure = |config: &mut BrokerConfig| {
        config.planted = broker_bug;
        config.replica.lag_time_max = replication.lag_time_max;
        config.replica.fetch_wait_max = replication.fetch_wait_max;
    };
    let nodes = cluster_world::nodes_start(
        options,
        &policy,
        cluster_bug,
        &log,
        &shared,
        exits,
        &configure,
    );
    *lock(disks) = nodes.iter().map(|node| node.disk.clone()).collect();
    recorder.note(&format!("start {} cluster node(s)", nodes.len()));
    crate::buggify::install(options, &nodes, recorder);
    let supervisor_rng = stream_rng(options.seed, Stream::Nemesis, 2);
    runtime::spawn(cluster_world::supervise(
        nodes.clone(),
        recorder.clone(),
        exited,
        supervisor_rng,
    ));

    let bootstrap: Vec<String> = nodes.iter().map(|node| node.address.clone()).collect();
    let transactions = options.workload == Workload::ClusterTxn;
    let stop = Arc::new(AtomicBool::new(false));
    let (workers, clients, txn_ids) = match transactions {
        true => {
            crate::txn_workload::topics_create(options, &bootstrap, recorder).await?;
            crate::txn_workload::start_clients(options, &bootstrap, recorder, stop.clone())
        }
        false => {
            workload::topic_create(options, &bootstrap, recorder).await?;
            let (workers, clients) =
                workload::start_clients(options, &bootstrap, recorder, stop.clone());
            (workers, clients, TxnIds::default())
        }
    };
    let world = World {
        options: options.clone(),
        replication: replication.clone(),
        nodes: nodes.clone(),
        clients: clients.clone(),
        shared: shared.clone(),
        recorder: recorder.clone(),
        txn_ids,
        hold: Default::default(),
        busy: Default::default(),
    };
    let nemesis = runtime::spawn(nemesis_run(
        world.clone(),
        stream_rng(options.seed, Stream::Nemesis, 0),
    ));
    let dead = runtime::spawn(dead_for_good(
        world.clone(),
        stream_rng(options.seed, Stream::Nemesis, 4),
    ));
    runtime::time::sleep(options.safety_duration).await;
    stop.store(true, Ordering::SeqCst);
    let _ = nemesis.await;
    let dead = dead.await.ok().flatten();
    recorder.note("safety phase over");
    let net = NetSim::current();
    let everyone: Vec<NodeId> = nodes.iter().map(|node| node.id).chain(clients).collect();
    for &a in &everyone {
        for &b in &everyone {
            net.unclog_link(a, b);
        }
    }
    crate::nemesis::heal(&nodes, recorder).await;
    // As in the metadata world: an operator restarts a node whose disk failed it.
    let mut heal_rng = stream_rng(options.seed, Stream::Nemesis, 1);
    for node in &nodes {
        if node.disk.faults_injected().iter().sum::<u64>() > 0 && !node.disk.is_down() {
            let handle = Handle::current();
            let down = Duration::from_millis(100);
            let kind = CrashKind::Process;
            crate::nemesis::crash(&handle, recorder, node, kind, down, "heal", &mut heal_rng).await;
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
    recorder.note("liveness phase");
    let expect = Expect {
        live: (1..=nodes.len() as i32)
            .filter(|&node_id| Some(node_id) != dead)
            .collect(),
        partitions: true,
    };
    let settled = cluster_world::settle(options, &shared, recorder, &expect).await;
    let mut outcome = final_writes(options, &bootstrap, recorder).await;
    if outcome.is_ok() {
        // Transactions: every one decided (each partition's last stable offset reaches its high
        // watermark, which needs the markers on every partition's leader), then everything read
        // committed.
        outcome = match transactions {
            true => crate::txn_workload::final_polls(options, &bootstrap, recorder).await,
            false => workload::final_polls(options, &bootstrap, recorder).await,
        };
    }
    let reads = replica_reads(options, &nodes, &shared, &expect, recorder).await;
    let served = cluster_world::serve_probe(options, &nodes, &expect.live, recorder).await;
    // Settled again, and the finals read with no await before the events are taken.
    let settled = settled && cluster_world::settle(options, &shared, recorder, &expect).await;
    for (index, node) in nodes.iter().enumerate() {
        if expect.live.contains(&(index as i32 + 1)) {
            recorder.note(&format!(
                "final disk of {}: {}",
                node.name,
                topic_files(node)
            ));
        }
    }
    let finals = cluster_world::finals_read(&shared);
    let mut history = lock(history);
    history.events = std::mem::take(&mut *lock(&log.events));
    history.finals = finals;
    history.served = served;
    history.partitions_checked = true;
    history.replica_reads = reads;
    if !history.finals.keys().eq(expect.live.iter()) {
        return Err(format!(
            "after heal only nodes {:?} run, not {:?}",
            history.finals.keys().collect::<Vec<_>>(),
            expect.live
        ));
    }
    if !settled {
        // The checker's liveness and replication rules say what is wrong.
        recorder.note("the cluster did not settle before the liveness deadline");
    }
    outcome
}

/// The workload topic's files on `node`'s disk and their sizes: with the final images, what
/// says which replica lags (an `isr-not-full` or a stalled partition).
fn topic_files(node: &BrokerNode) -> String {
    let files = node.disk.true_bytes().files();
    let topic = files.into_iter().filter(|(path, _)| {
        path.to_string_lossy()
            .starts_with(&format!("/data/{TOPIC}-"))
    });
    let sizes: Vec<String> = topic
        .map(|(path, len)| format!("{}={len}", path.display()))
        .collect();
    sizes.join(" ")
}

/// What every fault task of the run needs.
#[derive(Clone)]
struct World {
    options: Options,
    replication: ReplicationPolicy,
    nodes: Vec<BrokerNode>,
    /// The producers' and consumers' nodes.
    clients: Vec<NodeId>,
    shared: Arc<Mutex<Nodes>>,
    recorder: Recorder,
    /// The transactional ids in use (`Workload::ClusterTxn`; empty otherwise).
    txn_ids: TxnIds,
    /// Set while a node is dying for good: the nemesis starts no fault.
    hold: Arc<AtomicBool>,
    /// Set while the nemesis carries out a fault.
    busy: Arc<AtomicBool>,
}

impl World {
    fn node_id(&self, index: usize) -> i32 {
        index as i32 + 1
    }

    /// Indices of the nodes that have not died for good.
    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| !self.nodes[index].disk.is_retired())
            .collect()
    }
}

/// One partition as the newest running image shows it.
#[derive(Debug, Clone)]
struct PartitionView {
    topic: String,
    index: usize,
    leader: Option<i32>,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

/// The partitions the nemesis aims at in the newest image any running node holds: the
/// workload topic's; in `cluster-groups` the group's partition of `__consumer_offsets` (whose
/// leader is the group's coordinator); in `cluster-txn` the partitions of `__transaction_state`
/// that own the transactional ids in use (whose leaders are their coordinators), or while that
/// topic is not in the image (a lone voter's is node-local) every transactional topic's.
fn partitions_aimed(world: &World) -> Vec<PartitionView> {
    let shared = &world.shared;
    match world.options.workload {
        Workload::ClusterGroups => {
            let group = [crate::group_workload::GROUP.to_string()];
            let owning = partitions_owning(shared, OFFSETS_TOPIC, &group);
            match owning.is_empty() {
                true => partitions_now(shared),
                false => owning,
            }
        }
        Workload::ClusterTxn => {
            let ids: Vec<String> = lock(&world.txn_ids).values().cloned().collect();
            let owning = partitions_owning(shared, TRANSACTION_STATE_TOPIC, &ids);
            if !owning.is_empty() {
                return owning;
            }
            [TOPIC, TOPIC_SECOND, TOPIC_INPUT, TOPIC_OUTPUT]
                .into_iter()
                .flat_map(|topic| partitions_of(shared, topic))
                .collect()
        }
        _ => partitions_now(shared),
    }
}

/// The partitions of the internal `topic` that own `keys` (Kafka's `partitionFor`: Java's
/// hashCode of the key modulo the partition count); none while the topic is not in the image.
fn partitions_owning(shared: &Mutex<Nodes>, topic: &str, keys: &[String]) -> Vec<PartitionView> {
    let partitions = partitions_of(shared, topic);
    if partitions.is_empty() {
        return partitions;
    }
    let count = i32::try_from(partitions.len()).expect("partition count fits i32");
    let owned: Vec<usize> = keys
        .iter()
        .map(|key| partition_for(key, count) as usize)
        .collect();
    partitions
        .into_iter()
        .filter(|partition| owned.contains(&partition.index))
        .collect()
}

/// The workload topic's partitions in the newest image any running node holds.
fn partitions_now(shared: &Mutex<Nodes>) -> Vec<PartitionView> {
    partitions_of(shared, TOPIC)
}

/// Every topic's partitions in the newest image any running node holds: a node may die for
/// good only once all of them have full ISRs, `__consumer_offsets`'s too, or it may leave one
/// with itself its last ISR member (cluster-groups 3342524751).
fn partitions_all(shared: &Mutex<Nodes>) -> Vec<PartitionView> {
    let Some(image) = newest_image(shared) else {
        return Vec::new();
    };
    image
        .topics()
        .flat_map(|topic| partition_views(topic.name, topic.partitions))
        .collect()
}

/// `topic`'s partitions in the newest image any running node holds.
fn partitions_of(shared: &Mutex<Nodes>, topic: &str) -> Vec<PartitionView> {
    let Some(image) = newest_image(shared) else {
        return Vec::new();
    };
    image
        .topic_by_name(topic)
        .map(|image| partition_views(topic, &image.partitions))
        .unwrap_or_default()
}

fn partition_views(
    topic: &str,
    partitions: &[cluster::image::PartitionImage],
) -> Vec<PartitionView> {
    partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| PartitionView {
            topic: topic.to_string(),
            index,
            leader: partition.leader(),
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
        })
        .collect()
}

/// The newest image any running node holds.
fn newest_image(shared: &Mutex<Nodes>) -> Option<Arc<cluster::image::MetadataImage>> {
    let nodes = lock(shared);
    nodes
        .views
        .values()
        .filter(|view| view.alive())
        .map(|view| view.image.borrow().clone())
        .max_by_key(|image| image.offset())
}

/// The data world's faults; each ends what it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A crash, pause or isolation of one node (`nemesis::act`).
    Node(Action),
    /// Every node loses power at once.
    PowerAll,
    /// The target cut off, both ways, from the other replicas of a partition it leads (from every
    /// other node when it has none).
    CutFollowers,
    /// The target cut off, both ways, from the controller (from the other voters when it is the
    /// controller).
    CutController,
    /// The target cut off, both ways, from the producers and consumers only.
    CutClients,
    /// One link between the target and another node cut in one direction.
    OneWay,
    /// A link between the target and another node cut and restored every 100-300 ms.
    Flap,
}

impl Fault {
    /// The fault's count in the run's summary (`nemesis::crash` counts crashes by kind).
    fn name(self) -> Option<&'static str> {
        match self {
            Fault::Node(_) | Fault::PowerAll => None,
            Fault::CutFollowers => Some("cut-followers"),
            Fault::CutController => Some("cut-controller"),
            Fault::CutClients => Some("cut-clients"),
            Fault::OneWay => Some("one-way"),
            Fault::Flap => Some("flap"),
        }
    }
}

fn faults(options: &Options) -> Vec<Fault> {
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
            Fault::CutFollowers,
            Fault::CutController,
            Fault::CutClients,
            Fault::OneWay,
            Fault::Flap,
        ]);
    }
    faults
}

async fn nemesis_run(world: World, mut rng: ChaCha8Rng) {
    let Some(interval_mean) = world.options.nemesis_interval_mean else {
        return;
    };
    let faults = faults(&world.options);
    assert!(!faults.is_empty(), "a nemesis interval implies some fault");
    let handle = Handle::current();
    let recorder = &world.recorder;
    loop {
        let uniform: f64 = rng.gen_range(f64::EPSILON..1.0);
        let wait = interval_mean.mul_f64(-uniform.ln()).min(interval_mean * 5);
        runtime::time::sleep(wait).await;
        if recorder.elapsed() >= world.options.safety_duration {
            return;
        }
        let fault = faults[rng.gen_range(0..faults.len())];
        if world.hold.load(Ordering::SeqCst) {
            recorder.note("nemesis holds: a node is dying for good");
            continue;
        }
        world.busy.store(true, Ordering::SeqCst);
        nemesis_fault(&world, fault, &mut rng, &handle).await;
        world.busy.store(false, Ordering::SeqCst);
    }
}

async fn nemesis_fault(world: &World, mut fault: Fault, rng: &mut ChaCha8Rng, handle: &Handle) {
    let recorder = &world.recorder;
    {
        if fault == Fault::Node(Action::Crash)
            && rng.gen_bool(world.replication.whole_cluster_power_loss_rate)
        {
            fault = Fault::PowerAll;
        }
        let aim = rng.gen_bool(world.replication.leader_aim_rate);
        let alive = world.alive();
        let random = alive[rng.gen_range(0..alive.len())];
        let partitions = partitions_aimed(world);
        let led: Vec<&PartitionView> = partitions
            .iter()
            .filter(|partition| {
                partition
                    .leader
                    .is_some_and(|leader| alive.contains(&(leader as usize - 1)))
            })
            .collect();
        let (target, aimed) = match (aim, led.is_empty()) {
            (true, false) => {
                let partition = led[rng.gen_range(0..led.len())];
                let leader = partition.leader.expect("filtered on a leader") as usize - 1;
                let topic = &partition.topic;
                (leader, format!(" (leader of {topic}-{})", partition.index))
            }
            _ => (random, String::new()),
        };
        let duration = Duration::from_millis(rng.gen_range(10..4_000));
        let node = &world.nodes[target];
        let target_id = world.node_id(target);
        let others: Vec<usize> = alive.iter().copied().filter(|&i| i != target).collect();
        if let Some(name) = fault.name() {
            recorder.count(name);
        }
        match fault {
            Fault::Node(action) => {
                crate::nemesis::act(handle, recorder, node, action, duration, &aimed, rng).await;
            }
            Fault::PowerAll => power_all(world, rng).await,
            Fault::CutFollowers => {
                let followers: Vec<usize> = partitions
                    .iter()
                    .find(|partition| partition.leader == Some(target_id))
                    .map(|partition| {
                        let replicas = partition.replicas.iter();
                        let others = replicas.filter(|&&replica| replica != target_id);
                        others.map(|&replica| replica as usize - 1).collect()
                    })
                    .filter(|followers: &Vec<usize>| !followers.is_empty())
                    .unwrap_or_else(|| others.clone());
                let peers: Vec<NodeId> = followers.iter().map(|&i| world.nodes[i].id).collect();
                let names = names(world, &followers);
                let what = format!("{}{aimed} from its followers {names:?}", node.name);
                cut(world, node.id, &peers, &what, duration).await;
            }
            Fault::CutController => {
                let controller = cluster_world::leader_now(&world.shared)
                    .map(|(leader, _)| leader as usize - 1)
                    .filter(|&controller| controller != target);
                let (peers, what) = match controller {
                    Some(controller) => (
                        vec![world.nodes[controller].id],
                        format!(
                            "{}{aimed} from the controller {}",
                            node.name, world.nodes[controller].name
                        ),
                    ),
                    None => (
                        others.iter().map(|&i| world.nodes[i].id).collect(),
                        format!(
                            "{}{aimed}, the controller, from the other voters",
                            node.name
                        ),
                    ),
                };
                cut(world, node.id, &peers, &what, duration).await;
            }
            Fault::CutClients => {
                let what = format!("{}{aimed} from the clients", node.name);
                cut(world, node.id, &world.clients, &what, duration).await;
            }
            Fault::OneWay | Fault::Flap if others.is_empty() => {}
            Fault::OneWay => {
                let other = &world.nodes[others[rng.gen_range(0..others.len())]];
                let (from, to) = match rng.gen_bool(0.5) {
                    true => (node, other),
                    false => (other, node),
                };
                recorder.note(&format!(
                    "nemesis one-way {} -/-> {}{aimed} for={duration:?}",
                    from.name, to.name
                ));
                let net = NetSim::current();
                net.clog_link(from.id, to.id);
                runtime::time::sleep(duration).await;
                net.unclog_link(from.id, to.id);
                recorder.note("nemesis heal-one-way");
            }
            Fault::Flap => {
                let other = &world.nodes[others[rng.gen_range(0..others.len())]];
                recorder.note(&format!(
                    "nemesis flap {} <-> {}{aimed} for={duration:?}",
                    other.name, node.name
                ));
                let net = NetSim::current();
                let end = recorder.elapsed() + duration;
                while recorder.elapsed() < end {
                    net.clog_link(node.id, other.id);
                    net.clog_link(other.id, node.id);
                    runtime::time::sleep(Duration::from_millis(rng.gen_range(100..=300))).await;
                    net.unclog_link(node.id, other.id);
                    net.unclog_link(other.id, node.id);
                    runtime::time::sleep(Duration::from_millis(rng.gen_range(100..=300))).await;
                }
                recorder.note("nemesis heal-flap");
            }
        }
    }
}

fn names(world: &World, indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .map(|&i| world.nodes[i].name.clone())
        .collect()
}

/// Cuts `node` off from `peers`, both ways, for `duration`.
async fn cut(world: &World, node: NodeId, peers: &[NodeId], what: &str, duration: Duration) {
    let net = NetSim::current();
    world
        .recorder
        .note(&format!("nemesis cut {what} for={duration:?}"));
    for &peer in peers {
        net.clog_link(node, peer);
        net.clog_link(peer, node);
    }
    runtime::time::sleep(duration).await;
    for &peer in peers {
        net.unclog_link(node, peer);
        net.unclog_link(peer, node);
    }
    world.recorder.note("nemesis heal-cut");
}

/// How long an aimed whole-cluster power loss waits for some node to acknowledge a produce.
const PRODUCE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// Every running node loses power at once (losing or tearing what it had not synced), then
/// each comes back after its own down time. Half the time it waits until some node has just
/// acknowledged a produce: if the acknowledged records are not yet synced on every replica
/// the ISR counted, this is when they are lost.
async fn power_all(world: &World, rng: &mut ChaCha8Rng) {
    let recorder = &world.recorder;
    let handle = Handle::current();
    let aimed = rng.gen_bool(0.5);
    if aimed {
        let visits = |world: &World| -> u64 {
            let disks = world.nodes.iter().map(|node| &node.disk);
            disks.map(|disk| disk.visits(Site::ProduceReplied)).sum()
        };
        let before = visits(world);
        let deadline = recorder.elapsed() + PRODUCE_REPLY_WAIT;
        while visits(world) == before && recorder.elapsed() < deadline {
            runtime::time::sleep(Duration::from_millis(1)).await;
        }
        runtime::time::sleep(Duration::from_millis(rng.gen_range(0..=3))).await;
    }
    let running: Vec<&BrokerNode> = world
        .nodes
        .iter()
        .filter(|node| !node.disk.is_down())
        .collect();
    let aimed_text = if aimed { " after a produce reply" } else { "" };
    recorder.note(&format!(
        "nemesis whole-cluster power loss{aimed_text}: {:?}",
        running.iter().map(|node| &node.name).collect::<Vec<_>>()
    ));
    recorder.count(match aimed {
        true => "crash-whole-cluster-after-produce",
        false => "crash-whole-cluster",
    });
    for node in &running {
        let kind = match rng.gen_bool(0.5) {
            true => CrashKind::PowerLose,
            false => CrashKind::PowerTear,
        };
        crate::nemesis::down(&handle, recorder, node, kind);
    }
    let restarts: Vec<_> = running
        .iter()
        .map(|node| {
            let (node, recorder) = ((*node).clone(), recorder.clone());
            let down_for = Duration::from_millis(rng.gen_range(100..3_000));
            runtime::spawn(async move {
                let handle = Handle::current();
                crate::nemesis::up(&handle, &recorder, &node, down_for).await;
            })
        })
        .collect();
    for restart in restarts {
        let _ = restart.await;
    }
}

/// In seeds that draw it, one node dies midway through the safety phase and is never restarted.
/// No partition may be left with the dead node as its last in-sync replica: without unclean
/// election it would rightly stay offline for good. That happens when another replica leaves
/// the ISR (fenced after a crash) before the dead node does, so the death waits for a quiet
/// moment (the nemesis holds, no node is down or unregistered, every ISR is full, for
/// `QUIET_HOLD`; the aimed faults are off) and
/// the quiet lasts until the controller has dropped the dead node from every ISR. Not the
/// controller. Answers its node id.
async fn dead_for_good(world: World, mut rng: ChaCha8Rng) -> Option<i32> {
    let at = world.replication.dead_for_good_at?;
    runtime::time::sleep(world.options.safety_duration.mul_f64(at)).await;
    world.hold.store(true, Ordering::SeqCst);
    let hooks: Vec<_> = world
        .nodes
        .iter()
        .map(|node| node.disk.buggify_take())
        .collect();
    let quiet = |world: &World| {
        let busy = world.busy.load(Ordering::SeqCst);
        let down = world.nodes.iter().any(|node| node.disk.is_down());
        let partitions = partitions_all(&world.shared);
        let whole = partitions
            .iter()
            .all(|partition| partition.isr.len() == partition.replicas.len());
        let settled = brokers_settled(&world.shared, world.nodes.len());
        !busy && !down && !partitions.is_empty() && whole && settled
    };
    // Quiet for a while: a crash already under way (a buggify hook's power loss after a quick
    // restart) ends within `QUIET_HOLD`, and would otherwise take a node down right after the
    // death (cluster-crash 42).
    let mut quiet_since = None;
    while world.recorder.elapsed() < world.options.safety_duration {
        let now = world.recorder.elapsed();
        quiet_since = match quiet(&world) {
            true => quiet_since.or(Some(now)),
            false => None,
        };
        if quiet_since.is_some_and(|since| now - since >= QUIET_HOLD) {
            break;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    let controller = cluster_world::leader_now(&world.shared).map(|(leader, _)| leader);
    let candidates: Vec<usize> = (0..world.nodes.len())
        .filter(|&index| Some(world.node_id(index)) != controller)
        .collect();
    let dead = match quiet(&world) {
        true => {
            let index = candidates[rng.gen_range(0..candidates.len())];
            let node = &world.nodes[index];
            world.recorder.note(&format!("{} dies for good", node.name));
            world.recorder.count("dead-for-good");
            node.disk.retire();
            Handle::current().kill(node.id);
            let node_id = world.node_id(index);
            let deadline = world.recorder.elapsed() + DEATH_NOTICED_WAIT;
            while isrs_now(&world.shared)
                .iter()
                .any(|isr| isr.contains(&node_id))
                && world.recorder.elapsed() < deadline
            {
                runtime::time::sleep(Duration::from_millis(10)).await;
            }
            Some(node_id)
        }
        false => {
            world
                .recorder
                .note("no quiet moment for a node to die for good");
            None
        }
    };
    for (node, hook) in world.nodes.iter().zip(hooks) {
        if hook.is_some() {
            node.disk.buggify_set(hook);
        }
    }
    world.hold.store(false, Ordering::SeqCst);
    dead
}

/// Every node runs an incarnation that is registered, unfenced, and so in the newest image. A
/// node restarted but not registered again still looks live there, and leaves every ISR when
/// it registers: a death meanwhile left the dead node the last ISR member (cluster-crash
/// 2300303437, a whole-cluster power loss just before).
fn brokers_settled(shared: &Mutex<Nodes>, node_count: usize) -> bool {
    let Some(image) = newest_image(shared) else {
        return false;
    };
    let nodes = lock(shared);
    nodes.views.len() == node_count
        && nodes.views.iter().all(|(node_id, view)| {
            let status = view.status.borrow();
            let registered = status.broker_epoch.is_some_and(|epoch| {
                image
                    .broker(*node_id)
                    .is_some_and(|broker| broker.broker_epoch == epoch)
            });
            view.alive() && !status.fenced && registered && image.broker_is_live(*node_id)
        })
}

/// How long the world must stay quiet before a node dies for good: longer than the time down
/// of a crash a buggify hook started before the hold (at most 2 s; the nemesis's own faults
/// are covered by `busy`).
const QUIET_HOLD: Duration = Duration::from_millis(3_500);

/// How long the faults hold off after a node dies for good, at most, waiting for the controller
/// to fence it and drop it from every ISR.
const DEATH_NOTICED_WAIT: Duration = Duration::from_secs(10);

/// The ISR of every partition of the workload's topic in the newest running image.
fn isrs_now(shared: &Mutex<Nodes>) -> Vec<Vec<i32>> {
    partitions_all(shared)
        .into_iter()
        .map(|partition| partition.isr)
        .collect()
}

/// The liveness phase's writes: one acks=all record to every partition, each retried until
/// acknowledged. A partition that takes none before the liveness deadline fails the run: after
/// heal, with every live replica back, the high watermark must move (a replica dead for good
/// must not hold it back). Each attempt is in the history like any send.
async fn final_writes(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
) -> Result<(), String> {
    let mut config = workload::client_config(options, bootstrap);
    config.retries = 0;
    let node = Handle::current()
        .create_node()
        .name("final-writer")
        .ip("10.0.7.2".parse().expect("ip"))
        .build();
    let (options, recorder) = (options.clone(), recorder.clone());
    node.spawn(async move {
        let producer_config = client::ProducerConfig {
            acks: client::Acks::All,
            linger: Duration::ZERO,
            delivery_timeout: options.request_timeout * 2,
            idempotence: false,
            ..client::ProducerConfig::kafka_defaults()
        };
        let producer = client::Producer::new(config, producer_config);
        let deadline = runtime::Clock::system().now() + options.liveness_duration;
        let mut counter = 0;
        for partition in workload::partitions_all(&options) {
            loop {
                let value = FINAL_WRITER_PROCESS as i64 * VALUES_PER_PROCESS + counter;
                counter += 1;
                let send = |offset| {
                    Op::Txn(vec![MicroOp::Send {
                        partition: partition.clone(),
                        value,
                        offset,
                        timestamp: None,
                    }])
                };
                recorder.event(FINAL_WRITER_PROCESS, EventKind::Invoke, send(None));
                let mut record =
                    client::ProducerRecord::new(TOPIC, None, Some(Bytes::from(value.to_string())));
                record.partition = Some(partition.partition);
                let wait = options.request_timeout * 2;
                let answer = runtime::time::timeout(wait, producer.send(record)).await;
                let (kind, offset) = match answer {
                    Ok(Ok(metadata)) => {
                        recorder.ack_epoch_note(&metadata);
                        (EventKind::Ok, Some(metadata.offset))
                    }
                    Ok(Err(error)) if workload::send_definitely_failed(&error) => {
                        (EventKind::Fail, None)
                    }
                    Ok(Err(_)) | Err(_) => (EventKind::Info, None),
                };
                recorder.event(FINAL_WRITER_PROCESS, kind, send(offset));
                if kind == EventKind::Ok {
                    break;
                }
                if runtime::Clock::system().now() >= deadline {
                    return Err(final_write_missing(&partition));
                }
                runtime::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "final writer task died".to_string())?
}

fn final_write_missing(partition: &Partition) -> String {
    format!("partition {partition}: no acks=all write acknowledged after heal")
}

/// Kafka's debugging consumer: any replica serves it, up to its own high watermark.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// A partition's fetches before a replica's read gives up (each returns at least one batch).
const REPLICA_READ_FETCHES_MAX: usize = 10_000;

/// After heal, what every live replica of the workload's topic serves below its high watermark
/// (`replicas-differ`). A replica that does not answer is left out: liveness is judged
/// elsewhere.
async fn replica_reads(
    options: &Options,
    nodes: &[BrokerNode],
    shared: &Mutex<Nodes>,
    expect: &Expect,
    recorder: &Recorder,
) -> Vec<ReplicaRead> {
    let partitions = partitions_now(shared);
    let reader = Handle::current()
        .create_node()
        .name("replica-reader")
        .ip("10.0.7.3".parse().expect("ip"))
        .build();
    let mut reads = Vec::new();
    for partition in &partitions {
        for &replica in &partition.replicas {
            if !expect.live.contains(&replica) {
                continue;
            }
            let address = nodes[replica as usize - 1].address.clone();
            let config = workload::client_config(options, std::slice::from_ref(&address));
            let index = partition.index as i32;
            let read = reader
                .spawn(async move { replica_read(&address, &config, index).await })
                .await
                .map_err(|_| "replica reader task died".to_string())
                .and_then(|read| read);
            match read {
                Ok((high_watermark, records)) => {
                    recorder.note(&format!(
                        "replica read {TOPIC}-{index} on node-{replica}: {} records below {high_watermark}",
                        records.len()
                    ));
                    reads.push(ReplicaRead {
                        node: replica,
                        topic: TOPIC.to_string(),
                        partition: index,
                        high_watermark,
                        records,
                    });
                }
                Err(error) => recorder.note(&format!(
                    "replica read {TOPIC}-{index} on node-{replica}: {error}"
                )),
            }
        }
    }
    reads
}

/// One replica's (high watermark, [(offset, value)]) of one partition, from offset 0.
async fn replica_read(
    address: &str,
    config: &client::ClientConfig,
    partition: i32,
) -> Result<(i64, Vec<(i64, i64)>), String> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut connection = client::Connection::connect(address, config)
        .await
        .map_err(|error| error.to_string())?;
    let mut offset = 0;
    let mut records = Vec::new();
    for _ in 0..REPLICA_READ_FETCHES_MAX {
        let fetch = FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1024 * 1024);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![fetch]);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(DEBUGGING_REPLICA_ID))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(4 * 1024 * 1024)
            .with_topics(vec![topic]);
        let request = wire::RequestKind::Fetch(request);
        let response = runtime::time::timeout(config.request_timeout, connection.request(request))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|error| error.to_string())?;
        let wire::ResponseKind::Fetch(response) = response else {
            return Err("answered Fetch with another API".to_string());
        };
        let answer = response
            .responses
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .find(|answer| answer.partition_index == partition)
            .ok_or("no answer for the partition")?;
        if answer.error_code != 0 {
            return Err(format!(
                "error code {} at offset {offset}",
                answer.error_code
            ));
        }
        let high_watermark = answer.high_watermark;
        let data = answer.records.clone().unwrap_or_default();
        if offset >= high_watermark || data.is_empty() {
            return Ok((high_watermark, records));
        }
        let fetched = client::records::FetchedData {
            topic: TOPIC,
            partition,
            fetch_offset: offset,
            records: data,
            aborted: None,
        };
        let mut batch = Vec::new();
        let next = client::records::records_decode(fetched, &mut batch)
            .map_err(|error| error.to_string())?
            .ok_or("no whole batch")?;
        records.extend(
            batch
                .iter()
                .filter(|record| record.offset >= offset && record.offset < high_watermark)
                .map(|record| (record.offset, workload::record_value(record))),
        );
        offset = next;
    }
    Err(format!("still reading at offset {offset}"))
}
