//! The leader side of replication (`replica::shell`) on three real brokers: three cluster nodes,
//! all voters, on loopback with `MemDisk`s and the fast timing, opened as `serve` opens them
//! and reconciled by the same loop. Topics have three replicas; the test plays the followers
//! with raw Fetch requests (`replica_id` = the follower's id, `fetch_offset` = what it has
//! "fsynced"), handed to the brokers' handlers as a connection would, so it decides exactly
//! when each follower reports. Nothing here starts a follower fetcher.
//!
//! Each scenario is a function returning `Err` when an invariant breaks; the tests run them
//! clean, and with `--features planted-bugs` also with the planted bug each is meant to catch.

mod common;

use broker::handlers::{self, Reply};
use broker::planted::Bug;
use broker::{Broker, BrokerConfig, NodeContext};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, batch_encode_with, RecordSpec};
use wire::{RequestKind, ResponseKind, ValidatedBatch};

/// Three brokers, ids 1-3 at indexes 0-2, every one a voter.
struct Cluster {
    brokers: Vec<Arc<Broker>>,
}

impl Cluster {
    async fn open(planted: Option<Bug>) -> Cluster {
        Cluster::open_with(planted, Duration::from_secs(30)).await
    }

    /// `lag_time_max`: Kafka's `replica.lag.time.max.ms`.
    async fn open_with(planted: Option<Bug>, lag_time_max: Duration) -> Cluster {
        let mut voters = BTreeMap::new();
        for id in 1..=3 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            voters.insert(id, format!("127.0.0.1:{port}"));
        }
        let mut opening = Vec::new();
        for id in 1..=3 {
            let mut config = BrokerConfig::zero_config();
            config.node_id = id;
            // Never bound: only advertised in the registration.
            config.listen = format!("127.0.0.1:{}", 19400 + id);
            config.data_dir = "data".into();
            config.cluster_id = "replication".into();
            config.voters = voters.clone();
            config.planted = planted;
            config.replica.lag_time_max = lag_time_max;
            broker::config::validate(&config).expect("a valid cluster config");
            let context = NodeContext {
                clock: runtime::Clock::system(),
                disk: runtime::MemDisk::new(),
                seed: 10 + id as u64,
                cluster_hooks: broker::cluster_mode::ClusterHooks {
                    timing: Some(cluster::node::ClusterTiming::fast()),
                    ..Default::default()
                },
            };
            opening.push(runtime::spawn(Broker::open(config, context)));
        }
        let mut brokers = Vec::new();
        for task in opening {
            let broker = task.await.unwrap().expect("opens");
            runtime::spawn(broker::cluster_mode::reconcile_loop(broker.clone()));
            brokers.push(broker);
        }
        Cluster { brokers }
    }

    fn node(&self, id: i32) -> &Arc<Broker> {
        &self.brokers[(id - 1) as usize]
    }

    /// Creates `name` with three partitions of three replicas each, and waits until every
    /// partition's leader runs its core.
    async fn topic_create(&self, name: &str, min_insync: &str) {
        let config = CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("min.insync.replicas"))
            .with_value(Some(StrBytes::from_string(min_insync.to_string())));
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(3)
            .with_replication_factor(3)
            .with_configs(vec![config]);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(10_000);
        let response = handlers::admin::create_topics(&self.brokers[0], request, 5).await;
        let ResponseKind::CreateTopics(response) = response else {
            panic!("CreateTopics answered {response:?}");
        };
        assert_eq!(response.topics[0].error_code, 0, "{response:?}");
        for index in 0..3 {
            eventually(&format!("{name}-{index} led with a core"), || {
                let leader = self.leader(name, index)?;
                let partition = self.node(leader).topics().partition(name, index)?;
                let led = partition.replica().is_some();
                led.then_some(())
            })
            .await;
        }
    }

    /// The leader of `name`-`index` by node 1's image, once some node's image names one.
    fn leader(&self, name: &str, index: i32) -> Option<i32> {
        self.brokers.iter().find_map(|broker| {
            let image = broker.cluster().image();
            let topic = image.topic_by_name(name)?;
            image.partition(topic.topic_id, index)?.leader()
        })
    }

    /// The partition of `name` that node `id` leads (each node leads one of the three).
    fn led_by(&self, name: &str, id: i32) -> i32 {
        (0..3)
            .find(|&index| self.leader(name, index) == Some(id))
            .unwrap_or_else(|| panic!("node {id} leads no partition of {name}"))
    }

    fn leader_epoch(&self, id: i32, name: &str, index: i32) -> i32 {
        let image = self.node(id).cluster().image();
        let topic = image.topic_by_name(name).unwrap();
        image.partition(topic.topic_id, index).unwrap().leader_epoch
    }

    fn isr(&self, id: i32, name: &str, index: i32) -> Vec<i32> {
        let image = self.node(id).cluster().image();
        let topic = image.topic_by_name(name).unwrap();
        image.partition(topic.topic_id, index).unwrap().isr.clone()
    }
}

/// Polls `probe` every 10 ms for 10 s.
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(found) = probe() {
            return found;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

fn topic_name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn frame(api_key: wire::ApiKey, body: RequestKind, version: i16) -> wire::RequestFrame {
    wire::RequestFrame {
        api_key,
        header: RequestHeader::default().with_request_api_version(version),
        api_version: version,
        body,
    }
}

async fn reply_await(reply: Reply) -> ResponseKind {
    match reply {
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
        Reply::None => panic!("no reply"),
    }
}

fn record(value: &str) -> RecordSpec {
    RecordSpec {
        value: Some(value.to_string().into()),
        timestamp: 1_000,
        ..Default::default()
    }
}

/// A Produce of one record `value` to `name`-`index`, as handed to the handler.
fn produce(broker: &Arc<Broker>, name: &str, index: i32, acks: i16, value: &str) -> Reply {
    let batch = batch_encode(&[record(value)], Compression::None).into_bytes();
    produce_batch(broker, (name, index), acks, batch)
}

/// A Produce of `batch` to `name`-`index`, as handed to the handler.
fn produce_batch(
    broker: &Arc<Broker>,
    (name, index): (&str, i32),
    acks: i16,
    batch: bytes::Bytes,
) -> Reply {
    let data = produce_request::PartitionProduceData::default()
        .with_index(index)
        .with_records(Some(batch));
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(3_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic_name(name))
            .with_partition_data(vec![data])]);
    let request = frame(wire::ApiKey::Produce, RequestKind::Produce(request), 9);
    handlers::handle(broker, request)
}

/// A produce's answer: (error code, base offset).
type Answer = (i16, i64);

fn produce_answer(response: ResponseKind) -> Answer {
    let ResponseKind::Produce(response) = response else {
        panic!("not a Produce response: {response:?}");
    };
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// Starts an acks=all produce; its answer arrives on the handle.
fn produce_parked(
    broker: &Arc<Broker>,
    name: &str,
    index: i32,
    value: &str,
) -> runtime::JoinHandle<Answer> {
    let reply = produce(broker, name, index, -1, value);
    runtime::spawn(async move { produce_answer(reply_await(reply).await) })
}

async fn produce_now(broker: &Arc<Broker>, name: &str, index: i32, acks: i16) -> Answer {
    let reply = produce(broker, name, index, acks, "v");
    produce_answer(reply_await(reply).await)
}

/// What a Fetch answered for one partition: error, HW, the batches.
struct Fetched {
    error: i16,
    high_watermark: i64,
    records: bytes::Bytes,
    /// (epoch, end offset), or (-1, -1).
    diverging: (i32, i64),
}

impl Fetched {
    fn batches(&self) -> Vec<ValidatedBatch> {
        ValidatedBatch::validate_all(self.records.clone()).expect("whole batches")
    }

    /// The offset after the last record returned, or `from` if none.
    fn next_offset(&self, from: i64) -> i64 {
        self.batches()
            .last()
            .map_or(from, |batch| batch.header().next_offset())
    }
}

/// A Fetch v12 of `name`-`index` from `offset` at `current_leader_epoch`: by follower
/// `replica_id`, or a consumer with -1. Never waits.
async fn fetch(
    broker: &Arc<Broker>,
    at: (&str, i32),
    replica_id: i32,
    offset: i64,
    current_leader_epoch: i32,
) -> Fetched {
    fetch_after(broker, at, replica_id, (offset, -1), current_leader_epoch).await
}

/// `fetch`, naming the epoch of the last batch the fetcher holds (-1: none).
async fn fetch_after(
    broker: &Arc<Broker>,
    (name, index): (&str, i32),
    replica_id: i32,
    (offset, last_fetched_epoch): (i64, i32),
    current_leader_epoch: i32,
) -> Fetched {
    let partition = fetch_request::FetchPartition::default()
        .with_partition(index)
        .with_current_leader_epoch(current_leader_epoch)
        .with_fetch_offset(offset)
        .with_last_fetched_epoch(last_fetched_epoch)
        .with_partition_max_bytes(1 << 20);
    let request = FetchRequest::default()
        .with_replica_id(replica_id.into())
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic_name(name))
            .with_partitions(vec![partition])]);
    let request = frame(wire::ApiKey::Fetch, RequestKind::Fetch(request), 12);
    let ResponseKind::Fetch(response) = reply_await(handlers::handle(broker, request)).await else {
        panic!("not a Fetch response");
    };
    let data = &response.responses[0].partitions[0];
    Fetched {
        error: data.error_code,
        high_watermark: data.high_watermark,
        records: data.records.clone().unwrap_or_default(),
        diverging: (data.diverging_epoch.epoch, data.diverging_epoch.end_offset),
    }
}

/// ListOffsets latest of `name`-`index`: (error, offset).
async fn offset_latest(broker: &Arc<Broker>, name: &str, index: i32) -> (i16, i64) {
    let partition = list_offsets_request::ListOffsetsPartition::default()
        .with_partition_index(index)
        .with_timestamp(-1);
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic_name(name))
            .with_partitions(vec![partition])]);
    let request = frame(
        wire::ApiKey::ListOffsets,
        RequestKind::ListOffsets(request),
        7,
    );
    let ResponseKind::ListOffsets(response) = reply_await(handlers::handle(broker, request)).await
    else {
        panic!("not a ListOffsets response");
    };
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.offset)
}

/// Whether `task` is still running after a while.
async fn still_parked<T>(task: &runtime::JoinHandle<T>) -> bool {
    runtime::time::sleep(Duration::from_millis(200)).await;
    !task.is_finished()
}

fn check(condition: bool, what: String) -> Result<(), String> {
    match condition {
        true => Ok(()),
        false => Err(what),
    }
}

const OK: i16 = 0;

/// acks=1 is answered at the leader's fsync with no follower fetch; consumers read only below
/// the replicated HW although the leader fsynced more; acks=all stays parked until every ISR
/// member reported an fsynced end covering it; acks=0 gets no answer.
async fn acks_and_reads(planted: Option<Bug>) -> Result<(), String> {
    let cluster = Cluster::open(planted).await;
    cluster.topic_create("r", "2").await;
    let (leader, followers) = (1, [2, 3]);
    let index = cluster.led_by("r", leader);
    let at = ("r", index);
    let epoch = cluster.leader_epoch(leader, "r", index);
    let node = cluster.node(leader);

    let answer = produce_now(node, "r", index, 1).await;
    check(answer == (OK, 0), format!("acks=1 answered {answer:?}"))?;
    let read = fetch(node, at, -1, 0, epoch).await;
    check(
        read.error == OK && read.high_watermark == 0 && read.batches().is_empty(),
        format!(
            "a consumer read offset 0 (HW {}) before any follower had it",
            read.high_watermark
        ),
    )?;

    let parked = produce_parked(node, "r", index, "all");
    check(
        still_parked(&parked).await,
        "acks=all answered before any follower fetched".into(),
    )?;
    // Follower 2 copies both records and reports them fsynced.
    let copied = fetch(node, at, followers[0], 0, epoch).await;
    check(
        copied.error == OK && copied.next_offset(0) == 2,
        format!(
            "follower 2 read to {} (error {})",
            copied.next_offset(0),
            copied.error
        ),
    )?;
    let report = fetch(node, at, followers[0], 2, epoch).await;
    check(
        report.high_watermark == 0,
        format!("HW {} with follower 3 silent", report.high_watermark),
    )?;
    check(
        still_parked(&parked).await,
        "acks=all answered with follower 3 silent".into(),
    )?;
    // Follower 3 reports offset 0 only: the HW reaches 1, the consumer reads offset 0 only.
    fetch(node, at, followers[1], 0, epoch).await;
    let report = fetch(node, at, followers[1], 1, epoch).await;
    check(
        report.high_watermark == 1,
        format!("HW {} after reports 2 and 1", report.high_watermark),
    )?;
    let read = fetch(node, at, -1, 0, epoch).await;
    check(
        read.high_watermark == 1 && read.next_offset(0) == 1,
        format!(
            "a consumer read to {} with the HW at 1 (answered {})",
            read.next_offset(0),
            read.high_watermark
        ),
    )?;
    check(
        still_parked(&parked).await,
        "acks=all answered before the HW covered it".into(),
    )?;
    fetch(node, at, followers[1], 2, epoch).await;
    let answer = runtime::time::timeout(Duration::from_secs(5), parked)
        .await
        .map_err(|_| "acks=all not answered once every ISR member had it".to_string())?
        .unwrap();
    check(answer == (OK, 1), format!("acks=all answered {answer:?}"))?;
    let read = fetch(node, at, -1, 0, epoch).await;
    check(
        read.next_offset(0) == 2,
        "the consumer misses offset 1".into(),
    )?;

    let reply = produce(node, "r", index, 0, "none");
    check(matches!(reply, Reply::None), "acks=0 got an answer".into())?;

    // Offline (as after a failed fsync; `delete` marks the partition failed the same way): the
    // leader serves its followers nothing more.
    node.topics().partition("r", index).unwrap().delete();
    let read = fetch(node, at, followers[0], 2, epoch).await;
    let storage_error = ResponseError::KafkaStorageError.code();
    check(
        read.error == storage_error,
        format!("an offline leader answered a follower {}", read.error),
    )?;
    Ok(())
}

/// A retried idempotent batch (a duplicate: nothing appended) is answered with its original's
/// offsets only once the HW covers the original, like the original itself.
async fn a_retry_waits_for_the_hw(planted: Option<Bug>) -> Result<(), String> {
    let cluster = Cluster::open(planted).await;
    cluster.topic_create("r", "2").await;
    let (leader, followers) = (1, [2, 3]);
    let index = cluster.led_by("r", leader);
    let at = ("r", index);
    let epoch = cluster.leader_epoch(leader, "r", index);
    let node = cluster.node(leader);
    let producer_id = node.producer_id_new().expect("a producer id");
    let batch = batch_encode_with(
        &[record("once")],
        Compression::None,
        producer_id,
        0,
        0,
        false,
    )
    .into_bytes();
    let spawn =
        |reply: Reply| runtime::spawn(async move { produce_answer(reply_await(reply).await) });
    let original = spawn(produce_batch(node, at, -1, batch.clone()));
    fetch(node, at, followers[0], 0, epoch).await;
    fetch(node, at, followers[0], 1, epoch).await;
    let retry = spawn(produce_batch(node, at, -1, batch));
    check(
        still_parked(&retry).await,
        "a retried acks=all batch answered before the HW covered its original".into(),
    )?;
    check(
        !original.is_finished(),
        "acks=all answered with follower 3 silent".into(),
    )?;
    fetch(node, at, followers[1], 0, epoch).await;
    fetch(node, at, followers[1], 1, epoch).await;
    for (what, task) in [("original", original), ("retry", retry)] {
        let answer = runtime::time::timeout(Duration::from_secs(5), task)
            .await
            .map_err(|_| format!("the {what} not answered once the HW covered it"))?
            .unwrap();
        check(answer == (OK, 0), format!("the {what} answered {answer:?}"))?;
    }
    let end = node
        .topics()
        .partition("r", index)
        .unwrap()
        .log()
        .log_end_offset();
    check(
        end == 1,
        format!("the retry was appended again: log end {end}"),
    )?;
    Ok(())
}

/// A follower that leaves (its controlled shutdown: the controller drops it from the ISR) no
/// longer holds the HW back; an acks=all write the ISR shrank under below min.insync.replicas
/// gets NOT_ENOUGH_REPLICAS_AFTER_APPEND; acks=all is then refused before the append, while
/// acks=1 is still answered.
async fn a_dead_follower_leaves_the_isr(planted: Option<Bug>) -> Result<(), String> {
    let cluster = Cluster::open(planted).await;
    cluster.topic_create("r", "2").await;
    cluster.topic_create("s", "3").await;
    let (leader, live, dead) = (1, 2, 3);
    let r = cluster.led_by("r", leader);
    let s = cluster.led_by("s", leader);
    let node = cluster.node(leader);
    // On s (min.insync 3) an acks=all write reaches the live follower, then the ISR shrinks
    // under it: stored, but not as the topic asked.
    let s_epoch = cluster.leader_epoch(leader, "s", s);
    let shrunk_under = produce_parked(node, "s", s, "all");
    fetch(node, ("s", s), live, 0, s_epoch).await;
    fetch(node, ("s", s), live, 1, s_epoch).await;
    check(
        still_parked(&shrunk_under).await,
        "acks=all answered with follower 3 silent".into(),
    )?;
    cluster.node(dead).cluster().clone().shutdown().await;
    for (name, index) in [("r", r), ("s", s)] {
        eventually("the dead follower out of the ISR", || {
            (cluster.isr(leader, name, index) == [leader, live]).then_some(())
        })
        .await;
    }
    node.reconcile().unwrap();
    let answer = runtime::time::timeout(Duration::from_secs(5), shrunk_under)
        .await
        .map_err(|_| "acks=all not answered after the ISR shrank under it".to_string())?
        .unwrap();
    let after_append = ResponseError::NotEnoughReplicasAfterAppend.code();
    check(
        answer.0 == after_append,
        format!("acks=all whose ISR shrank below min.insync answered {answer:?}"),
    )?;

    let epoch = cluster.leader_epoch(leader, "r", r);
    let parked = produce_parked(node, "r", r, "all");
    fetch(node, ("r", r), live, 0, epoch).await;
    fetch(node, ("r", r), live, 1, epoch).await;
    let answer = runtime::time::timeout(Duration::from_secs(5), parked)
        .await
        .map_err(|_| "acks=all not answered by the ISR {1, 2}".to_string())?
        .unwrap();
    check(
        answer == (OK, 0),
        format!("acks=all with the ISR {{1, 2}} answered {answer:?}"),
    )?;

    let not_enough = ResponseError::NotEnoughReplicas.code();
    let answer = produce_now(node, "s", s, -1).await;
    check(
        answer.0 == not_enough,
        format!("acks=all with |ISR| < min.insync answered {answer:?}"),
    )?;
    let end = node
        .topics()
        .partition("s", s)
        .unwrap()
        .log()
        .log_end_offset();
    check(end == 1, "a refused acks=all produce was appended".into())?;
    let answer = produce_now(node, "s", s, 1).await;
    check(answer == (OK, 1), format!("acks=1 answered {answer:?}"))?;
    Ok(())
}

/// The leader's controlled shutdown moves leadership away: its parked acks=all produce fails
/// with NOT_LEADER_OR_FOLLOWER (the write may not survive), and the new leader, whose HW is
/// below the start of its leadership, answers ListOffsets OFFSET_NOT_AVAILABLE.
async fn a_deposed_leader_fails_its_waiters(planted: Option<Bug>) -> Result<(), String> {
    let cluster = Cluster::open(planted).await;
    cluster.topic_create("r", "2").await;
    // The Raft leader applies the controller's decisions first, so its image sees the move
    // before its node stops.
    let leader = eventually("a Raft leader", || {
        (1..=3).find(|&id| {
            let status = cluster.node(id).cluster().status();
            status.controller_active
        })
    })
    .await;
    let index = cluster.led_by("r", leader);
    let epoch = cluster.leader_epoch(leader, "r", index);
    let node = cluster.node(leader);
    let answer = produce_now(node, "r", index, 1).await;
    check(answer == (OK, 0), format!("acks=1 answered {answer:?}"))?;
    // Both followers copy offset 0 and fsync it, but never report it: their HW stays 0.
    for follower in (1..=3).filter(|&id| id != leader) {
        let copied = fetch(node, ("r", index), follower, 0, epoch).await;
        let partition = cluster
            .node(follower)
            .topics()
            .partition("r", index)
            .unwrap();
        for batch in copied.batches() {
            partition.log().append_replicated(batch).unwrap();
        }
        partition.flush_request();
        check(
            partition.durable_wait(0).await,
            "the follower's fsync failed".into(),
        )?;
    }
    let parked = produce_parked(node, "r", index, "all");
    check(
        still_parked(&parked).await,
        "acks=all answered with no follower report".into(),
    )?;
    node.cluster().clone().shutdown().await;
    node.reconcile().unwrap();
    let answer = runtime::time::timeout(Duration::from_secs(5), parked)
        .await
        .map_err(|_| "the deposed leader's waiter is still parked".to_string())?
        .unwrap();
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    check(
        answer.0 == not_leader,
        format!("the deposed leader answered its waiter {answer:?}"),
    )?;
    let fresh = eventually("a new leader with a core", || {
        let fresh = (1..=3).find(|&id| {
            id != leader && cluster.leader_epoch(id, "r", index) > epoch && {
                let image = cluster.node(id).cluster().image();
                let topic = image.topic_by_name("r").unwrap();
                image.partition(topic.topic_id, index).unwrap().leader() == Some(id)
            }
        })?;
        let partition = cluster.node(fresh).topics().partition("r", index)?;
        let led = partition.replica().is_some();
        led.then_some(fresh)
    })
    .await;
    let answer = offset_latest(cluster.node(fresh), "r", index).await;
    let not_available = ResponseError::OffsetNotAvailable.code();
    check(
        answer.0 == not_available,
        format!("a new leader with its HW below its epoch start answered ListOffsets {answer:?}"),
    )?;
    // The other follower claims the old leader's offset 1, which the new one never had: its
    // fetch past the new leader's end gets the divergence (truncate to 1), not
    // OFFSET_OUT_OF_RANGE, because the core hears of a fetch only after the check.
    let other = (1..=3).find(|&id| id != leader && id != fresh).unwrap();
    let new_epoch = cluster.leader_epoch(fresh, "r", index);
    let diverged = fetch_after(
        cluster.node(fresh),
        ("r", index),
        other,
        (2, epoch),
        new_epoch,
    )
    .await;
    check(
        diverged.error == OK && diverged.diverging == (epoch, 1),
        format!(
            "a diverging follower got error {} and diverging epoch {:?}",
            diverged.error, diverged.diverging
        ),
    )?;
    // That follower serves Kafka's debugging consumer (-2) its own copy up to its own HW, and
    // refuses a consumer.
    let follower = cluster.node(other);
    let read = fetch(follower, ("r", index), -1, 0, new_epoch).await;
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    check(
        read.error == not_leader,
        format!("a follower answered a consumer {}", read.error),
    )?;
    let read = fetch(follower, ("r", index), -2, 0, new_epoch).await;
    check(
        read.error == OK && read.high_watermark == 0 && read.batches().is_empty(),
        format!(
            "a follower with HW 0 served the debugging consumer to {} (error {})",
            read.next_offset(0),
            read.error
        ),
    )?;
    let partition = follower.topics().partition("r", index).unwrap();
    partition.follower_high_watermark_set(1);
    let read = fetch(follower, ("r", index), -2, 0, new_epoch).await;
    check(
        read.high_watermark == 1 && read.next_offset(0) == 1,
        format!(
            "a follower with HW 1 served the debugging consumer to {}",
            read.next_offset(0)
        ),
    )?;
    Ok(())
}

/// A follower that stops fetching is proposed out of the ISR after `lag_time_max`, but the HW
/// passes it (and acks=all is answered) only once the controller committed the shrink: while
/// the image still counts it, a new leader could be elected from it.
async fn a_silent_follower_is_shrunk_through_the_controller(
    planted: Option<Bug>,
) -> Result<(), String> {
    let cluster = Cluster::open_with(planted, Duration::from_millis(300)).await;
    cluster.topic_create("r", "2").await;
    let (leader, live, silent) = (1, 2, 3);
    let index = cluster.led_by("r", leader);
    let epoch = cluster.leader_epoch(leader, "r", index);
    let node = cluster.node(leader);
    let parked = produce_parked(node, "r", index, "all");
    // The live follower keeps fetching; the silent one never does.
    let mut offset = 0;
    let answer = loop {
        let fetched = fetch(node, ("r", index), live, offset, epoch).await;
        offset = fetched.next_offset(offset);
        if parked.is_finished() {
            break parked.await.unwrap();
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    };
    let isr = cluster.isr(leader, "r", index);
    if answer.0 == OK {
        check(
            !isr.contains(&silent),
            format!(
                "acks=all answered OK while the controller's ISR {isr:?} holds the silent follower"
            ),
        )?;
    }
    check(
        answer.0 == OK,
        format!("acks=all answered {answer:?} (ISR {isr:?})"),
    )?;
    // Answered or timed out, the produce left no waiter behind.
    let partition = node.topics().partition("r", index).unwrap();
    let waiting = partition.replica().as_ref().map(|led| led.waiting());
    check(
        waiting == Some((0, 0)),
        format!("waiters left after the produce ended: {waiting:?}"),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_waits_for_the_isr_and_consumers_read_below_the_hw() {
    acks_and_reads(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_waits_for_the_hw_over_its_original() {
    a_retry_waits_for_the_hw(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_out_of_the_isr_does_not_hold_the_hw_and_min_insync_is_checked() {
    a_dead_follower_leaves_the_isr(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_answers_its_waiters_not_leader() {
    a_deposed_leader_fails_its_waiters(None).await.unwrap();
}

/// A follower shrunk out of the ISR comes back through the controller once it caught up: the
/// leader proposes the expansion at its fetch (Kafka's `maybeExpandIsr`), and from then on the
/// HW waits for it again.
async fn a_caught_up_follower_rejoins_the_isr(planted: Option<Bug>) -> Result<(), String> {
    let cluster = Cluster::open_with(planted, Duration::from_millis(300)).await;
    cluster.topic_create("r", "2").await;
    let (leader, live, silent) = (1, 2, 3);
    let index = cluster.led_by("r", leader);
    let epoch = cluster.leader_epoch(leader, "r", index);
    let node = cluster.node(leader);
    let at = ("r", index);
    let answer = produce_now(node, "r", index, 1).await;
    check(answer == (OK, 0), format!("acks=1 answered {answer:?}"))?;
    // The live follower keeps fetching until the silent one is out of the controller's ISR.
    let mut offset = 0;
    for _ in 0..500 {
        if !cluster.isr(leader, "r", index).contains(&silent) {
            break;
        }
        offset = fetch(node, at, live, offset, epoch)
            .await
            .next_offset(offset);
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    let isr = cluster.isr(leader, "r", index);
    check(
        isr == [leader, live],
        format!("the silent follower was not shrunk: ISR {isr:?}"),
    )?;
    // It wakes up, copies the log and reports it fsynced: it rejoins.
    let copied = fetch(node, at, silent, 0, epoch).await;
    let end = copied.next_offset(0);
    for _ in 0..500 {
        if cluster.isr(leader, "r", index).contains(&silent) {
            break;
        }
        fetch(node, at, silent, end, epoch).await;
        fetch(node, at, live, end, epoch).await;
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    let isr = cluster.isr(leader, "r", index);
    check(
        isr.contains(&silent),
        format!("the caught-up follower did not rejoin: ISR {isr:?}"),
    )?;
    // Now the HW waits for it again.
    let parked = produce_parked(node, "r", index, "all");
    fetch(node, at, live, end, epoch).await;
    fetch(node, at, live, end + 1, epoch).await;
    check(
        still_parked(&parked).await,
        "acks=all answered without the rejoined follower".into(),
    )?;
    fetch(node, at, silent, end, epoch).await;
    fetch(node, at, silent, end + 1, epoch).await;
    let answer = runtime::time::timeout(Duration::from_secs(5), parked)
        .await
        .map_err(|_| "acks=all not answered by the full ISR".to_string())?
        .unwrap();
    check(answer == (OK, end), format!("acks=all answered {answer:?}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_follower_rejoins_the_isr_through_the_controller() {
    a_caught_up_follower_rejoins_the_isr(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_follower_leaves_the_hw_only_through_the_controller() {
    a_silent_follower_is_shrunk_through_the_controller(None)
        .await
        .unwrap();
}

#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_above_hw_is_caught() {
        let result = acks_and_reads(Some(Bug::ReadAboveHw)).await;
        let caught = result.expect_err("read-above-hw not caught");
        eprintln!("read-above-hw caught: {caught}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hw_over_all_replicas_is_caught() {
        let result = a_dead_follower_leaves_the_isr(Some(Bug::HwOverAllReplicas)).await;
        let caught = result.expect_err("hw-over-all-replicas not caught");
        eprintln!("hw-over-all-replicas caught: {caught}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn isr_shrink_local_is_caught() {
        let result =
            a_silent_follower_is_shrunk_through_the_controller(Some(Bug::IsrShrinkLocal)).await;
        let caught = result.expect_err("isr-shrink-local not caught");
        eprintln!("isr-shrink-local caught: {caught}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_leader_acks_is_caught() {
        let result = a_deposed_leader_fails_its_waiters(Some(Bug::StaleLeaderAcks)).await;
        let caught = result.expect_err("stale-leader-acks not caught");
        eprintln!("stale-leader-acks caught: {caught}");
    }
}
