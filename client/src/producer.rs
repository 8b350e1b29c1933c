//! `Producer`: a handle to a background task that batches records per partition and sends one
//! Produce request per leader.
//!
//! The model is Kafka's Java producer in miniature. `send` hands a record to the task over a
//! bounded channel and awaits its acknowledgement. The task (`ProducerTask`, over a `Cluster`)
//! appends each record to its partition's open batch; a batch is sent when it reaches
//! `batch_bytes_max`, when it is `linger` old, on `flush`, or at once for `send_batch`. Concurrent `send` callers so
//! share batches and requests, which is how throughput benchmarks pipeline.
//!
//! Delivery is at least once: a batch whose request failed or timed out is retried (up to
//! `ClientConfig::retries`) even though the broker may have appended it, so a retried record can
//! appear twice, unless `ProducerConfig::idempotence` is on (Kafka's `enable.idempotence`):
//! then the task takes a producer id (InitProducerId), numbers each partition's batches with
//! sequences, and a retry resends the very same bytes, which the broker answers with the
//! original offsets instead of storing them again. A `send` future dropped after the record
//! reached the task does not withdraw the record.
//!
//! Idempotence, conservatively (Java's and librdkafka's rules, simplified): a batch is sealed
//! (encoded with its producer id, epoch and sequence) once, before its first attempt, and never
//! changes. While a batch of a partition waits to be retried, later batches of that partition
//! are held back, so the broker never sees a gap it would refuse. Once any sealed batch fails
//! for good, its sequence may or may not have been consumed by the broker, so the numbering
//! can no longer be trusted: the next round takes a new producer id and starts every
//! partition at sequence 0 (where Java bumps the epoch; without a transactional id the broker
//! hands out a new id instead). OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH and
//! UNKNOWN_PRODUCER_ID fail the batch (the broker refused it) and trigger the same reset.
//!
//! Transactions (`ProducerConfig::transactional_id`, Kafka's KIP-98), as Java's
//! `TransactionManager` in miniature: `init_transactions` takes the producer id and epoch for
//! the transactional id (fencing any older producer with it), `begin_transaction` opens a
//! transaction, sends go into it (a partition is added with AddPartitionsToTxn before its first
//! batch is sealed, and every batch carries the transactional bit), `send_offsets_to_transaction`
//! adds a group's offsets, and `commit_transaction` / `abort_transaction` first send and settle
//! everything accepted, then end it with EndTxn. The transaction calls are commands on the same
//! channel as sends, so they apply in call order. Errors come in three kinds: retriable ones
//! (CONCURRENT_TRANSACTIONS, a moved coordinator) are retried inside the call until the delivery
//! timeout; fatal ones (`ClientError::is_transaction_fatal`: fenced by a newer producer) fail
//! this and every later call; any other failure, including a batch that failed for good, makes
//! the transaction abortable: commit refuses, abort works, and since a failed batch leaves its
//! sequence in doubt the abort then bumps the epoch (KIP-360), restarting the numbering.

use crate::cluster::{Cluster, Target};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::metadata::{group_by_leader, TopicPartition};
use crate::partitioner::Partitioner;
use crate::records::{batch_encode_sequenced, ProducerRecord, RecordMetadata, Sequenced};
use bytes::Bytes;
use runtime::sync::{mpsc, oneshot};
use runtime::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use wire::protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName,
};
use wire::protocol::protocol::StrBytes;
use wire::protocol::records::Compression;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Record bytes accepted but not yet acknowledged before the task stops reading new records and
/// sends everything it holds. Kafka's `buffer.memory` default.
pub const ACCUMULATOR_BYTES_MAX: usize = 32 * MIB;

/// Commands waiting for the task. Beyond this `send` waits: the channel is the backpressure. One
/// command can carry a whole `send_batch`, so this bounds callers, not records.
pub const PRODUCER_COMMANDS_MAX: usize = 1024;

/// Commands folded into one round of batching before anything is sent, so that concurrent
/// callers share requests even with `linger` zero, while a flood cannot starve the sending half.
const COMMANDS_COALESCED_MAX: usize = 256;

/// How many replicas must have a record before the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: no response, offsets unknown (-1).
    None,
    Leader,
    /// Every in-sync replica (and, in gregor, its fsync).
    All,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent. Kafka's `linger.ms`.
    pub linger: Duration,
    /// A partition's batch is sent once it holds this many bytes. Kafka's `batch.size`.
    pub batch_bytes_max: usize,
    /// The largest record, and the most record bytes in one Produce request. Kafka's
    /// `max.request.size`.
    pub request_bytes_max: usize,
    pub compression: Compression,
    /// Bound on one `send`, from call to acknowledgement, retries included. Kafka's
    /// `delivery.timeout.ms`. On expiry the outcome is unknown.
    pub delivery_timeout: Duration,
    /// Where keyless records start their round robin; give producers different seeds to spread.
    pub partitioner_seed: u64,
    /// Kafka's `enable.idempotence`: retries never duplicate (see the module doc). Needs
    /// `Acks::All`.
    pub idempotence: bool,
    /// Kafka's `transactional.id`: the producer is transactional (and idempotent). Producers
    /// with the same id fence each other: the newest `init_transactions` wins.
    pub transactional_id: Option<String>,
    /// Kafka's `transaction.timeout.ms`: the coordinator aborts a transaction open this long.
    pub transaction_timeout: Duration,
}

impl ProducerConfig {
    /// Kafka 4's defaults: acks=all, linger 5 ms, 16 KiB batches, 1 MiB requests, no compression,
    /// 120 s delivery timeout; but idempotence off (Kafka's default is on), so a plain producer
    /// sends no InitProducerId.
    pub fn kafka_defaults() -> ProducerConfig {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes_max: 16 * KIB,
            request_bytes_max: MIB,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            partitioner_seed: 0,
            idempotence: false,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

enum Command {
    /// Records to batch; `send_now` skips the linger (for `send_batch`).
    Send {
        records: Vec<(ProducerRecord, Reply)>,
        send_now: bool,
    },
    Flush {
        reply: oneshot::Sender<()>,
    },
    Transaction {
        call: TxnCall,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// The transactional calls, applied by the task in order with sends.
#[derive(Debug)]
enum TxnCall {
    Init,
    Begin,
    SendOffsets {
        group_id: String,
        offsets: BTreeMap<TopicPartition, i64>,
    },
    Commit,
    Abort,
}

/// A handle to the producer task. Dropping every handle lets the task send what it holds and stop.
#[derive(Debug, Clone)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    delivery_timeout: Duration,
    clock: runtime::Clock,
}

impl Producer {
    /// Starts the producer task on the current runtime (the current node under madsim).
    pub fn new(client: ClientConfig, mut config: ProducerConfig) -> Producer {
        assert!(config.batch_bytes_max > 0);
        config.idempotence |= config.transactional_id.is_some();
        assert!(
            !config.idempotence || config.acks == Acks::All,
            "idempotence needs acks=all"
        );
        assert!(
            config.batch_bytes_max <= config.request_bytes_max,
            "a batch fits a request"
        );
        let (commands, receiver) = mpsc::channel(PRODUCER_COMMANDS_MAX);
        let delivery_timeout = config.delivery_timeout;
        let clock = client.clock;
        let task = ProducerTask::new(client, config);
        runtime::spawn(task.run(receiver));
        Producer {
            commands,
            delivery_timeout,
            clock,
        }
    }

    /// Sends one record and waits for its acknowledgement (batched with concurrent sends).
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
        let (reply, acknowledged) = oneshot::channel();
        let command = Command::Send {
            records: vec![(record, reply)],
            send_now: false,
        };
        self.delivered(async {
            self.commands
                .send(command)
                .await
                .map_err(|_| ClientError::ProducerClosed)?;
            acknowledged
                .await
                .map_err(|_| ClientError::ProducerClosed)?
        })
        .await
    }

    /// Sends many records at once, one batch per partition and one request per leader, without
    /// lingering. Results come back in input order.
    pub async fn send_batch(
        &self,
        records: Vec<ProducerRecord>,
    ) -> Vec<Result<RecordMetadata, ClientError>> {
        let (with_replies, waits): (Vec<_>, Vec<_>) = records
            .into_iter()
            .map(|record| {
                let (reply, acknowledged) = oneshot::channel();
                ((record, reply), acknowledged)
            })
            .unzip();
        let command = Command::Send {
            records: with_replies,
            send_now: true,
        };
        let started = self.clock.now();
        if self.commands.send(command).await.is_err() {
            return waits
                .iter()
                .map(|_| Err(ClientError::ProducerClosed))
                .collect();
        }
        // One delivery deadline for the whole batch, not one per record.
        let deadline = started + self.delivery_timeout;
        let mut results = Vec::with_capacity(waits.len());
        for acknowledged in waits {
            let remaining = deadline.saturating_duration_since(self.clock.now());
            let result = match runtime::time::timeout(remaining, acknowledged).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ClientError::ProducerClosed),
                Err(_) => Err(self.delivery_timed_out()),
            };
            results.push(result);
        }
        results
    }

    /// Sends everything accepted so far and waits until each of it is acknowledged or failed.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (reply, flushed) = oneshot::channel();
        self.delivered(async {
            self.commands
                .send(Command::Flush { reply })
                .await
                .map_err(|_| ClientError::ProducerClosed)?;
            flushed.await.map_err(|_| ClientError::ProducerClosed)
        })
        .await
    }

    /// Transactional producers: takes the producer id and epoch of `transactional_id`, fencing
    /// any older producer with it (its open transaction is aborted). Call once, first.
    pub async fn init_transactions(&self) -> Result<(), ClientError> {
        self.transaction_call(TxnCall::Init).await
    }

    /// Opens a transaction: the sends that follow belong to it until commit or abort.
    pub async fn begin_transaction(&self) -> Result<(), ClientError> {
        self.transaction_call(TxnCall::Begin).await
    }

    /// Adds the consumed `offsets` (the next offset to read, per partition) of `group_id` to the
    /// transaction: they become the group's committed offsets if, and when, it commits.
    pub async fn send_offsets_to_transaction(
        &self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let call = TxnCall::SendOffsets {
            group_id: group_id.to_string(),
            offsets: offsets.clone(),
        };
        self.transaction_call(call).await
    }

    /// Sends everything accepted, then commits the transaction. An error other than a fatal one
    /// leaves the transaction open: abort it (or, after a timeout, try the commit again).
    pub async fn commit_transaction(&self) -> Result<(), ClientError> {
        self.transaction_call(TxnCall::Commit).await
    }

    /// Sends everything accepted, then aborts the transaction.
    pub async fn abort_transaction(&self) -> Result<(), ClientError> {
        self.transaction_call(TxnCall::Abort).await
    }

    async fn transaction_call(&self, call: TxnCall) -> Result<(), ClientError> {
        let (reply, done) = oneshot::channel();
        self.delivered(async {
            self.commands
                .send(Command::Transaction { call, reply })
                .await
                .map_err(|_| ClientError::ProducerClosed)?;
            done.await.map_err(|_| ClientError::ProducerClosed)?
        })
        .await
    }

    /// Sends what was accepted, then lets go of this handle. The task stops once every handle
    /// (clones included) is gone.
    pub async fn close(self) -> Result<(), ClientError> {
        self.flush().await
    }

    async fn delivered<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match runtime::time::timeout(self.delivery_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.delivery_timed_out()),
        }
    }

    fn delivery_timed_out(&self) -> ClientError {
        ClientError::Timeout {
            address: "producer".to_string(),
            what: "record delivery".to_string(),
            after: self.delivery_timeout,
        }
    }
}

/// A record waiting in a batch, with its CreateTime fixed at acceptance.
struct Pending {
    record: ProducerRecord,
    timestamp: i64,
    reply: Reply,
}

/// The records of one partition that will travel as one RecordBatch.
struct Batch {
    pending: Vec<Pending>,
    bytes: usize,
    created: Instant,
    /// Why the last attempt failed, reported if no attempt succeeds.
    error_last: Option<ClientError>,
    /// The encoded batch, fixed before its first attempt so every retry sends the same bytes
    /// (and, when idempotent, the same sequence).
    sealed: Option<Bytes>,
}

impl Batch {
    fn fail(self, error: &ClientError) {
        for pending in self.pending {
            let _ = pending.reply.send(Err(error.clone()));
        }
    }
}

/// Which batches a drain sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Full batches only.
    Full,
    /// Full ones and those that have lingered long enough.
    Due,
    All,
}

/// An idempotent producer's numbering.
#[derive(Debug, Default)]
struct Idempotence {
    /// Producer id and epoch; `None` until InitProducerId answered, and after a reset.
    producer: Option<(i64, i16)>,
    /// The next sequence per partition under `producer`.
    sequences: BTreeMap<TopicPartition, i32>,
    /// A sealed batch failed for good: take a new producer id before sealing the next one.
    reset_wanted: bool,
}

/// Where a transactional producer stands (Java's `TransactionManager.State`, simplified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnPhase {
    Uninitialized,
    Ready,
    InTransaction,
}

/// A transactional producer's state in its task.
#[derive(Debug)]
struct Transactional {
    coordinator: crate::transaction::CoordinatorKey,
    timeout: Duration,
    phase: TxnPhase,
    /// A fatal error: every later call fails with it.
    fatal: Option<ClientError>,
    /// Why the open transaction can only be aborted.
    abortable: Option<ClientError>,
    /// Partitions added to the open transaction.
    partitions: BTreeSet<TopicPartition>,
    /// Whether the open transaction holds offsets (AddOffsetsToTxn), so it needs an EndTxn.
    offsets_added: bool,
}

impl Transactional {
    /// The error a call or send must fail with now, if any.
    fn refuse(&self, wanted: TxnPhase, what: &str) -> Result<(), ClientError> {
        if let Some(fatal) = &self.fatal {
            return Err(fatal.clone());
        }
        if self.phase != wanted {
            return Err(ClientError::TransactionState {
                reason: format!(
                    "{what} needs state {wanted:?}, the producer is {:?}",
                    self.phase
                ),
            });
        }
        Ok(())
    }

    /// Records an error met inside the open transaction: fatal, or it makes it abortable.
    fn failed(&mut self, error: &ClientError) {
        if error.is_transaction_fatal() {
            self.fatal.get_or_insert_with(|| error.clone());
        } else if self.phase == TxnPhase::InTransaction {
            self.abortable.get_or_insert_with(|| error.clone());
        }
    }
}

/// The sequence after a batch of `records` starting at `first`, wrapping past `i32::MAX` to 0 as
/// Kafka's sequences do.
fn sequence_next(first: i32, records: usize) -> i32 {
    let records = i64::try_from(records).expect("a batch's record count fits");
    let next = i64::from(first) + records;
    i32::try_from(next % (i64::from(i32::MAX) + 1)).expect("reduced below i32::MAX")
}

struct ProducerTask {
    cluster: Cluster,
    config: ProducerConfig,
    partitioner: Partitioner,
    open: BTreeMap<TopicPartition, Batch>,
    full: Vec<(TopicPartition, Batch)>,
    bytes_buffered: usize,
    /// `Some` when `config.idempotence`.
    idempotence: Option<Idempotence>,
    /// `Some` when `config.transactional_id`.
    transactional: Option<Transactional>,
}

impl ProducerTask {
    fn new(client: ClientConfig, config: ProducerConfig) -> ProducerTask {
        ProducerTask {
            cluster: Cluster::new(client),
            partitioner: Partitioner::new(config.partitioner_seed),
            idempotence: config.idempotence.then(Idempotence::default),
            transactional: config.transactional_id.as_deref().map(|transactional_id| {
                Transactional {
                    coordinator: crate::transaction::CoordinatorKey::transaction(transactional_id),
                    timeout: config.transaction_timeout,
                    phase: TxnPhase::Uninitialized,
                    fatal: None,
                    abortable: None,
                    partitions: BTreeSet::new(),
                    offsets_added: false,
                }
            }),
            config,
            open: BTreeMap::new(),
            full: Vec::new(),
            bytes_buffered: 0,
        }
    }

    #[tracing::instrument(name = "producer", skip_all)]
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let linger_end = self
                .open
                .values()
                .map(|batch| batch.created + self.config.linger)
                .min();
            let far = self.cluster.config().clock.now() + Duration::from_secs(3600);
            let command = runtime::select! {
                biased;
                command = commands.recv() => command,
                () = runtime::time::sleep_until(linger_end.unwrap_or(far)), if linger_end.is_some() => {
                    self.drain(Drain::Due).await;
                    continue;
                }
            };
            let Some(command) = command else {
                self.drain(Drain::All).await;
                return;
            };
            let mut flushes = Vec::new();
            let mut send_now = self.command_apply(command, &mut flushes).await;
            for _ in 1..COMMANDS_COALESCED_MAX {
                let Ok(command) = commands.try_recv() else {
                    break;
                };
                send_now |= self.command_apply(command, &mut flushes).await;
            }
            let drain = if send_now || self.config.linger.is_zero() {
                Drain::All
            } else {
                Drain::Due
            };
            self.drain(drain).await;
            for reply in flushes {
                let _ = reply.send(());
            }
        }
    }

    /// Takes in one command; returns whether its records should go out without lingering.
    async fn command_apply(
        &mut self,
        command: Command,
        flushes: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        match command {
            Command::Send { records, send_now } => {
                for (record, reply) in records {
                    self.accept(record, reply).await;
                    if self.bytes_buffered > ACCUMULATOR_BYTES_MAX {
                        self.drain(Drain::All).await;
                    }
                }
                send_now
            }
            Command::Flush { reply } => {
                flushes.push(reply);
                true
            }
            Command::Transaction { call, reply } => {
                let result = self.transaction_apply(call).await;
                let _ = reply.send(result);
                false
            }
        }
    }

    /// Chooses the record's partition and appends it to that partition's open batch, or fails it.
    async fn accept(&mut self, record: ProducerRecord, reply: Reply) {
        if let Some(transactional) = &self.transactional {
            if let Err(error) = transactional.refuse(TxnPhase::InTransaction, "a send") {
                let _ = reply.send(Err(error));
                return;
            }
        }
        let bytes = record.size_estimate();
        if bytes > self.config.request_bytes_max {
            let _ = reply.send(Err(ClientError::RecordTooLarge {
                bytes,
                limit: self.config.request_bytes_max,
            }));
            return;
        }
        let partition = match self.partition_choose(&record).await {
            Ok(partition) => partition,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let topic_partition = TopicPartition::new(record.topic.clone(), partition);
        let clock = self.cluster.config().clock;
        let timestamp = record.timestamp_ms.unwrap_or_else(|| clock.wall_ms());
        let batch_full = self
            .open
            .get(&topic_partition)
            .is_some_and(|batch| batch.bytes + bytes > self.config.batch_bytes_max);
        if batch_full {
            let batch = self.open.remove(&topic_partition).expect("checked above");
            self.partitioner.batch_closed(&topic_partition.topic);
            self.full.push((topic_partition.clone(), batch));
        }
        let batch = self.open.entry(topic_partition).or_insert_with(|| Batch {
            pending: Vec::new(),
            bytes: 0,
            created: clock.now(),
            error_last: None,
            sealed: None,
        });
        batch.pending.push(Pending {
            record,
            timestamp,
            reply,
        });
        batch.bytes += bytes;
        self.bytes_buffered += bytes;
    }

    /// The record's partition: explicit, by key, or sticky. Needs the topic's partition count,
    /// retrying the metadata lookup as configured (a just-created topic may not be known yet).
    async fn partition_choose(&mut self, record: &ProducerRecord) -> Result<i32, ClientError> {
        let topics = [record.topic.clone()];
        let mut error_last = None;
        for attempt in 0..=self.cluster.config().retries {
            if attempt > 0 {
                self.cluster.metadata_invalidate();
                self.cluster.backoff().await;
            }
            let partition_count = match self.cluster.metadata_for(&topics).await {
                Ok(metadata) => metadata.partition_count(&record.topic),
                Err(error) if error.is_retriable() => {
                    error_last = Some(error);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let unknown = |partition: i32, partition_count| ClientError::UnknownPartition {
                topic: record.topic.clone(),
                partition,
                partition_count,
            };
            match (partition_count, record.partition) {
                (Some(count), Some(partition)) if (0..count).contains(&partition) => {
                    return Ok(partition)
                }
                (Some(count), Some(partition)) => return Err(unknown(partition, count)),
                (Some(count), None) if count > 0 => {
                    let key = record.key.as_deref();
                    return Ok(self.partitioner.partition(&record.topic, key, count));
                }
                _ => error_last = Some(unknown(record.partition.unwrap_or(0), 0)),
            }
        }
        Err(error_last.expect("the loop runs at least once"))
    }

    /// Sends the batches `drain` selects, retrying retriable failures.
    async fn drain(&mut self, drain: Drain) {
        let now = self.cluster.config().clock.now();
        let mut batches = std::mem::take(&mut self.full);
        if drain != Drain::Full {
            let linger = self.config.linger;
            let due: Vec<TopicPartition> = self
                .open
                .iter()
                .filter(|(_, batch)| drain == Drain::All || batch.created + linger <= now)
                .map(|(partition, _)| partition.clone())
                .collect();
            for partition in due {
                let batch = self.open.remove(&partition).expect("key just listed");
                self.partitioner.batch_closed(&partition.topic);
                batches.push((partition, batch));
            }
        }
        if batches.is_empty() {
            return;
        }
        let bytes: usize = batches.iter().map(|(_, batch)| batch.bytes).sum();
        self.batches_send(batches).await;
        self.bytes_buffered -= bytes;
    }

    /// Routes batches to their leaders and sends them, retrying those that fail retriably.
    async fn batches_send(&mut self, mut batches: Vec<(TopicPartition, Batch)>) {
        let retries = self.cluster.config().retries;
        for attempt in 0..=retries {
            if batches.is_empty() {
                return;
            }
            if attempt > 0 {
                self.cluster.backoff().await;
            }
            if let Err(error) = self.batches_seal(&mut batches).await {
                // A transaction that cannot take these batches (fenced, abortable, not begun)
                // will not change its mind on a retry.
                if self.transactional.is_some() && !error.is_retriable() {
                    for (_, batch) in batches {
                        self.batch_fail(batch, &error);
                    }
                    return;
                }
                for (_, batch) in &mut batches {
                    batch.error_last = Some(error.clone());
                }
                continue;
            }
            let mut topics: Vec<String> = batches.iter().map(|(tp, _)| tp.topic.clone()).collect();
            topics.sort();
            topics.dedup();
            if let Err(error) = self.cluster.metadata_for(&topics).await {
                for (_, batch) in &mut batches {
                    batch.error_last = Some(error.clone());
                }
                continue;
            }
            let routed = group_by_leader(self.cluster.metadata(), batches);
            batches = Vec::new();
            // Idempotence: a partition whose batch waits for a retry sends nothing after it in
            // this attempt, or the broker would see a sequence gap.
            let mut held: BTreeSet<TopicPartition> = BTreeSet::new();
            for (partition, mut batch, error) in routed.unroutable {
                self.cluster.metadata_invalidate();
                batch.error_last = Some(error);
                held.insert(partition.clone());
                batches.push((partition, batch));
            }
            for (node_id, items) in routed.by_node {
                for request in requests_split(items, self.config.request_bytes_max) {
                    let (request, waiting): (Vec<_>, Vec<_>) =
                        request.into_iter().partition(|(partition, _)| {
                            self.idempotence.is_none() || !held.contains(partition)
                        });
                    batches.extend(waiting);
                    if request.is_empty() {
                        continue;
                    }
                    let retry = self.produce(node_id, request).await;
                    held.extend(retry.iter().map(|(partition, _)| partition.clone()));
                    batches.extend(retry);
                }
            }
        }
        for (partition, batch) in batches {
            let error = batch.error_last.clone().unwrap_or(ClientError::NoLeader {
                topic: partition.topic.clone(),
                partition: partition.partition,
            });
            tracing::debug!(%partition, %error, "batch failed after retries");
            self.batch_fail(batch, &error);
        }
    }

    /// Fails a batch for good. An idempotent producer's numbering is then in doubt (the broker
    /// may or may not have taken the sequence), so the next round starts over with a new id.
    fn batch_fail(&mut self, batch: Batch, error: &ClientError) {
        if let (Some(idempotence), Some(_)) = (&mut self.idempotence, &batch.sealed) {
            idempotence.reset_wanted = true;
        }
        if let Some(transactional) = &mut self.transactional {
            transactional.failed(error);
        }
        batch.fail(error);
    }

    /// Encodes every batch not encoded yet; when idempotent, first takes a producer id if there
    /// is none (or a reset is due) and gives each batch the next sequences of its partition.
    async fn batches_seal(
        &mut self,
        batches: &mut [(TopicPartition, Batch)],
    ) -> Result<(), ClientError> {
        let unsealed = batches.iter().any(|(_, batch)| batch.sealed.is_none());
        if !unsealed {
            return Ok(());
        }
        let producer = match (&self.idempotence, &self.transactional) {
            (None, _) => None,
            (Some(idempotence), Some(transactional)) => {
                transactional.refuse(TxnPhase::InTransaction, "a batch")?;
                if let Some(abortable) = &transactional.abortable {
                    return Err(abortable.clone());
                }
                let producer = idempotence
                    .producer
                    .expect("initialised before any transaction");
                self.partitions_add(producer, batches).await?;
                Some(producer)
            }
            (Some(idempotence), None) => match (idempotence.producer, idempotence.reset_wanted) {
                (Some(producer), false) => Some(producer),
                _ => Some(self.producer_id_init().await?),
            },
        };
        let transactional = self.transactional.is_some();
        let compression = self.config.compression;
        for (partition, batch) in batches.iter_mut() {
            if batch.sealed.is_some() {
                continue;
            }
            let sequenced = producer.map(|(producer_id, epoch)| {
                let idempotence = self
                    .idempotence
                    .as_mut()
                    .expect("producer implies idempotence");
                let sequence = idempotence.sequences.entry(partition.clone()).or_insert(0);
                let base_sequence = *sequence;
                *sequence = sequence_next(base_sequence, batch.pending.len());
                Sequenced {
                    producer_id,
                    epoch,
                    base_sequence,
                    transactional,
                }
            });
            let records: Vec<ProducerRecord> =
                batch.pending.iter().map(|p| p.record.clone()).collect();
            let timestamps: Vec<i64> = batch.pending.iter().map(|p| p.timestamp).collect();
            batch.sealed = Some(batch_encode_sequenced(
                &records,
                &timestamps,
                compression,
                sequenced,
            ));
        }
        Ok(())
    }

    /// AddPartitionsToTxn for the partitions of unsealed `batches` not yet in the transaction.
    async fn partitions_add(
        &mut self,
        producer: (i64, i16),
        batches: &[(TopicPartition, Batch)],
    ) -> Result<(), ClientError> {
        let deadline = self.cluster.config().clock.now() + self.config.delivery_timeout;
        let transactional = self.transactional.as_mut().expect("transactional");
        let mut new: Vec<TopicPartition> = batches
            .iter()
            .filter(|(partition, batch)| {
                batch.sealed.is_none() && !transactional.partitions.contains(partition)
            })
            .map(|(partition, _)| partition.clone())
            .collect();
        new.sort();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let result = crate::transaction::add_partitions(
            &mut self.cluster,
            &mut transactional.coordinator,
            producer,
            &new,
            deadline,
        )
        .await;
        match result {
            Ok(()) => {
                transactional.partitions.extend(new);
                Ok(())
            }
            Err(error) => {
                if !error.is_retriable() {
                    transactional.failed(&error);
                }
                Err(error)
            }
        }
    }

    /// One transactional call, after everything accepted before it.
    async fn transaction_apply(&mut self, call: TxnCall) -> Result<(), ClientError> {
        let Some(transactional) = &self.transactional else {
            return Err(ClientError::TransactionState {
                reason: "the producer has no transactional id".to_string(),
            });
        };
        let deadline = self.cluster.config().clock.now() + self.config.delivery_timeout;
        match call {
            TxnCall::Init => {
                transactional.refuse(TxnPhase::Uninitialized, "init_transactions")?;
                self.transaction_producer_take(None, deadline).await
            }
            TxnCall::Begin => {
                transactional.refuse(TxnPhase::Ready, "begin_transaction")?;
                let transactional = self.transactional.as_mut().expect("checked");
                transactional.phase = TxnPhase::InTransaction;
                transactional.abortable = None;
                transactional.partitions.clear();
                transactional.offsets_added = false;
                Ok(())
            }
            TxnCall::SendOffsets { group_id, offsets } => {
                transactional.refuse(TxnPhase::InTransaction, "send_offsets_to_transaction")?;
                if let Some(abortable) = &transactional.abortable {
                    return Err(abortable.clone());
                }
                let producer = self.producer_current();
                let transactional = self.transactional.as_mut().expect("checked");
                let transactional_id = transactional.coordinator.key.clone();
                let mut result = crate::transaction::add_offsets(
                    &mut self.cluster,
                    &mut transactional.coordinator,
                    producer,
                    &group_id,
                    deadline,
                )
                .await;
                if result.is_ok() {
                    transactional.offsets_added = true;
                    let mut group = crate::transaction::CoordinatorKey::group(&group_id);
                    result = crate::transaction::txn_offset_commit(
                        &mut self.cluster,
                        &mut group,
                        &transactional_id,
                        producer,
                        &offsets,
                        deadline,
                    )
                    .await;
                }
                if let Err(error) = &result {
                    transactional.failed(error);
                }
                result
            }
            TxnCall::Commit => {
                transactional.refuse(TxnPhase::InTransaction, "commit_transaction")?;
                self.drain(Drain::All).await;
                let transactional = self.transactional.as_ref().expect("checked");
                if let Some(fatal) = &transactional.fatal {
                    return Err(fatal.clone());
                }
                if let Some(abortable) = &transactional.abortable {
                    return Err(ClientError::TransactionState {
                        reason: format!("the transaction must be aborted: {abortable}"),
                    });
                }
                self.transaction_end(true, deadline).await
            }
            TxnCall::Abort => {
                transactional.refuse(TxnPhase::InTransaction, "abort_transaction")?;
                self.drain(Drain::All).await;
                if let Some(fatal) = &self.transactional.as_ref().expect("checked").fatal {
                    return Err(fatal.clone());
                }
                self.transaction_end(false, deadline).await?;
                let reset_wanted = self.idempotence.as_ref().is_some_and(|i| i.reset_wanted);
                if reset_wanted {
                    // A batch failed for good: its sequence is in doubt, so take a new epoch
                    // (KIP-360), which restarts every partition's numbering.
                    let current = self.producer_current();
                    self.transaction_producer_take(Some(current), deadline)
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// The producer id and epoch of an initialised transactional producer.
    fn producer_current(&self) -> (i64, i16) {
        self.idempotence
            .as_ref()
            .and_then(|idempotence| idempotence.producer)
            .expect("a transactional producer past init has a producer id")
    }

    /// EndTxn, when the transaction holds anything; then the producer is Ready again.
    async fn transaction_end(
        &mut self,
        commit: bool,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let producer = self.producer_current();
        let transactional = self.transactional.as_mut().expect("transactional");
        if !transactional.partitions.is_empty() || transactional.offsets_added {
            let result = crate::transaction::end_txn(
                &mut self.cluster,
                &mut transactional.coordinator,
                producer,
                commit,
                deadline,
            )
            .await;
            if let Err(error) = result {
                if error.is_transaction_fatal() {
                    transactional.failed(&error);
                }
                return Err(error);
            }
        }
        transactional.phase = TxnPhase::Ready;
        transactional.abortable = None;
        transactional.partitions.clear();
        transactional.offsets_added = false;
        Ok(())
    }

    /// InitProducerId with the transactional id: a new epoch (or id), numbering from 0.
    async fn transaction_producer_take(
        &mut self,
        expected: Option<(i64, i16)>,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let transactional = self.transactional.as_mut().expect("transactional");
        let result = crate::transaction::init_producer_id(
            &mut self.cluster,
            &mut transactional.coordinator,
            transactional.timeout,
            expected,
            deadline,
        )
        .await;
        let producer = match result {
            Ok(producer) => producer,
            Err(error) => {
                if error.is_transaction_fatal() {
                    transactional.failed(&error);
                }
                return Err(error);
            }
        };
        transactional.phase = TxnPhase::Ready;
        tracing::debug!(
            producer_id = producer.0,
            epoch = producer.1,
            "transactional producer id taken"
        );
        *self
            .idempotence
            .as_mut()
            .expect("transactional implies idempotent") = Idempotence {
            producer: Some(producer),
            sequences: BTreeMap::new(),
            reset_wanted: false,
        };
        Ok(())
    }

    /// InitProducerId without a transactional id: a fresh producer id at epoch 0, and every
    /// partition's numbering restarted at 0.
    async fn producer_id_init(&mut self) -> Result<(i64, i16), ClientError> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX);
        let response = match self
            .cluster
            .request(Target::Any, RequestKind::InitProducerId(request))
            .await?
        {
            ResponseKind::InitProducerId(response) => response,
            other => unreachable!("an InitProducerId request is answered by {other:?}"),
        };
        ClientError::from_code(response.error_code, || "InitProducerId".to_string())?;
        let producer = (response.producer_id.0, response.producer_epoch);
        tracing::debug!(
            producer_id = producer.0,
            epoch = producer.1,
            "producer id taken"
        );
        let idempotence = self
            .idempotence
            .as_mut()
            .expect("only idempotent producers init");
        *idempotence = Idempotence {
            producer: Some(producer),
            sequences: BTreeMap::new(),
            reset_wanted: false,
        };
        Ok(producer)
    }

    /// Sends one Produce request to `node_id`; completes what succeeded or failed for good and
    /// returns the batches worth retrying.
    async fn produce(
        &mut self,
        node_id: i32,
        items: Vec<(TopicPartition, Batch)>,
    ) -> Vec<(TopicPartition, Batch)> {
        let request = produce_request(&items, &self.config, self.cluster.config().request_timeout);
        let target = Target::Node(node_id);
        // The epochs the batches were routed by, before the request may refresh the metadata.
        let epochs: BTreeMap<TopicPartition, i32> = items
            .iter()
            .map(|(partition, _)| {
                let epoch = self.cluster.metadata().partition(partition);
                (
                    partition.clone(),
                    epoch.map_or(-1, |found| found.leader_epoch),
                )
            })
            .collect();
        if self.config.acks == Acks::None {
            let sent = self
                .cluster
                .send_no_response(target, RequestKind::Produce(request))
                .await;
            return self.batches_complete_unacknowledged(items, sent);
        }
        match self
            .cluster
            .request(target, RequestKind::Produce(request))
            .await
        {
            Ok(ResponseKind::Produce(response)) => {
                self.produce_response_apply(node_id, items, &response, &epochs)
            }
            Ok(other) => unreachable!("a Produce request is answered by {other:?}"),
            Err(error) => self.batches_retry_or_fail(items, &error),
        }
    }

    fn produce_response_apply(
        &mut self,
        node_id: i32,
        items: Vec<(TopicPartition, Batch)>,
        response: &ProduceResponse,
        epochs: &BTreeMap<TopicPartition, i32>,
    ) -> Vec<(TopicPartition, Batch)> {
        let mut retry = Vec::new();
        for (partition, batch) in items {
            let Some(answer) = response
                .responses
                .iter()
                .filter(|topic| topic.name.as_str() == partition.topic)
                .flat_map(|topic| topic.partition_responses.iter())
                .find(|answer| answer.index == partition.partition)
            else {
                let reason = format!("Produce response from node {node_id} lacks {partition}");
                self.batch_fail(
                    batch,
                    &ClientError::protocol(&format!("node {node_id}"), reason),
                );
                continue;
            };
            if let Err(error) =
                ClientError::from_code(answer.error_code, || format!("produce to {partition}"))
            {
                if error.is_metadata_stale() {
                    self.cluster.metadata_invalidate();
                }
                if matches!(
                    error.kafka_error(),
                    Some(
                        ResponseError::OutOfOrderSequenceNumber
                            | ResponseError::InvalidProducerEpoch
                            | ResponseError::UnknownProducerId
                    )
                ) {
                    tracing::warn!(%partition, %error, "idempotent batch refused; resetting the producer id");
                }
                retry.extend(self.batches_retry_or_fail(vec![(partition, batch)], &error));
                continue;
            }
            for (index, pending) in batch.pending.into_iter().enumerate() {
                let timestamp = if answer.log_append_time_ms >= 0 {
                    answer.log_append_time_ms
                } else {
                    pending.timestamp
                };
                let metadata = RecordMetadata {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: answer.base_offset + index as i64,
                    timestamp,
                    leader_epoch: epochs.get(&partition).copied().unwrap_or(-1),
                };
                let _ = pending.reply.send(Ok(metadata));
            }
        }
        retry
    }
}

/// Splits one node's batches into requests of at most `request_bytes_max` record bytes each
/// (a single batch is never split: `batch_bytes_max <= request_bytes_max`).
fn requests_split<T: BatchBytes>(
    items: Vec<(TopicPartition, T)>,
    request_bytes_max: usize,
) -> Vec<Vec<(TopicPartition, T)>> {
    let mut requests: Vec<Vec<(TopicPartition, T)>> = Vec::new();
    let mut bytes_current = 0;
    for (partition, batch) in items {
        let bytes = batch.bytes();
        let fits = bytes_current + bytes <= request_bytes_max;
        // A request carries at most one batch per partition: Kafka rejects duplicates.
        let duplicate = requests
            .last()
            .is_some_and(|request| request.iter().any(|(p, _)| *p == partition));
        if requests.is_empty() || !fits || duplicate {
            requests.push(Vec::new());
            bytes_current = 0;
        }
        bytes_current += bytes;
        requests
            .last_mut()
            .expect("pushed above")
            .push((partition, batch));
    }
    requests
}

/// Anything with a byte size, so that request splitting is testable without replies.
trait BatchBytes {
    fn bytes(&self) -> usize;
}

impl BatchBytes for Batch {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

fn produce_request(
    items: &[(TopicPartition, Batch)],
    config: &ProducerConfig,
    timeout: Duration,
) -> ProduceRequest {
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for (partition, batch) in items {
        let encoded: Bytes = batch
            .sealed
            .clone()
            .expect("batches are sealed before they are sent");
        let data = PartitionProduceData::default()
            .with_index(partition.partition)
            .with_records(Some(encoded));
        topics
            .entry(partition.topic.as_str())
            .or_default()
            .push(data);
    }
    let topic_data = topics
        .into_iter()
        .map(|(topic, partitions)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(partitions)
        })
        .collect();
    ProduceRequest::default()
        .with_acks(config.acks.code())
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(topic_data)
}

impl ProducerTask {
    /// acks=0: nothing comes back, so a sent batch counts as done with unknown offsets (-1).
    fn batches_complete_unacknowledged(
        &mut self,
        items: Vec<(TopicPartition, Batch)>,
        sent: Result<(), ClientError>,
    ) -> Vec<(TopicPartition, Batch)> {
        if let Err(error) = sent {
            return self.batches_retry_or_fail(items, &error);
        }
        for (partition, batch) in items {
            for pending in batch.pending {
                let metadata = RecordMetadata {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: -1,
                    timestamp: pending.timestamp,
                    leader_epoch: -1,
                };
                let _ = pending.reply.send(Ok(metadata));
            }
        }
        Vec::new()
    }

    /// Keeps retriable failures for another attempt and fails the rest now.
    fn batches_retry_or_fail(
        &mut self,
        items: Vec<(TopicPartition, Batch)>,
        error: &ClientError,
    ) -> Vec<(TopicPartition, Batch)> {
        if !error.is_retriable() {
            for (_, batch) in items {
                self.batch_fail(batch, error);
            }
            return Vec::new();
        }
        items
            .into_iter()
            .map(|(partition, mut batch)| {
                batch.error_last = Some(error.clone());
                (partition, batch)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl BatchBytes for usize {
        fn bytes(&self) -> usize {
            *self
        }
    }

    fn split(items: &[(&str, i32, usize)], limit: usize) -> Vec<String> {
        let items = items
            .iter()
            .map(|(t, p, bytes)| (TopicPartition::new(*t, *p), *bytes))
            .collect();
        requests_split(items, limit)
            .iter()
            .map(|request| {
                let parts: Vec<String> = request
                    .iter()
                    .map(|(tp, bytes)| format!("{tp}:{bytes}"))
                    .collect();
                parts.join(" ")
            })
            .collect()
    }

    #[test]
    fn requests_are_split_by_size_and_never_carry_a_partition_twice() {
        let items = [
            ("t", 0, 400),
            ("t", 1, 500),
            ("t", 2, 200),
            ("u", 0, 1000),
            ("t", 2, 10),
        ];
        assert_eq!(
            split(&items, 1000),
            ["t-0:400 t-1:500", "t-2:200", "u-0:1000", "t-2:10"]
        );
        assert_eq!(
            split(&items, 1 << 20),
            ["t-0:400 t-1:500 t-2:200 u-0:1000", "t-2:10"]
        );
        assert!(split(&[], 1000).is_empty());
    }

    fn batch(values: &[&str]) -> Batch {
        let pending: Vec<Pending> = values
            .iter()
            .enumerate()
            .map(|(index, value)| Pending {
                record: ProducerRecord::new("ignored", None, Some(Bytes::from(value.to_string()))),
                timestamp: 100 + index as i64,
                reply: oneshot::channel().0,
            })
            .collect();
        let records: Vec<ProducerRecord> = pending.iter().map(|p| p.record.clone()).collect();
        let timestamps: Vec<i64> = pending.iter().map(|p| p.timestamp).collect();
        let sealed = batch_encode_sequenced(&records, &timestamps, Compression::None, None);
        Batch {
            pending,
            bytes: 0,
            created: runtime::Clock::system().now(),
            error_last: None,
            sealed: Some(sealed),
        }
    }

    #[test]
    fn sequences_wrap_past_i32_max_to_zero() {
        assert_eq!(sequence_next(0, 3), 3);
        assert_eq!(sequence_next(i32::MAX - 2, 3), 0);
        assert_eq!(sequence_next(i32::MAX, 2), 1);
    }

    #[test]
    fn produce_requests_carry_one_batch_per_partition_grouped_by_topic() {
        let items = vec![
            (TopicPartition::new("u", 1), batch(&["a"])),
            (TopicPartition::new("t", 0), batch(&["b", "c"])),
            (TopicPartition::new("t", 1), batch(&["d"])),
        ];
        let config = ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::kafka_defaults()
        };
        let request = produce_request(&items, &config, Duration::from_secs(7));
        assert_eq!(request.acks, 1);
        assert_eq!(request.timeout_ms, 7_000);
        let mut rendered = Vec::new();
        for topic in &request.topic_data {
            for partition in &topic.partition_data {
                let records = partition.records.clone().unwrap();
                let mut out = Vec::new();
                let data = crate::records::FetchedData {
                    topic: topic.name.as_str(),
                    partition: partition.index,
                    fetch_offset: 0,
                    records,
                    aborted: None,
                };
                crate::records::records_decode(data, &mut out).unwrap();
                let values: Vec<String> = out
                    .iter()
                    .map(|r| {
                        format!(
                            "{}@{}",
                            String::from_utf8_lossy(r.value.as_deref().unwrap()),
                            r.timestamp
                        )
                    })
                    .collect();
                rendered.push(format!(
                    "{}-{}: {}",
                    topic.name.as_str(),
                    partition.index,
                    values.join(" ")
                ));
            }
        }
        assert_eq!(rendered, ["t-0: b@100 c@101", "t-1: d@100", "u-1: a@100"]);
    }

    #[test]
    fn acks_map_to_kafkas_codes() {
        assert_eq!(
            [Acks::None, Acks::Leader, Acks::All].map(Acks::code),
            [0, 1, -1]
        );
    }
}
