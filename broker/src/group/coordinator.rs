//! `Coordinator`: every group this node coordinates, behind one `step(outputs, input)`.
//!
//! It routes requests to their `Group`, turns membership changes into group-metadata records and
//! commits into offset records (`Output::Persist`, one write at a time, to the partition of
//! `__consumer_offsets` that owns the group), and acknowledges a commit only when the shell
//! reports its write durable (`Input::Persisted`). Writes to one partition are appended in the
//! order emitted, and a durable write implies every earlier write to that partition is durable
//! (a log is durable as a prefix), so `Persisted` completes every earlier write too: commits
//! apply in log order even if the shell's waiters wake out of order.
//!
//! Ordering argument for group metadata: a group's metadata record and its later commits go to
//! the same partition, so a commit can be durable only if the metadata before it is. SyncGroup
//! therefore answers at once, without waiting for the metadata's fsync; a crash in between
//! brings back the previous generation, whose members are then told ILLEGAL_GENERATION.

use super::classic::{Group, GroupState};
use super::records::OffsetsRecord;
use super::{
    CommitRequest, Committed, GroupConfig, GroupDescription, GroupError, JoinRequest, JoinResponse,
    Leaving, MemberRef, RequestId, SyncRequest, SyncResponse, TopicPartition, TxnCommitRequest,
    WriteId,
};
use crate::planted::Bug;
use runtime::rng::{ChaCha8Rng, RngCore};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything that happens to the coordinator. `now` is monotonic time since the shell started.
#[derive(Debug, Clone)]
pub enum Input {
    Join {
        request: RequestId,
        now: Duration,
        join: JoinRequest,
    },
    Sync {
        request: RequestId,
        now: Duration,
        sync: SyncRequest,
    },
    Heartbeat {
        request: RequestId,
        now: Duration,
        member: MemberRef,
    },
    Leave {
        request: RequestId,
        now: Duration,
        group_id: String,
        members: Vec<Leaving>,
    },
    OffsetCommit {
        request: RequestId,
        now: Duration,
        commit: CommitRequest,
    },
    Delete {
        request: RequestId,
        now: Duration,
        group_ids: Vec<String>,
    },
    /// TxnOffsetCommit: offsets pending until the producer's transaction ends.
    TxnOffsetCommit {
        request: RequestId,
        now: Duration,
        commit: TxnCommitRequest,
    },
    /// A transaction marker is durable on partition `partition` of `__consumer_offsets`: the
    /// producer's pending offsets there become committed (`commit`) or are dropped.
    TxnMarker {
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
    /// OffsetDelete: drop the group's committed offsets of `partitions`.
    OffsetDelete {
        request: RequestId,
        now: Duration,
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
    Tick {
        now: Duration,
    },
    /// The write, and every earlier write to its partition, is durable.
    Persisted {
        write: WriteId,
    },
    /// The write could not be made durable (append or fsync failed).
    PersistFailed {
        write: WriteId,
    },
}

/// One outcome per partition, in request order (OffsetDelete).
pub type PartitionResults = Vec<(TopicPartition, Result<(), GroupError>)>;

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Join {
        request: RequestId,
        result: Result<JoinResponse, GroupError>,
    },
    Sync {
        request: RequestId,
        result: Result<SyncResponse, GroupError>,
    },
    Heartbeat {
        request: RequestId,
        result: Result<(), GroupError>,
    },
    /// One result per member, in request order.
    Leave {
        request: RequestId,
        results: Vec<Result<(), GroupError>>,
    },
    OffsetCommit {
        request: RequestId,
        result: Result<(), GroupError>,
    },
    TxnOffsetCommit {
        request: RequestId,
        result: Result<(), GroupError>,
    },
    /// One result per group, in request order.
    Delete {
        request: RequestId,
        results: Vec<(String, Result<(), GroupError>)>,
    },
    /// A group-level error, or one result per partition in request order; answered once the
    /// tombstones are durable.
    OffsetDelete {
        request: RequestId,
        result: Result<PartitionResults, GroupError>,
    },
    /// Append `records` to partition `partition` of `__consumer_offsets`, then report the write.
    /// `producer`: a transactional batch of this producer id and epoch (TxnOffsetCommit).
    Persist {
        partition: i32,
        write: WriteId,
        records: Vec<OffsetsRecord>,
        producer: Option<(i64, i16)>,
    },
}

/// What to do once a write is durable.
#[derive(Debug, Clone)]
enum After {
    Nothing,
    Commit {
        request: RequestId,
        group_id: String,
        incarnation: u64,
        offsets: Vec<(TopicPartition, Committed)>,
    },
    /// A TxnOffsetCommit whose transactional batch is durable: its offsets become pending, or,
    /// if the transaction's marker came first (`decided`), committed or dropped at once.
    TxnCommit {
        request: RequestId,
        group_id: String,
        producer_id: i64,
        offsets: Vec<(TopicPartition, Committed)>,
        decided: Option<bool>,
    },
    /// One group of a DeleteGroups request.
    Delete {
        request: RequestId,
        index: usize,
    },
    /// An OffsetDelete whose tombstones were written: drop the offsets, then answer.
    OffsetDelete {
        request: RequestId,
        group_id: String,
        incarnation: u64,
        results: PartitionResults,
    },
}

#[derive(Debug, Clone)]
struct WritePending {
    partition: i32,
    after: After,
}

#[derive(Debug, Clone)]
struct DeletePending {
    results: Vec<(String, Result<(), GroupError>)>,
    writes_left: usize,
}

/// Rounds of one tick before a group whose deadlines never clear is called a bug.
const TICK_ROUNDS_MAX: usize = 16;

/// Where a partition of `__consumer_offsets` stands on this coordinator (Kafka's coordinator
/// runtime states). A node-local topic's partitions are all `Active` from the start; a
/// replicated one's only while this broker leads it: `Loading` from its replay until the HW
/// covers what the replay read (state above the HW could still vanish in a failover, so it is
/// not served), then `Active`. A partition absent from the map is coordinated elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    Loading,
    Active,
}

#[derive(Debug)]
pub struct Coordinator {
    config: GroupConfig,
    /// Partitions of `__consumer_offsets`: fixed once the topic exists.
    partition_count: i32,
    /// The partitions this coordinator holds (`PartitionState`); groups of no other exist here.
    partitions: BTreeMap<i32, PartitionState>,
    groups: BTreeMap<String, Group>,
    writes: BTreeMap<WriteId, WritePending>,
    write_next: WriteId,
    deletes: BTreeMap<RequestId, DeletePending>,
    /// Transactional offsets awaiting their marker: per group, per producer id.
    txn_pending: BTreeMap<String, BTreeMap<i64, BTreeMap<TopicPartition, Committed>>>,
    /// The epoch of the last marker seen per producer id: a TxnOffsetCommit from an older epoch
    /// is a zombie's (its transaction was aborted by a newer producer or a timeout) and refused,
    /// or its offsets would wait for a marker that never comes, or ride on a later commit.
    txn_marker_epochs: BTreeMap<i64, i16>,
    incarnation_next: u64,
    rng: ChaCha8Rng,
    /// The planted bug switched on (feature `planted-bugs` only; always `None` otherwise).
    planted: Option<Bug>,
}

impl Coordinator {
    /// The coordinator of a node-local `__consumer_offsets`: every partition `Active`.
    pub fn new(config: GroupConfig, partition_count: i32, rng: ChaCha8Rng) -> Coordinator {
        let mut core = Coordinator::replicated(config, partition_count, rng);
        core.partitions = (0..partition_count)
            .map(|partition| (partition, PartitionState::Active))
            .collect();
        core
    }

    /// The coordinator of a replicated `__consumer_offsets`: no partition held until this
    /// broker leads it (`partition_load_begin`).
    pub fn replicated(config: GroupConfig, partition_count: i32, rng: ChaCha8Rng) -> Coordinator {
        assert!(partition_count > 0);
        Coordinator {
            config,
            partition_count,
            partitions: BTreeMap::new(),
            groups: BTreeMap::new(),
            writes: BTreeMap::new(),
            write_next: 1,
            deletes: BTreeMap::new(),
            txn_pending: BTreeMap::new(),
            txn_marker_epochs: BTreeMap::new(),
            incarnation_next: 1,
            rng,
            planted: None,
        }
    }

    /// Switches on a planted bug (DESIGN.md, Planted bugs). The core obeys it in every build, so
    /// its unit tests can plant one; the shell passes one only with the `planted-bugs` feature.
    pub fn planted_set(&mut self, planted: Option<Bug>) {
        self.planted = planted;
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Partitions of `__consumer_offsets`.
    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// The partition of `__consumer_offsets` that owns `group_id`: Kafka's
    /// `Utils.abs(groupId.hashCode) % partitions`, with Java's `String.hashCode`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.partition_count)
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.groups.get(group_id).map(Group::describe)
    }

    /// Whether an open transaction holds offsets of `group_id` for `partition` (OffsetFetch's
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn txn_offsets_pending(&self, group_id: &str, partition: &TopicPartition) -> bool {
        self.txn_pending.get(group_id).is_some_and(|producers| {
            producers
                .values()
                .any(|offsets| offsets.contains_key(partition))
        })
    }

    /// The partitions of `group_id` with transactional offsets pending.
    pub fn txn_pending_partitions(&self, group_id: &str) -> Vec<TopicPartition> {
        let mut partitions: Vec<TopicPartition> = self
            .txn_pending
            .get(group_id)
            .into_iter()
            .flat_map(|producers| {
                producers
                    .values()
                    .flat_map(|offsets| offsets.keys().cloned())
            })
            .collect();
        partitions.sort();
        partitions.dedup();
        partitions
    }

    /// Sets the partition count before any partition is held: a replicated `__consumer_offsets`
    /// may have been created with another count than this broker's configuration.
    pub fn partition_count_set(&mut self, partition_count: i32) {
        assert!(partition_count > 0);
        assert!(
            self.partitions.is_empty(),
            "the count is fixed while partitions are held"
        );
        self.partition_count = partition_count;
    }

    /// `partition` starts loading: whatever this coordinator held of it is dropped first
    /// (`partition_unload`), then the shell replays it (`replay*`) and calls
    /// `partition_activate` once the HW covers the replayed end.
    pub fn partition_load_begin(&mut self, outputs: &mut Vec<Output>, partition: i32) {
        assert!((0..self.partition_count).contains(&partition));
        self.partition_unload(outputs, partition);
        self.partitions.insert(partition, PartitionState::Loading);
    }

    /// A loading partition's replayed state is committed: its groups are served.
    pub fn partition_activate(&mut self, partition: i32) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            *state = PartitionState::Active;
        }
        self.invariants_check();
    }

    pub fn partition_state(&self, partition: i32) -> Option<PartitionState> {
        self.partitions.get(&partition).copied()
    }

    /// `partition` leaves this coordinator (its leadership moved): writes still pending on it
    /// fail with NOT_COORDINATOR (their requests are answered; a write that later proves
    /// durable is found by the new coordinator's replay), requests parked in its groups'
    /// barriers too, and its groups and pending transactional offsets are forgotten.
    pub fn partition_unload(&mut self, outputs: &mut Vec<Output>, partition: i32) {
        if self.partitions.remove(&partition).is_none() {
            return;
        }
        let writes: Vec<WriteId> = self
            .writes
            .iter()
            .filter(|(_, pending)| pending.partition == partition)
            .map(|(write, _)| *write)
            .collect();
        for write in writes {
            let pending = self.writes.remove(&write).expect("listed");
            self.write_complete(outputs, pending.after, Err(GroupError::NotCoordinator));
        }
        let count = self.partition_count;
        let leaving: Vec<String> = self
            .groups
            .keys()
            .filter(|group_id| partition_for(group_id, count) == partition)
            .cloned()
            .collect();
        for group_id in &leaving {
            let mut group = self.groups.remove(group_id).expect("listed");
            group.requests_abandon(outputs, &GroupError::NotCoordinator);
        }
        self.txn_pending
            .retain(|group_id, _| partition_for(group_id, count) != partition);
        tracing::info!(
            partition,
            groups = leaving.len(),
            "offsets partition unloaded"
        );
    }

    /// Whether requests for `group_id` are served here: its partition is `Active`.
    pub fn serves(&self, group_id: &str) -> Result<(), GroupError> {
        match self.partitions.get(&self.partition_for(group_id)) {
            Some(PartitionState::Active) => Ok(()),
            Some(PartitionState::Loading) => Err(GroupError::CoordinatorLoadInProgress),
            None => Err(GroupError::NotCoordinator),
        }
    }

    /// Answers a request for a group this coordinator does not serve (`serves`) with its error;
    /// `true` if it did.
    fn refused(&self, outputs: &mut Vec<Output>, input: &Input) -> bool {
        let group_id = match input {
            Input::Join { join, .. } => &join.group_id,
            Input::Sync { sync, .. } => &sync.group_id,
            Input::Heartbeat { member, .. } => &member.group_id,
            Input::Leave { group_id, .. } | Input::OffsetDelete { group_id, .. } => group_id,
            Input::OffsetCommit { commit, .. } => &commit.member.group_id,
            Input::TxnOffsetCommit { commit, .. } => &commit.group_id,
            // Per group (`delete`); and the rest are not requests.
            Input::Delete { .. }
            | Input::TxnMarker { .. }
            | Input::Tick { .. }
            | Input::Persisted { .. }
            | Input::PersistFailed { .. } => return false,
        };
        let Err(error) = self.serves(group_id) else {
            return false;
        };
        let output = match input {
            Input::Join { request, .. } => Output::Join {
                request: *request,
                result: Err(error),
            },
            Input::Sync { request, .. } => Output::Sync {
                request: *request,
                result: Err(error),
            },
            Input::Heartbeat { request, .. } => Output::Heartbeat {
                request: *request,
                result: Err(error),
            },
            Input::Leave {
                request, members, ..
            } => Output::Leave {
                request: *request,
                results: vec![Err(error); members.len()],
            },
            Input::OffsetCommit { request, .. } => Output::OffsetCommit {
                request: *request,
                result: Err(error),
            },
            Input::TxnOffsetCommit { request, .. } => Output::TxnOffsetCommit {
                request: *request,
                result: Err(error),
            },
            Input::OffsetDelete { request, .. } => Output::OffsetDelete {
                request: *request,
                result: Err(error),
            },
            _ => unreachable!("only requests with a group id get here"),
        };
        outputs.push(output);
        true
    }

    pub fn step(&mut self, outputs: &mut Vec<Output>, input: Input) {
        if self.refused(outputs, &input) {
            return;
        }
        match input {
            Input::Join { request, now, join } => self.join(outputs, now, request, join),
            Input::Sync { request, now, sync } => {
                let group_id = sync.group_id.clone();
                let config = self.config.clone();
                match self.groups.get_mut(&group_id) {
                    Some(group) => group.sync(outputs, now, &config, request, sync),
                    None => outputs.push(Output::Sync {
                        request,
                        result: Err(GroupError::UnknownMemberId {
                            member_id: sync.member_id,
                        }),
                    }),
                }
                self.group_after(outputs, &group_id);
            }
            Input::Heartbeat {
                request,
                now,
                member,
            } => {
                let result = match self.groups.get_mut(&member.group_id) {
                    Some(group) => group.heartbeat(now, &member),
                    None => Err(GroupError::UnknownMemberId {
                        member_id: member.member_id.clone(),
                    }),
                };
                outputs.push(Output::Heartbeat { request, result });
            }
            Input::Leave {
                request,
                now,
                group_id,
                members,
            } => self.leave(outputs, now, request, group_id, members),
            Input::OffsetCommit {
                request,
                now: _,
                commit,
            } => self.commit(outputs, request, commit),
            Input::TxnOffsetCommit {
                request,
                now: _,
                commit,
            } => self.txn_commit(outputs, request, commit),
            Input::TxnMarker {
                partition,
                producer_id,
                epoch,
                commit,
            } => self.txn_marker(partition, producer_id, epoch, commit),
            Input::Delete {
                request,
                now: _,
                group_ids,
            } => self.delete(outputs, request, group_ids),
            Input::OffsetDelete {
                request,
                now: _,
                group_id,
                partitions,
            } => self.offset_delete(outputs, request, group_id, partitions),
            Input::Tick { now } => self.tick(outputs, now),
            Input::Persisted { write } => self.persisted(outputs, write),
            Input::PersistFailed { write } => self.persist_failed(outputs, write),
        }
    }

    fn join(
        &mut self,
        outputs: &mut Vec<Output>,
        now: Duration,
        request: RequestId,
        join: JoinRequest,
    ) {
        let group_id = join.group_id.clone();
        if !self.groups.contains_key(&group_id) {
            if !join.member_id.is_empty() {
                let error = GroupError::UnknownMemberId {
                    member_id: join.member_id,
                };
                outputs.push(Output::Join {
                    request,
                    result: Err(error),
                });
                return;
            }
            self.group_create(&group_id);
        }
        let member_id_fresh = if join.member_id.is_empty() {
            let prefix = join.group_instance_id.as_deref().unwrap_or(&join.client_id);
            format!("{prefix}-{}", self.uuid_new())
        } else {
            String::new()
        };
        let config = self.config.clone();
        let group = self.groups.get_mut(&group_id).expect("created above");
        group.join(outputs, now, &config, request, join, member_id_fresh);
        self.group_after(outputs, &group_id);
    }

    fn group_create(&mut self, group_id: &str) -> &mut Group {
        let incarnation = self.incarnation_next;
        self.incarnation_next += 1;
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string(), incarnation))
    }

    /// After any request to a group: persist its metadata if it changed, forget it if it is a
    /// trace-less empty group.
    fn group_after(&mut self, outputs: &mut Vec<Output>, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        if group.dirty_take() {
            let record = OffsetsRecord::Group {
                group_id: group_id.to_string(),
                snapshot: Some(group.snapshot()),
            };
            self.write(outputs, vec![record], After::Nothing);
        }
        let group = &self.groups[group_id];
        group.invariants_check();
        if group.is_removable() {
            self.groups.remove(group_id);
        }
    }

    fn write(&mut self, outputs: &mut Vec<Output>, records: Vec<OffsetsRecord>, after: After) {
        self.write_as(outputs, records, after, None);
    }

    fn write_as(
        &mut self,
        outputs: &mut Vec<Output>,
        records: Vec<OffsetsRecord>,
        after: After,
        producer: Option<(i64, i16)>,
    ) {
        assert!(!records.is_empty());
        let partition = self.partition_for(records[0].group_id());
        assert!(records
            .iter()
            .all(|r| self.partition_for(r.group_id()) == partition));
        let write = self.write_next;
        self.write_next += 1;
        self.writes.insert(write, WritePending { partition, after });
        outputs.push(Output::Persist {
            partition,
            write,
            records,
            producer,
        });
    }

    /// TxnOffsetCommit, as Kafka's `handleTxnCommitOffsets`: a member id, if given, must be the
    /// group's, and a generation, if given, the current one; the offsets are written as a
    /// transactional batch of the producer and stay pending until its marker.
    fn txn_commit(
        &mut self,
        outputs: &mut Vec<Output>,
        request: RequestId,
        commit: TxnCommitRequest,
    ) {
        let fenced_by = self
            .txn_marker_epochs
            .get(&commit.producer_id)
            .copied()
            .filter(|fenced_by| commit.epoch < *fenced_by);
        let checked = match self.groups.get(&commit.group_id) {
            _ if fenced_by.is_some() => Err(GroupError::ProducerFenced {
                producer_id: commit.producer_id,
                epoch: commit.epoch,
                fenced_by: fenced_by.expect("checked"),
            }),
            _ if commit.offsets.is_empty() => Ok(()),
            None if commit.member_id.is_empty() && commit.generation_id < 0 => Ok(()),
            None if !commit.member_id.is_empty() => Err(GroupError::UnknownMemberId {
                member_id: commit.member_id.clone(),
            }),
            None => Err(GroupError::IllegalGeneration {
                generation_id: commit.generation_id,
                current: -1,
            }),
            Some(group) => {
                if !commit.member_id.is_empty()
                    && !group.members().any(|m| m.member_id == commit.member_id)
                {
                    Err(GroupError::UnknownMemberId {
                        member_id: commit.member_id.clone(),
                    })
                } else if commit.generation_id >= 0 && commit.generation_id != group.generation_id()
                {
                    Err(GroupError::IllegalGeneration {
                        generation_id: commit.generation_id,
                        current: group.generation_id(),
                    })
                } else {
                    Ok(())
                }
            }
        };
        if checked.is_err() || commit.offsets.is_empty() {
            outputs.push(Output::TxnOffsetCommit {
                request,
                result: checked,
            });
            return;
        }
        let records = commit
            .offsets
            .iter()
            .map(|(partition, committed)| OffsetsRecord::Offset {
                group_id: commit.group_id.clone(),
                partition: partition.clone(),
                committed: Some(committed.clone()),
            })
            .collect();
        let after = After::TxnCommit {
            request,
            group_id: commit.group_id,
            producer_id: commit.producer_id,
            offsets: commit.offsets,
            decided: None,
        };
        self.write_as(
            outputs,
            records,
            after,
            Some((commit.producer_id, commit.epoch)),
        );
    }

    /// A marker for `producer_id` is durable on `partition`: its pending offsets for every group
    /// of that partition become committed, or are dropped.
    fn txn_marker(&mut self, partition: i32, producer_id: i64, epoch: i16, commit: bool) {
        let known = self.txn_marker_epochs.entry(producer_id).or_insert(epoch);
        *known = (*known).max(epoch);
        // A TxnOffsetCommit of this producer still waiting for its fsync was appended before the
        // marker (a producer ends its transaction only after its offsets are answered, or gives
        // up on them and aborts), so the marker decides it too: without this, offsets whose
        // waiter wakes after the marker would stay pending for good.
        for pending in self.writes.values_mut() {
            if pending.partition != partition {
                continue;
            }
            if let After::TxnCommit {
                producer_id: writer,
                decided,
                ..
            } = &mut pending.after
            {
                if *writer == producer_id && decided.is_none() {
                    *decided = Some(commit);
                }
            }
        }
        let group_ids: Vec<String> = self
            .txn_pending
            .iter()
            .filter(|(group_id, producers)| {
                self.partition_for(group_id) == partition && producers.contains_key(&producer_id)
            })
            .map(|(group_id, _)| group_id.clone())
            .collect();
        for group_id in group_ids {
            let producers = self.txn_pending.get_mut(&group_id).expect("listed");
            let offsets = producers.remove(&producer_id).expect("listed");
            if producers.is_empty() {
                self.txn_pending.remove(&group_id);
            }
            tracing::debug!(group = %group_id, producer_id, commit, count = offsets.len(), "transactional offsets completed");
            if commit {
                let group = self.group_create(&group_id);
                for (partition, committed) in offsets {
                    group.offset_put(partition, committed);
                }
            }
            if self.groups.get(&group_id).is_some_and(Group::is_removable) {
                self.groups.remove(&group_id);
            }
        }
    }

    fn leave(
        &mut self,
        outputs: &mut Vec<Output>,
        now: Duration,
        request: RequestId,
        group_id: String,
        members: Vec<Leaving>,
    ) {
        let config = self.config.clone();
        let results = match self.groups.get_mut(&group_id) {
            Some(group) => members
                .iter()
                .map(|leaving| group.leave(outputs, now, &config, leaving))
                .collect(),
            None => members
                .into_iter()
                .map(|leaving| {
                    Err(GroupError::UnknownMemberId {
                        member_id: leaving.member_id,
                    })
                })
                .collect(),
        };
        outputs.push(Output::Leave { request, results });
        self.group_after(outputs, &group_id);
    }

    fn commit(&mut self, outputs: &mut Vec<Output>, request: RequestId, commit: CommitRequest) {
        let member = &commit.member;
        let group_id = member.group_id.clone();
        let checked = match self.groups.get(&group_id) {
            Some(group) => {
                group.commit_check(member, self.planted == Some(Bug::CommitStaleGeneration))
            }
            None if member.generation_id < 0 && member.member_id.is_empty() => Ok(()),
            None => Err(GroupError::IllegalGeneration {
                generation_id: member.generation_id,
                current: -1,
            }),
        };
        if let Err(error) = checked {
            outputs.push(Output::OffsetCommit {
                request,
                result: Err(error),
            });
            return;
        }
        if commit.offsets.is_empty() {
            outputs.push(Output::OffsetCommit {
                request,
                result: Ok(()),
            });
            return;
        }
        let group = self.group_create(&group_id);
        group.write_pending_add();
        let incarnation = group.incarnation;
        let records = commit
            .offsets
            .iter()
            .map(|(partition, committed)| OffsetsRecord::Offset {
                group_id: group_id.clone(),
                partition: partition.clone(),
                committed: Some(committed.clone()),
            })
            .collect();
        let after = After::Commit {
            request,
            group_id,
            incarnation,
            offsets: commit.offsets,
        };
        self.write(outputs, records, after);
    }

    fn delete(&mut self, outputs: &mut Vec<Output>, request: RequestId, group_ids: Vec<String>) {
        let mut pending = DeletePending {
            results: Vec::with_capacity(group_ids.len()),
            writes_left: 0,
        };
        let mut writes = Vec::new();
        for (index, group_id) in group_ids.into_iter().enumerate() {
            let served = self.serves(&group_id);
            let outcome = match self.groups.get_mut(&group_id) {
                _ if served.is_err() => served,
                None => Err(GroupError::GroupIdNotFound {
                    group_id: group_id.clone(),
                }),
                Some(group) => group.delete(),
            };
            if outcome.is_ok() {
                self.txn_pending.remove(&group_id);
                let group = self.groups.remove(&group_id).expect("found above");
                let mut records: Vec<OffsetsRecord> = group
                    .offsets()
                    .keys()
                    .map(|partition| OffsetsRecord::Offset {
                        group_id: group_id.clone(),
                        partition: partition.clone(),
                        committed: None,
                    })
                    .collect();
                records.push(OffsetsRecord::Group {
                    group_id: group_id.clone(),
                    snapshot: None,
                });
                writes.push((records, After::Delete { request, index }));
                tracing::info!(group = %group_id, "group deleted");
            }
            pending.results.push((group_id, outcome));
        }
        pending.writes_left = writes.len();
        if writes.is_empty() {
            outputs.push(Output::Delete {
                request,
                results: pending.results,
            });
            return;
        }
        self.deletes.insert(request, pending);
        for (records, after) in writes {
            self.write(outputs, records, after);
        }
    }

    /// OffsetDelete, as Kafka's `handleDeleteOffsets`: an empty group loses any of its offsets;
    /// an active consumer group only those of topics no member subscribes to; any other active
    /// group none (NON_EMPTY_GROUP). Offsets leave memory only once their tombstones are durable,
    /// so OffsetFetch never shows a deletion a crash could undo.
    fn offset_delete(
        &mut self,
        outputs: &mut Vec<Output>,
        request: RequestId,
        group_id: String,
        partitions: Vec<TopicPartition>,
    ) {
        let checked = match self.groups.get(&group_id) {
            None => Err(GroupError::GroupIdNotFound { group_id }),
            Some(group) => offset_delete_check(group, partitions),
        };
        let (group_id, results) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                outputs.push(Output::OffsetDelete {
                    request,
                    result: Err(error),
                });
                return;
            }
        };
        let group = self.groups.get_mut(&group_id).expect("checked above");
        let records: Vec<OffsetsRecord> = results
            .iter()
            .filter(|(partition, result)| result.is_ok() && group.offsets().contains_key(partition))
            .map(|(partition, _)| OffsetsRecord::Offset {
                group_id: group_id.clone(),
                partition: partition.clone(),
                committed: None,
            })
            .collect();
        if records.is_empty() {
            outputs.push(Output::OffsetDelete {
                request,
                result: Ok(results),
            });
            return;
        }
        group.write_pending_add();
        let after = After::OffsetDelete {
            request,
            group_id,
            incarnation: group.incarnation,
            results,
        };
        self.write(outputs, records, after);
    }

    /// Acts on every deadline due at `now`, in rounds: a round can make more work due at the
    /// same instant (a rebalance timeout answers a member's pending sync, exposing its passed
    /// session deadline), and the shell's timer ticks again at once while anything is due, so
    /// work left due would be a spin without time moving (single-groups seed 779 hung on the
    /// initial delay's passed deadline). Each round removes members or ends a phase; the bound
    /// turns a spin into a crash.
    fn tick(&mut self, outputs: &mut Vec<Output>, now: Duration) {
        for _ in 0..TICK_ROUNDS_MAX {
            let due: Vec<String> = self
                .groups
                .values()
                .filter(|group| group.deadline_next().is_some_and(|at| at <= now))
                .map(|group| group.group_id.clone())
                .collect();
            if due.is_empty() {
                return;
            }
            let config = self.config.clone();
            for group_id in due {
                let group = self.groups.get_mut(&group_id).expect("listed");
                group.tick(outputs, now, &config);
                self.group_after(outputs, &group_id);
            }
        }
        panic!(
            "ticks at {now:?} keep leaving deadlines due: {:?}",
            self.groups
        );
    }

    /// The next time `Input::Tick` has work, if any.
    pub fn deadline_next(&self) -> Option<Duration> {
        self.groups.values().filter_map(Group::deadline_next).min()
    }

    fn persisted(&mut self, outputs: &mut Vec<Output>, write: WriteId) {
        let Some(partition) = self.writes.get(&write).map(|w| w.partition) else {
            return; // Completed already, by a later write to the same partition.
        };
        let done: Vec<WriteId> = self
            .writes
            .range(..=write)
            .filter(|(_, pending)| pending.partition == partition)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let pending = self.writes.remove(&id).expect("listed");
            self.write_complete(outputs, pending.after, Ok(()));
        }
    }

    fn persist_failed(&mut self, outputs: &mut Vec<Output>, write: WriteId) {
        let Some(pending) = self.writes.remove(&write) else {
            return;
        };
        tracing::warn!(write, partition = pending.partition, "offsets write failed");
        let error = GroupError::CoordinatorNotAvailable {
            reason: "the write to __consumer_offsets failed",
        };
        self.write_complete(outputs, pending.after, Err(error));
    }

    fn write_complete(
        &mut self,
        outputs: &mut Vec<Output>,
        after: After,
        result: Result<(), GroupError>,
    ) {
        match after {
            After::Nothing => {}
            After::Commit {
                request,
                group_id,
                incarnation,
                offsets,
            } => {
                // A group deleted meanwhile stays deleted: its tombstones follow this write.
                if let Some(group) = self
                    .groups
                    .get_mut(&group_id)
                    .filter(|group| group.incarnation == incarnation)
                {
                    group.write_pending_done();
                    if result.is_ok() {
                        for (partition, committed) in offsets {
                            group.offset_put(partition, committed);
                        }
                    }
                    if group.is_removable() {
                        self.groups.remove(&group_id);
                    }
                }
                outputs.push(Output::OffsetCommit { request, result });
            }
            After::OffsetDelete {
                request,
                group_id,
                incarnation,
                results,
            } => {
                if let Some(group) = self
                    .groups
                    .get_mut(&group_id)
                    .filter(|group| group.incarnation == incarnation)
                {
                    group.write_pending_done();
                    if result.is_ok() {
                        for (partition, _) in results.iter().filter(|(_, r)| r.is_ok()) {
                            group.offset_remove(partition);
                        }
                    }
                    if group.is_removable() {
                        self.groups.remove(&group_id);
                    }
                }
                let result = result.map(|()| results);
                outputs.push(Output::OffsetDelete { request, result });
            }
            After::TxnCommit {
                request,
                group_id,
                producer_id,
                offsets,
                decided,
            } => {
                match (&result, decided) {
                    (Err(_), _) | (Ok(()), Some(false)) => {}
                    (Ok(()), Some(true)) => {
                        let group = self.group_create(&group_id);
                        for (partition, committed) in offsets {
                            group.offset_put(partition, committed);
                        }
                    }
                    (Ok(()), None) => {
                        let pending = self
                            .txn_pending
                            .entry(group_id)
                            .or_default()
                            .entry(producer_id)
                            .or_default();
                        pending.extend(offsets);
                    }
                }
                outputs.push(Output::TxnOffsetCommit { request, result });
            }
            After::Delete { request, index } => {
                let pending = self.deletes.get_mut(&request).expect("pending delete");
                if result.is_err() {
                    pending.results[index].1 = result;
                }
                pending.writes_left -= 1;
                if pending.writes_left == 0 {
                    let pending = self.deletes.remove(&request).expect("present");
                    outputs.push(Output::Delete {
                        request,
                        results: pending.results,
                    });
                }
            }
        }
    }

    /// Recovery: a record of a transactional batch of `producer_id`: pending until its marker.
    pub fn replay_txn(&mut self, producer_id: i64, record: OffsetsRecord) {
        if let OffsetsRecord::Offset {
            group_id,
            partition,
            committed: Some(committed),
        } = record
        {
            self.txn_pending
                .entry(group_id)
                .or_default()
                .entry(producer_id)
                .or_default()
                .insert(partition, committed);
        }
    }

    /// Recovery: a transaction marker found on `partition` of `__consumer_offsets`.
    pub fn replay_marker(&mut self, partition: i32, producer_id: i64, epoch: i16, commit: bool) {
        self.txn_marker(partition, producer_id, epoch, commit);
    }

    /// Recovery: applies one record of `__consumer_offsets`, in log order.
    pub fn replay(&mut self, now: Duration, record: OffsetsRecord) {
        match record {
            OffsetsRecord::Offset {
                group_id,
                partition,
                committed: Some(committed),
            } => {
                // The planted bug `offsets-replay-keeps-first`: an `or_insert` where the log's
                // last record must win, so a restart brings back a group's oldest commit.
                let keep_first = self.planted == Some(Bug::OffsetsReplayKeepsFirst);
                let group = self.group_create(&group_id);
                if !(keep_first && group.offsets().contains_key(&partition)) {
                    group.offset_put(partition, committed);
                }
            }
            OffsetsRecord::Offset {
                group_id,
                partition,
                committed: None,
            } => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.offset_remove(&partition);
                }
            }
            OffsetsRecord::Group {
                group_id,
                snapshot: Some(snapshot),
            } => self.group_create(&group_id).restore(snapshot, now),
            OffsetsRecord::Group {
                group_id,
                snapshot: None,
            } => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.reset();
                }
            }
        }
    }

    /// After replay: drop groups that left no trace, and check every group.
    pub fn replay_finish(&mut self) {
        self.groups.retain(|_, group| !group.is_removable());
        self.invariants_check();
    }

    pub fn invariants_check(&self) {
        for (group_id, group) in &self.groups {
            assert_eq!(*group_id, group.group_id);
            assert!(
                self.partitions.contains_key(&self.partition_for(group_id)),
                "group {group_id:?} lives on a partition this coordinator does not hold"
            );
            group.invariants_check();
        }
        assert!(self.writes.keys().all(|write| *write < self.write_next));
    }

    /// A random (v4) UUID from the injected rng: member ids are unguessable but reproducible.
    fn uuid_new(&mut self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Which of `partitions` OffsetDelete may drop from `group`, per partition; or why none may.
fn offset_delete_check(
    group: &Group,
    partitions: Vec<TopicPartition>,
) -> Result<(String, PartitionResults), GroupError> {
    let subscribed = match group.state() {
        GroupState::Dead => {
            return Err(GroupError::GroupIdNotFound {
                group_id: group.group_id.clone(),
            })
        }
        GroupState::Empty => Default::default(),
        _ => group
            .subscribed_topics()
            .ok_or_else(|| GroupError::NonEmptyGroup {
                group_id: group.group_id.clone(),
            })?,
    };
    let results = partitions
        .into_iter()
        .map(|partition| {
            let result = match subscribed.contains(&partition.topic) {
                true => Err(GroupError::GroupSubscribedToTopic {
                    topic: partition.topic.clone(),
                }),
                false => Ok(()),
            };
            (partition, result)
        })
        .collect();
    Ok((group.group_id.clone(), results))
}

/// Java's `String.hashCode` over UTF-16 code units, then Kafka's `Utils.abs` and the modulo.
pub fn partition_for(group_id: &str, partition_count: i32) -> i32 {
    assert!(partition_count > 0);
    let hash = group_id.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partition_count
}
