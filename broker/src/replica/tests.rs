//! Unit tests of the leader and follower cores, and the property test: random schedules of
//! appends, follower fetches and fsyncs, time, ISR answers and leader changes against a model
//! of three replicas' logs and a controller, checking after every step that the HW is
//! monotone, that every acknowledged offset was durable (with the same records) on every member
//! of the controller's ISR at the moment it was acknowledged and stays in the leader's log,
//! that |ISR| >= 1 and leader ∈ ISR, that a deposed leader acknowledges nothing, and at the end
//! (one follower dead for good) that the HW reaches the leader's log end. With
//! `--features planted-bugs` it must catch each `ReplicaBug`.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const CONFIG: ReplicaConfig = ReplicaConfig {
    lag_time_max: Duration::from_millis(1_000),
    min_insync: 2,
};

fn state(
    leader: BrokerId,
    leader_epoch: i32,
    isr: &[BrokerId],
    partition_epoch: i32,
) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch,
        replicas: vec![1, 2, 3],
        isr: isr.iter().copied().collect(),
        partition_epoch,
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn acks(outputs: &[Output]) -> Vec<(RequestId, Result<(), AckError>)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Ack { request, result } => Some((*request, *result)),
            _ => None,
        })
        .collect()
}

fn proposals(outputs: &[Output]) -> Vec<Vec<BrokerId>> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::AlterPartition { isr, .. } => Some(isr.iter().copied().collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_hw_is_the_lowest_durable_end_of_the_isr_and_acks_wait_for_it() {
    let mut out = Vec::new();
    let mut leader = Leader::new(
        1,
        state(1, 0, &[1, 2, 3], 0),
        (0, 0, 0),
        ms(0),
        CONFIG,
        None,
    );
    leader.append_admit().unwrap();
    leader.appended(&mut out, 10, Some(7));
    leader.durable(&mut out, 10);
    assert_eq!(leader.high_watermark(), 0, "followers have nothing yet");
    leader.fetched(&mut out, 2, 10, ms(1)).unwrap();
    assert_eq!(leader.high_watermark(), 0, "follower 3 has nothing");
    assert!(acks(&out).is_empty());
    leader.fetched(&mut out, 3, 4, ms(1)).unwrap();
    assert_eq!(leader.high_watermark(), 4);
    leader.fetched(&mut out, 3, 10, ms(2)).unwrap();
    assert_eq!(leader.high_watermark(), 10);
    assert_eq!(acks(&out), [(7, Ok(()))]);
    // A follower's fetch offset going back (it truncated) never takes the HW back.
    leader.fetched(&mut out, 3, 8, ms(3)).unwrap();
    assert_eq!(leader.high_watermark(), 10);
    assert_eq!(
        leader.fetched(&mut out, 9, 0, ms(3)),
        Err(FetchRefused::NotReplica)
    );
    assert_eq!(
        leader.fetched(&mut out, 2, 11, ms(3)),
        Err(FetchRefused::OffsetOutOfRange)
    );
}

#[test]
fn the_leader_counts_only_its_own_fsynced_end() {
    let mut out = Vec::new();
    let mut leader = Leader::new(1, state(1, 0, &[1, 2], 0), (0, 0, 0), ms(0), CONFIG, None);
    leader.appended(&mut out, 5, Some(1));
    leader.fetched(&mut out, 2, 5, ms(1)).unwrap();
    assert_eq!(leader.high_watermark(), 0);
    leader.durable(&mut out, 5);
    assert_eq!(leader.high_watermark(), 5);
    assert_eq!(acks(&out), [(1, Ok(()))]);
    // A follower becoming leader knew an HW past its fsynced end: it starts from the latter.
    let leader = Leader::new(1, state(1, 1, &[1, 2], 1), (10, 5, 8), ms(0), CONFIG, None);
    assert_eq!(leader.high_watermark(), 5);
}

#[test]
fn a_lagging_follower_is_proposed_out_and_the_shrink_waits_for_the_controller() {
    let mut out = Vec::new();
    let mut leader = Leader::new(
        1,
        state(1, 0, &[1, 2, 3], 0),
        (0, 0, 0),
        ms(0),
        CONFIG,
        None,
    );
    leader.appended(&mut out, 5, Some(1));
    leader.durable(&mut out, 5);
    leader.fetched(&mut out, 2, 5, ms(500)).unwrap();
    leader.tick(&mut out, ms(1_000));
    assert!(proposals(&out).is_empty(), "3 is not late yet");
    leader.fetched(&mut out, 2, 5, ms(1_400)).unwrap();
    leader.tick(&mut out, ms(1_001));
    assert_eq!(proposals(&out), [vec![1, 2]]);
    // While the shrink is in flight the HW still waits for 3 (the maximal ISR).
    assert_eq!(leader.high_watermark(), 0);
    leader.tick(&mut out, ms(5_000));
    assert_eq!(
        proposals(&out).len(),
        1,
        "one AlterPartition in flight at a time"
    );
    // A stale answer is ignored; the controller's newer state replaces ours.
    leader.alter_partition_answered(&mut out, Ok(state(1, 0, &[1, 2, 3], 0)));
    assert_eq!(leader.high_watermark(), 0);
    leader.alter_partition_answered(&mut out, Ok(state(1, 0, &[1, 2], 1)));
    assert_eq!(leader.isr().len(), 2);
    assert_eq!(leader.high_watermark(), 5);
    assert_eq!(acks(&out), [(1, Ok(()))]);
    // 3 catches up to the HW: proposed back in.
    leader.fetched(&mut out, 3, 5, ms(5_001)).unwrap();
    assert_eq!(proposals(&out).last().unwrap(), &vec![1, 2, 3]);
}

#[test]
fn a_follower_rejoins_only_past_the_leader_epoch_start() {
    let mut out = Vec::new();
    // Leader of epoch 3 from offset 8, HW 4; follower 3 out of the ISR.
    let mut leader = Leader::new(1, state(1, 3, &[1, 2], 5), (8, 8, 4), ms(0), CONFIG, None);
    leader.fetched(&mut out, 3, 6, ms(1)).unwrap();
    assert!(
        proposals(&out).is_empty(),
        "at the HW but below the epoch start"
    );
    leader.fetched(&mut out, 3, 8, ms(2)).unwrap();
    assert_eq!(proposals(&out), [vec![1, 2, 3]]);
    leader.alter_partition_answered(&mut out, Err(()));
    leader.fetched(&mut out, 3, 8, ms(3)).unwrap();
    assert_eq!(
        proposals(&out).len(),
        2,
        "a refused proposal may be made again"
    );
}

#[test]
fn min_insync_is_checked_at_append_and_after_a_shrink() {
    let mut out = Vec::new();
    let leader = Leader::new(1, state(1, 0, &[1], 0), (0, 0, 0), ms(0), CONFIG, None);
    assert_eq!(leader.append_admit(), Err(AckError::NotEnoughReplicas));
    let mut leader = Leader::new(1, state(1, 0, &[1, 2], 0), (0, 0, 0), ms(0), CONFIG, None);
    leader.append_admit().unwrap();
    leader.appended(&mut out, 3, Some(9));
    leader.durable(&mut out, 3);
    leader.tick(&mut out, ms(2_000));
    leader.alter_partition_answered(&mut out, Ok(state(1, 0, &[1], 1)));
    assert_eq!(
        acks(&out),
        [(9, Err(AckError::NotEnoughReplicasAfterAppend))]
    );
}

#[test]
fn a_deposed_leader_fails_its_waiters_and_never_acknowledges() {
    let mut out = Vec::new();
    let mut leader = Leader::new(1, state(1, 0, &[1, 2], 0), (0, 0, 0), ms(0), CONFIG, None);
    leader.appended(&mut out, 3, Some(1));
    leader.durable(&mut out, 3);
    leader.partition_state(&mut out, state(2, 1, &[1, 2], 1));
    assert_eq!(acks(&out), [(1, Err(AckError::NotLeaderOrFollower))]);
    assert_eq!(leader.append_admit(), Err(AckError::NotLeaderOrFollower));
    assert_eq!(
        leader.fetched(&mut out, 2, 3, ms(1)),
        Err(FetchRefused::NotLeader)
    );
    leader.appended(&mut out, 4, Some(2));
    assert_eq!(acks(&out)[1], (2, Err(AckError::NotLeaderOrFollower)));
}

#[test]
fn the_follower_fetches_only_its_fsynced_end_and_truncates_where_histories_part() {
    // Epochs 0 from 0, 2 from 5; log end 9, durable 9, HW 5.
    let mut follower = Follower::new(2, vec![(0, 0), (2, 5)], (9, 9, 5), None);
    let position = follower.fetch_position().unwrap();
    assert_eq!(
        (position.fetch_offset, position.last_fetched_epoch),
        (9, Some(2))
    );
    // The leader (epoch 3) has epoch 2 only up to 7.
    let truncated = follower.answered(FetchAnswer::Diverging {
        epoch: 2,
        end_offset: 7,
    });
    assert_eq!(truncated, Some(7));
    follower.leader_changed(3);
    follower.answered(FetchAnswer::Records {
        batches: vec![(3, 8), (3, 10)],
        high_watermark: 8,
    });
    assert_eq!(follower.fetch_position(), None, "not fsynced yet");
    follower.durable(10);
    let position = follower.fetch_position().unwrap();
    assert_eq!(
        (position.fetch_offset, position.last_fetched_epoch),
        (10, Some(3))
    );
    assert_eq!(follower.high_watermark(), 8);
    // A leader epoch we never had: truncate to the end of ours below it, and ask again.
    let mut follower = Follower::new(4, vec![(0, 0), (2, 5)], (9, 9, 5), None);
    let truncated = follower.answered(FetchAnswer::Diverging {
        epoch: 1,
        end_offset: 6,
    });
    assert_eq!(truncated, Some(5), "our epoch 0 ends at 5");
}

#[test]
#[should_panic(expected = "never goes below the HW")]
fn a_truncation_below_the_known_hw_is_a_broken_invariant() {
    let mut follower = Follower::new(2, vec![(0, 0), (2, 5)], (9, 9, 8), None);
    follower.answered(FetchAnswer::Diverging {
        epoch: 2,
        end_offset: 6,
    });
}

// ---- The property test ----------------------------------------------------------------------

const REPLICAS: [BrokerId; 3] = [1, 2, 3];

enum Role {
    Leader(Leader),
    /// A deposed leader that has not heard yet: it still takes appends and ticks.
    Zombie(Leader),
    Follower(Follower),
}

struct Replica {
    /// The leader epoch of each record, by offset.
    log: Vec<i32>,
    durable: usize,
    role: Role,
    /// The last HW of its current leader core (monotone).
    hw_seen: i64,
}

impl Replica {
    fn epochs(&self) -> Vec<(i32, i64)> {
        let mut epochs: Vec<(i32, i64)> = Vec::new();
        for (offset, epoch) in self.log.iter().enumerate() {
            if epochs.last().is_none_or(|(last, _)| last != epoch) {
                epochs.push((*epoch, offset as i64));
            }
        }
        epochs
    }

    fn leader_core(&mut self) -> Option<&mut Leader> {
        match &mut self.role {
            Role::Leader(core) | Role::Zombie(core) => Some(core),
            Role::Follower(_) => None,
        }
    }
}

/// The leader's end offset for an epoch over its model log, by the broker's own rule.
fn leader_end_offset(
    log_epochs: &[(i32, i64)],
    log_end: i64,
    requested: i32,
    leader_epoch: i32,
) -> Option<(i32, i64)> {
    let cache = |epoch: i32| {
        let count = log_epochs.iter().filter(|(e, _)| *e <= epoch).count();
        let next = log_epochs.get(count).map_or(log_end, |(_, start)| *start);
        match count {
            0 => log_epochs.first().map(|(_, start)| (epoch, *start)),
            _ => Some((log_epochs[count - 1].0, next)),
        }
    };
    let latest = log_epochs.last().map(|(epoch, _)| *epoch);
    crate::leader_epoch::end_offset_as_leader(requested, leader_epoch, latest, log_end, cache)
}

struct World {
    rng: ChaCha8Rng,
    planted: Option<ReplicaBug>,
    now: Duration,
    controller: PartitionState,
    /// AlterPartition requests: (from, leader epoch, partition epoch, ISR).
    requests: Vec<(BrokerId, i32, i32, BTreeSet<BrokerId>)>,
    replicas: BTreeMap<BrokerId, Replica>,
    /// Waiting acks=all produces: request -> (leader, end offset).
    waiting: BTreeMap<RequestId, (BrokerId, i64)>,
    /// Acknowledged prefixes: (end offset, the records' epochs).
    acked: Vec<Vec<i32>>,
    next_request: RequestId,
    /// A follower that stops for good at the heal.
    dead: Option<BrokerId>,
    /// How often each interesting event happened, so a test can show the schedules reach them.
    events: BTreeMap<&'static str, u64>,
}

impl World {
    fn new(seed: u64, planted: Option<ReplicaBug>) -> World {
        let controller = PartitionState {
            leader: 1,
            leader_epoch: 0,
            replicas: REPLICAS.to_vec(),
            isr: REPLICAS.into_iter().collect(),
            partition_epoch: 0,
        };
        let replicas = REPLICAS
            .into_iter()
            .map(|id| {
                let role = match id == 1 {
                    true => Role::Leader(Leader::new(
                        1,
                        controller.clone(),
                        (0, 0, 0),
                        Duration::ZERO,
                        CONFIG,
                        planted,
                    )),
                    false => Role::Follower(Follower::new(0, Vec::new(), (0, 0, 0), planted)),
                };
                (
                    id,
                    Replica {
                        log: Vec::new(),
                        durable: 0,
                        role,
                        hw_seen: 0,
                    },
                )
            })
            .collect();
        World {
            rng: ChaCha8Rng::seed_from_u64(seed),
            planted,
            now: Duration::ZERO,
            controller,
            requests: Vec::new(),
            replicas,
            waiting: BTreeMap::new(),
            acked: Vec::new(),
            next_request: 0,
            dead: None,
            events: BTreeMap::new(),
        }
    }

    fn event(&mut self, name: &'static str) {
        *self.events.entry(name).or_default() += 1;
    }

    fn pick(&mut self) -> BrokerId {
        REPLICAS[self.rng.gen_range(0..REPLICAS.len())]
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.gen_range(0..100) {
            0..20 => self.append(),
            20..32 => self.leader_fsync(),
            32..58 => {
                let follower = self.pick();
                self.fetch(follower)
            }
            58..74 => {
                let follower = self.pick();
                self.follower_fsync(follower);
                Ok(())
            }
            74..84 => {
                self.now += ms(self.rng.gen_range(0..800));
                let id = self.pick();
                self.tick(id)
            }
            84..94 => {
                let accept = self.rng.gen_bool(0.8);
                self.controller_answer(accept)
            }
            94..95 => self.elect(),
            _ => {
                let id = self.pick();
                self.learn(id)
            }
        }?;
        self.check()
    }

    /// Appends 1-3 records to a leader core (current or zombie) at its epoch, as acks=all.
    fn append(&mut self) -> Result<(), String> {
        let id = self.pick();
        let request = self.next_request;
        let count = self.rng.gen_range(1..=3);
        let replica = self.replicas.get_mut(&id).unwrap();
        let zombie = matches!(replica.role, Role::Zombie(_));
        let Some(core) = replica.leader_core() else {
            return Ok(());
        };
        if core.append_admit().is_err() {
            *self.events.entry("append-refused").or_default() += 1;
            return Ok(());
        }
        if zombie {
            *self.events.entry("zombie-append").or_default() += 1;
        }
        let epoch = core.leader_epoch();
        replica.log.extend(std::iter::repeat_n(epoch, count));
        let end = replica.log.len() as i64;
        self.next_request += 1;
        self.waiting.insert(request, (id, end));
        let mut out = Vec::new();
        self.replicas
            .get_mut(&id)
            .unwrap()
            .leader_core()
            .unwrap()
            .appended(&mut out, end, Some(request));
        self.outputs(id, out)
    }

    fn leader_fsync(&mut self) -> Result<(), String> {
        let id = self.pick();
        let replica = self.replicas.get_mut(&id).unwrap();
        replica.durable = replica.log.len();
        let end = replica.durable as i64;
        let mut out = Vec::new();
        match replica.leader_core() {
            Some(core) => core.durable(&mut out, end),
            None => return Ok(()),
        }
        self.outputs(id, out)
    }

    fn follower_fsync(&mut self, id: BrokerId) {
        let replica = self.replicas.get_mut(&id).unwrap();
        if let Role::Follower(core) = &mut replica.role {
            replica.durable = replica.log.len();
            core.durable(replica.durable as i64);
        }
    }

    /// One fetch of follower `id` from the controller's leader, as the Fetch handler answers.
    fn fetch(&mut self, id: BrokerId) -> Result<(), String> {
        let leader_id = self.controller.leader;
        if id == leader_id || Some(id) == self.dead {
            return Ok(());
        }
        let Role::Follower(follower) = &self.replicas[&id].role else {
            return Ok(());
        };
        let Some(position) = follower.fetch_position() else {
            return Ok(());
        };
        let leader = &self.replicas[&leader_id];
        let Role::Leader(core) = &leader.role else {
            return Ok(());
        };
        let leader_end = leader.log.len() as i64;
        if let Some(last) = position.last_fetched_epoch {
            let end = leader_end_offset(&leader.epochs(), leader_end, last, core.leader_epoch());
            match crate::leader_epoch::divergence(end, last, position.fetch_offset, 0) {
                Err(_) => return Ok(()),
                Ok(Some((epoch, end_offset))) => {
                    let replica = self.replicas.get_mut(&id).unwrap();
                    let Role::Follower(follower) = &mut replica.role else {
                        unreachable!()
                    };
                    let answer = FetchAnswer::Diverging { epoch, end_offset };
                    let offset = follower.answered(answer).expect("a truncation") as usize;
                    if offset < replica.log.len() {
                        *self.events.entry("truncation").or_default() += 1;
                    }
                    replica.log.truncate(offset);
                    replica.durable = replica.durable.min(offset);
                    return Ok(());
                }
                Ok(None) => {}
            }
        }
        let mut out = Vec::new();
        let now = self.now;
        let leader = self.replicas.get_mut(&leader_id).unwrap();
        let Role::Leader(core) = &mut leader.role else {
            unreachable!()
        };
        if core
            .fetched(&mut out, id, position.fetch_offset, now)
            .is_err()
        {
            return Ok(());
        }
        let high_watermark = core.high_watermark();
        let from = position.fetch_offset as usize;
        let upto = (from + self.rng.gen_range(0..=4)).min(leader.log.len());
        let records: Vec<i32> = leader.log[from..upto].to_vec();
        self.outputs(leader_id, out)?;
        let replica = self.replicas.get_mut(&id).unwrap();
        let Role::Follower(follower) = &mut replica.role else {
            unreachable!()
        };
        // One batch per record: (epoch, end offset).
        let batches = (from..upto)
            .zip(&records)
            .map(|(offset, epoch)| (*epoch, offset as i64 + 1))
            .collect();
        replica.log.truncate(from); // planted skip-truncation: the fetch offset is our log end
        replica.log.extend(&records);
        follower.answered(FetchAnswer::Records {
            batches,
            high_watermark,
        });
        Ok(())
    }

    fn tick(&mut self, id: BrokerId) -> Result<(), String> {
        let now = self.now;
        let mut out = Vec::new();
        match self.replicas.get_mut(&id).unwrap().leader_core() {
            Some(core) => core.tick(&mut out, now),
            None => return Ok(()),
        }
        self.outputs(id, out)
    }

    /// The controller answers the oldest AlterPartition, as KRaft's would: accepted only from
    /// the current leader at the current epochs (and when `accept`: a refusal stands for a
    /// lost or reordered one).
    fn controller_answer(&mut self, accept: bool) -> Result<(), String> {
        if self.requests.is_empty() {
            return Ok(());
        }
        let (from, leader_epoch, partition_epoch, isr) = self.requests.remove(0);
        let current = from == self.controller.leader
            && leader_epoch == self.controller.leader_epoch
            && partition_epoch == self.controller.partition_epoch;
        self.event(if current && accept {
            "isr-change"
        } else {
            "isr-refused"
        });
        let answer = if current && accept {
            assert!(isr.contains(&from) && isr.iter().all(|m| REPLICAS.contains(m)));
            self.controller.isr = isr;
            self.controller.partition_epoch += 1;
            Ok(self.controller.clone())
        } else {
            Err(())
        };
        let mut out = Vec::new();
        match self.replicas.get_mut(&from).unwrap().leader_core() {
            Some(core) => core.alter_partition_answered(&mut out, answer),
            None => return Ok(()),
        }
        self.outputs(from, out)
    }

    /// The controller elects a leader from its ISR at a new leader epoch. The old leader
    /// becomes a zombie until it learns; followers learn at once.
    fn elect(&mut self) -> Result<(), String> {
        let candidates: Vec<BrokerId> = self
            .controller
            .isr
            .iter()
            .copied()
            .filter(|id| Some(*id) != self.dead)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let new = candidates[self.rng.gen_range(0..candidates.len())];
        self.event("election");
        self.controller.leader = new;
        self.controller.leader_epoch += 1;
        self.controller.partition_epoch += 1;
        let epoch = self.controller.leader_epoch;
        for id in REPLICAS {
            let replica = self.replicas.get_mut(&id).unwrap();
            let role = std::mem::replace(
                &mut replica.role,
                Role::Follower(Follower::new(0, Vec::new(), (0, 0, 0), None)),
            );
            replica.role = match role {
                Role::Leader(core) => Role::Zombie(core),
                Role::Follower(mut core) => {
                    core.leader_changed(epoch);
                    Role::Follower(core)
                }
                zombie => zombie,
            };
        }
        let replica = self.replicas.get_mut(&new).unwrap();
        let hw = match &replica.role {
            Role::Follower(core) => core.high_watermark(),
            Role::Zombie(core) | Role::Leader(core) => core.high_watermark(),
        };
        // Its unfsynced tail stays unfsynced: the leader counts only what it fsyncs later.
        let log = (replica.log.len() as i64, replica.durable as i64, hw);
        let core = Leader::new(
            new,
            self.controller.clone(),
            log,
            self.now,
            CONFIG,
            self.planted,
        );
        replica.hw_seen = core.high_watermark();
        let old = std::mem::replace(&mut replica.role, Role::Leader(core));
        if let Role::Zombie(mut core) = old {
            let mut out = Vec::new();
            core.depose(&mut out);
            self.outputs(new, out)?;
        }
        Ok(())
    }

    /// A zombie hears of the new leader epoch: it is deposed and becomes a follower.
    fn learn(&mut self, id: BrokerId) -> Result<(), String> {
        let replica = self.replicas.get_mut(&id).unwrap();
        if !matches!(replica.role, Role::Zombie(_)) {
            return Ok(());
        }
        let epochs = replica.epochs();
        let log = (replica.log.len() as i64, replica.durable as i64);
        let Role::Zombie(mut core) = std::mem::replace(
            &mut replica.role,
            Role::Follower(Follower::new(0, Vec::new(), (0, 0, 0), None)),
        ) else {
            unreachable!()
        };
        let mut out = Vec::new();
        core.partition_state(&mut out, self.controller.clone());
        assert!(core.is_deposed());
        let hw = core.high_watermark();
        let follower = Follower::new(
            self.controller.leader_epoch,
            epochs,
            (log.0, log.1, hw),
            self.planted,
        );
        self.replicas.get_mut(&id).unwrap().role = Role::Follower(follower);
        self.outputs(id, out)
    }

    fn outputs(&mut self, from: BrokerId, outputs: Vec<Output>) -> Result<(), String> {
        for output in outputs {
            match output {
                Output::Ack { request, result } => {
                    let (leader, end) = self.waiting.remove(&request).expect("a waiting request");
                    if leader != from {
                        return Err(format!(
                            "request {request} answered by {from}, not {leader}"
                        ));
                    }
                    match result {
                        Ok(()) => {
                            self.event("ack");
                            self.acked_check(from, end)?;
                        }
                        Err(AckError::NotEnoughReplicasAfterAppend) => {
                            self.event("ack-after-append")
                        }
                        Err(_) => self.event("ack-failed"),
                    }
                }
                Output::AlterPartition {
                    leader_epoch,
                    partition_epoch,
                    isr,
                } => {
                    self.requests
                        .push((from, leader_epoch, partition_epoch, isr));
                }
                Output::HighWatermark { .. } => {}
            }
        }
        Ok(())
    }

    /// At the moment `from` acknowledges up to `end`: every member of the controller's ISR has
    /// those records fsynced, the same ones; and `from` was not deposed.
    fn acked_check(&mut self, from: BrokerId, end: i64) -> Result<(), String> {
        let leader = &self.replicas[&from];
        if leader.leader_core_ref().is_none_or(Leader::is_deposed) {
            return Err(format!("deposed leader {from} acknowledged"));
        }
        let end = end as usize;
        let prefix = leader.log[..end].to_vec();
        for member in &self.controller.isr {
            let replica = &self.replicas[member];
            if replica.durable < end || replica.log[..end] != prefix[..] {
                return Err(format!(
                    "ack of {end} by {from}: ISR member {member} has {:?} durable to {}, leader {prefix:?}",
                    replica.log, replica.durable
                ));
            }
        }
        self.acked.push(prefix);
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        let state = &self.controller;
        if state.isr.is_empty() || !state.isr.contains(&state.leader) {
            return Err(format!(
                "controller ISR {:?} without leader {}",
                state.isr, state.leader
            ));
        }
        let leader_log = &self.replicas[&state.leader].log;
        for prefix in &self.acked {
            if leader_log.len() < prefix.len() || leader_log[..prefix.len()] != prefix[..] {
                return Err(format!(
                    "acknowledged {prefix:?} lost: leader has {leader_log:?}"
                ));
            }
        }
        for (id, replica) in &mut self.replicas {
            if let Role::Leader(core) = &replica.role {
                if core.high_watermark() < replica.hw_seen {
                    return Err(format!("HW of {id} went back"));
                }
                replica.hw_seen = core.high_watermark();
                if core.isr().is_empty() || !core.isr().contains(id) {
                    return Err(format!("leader {id}'s ISR {:?}", core.isr()));
                }
            }
        }
        Ok(())
    }

    /// Heal with one follower dead for good: zombies learn, answers arrive, followers fetch
    /// and fsync, time passes; then the HW must reach the leader's log end and every waiter be
    /// answered.
    fn heal(&mut self) -> Result<(), String> {
        for id in REPLICAS {
            self.learn(id)?;
        }
        let leader = self.controller.leader;
        self.dead = REPLICAS.into_iter().find(|id| *id != leader);
        for _ in 0..40 {
            while !self.requests.is_empty() {
                self.controller_answer(true)?;
            }
            let replica = self.replicas.get_mut(&leader).unwrap();
            replica.durable = replica.log.len();
            let end = replica.durable as i64;
            let mut out = Vec::new();
            replica.leader_core().unwrap().durable(&mut out, end);
            self.outputs(leader, out)?;
            for id in REPLICAS {
                for _ in 0..4 {
                    self.fetch(id)?;
                    self.follower_fsync(id);
                }
            }
            self.now += ms(600);
            self.tick(leader)?;
            self.check()?;
        }
        let replica = &self.replicas[&leader];
        let hw = replica.leader_core_ref().unwrap().high_watermark();
        if hw != replica.log.len() as i64 {
            return Err(format!(
                "after heal the HW is {hw}, the log end {}",
                replica.log.len()
            ));
        }
        let current: Vec<_> = self
            .waiting
            .iter()
            .filter(|(_, (from, _))| *from == leader)
            .collect();
        if !current.is_empty() {
            return Err(format!("after heal acks still wait: {current:?}"));
        }
        Ok(())
    }
}

impl Replica {
    fn leader_core_ref(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leader(core) | Role::Zombie(core) => Some(core),
            Role::Follower(_) => None,
        }
    }
}

/// One schedule of `steps` random steps and the heal; `Err` names the first broken property
/// (a core assertion's panic counts too).
fn schedule_run(
    seed: u64,
    steps: usize,
    planted: Option<ReplicaBug>,
    events: &mut BTreeMap<&'static str, u64>,
) -> Result<(), String> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut world = World::new(seed, planted);
        let result = (0..steps)
            .try_for_each(|_| world.step())
            .and_then(|()| world.heal());
        for (name, count) in &world.events {
            *events.entry(name).or_default() += count;
        }
        result
    }));
    match run {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    }
}

const SCHEDULES: u64 = 400;
const STEPS: usize = 300;

#[test]
fn random_schedules_keep_every_property() {
    let mut events = BTreeMap::new();
    for seed in 0..SCHEDULES {
        if let Err(broken) = schedule_run(seed, STEPS, None, &mut events) {
            panic!("seed {seed}: {broken}");
        }
    }
    println!("{events:?}");
    // The schedules reach what the properties are about.
    for event in [
        "ack",
        "ack-after-append",
        "ack-failed",
        "append-refused",
        "zombie-append",
        "election",
        "truncation",
        "isr-change",
        "isr-refused",
    ] {
        assert!(
            events.get(event).is_some_and(|n| *n >= 10),
            "{event}: {events:?}"
        );
    }
}

#[cfg(feature = "planted-bugs")]
#[test]
fn random_schedules_catch_each_planted_bug() {
    // The core's assertions are catches too; keep their panics quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = String::new();
    for bug in ReplicaBug::ALL {
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let mut first = None;
        let mut events = BTreeMap::new();
        for seed in 0..SCHEDULES {
            if let Err(broken) = schedule_run(seed, STEPS, Some(bug), &mut events) {
                let reason = match broken.as_str() {
                    text if text.starts_with("ack of") => "acked-not-durable-on-isr".to_string(),
                    text if text.starts_with("acknowledged") => "acked-lost".to_string(),
                    text if text.starts_with("after heal") => "hw-stuck-after-heal".to_string(),
                    text => text.split(':').take(2).collect::<Vec<_>>().join(":"),
                };
                *reasons.entry(reason).or_default() += 1;
                first.get_or_insert(seed);
            }
        }
        let caught: u64 = reasons.values().sum();
        report.push_str(&format!(
            "{bug:?}: {caught}/{SCHEDULES}, first seed {first:?}, {reasons:?}\n"
        ));
    }
    std::panic::set_hook(hook);
    println!("{report}");
    for line in report.lines() {
        assert!(!line.contains(": 0/"), "a planted bug escapes: {report}");
    }
}
