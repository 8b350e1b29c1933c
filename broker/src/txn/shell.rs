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
//! decision's markers are grouped by destination broker (the partition's leader; on a single
//! node, this one) into one WriteTxnMarkers request per broker, sent through a `MarkerSender`;
//! a partition is done when its marker is written, or when the answer says it never will be
//! (a newer epoch fenced the producer there, or the partition is gone); any other answer is
//! retried with backoff. When every partition of a decision is done the core hears
//! `MarkersWritten` and completes the transaction.
//!
//! `__transaction_state` is created on first use (FindCoordinator for a transactional id, or
//! InitProducerId with one), as Kafka does, and the timer and marker tasks start with it: a
//! broker that never sees a transaction runs nothing here.
//!
//! Lock order: the coordinator lock, then a partition's log lock, then the producer id lock.

use super::coordinator::{Coordinator, Input, Output};
use super::records::{record_decode, record_encode, RecordError, TxnRecord};
use super::{RequestId, TxnConfig, COORDINATOR_EPOCH, TRANSACTION_STATE_TOPIC};
use crate::group::shell::{internal_topic_open, replay_read};
use crate::group::TopicPartition;
use crate::partition::Partition;
use crate::planted::Bug;
use crate::producer_ids::ProducerIds;
use crate::topics::{TopicError, Topics};
use bytes::Bytes;
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
/// The leader epoch stamped on coordinator writes: a single node never changes leadership.
const LEADER_EPOCH: i32 = 0;

/// Where WriteTxnMarkers requests go: the local broker's handler, or, in unit tests, a fake.
pub trait MarkerSender: Send + Sync + std::fmt::Debug {
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
    remaining: BTreeSet<TopicPartition>,
    attempts: u32,
    due: Duration,
    in_flight: bool,
}

struct State {
    core: Coordinator,
    replies: BTreeMap<RequestId, oneshot::Sender<Output>>,
    /// Reused across steps.
    outputs: Vec<Output>,
    /// The partitions of `__transaction_state`, by index; empty until the topic exists.
    partitions: Vec<Arc<Partition>>,
    /// Markers to write, per transactional id (one decision per id at a time).
    markers: BTreeMap<String, MarkerEntry>,
    /// Draws the topic id when the topic is created.
    rng: ChaCha8Rng,
}

pub struct TxnCoordinator {
    state: Mutex<State>,
    config: TxnConfig,
    producer_ids: Arc<Mutex<ProducerIds>>,
    sender: OnceLock<Arc<dyn MarkerSender>>,
    /// This broker: the destination of every marker while there is one node.
    node_id: i32,
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
    /// Replays `__transaction_state` if it exists. Nothing runs until `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        topics: &Topics,
        config: TxnConfig,
        offsets_partition_count: i32,
        node_id: i32,
        clock: Clock,
        rng: ChaCha8Rng,
        producer_ids: Arc<Mutex<ProducerIds>>,
        planted: Option<Bug>,
    ) -> Result<Arc<TxnCoordinator>, TopicError> {
        let partitions: Vec<Arc<Partition>> = match topics.get(TRANSACTION_STATE_TOPIC) {
            None => Vec::new(),
            Some(metadata) => (0..metadata.partition_count)
                .map(|index| {
                    topics
                        .partition(TRANSACTION_STATE_TOPIC, index)
                        .expect("listed")
                })
                .collect(),
        };
        let partition_count = match partitions.len() {
            0 => config.state_partitions,
            count => count as i32,
        };
        let mut core = Coordinator::new(config.clone(), partition_count, offsets_partition_count);
        core.planted_set(planted.filter(|_| cfg!(feature = "planted-bugs")));
        for partition in &partitions {
            replay_partition(&mut core, partition)?;
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
            }),
            config,
            producer_ids,
            sender: OnceLock::new(),
            node_id,
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

    /// Creates `__transaction_state` on first use (FindCoordinator or InitProducerId for a
    /// transactional id). Lock order: the topics lock (held by the caller), then ours.
    pub fn topic_ensure(self: &Arc<Self>, topics: &mut Topics) -> Result<(), TopicError> {
        {
            let mut state = lock(&self.state);
            if !state.partitions.is_empty() {
                return Ok(());
            }
            let State { rng, .. } = &mut *state;
            state.partitions = internal_topic_open(
                topics,
                TRANSACTION_STATE_TOPIC,
                self.config.state_partitions,
                self.clock.wall_ms(),
                rng,
            )?;
            tracing::info!("created {TRANSACTION_STATE_TOPIC}");
        }
        self.activate();
        Ok(())
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
                let entry = MarkerEntry {
                    producer_id: markers.producer_id,
                    epoch: markers.epoch,
                    commit: markers.commit,
                    remaining: markers.partitions,
                    attempts: 0,
                    due: Duration::ZERO,
                    in_flight: false,
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

    /// Appends one record as one batch and spawns the waiter that reports its durability.
    fn persist(
        self: &Arc<Self>,
        state: &State,
        partition_index: i32,
        write: u64,
        record: &TxnRecord,
    ) -> Result<(), String> {
        let Some(partition) = state.partitions.get(partition_index as usize).cloned() else {
            return Err(format!(
                "{TRANSACTION_STATE_TOPIC} has no partition {partition_index}"
            ));
        };
        let now_ms = self.clock.wall_ms();
        let (key, value) = record_encode(record);
        let spec = RecordSpec {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp: now_ms,
        };
        let batch = batch_encode(&[spec], Compression::None);
        let appended = partition
            .log()
            .append(batch, LEADER_EPOCH, now_ms)
            .map_err(|error| error.to_string())?;
        partition.flush_request();
        let decision = record
            .metadata
            .as_ref()
            .is_some_and(|metadata| metadata.state == super::TxnState::PrepareCommit);
        if decision {
            // Aimed power losses land here: the decision appended, its fsync under way.
            let disk = partition.log().disk().clone();
            runtime::buggify::hit(&*disk, runtime::buggify::Site::DecisionAppended);
        }
        let coordinator = Arc::downgrade(self);
        runtime::spawn(async move {
            let durable = partition.durable_wait(appended.last_offset).await;
            let Some(coordinator) = coordinator.upgrade() else {
                return;
            };
            let input = if durable {
                Input::Persisted { write }
            } else {
                Input::PersistFailed {
                    write,
                    now: coordinator.now(),
                }
            };
            coordinator.step(input);
        });
        Ok(())
    }

    /// Takes the due marker entries (marking them in flight) and groups them into one
    /// WriteTxnMarkers request per destination broker; also the next due time of the rest.
    fn markers_due(
        &self,
        state: &mut State,
    ) -> (Vec<(i32, WriteTxnMarkersRequest)>, Option<Duration>) {
        let now = self.now();
        let mut by_node: BTreeMap<i32, Vec<WritableTxnMarker>> = BTreeMap::new();
        let mut next_due = None;
        for entry in state.markers.values_mut() {
            if entry.in_flight {
                continue;
            }
            if entry.due > now {
                next_due = Some(next_due.map_or(entry.due, |due: Duration| due.min(entry.due)));
                continue;
            }
            entry.in_flight = true;
            // Every partition's leader is this broker while there is one node.
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for partition in &entry.remaining {
                topics
                    .entry(&partition.topic)
                    .or_default()
                    .push(partition.partition);
            }
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
                .with_coordinator_epoch(COORDINATOR_EPOCH);
            by_node.entry(self.node_id).or_default().push(marker);
        }
        let requests = by_node
            .into_iter()
            .map(|(node, markers)| {
                (
                    node,
                    WriteTxnMarkersRequest::default().with_markers(markers),
                )
            })
            .collect();
        (requests, next_due)
    }

    /// Applies one WriteTxnMarkers answer (or its failure) to the entries it carried.
    fn markers_answered(
        self: &Arc<Self>,
        request: &WriteTxnMarkersRequest,
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
        let carried: BTreeSet<(i64, i16)> = request
            .markers
            .iter()
            .map(|marker| (marker.producer_id.0, marker.producer_epoch))
            .collect();
        let mut finished_ids = Vec::new();
        for (transactional_id, entry) in state.markers.iter_mut() {
            if !entry.in_flight || !carried.contains(&(entry.producer_id, entry.epoch)) {
                continue;
            }
            entry.in_flight = false;
            entry
                .remaining
                .retain(|partition| !done.contains(&(entry.producer_id, partition.clone())));
            if entry.remaining.is_empty() {
                finished_ids.push(transactional_id.clone());
                inputs.push(Input::MarkersWritten {
                    wall_ms: self.wall_ms(),
                    transactional_id: transactional_id.clone(),
                    producer_id: entry.producer_id,
                    epoch: entry.epoch,
                });
            } else {
                entry.attempts += 1;
                let backoff = MARKER_BACKOFF_FIRST
                    .saturating_mul(1 << entry.attempts.min(8))
                    .min(MARKER_BACKOFF_MAX);
                entry.due = now + backoff;
            }
        }
        for transactional_id in finished_ids {
            state.markers.remove(&transactional_id);
        }
        for input in inputs {
            self.run(&mut state, input);
        }
    }
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
        let (requests, next_due) = strong.markers_due(&mut lock(&strong.state));
        if !requests.is_empty() {
            let sender = strong.sender.get().expect("active implies started").clone();
            for (node, request) in requests {
                let response = sender.send(node, request.clone()).await;
                strong.markers_answered(&request, response);
            }
            continue;
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
fn replay_partition(core: &mut Coordinator, partition: &Partition) -> Result<(), TopicError> {
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
            core.replay(Duration::ZERO, record);
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

/// The markers for partitions this broker hosts: `handlers::write_txn_markers::write`, which
/// answers once every marker it wrote is fsynced. Holds the broker weakly (the broker holds the
/// coordinator, which holds this).
#[derive(Debug)]
pub struct LocalMarkerSender {
    pub broker: Weak<crate::broker::Broker>,
}

impl MarkerSender for LocalMarkerSender {
    fn send(&self, node_id: i32, request: WriteTxnMarkersRequest) -> MarkerFuture {
        let broker = self.broker.upgrade();
        Box::pin(async move {
            let broker = broker.ok_or_else(|| "the broker is shutting down".to_string())?;
            if node_id != broker.config.node_id {
                return Err(format!("no route to broker {node_id}"));
            }
            let response = crate::handlers::write_txn_markers::write(&broker, request).await;
            // Aimed crashes land here: markers durable, the coordinator not yet told.
            runtime::buggify::hit(&*broker.disk, runtime::buggify::Site::MarkersWritten);
            Ok(response)
        })
    }
}
