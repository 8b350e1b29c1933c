//! `Coordinator`: every transactional id this node coordinates, behind one
//! `step(outputs, input)`, following Kafka's TransactionCoordinator.
//!
//! Each transition is decided here, written (`Output::Persist`, to the partition of
//! `__transaction_state` that owns the id) and applied only when the shell reports the write
//! durable (`Input::Persisted`): until then the id has a pending write and every other request
//! for it gets CONCURRENT_TRANSACTIONS, as Kafka's `pendingState` does. A durable write implies
//! every earlier write to its partition is durable (a log is durable as a prefix), so
//! `Persisted` completes the earlier writes of that partition too.
//!
//! The life of a transaction: InitProducerId (Empty, epoch bumped) -> AddPartitionsToTxn /
//! AddOffsetsToTxn (Ongoing) -> EndTxn (PrepareCommit or PrepareAbort, durable, answered) ->
//! markers to every partition (`Output::Markers`, sent by the shell until each partition has
//! one) -> `Input::MarkersWritten` -> CompleteCommit or CompleteAbort. InitProducerId during
//! Ongoing, and a transaction past its timeout, abort with a bumped epoch so that the old
//! producer is fenced at the coordinator and, through the markers, at every partition.

use super::records::TxnRecord;
use super::{
    Markers, RequestId, TxnConfig, TxnDescription, TxnError, TxnMetadata, TxnState, WriteId,
};
use crate::group::coordinator::partition_for;
use crate::group::TopicPartition;
use crate::planted::Bug;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// After a failed write of CompleteCommit/CompleteAbort, or of a timeout's PrepareAbort, the
/// next attempt waits this long: a log that refuses appends at once (an offline partition) must
/// not spin the timer.
pub const COMPLETE_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Rounds of one tick before deadlines that never clear are called a bug.
const TICK_ROUNDS_MAX: usize = 16;

/// Everything that happens to the coordinator. `now` is monotonic time since the shell started;
/// `wall_ms` the wall clock, which is only recorded (DescribeTransactions), never compared.
#[derive(Debug, Clone)]
pub enum Input {
    InitProducerId {
        request: RequestId,
        now: Duration,
        wall_ms: i64,
        transactional_id: String,
        timeout: Duration,
        /// KIP-360 (v3+): the producer id and epoch the client already has, if any.
        expected: Option<(i64, i16)>,
        /// A producer id never issued before, when `needs_producer_id` said one is needed (the
        /// shell allocates it, which is I/O); `None` if that allocation failed.
        fresh_producer_id: Option<i64>,
    },
    /// AddPartitionsToTxn, and AddOffsetsToTxn with the group's `__consumer_offsets` partition.
    AddPartitions {
        request: RequestId,
        now: Duration,
        wall_ms: i64,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartition>,
    },
    EndTxn {
        request: RequestId,
        wall_ms: i64,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
    Tick {
        now: Duration,
        wall_ms: i64,
    },
    /// Every partition of the decision `(producer_id, epoch)` of this id has its marker.
    MarkersWritten {
        wall_ms: i64,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
    },
    /// The write, and every earlier write to its partition, is durable.
    Persisted {
        write: WriteId,
    },
    /// The write could not be made durable (append or fsync failed).
    PersistFailed {
        write: WriteId,
        now: Duration,
    },
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    InitProducerId {
        request: RequestId,
        result: Result<(i64, i16), TxnError>,
    },
    AddPartitions {
        request: RequestId,
        result: Result<(), TxnError>,
    },
    EndTxn {
        request: RequestId,
        result: Result<(), TxnError>,
    },
    /// Append `record` to partition `partition` of `__transaction_state`, then report the write.
    Persist {
        partition: i32,
        write: WriteId,
        record: TxnRecord,
    },
    /// Send these markers until every partition has one, then report `MarkersWritten`.
    Markers(Markers),
}

/// Whom to answer once a write is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    Nobody,
    Init(RequestId),
    /// An InitProducerId that found a transaction ongoing and aborts it first: once the abort is
    /// durable it is answered CONCURRENT_TRANSACTIONS, and the client's retry gets the new epoch.
    InitFencing(RequestId),
    AddPartitions(RequestId),
    EndTxn(RequestId),
}

#[derive(Debug, Clone)]
struct WritePending {
    partition: i32,
    transactional_id: String,
    metadata: TxnMetadata,
    reply: ReplyTo,
    /// When the transition starts a transaction: its timeout runs from here.
    now: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The durable state; `None` until the id's first write is durable.
    metadata: Option<TxnMetadata>,
    /// The write in flight for this id, if any: nothing else may change it meanwhile.
    pending: Option<WriteId>,
    /// When the open transaction started (monotonic), for its timeout.
    started: Duration,
    /// A Complete* write that failed: try again at this time.
    complete_retry_at: Option<Duration>,
    /// A timeout's abort whose write failed: not again before this time.
    timeout_retry_at: Option<Duration>,
}

/// A partition of `__transaction_state` this coordinator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionState {
    /// Replayed from a log whose end the HW does not cover yet: its ids are answered
    /// COORDINATOR_LOAD_IN_PROGRESS and nothing of theirs is acted on.
    Loading,
    Active,
}

#[derive(Debug)]
pub struct Coordinator {
    config: TxnConfig,
    /// Partitions of `__transaction_state`: fixed once the topic exists.
    partition_count: i32,
    /// The partitions held here: all of a node-local topic, the led ones of a replicated one.
    /// An id of a partition not held is answered NOT_COORDINATOR, and has no entry.
    partitions: BTreeMap<i32, PartitionState>,
    /// Partitions of `__consumer_offsets`, for AddOffsetsToTxn.
    offsets_partition_count: i32,
    entries: BTreeMap<String, Entry>,
    writes: BTreeMap<WriteId, WritePending>,
    write_next: WriteId,
    planted: Option<Bug>,
}

/// Kafka's `ProducerIdAndEpoch` exhaustion: an epoch this high is not bumped but the producer id
/// rotated, leaving room for one fencing bump (PrepareAbort at epoch + 1).
fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl Coordinator {
    /// The coordinator of a node-local `__transaction_state`: every partition held and active.
    pub fn new(config: TxnConfig, partition_count: i32, offsets_partition_count: i32) -> Self {
        let mut core = Coordinator::replicated(config, partition_count, offsets_partition_count);
        core.partitions = (0..partition_count)
            .map(|index| (index, PartitionState::Active))
            .collect();
        core
    }

    /// The coordinator of a replicated `__transaction_state`: partitions come and go with
    /// their leadership (`partition_load_begin`, `partition_activate`, `partition_unload`).
    pub fn replicated(
        config: TxnConfig,
        partition_count: i32,
        offsets_partition_count: i32,
    ) -> Self {
        assert!(partition_count > 0 && offsets_partition_count > 0);
        Coordinator {
            config,
            partition_count,
            partitions: BTreeMap::new(),
            offsets_partition_count,
            entries: BTreeMap::new(),
            writes: BTreeMap::new(),
            write_next: 1,
            planted: None,
        }
    }

    /// Switches on a planted bug; the core obeys it in every build so unit tests can plant one.
    pub fn planted_set(&mut self, planted: Option<Bug>) {
        self.planted = planted;
    }

    /// The partition of `__transaction_state` that owns `transactional_id` (Java hashCode).
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.partition_count)
    }

    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// A replicated topic's partition count, as the image has it, before any partition is held.
    pub fn partition_count_set(&mut self, partition_count: i32) {
        assert!(partition_count > 0 && self.partitions.is_empty());
        self.partition_count = partition_count;
    }

    /// Whether requests for `transactional_id` are served here now.
    pub fn serves(&self, transactional_id: &str) -> Result<(), TxnError> {
        match self.partitions.get(&self.partition_for(transactional_id)) {
            None => Err(TxnError::NotCoordinator),
            Some(PartitionState::Loading) => Err(TxnError::CoordinatorLoadInProgress),
            Some(PartitionState::Active) => Ok(()),
        }
    }

    /// Starts holding partition `index`, led here now: its records follow (`replay`), then
    /// `partition_activate` once the HW covers them.
    pub fn partition_load_begin(&mut self, index: i32) {
        let previous = self.partitions.insert(index, PartitionState::Loading);
        assert!(previous.is_none(), "partition {index} loaded twice");
        assert!(
            self.entries
                .keys()
                .all(|id| self.partition_for(id) != index),
            "a partition not held has no ids"
        );
    }

    /// The HW covers what partition `index` replayed: its ids are served, and every decision
    /// found prepared gets its markers sent again (the last coordinator may have stopped
    /// short). Nothing if the partition is not loading (unloaded meanwhile).
    pub fn partition_activate(&mut self, outputs: &mut Vec<Output>, index: i32) {
        let Some(state) = self.partitions.get_mut(&index) else {
            return;
        };
        if *state == PartitionState::Active {
            return;
        }
        *state = PartitionState::Active;
        self.markers_resend(outputs, |id| {
            partition_for(id, self.partition_count) == index
        });
        self.invariants_check();
    }

    /// This broker no longer leads partition `index`: its ids are forgotten, and the requests
    /// waiting on their writes are answered NOT_COORDINATOR (the write may still be committed
    /// by the new leader, which then owns the outcome).
    pub fn partition_unload(&mut self, outputs: &mut Vec<Output>, index: i32) {
        if self.partitions.remove(&index).is_none() {
            return;
        }
        let writes: Vec<WriteId> = self
            .writes
            .iter()
            .filter(|(_, pending)| pending.partition == index)
            .map(|(write, _)| *write)
            .collect();
        for write in writes {
            let pending = self.writes.remove(&write).expect("listed");
            self.failed_reply(outputs, pending.reply, TxnError::NotCoordinator);
        }
        let count = self.partition_count;
        self.entries
            .retain(|id, _| partition_for(id, count) != index);
        self.invariants_check();
    }

    /// Whether `transactional_id`'s partition is held and active: only then do its deadlines
    /// act.
    fn active(&self, transactional_id: &str) -> bool {
        self.serves(transactional_id).is_ok()
    }

    /// The `__consumer_offsets` partition AddOffsetsToTxn adds for `group_id`.
    pub fn offsets_partition(&self, group_id: &str) -> TopicPartition {
        TopicPartition {
            topic: crate::group::OFFSETS_TOPIC.to_string(),
            partition: partition_for(group_id, self.offsets_partition_count),
        }
    }

    /// Whether InitProducerId for `transactional_id` would need a never-issued producer id: the
    /// id is new, or its epoch is exhausted.
    pub fn needs_producer_id(&self, transactional_id: &str) -> bool {
        if self.serves(transactional_id).is_err() {
            return false;
        }
        match self.entries.get(transactional_id) {
            None => true,
            Some(entry) if entry.pending.is_some() => false,
            Some(entry) => entry
                .metadata
                .as_ref()
                .is_some_and(|m| epoch_exhausted(m.epoch) && !m.state.is_open()),
        }
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnDescription> {
        self.serves(transactional_id).ok()?;
        let metadata = self.entries.get(transactional_id)?.metadata.clone()?;
        Some(TxnDescription {
            transactional_id: transactional_id.to_string(),
            metadata,
        })
    }

    /// Every transactional id with durable state served here, in id order.
    pub fn list(&self) -> impl Iterator<Item = TxnDescription> + '_ {
        self.entries.iter().filter_map(|(id, entry)| {
            let served = self.active(id);
            entry
                .metadata
                .clone()
                .filter(|_| served)
                .map(|metadata| TxnDescription {
                    transactional_id: id.clone(),
                    metadata,
                })
        })
    }

    /// AddPartitionsToTxn v4+ `verify_only`: whether the producer's open transaction holds
    /// every partition in `partitions`, without changing anything.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &TopicPartition,
    ) -> Result<(), TxnError> {
        self.serves(transactional_id)?;
        let metadata = self.current(transactional_id, producer_id, epoch)?;
        match metadata.state == TxnState::Ongoing && metadata.partitions.contains(partition) {
            true => Ok(()),
            false => Err(TxnError::InvalidTxnState),
        }
    }

    pub fn step(&mut self, outputs: &mut Vec<Output>, input: Input) {
        match input {
            Input::InitProducerId {
                request,
                now,
                wall_ms,
                transactional_id,
                timeout,
                expected,
                fresh_producer_id,
            } => {
                let result = self.serves(&transactional_id).and_then(|()| {
                    self.init(
                        outputs,
                        request,
                        now,
                        wall_ms,
                        transactional_id,
                        timeout,
                        expected,
                        fresh_producer_id,
                    )
                });
                if let Err(error) = result {
                    let result = Err(error);
                    outputs.push(Output::InitProducerId { request, result });
                }
            }
            Input::AddPartitions {
                request,
                now,
                wall_ms,
                transactional_id,
                producer_id,
                epoch,
                partitions,
            } => {
                let result = self.serves(&transactional_id).and_then(|()| {
                    self.add_partitions(
                        outputs,
                        request,
                        now,
                        wall_ms,
                        transactional_id,
                        (producer_id, epoch),
                        partitions,
                    )
                });
                if let Err(error) = result {
                    let result = Err(error);
                    outputs.push(Output::AddPartitions { request, result });
                }
            }
            Input::EndTxn {
                request,
                wall_ms,
                transactional_id,
                producer_id,
                epoch,
                commit,
            } => {
                let result = self.serves(&transactional_id).and_then(|()| {
                    self.end_txn(
                        outputs,
                        request,
                        wall_ms,
                        transactional_id,
                        (producer_id, epoch),
                        commit,
                    )
                });
                if let Err(error) = result {
                    let result = Err(error);
                    outputs.push(Output::EndTxn { request, result });
                }
            }
            Input::Tick { now, wall_ms } => self.tick(outputs, now, wall_ms),
            Input::MarkersWritten {
                wall_ms,
                transactional_id,
                producer_id,
                epoch,
            } => self.markers_written(outputs, wall_ms, transactional_id, producer_id, epoch),
            Input::Persisted { write } => self.persisted(outputs, write),
            Input::PersistFailed { write, now } => self.persist_failed(outputs, write, now),
        }
        self.invariants_check();
    }

    /// The durable state of an id with no write in flight, if the producer is its current one.
    fn current(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&TxnMetadata, TxnError> {
        let entry = self
            .entries
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let Some(metadata) = &entry.metadata else {
            return Err(TxnError::InvalidProducerIdMapping);
        };
        if metadata.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if metadata.epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if entry.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(metadata)
    }

    #[allow(clippy::too_many_arguments)]
    fn init(
        &mut self,
        outputs: &mut Vec<Output>,
        request: RequestId,
        now: Duration,
        wall_ms: i64,
        transactional_id: String,
        timeout: Duration,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
    ) -> Result<(), TxnError> {
        if timeout.is_zero() || timeout > self.config.timeout_max {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let fresh = || fresh_producer_id.ok_or(TxnError::CoordinatorNotAvailable);
        let empty = |producer_id, last_producer_id, epoch, last_epoch| TxnMetadata {
            producer_id,
            last_producer_id,
            epoch,
            last_epoch,
            timeout,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: wall_ms,
            start_ms: -1,
        };
        let Some(entry) = self.entries.get(&transactional_id) else {
            let metadata = empty(fresh()?, -1, 0, -1);
            self.entries.insert(
                transactional_id.clone(),
                Entry {
                    metadata: None,
                    pending: None,
                    started: now,
                    complete_retry_at: None,
                    timeout_retry_at: None,
                },
            );
            self.write(
                outputs,
                transactional_id,
                metadata,
                ReplyTo::Init(request),
                now,
            );
            return Ok(());
        };
        if entry.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let current = entry.metadata.clone().expect("no write pending: durable");
        if let Some((producer_id, epoch)) = expected {
            let is_current = producer_id == current.producer_id && epoch == current.epoch;
            let is_retry = epoch == current.last_epoch
                && (producer_id == current.producer_id || producer_id == current.last_producer_id);
            if is_retry && matches!(current.state, TxnState::Empty) {
                // KIP-360: the client did not get the answer to the bump it asked for.
                let result = Ok((current.producer_id, current.epoch));
                outputs.push(Output::InitProducerId { request, result });
                return Ok(());
            }
            if !is_current {
                return Err(TxnError::ProducerFenced);
            }
        }
        let next = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the old producer: abort its transaction at a bumped epoch. Issued epochs
                // stay below `i16::MAX - 1` (`epoch_exhausted` rotates the id), so this fits.
                assert!(
                    current.epoch < i16::MAX,
                    "an issued epoch is never i16::MAX"
                );
                let fenced = TxnMetadata {
                    epoch: current.epoch + 1,
                    last_epoch: current.epoch,
                    state: TxnState::PrepareAbort,
                    last_update_ms: wall_ms,
                    ..current
                };
                let reply = ReplyTo::InitFencing(request);
                self.write(outputs, transactional_id, fenced, reply, now);
                return Ok(());
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if epoch_exhausted(current.epoch) {
                    empty(fresh()?, current.producer_id, 0, current.epoch)
                } else {
                    empty(
                        current.producer_id,
                        current.last_producer_id,
                        current.epoch + 1,
                        current.epoch,
                    )
                }
            }
        };
        self.write(outputs, transactional_id, next, ReplyTo::Init(request), now);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_partitions(
        &mut self,
        outputs: &mut Vec<Output>,
        request: RequestId,
        now: Duration,
        wall_ms: i64,
        transactional_id: String,
        (producer_id, epoch): (i64, i16),
        partitions: Vec<TopicPartition>,
    ) -> Result<(), TxnError> {
        let current = self.current(&transactional_id, producer_id, epoch)?.clone();
        if partitions.is_empty() {
            outputs.push(Output::AddPartitions {
                request,
                result: Ok(()),
            });
            return Ok(());
        }
        let mut next = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing if partitions.iter().all(|p| current.partitions.contains(p)) => {
                let result = Ok(());
                outputs.push(Output::AddPartitions { request, result });
                return Ok(());
            }
            TxnState::Ongoing => current,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => TxnMetadata {
                state: TxnState::Ongoing,
                partitions: BTreeSet::new(),
                start_ms: wall_ms,
                ..current
            },
        };
        next.partitions.extend(partitions);
        next.last_update_ms = wall_ms;
        let reply = ReplyTo::AddPartitions(request);
        self.write(outputs, transactional_id, next, reply, now);
        Ok(())
    }

    fn end_txn(
        &mut self,
        outputs: &mut Vec<Output>,
        request: RequestId,
        wall_ms: i64,
        transactional_id: String,
        (producer_id, epoch): (i64, i16),
        commit: bool,
    ) -> Result<(), TxnError> {
        let current = self.current(&transactional_id, producer_id, epoch)?.clone();
        let prepare = match (current.state, commit) {
            (TxnState::Ongoing, true) => TxnState::PrepareCommit,
            (TxnState::Ongoing, false) => TxnState::PrepareAbort,
            // A retry while the markers are out: it will complete as asked.
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(TxnError::ConcurrentTransactions)
            }
            // A retry of an EndTxn that completed (its answer was lost).
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                outputs.push(Output::EndTxn {
                    request,
                    result: Ok(()),
                });
                return Ok(());
            }
            _ => return Err(TxnError::InvalidTxnState),
        };
        let next = TxnMetadata {
            state: prepare,
            last_update_ms: wall_ms,
            ..current
        };
        let write = self.write(
            outputs,
            transactional_id,
            next,
            ReplyTo::EndTxn(request),
            Duration::ZERO,
        );
        if prepare == TxnState::PrepareCommit
            && self.planted == Some(Bug::MarkersBeforeDurableDecision)
        {
            // The planted bug: the markers go out with the decision's write, not after its fsync
            // (they go out again once it is durable, which is harmless).
            let pending = &self.writes[&write];
            let markers = markers_of(&pending.transactional_id, &pending.metadata);
            outputs.push(Output::Markers(markers));
        }
        Ok(())
    }

    /// Acts on every deadline due at `now`, in rounds, until none is: the shell's timer ticks
    /// again at once while `deadline_next` says something is due, so work a tick leaves due (or
    /// a deadline `tick` and `deadline_next` disagree on) would spin without time moving, as
    /// the group coordinator's did (single-groups seed 779). A round starts a write for each id
    /// it acts on, which takes the id's deadlines away; the bound turns a spin into a crash.
    fn tick(&mut self, outputs: &mut Vec<Output>, now: Duration, wall_ms: i64) {
        for _ in 0..TICK_ROUNDS_MAX {
            if self.deadline_next().is_none_or(|at| at > now) {
                return;
            }
            self.tick_round(outputs, now, wall_ms);
        }
        panic!(
            "ticks at {now:?} keep leaving deadlines due: {:?}",
            self.entries
        );
    }

    fn tick_round(&mut self, outputs: &mut Vec<Output>, now: Duration, wall_ms: i64) {
        let timed_out: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, entry)| self.active(id) && entry.timeout_at().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for transactional_id in timed_out {
            let current = self.entries[&transactional_id]
                .metadata
                .clone()
                .expect("ongoing: durable");
            tracing::info!(
                transactional_id,
                producer_id = current.producer_id,
                epoch = current.epoch,
                "transaction timed out; aborting it"
            );
            assert!(
                current.epoch < i16::MAX,
                "an issued epoch is never i16::MAX"
            );
            let aborting = TxnMetadata {
                epoch: current.epoch + 1,
                last_epoch: current.epoch,
                state: TxnState::PrepareAbort,
                last_update_ms: wall_ms,
                ..current
            };
            self.write(outputs, transactional_id, aborting, ReplyTo::Nobody, now);
        }
        let retries: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, entry)| {
                self.active(id) && entry.complete_retry_due().is_some_and(|at| at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for transactional_id in retries {
            let entry = self.entries.get_mut(&transactional_id).expect("listed");
            entry.complete_retry_at = None;
            let current = entry.metadata.clone().expect("prepared: durable");
            self.complete(outputs, wall_ms, transactional_id, current);
        }
    }

    /// The next time `Input::Tick` has work, if any.
    pub fn deadline_next(&self) -> Option<Duration> {
        self.entries
            .iter()
            .filter(|(id, _)| self.active(id))
            .flat_map(|(_, entry)| [entry.timeout_at(), entry.complete_retry_due()])
            .flatten()
            .min()
    }

    fn markers_written(
        &mut self,
        outputs: &mut Vec<Output>,
        wall_ms: i64,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
    ) {
        let Some(entry) = self.entries.get(&transactional_id) else {
            return;
        };
        let Some(current) = entry
            .metadata
            .clone()
            .filter(|_| self.active(&transactional_id))
        else {
            return;
        };
        let prepared = matches!(
            current.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        );
        if !prepared
            || entry.pending.is_some()
            || (current.producer_id, current.epoch) != (producer_id, epoch)
        {
            // Stale (the planted bug's early markers, or a resend that raced the first).
            return;
        }
        self.complete(outputs, wall_ms, transactional_id, current);
    }

    fn complete(
        &mut self,
        outputs: &mut Vec<Output>,
        wall_ms: i64,
        transactional_id: String,
        current: TxnMetadata,
    ) {
        let state = match current.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            state => unreachable!("complete from {state:?}"),
        };
        let next = TxnMetadata {
            state,
            partitions: BTreeSet::new(),
            last_update_ms: wall_ms,
            ..current
        };
        self.write(
            outputs,
            transactional_id,
            next,
            ReplyTo::Nobody,
            Duration::ZERO,
        );
    }

    fn write(
        &mut self,
        outputs: &mut Vec<Output>,
        transactional_id: String,
        metadata: TxnMetadata,
        reply: ReplyTo,
        now: Duration,
    ) -> WriteId {
        let write = self.write_next;
        self.write_next += 1;
        let partition = self.partition_for(&transactional_id);
        let entry = self
            .entries
            .get_mut(&transactional_id)
            .expect("an entry exists before its write");
        assert!(entry.pending.is_none(), "one write in flight per id");
        entry.pending = Some(write);
        outputs.push(Output::Persist {
            partition,
            write,
            record: TxnRecord {
                transactional_id: transactional_id.clone(),
                metadata: Some(metadata.clone()),
            },
        });
        self.writes.insert(
            write,
            WritePending {
                partition,
                transactional_id,
                metadata,
                reply,
                now,
            },
        );
        write
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
            self.apply(outputs, id, pending);
        }
    }

    /// A durable transition: it becomes the id's state, then its consequences follow.
    fn apply(&mut self, outputs: &mut Vec<Output>, write: WriteId, pending: WritePending) {
        let entry = self
            .entries
            .get_mut(&pending.transactional_id)
            .expect("an id with a write in flight stays");
        assert_eq!(entry.pending, Some(write));
        entry.pending = None;
        // A durable transition supersedes a completion still to retry: left set, it would
        // complete a later decision before its markers are written.
        entry.complete_retry_at = None;
        let was_ongoing = entry
            .metadata
            .as_ref()
            .is_some_and(|m| m.state == TxnState::Ongoing);
        let metadata = pending.metadata;
        if metadata.state == TxnState::Ongoing && !was_ongoing {
            entry.started = pending.now;
            entry.timeout_retry_at = None;
        }
        entry.metadata = Some(metadata.clone());
        let prepared = matches!(
            metadata.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        );
        if prepared {
            outputs.push(Output::Markers(markers_of(
                &pending.transactional_id,
                &metadata,
            )));
        }
        match pending.reply {
            ReplyTo::Nobody => {}
            ReplyTo::Init(request) => outputs.push(Output::InitProducerId {
                request,
                result: Ok((metadata.producer_id, metadata.epoch)),
            }),
            ReplyTo::InitFencing(request) => outputs.push(Output::InitProducerId {
                request,
                result: Err(TxnError::ConcurrentTransactions),
            }),
            ReplyTo::AddPartitions(request) => outputs.push(Output::AddPartitions {
                request,
                result: Ok(()),
            }),
            ReplyTo::EndTxn(request) => outputs.push(Output::EndTxn {
                request,
                result: Ok(()),
            }),
        }
    }

    fn persist_failed(&mut self, outputs: &mut Vec<Output>, write: WriteId, now: Duration) {
        let Some(pending) = self.writes.remove(&write) else {
            return;
        };
        tracing::warn!(
            write,
            partition = pending.partition,
            transactional_id = pending.transactional_id,
            "transaction state write failed"
        );
        let entry = self
            .entries
            .get_mut(&pending.transactional_id)
            .expect("an id with a write in flight stays");
        assert_eq!(entry.pending, Some(write));
        entry.pending = None;
        let Some(current) = &entry.metadata else {
            // The id's first write: it never existed.
            self.entries.remove(&pending.transactional_id);
            self.failed_reply(outputs, pending.reply, TxnError::CoordinatorNotAvailable);
            return;
        };
        let completing = matches!(
            pending.metadata.state,
            TxnState::CompleteCommit | TxnState::CompleteAbort
        );
        if completing && current.state != pending.metadata.state {
            // The markers are all written; only the completion is missing: try it again later.
            entry.complete_retry_at = Some(now + COMPLETE_RETRY_BACKOFF);
        }
        let timeout_abort = pending.reply == ReplyTo::Nobody
            && pending.metadata.state == TxnState::PrepareAbort
            && current.state == TxnState::Ongoing;
        if timeout_abort {
            entry.timeout_retry_at = Some(now + COMPLETE_RETRY_BACKOFF);
        }
        self.failed_reply(outputs, pending.reply, TxnError::CoordinatorNotAvailable);
    }

    fn failed_reply(&mut self, outputs: &mut Vec<Output>, reply: ReplyTo, error: TxnError) {
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::Init(request) | ReplyTo::InitFencing(request) => {
                outputs.push(Output::InitProducerId {
                    request,
                    result: Err(error),
                })
            }
            ReplyTo::AddPartitions(request) => outputs.push(Output::AddPartitions {
                request,
                result: Err(error),
            }),
            ReplyTo::EndTxn(request) => outputs.push(Output::EndTxn {
                request,
                result: Err(error),
            }),
        }
    }

    /// Recovery: applies one record of `__transaction_state`, in log order. An open transaction's
    /// timeout restarts at `now` (the record's wall clock is not comparable to our clock), so a
    /// restart can postpone a timeout, never hasten it.
    pub fn replay(&mut self, now: Duration, record: TxnRecord) {
        match record.metadata {
            None => {
                self.entries.remove(&record.transactional_id);
            }
            Some(metadata) => {
                self.entries.insert(
                    record.transactional_id,
                    Entry {
                        metadata: Some(metadata),
                        pending: None,
                        started: now,
                        complete_retry_at: None,
                        timeout_retry_at: None,
                    },
                );
            }
        }
    }

    /// After replay of a node-local topic: every decision found prepared gets its markers sent
    /// again, because a crash may have cut them short.
    pub fn replay_finish(&mut self, outputs: &mut Vec<Output>) {
        self.markers_resend(outputs, |_| true);
        self.invariants_check();
    }

    /// The markers of every prepared decision of the ids `which` picks, again.
    fn markers_resend(&self, outputs: &mut Vec<Output>, which: impl Fn(&str) -> bool) {
        for (transactional_id, entry) in &self.entries {
            if !which(transactional_id) {
                continue; // Another partition's id, maybe new with its first write in flight.
            }
            let metadata = entry.metadata.as_ref().expect("replayed: durable");
            let prepared = matches!(
                metadata.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            );
            if prepared {
                outputs.push(Output::Markers(markers_of(transactional_id, metadata)));
            }
        }
    }

    pub fn invariants_check(&self) {
        for (transactional_id, entry) in &self.entries {
            assert!(
                self.partitions
                    .contains_key(&self.partition_for(transactional_id)),
                "{transactional_id}: an id lives only while its partition is held"
            );
            if let Some(write) = entry.pending {
                let pending = &self.writes[&write];
                assert_eq!(&pending.transactional_id, transactional_id);
            } else {
                assert!(
                    entry.metadata.is_some(),
                    "{transactional_id}: no state, no write"
                );
            }
            if let Some(metadata) = &entry.metadata {
                assert!(metadata.producer_id >= 0 && metadata.epoch >= 0);
                assert!(
                    metadata.state.is_open() || metadata.partitions.is_empty(),
                    "{transactional_id}: only an open transaction holds partitions"
                );
                assert!(
                    metadata.state != TxnState::Ongoing || !metadata.partitions.is_empty(),
                    "{transactional_id}: an ongoing transaction holds a partition"
                );
            }
        }
        for (write, pending) in &self.writes {
            assert!(*write < self.write_next);
            assert_eq!(
                self.entries[&pending.transactional_id].pending,
                Some(*write),
                "every write in flight is its id's one pending write"
            );
        }
    }
}

impl Entry {
    /// When to write the completion again after a failed attempt: only while the decision is
    /// still prepared and nothing is in flight (a resent `MarkersWritten` may have started the
    /// completion meanwhile; the retry would then be a second write in flight).
    fn complete_retry_due(&self) -> Option<Duration> {
        let prepared = self.metadata.as_ref().is_some_and(|metadata| {
            matches!(
                metadata.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            )
        });
        self.complete_retry_at
            .filter(|_| prepared && self.pending.is_none())
    }

    /// When the open transaction times out: only an Ongoing one with nothing in flight.
    fn timeout_at(&self) -> Option<Duration> {
        let metadata = self.metadata.as_ref()?;
        (metadata.state == TxnState::Ongoing && self.pending.is_none()).then(|| {
            let at = self.started + metadata.timeout;
            self.timeout_retry_at.map_or(at, |retry| at.max(retry))
        })
    }
}

fn markers_of(transactional_id: &str, metadata: &TxnMetadata) -> Markers {
    Markers {
        transactional_id: transactional_id.to_string(),
        producer_id: metadata.producer_id,
        epoch: metadata.epoch,
        commit: metadata.state == TxnState::PrepareCommit,
        partitions: metadata.partitions.clone(),
    }
}
