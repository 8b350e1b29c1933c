//! `RaftNode`: one raft-rs `RawNode` on `DurableStorage`, driving one `StateMachine`.
//!
//! raft-rs decides everything; this wrapper only honours its Ready contract (raw_node.rs):
//! 1. `messages()` (a leader's appends and heartbeats) may go out at once;
//! 2. a snapshot is persisted, then restored into the state machine;
//! 3. committed entries are applied, in order (they were persisted by an earlier ready);
//! 4. entries and the hard state are persisted and synced, and only then are
//!    `persisted_messages()` (votes, append responses) released (a hard state whose only change
//!    is the commit index is written unsynced, as `must_sync` allows);
//! 5. `advance_append`, then the light ready's commit index, messages and committed entries;
//!    `advance_apply_to` the index applied.
//!
//! `handle_ready` returns the messages to send; the caller sends them after it returns, so every
//! message leaves after the sync of the ready it came with.
//!
//! Determinism: raft-rs draws its randomized election timeout from `thread_rng`. After every
//! call that may have reset it (raft-rs resets it whenever it zeroes `election_elapsed`), the
//! node overrides it from its own seeded rng.

use super::planted::RaftBug;
use super::storage::DurableStorage;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use runtime::rng::{ChaCha8Rng, Rng};
use runtime::Disk;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The largest proposal: far below a log record's and a frame's limits, so one always fits.
pub const PROPOSAL_BYTES_MAX: usize = 8 << 20;

/// What the log replicates into: the metadata image, in production.
pub trait StateMachine {
    /// Applies the committed entry at `index` (never an empty one: those are Raft's own).
    fn apply(&mut self, index: u64, data: &[u8]);
    /// The whole state, as of the last applied index.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state by a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]);
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    /// The voters (`--voters`); fixed, no membership changes.
    pub voters: Vec<u64>,
    /// Ticks without a leader before an election; randomized in `[election, 2 * election)`.
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshots of the state machine (and log compactions).
    pub snapshot_interval_entries: u64,
    /// Entries a compaction keeps at and below the snapshot, for followers a little behind.
    pub snapshot_keep_entries: u64,
    /// Bytes of entries in one append message.
    pub message_bytes_max: u64,
    /// Planted bug (feature `planted-bugs`; inert otherwise).
    pub planted: Option<RaftBug>,
}

impl NodeConfig {
    pub fn new(id: u64, voters: Vec<u64>) -> NodeConfig {
        NodeConfig {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_interval_entries: 1024,
            snapshot_keep_entries: 128,
            message_bytes_max: 1 << 20,
            planted: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub role: Role,
    pub commit: u64,
    pub applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows of, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// raft-rs refused it (a leadership transfer, or too many uncommitted bytes).
    #[error("proposal dropped by raft")]
    Dropped,
    #[error("proposal of {0} bytes over the limit")]
    TooLarge(usize),
}

/// What became of a proposal this node accepted as leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed and applied at its index.
    Committed,
    /// Not known to commit: the node lost leadership, or another entry took its index. It may
    /// still be committed by a later leader (as any proposal whose answer is lost), so callers
    /// rebuild their view from what the state machine applied.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub index: u64,
    pub context: Vec<u8>,
    pub outcome: Outcome,
}

pub struct RaftNode<M: StateMachine> {
    raw: RawNode<DurableStorage>,
    machine: M,
    config: NodeConfig,
    rng: ChaCha8Rng,
    /// The last index handed to the state machine (or restored from a snapshot).
    applied: u64,
    /// `ApplyUncommitted`: entries up to here were applied before they committed.
    applied_early: u64,
    /// The index of the last snapshot taken or installed.
    snapshot_index: u64,
    /// This leader's proposals not yet applied: index -> (term, context).
    pending: BTreeMap<u64, (u64, Vec<u8>)>,
    completions: Vec<Completion>,
}

impl<M: StateMachine> RaftNode<M> {
    /// Opens the node's Raft state in `dir` (bootstrapping it from `config.voters` when empty),
    /// restores the state machine from the latest snapshot, and starts as a follower.
    pub fn open(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        dir: &Path,
        mut machine: M,
        rng: ChaCha8Rng,
    ) -> io::Result<RaftNode<M>> {
        assert!(
            config.voters.contains(&config.id),
            "a node is one of the voters"
        );
        let storage = DurableStorage::open(disk, dir, &config.voters, config.planted)?;
        let snapshot = storage.snapshot_latest();
        let snapshot_index = snapshot.get_metadata().index;
        if snapshot_index > 0 {
            machine.restore(snapshot_index, &snapshot.data);
        }
        // raft-rs hands out committed entries above `applied`: the snapshot's index, so the
        // entries a compaction kept below it are not applied twice.
        let applied = if RaftBug::active(config.planted, RaftBug::SnapshotWithoutIndex) {
            0
        } else {
            snapshot_index
        };
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: 2 * config.election_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: config.message_bytes_max,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger)
            .map_err(|error| io::Error::other(format!("raft: {error}")))?;
        let mut node = RaftNode {
            raw,
            machine,
            config,
            rng,
            applied: snapshot_index,
            applied_early: 0,
            snapshot_index,
            pending: BTreeMap::new(),
            completions: Vec::new(),
        };
        node.election_timeout_draw(true);
        // A lone voter is its own quorum: waiting an election timeout would only delay the
        // first write (zero-config startup). It stands at once and wins its own vote.
        if node.config.voters == [node.config.id] {
            node.raw
                .campaign()
                .map_err(|error| io::Error::other(format!("raft: {error}")))?;
            node.after_input();
        }
        Ok(node)
    }

    /// One tick of the logical clock (the caller decides how long one is).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.after_input();
    }

    /// A message from a peer. Messages not for this node, from outside the voters, of raft-rs's
    /// local types, or that raft-rs refuses are dropped: a peer's bytes must never stop the node.
    pub fn step(&mut self, message: Message) {
        if raft::raw_node::is_local_msg(message.get_msg_type())
            || message.to != self.config.id
            || !self.config.voters.contains(&message.from)
        {
            tracing::debug!(
                "raft node {}: dropped a {:?} from {} to {}",
                self.config.id,
                message.get_msg_type(),
                message.from,
                message.to
            );
            return;
        }
        if let Err(error) = self.raw.step(message) {
            tracing::debug!("raft node {}: step refused: {error}", self.config.id);
        }
        self.after_input();
    }

    /// Proposes `data`; on success, the index it will commit at if it commits. Its outcome comes
    /// back from `completions_take` with `context`.
    pub fn propose(&mut self, data: Vec<u8>, context: Vec<u8>) -> Result<u64, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            let leader = self.raw.raft.leader_id;
            return Err(ProposeError::NotLeader {
                leader: (leader != 0).then_some(leader),
            });
        }
        if data.len() + context.len() > PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge(data.len() + context.len()));
        }
        let last = self.raw.raft.raft_log.last_index();
        let result = self.raw.propose(context.clone(), data);
        self.after_input();
        result.map_err(|_| ProposeError::Dropped)?;
        let index = self.raw.raft.raft_log.last_index();
        if index != last + 1 {
            return Err(ProposeError::Dropped);
        }
        self.pending.insert(index, (self.raw.raft.term, context));
        Ok(index)
    }

    /// Tells raft-rs a message to `peer` could not be sent.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Tells raft-rs whether a snapshot message to `peer` was delivered.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Handles one Ready (see the module doc): persists, applies, and returns the messages to
    /// send. An error means the disk failed: the node must stop (its Raft state may be ahead of
    /// its disk), and restart from what the disk holds.
    pub fn handle_ready(&mut self) -> io::Result<Vec<Message>> {
        let mut out = Vec::new();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();
        out.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().snapshot_install(&snapshot)?;
            let index = snapshot.get_metadata().index;
            self.machine.restore(index, &snapshot.data);
            self.applied = index;
            self.applied_early = self.applied_early.max(index);
            self.snapshot_index = index;
            self.pending_settle(index, None);
        }
        self.apply(ready.take_committed_entries());
        if RaftBug::active(self.config.planted, RaftBug::ApplyUncommitted) {
            self.apply_early(ready.entries());
        }
        match ready.hs() {
            // Only the commit index moved: raft-rs allows it unsynced (`must_sync`).
            Some(hard_state) if !ready.must_sync() => {
                self.raw.mut_store().persist_commit(hard_state)?
            }
            hard_state => self.raw.mut_store().persist(ready.entries(), hard_state)?,
        }
        out.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().commit_set(commit);
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply_to(self.applied);
        self.leadership_check();
        self.compact_maybe()?;
        Ok(out)
    }

    /// Whether `handle_ready` has work (the shell skips the blocking pool when not).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Outcomes of this node's proposals since the last call, in the order they were settled.
    pub fn completions_take(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    pub fn status(&self) -> Status {
        let raft = &self.raw.raft;
        Status {
            id: self.config.id,
            leader: (raft.leader_id != 0).then_some(raft.leader_id),
            term: raft.term,
            role: match raft.state {
                StateRole::Follower => Role::Follower,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Candidate => Role::Candidate,
                StateRole::Leader => Role::Leader,
            },
            commit: raft.raft_log.committed,
            applied: self.applied,
        }
    }

    /// Each voter's log end as this leader knows it: raft-rs's `Progress::matched` for the
    /// others (0 until they answered this term), its own last index for itself. Empty unless
    /// leading.
    pub fn progress(&self) -> BTreeMap<u64, u64> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return BTreeMap::new();
        }
        raft.prs()
            .iter()
            .map(|(id, progress)| {
                let end = if *id == self.config.id {
                    raft.raft_log.last_index()
                } else {
                    progress.matched
                };
                (*id, end)
            })
            .collect()
    }

    /// Hands leadership to the most caught-up voter heard from recently (raft-rs's
    /// `transfer_leader`: the leader brings it up to date, then tells it to stand at once, so
    /// the quorum does not wait an election timeout for a leader that is leaving). The voter it
    /// chose, or None if this node does not lead or no other voter is active. raft-rs gives up
    /// on a transfer not done within an election timeout; proposals are dropped meanwhile.
    pub fn leadership_transfer(&mut self) -> Option<u64> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let transferee = raft
            .prs()
            .iter()
            .filter(|(id, progress)| **id != self.config.id && progress.recent_active)
            .max_by_key(|(id, progress)| (progress.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)?;
        self.raw.transfer_leader(transferee);
        self.after_input();
        Some(transferee)
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The node's Raft storage (for tests and diagnostics).
    pub fn storage(&self) -> &DurableStorage {
        self.raw.store()
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            self.applied = index;
            if index > self.applied_early
                && entry.get_entry_type() == EntryType::EntryNormal
                && !entry.data.is_empty()
            {
                self.machine.apply(index, &entry.data);
            }
            // Membership is fixed (`--voters`): nobody proposes a conf change, so none applies.
            self.pending_settle(index, Some(entry.term));
        }
    }

    /// `ApplyUncommitted`: applies appended entries before they commit.
    fn apply_early(&mut self, entries: &[Entry]) {
        for entry in entries {
            if entry.index > self.applied.max(self.applied_early) {
                if !entry.data.is_empty() {
                    self.machine.apply(entry.index, &entry.data);
                }
                self.applied_early = entry.index;
            }
        }
    }

    /// Settles the pending proposals at and below `index`: the one at `index` committed if the
    /// entry applied there has its term (a leader writes one entry per index and term).
    fn pending_settle(&mut self, index: u64, term: Option<u64>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (at, (proposed_term, context)) = entry.remove_entry();
            let outcome = if at == index && term == Some(proposed_term) {
                Outcome::Committed
            } else {
                Outcome::Failed
            };
            self.completions.push(Completion {
                index: at,
                context,
                outcome,
            });
        }
    }

    /// A node that is no longer leader fails its pending proposals (see `Outcome::Failed`).
    fn leadership_check(&mut self) {
        if self.raw.raft.state != StateRole::Leader && !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            for (index, (_, context)) in pending {
                self.completions.push(Completion {
                    index,
                    context,
                    outcome: Outcome::Failed,
                });
            }
        }
    }

    fn compact_maybe(&mut self) -> io::Result<()> {
        let committed = self.raw.store().hard_state().commit;
        let index = self.applied.min(committed);
        if index < self.snapshot_index + self.config.snapshot_interval_entries {
            return Ok(());
        }
        let data = self.machine.snapshot();
        let keep = self.config.snapshot_keep_entries;
        self.raw.mut_store().compact(index, data, keep)?;
        self.snapshot_index = index;
        Ok(())
    }

    fn after_input(&mut self) {
        self.election_timeout_draw(false);
        self.leadership_check();
    }

    /// Overrides raft-rs's randomized election timeout from our rng whenever raft-rs may have
    /// drawn a new one from `thread_rng` (it does so only when it zeroes `election_elapsed`).
    fn election_timeout_draw(&mut self, force: bool) {
        let raft = &mut self.raw.raft;
        if force || raft.election_elapsed == 0 {
            let ticks = self.config.election_ticks;
            let timeout = self.rng.gen_range(ticks..2 * ticks);
            raft.set_randomized_election_timeout(timeout);
        }
    }
}

/// Whether a message carries a snapshot (the sender must report its delivery).
pub fn is_snapshot(message: &Message) -> bool {
    message.get_msg_type() == MessageType::MsgSnapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;
    use rand::SeedableRng;
    use runtime::MemDisk;

    #[derive(Default)]
    struct Log(Vec<(u64, Vec<u8>)>);

    impl StateMachine for Log {
        fn apply(&mut self, index: u64, data: &[u8]) {
            self.0.push((index, data.to_vec()));
        }
        fn snapshot(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for (index, data) in &self.0 {
                out.extend_from_slice(&index.to_le_bytes());
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            out
        }
        fn restore(&mut self, _index: u64, mut data: &[u8]) {
            self.0.clear();
            while !data.is_empty() {
                let index = u64::from_le_bytes(data[..8].try_into().unwrap());
                let len = data[8] as usize;
                self.0.push((index, data[9..9 + len].to_vec()));
                data = &data[9 + len..];
            }
        }
    }

    fn open(disk: &Arc<MemDisk>) -> RaftNode<Log> {
        let config = NodeConfig {
            snapshot_interval_entries: 4,
            snapshot_keep_entries: 2,
            ..NodeConfig::new(1, vec![1])
        };
        let rng = ChaCha8Rng::seed_from_u64(1);
        RaftNode::open(
            config,
            disk.clone(),
            Path::new("/raft"),
            Log::default(),
            rng,
        )
        .unwrap()
    }

    /// A single voter elects itself at open, without waiting an election timeout, commits its
    /// proposals with their contexts, snapshots and compacts, and after a restart rebuilds the
    /// same state machine, each entry applied once.
    #[test]
    fn single_voter_commits_snapshots_and_restarts() {
        let disk = MemDisk::new();
        let mut node = open(&disk);
        assert_eq!(node.status().role, Role::Leader, "no tick needed");
        assert_eq!(node.status().term, 1);
        // Messages from outside the voters, or for another node, change nothing.
        for (from, to) in [(9, 1), (1, 2)] {
            let mut stray = Message {
                from,
                to,
                term: 100,
                ..Default::default()
            };
            stray.set_msg_type(MessageType::MsgHeartbeat);
            node.step(stray);
            assert_eq!(node.status().term, 1);
        }
        for _ in 0..40 {
            node.tick();
            assert!(node.handle_ready().unwrap().is_empty(), "no peers");
        }
        assert_eq!(node.status().role, Role::Leader);
        for n in 0..10u8 {
            let index = node.propose(vec![n], vec![n, n]).unwrap();
            node.handle_ready().unwrap();
            assert_eq!(
                node.completions_take(),
                vec![Completion {
                    index,
                    context: vec![n, n],
                    outcome: Outcome::Committed
                }]
            );
        }
        let status = node.status();
        assert_eq!(
            (status.leader, status.commit, status.applied),
            (Some(1), 11, 11)
        );
        let applied = node.machine().0.clone();
        assert_eq!(applied.len(), 10);
        let snapshot = node.storage().snapshot_latest().get_metadata().index;
        assert!(snapshot >= 8, "snapshot at {snapshot}");
        assert!(
            node.storage().first_index().unwrap() < snapshot,
            "a tail is kept"
        );
        drop(node);
        disk.crash_process();
        let mut node = open(&disk);
        // The commit index is not durable: entries past the snapshot apply again once the
        // node, re-elected, commits them again.
        for _ in 0..40 {
            node.tick();
            node.handle_ready().unwrap();
        }
        assert_eq!(node.status().role, Role::Leader);
        assert_eq!(node.machine().0, applied);
        assert_eq!(node.status().applied, 12, "and the new term's empty entry");
    }
}
