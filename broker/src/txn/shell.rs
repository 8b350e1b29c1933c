//! The async shell around the transaction `Coordinator`: one mutex, replies through oneshot
//! channels (parked until their record is durable), appends to `__transaction_state`, a timer
//! task for transaction timeouts, the marker channel, and recovery by replay.
//!
//! A handler calls `submit` with an `Input`; the shell steps the core under the lock and runs the
//! outputs in order before releasing it: replies go to their request's channel, `Persist`
//! appends to the partition log at once (log order is output order), asks its flusher for an
//! fsync and spawns a waiter that reports `Persisted` when the write is durable, and `Markers`
//! queues the decision's markers for the marker task.
//!
//! The marker task is Kafka's `TransactionMarkerChannelManager` in miniature: every due
//! decision's markers are grouped by destination broker (each partition's leader, by the
//! image: `MarkerSender::leader`) into one WriteTxnMarkers request per broker, sent through a
//! `MarkerSender` (this broker's handler, or the network); a partition is done when its marker
//! is written, or when the answer says it never will be (a newer epoch fenced the producer
//! there, or the partition is gone); any other answer, and a partition with no leader, is
//! retried with backoff. When every partition of a decision is done the core hears
//! `MarkersWritten` and completes the transaction.
//!
//! `__transaction_state` lives one of two ways (`Placement`), as `__consumer_offsets` does
//! (`group::shell`). On a lone node it is the node's own, created on first use (FindCoordinator
//! for a transactional id, or InitProducerId with one) and replayed whole at startup. In a
//! cluster of several voters it is a topic of the metadata image (FindCoordinator has the
//! controller create it), and this shell holds a partition only while this broker leads it
//! (`leadership_apply`, after each reconcile): it replays the partition, serves its ids once
//! the HW covers the replay (then resends the markers of every decision it found prepared),
//! appends at the image's leader epoch, counts a write durable once the HW covers it, and
//! writes that epoch into its markers as the coordinator epoch, which fences a deposed
//! coordinator's markers at every partition. A leadership lost forgets the partition's ids and
//! their markers still to send, and fails their pending writes with NOT_COORDINATOR: the new
//! coordinator finds the decision in the log and finishes it.
//!
//! The timer and marker tasks start with the first partition held: a broker that never sees a
//! transaction runs nothing here.
//!
//! Lock order: the coordinator lock, then a partition's log lock, then the producer id lock.

use super::coordinator::{Coordinator, Input, Output};
use super::records::{record_decode, record_encode, RecordError, TxnRecord};
use super::{RequestId, TxnConfig, COORDINATOR_EPOCH, TRANSACTION_STATE_TOPIC};
use crate::cluster_mode::Placement;
use crate::coordinated::{ack_durable, leadership_changes, replay_covered, replicated_append};
use crate::group::shell::{internal_topic_open, replay_read};
use crate::group::TopicPartition;
use crate::partition::Partition;
use crate::planted::Bug;
use crate::producer_ids::ProducerIds;
use crate::topics::{TopicError, Topics};
use bytes::Bytes;
use cluster::image::MetadataImage;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use runtime::rng::ChaCha8Rng;
use runtime::sync::{oneshot, Notify};
use runtime::Clock;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};

/// The timer and the marker task wake at least this often, so that they notice the coordinator
/// was dropped. Deadlines themselves are met exactly.
const TIMER_IDLE_MAX: Duration = Duration::from_secs(1);
/// The first retry of a marker waits this long (Kafka's `retry.backoff.ms`), doubling per
/// attempt up to `MARKER_BACKOFF_MAX`.
const MARKER_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const MARKER_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A WriteTxnMarkers request unanswered this long is retried: longer than the broker waits for
/// its markers to be committed (`write_txn_markers::MARKER_WAIT_MAX`) and the connection's
/// request timeout (`sender::REQUEST_TIMEOUT`), so an answer in time is never thrown away.
const MARKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The leader epoch stamped on a node-local topic's writes: a lone node never changes
/// leadership.
const LEADER_EPOCH: i32 = 0;

/// Where WriteTxnMarkers requests go: the partitions' leaders (`BrokerMarkerSender`), or, in
/// unit tests, a fake.
pub trait MarkerSender: Send + Sync + std::fmt::Debug {
    /// The broker leading `partition` now, if any.
    fn leader(&self, partition: &TopicPartition) -> Option<i32>;
    /// Sends `request` to broker `node_id`; `Err` when it could not be delivered or answered.
    fn send(&self, node_id: i32, request: WriteTxnMarkersRequest) -> MarkerFuture;
}

pub type MarkerFuture =
    Pin<Box<dyn Future<Output = Result<WriteTxnMarkersResponse, String>> + Send>>;

/// One decision's markers still to write.
#[derive(Debug, Clone)]
struct MarkerEntry {
    producer_id: i64,
    epoch: i16,
    commit: bool,
    /// The epoch this coordinator holds the id's partition at: the marker's coordinator epoch.
    coordinator_epoch: i32,
    remaining: BTreeSet<TopicPartition>,
    attempts: u32,
    due: Duration,
    /// Requests out carrying some of its partitions (one per destination broker).
    in_flight: u32,
    /// Unique per entry: answers are applied by it, never by producer id and epoch, which the
    /// next transaction of the same producer (or a reload of the partition) shares.
    seq: u64,
}

/// One WriteTxnMarkers request out: its destination and the entries (transactional id, seq)
/// whose markers it carries.
struct MarkerRequest {
    node: i32,
    request: WriteTxnMarkersRequest,
    entries: Vec<(String, u64)>,
}

/// A partition of `__transaction_state` this coordinator holds.
struct Held {
    partition: Arc<Partition>,
    /// The image's leader epoch it is led at; `None` for the node-local topic.
    leader_epoch: Option<i32>,
    /// Whether a leader core decides its HW (more than one replica).
    replicated: bool,
    /// Identifies this load, so a late "the HW covers the replay" of an earlier one is ignored.
    load: u64,
}

impl Held {
    fn coordinator_epoch(&self) -> i32 {
        self.leader_epoch.unwrap_or(COORDINATOR_EPOCH)
    }
}

struct State {
    core: Coordinator,
    replies: BTreeMap<RequestId, oneshot::Sender<Output>>,
    /// Reused across steps.
    outputs: Vec<Output>,
    /// The partitions of `__transaction_state` held here, by index: every partition of the
    /// node-local topic once it exists, the led ones of a replicated topic.
    partitions: BTreeMap<i32, Held>,
    /// Markers to write, per transactional id (one decision per id at a time).
    markers: BTreeMap<String, MarkerEntry>,
    /// Draws the topic id when the topic is created.
    rng: ChaCha8Rng,
    load_next: u64,
    /// The offset of the newest image applied (`leadership_apply`).
    image_offset: u64,
    /// Identifies marker entries: an answer is applied only to the entries that were sent.
    marker_next: u64,
}

pub struct TxnCoordinator {
    state: Mutex<State>,
    config: TxnConfig,
    placement: Placement,
    /// A creation of the replicated topic is under way (`create_begin`).
    creating: AtomicBool,
    producer_ids: Arc<Mutex<ProducerIds>>,
    sender: OnceLock<Arc<dyn MarkerSender>>,
    node_id: i32,
    /// The planted bug switched on (feature `planted-bugs` only; always `None` otherwise).
    planted: Option<Bug>,
    clock: Clock,
    started: runtime::time::Instant,
    timer_wake: Arc<Notify>,
    markers_wake: Arc<Notify>,
    request_next: AtomicU64,
    /// The timer and marker tasks run (the topic exists and `start` was called).
    active: AtomicBool,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TxnCoordinator")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TxnCoordinator {
    /// Replays a node-local `__transaction_state` if it exists; a replicated one's partitions
    /// come with their leadership (`leadership_apply`). Nothing runs until `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        topics: &Topics,
        config: TxnConfig,
        placement: Placement,
        offsets_partition_count: i32,
        node_id: i32,
        clock: Clock,
        rng: ChaCha8Rng,
        producer_ids: Arc<Mutex<ProducerIds>>,
        planted: Option<Bug>,
    ) -> Result<Arc<TxnCoordinator>, TopicError> {
        let local = topics
            .get(TRANSACTION_STATE_TOPIC)
            .filter(|_| placement == Placement::Local);
        let partitions: BTreeMap<i32, Held> = match local {
            None => BTreeMap::new(),
            Some(metadata) => (0..metadata.partition_count)
                .map(|index| {
                    let partition = topics
                        .partition(TRANSACTION_STATE_TOPIC, index)
                        .expect("listed");
                    (index, Held::local(partition))
                })
                .collect(),
        };
        let mut core = match (placement, partitions.len()) {
            (Placement::Replicated, _) => Coordinator::replicated(
                config.clone(),
                config.state_partitions,
                offsets_partition_count,
            ),
            (Placement::Local, 0) => Coordinator::new(
                config.clone(),
                config.state_partitions,
                offsets_partition_count,
            ),
            (Placement::Local, count) => {
                let count = i32::try_from(count).expect("partition count fits i32");
                Coordinator::new(config.clone(), count, offsets_partition_count)
            }
        };
        core.planted_set(planted.filter(|_| cfg!(feature = "planted-bugs")));
        for held in partitions.values() {
            replay_partition(&mut core, &held.partition, Duration::ZERO)?;
        }
        let mut outputs = Vec::new();
        core.replay_finish(&mut outputs);
        let coordinator = Arc::new(TxnCoordinator {
            state: Mutex::new(State {
                core,
                replies: BTreeMap::new(),
                outputs: Vec::new(),
                partitions,
                markers: BTreeMap::new(),
                rng,
                load_next: 1,
                image_offset: 0,
                marker_next: 1,
            }),
            config,
            placement,
            creating: AtomicBool::new(false),
            producer_ids,
            sender: OnceLock::new(),
            node_id,
            planted,
            started: clock.now(),
            clock,
            timer_wake: Arc::new(Notify::new()),
            markers_wake: Arc::new(Notify::new()),
            request_next: AtomicU64::new(1),
            active: AtomicBool::new(false),
        });
        {
            let mut state = lock(&coordinator.state);
            let recovered = outputs.len();
            for output in outputs {
                coordinator.output_run(&mut state, output, &mut VecDeque::new());
            }
            if !state.partitions.is_empty() {
                tracing::info!(
                    transactional_ids = state.core.list().count(),
                    markers_resent = recovered,
                    "transaction coordinator recovered"
                );
            }
        }
        Ok(coordinator)
    }

    /// Gives the coordinator its marker channel; the tasks start now if the topic exists.
    pub fn start(self: &Arc<Self>, sender: Arc<dyn MarkerSender>) {
        assert!(self.sender.set(sender).is_ok(), "started once");
        if !lock(&self.state).partitions.is_empty() {
            self.activate();
        }
    }

    fn activate(self: &Arc<Self>) {
        if self.sender.get().is_none() || self.active.swap(true, Ordering::SeqCst) {
            return;
        }
        runtime::spawn(timer_run(Arc::downgrade(self)));
        runtime::spawn(markers_run(Arc::downgrade(self)));
    }

    /// Creates a node-local `__transaction_state` on first use (FindCoordinator or
    /// InitProducerId for a transactional id); nothing for a replicated one, which
    /// FindCoordinator asks the controller for. Lock order: the topics lock (held by the
    /// caller), then ours.
    pub fn topic_ensure(self: &Arc<Self>, topics: &mut Topics) -> Result<(), TopicError> {
        if self.placement == Placement::Replicated {
            return Ok(());
        }
        {
            let mut state = lock(&self.state);
            if !state.partitions.is_empty() {
                return Ok(());
            }
            let State { rng, .. } = &mut *state;
            let partitions = internal_topic_open(
                topics,
                TRANSACTION_STATE_TOPIC,
                self.config.state_partitions,
                self.clock.wall_ms(),
                rng,
            )?;
            state.partitions = partitions
                .into_iter()
                .map(|partition| (partition.index, Held::local(partition)))
                .collect();
            tracing::info!("created {TRANSACTION_STATE_TOPIC}");
        }
        self.activate();
        Ok(())
    }

    /// Claims the one creation of a replicated `__transaction_state` under way; `false` if one
    /// is.
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

    /// Steps the core with the input `make` builds for a fresh request id, `now` and the wall
    /// clock; the receiver gets the reply (at once, or once its write is durable).
    pub fn submit(
        self: &Arc<Self>,
        make: impl FnOnce(RequestId, Duration, i64) -> Input,
    ) -> oneshot::Receiver<Output> {
        let request = self.request_next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let mut state = lock(&self.state);
        state.replies.insert(request, sender);
        let input = make(request, self.now(), self.wall_ms());
        self.run(&mut state, input);
        receiver
    }

    /// InitProducerId for a transactional id: a never-issued producer id is allocated first if
    /// the core will need one (a new id, or an exhausted epoch).
    pub fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: String,
        timeout: Duration,
        expected: Option<(i64, i16)>,
    ) -> oneshot::Receiver<Output> {
        let request = self.request_next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let mut state = lock(&self.state);
        state.replies.insert(request, sender);
        let fresh_producer_id = match state.core.needs_producer_id(&transactional_id) {
            false => None,
            true => match lock(&self.producer_ids).next_id() {
                Ok(id) => Some(id),
                Err(error) => {
                    tracing::warn!(%error, "cannot allocate a producer id");
                    None
                }
            },
        };
        let input = Input::InitProducerId {
            request,
            now: self.now(),
            wall_ms: self.wall_ms(),
            transactional_id,
            timeout,
            expected,
            fresh_producer_id,
        };
        self.run(&mut state, input);
        receiver
    }

    /// A read-only look at the core (DescribeTransactions, ListTransactions, verify_only).
    pub fn read<R>(&self, read: impl FnOnce(&Coordinator) -> R) -> R {
        read(&lock(&self.state).core)
    }

    fn step(self: &Arc<Self>, input: Input) {
        let mut state = lock(&self.state);
        self.run(&mut state, input);
    }

    /// Steps the core and runs its outputs in order; failed appends come back as inputs.
    fn run(self: &Arc<Self>, state: &mut State, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let mut outputs = std::mem::take(&mut state.outputs);
            state.core.step(&mut outputs, input);
            for output in outputs.drain(..) {
                self.output_run(state, output, &mut inputs);
            }
            state.outputs = outputs;
        }
        // A deadline may have moved earlier.
        self.timer_wake.notify_one();
    }

    fn output_run(
        self: &Arc<Self>,
        state: &mut State,
        output: Output,
        inputs: &mut VecDeque<Input>,
    ) {
        let request = match output {
            Output::Persist {
                partition,
                write,
                record,
            } => {
                if let Err(error) = self.persist(state, partition, write, &record) {
                    tracing::error!(partition, write, %error, "transaction state append failed");
                    inputs.push_back(Input::PersistFailed {
                        write,
                        now: self.now(),
                    });
                }
                return;
            }
            Output::Markers(markers) => {
                let index = state.core.partition_for(&markers.transactional_id);
                let Some(held) = state.partitions.get(&index) else {
                    return; // Unloaded in the same step: the new coordinator sends them.
                };
                let seq = state.marker_next;
                state.marker_next += 1;
                let entry = MarkerEntry {
                    seq,
                    producer_id: markers.producer_id,
                    epoch: markers.epoch,
                    commit: markers.commit,
                    coordinator_epoch: held.coordinator_epoch(),
                    remaining: markers.partitions,
                    attempts: 0,
                    due: Duration::ZERO,
                    in_flight: 0,
                };
                state.markers.insert(markers.transactional_id, entry);
                self.markers_wake.notify_one();
                return;
            }
            Output::InitProducerId { request, .. }
            | Output::AddPartitions { request, .. }
            | Output::EndTxn { request, .. } => request,
        };
        if let Some(sender) = state.replies.remove(&request) {
            // The requester may be gone (connection closed): nothing to do then.
            let _ = sender.send(output);
        }
    }

    /// Appends one record as one batch and spawns the waiter that reports its durability: the
    /// fsync for the node-local topic, the HW for a replicated one.
    fn persist(
        self: &Arc<Self>,
        state: &State,
        partition_index: i32,
        write: u64,
        record: &TxnRecord,
    ) -> Result<(), String> {
        let Some(held) = state.partitions.get(&partition_index) else {
            return Err(format!(
                "{TRANSACTION_STATE_TOPIC} partition {partition_index} is not held here"
            ));
        };
        let partition = held.partition.clone();
        let leader_epoch = held.leader_epoch.unwrap_or(LEADER_EPOCH);
        let now_ms = self.clock.wall_ms();
        let (key, value) = record_encode(record);
        let spec = RecordSpec {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp: now_ms,
        };
        let batch = batch_encode(&[spec], Compression::None);
        let decision = record
            .metadata
            .as_ref()
            .is_some_and(|metadata| metadata.state == super::TxnState::PrepareCommit);
        let coordinator = Arc::downgrade(self);
        if held.replicated {
            let receiver = replicated_append(&partition, leader_epoch, |log| {
                log.append(batch, leader_epoch, now_ms)
            })
            .map_err(|error| error.to_string())?;
            if decision {
                decision_appended(&partition);
            }
            runtime::spawn(async move {
                let durable = ack_durable(receiver).await;
                if let Some(coordinator) = coordinator.upgrade() {
                    let input = coordinator.persisted_input(write, durable);
                    coordinator.step(input);
                }
            });
            return Ok(());
        }
        let appended = partition
            .log()
            .append(batch, leader_epoch, now_ms)
            .map_err(|error| error.to_string())?;
        partition.flush_request();
        if decision {
            decision_appended(&partition);
        }
        runtime::spawn(async move {
            let durable = partition.durable_wait(appended.last_offset).await;
            let Some(coordinator) = coordinator.upgrade() else {
                return;
            };
            let input = coordinator.persisted_input(write, durable);
            coordinator.step(input);
        });
        Ok(())
    }

    /// `Persisted` or `PersistFailed`, as the wait for a write ended.
    fn persisted_input(&self, write: u64, durable: bool) -> Input {
        match durable {
            true => Input::Persisted { write },
            false => Input::PersistFailed {
                write,
                now: self.now(),
            },
        }
    }

    /// Takes the due marker entries and groups their partitions by leader into one
    /// WriteTxnMarkers request per destination broker (counting each entry in flight once per
    /// request carrying it); also the next due time of the rest. An entry none of whose
    /// partitions has a leader now waits its backoff.
    fn markers_due(
        &self,
        state: &mut State,
        sender: &dyn MarkerSender,
    ) -> (Vec<MarkerRequest>, Option<Duration>) {
        let now = self.now();
        let mut by_node: BTreeMap<i32, MarkerRequest> = BTreeMap::new();
        let mut next_due = None;
        for (transactional_id, entry) in state.markers.iter_mut() {
            if entry.in_flight > 0 {
                continue;
            }
            if entry.due > now {
                next_due = Some(next_due.map_or(entry.due, |due: Duration| due.min(entry.due)));
                continue;
            }
            let mut routes: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
            for partition in &entry.remaining {
                let leader = match Bug::active(self.planted, Bug::MarkersOnlyLocal) {
                    true => Some(self.node_id),
                    false => sender.leader(partition),
                };
                let Some(leader) = leader else {
                    continue; // Retried after the backoff: a leader may be elected by then.
                };
                routes
                    .entry(leader)
                    .or_default()
                    .entry(&partition.topic)
                    .or_default()
                    .push(partition.partition);
            }
            if routes.is_empty() {
                entry.backoff(now);
                next_due = Some(next_due.map_or(entry.due, |due: Duration| due.min(entry.due)));
                continue;
            }
            entry.in_flight = u32::try_from(routes.len()).expect("brokers fit u32");
            for (node, topics) in routes {
                let topics = topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(partitions)
                    })
                    .collect();
                let marker = WritableTxnMarker::default()
                    .with_producer_id(ProducerId(entry.producer_id))
                    .with_producer_epoch(entry.epoch)
                    .with_transaction_result(entry.commit)
                    .with_topics(topics)
                    .with_coordinator_epoch(entry.coordinator_epoch);
                let request = by_node.entry(node).or_insert_with(|| MarkerRequest {
                    node,
                    request: WriteTxnMarkersRequest::default(),
                    entries: Vec::new(),
                });
                request.request.markers.push(marker);
                request.entries.push((transactional_id.clone(), entry.seq));
            }
        }
        (by_node.into_values().collect(), next_due)
    }

    /// Applies one WriteTxnMarkers answer (or its failure) to the entries it carried: the
    /// partitions done leave them, and an entry with no request out any more completes (every
    /// partition done) or waits its backoff.
    fn markers_answered(
        self: &Arc<Self>,
        sent: &MarkerRequest,
        response: Result<WriteTxnMarkersResponse, String>,
    ) {
        let mut state = lock(&self.state);
        let now = self.now();
        let mut done: BTreeSet<(i64, TopicPartition)> = BTreeSet::new();
        match &response {
            Ok(response) => {
                for result in &response.markers {
                    for topic in &result.topics {
                        for partition in &topic.partitions {
                            let code = partition.error_code;
                            let finished = match ResponseError::try_from_code(code) {
                                None => true,
                                Some(error) => marker_error_is_final(error),
                            };
                            if !finished {
                                tracing::debug!(
                                    topic = topic.name.as_str(),
                                    partition = partition.partition_index,
                                    code,
                                    "marker not written; retrying"
                                );
                                continue;
                            }
                            if code != 0 {
                                tracing::info!(
                                    topic = topic.name.as_str(),
                                    partition = partition.partition_index,
                                    code,
                                    "marker will never be written there; skipping the partition"
                                );
                            }
                            done.insert((
                                result.producer_id.0,
                                TopicPartition {
                                    topic: topic.name.to_string(),
                                    partition: partition.partition_index,
                                },
                            ));
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "WriteTxnMarkers failed; retrying"),
        }
        let mut inputs = Vec::new();
        let mut finished_ids = Vec::new();
        for (transactional_id, seq) in &sent.entries {
            // Gone (completed, or its partition unloaded) or replaced by a later decision:
            // this answer is not about it.
            let Some(entry) = state
                .markers
                .get_mut(transactional_id)
                .filter(|entry| entry.seq == *seq)
            else {
                continue;
            };
            assert!(entry.in_flight > 0, "an entry sent is in flight");
            entry.in_flight -= 1;
            entry
                .remaining
                .retain(|partition| !done.contains(&(entry.producer_id, partition.clone())));
            if entry.in_flight > 0 {
                continue;
            }
            if entry.remaining.is_empty() {
                finished_ids.push(transactional_id.clone());
                inputs.push(Input::MarkersWritten {
                    wall_ms: self.wall_ms(),
                    transactional_id: transactional_id.clone(),
                    producer_id: entry.producer_id,
                    epoch: entry.epoch,
                });
            } else {
                entry.backoff(now);
            }
        }
        for transactional_id in finished_ids {
            state.markers.remove(&transactional_id);
        }
        for input in inputs {
            self.run(&mut state, input);
        }
        // An entry's next attempt may be due before the task's current wait ends.
        self.markers_wake.notify_one();
    }

    /// Brings the held partitions of a replicated `__transaction_state` in line with `image`
    /// (after each reconcile), as `GroupCoordinator::leadership_apply` does for
    /// `__consumer_offsets`: a partition this broker leads, whose leader core runs at the
    /// image's epoch, is loaded (again, at a new epoch); one it no longer leads is unloaded.
    pub fn leadership_apply(
        self: &Arc<Self>,
        image: &MetadataImage,
        node_id: i32,
        partition_of: impl Fn(i32) -> Option<Arc<Partition>>,
    ) {
        if self.placement != Placement::Replicated {
            return;
        }
        let topic = image.topic_by_name(TRANSACTION_STATE_TOPIC);
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
            let held = state.partitions.get(&index)?;
            Some(held.leader_epoch.expect("replicated: held at an epoch"))
        };
        let count = state.core.partition_count();
        let changes = leadership_changes(
            image,
            TRANSACTION_STATE_TOPIC,
            count,
            node_id,
            held,
            partition_of,
        );
        for change in changes {
            if change.unload {
                self.unload(&mut state, change.index);
            }
            if let Some((partition, leader_epoch, replicated)) = change.load {
                self.load(
                    &mut state,
                    change.index,
                    partition,
                    leader_epoch,
                    replicated,
                );
            }
        }
    }

    /// Forgets partition `index`: its ids, their pending writes (answered NOT_COORDINATOR) and
    /// their markers still to send.
    fn unload(self: &Arc<Self>, state: &mut State, index: i32) {
        state.partitions.remove(&index);
        let core = &state.core;
        state
            .markers
            .retain(|transactional_id, _| core.partition_for(transactional_id) != index);
        let mut outputs = std::mem::take(&mut state.outputs);
        state.core.partition_unload(&mut outputs, index);
        for output in outputs.drain(..) {
            self.output_run(state, output, &mut VecDeque::new());
        }
        state.outputs = outputs;
        tracing::info!(partition = index, "transaction state partition unloaded");
    }

    /// Replays partition `index` (led here at `leader_epoch`) into the core and waits in the
    /// background until the HW covers the replayed end, then serves its ids.
    fn load(
        self: &Arc<Self>,
        state: &mut State,
        index: i32,
        partition: Arc<Partition>,
        leader_epoch: i32,
        replicated: bool,
    ) {
        state.core.partition_load_begin(index);
        let now = self.now();
        let replayed = match Bug::active(self.planted, Bug::TxnLoadSkipsReplay) {
            // The planted bug `txn-load-skips-replay`: the partition is served from nothing.
            true => Ok(()),
            false => replay_partition(&mut state.core, &partition, now),
        };
        if let Err(error) = replayed {
            tracing::error!(partition = index, %error, "transaction state partition load failed");
            let mut outputs = Vec::new();
            state.core.partition_unload(&mut outputs, index);
            assert!(outputs.is_empty(), "a loading partition has no writes");
            return;
        }
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
            "transaction state partition loading"
        );
        self.activate();
        let Some(covered) = replay_covered(&partition, leader_epoch, replicated, end) else {
            return; // Deposed meanwhile: the reconcile that follows unloads it.
        };
        let coordinator = Arc::downgrade(self);
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
                let mut outputs = std::mem::take(&mut state.outputs);
                state.core.partition_activate(&mut outputs, index);
                let resent = outputs.len();
                for output in outputs.drain(..) {
                    coordinator.output_run(&mut state, output, &mut VecDeque::new());
                }
                state.outputs = outputs;
                coordinator.timer_wake.notify_one();
                tracing::info!(
                    partition = index,
                    leader_epoch,
                    markers_resent = resent,
                    "transaction state partition loaded"
                );
            }
        });
    }
}

impl Held {
    fn local(partition: Arc<Partition>) -> Held {
        Held {
            partition,
            leader_epoch: None,
            replicated: false,
            load: 0,
        }
    }
}

impl MarkerEntry {
    fn backoff(&mut self, now: Duration) {
        self.attempts += 1;
        let backoff = MARKER_BACKOFF_FIRST
            .saturating_mul(1 << self.attempts.min(8))
            .min(MARKER_BACKOFF_MAX);
        self.due = now + backoff;
    }
}

/// Aimed power losses land here: the decision appended, its fsync (or replication) under way.
fn decision_appended(partition: &Partition) {
    let disk = partition.log().disk().clone();
    runtime::buggify::hit(&*disk, runtime::buggify::Site::DecisionAppended);
}

/// Whether a marker error means the partition is done: a newer epoch fenced the producer there
/// (its markers supersede this one), or the partition is gone (a deleted topic). Kafka's
/// `TransactionMarkerRequestCompletionHandler` drops these partitions too; anything else is
/// retried.
fn marker_error_is_final(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::InvalidProducerEpoch
            | ResponseError::ProducerFenced
            | ResponseError::TransactionCoordinatorFenced
            | ResponseError::UnknownTopicOrPartition
    )
}

/// Sends due markers, one request per destination broker at a time, until the coordinator is
/// dropped.
async fn markers_run(coordinator: Weak<TxnCoordinator>) {
    loop {
        let Some(strong) = coordinator.upgrade() else {
            return;
        };
        let wake = strong.markers_wake.clone();
        let notified = wake.notified();
        runtime::pin!(notified);
        notified.as_mut().enable();
        let sender = strong.sender.get().expect("active implies started").clone();
        let (requests, next_due) = strong.markers_due(&mut lock(&strong.state), &*sender);
        // Each broker's request on its own task: a broker that does not answer holds back
        // only the markers it leads.
        for sent in requests {
            let node = sent.node;
            let answer = sender.send(node, sent.request.clone());
            let coordinator = coordinator.clone();
            runtime::spawn(async move {
                let response = match runtime::time::timeout(MARKER_REQUEST_TIMEOUT, answer).await {
                    Ok(response) => response,
                    Err(_) => Err(format!("broker {node} did not answer in time")),
                };
                if let Some(coordinator) = coordinator.upgrade() {
                    coordinator.markers_answered(&sent, response);
                }
            });
        }
        let now = strong.now();
        let wait = next_due.map_or(TIMER_IDLE_MAX, |due| {
            due.saturating_sub(now).min(TIMER_IDLE_MAX)
        });
        drop(strong);
        runtime::select! {
            biased;
            () = &mut notified => {}
            () = runtime::time::sleep(wait) => {}
        }
    }
}

/// Wakes the core at its next deadline (a transaction timeout, a completion to retry).
async fn timer_run(coordinator: Weak<TxnCoordinator>) {
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
            let wall_ms = strong.wall_ms();
            strong.step(Input::Tick { now, wall_ms });
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

/// Feeds every record of one partition to the core, in log order, or fails: a coordinator
/// serving from part of its log could forget a decision (issue 9's lesson for groups).
fn replay_partition(
    core: &mut Coordinator,
    partition: &Partition,
    now: Duration,
) -> Result<(), TopicError> {
    let log = partition.log();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    while offset < end {
        let read = replay_read(
            &log,
            TRANSACTION_STATE_TOPIC,
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
        for record in records {
            core.replay(now, record);
        }
        offset = next_offset;
    }
    Ok(())
}

/// The records of whole batches read back from `__transaction_state`; an unknown key version
/// (a newer broker's) is skipped, as Kafka does, anything else undecodable is an error.
fn replay_decode(partition: i32, bytes: &Bytes) -> Result<Vec<TxnRecord>, String> {
    let mut bytes = bytes.clone();
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|error| format!("undecodable batch: {error}"))?;
        for record in set.records.iter().filter(|record| !record.control) {
            match record_decode(record.key.as_ref(), record.value.as_ref()) {
                Ok(decoded) => records.push(decoded),
                Err(error @ RecordError::Version { what: "key", .. }) => tracing::warn!(
                    partition, offset = record.offset, %error,
                    "skipping a transaction state record of an unknown kind"
                ),
                Err(error) => {
                    return Err(format!("record at offset {}: {error}", record.offset));
                }
            }
        }
    }
    Ok(records)
}
