//! The workload: producers sending unique values, consumers polling every partition, and the final
//! polls of the liveness phase. Every operation is recorded for the checker.
//!
//! Values are unique per partition (`process * VALUES_PER_PROCESS + counter`), so a value names
//! the send that wrote it, and the workload never sends a value twice. Plain producers never
//! retry internally (a retry without idempotence may duplicate, and the checker would rightly
//! call that a duplicate). In seeds with `idempotent_producers` they are idempotent and retry
//! (the client's default retries): each retry resends the same batch with the same sequence,
//! so a value still appears at most once, and the checker's duplicate check holds them to it
//! unchanged. The outcome of a send whose answer never came is `Info`, indeterminate.

use crate::options::{Options, Workload};
use crate::recorder::Recorder;
use crate::world::TOPIC;
use bytes::Bytes;
use checker::{EventKind, MicroOp, Op, Partition, Record};
use client::{ClientConfig, ClientError};
use rand::Rng;
use runtime::rng::{stream_rng, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const VALUES_PER_PROCESS: i64 = 1_000_000;
/// Process ids: producers 1.., consumers 100.., the final reader 1000.
pub(crate) const CONSUMER_PROCESS_BASE: u64 = 100;
pub(crate) const FINAL_PROCESS: u64 = 1000;
/// How long one poll waits for data.
const POLL_WAIT: Duration = Duration::from_millis(200);

pub(crate) fn client_config(options: &Options, bootstrap: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new(bootstrap.iter().cloned());
    config.request_timeout = options.request_timeout;
    config
}

/// Creates the topic, retrying through faults until the safety phase would have started.
pub async fn topic_create(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
) -> Result<(), String> {
    let config = client_config(options, bootstrap);
    let partitions = options.topic_partitions;
    let mut configs = BTreeMap::from([(
        "segment.bytes".to_string(),
        options.segment_bytes.to_string(),
    )]);
    if let Some(policy) = &options.log_policy {
        configs.extend(crate::log_workload::topic_configs(policy));
        recorder.topic_settings(TOPIC, crate::log_workload::topic_settings(policy));
    }
    if let Some(interval) = options.index_interval_bytes {
        configs.insert("index.interval.bytes".to_string(), interval.to_string());
    }
    // The replicated data world's topic: its replicas, and acks=all needing two of them.
    let replication = options.replication.as_ref();
    let replication_factor = replication.map_or(1, |policy| policy.replication_factor as i16);
    if let Some(policy) = replication {
        configs.insert(
            "min.insync.replicas".to_string(),
            policy.min_insync.to_string(),
        );
    }
    // Apart from the cluster world's nodes (10.0.1.N): node 1 and this client once shared an
    // address.
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name("admin")
        .ip("10.0.7.1".parse().expect("valid ip"))
        .build();
    let created = node
        .spawn(async move {
            let mut admin = client::Admin::new(config);
            for _ in 0..60 {
                match admin
                    .create_topic(TOPIC, partitions, replication_factor, configs.clone())
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(error)
                        if error.kafka_error()
                            == Some(kafka_protocol::ResponseError::TopicAlreadyExists) =>
                    {
                        return Ok(())
                    }
                    Err(error) => tracing::debug!(%error, "create topic failed; retrying"),
                }
                runtime::time::sleep(Duration::from_millis(500)).await;
            }
            Err("could not create the topic within 30 s of a quiet start".to_string())
        })
        .await
        .map_err(|_| "admin task died".to_string())?;
    recorder.note(&format!(
        "topic {TOPIC} created with {partitions} partitions"
    ));
    created
}

/// Starts producers and consumers, each on its own client node; they stop when `stop` is set.
pub fn start(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
    stop: Arc<AtomicBool>,
) -> Vec<runtime::JoinHandle<()>> {
    start_clients(options, bootstrap, recorder, stop).0
}

/// As `start`, also answering the producers' and consumers' nodes (the cluster data world's
/// nemesis cuts a leader off from them).
pub(crate) fn start_clients(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
    stop: Arc<AtomicBool>,
) -> (Vec<runtime::JoinHandle<()>>, Vec<madsim::task::NodeId>) {
    let handle = madsim::runtime::Handle::current();
    let mut workers = Vec::new();
    let mut clients = Vec::new();
    for index in 0..options.producer_count {
        let process = index as u64 + 1;
        let node = handle
            .create_node()
            .name(format!("producer-{process}"))
            .ip(format!("10.0.2.{process}").parse().expect("ip"))
            .build();
        clients.push(node.id());
        let task = producer_run(
            process,
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop.clone(),
        );
        workers.push(node.spawn(task));
    }
    for index in 0..options.consumer_count {
        let process = CONSUMER_PROCESS_BASE + index as u64;
        let node = handle
            .create_node()
            .name(format!("consumer-{process}"))
            .ip(format!("10.0.3.{}", index + 1).parse().expect("ip"))
            .build();
        clients.push(node.id());
        let config = client_config(options, bootstrap);
        let worker = match options.workload {
            Workload::Assigned
            | Workload::Retention
            | Workload::Compaction
            | Workload::ClusterData => node.spawn(consumer_run(
                process,
                options.clone(),
                config,
                recorder.clone(),
                stop.clone(),
            )),
            Workload::Transactions | Workload::ClusterTxn => {
                unreachable!("txn_workload starts its own workers")
            }
            Workload::ClusterMetadata => unreachable!("cluster_world runs its own admin clients"),
            Workload::Group | Workload::ClusterGroups => {
                node.spawn(crate::group_workload::member_run(
                    index,
                    options.clone(),
                    config,
                    recorder.clone(),
                    stop.clone(),
                ))
            }
        };
        workers.push(worker);
    }
    crate::seek_workload::start(
        options,
        bootstrap,
        recorder,
        &stop,
        (&mut workers, &mut clients),
    );
    if options.log_policy.is_some() {
        let node = handle
            .create_node()
            .name("log-start-watcher")
            .ip("10.0.5.1".parse().expect("ip"))
            .build();
        workers.push(node.spawn(crate::log_workload::watcher_run(
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop,
        )));
    }
    (workers, clients)
}

/// Consumers fail a poll rather than silently jump when their position leaves the log: a jump
/// is exactly what the checker must see.
pub(crate) fn consumer_config() -> client::ConsumerConfig {
    client::ConsumerConfig {
        offset_reset: client::OffsetReset::Error,
        ..client::ConsumerConfig::kafka_defaults()
    }
}

pub(crate) fn partitions_all(options: &Options) -> Vec<Partition> {
    (0..options.topic_partitions)
        .map(|index| Partition::new(TOPIC, index))
        .collect()
}

/// Every partition from its log start: what a consumer assigns itself here.
pub(crate) fn positions_earliest(
    partitions: &[Partition],
) -> Vec<(client::TopicPartition, client::Offset)> {
    partitions
        .iter()
        .map(|p| {
            (
                client::TopicPartition::new(&p.topic, p.partition),
                client::Offset::Earliest,
            )
        })
        .collect()
}

/// Errors after which the record was certainly not written.
pub(crate) fn send_definitely_failed(error: &ClientError) -> bool {
    use kafka_protocol::ResponseError as E;
    matches!(
        error.kafka_error(),
        Some(
            E::UnknownTopicOrPartition
                | E::CorruptMessage
                | E::MessageTooLarge
                | E::InvalidRecord
                | E::InvalidRequiredAcks
                // An idempotent batch the broker refused for its sequence or epoch.
                | E::OutOfOrderSequenceNumber
                | E::InvalidProducerEpoch
        )
    )
}

/// A process id as its workload stream's index. Process ids are small (producers from 1,
/// consumers from `CONSUMER_PROCESS_BASE`), so this never fails.
pub(crate) fn process_index(process: u64) -> u32 {
    u32::try_from(process).expect("process ids fit a stream index")
}

async fn producer_run(
    process: u64,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = stream_rng(options.seed, Stream::Workload, process_index(process));
    let producer_config = client::ProducerConfig {
        acks: client::Acks::All,
        linger: Duration::ZERO,
        delivery_timeout: options.request_timeout * 2,
        idempotence: options.idempotent_producers,
        ..client::ProducerConfig::kafka_defaults()
    };
    // Without idempotence no internal retries: a retry may duplicate (see the module doc).
    let config = match options.idempotent_producers {
        true => config,
        false => ClientConfig {
            retries: 0,
            ..config
        },
    };
    if options.idempotent_producers {
        recorder.note(&format!("producer {process} is idempotent and retries"));
    }
    let mut poisoner = Poisoner::new(&config);
    let mut stamper = (options.seeker_count > 0).then(|| Stamper::new(config.clock));
    let producer = client::Producer::new(config, producer_config);
    let mut counter = 0;
    while !stop.load(Ordering::SeqCst) {
        // Only seeds with malformed sends draw for them, so other seeds keep their worlds.
        if options.malformed_send_rate > 0.0 && rng.gen_bool(options.malformed_send_rate) {
            poisoner.send(process, &options, &recorder, &mut rng).await;
            runtime::time::sleep(options.send_interval).await;
            continue;
        }
        let partition = Partition::new(TOPIC, rng.gen_range(0..options.topic_partitions));
        let value = process as i64 * VALUES_PER_PROCESS + counter;
        counter += 1;
        // Only seeds with seekers draw timestamps, so other seeds keep their worlds.
        let timestamp = stamper.as_mut().map(|stamper| stamper.next(&mut rng));
        let send = |offset| {
            Op::Txn(vec![MicroOp::Send {
                partition: partition.clone(),
                value,
                offset,
                timestamp,
            }])
        };
        recorder.event(process, EventKind::Invoke, send(None));
        let mut record =
            crate::log_workload::record_build(&options, &mut rng, &recorder, &partition, value);
        record.partition = Some(partition.partition);
        if timestamp.is_some() {
            // The seek workload's timestamps; otherwise the record keeps what `record_build`
            // chose (the retention workload's odd timestamps, recorded for its checks).
            record.timestamp_ms = timestamp;
        }
        let deadline = options.request_timeout * 2;
        let (kind, offset) = match runtime::time::timeout(deadline, producer.send(record)).await {
            Ok(Ok(metadata)) => {
                recorder.ack_epoch_note(&metadata);
                (EventKind::Ok, Some(metadata.offset))
            }
            Ok(Err(error)) if send_definitely_failed(&error) => (EventKind::Fail, None),
            Ok(Err(_)) | Err(_) => (EventKind::Info, None),
        };
        recorder.event(process, kind, send(offset));
        runtime::time::sleep(options.send_interval).await;
    }
}

/// Explicit record timestamps for the seek checks, meaningful as Kafka sees them: the producer's
/// wall clock rounded to 10 ms (so producers share some), mostly increasing, sometimes the same
/// as the previous record's, sometimes up to 200 ms in the past (out of order).
struct Stamper {
    clock: runtime::Clock,
    previous: Option<i64>,
}

impl Stamper {
    fn new(clock: runtime::Clock) -> Stamper {
        Stamper {
            clock,
            previous: None,
        }
    }

    fn next(&mut self, rng: &mut impl Rng) -> i64 {
        let now = self.clock.wall_ms() / 10 * 10;
        let timestamp = match (rng.gen_range(0..10), self.previous) {
            (0, Some(previous)) => previous,
            (1, _) => now - rng.gen_range(1..=200),
            _ => now,
        };
        self.previous = Some(timestamp);
        timestamp
    }
}

/// Sends batches poisoned on purpose over a raw connection (the client's producer only builds
/// valid ones) and records each as `SendMalformed`: refused is `Fail`, acknowledged `Ok` (an
/// anomaly), no answer `Info`. Their record value `poison` parses as no workload value, so a
/// poll that ever returns one is a phantom read.
struct Poisoner {
    config: ClientConfig,
    connection: Option<client::Connection>,
}

impl Poisoner {
    fn new(config: &ClientConfig) -> Poisoner {
        Poisoner {
            config: config.clone(),
            connection: None,
        }
    }

    async fn send(
        &mut self,
        process: u64,
        options: &Options,
        recorder: &Recorder,
        rng: &mut impl Rng,
    ) {
        use wire::batch::build::{batch_poisoned, Poison, RecordSpec};
        let poison = Poison::ALL[rng.gen_range(0..Poison::ALL.len())];
        let partition = Partition::new(TOPIC, rng.gen_range(0..options.topic_partitions));
        let op = Op::SendMalformed {
            partition: partition.clone(),
            poison: poison.name().to_string(),
        };
        recorder.event(process, EventKind::Invoke, op.clone());
        let record = RecordSpec {
            value: Some(Bytes::from_static(b"poison")),
            timestamp: 1,
            ..Default::default()
        };
        let request = produce_request(&partition, batch_poisoned(&record, poison));
        let deadline = options.request_timeout * 2;
        let answer = runtime::time::timeout(deadline, self.request(request)).await;
        let kind = match answer {
            Ok(Ok(0)) => EventKind::Ok,
            Ok(Ok(_)) => EventKind::Fail,
            Ok(Err(_)) | Err(_) => {
                self.connection = None; // A failed request poisons the connection.
                EventKind::Info
            }
        };
        recorder.event(process, kind, op);
    }

    /// The partition's error code.
    async fn request(&mut self, request: wire::RequestKind) -> Result<i16, ClientError> {
        if self.connection.is_none() {
            let address = &self.config.bootstrap[0];
            self.connection = Some(client::Connection::connect(address, &self.config).await?);
        }
        let connection = self.connection.as_mut().expect("connected above");
        match connection.request(request).await? {
            wire::ResponseKind::Produce(response) => Ok(response
                .responses
                .first()
                .and_then(|topic| topic.partition_responses.first())
                .map_or(-1, |partition| partition.error_code)),
            _ => Ok(-1),
        }
    }
}

fn produce_request(partition: &Partition, records: Bytes) -> wire::RequestKind {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let data = PartitionProduceData::default()
        .with_index(partition.partition)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(partition.topic.clone().into()))
        .with_partition_data(vec![data]);
    wire::RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![topic]),
    )
}

/// The workload value a record carries; -1 when it carries none (the checker reports it).
pub(crate) fn record_value(record: &client::ConsumerRecord) -> i64 {
    // A tombstone carries its value id in a header (`log_workload`).
    let tombstone_id = || {
        record
            .headers
            .iter()
            .find(|(name, _)| name == crate::log_workload::VALUE_HEADER)
            .and_then(|(_, value)| value.as_ref())
    };
    record
        .value
        .as_ref()
        .or_else(tombstone_id)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(-1)
}

/// Turns a poll's records into the history's shape, checking each value parses.
pub(crate) fn poll_records(
    records: Vec<client::ConsumerRecord>,
) -> BTreeMap<Partition, Vec<Record>> {
    let mut polled: BTreeMap<Partition, Vec<Record>> = BTreeMap::new();
    for record in records {
        let value = record_value(&record);
        polled
            .entry(Partition::new(&record.topic, record.partition))
            .or_default()
            .push(Record {
                offset: record.offset,
                value,
            });
    }
    polled
}

async fn consumer_run(
    process: u64,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut consumer = client::Consumer::new(config, consumer_config());
    let partitions = partitions_all(&options);
    let assign = Op::Assign {
        partitions: partitions.clone(),
        seek_to_beginning: true,
    };
    recorder.event(process, EventKind::Invoke, assign.clone());
    let positions = positions_earliest(&partitions);
    match consumer.assign(positions.clone()).await {
        Ok(()) => recorder.event(process, EventKind::Ok, assign),
        Err(_) => {
            recorder.event(process, EventKind::Fail, assign);
            return;
        }
    }
    while !stop.load(Ordering::SeqCst) {
        let deadline = options.request_timeout * 2;
        let ok = poll_once(process, &mut consumer, &recorder, false, deadline).await;
        if !ok && options.log_policy.is_some() {
            crate::log_workload::positions_resync(
                process,
                &mut consumer,
                &partitions,
                &recorder,
                deadline,
            )
            .await;
        }
    }
}

/// Records a poll's completion: `Ok` with its records, `Fail` on an error, `Info` on a timeout.
pub(crate) fn poll_complete(
    process: u64,
    recorder: &Recorder,
    final_poll: bool,
    outcome: Result<Result<Vec<client::ConsumerRecord>, ClientError>, runtime::time::Elapsed>,
) -> EventKind {
    let (kind, records) = match outcome {
        Ok(Ok(records)) => {
            recorder.leader_epochs_note(&records);
            (EventKind::Ok, poll_records(records))
        }
        Ok(Err(_)) => (EventKind::Fail, BTreeMap::new()),
        Err(_) => (EventKind::Info, BTreeMap::new()),
    };
    let poll = MicroOp::Poll {
        records,
        final_poll,
    };
    recorder.event(process, kind, Op::Txn(vec![poll]));
    kind
}

/// One recorded poll. `true` if it returned normally.
pub(crate) async fn poll_once(
    process: u64,
    consumer: &mut client::Consumer,
    recorder: &Recorder,
    final_poll: bool,
    deadline: Duration,
) -> bool {
    recorder.event(process, EventKind::Invoke, Op::poll(final_poll));
    let outcome = runtime::time::timeout(deadline, consumer.poll(POLL_WAIT)).await;
    let kind = poll_complete(process, recorder, final_poll, outcome);
    if kind != EventKind::Ok {
        runtime::time::sleep(Duration::from_millis(100)).await;
    }
    kind == EventKind::Ok
}

/// The liveness phase: a fresh consumer reads every partition from the start until it reaches the
/// end offsets it found after healing. Every acknowledged send must be among what it reads.
pub async fn final_polls(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
) -> Result<(), String> {
    let config = client_config(options, bootstrap);
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name("final-reader")
        .ip("10.0.4.1".parse().expect("ip"))
        .build();
    let (options, recorder) = (options.clone(), recorder.clone());
    node.spawn(async move { final_read(options, config, recorder).await })
        .await
        .map_err(|_| "final reader task died".to_string())?
}

async fn final_read(
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
) -> Result<(), String> {
    let deadline = runtime::Clock::system().now() + options.liveness_duration;
    let mut consumer = client::Consumer::new(config, consumer_config());
    let partitions = partitions_all(&options);
    // The end offsets as of now: everything acknowledged lies below them.
    let mut ends = BTreeMap::new();
    for partition in &partitions {
        loop {
            if runtime::Clock::system().now() >= deadline {
                return Err(format!(
                    "partition {partition}: end offset unknown after heal"
                ));
            }
            let asked = client::TopicPartition::new(TOPIC, partition.partition);
            match consumer.list_offsets(&asked, -1).await {
                Ok(end) => {
                    ends.insert(partition.clone(), end.offset);
                    break;
                }
                Err(_) => runtime::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let assign = Op::Assign {
        partitions: partitions.clone(),
        seek_to_beginning: true,
    };
    recorder.event(FINAL_PROCESS, EventKind::Invoke, assign.clone());
    let positions = positions_earliest(&partitions);
    while consumer.assign(positions.clone()).await.is_err() {
        if runtime::Clock::system().now() >= deadline {
            recorder.event(FINAL_PROCESS, EventKind::Fail, assign);
            return Err("final reader could not assign partitions after heal".to_string());
        }
        runtime::time::sleep(Duration::from_millis(200)).await;
    }
    recorder.event(FINAL_PROCESS, EventKind::Ok, assign);
    loop {
        let lagging: Vec<(Partition, i64)> = ends
            .iter()
            .filter_map(|(partition, end)| {
                let position = consumer
                    .position(&client::TopicPartition::new(TOPIC, partition.partition))
                    .unwrap_or(0);
                (position < *end).then(|| (partition.clone(), end - position))
            })
            .collect();
        let Some((partition, lag)) = lagging.first() else {
            if options.log_policy.is_some() {
                // Retention may have taken records the reader never reached (its position
                // started at the log start): the log start now says which.
                for partition in &partitions {
                    let deadline = options.request_timeout * 2;
                    for _ in 0..10 {
                        let listed = crate::log_workload::log_start_list(
                            FINAL_PROCESS,
                            &mut consumer,
                            partition,
                            &recorder,
                            deadline,
                        )
                        .await;
                        if listed.is_some() {
                            break;
                        }
                        runtime::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            return Ok(());
        };
        if runtime::Clock::system().now() >= deadline {
            return Err(format!("partition {partition}: lag {lag} after heal"));
        }
        let deadline = options.request_timeout * 2;
        let ok = poll_once(FINAL_PROCESS, &mut consumer, &recorder, true, deadline).await;
        if !ok && options.log_policy.is_some() {
            crate::log_workload::positions_resync(
                FINAL_PROCESS,
                &mut consumer,
                &partitions,
                &recorder,
                deadline,
            )
            .await;
        }
    }
}
