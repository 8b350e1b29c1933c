//! The transactional workload (`Workload::Transactions`, scenario `single-txn`; on the replicated
//! data world's cluster, `Workload::ClusterTxn`, scenario `cluster-txn`, where every topic has
//! the world's replication factor and `min.insync.replicas`).
//!
//! Topics: `t` and `u` (data, written by transactional producers), `in` (input, written by plain
//! or idempotent producers) and `out` (output of the processors). Everyone who reads, reads
//! committed (`isolation.level=read_committed`), so the checker's transaction checks apply
//! to every poll: no aborted read, no precommitted read, no torn transaction.
//!
//! - Input producers (processes 1..) send unique values to `in`, as `workload`'s producers do.
//! - Readers (processes 100..) assign every partition of `t`, `u` and `out` and poll.
//! - Transactional producers (400..) and processors (500..): `txn_processes`.
//! - The final reader waits until no transaction is open anywhere (each partition's last stable
//!   offset has reached its high watermark: the coordinator aborts abandoned transactions after
//!   their timeout), then reads every partition from the start to there, and lists the
//!   processors' committed input offsets, which `checker`'s exactly-once check needs.

use crate::options::{Options, TxnPolicy};
use crate::recorder::Recorder;
use crate::txn_processes::PRODUCER_PROCESS_BASE;
use crate::workload::{
    client_config, poll_complete, poll_once, positions_earliest, process_index,
    send_definitely_failed, CONSUMER_PROCESS_BASE, FINAL_PROCESS, VALUES_PER_PROCESS,
};
use crate::world::TOPIC;
use bytes::Bytes;
use checker::{EventKind, MicroOp, Op, Partition};
use client::{ClientConfig, IsolationLevel, TopicPartition};
use rand::Rng;
use runtime::rng::{stream_rng, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The transactional id each transactional producer and processor uses now, by process: the
/// cluster nemesis aims at their coordinators (the leaders of the ids' partitions of
/// `__transaction_state`).
pub type TxnIds = Arc<Mutex<BTreeMap<u64, String>>>;

/// Records that `process` uses `transactional_id` from now on.
pub(crate) fn txn_id_set(ids: &TxnIds, process: u64, transactional_id: &str) {
    let mut ids = ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    ids.insert(process, transactional_id.to_string());
}

/// The client nodes' addresses: the single world's, or, on the cluster world, apart from its
/// nodes (10.0.1.N), its final writer and replica reader (10.0.7.2-3) and its probe.
struct Addresses {
    admin: &'static str,
    /// The transactional producers' subnet (10.0.S.N).
    producer_subnet: u8,
}

fn addresses(options: &Options) -> Addresses {
    match options.cluster {
        Some(_) => Addresses {
            admin: "10.0.7.1",
            producer_subnet: 12,
        },
        None => Addresses {
            admin: "10.0.1.1",
            producer_subnet: 7,
        },
    }
}

/// The second data topic: transactions span `t` and `u`.
pub const TOPIC_SECOND: &str = "u";
/// The processors' input and output topics.
pub const TOPIC_INPUT: &str = "in";
pub const TOPIC_OUTPUT: &str = "out";
/// The consumer group the processors commit their input offsets to, inside their transactions.
pub const PROCESSOR_GROUP: &str = "processors";
/// How long a processor's poll waits for data.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Pause after a failed operation, so a down broker is not hammered.
const BACKOFF: Duration = Duration::from_millis(100);

fn policy(options: &Options) -> &TxnPolicy {
    options
        .txn
        .as_ref()
        .expect("the transactional workload has a policy")
}

/// Every topic with its partition count.
fn topics(options: &Options) -> [(&'static str, i32); 4] {
    let policy = policy(options);
    [
        (TOPIC, options.topic_partitions),
        (TOPIC_SECOND, policy.data_partitions),
        (TOPIC_INPUT, policy.input_partitions),
        (TOPIC_OUTPUT, policy.output_partitions),
    ]
}

pub(crate) fn partitions_of(options: &Options, names: &[&str]) -> Vec<Partition> {
    topics(options)
        .into_iter()
        .filter(|(topic, _)| names.contains(topic))
        .flat_map(|(topic, count)| (0..count).map(move |index| Partition::new(topic, index)))
        .collect()
}

/// What readers during the run poll: both data topics and the processors' output.
fn partitions_read(options: &Options) -> Vec<Partition> {
    partitions_of(options, &[TOPIC, TOPIC_SECOND, TOPIC_OUTPUT])
}

fn partitions_every(options: &Options) -> Vec<Partition> {
    partitions_of(options, &[TOPIC, TOPIC_SECOND, TOPIC_INPUT, TOPIC_OUTPUT])
}

pub(crate) fn topic_partition(partition: &Partition) -> TopicPartition {
    TopicPartition::new(&partition.topic, partition.partition)
}

/// A consumer that reads committed and fails a poll rather than jump when its position leaves
/// the log.
pub(crate) fn consumer_config() -> client::ConsumerConfig {
    client::ConsumerConfig {
        isolation_level: IsolationLevel::ReadCommitted,
        ..crate::workload::consumer_config()
    }
}

/// Creates the four topics, retrying through faults until the safety phase would have started:
/// with one replica, or on the cluster world with its replication factor and
/// `min.insync.replicas`.
pub async fn topics_create(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
) -> Result<(), String> {
    recorder.processing_group(PROCESSOR_GROUP);
    let config = client_config(options, bootstrap);
    let mut configs = BTreeMap::from([(
        "segment.bytes".to_string(),
        options.segment_bytes.to_string(),
    )]);
    let replication = options.replication.as_ref();
    let replication_factor = replication.map_or(1, |policy| policy.replication_factor as i16);
    if let Some(policy) = replication {
        configs.insert(
            "min.insync.replicas".to_string(),
            policy.min_insync.to_string(),
        );
    }
    let topics = topics(options);
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name("admin")
        .ip(addresses(options).admin.parse().expect("valid ip"))
        .build();
    let created = node
        .spawn(async move {
            let mut admin = client::Admin::new(config);
            for (topic, partitions) in topics {
                let mut created = false;
                for _ in 0..60 {
                    match admin
                        .create_topic(topic, partitions, replication_factor, configs.clone())
                        .await
                    {
                        Ok(()) => created = true,
                        Err(error)
                            if error.kafka_error()
                                == Some(kafka_protocol::ResponseError::TopicAlreadyExists) =>
                        {
                            created = true
                        }
                        Err(error) => tracing::debug!(%error, "create topic failed; retrying"),
                    }
                    if created {
                        break;
                    }
                    runtime::time::sleep(Duration::from_millis(500)).await;
                }
                if !created {
                    return Err(format!(
                        "could not create topic {topic} within 30 s of a quiet start"
                    ));
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| "admin task died".to_string())?;
    recorder.note(&format!("topics created: {topics:?}"));
    created
}

/// Starts input producers, readers, transactional producers and processors, each on its own
/// client node; they stop when `stop` is set.
pub fn start(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
    stop: Arc<AtomicBool>,
) -> Vec<runtime::JoinHandle<()>> {
    start_clients(options, bootstrap, recorder, stop).0
}

/// As `start`, also answering the client nodes (the cluster nemesis cuts a broker off from them)
/// and the transactional ids in use (it aims at their coordinators).
pub(crate) fn start_clients(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
    stop: Arc<AtomicBool>,
) -> (
    Vec<runtime::JoinHandle<()>>,
    Vec<madsim::task::NodeId>,
    TxnIds,
) {
    let handle = madsim::runtime::Handle::current();
    let mut workers = Vec::new();
    let mut clients = Vec::new();
    let ids = TxnIds::default();
    for index in 0..options.producer_count {
        let process = index as u64 + 1;
        let node = handle
            .create_node()
            .name(format!("input-{process}"))
            .ip(format!("10.0.2.{process}").parse().expect("ip"))
            .build();
        clients.push(node.id());
        workers.push(node.spawn(input_run(
            process,
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop.clone(),
        )));
    }
    for index in 0..options.consumer_count {
        let process = CONSUMER_PROCESS_BASE + index as u64;
        let node = handle
            .create_node()
            .name(format!("reader-{process}"))
            .ip(format!("10.0.3.{}", index + 1).parse().expect("ip"))
            .build();
        clients.push(node.id());
        workers.push(node.spawn(reader_run(
            process,
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop.clone(),
        )));
    }
    let policy = policy(options);
    let subnet = addresses(options).producer_subnet;
    for index in 0..policy.producer_count {
        let process = PRODUCER_PROCESS_BASE + index as u64;
        let node = handle
            .create_node()
            .name(format!("txn-producer-{process}"))
            .ip(format!("10.0.{subnet}.{}", index + 1).parse().expect("ip"))
            .build();
        clients.push(node.id());
        workers.push(node.spawn(crate::txn_processes::producer_run(
            process,
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop.clone(),
            ids.clone(),
        )));
    }
    for index in 0..policy.processor_count {
        let node = handle
            .create_node()
            .name(format!("processor-{index}"))
            .ip(format!("10.0.8.{}", index + 1).parse().expect("ip"))
            .build();
        clients.push(node.id());
        workers.push(node.spawn(crate::txn_processes::processor_run(
            index,
            options.clone(),
            client_config(options, bootstrap),
            recorder.clone(),
            stop.clone(),
            ids.clone(),
        )));
    }
    (workers, clients, ids)
}

/// Sends unique values to random input partitions, as `workload`'s producers do (idempotent
/// and retrying in the seeds that say so).
async fn input_run(
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
    let config = match options.idempotent_producers {
        true => config,
        false => ClientConfig {
            retries: 0,
            ..config
        },
    };
    let producer = client::Producer::new(config, producer_config);
    let partitions = policy(&options).input_partitions;
    let mut counter = 0;
    while !stop.load(Ordering::SeqCst) {
        let partition = Partition::new(TOPIC_INPUT, rng.gen_range(0..partitions));
        let value = process as i64 * VALUES_PER_PROCESS + counter;
        counter += 1;
        let send = |offset| {
            Op::Txn(vec![MicroOp::Send {
                partition: partition.clone(),
                value,
                offset,
                timestamp: None,
            }])
        };
        recorder.event(process, EventKind::Invoke, send(None));
        let record = client::ProducerRecord {
            partition: Some(partition.partition),
            ..client::ProducerRecord::new(TOPIC_INPUT, None, Some(Bytes::from(value.to_string())))
        };
        let deadline = options.request_timeout * 2;
        let (kind, offset) = match runtime::time::timeout(deadline, producer.send(record)).await {
            Ok(Ok(metadata)) => (EventKind::Ok, Some(metadata.offset)),
            Ok(Err(error)) if send_definitely_failed(&error) => (EventKind::Fail, None),
            Ok(Err(_)) | Err(_) => (EventKind::Info, None),
        };
        recorder.event(process, kind, send(offset));
        runtime::time::sleep(options.send_interval * 4).await;
    }
}

/// Reads committed from every data and output partition, from the start, until stopped. The
/// assignment is tried again until it succeeds: on the cluster a topic just created may have no
/// leader in the brokers' images yet, or the nemesis may already have struck.
async fn reader_run(
    process: u64,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut consumer = client::Consumer::new(config, consumer_config());
    let partitions = partitions_read(&options);
    let assign = Op::Assign {
        partitions: partitions.clone(),
        seek_to_beginning: true,
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        recorder.event(process, EventKind::Invoke, assign.clone());
        match consumer.assign(positions_earliest(&partitions)).await {
            Ok(()) => {
                recorder.event(process, EventKind::Ok, assign);
                break;
            }
            Err(_) => {
                recorder.event(process, EventKind::Fail, assign.clone());
                runtime::time::sleep(BACKOFF).await;
            }
        }
    }
    while !stop.load(Ordering::SeqCst) {
        let deadline = options.request_timeout * 2;
        if poll_recorded(process, &mut consumer, &recorder, deadline)
            .await
            .is_none()
        {
            runtime::time::sleep(BACKOFF).await;
        }
    }
}

/// The liveness phase: waits until no transaction is open on any partition, reads every
/// partition committed from the start to its end, then lists the processors' committed offsets.
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
    let partitions = partitions_every(&options);
    let ends = ends_stable(&options, &config, &partitions, deadline).await?;
    let mut consumer = client::Consumer::new(config.clone(), consumer_config());
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
        runtime::time::sleep(BACKOFF * 2).await;
    }
    recorder.event(FINAL_PROCESS, EventKind::Ok, assign);
    loop {
        let lagging = ends.iter().find_map(|(partition, end)| {
            let position = consumer.position(&topic_partition(partition)).unwrap_or(0);
            (position < *end).then(|| (partition.clone(), end - position))
        });
        let Some((partition, lag)) = lagging else {
            break;
        };
        if runtime::Clock::system().now() >= deadline {
            return Err(format!("partition {partition}: lag {lag} after heal"));
        }
        let wait = options.request_timeout * 2;
        poll_once(FINAL_PROCESS, &mut consumer, &recorder, true, wait).await;
    }
    let inputs = partitions_of(&options, &[TOPIC_INPUT]);
    let mut cluster = client::Cluster::new(config);
    while committed_list(FINAL_PROCESS, &mut cluster, &inputs, &recorder, &options)
        .await
        .is_none()
    {
        if runtime::Clock::system().now() >= deadline {
            return Err("the processors' committed offsets unreadable after heal".to_string());
        }
        runtime::time::sleep(BACKOFF * 2).await;
    }
    Ok(())
}

/// Each partition's end once no transaction is open on it: the last stable offset, asked until it
/// equals the high watermark (transactions still open after the heal are abandoned ones, which
/// the coordinator aborts at their timeout). Every committed record lies below these ends.
async fn ends_stable(
    options: &Options,
    config: &ClientConfig,
    partitions: &[Partition],
    deadline: runtime::time::Instant,
) -> Result<BTreeMap<Partition, i64>, String> {
    let mut committed = client::Consumer::new(config.clone(), consumer_config());
    let mut uncommitted = client::Consumer::new(
        config.clone(),
        client::ConsumerConfig {
            isolation_level: IsolationLevel::ReadUncommitted,
            ..consumer_config()
        },
    );
    let mut ends = BTreeMap::new();
    for partition in partitions {
        let asked = topic_partition(partition);
        loop {
            if runtime::Clock::system().now() >= deadline {
                return Err(format!(
                    "partition {partition}: a transaction still open after heal"
                ));
            }
            let lso = committed.list_offsets(&asked, client::offsets::TIMESTAMP_LATEST);
            let stable = match lso.await {
                Ok(stable) => stable.offset,
                Err(_) => {
                    runtime::time::sleep(BACKOFF * 2).await;
                    continue;
                }
            };
            let hwm = uncommitted.list_offsets(&asked, client::offsets::TIMESTAMP_LATEST);
            match hwm.await {
                Ok(high) if high.offset == stable => {
                    ends.insert(partition.clone(), stable);
                    break;
                }
                Ok(_) | Err(_) => runtime::time::sleep(options.request_timeout / 10).await,
            }
        }
    }
    Ok(ends)
}

/// One recorded poll that hands its records back; `None` when it failed or timed out.
pub(crate) async fn poll_recorded(
    process: u64,
    consumer: &mut client::Consumer,
    recorder: &Recorder,
    deadline: Duration,
) -> Option<Vec<client::ConsumerRecord>> {
    recorder.event(process, EventKind::Invoke, Op::poll(false));
    let outcome = runtime::time::timeout(deadline, consumer.poll(POLL_WAIT)).await;
    let records = match &outcome {
        Ok(Ok(records)) => Some(records.clone()),
        Ok(Err(_)) | Err(_) => None,
    };
    poll_complete(process, recorder, false, outcome);
    records
}

/// Lists `PROCESSOR_GROUP`'s committed offsets of `partitions` (-1: none), recorded; `None` when
/// not answered.
pub(crate) async fn committed_list(
    process: u64,
    cluster: &mut client::Cluster,
    partitions: &[Partition],
    recorder: &Recorder,
    options: &Options,
) -> Option<BTreeMap<Partition, i64>> {
    let asked: BTreeMap<Partition, i64> = partitions.iter().map(|p| (p.clone(), -1)).collect();
    recorder.event(
        process,
        EventKind::Invoke,
        Op::ListCommitted {
            group: PROCESSOR_GROUP.to_string(),
            offsets: asked.clone(),
        },
    );
    let topic_partitions: Vec<TopicPartition> = partitions.iter().map(topic_partition).collect();
    let mut coordinator = None;
    // As a read_committed consumer asks (KIP-447): offsets a transaction still holds are
    // waited for, not read from before it (the offsets partition's marker may come after the
    // transaction's EndTxn answer, and after its data partitions' markers).
    let fetch = client::group::offsets_fetch_stable(
        cluster,
        &mut coordinator,
        PROCESSOR_GROUP,
        Some(&topic_partitions),
    );
    let (kind, offsets) = match runtime::time::timeout(options.request_timeout * 2, fetch).await {
        Ok(Ok(committed)) => {
            let offsets = partitions
                .iter()
                .map(|partition| {
                    let offset = committed.get(&topic_partition(partition)).copied();
                    (partition.clone(), offset.flatten().unwrap_or(-1))
                })
                .collect();
            (EventKind::Ok, offsets)
        }
        Ok(Err(_)) => (EventKind::Fail, asked),
        Err(_) => (EventKind::Info, asked),
    };
    recorder.event(
        process,
        kind,
        Op::ListCommitted {
            group: PROCESSOR_GROUP.to_string(),
            offsets: offsets.clone(),
        },
    );
    (kind == EventKind::Ok).then_some(offsets)
}
