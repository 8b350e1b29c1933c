//! Issue 8: a broker killed on a full disk must start again and serve what it acknowledged.
//! The real server runs in-process on a `MemDisk`; the disk fills, the process "dies" (its task
//! is aborted and the disk loses unsynced state). Every start writes the metadata log (its
//! recovery rewrite, the broker's registration), so a start on the still-full disk fails with
//! the disk's error and changes nothing; once space is freed the broker starts and serves all
//! acknowledged records.

use broker::{BrokerConfig, NodeContext};
use bytes::Bytes;
use client::{Admin, ClientConfig, Connection, Consumer, ConsumerConfig, Offset, TopicPartition};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use runtime::MemDisk;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::{RequestKind, ResponseKind};

const RECORDS: usize = 12;
/// With the 1 KiB `segment.bytes` below, three of these records fill a segment.
const VALUE_PADDING_BYTES: usize = 250;

fn value(index: usize) -> String {
    format!("v{index}-{}", "x".repeat(VALUE_PADDING_BYTES))
}

/// Starts a broker on `disk` and returns its address and task (abort it to "kill" it). Each
/// start is a new process: a new `seed`, so a new incarnation registers at its new address.
async fn broker_start(disk: Arc<MemDisk>, seed: u64) -> (String, runtime::JoinHandle<()>) {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk,
        seed,
        cluster_hooks: Default::default(),
    };
    let task = runtime::spawn(async move {
        broker::serve(config, context, std::future::pending())
            .await
            .expect("the broker opens its data dir and serves")
    });
    for _ in 0..250 {
        if runtime::net::TcpStream::connect(&address).await.is_ok() {
            return (address, task);
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

/// Produces one record with acks=all and returns the partition's error code.
async fn produce_one(connection: &mut Connection, value: String) -> i16 {
    let batch = batch_encode(
        &[RecordSpec {
            value: Some(Bytes::from(value)),
            timestamp: 1_700_000_000_000,
            ..Default::default()
        }],
        Compression::None,
    );
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(batch.bytes().clone()));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_partition_data(vec![partition]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![topic]);
    match connection
        .request(RequestKind::Produce(request))
        .await
        .unwrap()
    {
        ResponseKind::Produce(response) => response.responses[0].partition_responses[0].error_code,
        other => panic!("unexpected response {other:?}"),
    }
}

async fn values_read(address: &str) -> Vec<Option<Bytes>> {
    let mut consumer = Consumer::new(
        ClientConfig::new([address.to_string()]),
        ConsumerConfig::kafka_defaults(),
    );
    consumer
        .assign(vec![(TopicPartition::new("t", 0), Offset::Earliest)])
        .await
        .unwrap();
    let mut values = Vec::new();
    for _ in 0..100 {
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        values.extend(records.into_iter().map(|record| record.value));
        if values.len() >= RECORDS {
            break;
        }
    }
    values
}

#[tokio::test]
async fn a_broker_killed_on_a_full_disk_restarts_once_there_is_room_and_serves_reads() {
    let disk = MemDisk::new();
    let (address, task) = broker_start(disk.clone(), 8).await;
    // Small segments, so the records span several and recovery has indexes to rebuild.
    let configs = BTreeMap::from([("segment.bytes".to_string(), "1024".to_string())]);
    Admin::new(ClientConfig::new([address.clone()]))
        .create_topic("t", 1, 1, configs)
        .await
        .unwrap();
    let client_config = ClientConfig::new([address.clone()]);
    let mut connection = Connection::connect(&address, &client_config).await.unwrap();
    for index in 0..RECORDS {
        assert_eq!(produce_one(&mut connection, value(index)).await, 0);
    }
    disk.full_set(true);
    let refused = produce_one(&mut connection, "refused".into()).await;
    assert_ne!(refused, 0, "a full disk refuses the append");
    drop(connection);
    task.abort();
    let _ = task.await;
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(8),
    );

    let mut config = BrokerConfig::zero_config();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: disk.clone(),
        seed: 9,
        cluster_hooks: Default::default(),
    };
    let start = broker::serve(config, context, std::future::pending());
    let refused = runtime::time::timeout(Duration::from_secs(20), start)
        .await
        .expect("a start on a full disk ends");
    let full = matches!(&refused, Err(broker::ServeError::Cluster(cluster::node::ClusterError::Io(error)))
        if error.kind() == std::io::ErrorKind::StorageFull);
    assert!(
        full,
        "the start fails with the full disk's error, not {refused:?}"
    );

    disk.full_set(false);
    let (address, _task) = broker_start(disk.clone(), 10).await;
    let expected: Vec<Option<Bytes>> = (0..RECORDS)
        .map(|index| Some(Bytes::from(value(index))))
        .collect();
    assert_eq!(values_read(&address).await, expected);
    let client_config = ClientConfig::new([address.clone()]);
    let mut connection = Connection::connect(&address, &client_config).await.unwrap();
    let appended = produce_one(&mut connection, "room again".into()).await;
    assert_eq!(appended, 0, "appends succeed once there is room");
}

/// A metadata log write that fails (here: the disk is full when CreateTopics
/// appends its records) stops the cluster node, which then applies nothing more. The broker must
/// not go on serving a frozen image: `serve` returns `ClusterFailed`, so the process exits and a
/// supervisor restarts it from disk, as Kafka's does.
#[tokio::test]
async fn a_failed_metadata_log_write_ends_the_cluster_broker() {
    let disk = MemDisk::new();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let address = free();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    config.voters = BTreeMap::from([(1, free())]);
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: disk.clone(),
        seed: 9,
        cluster_hooks: Default::default(),
    };
    let task = runtime::spawn(broker::serve(config, context, std::future::pending()));
    let mut admin = Admin::new(ClientConfig::new([address.clone()]));
    let mut created = false;
    for _ in 0..250 {
        if admin
            .create_topic("before", 1, 1, BTreeMap::new())
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        runtime::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(created, "the one-voter cluster serves CreateTopics");
    disk.full_set(true);
    let _ = admin.create_topic("after", 1, 1, BTreeMap::new()).await;
    let served = runtime::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the broker stops once its metadata log failed")
        .expect("serve does not panic");
    assert!(
        matches!(served, Err(broker::ServeError::ClusterFailed)),
        "serve ends with ClusterFailed, not {served:?}"
    );
}
