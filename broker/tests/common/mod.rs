//! The real server in-process on a `MemDisk`, on a free loopback port, for integration tests.

use broker::{BrokerConfig, NodeContext};
use std::time::Duration;

/// Starts a broker with zero-config defaults changed by `configure`; returns its address.
#[allow(dead_code)] // Not every test file serves.
pub async fn broker_start(configure: impl FnOnce(&mut BrokerConfig)) -> String {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    configure(&mut config);
    let address = config.listen.clone();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 3,
        cluster_hooks: Default::default(),
    };
    runtime::spawn(async move {
        broker::serve(config, context, std::future::pending())
            .await
            .expect("serves")
    });
    for _ in 0..100 {
        // A probe connection that closes at once: it must not count against small limits later.
        if runtime::net::TcpStream::connect(&address).await.is_ok() {
            runtime::time::sleep(Duration::from_millis(20)).await;
            return address;
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

/// Creates a topic as a client would: CreateTopics through the handler, which asks the
/// controller (the lone voter) and reconciles the local logs before it answers.
#[allow(dead_code)] // Not every test file creates topics this way.
pub async fn topic_create(
    broker: &std::sync::Arc<broker::Broker>,
    name: &str,
    partition_count: i32,
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let configs = configs
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))
        })
        .collect();
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(partition_count)
        .with_replication_factor(1)
        .with_configs(configs);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000);
    let response = broker::handlers::admin::create_topics(broker, request, 5).await;
    let wire::ResponseKind::CreateTopics(response) = response else {
        panic!("CreateTopics answered {response:?}");
    };
    let result = &response.topics[0];
    assert_eq!(
        result.error_code, 0,
        "create {name}: {:?}",
        result.error_message
    );
}

/// Opens a broker on `disk` (a lone voter), as `serve` does before it binds.
#[allow(dead_code)] // Not every test file opens brokers directly.
pub async fn broker_open(
    config: broker::BrokerConfig,
    disk: std::sync::Arc<runtime::MemDisk>,
    seed: u64,
) -> std::sync::Arc<broker::Broker> {
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk,
        seed,
        cluster_hooks: Default::default(),
    };
    broker::Broker::open(config, context).await.expect("opens")
}

/// A broker that runs the Raft quorum on a controller listener of its own (`--voters
/// 1@127.0.0.1:PORT`, a free port), with the fast test timing, opened on `disk`: registered
/// and unfenced when it returns. `seed` decides the node's incarnation id (a restart needs a
/// new one).
#[allow(dead_code)] // Only the cluster-mode tests need a controller listener.
pub async fn broker_voter_open(
    mut config: broker::BrokerConfig,
    disk: std::sync::Arc<runtime::MemDisk>,
    seed: u64,
) -> std::sync::Arc<broker::Broker> {
    let port = {
        let listener = runtime::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        listener.local_addr().unwrap().port()
    };
    config.voters = std::collections::BTreeMap::from([(1, format!("127.0.0.1:{port}"))]);
    broker::config::validate(&config).expect("a valid cluster config");
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk,
        seed,
        cluster_hooks: broker::cluster_mode::ClusterHooks {
            timing: Some(cluster::node::ClusterTiming::fast()),
            ..Default::default()
        },
    };
    broker::Broker::open(config, context).await.expect("opens")
}
