//! The leader side of one partition: each follower's durable end and when it last caught up,
//! the high watermark over the ISR, the ISR changes to propose, and acks=all waiters.

use super::planted::ReplicaBug;
use super::{AckError, BrokerId, PartitionState, ReplicaConfig, RequestId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the leader asks of its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An acks=all produce is answered.
    Ack {
        request: RequestId,
        result: Result<(), AckError>,
    },
    /// Send AlterPartition to the controller: this ISR, based on the committed state at
    /// (`leader_epoch`, `partition_epoch`). One is in flight at a time.
    AlterPartition {
        leader_epoch: i32,
        partition_epoch: i32,
        isr: BTreeSet<BrokerId>,
    },
    /// The HW moved forward: wake fetches parked on it.
    HighWatermark { offset: i64 },
}

/// Why a follower's fetch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRefused {
    /// Not the leader any more (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The fetcher is not a replica of the partition (NOT_LEADER_OR_FOLLOWER, as Kafka).
    NotReplica,
    /// A fetch offset past the leader's log end (OFFSET_OUT_OF_RANGE).
    OffsetOutOfRange,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's fetch offset, which is its fsynced end (`replica` module doc); -1 until
    /// it fetches from this leader.
    durable_end: i64,
    /// Kafka's lastCaughtUpTimeMs.
    last_caught_up: Duration,
    /// When it last fetched, and the leader's log end then (Kafka's lastFetchTimeMs and
    /// lastFetchLeaderLogEndOffset): a fetch reaching the previous fetch's end was caught up
    /// at the previous fetch.
    last_fetch: Duration,
    last_fetch_leader_end: i64,
}

pub struct Leader {
    id: BrokerId,
    config: ReplicaConfig,
    planted: Option<ReplicaBug>,
    /// As the controller committed it (or, planted, as this leader believes it).
    state: PartitionState,
    /// The ISR proposed in the AlterPartition in flight.
    pending: Option<BTreeSet<BrokerId>>,
    /// The log end when this leadership began (Kafka's leaderEpochStartOffset): a follower
    /// joins the ISR only once it has everything of earlier epochs.
    epoch_start_offset: i64,
    followers: BTreeMap<BrokerId, Progress>,
    log_end: i64,
    durable_end: i64,
    high_watermark: i64,
    /// acks=all produces by request id: the end offset the HW must reach.
    waiters: BTreeMap<RequestId, i64>,
    /// A newer leader epoch was seen: nothing is acknowledged any more.
    deposed: bool,
}

impl Leader {
    /// Leadership of `state` begins at `now` on a log ending at `log_end`, fsynced to
    /// `durable_end`, whose HW (as a follower) was `high_watermark`. ISR members count as
    /// caught up now, as Kafka's, so none is shrunk before it could fetch.
    pub fn new(
        id: BrokerId,
        state: PartitionState,
        log: (i64, i64, i64),
        now: Duration,
        config: ReplicaConfig,
        planted: Option<ReplicaBug>,
    ) -> Leader {
        let (log_end, durable_end, high_watermark) = log;
        assert_eq!(state.leader, id, "a leader leads");
        assert!(0 <= durable_end && durable_end <= log_end);
        // A follower's HW is capped by its log end, not its fsynced end; the leader's may not
        // pass what it has fsynced. Lower is always safe: it only waits longer.
        let high_watermark = high_watermark.clamp(0, durable_end);
        let followers = state
            .replicas
            .iter()
            .filter(|&&replica| replica != id)
            .map(|&replica| {
                let in_sync = state.isr.contains(&replica);
                let progress = Progress {
                    durable_end: -1,
                    last_caught_up: if in_sync { now } else { Duration::ZERO },
                    last_fetch: Duration::ZERO,
                    last_fetch_leader_end: -1,
                };
                (replica, progress)
            })
            .collect();
        let leader = Leader {
            id,
            config,
            planted,
            state,
            pending: None,
            epoch_start_offset: log_end,
            followers,
            log_end,
            durable_end,
            high_watermark,
            waiters: BTreeMap::new(),
            deposed: false,
        };
        leader.invariants();
        leader
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.leader_epoch
    }

    /// The ISR as committed by the controller (as believed here).
    pub fn isr(&self) -> &BTreeSet<BrokerId> {
        &self.state.isr
    }

    pub fn is_deposed(&self) -> bool {
        self.deposed
    }

    /// The log end as last fed (`appended`).
    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    /// Where this leadership began (Kafka's leaderEpochStartOffset): until the HW reaches it,
    /// offsets below the log end may still belong to an uncommitted earlier epoch (KIP-207:
    /// ListOffsets answers OFFSET_NOT_AVAILABLE meanwhile).
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    /// A topic config change (`min.insync.replicas`) or a broker setting, while leading.
    pub fn config_set(&mut self, config: ReplicaConfig) {
        self.config = config;
    }

    /// The larger of the committed and the proposed ISR (KIP-497's maximal ISR): the set the
    /// HW waits for while a change is in flight.
    fn isr_maximal(&self) -> BTreeSet<BrokerId> {
        let mut isr = self.state.isr.clone();
        if let Some(pending) = &self.pending {
            isr.extend(pending.iter().copied());
        }
        isr
    }

    /// Whether an acks=all produce may be appended now (Kafka checks before the append).
    pub fn append_admit(&self) -> Result<(), AckError> {
        if self.deposed {
            return Err(AckError::NotLeaderOrFollower);
        }
        if self.state.isr.len() < self.config.min_insync {
            return Err(AckError::NotEnoughReplicas);
        }
        Ok(())
    }

    /// The log now ends at `log_end` after an append; `waiter` is the acks=all produce whose
    /// last batch ends there, answered once the HW covers it.
    pub fn appended(&mut self, outputs: &mut Vec<Output>, log_end: i64, waiter: Option<RequestId>) {
        assert!(
            log_end >= self.log_end,
            "the log end never moves back on a leader"
        );
        self.log_end = log_end;
        if let Some(request) = waiter {
            if self.deposed {
                let result = Err(AckError::NotLeaderOrFollower);
                outputs.push(Output::Ack { request, result });
            } else {
                let previous = self.waiters.insert(request, log_end);
                assert!(previous.is_none(), "request ids are unique");
            }
        }
        self.high_watermark_update(outputs);
    }

    /// An acks=all produce waits for the HW to reach `end`: the end of its batches, already in
    /// the log (freshly appended, or a retried duplicate's original). Answered at once if the
    /// HW covers it already.
    pub fn wait(&mut self, outputs: &mut Vec<Output>, request: RequestId, end: i64) {
        if self.deposed {
            let result = Err(AckError::NotLeaderOrFollower);
            outputs.push(Output::Ack { request, result });
            return;
        }
        assert!(end <= self.log_end, "a waiter's batches are in the log");
        let previous = self.waiters.insert(request, end);
        assert!(previous.is_none(), "request ids are unique");
        self.waiters_complete(outputs);
    }

    /// The acks=all produces waiting for the HW.
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    /// An acks=all produce gave up waiting (its timeout): it is forgotten, unanswered.
    pub fn wait_cancel(&mut self, request: RequestId) {
        self.waiters.remove(&request);
    }

    /// The leader's own group commit made its log durable to `durable_end`.
    pub fn durable(&mut self, outputs: &mut Vec<Output>, durable_end: i64) {
        assert!(
            durable_end <= self.log_end,
            "only appended bytes are fsynced"
        );
        self.durable_end = self.durable_end.max(durable_end);
        self.high_watermark_update(outputs);
    }

    /// A follower's fetch at `fetch_offset`, its fsynced end, at `now`. On success the shell
    /// reads from `fetch_offset` and answers with `high_watermark()`.
    pub fn fetched(
        &mut self,
        outputs: &mut Vec<Output>,
        follower: BrokerId,
        fetch_offset: i64,
        now: Duration,
    ) -> Result<(), FetchRefused> {
        if self.deposed {
            return Err(FetchRefused::NotLeader);
        }
        if fetch_offset < 0 || fetch_offset > self.log_end {
            return Err(FetchRefused::OffsetOutOfRange);
        }
        let log_end = self.log_end;
        let Some(progress) = self.followers.get_mut(&follower) else {
            return Err(FetchRefused::NotReplica);
        };
        // Kafka's Replica.updateFetchStateOrThrow.
        if fetch_offset >= log_end {
            progress.last_caught_up = progress.last_caught_up.max(now);
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up = progress.last_caught_up.max(progress.last_fetch);
        }
        progress.durable_end = fetch_offset;
        progress.last_fetch = now;
        progress.last_fetch_leader_end = log_end;
        self.isr_expand_maybe(outputs, follower, fetch_offset);
        self.high_watermark_update(outputs);
        Ok(())
    }

    /// Kafka's `isFollowerInSync`: a follower outside the ISR joins once its durable end
    /// reached the HW and this leadership's start.
    fn isr_expand_maybe(&mut self, outputs: &mut Vec<Output>, follower: BrokerId, end: i64) {
        if self.pending.is_some() || self.isr_maximal().contains(&follower) {
            return;
        }
        if end >= self.high_watermark && end >= self.epoch_start_offset {
            let mut isr = self.state.isr.clone();
            isr.insert(follower);
            self.propose(outputs, isr);
        }
    }

    /// Time passes: followers of the ISR not caught up for `lag_time_max` are proposed out.
    pub fn tick(&mut self, outputs: &mut Vec<Output>, now: Duration) {
        if self.deposed || self.pending.is_some() {
            return;
        }
        let lagging: BTreeSet<BrokerId> = self
            .state
            .isr
            .iter()
            .filter(|&&member| member != self.id)
            .filter(|member| {
                let progress = &self.followers[member];
                let caught_up = progress.durable_end == self.log_end
                    || now.saturating_sub(progress.last_caught_up) <= self.config.lag_time_max;
                !caught_up
            })
            .copied()
            .collect();
        if lagging.is_empty() {
            return;
        }
        let isr: BTreeSet<BrokerId> = self.state.isr.difference(&lagging).copied().collect();
        if ReplicaBug::active(self.planted, ReplicaBug::IsrShrinkLocal) {
            self.state.isr = isr;
            self.waiters_complete(outputs);
            self.high_watermark_update(outputs);
            return;
        }
        self.propose(outputs, isr);
    }

    fn propose(&mut self, outputs: &mut Vec<Output>, isr: BTreeSet<BrokerId>) {
        assert!(
            self.pending.is_none(),
            "one AlterPartition in flight at a time"
        );
        assert!(isr.contains(&self.id), "the leader stays in its ISR");
        outputs.push(Output::AlterPartition {
            leader_epoch: self.state.leader_epoch,
            partition_epoch: self.state.partition_epoch,
            isr: isr.clone(),
        });
        self.pending = Some(isr);
    }

    /// The controller's AlterPartition answer: the partition's new state, or an error (the
    /// proposal was refused: INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH...), after which the
    /// leader may propose again.
    pub fn alter_partition_answered(
        &mut self,
        outputs: &mut Vec<Output>,
        answer: Result<PartitionState, ()>,
    ) {
        match answer {
            Ok(state) => self.partition_state(outputs, state),
            Err(()) => self.pending = None,
        }
    }

    /// The partition's state from the controller (an AlterPartition answer or the image): a
    /// newer partition epoch replaces ours; a newer leader epoch, or another leader, deposes
    /// this one; a stale state is ignored.
    pub fn partition_state(&mut self, outputs: &mut Vec<Output>, state: PartitionState) {
        if state.leader_epoch > self.state.leader_epoch || state.leader != self.id {
            if state.leader_epoch >= self.state.leader_epoch {
                self.depose(outputs);
            }
            return;
        }
        if state.leader_epoch < self.state.leader_epoch
            || state.partition_epoch <= self.state.partition_epoch
        {
            return;
        }
        assert!(state.isr.contains(&self.id), "the leader is in its ISR");
        for member in &state.isr {
            assert!(state.replicas.contains(member), "ISR ⊆ replicas");
        }
        self.state = state;
        self.pending = None;
        self.waiters_complete(outputs);
        self.high_watermark_update(outputs);
    }

    /// A newer leader epoch was seen: every waiter fails, and nothing is acknowledged again.
    pub fn depose(&mut self, outputs: &mut Vec<Output>) {
        self.deposed = true;
        self.pending = None;
        for (request, _) in std::mem::take(&mut self.waiters) {
            let result = Err(AckError::NotLeaderOrFollower);
            outputs.push(Output::Ack { request, result });
        }
    }

    fn high_watermark_update(&mut self, outputs: &mut Vec<Output>) {
        if self.deposed {
            return;
        }
        let members: BTreeSet<BrokerId> =
            if ReplicaBug::active(self.planted, ReplicaBug::HwOverAllReplicas) {
                self.state.replicas.iter().copied().collect()
            } else {
                self.isr_maximal()
            };
        let lowest = members
            .iter()
            .map(|member| match *member == self.id {
                true => self.durable_end,
                false => self.followers.get(member).map_or(-1, |p| p.durable_end),
            })
            .min()
            .expect("the ISR is never empty");
        if lowest > self.high_watermark {
            self.high_watermark = lowest;
            outputs.push(Output::HighWatermark { offset: lowest });
            self.waiters_complete(outputs);
        }
        self.invariants();
    }

    /// Answers the waiters the HW covers (Kafka's `checkEnoughReplicasReachOffset`).
    fn waiters_complete(&mut self, outputs: &mut Vec<Output>) {
        let covered: Vec<RequestId> = self
            .waiters
            .iter()
            .filter(|(_, end)| **end <= self.high_watermark)
            .map(|(request, _)| *request)
            .collect();
        let enough = self.state.isr.len() >= self.config.min_insync;
        for request in covered {
            self.waiters.remove(&request);
            let result = match enough {
                true => Ok(()),
                false => Err(AckError::NotEnoughReplicasAfterAppend),
            };
            outputs.push(Output::Ack { request, result });
        }
    }

    fn invariants(&self) {
        assert!(self.state.isr.contains(&self.id), "leader ∈ ISR");
        assert!(
            self.high_watermark <= self.durable_end,
            "HW ≤ the leader's durable end"
        );
        assert!(self.durable_end <= self.log_end);
    }
}
