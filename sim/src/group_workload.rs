//! The consumer-group workload: consumers are members of one group, subscribed to the topic.
//! Each polls, commits its positions every few polls, now and then lists the group's committed
//! offsets, sometimes crashes (drops its consumer without leaving, then rejoins as a new member)
//! and sometimes stalls past its session timeout and then commits at once, as a consumer stuck
//! in a long GC pause would: the coordinator must refuse that commit (stale generation).
//!
//! Everything is recorded for the checker: `Subscribe`, `Rebalance` markers (recorded while the
//! poll that caused them is open, so positions reset there), `Commit` with the generation it was
//! made under, `ListCommitted`, and `Crash`.

use crate::options::Options;
use crate::recorder::Recorder;
use crate::workload::{consumer_config, poll_complete, CONSUMER_PROCESS_BASE};
use crate::world::TOPIC;
use checker::{EventKind, Op, Partition};
use client::{
    ClientConfig, ClientError, GroupConfig, GroupConsumer, RebalanceEvent, TopicPartition,
};
use rand::Rng;
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "g";
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Session timeout of the members: the broker's minimum, so a stall or crash is noticed fast.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// A group operation may wait out a whole rebalance (rebalance timeout + margin) before failing.
const GROUP_OP_DEADLINE: Duration = Duration::from_secs(30);
/// Per poll: the chances of committing, listing, crashing and stalling.
const COMMIT_CHANCE: f64 = 0.3;
const LIST_CHANCE: f64 = 0.1;
const CRASH_CHANCE: f64 = 0.01;
const STALL_CHANCE: f64 = 0.005;

fn group_config() -> GroupConfig {
    GroupConfig {
        session_timeout: SESSION_TIMEOUT,
        rebalance_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(1),
        ..GroupConfig::kafka_defaults(GROUP)
    }
}

fn history_partition(partition: &TopicPartition) -> Partition {
    Partition::new(&partition.topic, partition.partition)
}

/// One group member process, crashing and rejoining until `stop`.
pub async fn member_run(
    index: usize,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let process = CONSUMER_PROCESS_BASE + index as u64;
    let mut rng = stream_rng(
        options.seed,
        Stream::Workload,
        crate::workload::process_index(process),
    );
    while !stop.load(Ordering::SeqCst) {
        let mut member = GroupConsumer::new(config.clone(), consumer_config(), group_config());
        let subscribe = Op::Subscribe {
            topics: vec![TOPIC.to_string()],
        };
        recorder.event(process, EventKind::Invoke, subscribe.clone());
        member.subscribe(&[TOPIC.to_string()]);
        recorder.event(process, EventKind::Ok, subscribe);
        let crashed = member_life(process, &mut member, &mut rng, &recorder, &stop).await;
        if crashed {
            recorder.event(process, EventKind::Info, Op::Crash);
            drop(member); // No LeaveGroup: the coordinator finds out when the session expires.
            runtime::time::sleep(Duration::from_millis(rng.gen_range(100..3_000))).await;
        } else {
            let _ = runtime::time::timeout(GROUP_OP_DEADLINE, member.close()).await;
        }
    }
}

/// Polls, commits, lists and stalls until `stop` (returns false) or a crash (returns true).
async fn member_life(
    process: u64,
    member: &mut GroupConsumer,
    rng: &mut ChaCha8Rng,
    recorder: &Recorder,
    stop: &AtomicBool,
) -> bool {
    while !stop.load(Ordering::SeqCst) {
        if rng.gen_bool(CRASH_CHANCE) {
            return true;
        }
        if rng.gen_bool(STALL_CHANCE) {
            // A long pause: the group rebalances without us, then we commit what we had.
            runtime::time::sleep(SESSION_TIMEOUT + Duration::from_secs(2)).await;
            commit(process, member, recorder).await;
        }
        let (polled, rebalanced) = member_poll(process, member, recorder).await;
        // Read the committed offsets back at the moments a lost or misplaced commit shows: just
        // after a (re)join, and once the broker answers again after a poll or a commit that
        // failed (the coordinator may have crashed in a commit's fsync window). No extra draws:
        // old seeds keep their worlds.
        if polled != EventKind::Ok {
            list_until_answered(process, member, recorder, stop).await;
        } else if rebalanced {
            list(process, member, recorder).await;
        }
        if rng.gen_bool(COMMIT_CHANCE) && commit(process, member, recorder).await == EventKind::Info
        {
            list_until_answered(process, member, recorder, stop).await;
        }
        if rng.gen_bool(LIST_CHANCE) {
            list(process, member, recorder).await;
        }
    }
    false
}

/// One recorded poll: its outcome, and whether the member was assigned partitions during it.
async fn member_poll(
    process: u64,
    member: &mut GroupConsumer,
    recorder: &Recorder,
) -> (EventKind, bool) {
    recorder.event(process, EventKind::Invoke, Op::poll(false));
    let outcome = runtime::time::timeout(GROUP_OP_DEADLINE, member.poll(POLL_WAIT)).await;
    let mut rebalanced = false;
    for event in member.events() {
        if let RebalanceEvent::Assigned { partitions, .. } = event {
            let assigned = partitions.iter().map(history_partition).collect();
            recorder.event(process, EventKind::Ok, Op::Rebalance { assigned });
            rebalanced = true;
        }
    }
    let kind = poll_complete(process, recorder, false, outcome);
    if kind != EventKind::Ok {
        runtime::time::sleep(Duration::from_millis(100)).await;
    }
    (kind, rebalanced)
}

/// Kafka errors that mean the commit was refused, not lost in flight.
fn commit_refused(error: &ClientError) -> bool {
    error.kafka_error().is_some()
}

/// Commits the member's positions; the commit's outcome (`Ok` if there was nothing to commit).
async fn commit(process: u64, member: &mut GroupConsumer, recorder: &Recorder) -> EventKind {
    let positions: BTreeMap<TopicPartition, i64> = member
        .assignment()
        .into_iter()
        .filter_map(|tp| member.position(&tp).map(|position| (tp, position)))
        .collect();
    if positions.is_empty() {
        return EventKind::Ok;
    }
    let generation = member.generation().1;
    let offsets = positions
        .iter()
        .map(|(tp, offset)| (history_partition(tp), *offset))
        .collect();
    let op = Op::Commit {
        group: GROUP.to_string(),
        generation: Some(generation),
        offsets,
    };
    recorder.event(process, EventKind::Invoke, op.clone());
    let kind =
        match runtime::time::timeout(GROUP_OP_DEADLINE, member.commit_offsets(&positions)).await {
            Ok(Ok(())) => EventKind::Ok,
            Ok(Err(error)) if commit_refused(&error) => EventKind::Fail,
            Ok(Err(_)) | Err(_) => EventKind::Info,
        };
    recorder.event(process, kind, op);
    kind
}

/// After a commit whose answer never came, reads the committed offsets back before anything
/// else commits (a later commit would hide a lost one), through the coordinator's restart.
async fn list_until_answered(
    process: u64,
    member: &mut GroupConsumer,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    for _ in 0..LIST_AFTER_DOUBT_ATTEMPTS {
        if stop.load(Ordering::SeqCst) || list(process, member, recorder).await == EventKind::Ok {
            return;
        }
        runtime::time::sleep(LIST_AFTER_DOUBT_BACKOFF).await;
    }
}

/// Reads of `list_until_answered`: together shorter than a session timeout, so the member is
/// not evicted for not polling meanwhile.
const LIST_AFTER_DOUBT_ATTEMPTS: usize = 16;
const LIST_AFTER_DOUBT_BACKOFF: Duration = Duration::from_millis(250);

/// Reads the group's committed offsets of the member's partitions; the outcome (`Ok` if it has
/// none).
async fn list(process: u64, member: &mut GroupConsumer, recorder: &Recorder) -> EventKind {
    let partitions = member.assignment();
    if partitions.is_empty() {
        return EventKind::Ok;
    }
    let asked = partitions
        .iter()
        .map(|tp| (history_partition(tp), -1))
        .collect();
    recorder.event(
        process,
        EventKind::Invoke,
        Op::ListCommitted {
            group: GROUP.to_string(),
            offsets: asked,
        },
    );
    let (kind, offsets) =
        match runtime::time::timeout(GROUP_OP_DEADLINE, member.committed(&partitions)).await {
            Ok(Ok(committed)) => {
                let offsets = partitions
                    .iter()
                    .map(|tp| {
                        (
                            history_partition(tp),
                            committed.get(tp).copied().flatten().unwrap_or(-1),
                        )
                    })
                    .collect();
                (EventKind::Ok, offsets)
            }
            Ok(Err(_)) => (EventKind::Fail, BTreeMap::new()),
            Err(_) => (EventKind::Info, BTreeMap::new()),
        };
    let offsets = if kind == EventKind::Ok {
        offsets
    } else {
        partitions
            .iter()
            .map(|tp| (history_partition(tp), -1))
            .collect()
    };
    recorder.event(
        process,
        kind,
        Op::ListCommitted {
            group: GROUP.to_string(),
            offsets,
        },
    );
    kind
}
