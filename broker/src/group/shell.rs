//! The async shell around `Coordinator`: one mutex, replies through oneshot channels, writes to
//! `__consumer_offsets`, a timer task, and recovery by replay.
//!
//! `__consumer_offsets` lives one of two ways (`Placement`). On a lone node it is the node's
//! own topic, replayed whole at startup. In a cluster of several voters it is a topic of the
//! metadata image, replicated like any other (`internal_replication_factor`), and this shell
//! holds a partition only while this broker leads it (`leadership_apply`, after each
//! reconcile): it replays the partition from the local log, serves its groups once the HW
//! covers what it replayed, appends at the image's leader epoch and counts a write persisted
//! once the HW covers it (fsynced on every ISR member, as acks=all); a leadership lost drops
//! the partition's groups and fails its pending writes with NOT_COORDINATOR.
//!
//! A handler calls `submit` with an `Input`; the shell steps the core under the lock and runs the
//! outputs in order before releasing it: replies go to their request's channel, and `Persist`
//! appends to the partition log at once (so log order is output order), asks its flusher for an
//! fsync and spawns a waiter that reports `Persisted` when the write is durable. The handler's
//! future awaits the channel (JoinGroup and SyncGroup wait there for the rebalance barrier).
//!
//! Lock order: the coordinator lock, then a partition's log lock; never the reverse.

use super::coordinator::{Coordinator, Input, Output};
use super::records::{record_decode, record_encode, OffsetsRecord, RecordError};
use super::{GroupConfig, RequestId, OFFSETS_TOPIC};
use crate::cluster_mode::Placement;
use crate::coordinated::{
    ack_durable, leadership_changes, replay_covered, replicated_append, PersistError,
};
use crate::partition::Partition;
use crate::planted::Bug;
use crate::topics::{TopicError, Topics};
use bytes::Bytes;
use cluster::image::MetadataImage;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use runtime::rng::ChaCha8Rng;
use runtime::sync::{oneshot, Notify};
use runtime::Clock;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use storage::PartitionLog;
use wire::batch::build::{batch_encode, batch_encode_with, RecordSpec};

/// The timer wakes at least this often, even with no deadline pending, so that it notices the
/// coordinator was dropped. Deadlines themselves are met exactly.
const TIMER_IDLE_MAX: Duration = Duration::from_secs(1);
/// Bytes read per step while replaying a partition of `__consumer_offsets`.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// Reads of one replay step before the coordinator's load fails. An injected read error (EIO) or
/// a bit flipped on the way from the disk fails one read and not the next, as the storage scan's
/// `SCAN_REREADS` assumes; a failure that survives four fresh reads is not transient.
const REPLAY_READ_ATTEMPTS: u32 = 4;
/// `__consumer_offsets` segments: Kafka's `offsets.topic.segment.bytes`, small so that
/// compaction (which only rewrites closed segments) keeps replay short.
const OFFSETS_SEGMENT_BYTES: &str = "104857600";
/// The leader epoch stamped on a node-local topic's writes: a lone node never changes
/// leadership.
const LEADER_EPOCH: i32 = 0;

/// A partition of `__consumer_offsets` this coordinator holds.
struct Held {
    partition: Arc<Partition>,
    /// The image's leader epoch it is led at; `None` for the node-local topic.
    leader_epoch: Option<i32>,
    /// Whether a leader core decides its HW (more than one replica).
    replicated: bool,
    /// Identifies this load, so a late "the HW covers the replay" of an earlier one is ignored.
    load: u64,
}

struct State {
    core: Coordinator,
    replies: BTreeMap<RequestId, oneshot::Sender<Output>>,
    /// Reused across steps.
    outputs: Vec<Output>,
    /// The partitions of `__consumer_offsets` held here, by index.
    partitions: BTreeMap<i32, Held>,
    load_next: u64,
    /// The offset of the newest image applied (`leadership_apply`).
    image_offset: u64,
}

pub struct GroupCoordinator {
    state: Mutex<State>,
    topic: Placement,
    /// A creation of the replicated topic is under way (`create_begin`).
    creating: AtomicBool,
    /// The planted bug switched on (feature `planted-bugs` only; always `None` otherwise).
    planted: Option<Bug>,
    clock: Clock,
    started: runtime::time::Instant,
    timer_wake: Arc<Notify>,
    request_next: AtomicU64,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupCoordinator")
            .field("topic", &self.topic)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupCoordinator {
    /// Creates `__consumer_offsets` if missing, replays it, and starts the timer task; for a
    /// replicated topic (`Placement::Replicated`) nothing is opened or replayed here: the
    /// partitions come with their leadership (`leadership_apply`).
    pub fn open(
        topics: &mut Topics,
        config: GroupConfig,
        topic: Placement,
        clock: Clock,
        mut rng: ChaCha8Rng,
        planted: Option<Bug>,
    ) -> Result<Arc<GroupCoordinator>, TopicError> {
        let mut held = BTreeMap::new();
        let mut core = match topic {
            Placement::Replicated => {
                Coordinator::replicated(config.clone(), config.offsets_topic_partitions, rng)
            }
            Placement::Local => {
                let partitions = internal_topic_open(
                    topics,
                    OFFSETS_TOPIC,
                    config.offsets_topic_partitions,
                    clock.wall_ms(),
                    &mut rng,
                )?;
                let core = Coordinator::new(config, partitions.len() as i32, rng);
                for partition in partitions {
                    let held_partition = Held {
                        partition,
                        leader_epoch: None,
                        replicated: false,
                        load: 0,
                    };
                    held.insert(held_partition.partition.index, held_partition);
                }
                core
            }
        };
        core.planted_set(planted.filter(|_| cfg!(feature = "planted-bugs")));
        for held_partition in held.values() {
            let partition = &held_partition.partition;
            runtime::buggify::hit(
                &**partition.log().disk(),
                runtime::buggify::Site::OffsetsReplay,
            );
            replay_partition(&mut core, partition, Duration::ZERO)?;
        }
        core.replay_finish();
        tracing::info!(
            groups = core.groups().count(),
            "group coordinator recovered"
        );
        let coordinator = Arc::new(GroupCoordinator {
            state: Mutex::new(State {
                core,
                replies: BTreeMap::new(),
                outputs: Vec::new(),
                partitions: held,
                load_next: 1,
                image_offset: 0,
            }),
            topic,
            creating: AtomicBool::new(false),
            planted,
            started: clock.now(),
            clock,
            timer_wake: Arc::new(Notify::new()),
            request_next: AtomicU64::new(1),
        });
        runtime::spawn(timer_run(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    /// Where `__consumer_offsets` lives.
    pub fn topic(&self) -> Placement {
        self.topic
    }

    /// Claims the one creation of a replicated `__consumer_offsets` under way; `false` if one is.
    pub fn create_begin(&self) -> bool {
        !self.creating.swap(true, Ordering::AcqRel)
    }

    pub fn create_end(&self) {
        self.creating.store(false, Ordering::Release);
    }

    /// Monotonic time since this coordinator started: the core's clock.
    pub fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.started)
    }

    pub fn wall_ms(&self) -> i64 {
        self.clock.wall_ms()
    }

    /// Steps the core with the input `make` builds for a fresh request id; the receiver gets the
    /// reply (at once, or when a rebalance barrier falls).
    pub fn submit(
        self: &Arc<Self>,
        make: impl FnOnce(RequestId, Duration) -> Input,
    ) -> oneshot::Receiver<Output> {
        let request = self.request_next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let mut state = lock(&self.state);
        state.replies.insert(request, sender);
        let input = make(request, self.now());
        self.run(&mut state, input);
        receiver
    }

    /// A transaction marker is durable on partition `partition` of `__consumer_offsets`: the
    /// producer's pending transactional offsets there are committed or dropped. Called where
    /// WriteTxnMarkers writes a marker to an internal partition.
    pub fn txn_completed(
        self: &Arc<Self>,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) {
        self.step(Input::TxnMarker {
            partition,
            producer_id,
            epoch,
            commit,
        });
    }

    /// A read-only look at the core (DescribeGroups, ListGroups, OffsetFetch).
    pub fn read<R>(&self, read: impl FnOnce(&Coordinator) -> R) -> R {
        read(&lock(&self.state).core)
    }

    fn step(self: &Arc<Self>, input: Input) {
        let mut state = lock(&self.state);
        self.run(&mut state, input);
    }

    /// Steps the core and runs its outputs in order; failed appends come back as inputs.
    fn run(self: &Arc<Self>, state: &mut State, input: Input) {
        self.run_with(state, |core, outputs| core.step(outputs, input));
    }

    /// Runs `first` on the core, then its outputs in order, then the inputs they cause.
    fn run_with(
        self: &Arc<Self>,
        state: &mut State,
        first: impl FnOnce(&mut Coordinator, &mut Vec<Output>),
    ) {
        let mut first = Some(first);
        let mut inputs = VecDeque::new();
        loop {
            let mut outputs = std::mem::take(&mut state.outputs);
            match (first.take(), inputs.pop_front()) {
                (Some(first), _) => first(&mut state.core, &mut outputs),
                (None, Some(input)) => state.core.step(&mut outputs, input),
                (None, None) => {
                    state.outputs = outputs;
                    break;
                }
            }
            for output in outputs.drain(..) {
                let request = match output {
                    Output::Persist {
                        partition,
                        write,
                        records,
                        producer,
                    } => {
                        if let Err(error) =
                            self.persist(state, partition, write, &records, producer)
                        {
                            tracing::error!(partition, write, %error, "offsets append failed");
                            inputs.push_back(Input::PersistFailed { write });
                        }
                        continue;
                    }
                    Output::Join { request, .. }
                    | Output::Sync { request, .. }
                    | Output::Heartbeat { request, .. }
                    | Output::Leave { request, .. }
                    | Output::OffsetCommit { request, .. }
                    | Output::TxnOffsetCommit { request, .. }
                    | Output::Delete { request, .. }
                    | Output::OffsetDelete { request, .. } => request,
                };
                if let Some(sender) = state.replies.remove(&request) {
                    // The requester may be gone (connection closed): nothing to do then.
                    let _ = sender.send(output);
                }
            }
            state.outputs = outputs;
        }
        // A deadline may have moved earlier.
        self.timer_wake.notify_one();
    }

    /// Appends one write as one batch (a transactional one of `producer`, for TxnOffsetCommit)
    /// and spawns the waiter that reports its durability: the fsync for the node-local topic,
    /// the HW for a replicated one.
    fn persist(
        self: &Arc<Self>,
        state: &mut State,
        partition_index: i32,
        write: u64,
        records: &[OffsetsRecord],
        producer: Option<(i64, i16)>,
    ) -> Result<(), PersistError> {
        let held = state
            .partitions
            .get(&partition_index)
            .ok_or(PersistError::NotHeld)?;
        let partition = held.partition.clone();
        let now_ms = self.clock.wall_ms();
        let specs: Vec<RecordSpec> = records
            .iter()
            .map(|record| {
                let (key, value) = record_encode(record);
                RecordSpec {
                    key: Some(key),
                    value,
                    headers: Vec::new(),
                    timestamp: now_ms,
                }
            })
            .collect();
        let batch = match producer {
            None => batch_encode(&specs, Compression::None),
            // Kafka writes a transactional offset commit with no sequence: the coordinator is the
            // only writer of its partitions, so there is nothing to deduplicate.
            Some((producer_id, epoch)) => {
                batch_encode_with(&specs, Compression::None, producer_id, epoch, -1, true)
            }
        };
        let leader_epoch = held.leader_epoch.unwrap_or(LEADER_EPOCH);
        let coordinator = Arc::downgrade(self);
        if held.replicated {
            let receiver = replicated_append(&partition, leader_epoch, |log| {
                log.append(batch, leader_epoch, now_ms)
            })?;
            runtime::spawn(async move {
                let durable = ack_durable(receiver).await;
                if let Some(coordinator) = coordinator.upgrade() {
                    coordinator.step(persisted_input(write, durable));
                }
            });
            return Ok(());
        }
        let appended = partition.log().append(batch, leader_epoch, now_ms)?;
        partition.flush_request();
        // The planted bug `commit-ack-before-fsync`: the write counts as persisted once it is in
        // the page cache, so a commit is acknowledged (and served) before its fsync.
        let ack_early = Bug::active(self.planted, Bug::CommitAckBeforeFsync);
        runtime::spawn(async move {
            let durable = ack_early || partition.durable_wait(appended.last_offset).await;
            if let Some(coordinator) = coordinator.upgrade() {
                coordinator.step(persisted_input(write, durable));
            }
        });
        Ok(())
    }

    /// Brings the held partitions of a replicated `__consumer_offsets` in line with `image`
    /// (after each reconcile): a partition this broker leads, whose leader core runs at the
    /// image's epoch, is loaded (again, at a new epoch); one it no longer leads is unloaded.
    /// `partition_of(index)` is the local partition, if open. A load whose replay fails is
    /// left unloaded and tried again at the next reconcile.
    pub fn leadership_apply(
        self: &Arc<Self>,
        image: &MetadataImage,
        node_id: i32,
        partition_of: impl Fn(i32) -> Option<Arc<Partition>>,
    ) {
        if self.topic != Placement::Replicated {
            return;
        }
        let topic = image.topic_by_name(OFFSETS_TOPIC);
        let mut state = lock(&self.state);
        // Two reconciles race (the loop and an admin call): an older image after a newer one
        // would unload a partition led here.
        if image.offset() < state.image_offset {
            return;
        }
        state.image_offset = image.offset();
        let count = topic.map_or(0, |topic| topic.partitions.len());
        let count = i32::try_from(count).expect("partition count fits i32");
        if state.partitions.is_empty() && count > 0 && count != state.core.partition_count() {
            state.core.partition_count_set(count);
        }
        let held = |index| {
            let held: &Held = state.partitions.get(&index)?;
            Some(held.leader_epoch.expect("replicated: held at an epoch"))
        };
        let count = state.core.partition_count();
        let changes = leadership_changes(image, OFFSETS_TOPIC, count, node_id, held, partition_of);
        for change in changes {
            // The planted bug `coordinator-keeps-moved-groups`: a lost partition is kept.
            let kept = change.load.is_none()
                && Bug::active(self.planted, Bug::CoordinatorKeepsMovedGroups);
            if kept {
                continue;
            }
            let index = change.index;
            if change.unload {
                state.partitions.remove(&index);
                self.run_with(&mut state, |core, outputs| {
                    core.partition_unload(outputs, index)
                });
            }
            if let Some((partition, leader_epoch, replicated)) = change.load {
                self.load(&mut state, index, partition, leader_epoch, replicated);
            }
        }
    }

    /// Replays partition `index` (led here at `leader_epoch`) into the core and waits in the
    /// background until the HW covers the replayed end, then serves its groups.
    fn load(
        self: &Arc<Self>,
        state: &mut State,
        index: i32,
        partition: Arc<Partition>,
        leader_epoch: i32,
        replicated: bool,
    ) {
        self.run_with(state, |core, outputs| {
            core.partition_load_begin(outputs, index)
        });
        let now = self.now();
        // The planted bug `offsets-load-skips-replay`: the partition is served from nothing.
        let replayed = match Bug::active(self.planted, Bug::OffsetsLoadSkipsReplay) {
            true => Ok(()),
            false => replay_partition(&mut state.core, &partition, now),
        };
        if let Err(error) = replayed {
            tracing::error!(partition = index, %error, "offsets partition load failed");
            self.run_with(state, |core, outputs| core.partition_unload(outputs, index));
            return;
        }
        state.core.replay_finish();
        let end = partition.log().log_end_offset();
        let load = state.load_next;
        state.load_next += 1;
        let held = Held {
            partition: partition.clone(),
            leader_epoch: Some(leader_epoch),
            replicated,
            load,
        };
        state.partitions.insert(index, held);
        tracing::info!(
            partition = index,
            leader_epoch,
            end,
            "offsets partition loading"
        );
        let coordinator = Arc::downgrade(self);
        let Some(covered) = replay_covered(&partition, leader_epoch, replicated, end) else {
            return; // Deposed meanwhile: the reconcile that follows unloads it.
        };
        runtime::spawn(async move {
            let covered = covered.await;
            let Some(coordinator) = coordinator.upgrade() else {
                return;
            };
            let mut state = lock(&coordinator.state);
            let current = state
                .partitions
                .get(&index)
                .is_some_and(|held| held.load == load);
            if covered && current {
                state.core.partition_activate(index);
                tracing::info!(partition = index, leader_epoch, "offsets partition loaded");
            }
        });
    }
}

/// `Persisted` or `PersistFailed`, as the wait for a write ended.
fn persisted_input(write: u64, durable: bool) -> Input {
    match durable {
        true => Input::Persisted { write },
        false => Input::PersistFailed { write },
    }
}

/// Wakes the core at its next deadline (session expiry, rebalance timeout, initial delay).
async fn timer_run(coordinator: Weak<GroupCoordinator>) {
    loop {
        let Some(strong) = coordinator.upgrade() else {
            return;
        };
        let wake = strong.timer_wake.clone();
        let notified = wake.notified();
        runtime::pin!(notified);
        notified.as_mut().enable();
        let now = strong.now();
        let deadline = strong.read(Coordinator::deadline_next);
        if deadline.is_some_and(|at| at <= now) {
            strong.step(Input::Tick { now });
            continue;
        }
        let wait = deadline.map_or(TIMER_IDLE_MAX, |at| (at - now).min(TIMER_IDLE_MAX));
        drop(strong);
        runtime::select! {
            biased;
            () = &mut notified => {}
            () = runtime::time::sleep(wait) => {}
        }
    }
}

/// An internal topic's configs: compacted, Kafka's small segments.
pub(crate) fn internal_topic_configs() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            OFFSETS_SEGMENT_BYTES.to_string(),
        ),
    ])
}

/// The partitions of an internal topic (`__consumer_offsets`, `__transaction_state`), creating
/// it (compacted, `partition_count` partitions) on first start.
pub(crate) fn internal_topic_open(
    topics: &mut Topics,
    name: &str,
    partition_count: i32,
    now_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Arc<Partition>>, TopicError> {
    if topics.get(name).is_none() {
        let configs = internal_topic_configs();
        let mut topic_id = [0u8; 16];
        while topic_id == [0u8; 16] {
            runtime::rng::RngCore::fill_bytes(rng, &mut topic_id);
        }
        topics.create(name, partition_count, &configs, topic_id, now_ms)?;
    }
    let count = topics.get(name).expect("exists").partition_count;
    Ok((0..count)
        .map(|index| topics.partition(name, index).expect("listed"))
        .collect())
}

/// Feeds every record of one partition to the core, in log order, or fails: a partition replayed
/// only in part would serve its groups from an older state (generation 1 again, committed offsets
/// lost or regressed: issue 9), so a read that keeps failing fails the coordinator's load, and
/// with it the broker's start (the simulator retries it, as an operator's supervisor would).
fn replay_partition(
    core: &mut Coordinator,
    partition: &Partition,
    now: Duration,
) -> Result<(), TopicError> {
    let log = partition.log();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut record_count = 0usize;
    while offset < end {
        // No batch at or after `offset`: compaction emptied the rest of the log.
        let read = replay_read(
            &log,
            OFFSETS_TOPIC,
            partition.index,
            offset,
            end,
            replay_decode,
        )?;
        let Some((records, next_offset)) = read else {
            break;
        };
        assert!(
            next_offset > offset,
            "a read that returned batches moves on"
        );
        record_count += records.len();
        for item in records {
            match item {
                ReplayItem::Record(record) => core.replay(now, record),
                ReplayItem::Transactional {
                    producer_id,
                    record,
                } => core.replay_txn(producer_id, record),
                ReplayItem::Marker {
                    producer_id,
                    epoch,
                    commit,
                } => core.replay_marker(partition.index, producer_id, epoch, commit),
            }
        }
        offset = next_offset;
    }
    tracing::debug!(
        partition = partition.index,
        record_count,
        "offsets partition replayed"
    );
    Ok(())
}

/// Reads and decodes the batches at `offset` of an internal topic's partition: the records and
/// the offset after them, or `None` at the end of the data. A failed read or decode is read
/// again from the disk, as the storage scan does, up to `REPLAY_READ_ATTEMPTS` times; each retry
/// is a trace event with `site = "offsets-replay-reread"`, which the simulator counts so its
/// regression seeds can prove they still meet the fault. Shared by the transaction coordinator.
pub(crate) fn replay_read<R>(
    log: &PartitionLog,
    topic: &'static str,
    partition: i32,
    offset: i64,
    end: i64,
    decode: impl Fn(i32, &Bytes) -> Result<Vec<R>, String>,
) -> Result<Option<(Vec<R>, i64)>, TopicError> {
    let mut attempt = 1;
    loop {
        let reason = match log.read(offset, REPLAY_READ_BYTES, end) {
            // No batch at or after `offset` below the end: compaction emptied the rest, or a
            // damaged read stopped before the first batch (a bit flip in a header). Only a
            // reread tells them apart; taking the second for the first replayed no groups and
            // lost every committed offset (single-groups 950290847).
            Ok(read) if read.batch_count == 0 && attempt == REPLAY_READ_ATTEMPTS => {
                return Ok(None)
            }
            Ok(read) if read.batch_count == 0 => "no batch below the log end".to_string(),
            Ok(read) => match decode(partition, &read.bytes) {
                Ok(records) => return Ok(Some((records, read.next_offset))),
                Err(reason) => reason,
            },
            Err(error) => error.to_string(),
        };
        if attempt == REPLAY_READ_ATTEMPTS {
            return Err(TopicError::OffsetsReplay {
                topic,
                partition,
                offset,
                attempts: attempt,
                reason,
            });
        }
        tracing::warn!(
            site = "offsets-replay-reread",
            topic,
            partition,
            offset,
            attempt,
            %reason,
            "internal topic replay read failed; reading again"
        );
        attempt += 1;
    }
}

/// One thing replay finds in `__consumer_offsets`, in log order.
#[derive(Debug)]
enum ReplayItem {
    Record(OffsetsRecord),
    /// A record of a transactional batch (TxnOffsetCommit): pending until its marker.
    Transactional {
        producer_id: i64,
        record: OffsetsRecord,
    },
    /// A COMMIT or ABORT marker of `producer_id`.
    Marker {
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
}

/// The records of whole batches read back from `__consumer_offsets`. A batch that does not
/// decode is an error (its CRC passed on this read, so a retry can only help if the bytes
/// changed); so is a record that does not decode, except a key version this broker does not
/// know, which a newer broker wrote and which Kafka skips as well. Control records are markers:
/// key `[i16 version][i16 type: 0 abort, 1 commit]`.
fn replay_decode(partition: i32, bytes: &Bytes) -> Result<Vec<ReplayItem>, String> {
    let mut bytes = bytes.clone();
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|error| format!("undecodable batch: {error}"))?;
        for record in &set.records {
            if record.control {
                let key = record.key.as_deref().unwrap_or_default();
                let commit = match key.get(2..4) {
                    Some([0, 0]) => false,
                    Some([0, 1]) => true,
                    _ => {
                        tracing::warn!(
                            partition,
                            offset = record.offset,
                            "skipping an unknown control record"
                        );
                        continue;
                    }
                };
                records.push(ReplayItem::Marker {
                    producer_id: record.producer_id,
                    epoch: record.producer_epoch,
                    commit,
                });
                continue;
            }
            match record_decode(record.key.as_ref(), record.value.as_ref()) {
                Ok(decoded) if record.transactional => records.push(ReplayItem::Transactional {
                    producer_id: record.producer_id,
                    record: decoded,
                }),
                Ok(decoded) => records.push(ReplayItem::Record(decoded)),
                Err(error @ RecordError::Version { what: "key", .. }) => tracing::warn!(
                    partition, offset = record.offset, %error,
                    "skipping an offsets record of an unknown kind"
                ),
                Err(error) => {
                    return Err(format!("record at offset {}: {error}", record.offset));
                }
            }
        }
    }
    Ok(records)
}
