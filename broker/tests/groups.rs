//! The client's `GroupConsumer` against the real server (in-process, on a `MemDisk`): two members
//! split a topic, commit, and one leaving hands its partitions to the other; the admin functions
//! the CLI uses see the same group.

mod common;

use broker::{BrokerConfig, NodeContext};
use client::{
    Admin, ClientConfig, ConsumerConfig, GroupConfig, GroupConsumer, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, RebalanceEvent, TopicPartition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PARTITIONS: i32 = 4;
const RECORDS: usize = 200;

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

async fn broker_start() -> String {
    let address = free_address();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    // Long enough for both members' first JoinGroup to land in one generation, as in Kafka.
    config.groups.initial_rebalance_delay = Duration::from_millis(500);
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 11,
        cluster_hooks: Default::default(),
    };
    runtime::spawn(async move {
        broker::serve(config, context, std::future::pending())
            .await
            .expect("serves");
    });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            return address;
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

fn member(address: &str) -> GroupConsumer {
    let consumer = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::kafka_defaults()
    };
    let group = GroupConfig {
        session_timeout: Duration::from_secs(6),
        rebalance_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_millis(300),
        ..GroupConfig::kafka_defaults("g")
    };
    let mut member = GroupConsumer::new(ClientConfig::new([address]), consumer, group);
    member.subscribe(&["t".to_string()]);
    member
}

/// One poll and a commit of what it returned.
async fn round(member: &mut GroupConsumer, seen: &mut BTreeSet<String>) {
    let records = member
        .poll(Duration::from_millis(100))
        .await
        .expect("polls");
    seen.extend(
        records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()),
    );
    member.commit().await.expect("commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_a_topic_and_one_takes_over_when_the_other_leaves() {
    let address = broker_start().await;
    let mut admin = Admin::new(ClientConfig::new([address.as_str()]));
    admin
        .create_topic("t", PARTITIONS, 1, BTreeMap::new())
        .await
        .expect("creates");
    let producer = Producer::new(
        ClientConfig::new([address.as_str()]),
        ProducerConfig::kafka_defaults(),
    );
    let records = (0..RECORDS)
        .map(|i| {
            ProducerRecord::new(
                "t",
                Some(format!("k{i}").into()),
                Some(format!("v{i}").into()),
            )
        })
        .collect();
    assert!(producer.send_batch(records).await.iter().all(Result::is_ok));

    let (mut first, mut second) = (member(&address), member(&address));
    let (mut seen_first, mut seen_second) = (BTreeSet::new(), BTreeSet::new());
    // Both must poll for the rebalance barrier to fall; together they read everything.
    for _ in 0..300 {
        tokio::join!(
            round(&mut first, &mut seen_first),
            round(&mut second, &mut seen_second)
        );
        if seen_first.len() + seen_second.len() >= RECORDS {
            break;
        }
    }
    assert_eq!(seen_first.union(&seen_second).count(), RECORDS);
    assert!(
        !seen_first.is_empty() && !seen_second.is_empty(),
        "both read"
    );
    let (assigned_first, assigned_second) = (first.assignment(), second.assignment());
    assert_eq!(
        assigned_first.len() + assigned_second.len(),
        PARTITIONS as usize
    );
    assert!(
        assigned_first
            .iter()
            .all(|tp| !assigned_second.contains(tp)),
        "disjoint"
    );
    assert_eq!(
        first.generation().1,
        second.generation().1,
        "one generation"
    );

    second.close().await.expect("leaves");
    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        if first.assignment().len() == PARTITIONS as usize {
            break;
        }
        round(&mut first, &mut seen).await;
    }
    assert_eq!(first.assignment().len(), PARTITIONS as usize, "takes over");
    let events = first.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RebalanceEvent::Revoked(_))),
        "{events:?}"
    );
    first.commit().await.expect("commits");

    let description = admin.describe_group("g").await.expect("describes");
    assert_eq!(description.state, "Stable");
    assert_eq!(description.members.len(), 1);
    assert_eq!(description.members[0].assignment.len(), PARTITIONS as usize);
    let committed = admin.group_offsets("g", None).await.expect("fetches");
    let total: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(
        total, RECORDS as i64,
        "every record committed: {committed:?}"
    );
    let refused = admin
        .group_offsets_set("g", &BTreeMap::from([(TopicPartition::new("t", 0), 0)]))
        .await;
    assert!(refused.is_err(), "a live group's offsets cannot be reset");
    assert!(
        admin.delete_group("g").await.is_err(),
        "a live group cannot be deleted"
    );

    first.close().await.expect("leaves");
    let listed = admin.list_groups().await.expect("lists");
    assert!(listed.iter().any(|g| g.group_id == "g"));
    admin
        .group_offsets_set("g", &BTreeMap::from([(TopicPartition::new("t", 0), 0)]))
        .await
        .expect("an empty group's offsets can be reset");
    admin.delete_group("g").await.expect("deletes");
    assert!(admin
        .list_groups()
        .await
        .expect("lists")
        .iter()
        .all(|g| g.group_id != "g"));
}

async fn broker_open(disk: std::sync::Arc<runtime::MemDisk>) -> std::sync::Arc<broker::Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    common::broker_open(config, disk, 5).await
}

/// The durability promise: an acknowledged commit survives a power loss that tears or loses
/// every unsynced byte, because it is acknowledged only once fsynced, and replay brings it back.
#[tokio::test]
async fn acknowledged_commits_survive_a_power_loss() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    for seed in 0..8u64 {
        let disk = runtime::MemDisk::new();
        let broker = broker_open(disk.clone()).await;
        common::topic_create(&broker, "t", 2, &[]).await;
        let offset = 100 + seed as i64;
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(offset)])]);
        let response = match broker::handlers::offset_commit::handle(&broker, request, 8) {
            broker::handlers::Reply::Later(future) => future.await,
            broker::handlers::Reply::Now(response) => *response,
            broker::handlers::Reply::None => panic!("OffsetCommit is answered"),
        };
        let wire::ResponseKind::OffsetCommit(response) = response else {
            panic!("an OffsetCommit response");
        };
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
        drop(broker);
        let mut rng = runtime::rng::stream_rng(seed, runtime::rng::Stream::Disk, 0);
        disk.crash(runtime::disk::CrashOptions::Tear, &mut rng);
        let recovered = broker_open(disk).await;
        let committed = recovered.groups().read(|core| {
            core.group("g")
                .and_then(|group| group.offsets().values().next().map(|c| c.offset))
        });
        assert_eq!(committed, Some(offset), "seed {seed}");
    }
}
