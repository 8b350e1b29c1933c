//! The nemesis: one fault at a time, at exponentially distributed intervals, drawn from the
//! nemesis rng stream among the faults the swarm switched on. Each action is one trace line, and
//! every fault it starts it also ends (a crashed node is restarted after its down time), so
//! `heal` only has to undo what is in flight when the safety phase stops: a pause, a partition,
//! and the disks' fault rates.
//!
//! A crash draws its kind (`CrashKind`): a process crash keeps the page cache, a power loss loses
//! or tears what was not synced, and a process crash may be followed, just after the restart, by
//! a power loss that finds the recovered tail still unsynced. `crash` also serves the aimed
//! faults (world.rs), so both say the kind in the trace and count it in the run's summary.

use crate::disk::CrashKind;
use crate::options::Options;
use crate::recorder::Recorder;
use crate::world::BrokerNode;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::Rng;
use runtime::buggify::Site;
use runtime::disk::CrashOptions;
use runtime::rng::ChaCha8Rng;
use std::time::Duration;

/// A fault on one node; the cluster world adds its own network faults around these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Crash,
    Pause,
    Isolate,
    IsolateInbound,
    IsolateOutbound,
}

fn actions(options: &Options) -> Vec<Action> {
    let mut actions = Vec::new();
    if options.crash {
        actions.push(Action::Crash);
    }
    if options.pause {
        actions.push(Action::Pause);
    }
    if options.network_partition {
        actions.extend([
            Action::Isolate,
            Action::IsolateInbound,
            Action::IsolateOutbound,
        ]);
    }
    actions
}

/// Runs faults until `until` (simulated time since the run's start).
pub async fn run(
    options: Options,
    brokers: Vec<BrokerNode>,
    recorder: Recorder,
    mut rng: ChaCha8Rng,
    until: Duration,
) {
    let Some(interval_mean) = options.nemesis_interval_mean else {
        return;
    };
    let actions = actions(&options);
    assert!(!actions.is_empty(), "a nemesis interval implies some fault");
    let handle = Handle::current();
    loop {
        // Exponential inter-arrival times: bursts and lulls, not a metronome.
        let uniform: f64 = rng.gen_range(f64::EPSILON..1.0);
        let wait = interval_mean.mul_f64(-uniform.ln()).min(interval_mean * 5);
        runtime::time::sleep(wait).await;
        if recorder.elapsed() >= until {
            return;
        }
        let broker = &brokers[rng.gen_range(0..brokers.len())];
        let action = actions[rng.gen_range(0..actions.len())];
        let duration = Duration::from_millis(rng.gen_range(10..4_000));
        act(&handle, &recorder, broker, action, duration, "", &mut rng).await;
    }
}

/// Carries out `action` on `broker` for `duration` (a crash draws its kind first); `aimed` is
/// appended to the node's name in the trace (the cluster world's " (leader)").
pub async fn act(
    handle: &Handle,
    recorder: &Recorder,
    broker: &BrokerNode,
    action: Action,
    duration: Duration,
    aimed: &str,
    rng: &mut ChaCha8Rng,
) {
    let net = NetSim::current();
    let name = &broker.name;
    let named = format!("{name}{aimed}");
    match action {
        Action::Crash => {
            let kind = CrashKind::ALL[rng.gen_range(0..CrashKind::ALL.len())];
            crash(handle, recorder, broker, kind, duration, "nemesis", rng).await;
        }
        Action::Pause => {
            recorder.note(&format!("nemesis pause {named} for={duration:?}"));
            handle.pause(broker.id);
            runtime::time::sleep(duration).await;
            recorder.note(&format!("nemesis resume {name}"));
            handle.resume(broker.id);
        }
        Action::Isolate | Action::IsolateInbound | Action::IsolateOutbound => {
            recorder.note(&format!("nemesis {action:?} {named} for={duration:?}"));
            match action {
                Action::Isolate => net.clog_node(broker.id),
                Action::IsolateInbound => net.clog_node_in(broker.id),
                _ => net.clog_node_out(broker.id),
            }
            runtime::time::sleep(duration).await;
            recorder.note(&format!("nemesis heal-network {name}"));
            net.unclog_node(broker.id);
        }
    }
}

/// The longest quick restart of a `ProcessThenPower` crash: a supervisor restarting a killed
/// process at once.
const QUICK_RESTART_MAX: Duration = Duration::from_millis(100);

/// The longest the restarted process runs before the power goes: up to a second, so consumers
/// reconnect and read while whatever the restarted broker left unsynced is still unsynced.
const QUICK_UPTIME_MAX: Duration = Duration::from_secs(1);

/// The longest an aimed power loss waits after a fetch reply left: about the reply's trip to the
/// client, so the client usually has it.
const FETCH_REPLY_TRIP: Duration = Duration::from_millis(3);

/// Takes `broker` down with a crash of `kind` and brings it back after `down_for`. `cause` names
/// who did it in the trace (the nemesis, or an aimed fault).
pub async fn crash(
    handle: &Handle,
    recorder: &Recorder,
    broker: &BrokerNode,
    kind: CrashKind,
    down_for: Duration,
    cause: &str,
    rng: &mut ChaCha8Rng,
) {
    if crash_down(handle, recorder, broker, kind, down_for, cause, rng).await {
        up(handle, recorder, broker, down_for).await;
    }
}

/// The kills of a crash of `kind` (for `ProcessThenPower`, the quick restart and the power loss
/// too); answers whether it took the node down, to be brought back with `up` after `down_for`.
pub(crate) async fn crash_down(
    handle: &Handle,
    recorder: &Recorder,
    broker: &BrokerNode,
    kind: CrashKind,
    down_for: Duration,
    cause: &str,
    rng: &mut ChaCha8Rng,
) -> bool {
    let name = &broker.name;
    if broker.disk.is_down() && cause == "nemesis" {
        // Another crash already has it down and will bring it back; one outage at a time.
        recorder.note(&format!("{cause} crash {name}: already down"));
        return false;
    }
    recorder.note(&format!(
        "{cause} crash {name} kind={} down_for={down_for:?}",
        kind.name()
    ));
    recorder.count(&format!("crash-{}", kind.name()));
    if kind == CrashKind::ProcessThenPower {
        let quick = QUICK_RESTART_MAX.mul_f64(rng.gen_range(0.0..1.0));
        down(handle, recorder, broker, CrashKind::Process);
        up(handle, recorder, broker, quick).await;
        let uptime = QUICK_UPTIME_MAX.mul_f64(rng.gen_range(0.0..1.0));
        if rng.gen_bool(0.5) {
            // Aimed: the power goes right after the restarted broker answers its first fetch,
            // which returns the tail a consumer was waiting for: if the broker served a tail that
            // only the page cache held, the reader has now seen what the platter lacks.
            let visits = broker.disk.visits(Site::FetchReplied);
            let deadline = recorder.elapsed() + QUICK_UPTIME_MAX;
            while broker.disk.visits(Site::FetchReplied) == visits && recorder.elapsed() < deadline
            {
                runtime::time::sleep(Duration::from_millis(1)).await;
            }
            runtime::time::sleep(FETCH_REPLY_TRIP.mul_f64(rng.gen_range(0.0..1.0))).await;
        } else {
            runtime::time::sleep(uptime).await;
        }
        recorder.note(&format!(
            "{cause} crash {name} power loss after a quick restart"
        ));
        let power = match rng.gen_bool(0.5) {
            true => CrashKind::PowerTear,
            false => CrashKind::PowerLose,
        };
        down(handle, recorder, broker, power);
    } else {
        down(handle, recorder, broker, kind);
    }
    true
}

/// Kills the node and applies the crash's effect on its disk (a single kind, not a sequence).
pub(crate) fn down(handle: &Handle, recorder: &Recorder, broker: &BrokerNode, kind: CrashKind) {
    handle.kill(broker.id);
    broker.disk.down();
    match kind {
        CrashKind::Process | CrashKind::ProcessThenPower => broker.disk.crash_process(),
        CrashKind::PowerLose => broker.disk.crash(CrashOptions::LoseUnsynced),
        CrashKind::PowerTear => broker.disk.crash(CrashOptions::Tear),
    }
    // What survived, for whoever replays this seed: every file of the workload's topic.
    let files: Vec<String> = broker
        .disk
        .true_bytes()
        .files()
        .into_iter()
        .filter(|(path, _)| {
            path.to_string_lossy()
                .starts_with(&format!("/data/{}-", crate::world::TOPIC))
        })
        .map(|(path, len)| format!("{}={len}", path.display()))
        .collect();
    recorder.note(&format!("disk after crash: {}", files.join(" ")));
}

/// Waits `down_for`, then restarts the node on its disk, unless it died for good meanwhile.
pub(crate) async fn up(
    handle: &Handle,
    recorder: &Recorder,
    broker: &BrokerNode,
    down_for: Duration,
) {
    runtime::time::sleep(down_for).await;
    if broker.disk.is_retired() {
        recorder.note(&format!("{} stays down: dead for good", broker.name));
        return;
    }
    recorder.note(&format!("restart {}", broker.name));
    broker.disk.up();
    // Killing first releases the node's sockets even if another crash restarted it meanwhile;
    // a bare restart of a running node would leave its listener bound.
    handle.kill(broker.id);
    handle.restart(broker.id);
}

/// Ends every fault: network healed, nodes resumed, disks perfect. A node that met a failed
/// fdatasync since its last start has partitions offline until a restart (the broker cannot trust
/// its page cache any more), so it is restarted, as an operator would after the alert: a process
/// crash, which keeps the page cache and with it the stale sectors of the failed sync.
pub async fn heal(brokers: &[BrokerNode], recorder: &Recorder) {
    let handle = Handle::current();
    let net = NetSim::current();
    for broker in brokers {
        net.unclog_node(broker.id);
        handle.resume(broker.id);
        broker.disk.faults_set(crate::disk::DiskFaults::default());
        broker.disk.buggify_set(None);
    }
    recorder.note("heal: network healed, nodes resumed, disk faults and aimed faults off");
    kills_pending_wait(brokers, recorder).await;
    for broker in brokers {
        if broker.disk.sync_failed() && !broker.disk.is_down() {
            recorder.note(&format!(
                "heal: restart {} after a failed fsync",
                broker.name
            ));
            down(&handle, recorder, broker, CrashKind::Process);
            up(&handle, recorder, broker, HEAL_RESTART_DOWN).await;
        }
    }
}

/// Waits until no aimed crash requested before heal still has a kill to come: the hooks are
/// off, but a crash in its delay, or between the quick restart and the power loss of a
/// `ProcessThenPower`, would otherwise kill a node in the liveness phase, after the world saw
/// it settle (cluster-crash 1341547883: a power loss after heal left a broker fenced in one
/// broker's DescribeCluster). A node already down for its last kill comes back as before.
/// Bounded: each such crash kills within its delay and quick uptime.
async fn kills_pending_wait(brokers: &[BrokerNode], recorder: &Recorder) {
    let pending = || brokers.iter().any(|broker| broker.disk.kills_pending() > 0);
    if !pending() {
        return;
    }
    recorder.note("heal: waiting for the kills of aimed crashes under way");
    // Counted, so a regression seed can show it still meets a crash under way at heal.
    recorder.count("heal-kill-awaited");
    while pending() {
        runtime::time::sleep(Duration::from_millis(1)).await;
    }
    recorder.note("heal: aimed crashes have no kill to come");
}

/// How long a node restarted at heal stays down.
const HEAL_RESTART_DOWN: Duration = Duration::from_millis(100);
