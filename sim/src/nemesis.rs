//! The nemesis: one fault at a time, at exponentially distributed intervals, drawn from the
//! nemesis rng stream among the faults the swarm switched on. Each action is one trace line, and
//! every fault it starts it also ends (a crashed node is restarted after its down time), so
//! `heal` only has to undo what is in flight when the safety phase stops: a pause, a partition,
//! and the disks' fault rates.

use crate::options::Options;
use crate::recorder::Recorder;
use crate::world::BrokerNode;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::Rng;
use runtime::disk::CrashOptions;
use runtime::rng::ChaCha8Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
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
        act(&handle, &recorder, broker, action, duration, &mut rng).await;
    }
}

async fn act(
    handle: &Handle,
    recorder: &Recorder,
    broker: &BrokerNode,
    action: Action,
    duration: Duration,
    rng: &mut ChaCha8Rng,
) {
    let net = NetSim::current();
    let name = &broker.name;
    match action {
        Action::Crash => {
            let tear = rng.gen_bool(0.5);
            recorder.note(&format!(
                "nemesis crash {name} tear={tear} down_for={duration:?}"
            ));
            handle.kill(broker.id);
            broker.disk.crash(if tear {
                CrashOptions::Tear
            } else {
                CrashOptions::LoseUnsynced
            });
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
            runtime::time::sleep(duration).await;
            recorder.note(&format!("nemesis restart {name}"));
            handle.restart(broker.id);
        }
        Action::Pause => {
            recorder.note(&format!("nemesis pause {name} for={duration:?}"));
            handle.pause(broker.id);
            runtime::time::sleep(duration).await;
            recorder.note(&format!("nemesis resume {name}"));
            handle.resume(broker.id);
        }
        Action::Isolate | Action::IsolateInbound | Action::IsolateOutbound => {
            recorder.note(&format!("nemesis {action:?} {name} for={duration:?}"));
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

/// Ends every fault: network healed, nodes resumed, disks perfect.
pub fn heal(brokers: &[BrokerNode], recorder: &Recorder) {
    let handle = Handle::current();
    let net = NetSim::current();
    for broker in brokers {
        net.unclog_node(broker.id);
        handle.resume(broker.id);
        broker.disk.faults_set(crate::disk::DiskFaults::default());
    }
    recorder.note("heal: network healed, nodes resumed, disk faults off");
}
