//! Transactions against the real server (in-process, on a `MemDisk`), driven by the project's
//! transactional producer and read_committed consumer: commit and abort, fencing of an old
//! producer by a new InitProducerId, the timeout abort, transactional offsets visible only after
//! the commit, a restart in PrepareCommit that finishes the commit, and Describe/List.

use broker::txn::records::{record_encode, TxnRecord};
use broker::txn::{TxnMetadata, TxnState, TRANSACTION_STATE_TOPIC};
use broker::{BrokerConfig, NodeContext};
use bytes::Bytes;
use client::{
    Admin, ClientConfig, ClientError, Connection, Consumer, ConsumerConfig, IsolationLevel, Offset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, GroupId, ListTransactionsRequest, OffsetFetchRequest, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::{RequestKind, ResponseKind};

mod common;

fn client_config(address: &str) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(20),
        ..ClientConfig::new([address])
    }
}

fn transactional(address: &str, transactional_id: &str, timeout: Duration) -> Producer {
    let config = ProducerConfig {
        transactional_id: Some(transactional_id.to_string()),
        transaction_timeout: timeout,
        linger: Duration::ZERO,
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::kafka_defaults()
    };
    Producer::new(client_config(address), config)
}

fn record(partition: i32, value: &str) -> ProducerRecord {
    let mut record = ProducerRecord::new("t", None, Some(Bytes::from(value.to_string())));
    record.partition = Some(partition);
    record
}

async fn topic_create(address: &str, partitions: i32) {
    Admin::new(client_config(address))
        .create_topic("t", partitions, 1, BTreeMap::new())
        .await
        .unwrap();
}

/// Every value a read_committed consumer reads from t-0..t-(partitions-1) up to `end` records
/// or until nothing more comes, in partition then offset order.
async fn committed_values(address: &str, partitions: i32, expected: usize) -> Vec<String> {
    let config = ConsumerConfig {
        isolation_level: IsolationLevel::ReadCommitted,
        ..ConsumerConfig::kafka_defaults()
    };
    let mut consumer = Consumer::new(client_config(address), config);
    let assignment = (0..partitions)
        .map(|partition| (TopicPartition::new("t", partition), Offset::Earliest))
        .collect();
    consumer.assign(assignment).await.unwrap();
    let mut values: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut idle = 0;
    while idle < 3 {
        let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
        if records.is_empty() {
            if values.len() >= expected {
                idle += 1;
            }
            continue;
        }
        for record in records {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap()).to_string();
            values.insert((record.partition, record.offset), value);
        }
    }
    values.into_values().collect()
}

async fn describe(address: &str, transactional_id: &str) -> (i16, String, i64, i16, usize) {
    let mut connection = Connection::connect(address, &client_config(address))
        .await
        .unwrap();
    let request =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
            StrBytes::from_string(transactional_id.to_string()),
        )]);
    let ResponseKind::DescribeTransactions(response) = connection
        .request(RequestKind::DescribeTransactions(request))
        .await
        .unwrap()
    else {
        panic!("not a DescribeTransactions response");
    };
    let state = &response.transaction_states[0];
    let partitions = state.topics.iter().map(|t| t.partitions.len()).sum();
    (
        state.error_code,
        state.transaction_state.to_string(),
        state.producer_id.0,
        state.producer_epoch,
        partitions,
    )
}

/// Waits until the transaction of `transactional_id` reached `state` (markers are written after
/// EndTxn is answered).
async fn settled(address: &str, transactional_id: &str, state: &str) -> (i64, i16) {
    for _ in 0..200 {
        let (_, found, producer_id, epoch, _) = describe(address, transactional_id).await;
        if found == state {
            return (producer_id, epoch);
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{transactional_id} never reached {state}");
}

#[tokio::test]
async fn committed_records_are_read_and_aborted_ones_are_not() {
    let address = common::broker_start(|_| {}).await;
    topic_create(&address, 2).await;
    let producer = transactional(&address, "tx", Duration::from_secs(60));
    producer.init_transactions().await.unwrap();

    producer.begin_transaction().await.unwrap();
    producer.send(record(0, "aborted-0")).await.unwrap();
    producer.send(record(1, "aborted-1")).await.unwrap();
    producer.abort_transaction().await.unwrap();
    settled(&address, "tx", "CompleteAbort").await;

    producer.begin_transaction().await.unwrap();
    producer.send(record(0, "committed-0")).await.unwrap();
    producer.send(record(1, "committed-1")).await.unwrap();
    let (_, state, _, _, partitions) = describe(&address, "tx").await;
    assert_eq!((state.as_str(), partitions), ("Ongoing", 2));
    producer.commit_transaction().await.unwrap();
    settled(&address, "tx", "CompleteCommit").await;

    // Sends outside a transaction are refused.
    let refused = producer.send(record(0, "outside")).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::TransactionState { .. }),
        "{refused}"
    );

    let values = committed_values(&address, 2, 2).await;
    assert_eq!(values, ["committed-0", "committed-1"]);
}

#[tokio::test]
async fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let address = common::broker_start(|_| {}).await;
    topic_create(&address, 1).await;
    let old = transactional(&address, "tx", Duration::from_secs(60));
    old.init_transactions().await.unwrap();
    old.begin_transaction().await.unwrap();
    old.send(record(0, "zombie")).await.unwrap();

    let new = transactional(&address, "tx", Duration::from_secs(60));
    new.init_transactions().await.unwrap();
    let error = old.commit_transaction().await.unwrap_err();
    assert!(error.is_transaction_fatal(), "{error}");
    // Fatal: every later call fails too.
    assert!(old
        .begin_transaction()
        .await
        .unwrap_err()
        .is_transaction_fatal());

    new.begin_transaction().await.unwrap();
    new.send(record(0, "fresh")).await.unwrap();
    new.commit_transaction().await.unwrap();
    let (_, epoch) = settled(&address, "tx", "CompleteCommit").await;
    assert_eq!(
        epoch, 2,
        "the fence bumped once, the new producer's init once more"
    );
    assert_eq!(committed_values(&address, 1, 1).await, ["fresh"]);
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted() {
    let address = common::broker_start(|_| {}).await;
    topic_create(&address, 1).await;
    let producer = transactional(&address, "slow", Duration::from_millis(300));
    producer.init_transactions().await.unwrap();
    producer.begin_transaction().await.unwrap();
    producer.send(record(0, "late")).await.unwrap();
    let (_, epoch) = settled(&address, "slow", "CompleteAbort").await;
    assert_eq!(epoch, 1, "the timeout abort bumps the epoch");
    let error = producer.commit_transaction().await.unwrap_err();
    assert!(error.is_transaction_fatal(), "{error}");

    let next = transactional(&address, "slow", Duration::from_secs(60));
    next.init_transactions().await.unwrap();
    next.begin_transaction().await.unwrap();
    next.send(record(0, "on-time")).await.unwrap();
    next.commit_transaction().await.unwrap();
    assert_eq!(committed_values(&address, 1, 1).await, ["on-time"]);
}

/// OffsetFetch v7 for group `g`, partition t-0: (offset, error code).
async fn offset_fetched(address: &str, require_stable: bool) -> (i64, i16) {
    let mut connection = Connection::connect(address, &client_config(address))
        .await
        .unwrap();
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_indexes(vec![0])]))
        .with_require_stable(require_stable);
    let ResponseKind::OffsetFetch(response) = connection
        .request(RequestKind::OffsetFetch(request))
        .await
        .unwrap()
    else {
        panic!("not an OffsetFetch response");
    };
    let partition = &response.topics[0].partitions[0];
    (partition.committed_offset, partition.error_code)
}

#[tokio::test]
async fn transactional_offsets_are_visible_only_after_the_commit() {
    let address = common::broker_start(|_| {}).await;
    topic_create(&address, 1).await;
    let producer = transactional(&address, "eos", Duration::from_secs(60));
    producer.init_transactions().await.unwrap();
    let offsets = |offset| BTreeMap::from([(TopicPartition::new("t", 0), offset)]);

    producer.begin_transaction().await.unwrap();
    producer.send(record(0, "out")).await.unwrap();
    producer
        .send_offsets_to_transaction("g", &offsets(5))
        .await
        .unwrap();
    assert_eq!(offset_fetched(&address, false).await, (-1, 0));
    let unstable = ResponseError::UnstableOffsetCommit.code();
    assert_eq!(offset_fetched(&address, true).await, (-1, unstable));
    producer.commit_transaction().await.unwrap();
    settled(&address, "eos", "CompleteCommit").await;
    assert_eq!(offset_fetched(&address, true).await, (5, 0));

    producer.begin_transaction().await.unwrap();
    producer
        .send_offsets_to_transaction("g", &offsets(9))
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    settled(&address, "eos", "CompleteAbort").await;
    assert_eq!(
        offset_fetched(&address, true).await,
        (5, 0),
        "aborted offsets are dropped"
    );
}

#[tokio::test]
async fn describe_and_list_transactions() {
    let address = common::broker_start(|_| {}).await;
    topic_create(&address, 1).await;
    let a = transactional(&address, "a", Duration::from_secs(60));
    a.init_transactions().await.unwrap();
    a.begin_transaction().await.unwrap();
    a.send(record(0, "x")).await.unwrap();
    let b = transactional(&address, "b", Duration::from_secs(60));
    b.init_transactions().await.unwrap();

    let (error, state, a_id, epoch, partitions) = describe(&address, "a").await;
    assert_eq!(
        (error, state.as_str(), epoch, partitions),
        (0, "Ongoing", 0, 1)
    );
    let (error, ..) = describe(&address, "nobody").await;
    assert_eq!(error, ResponseError::TransactionalIdNotFound.code());

    let mut connection = Connection::connect(&address, &client_config(&address))
        .await
        .unwrap();
    let all = list(&mut connection, ListTransactionsRequest::default()).await;
    assert_eq!(all.0, ["a:Ongoing", "b:Empty"]);
    let ongoing = list(
        &mut connection,
        ListTransactionsRequest::default().with_state_filters(vec![
            StrBytes::from_static_str("Ongoing"),
            StrBytes::from_static_str("Bogus"),
        ]),
    )
    .await;
    assert_eq!(
        ongoing,
        (vec!["a:Ongoing".to_string()], vec!["Bogus".to_string()])
    );
    let by_producer = list(
        &mut connection,
        ListTransactionsRequest::default()
            .with_producer_id_filters(vec![kafka_protocol::messages::ProducerId(a_id)]),
    )
    .await;
    assert_eq!(by_producer.0, ["a:Ongoing"]);
}

/// ListTransactions: "id:state" per transaction, and the unknown state filters.
async fn list(
    connection: &mut Connection,
    request: ListTransactionsRequest,
) -> (Vec<String>, Vec<String>) {
    let ResponseKind::ListTransactions(response) = connection
        .request(RequestKind::ListTransactions(request))
        .await
        .unwrap()
    else {
        panic!("not a ListTransactions response");
    };
    let listed = response
        .transaction_states
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s.transactional_id.as_str(),
                s.transaction_state.as_str()
            )
        })
        .collect();
    let unknown = response
        .unknown_state_filters
        .iter()
        .map(|s| s.to_string())
        .collect();
    (listed, unknown)
}

/// A broker on `disk` that stops when `stop` fires; the returned handle ends with it.
async fn broker_on(
    disk: Arc<runtime::MemDisk>,
    address: &str,
) -> (runtime::sync::oneshot::Sender<()>, runtime::JoinHandle<()>) {
    let mut config = BrokerConfig::zero_config();
    config.listen = address.to_string();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk,
        seed: 3,
        cluster_hooks: Default::default(),
    };
    let (stop, stopped) = runtime::sync::oneshot::channel::<()>();
    let served = runtime::spawn(async move {
        broker::serve(config, context, async {
            let _ = stopped.await;
        })
        .await
        .expect("serves")
    });
    for _ in 0..100 {
        if runtime::net::TcpStream::connect(address).await.is_ok() {
            return (stop, served);
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

#[tokio::test]
async fn a_restart_in_prepare_commit_finishes_the_commit() {
    let disk = runtime::MemDisk::new();
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (stop, served) = broker_on(disk.clone(), &address).await;
    topic_create(&address, 2).await;
    let producer = transactional(&address, "tx", Duration::from_secs(60));
    producer.init_transactions().await.unwrap();
    producer.begin_transaction().await.unwrap();
    producer.send(record(0, "a")).await.unwrap();
    producer.send(record(1, "b")).await.unwrap();
    let (_, state, producer_id, epoch, _) = describe(&address, "tx").await;
    assert_eq!(state, "Ongoing");
    drop(producer);
    stop.send(()).unwrap();
    served.await.unwrap();

    // The crash this stands for: PrepareCommit durable, then the process died before any
    // marker went out. Its record is appended as the coordinator would have.
    {
        let topics =
            broker::topics::Topics::open(disk.clone(), "data".into(), 0, None).expect("opens");
        let partitions = topics.get(TRANSACTION_STATE_TOPIC).unwrap().partition_count;
        let index = broker::group::coordinator::partition_for("tx", partitions);
        let record = TxnRecord {
            transactional_id: "tx".to_string(),
            metadata: Some(TxnMetadata {
                producer_id,
                last_producer_id: -1,
                epoch,
                last_epoch: -1,
                timeout: Duration::from_secs(60),
                state: TxnState::PrepareCommit,
                partitions: [0, 1]
                    .map(|partition| broker::group::TopicPartition {
                        topic: "t".to_string(),
                        partition,
                    })
                    .into(),
                last_update_ms: 0,
                start_ms: 0,
            }),
        };
        let (key, value) = record_encode(&record);
        let spec = RecordSpec {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp: 0,
        };
        let partition = topics.partition(TRANSACTION_STATE_TOPIC, index).unwrap();
        let mut log = partition.log();
        log.append(batch_encode(&[spec], Compression::None), 0, 0)
            .unwrap();
        log.flush().unwrap();
    }

    let (_stop, _served) = broker_on(disk, &address).await;
    settled(&address, "tx", "CompleteCommit").await;
    assert_eq!(committed_values(&address, 2, 2).await, ["a", "b"]);
}
