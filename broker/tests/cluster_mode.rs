//! The broker in cluster mode over a real cluster node (a lone voter on loopback, `MemDisk`):
//! CreateTopics through the controller, then the shapes of Metadata and DescribeCluster as the
//! image gives them, and the data plane's leadership gate.

mod common;

use broker::handlers::{self, Reply};
use broker::{Broker, BrokerConfig, NodeContext};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::fmt::Write;
use std::sync::Arc;
use wire::{RequestKind, ResponseKind};

async fn broker_clustered() -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    config.listen = "127.0.0.1:19092".into();
    config.rack = Some("rack-a".into());
    config.cluster_id = "test-cluster".into();
    common::broker_voter_open(config, runtime::MemDisk::new(), 5).await
}

async fn call(
    broker: &Arc<Broker>,
    api_key: wire::ApiKey,
    body: RequestKind,
    version: i16,
) -> ResponseKind {
    let header = RequestHeader::default().with_request_api_version(version);
    let frame = wire::RequestFrame {
        api_key,
        header,
        api_version: version,
        body,
    };
    let response = match handlers::handle(broker, frame) {
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
        Reply::None => panic!("no reply"),
    };
    // Fields a version lacks must be left at their defaults, or the response does not encode.
    let mut buffer = bytes::BytesMut::new();
    wire::codec::response_encode(&mut buffer, api_key, version, 1, &response)
        .unwrap_or_else(|error| panic!("{api_key:?} v{version} does not encode: {error}"));
    response
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn creatable(topic: &str, partitions: i32, replication_factor: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
}

/// Metadata without its random parts (topic ids), one line per broker, topic and partition.
fn metadata_render(response: &MetadataResponse) -> String {
    let mut out = String::new();
    let cluster = response.cluster_id.as_deref().unwrap_or("-");
    writeln!(
        out,
        "cluster {cluster} controller {}",
        response.controller_id.0
    )
    .unwrap();
    for broker in &response.brokers {
        let rack = broker.rack.as_deref().unwrap_or("-");
        let (id, host, port) = (broker.node_id.0, broker.host.as_str(), broker.port);
        writeln!(out, "broker {id} {host}:{port} rack {rack}").unwrap();
    }
    for topic in &response.topics {
        let topic_name = topic.name.as_ref().map_or("-", |name| name.0.as_str());
        let has_id = !topic.topic_id.is_nil();
        let (error, internal) = (topic.error_code, topic.is_internal);
        writeln!(
            out,
            "topic {topic_name} error {error} id {has_id} internal {internal}"
        )
        .unwrap();
        for p in &topic.partitions {
            let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<_>>();
            writeln!(
                out,
                "  {} error {} leader {} epoch {} replicas {:?} isr {:?} offline {:?}",
                p.partition_index,
                p.error_code,
                p.leader_id.0,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                ids(&p.offline_replicas)
            )
            .unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_describe_cluster_answer_from_the_image() {
    let broker = broker_clustered().await;
    let request = CreateTopicsRequest::default().with_topics(vec![
        creatable("orders", 2, 1),
        creatable("wide", 1, 2),
        creatable("__consumer_offsets", 1, 1),
    ]);
    let ResponseKind::CreateTopics(created) = call(
        &broker,
        wire::ApiKey::CreateTopics,
        RequestKind::CreateTopics(request),
        7,
    )
    .await
    else {
        panic!("not a CreateTopics response");
    };
    let outcomes: Vec<(String, i16, i32)> = created
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code, t.num_partitions))
        .collect();
    insta::assert_debug_snapshot!("create_topics_through_the_controller", outcomes);

    for version in [0, 1, 5, 7, 10, 12] {
        let request = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("orders"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("nope"))),
        ]));
        let ResponseKind::Metadata(metadata) = call(
            &broker,
            wire::ApiKey::Metadata,
            RequestKind::Metadata(request),
            version,
        )
        .await
        else {
            panic!("not a Metadata response");
        };
        if version == 1 || version == 12 {
            let snapshot = format!("metadata_v{version}");
            insta::assert_snapshot!(snapshot, metadata_render(&metadata));
        }
    }

    for version in [0, 1] {
        let request = RequestKind::DescribeCluster(DescribeClusterRequest::default());
        call(&broker, wire::ApiKey::DescribeCluster, request, version).await;
    }
    let request = DescribeClusterRequest::default()
        .with_endpoint_type(1)
        .with_include_fenced_brokers(true);
    let ResponseKind::DescribeCluster(described) = call(
        &broker,
        wire::ApiKey::DescribeCluster,
        RequestKind::DescribeCluster(request),
        2,
    )
    .await
    else {
        panic!("not a DescribeCluster response");
    };
    let brokers: Vec<String> = described
        .brokers
        .iter()
        .map(|b| {
            let rack = b.rack.as_deref().unwrap_or("-");
            format!(
                "{} {}:{} rack {rack} fenced {}",
                b.broker_id.0,
                b.host.as_str(),
                b.port,
                b.is_fenced
            )
        })
        .collect();
    let summary = (
        described.error_code,
        described.cluster_id.to_string(),
        described.controller_id.0,
        brokers,
    );
    insta::assert_debug_snapshot!("describe_cluster_v2", summary);
}

fn quorum_request(partitions: &[i32]) -> RequestKind {
    let topic = describe_quorum_request::TopicData::default()
        .with_topic_name(name("__cluster_metadata"))
        .with_partitions(
            partitions
                .iter()
                .map(|index| {
                    describe_quorum_request::PartitionData::default().with_partition_index(*index)
                })
                .collect(),
        );
    RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![topic]))
}

/// DescribeQuorum on a lone voter: it leads, the leader epoch is the Raft term, the high
/// watermark the commit index, and its own log end is at or past it; a partition other than
/// `__cluster_metadata-0` is unknown. A zero-config node is a lone voter too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_quorum_answers_the_raft_term_and_offsets() {
    let broker = broker_clustered().await;
    let status = broker.cluster().status();
    for version in 0..=2 {
        let ResponseKind::DescribeQuorum(response) = call(
            &broker,
            wire::ApiKey::DescribeQuorum,
            quorum_request(&[0, 1]),
            version,
        )
        .await
        else {
            panic!("not a DescribeQuorum response");
        };
        assert_eq!(response.error_code, 0);
        let partitions = &response.topics[0].partitions;
        let quorum = &partitions[0];
        assert_eq!(quorum.error_code, 0);
        assert_eq!(quorum.leader_id.0, 1);
        assert!(quorum.leader_epoch >= 1);
        assert!(quorum.leader_epoch as u64 >= status.term);
        assert!(quorum.high_watermark >= status.commit as i64);
        assert_eq!(quorum.current_voters.len(), 1);
        let voter = &quorum.current_voters[0];
        assert_eq!(voter.replica_id.0, 1);
        assert!(voter.log_end_offset >= quorum.high_watermark, "{voter:?}");
        assert_eq!(
            partitions[1].error_code,
            kafka_protocol::ResponseError::UnknownTopicOrPartition.code()
        );
        let listeners = response.nodes.iter().map(|node| node.listeners.len());
        assert_eq!(listeners.sum::<usize>(), usize::from(version >= 2));
    }

    // Zero config: a lone voter with no controller listener describes itself, listing no
    // listener.
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 7,
        cluster_hooks: Default::default(),
    };
    let single = Broker::open(config, context).await.expect("opens");
    let ResponseKind::DescribeQuorum(response) = call(
        &single,
        wire::ApiKey::DescribeQuorum,
        quorum_request(&[0]),
        2,
    )
    .await
    else {
        panic!("not a DescribeQuorum response");
    };
    let quorum = &response.topics[0].partitions[0];
    assert_eq!(quorum.error_code, 0);
    assert_eq!(quorum.leader_id.0, 1);
    assert!(quorum.leader_epoch >= 1);
    assert_eq!(quorum.current_voters.len(), 1);
    assert!(response.nodes.iter().all(|node| node.listeners.is_empty()));
}
