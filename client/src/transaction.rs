//! A transactional producer's requests: to its transaction coordinator (InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn) and to a group's coordinator (TxnOffsetCommit),
//! each retried as Kafka's Java `TransactionManager` does: CONCURRENT_TRANSACTIONS and
//! COORDINATOR_LOAD_IN_PROGRESS after a backoff, a lost coordinator (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, a broken connection, a timeout) after looking it up again, until
//! a deadline. Any other error is the caller's to classify (`ClientError::is_transaction_fatal`).
//! `Producer` drives these from its task; see `producer.rs` for the state machine.

use crate::cluster::{Cluster, Target};
use crate::error::ClientError;
use crate::group::coordinator_find_keyed;
use crate::metadata::TopicPartition;
use runtime::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use wire::protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use wire::protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, RequestKind, ResponseKind, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use wire::protocol::protocol::StrBytes;

/// Kafka's `CoordinatorType.TRANSACTION`.
pub const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's `CoordinatorType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;

/// Where a coordinator request goes, and the node found for it (cached).
#[derive(Debug, Clone)]
pub struct CoordinatorKey {
    pub key: String,
    pub key_type: i8,
    pub node: Option<i32>,
}

impl CoordinatorKey {
    pub fn transaction(transactional_id: &str) -> CoordinatorKey {
        CoordinatorKey {
            key: transactional_id.to_string(),
            key_type: KEY_TYPE_TRANSACTION,
            node: None,
        }
    }

    pub fn group(group_id: &str) -> CoordinatorKey {
        CoordinatorKey {
            key: group_id.to_string(),
            key_type: KEY_TYPE_GROUP,
            node: None,
        }
    }
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Sends `body` to the coordinator of `key` until it answers with something other than "retry"
/// or `deadline` passes. `code` reads the response's (first) error code.
async fn coordinator_call(
    cluster: &mut Cluster,
    key: &mut CoordinatorKey,
    body: RequestKind,
    code: fn(&ResponseKind) -> i16,
    deadline: Instant,
    what: &str,
) -> Result<ResponseKind, ClientError> {
    loop {
        let attempt: Result<ResponseKind, ClientError> = async {
            let node = match key.node {
                Some(node) => node,
                None => {
                    let node = coordinator_find_keyed(cluster, &key.key, key.key_type).await?;
                    key.node = Some(node);
                    node
                }
            };
            let response = cluster.request(Target::Node(node), body.clone()).await?;
            ClientError::from_code(code(&response), || format!("{what} for {}", key.key))?;
            Ok(response)
        }
        .await;
        let error = match attempt {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let coordinator_lost = error.is_connection_fatal()
            || matches!(
                error.kafka_error(),
                Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)
            );
        let wait = coordinator_lost
            || error.is_retriable()
            || error.kafka_error() == Some(ResponseError::ConcurrentTransactions);
        if !wait || cluster.config().clock.now() >= deadline {
            return Err(error);
        }
        if coordinator_lost {
            key.node = None;
        }
        tracing::debug!(what, %error, "transactional request refused; retrying");
        cluster.backoff().await;
    }
}

/// InitProducerId with a transactional id: the producer id and epoch to use from now on.
/// `expected` (KIP-360) names the current ones, to bump the epoch after an abort.
pub async fn init_producer_id(
    cluster: &mut Cluster,
    key: &mut CoordinatorKey,
    timeout: Duration,
    expected: Option<(i64, i16)>,
    deadline: Instant,
) -> Result<(i64, i16), ClientError> {
    let (producer_id, epoch) = expected.unwrap_or((-1, -1));
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(str_bytes(&key.key))))
        .with_transaction_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    let code = |response: &ResponseKind| match response {
        ResponseKind::InitProducerId(response) => response.error_code,
        _ => 0,
    };
    let body = RequestKind::InitProducerId(request);
    match coordinator_call(cluster, key, body, code, deadline, "InitProducerId").await? {
        ResponseKind::InitProducerId(response) => {
            Ok((response.producer_id.0, response.producer_epoch))
        }
        other => unreachable!("an InitProducerId request is answered by {other:?}"),
    }
}

/// AddPartitionsToTxn (v0-3 form): the first partition error, if any, is the result.
pub async fn add_partitions(
    cluster: &mut Cluster,
    key: &mut CoordinatorKey,
    (producer_id, epoch): (i64, i16),
    partitions: &[TopicPartition],
    deadline: Instant,
) -> Result<(), ClientError> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        topics
            .entry(&partition.topic)
            .or_default()
            .push(partition.partition);
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(str_bytes(&key.key)))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    // OPERATION_NOT_ATTEMPTED marks the partitions held back by another's error: report that one.
    let code = |response: &ResponseKind| match response {
        ResponseKind::AddPartitionsToTxn(response) => {
            let codes = response
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|topic| topic.results_by_partition.iter())
                .map(|partition| partition.partition_error_code);
            let not_attempted = ResponseError::OperationNotAttempted.code();
            let mut first = 0;
            for code in codes.filter(|code| *code != 0) {
                if first == 0 || first == not_attempted {
                    first = code;
                }
            }
            if first == 0 {
                response.error_code
            } else {
                first
            }
        }
        _ => 0,
    };
    let body = RequestKind::AddPartitionsToTxn(request);
    coordinator_call(cluster, key, body, code, deadline, "AddPartitionsToTxn").await?;
    Ok(())
}

pub async fn add_offsets(
    cluster: &mut Cluster,
    key: &mut CoordinatorKey,
    (producer_id, epoch): (i64, i16),
    group_id: &str,
    deadline: Instant,
) -> Result<(), ClientError> {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(&key.key)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(str_bytes(group_id)));
    let code = |response: &ResponseKind| match response {
        ResponseKind::AddOffsetsToTxn(response) => response.error_code,
        _ => 0,
    };
    let body = RequestKind::AddOffsetsToTxn(request);
    coordinator_call(cluster, key, body, code, deadline, "AddOffsetsToTxn").await?;
    Ok(())
}

/// TxnOffsetCommit to the group's coordinator (`group`): the offsets become the group's committed
/// offsets when the transaction commits.
pub async fn txn_offset_commit(
    cluster: &mut Cluster,
    group: &mut CoordinatorKey,
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    offsets: &BTreeMap<TopicPartition, i64>,
    deadline: Instant,
) -> Result<(), ClientError> {
    let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
    for (partition, offset) in offsets {
        topics.entry(&partition.topic).or_default().push(
            TxnOffsetCommitRequestPartition::default()
                .with_partition_index(partition.partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
        .with_group_id(GroupId(str_bytes(&group.key)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_member_id(StrBytes::default())
        .with_topics(topics);
    let code = |response: &ResponseKind| match response {
        ResponseKind::TxnOffsetCommit(response) => response
            .topics
            .iter()
            .flat_map(|topic| topic.partitions.iter().map(|p| p.error_code))
            .find(|code| *code != 0)
            .unwrap_or(0),
        _ => 0,
    };
    let body = RequestKind::TxnOffsetCommit(request);
    coordinator_call(cluster, group, body, code, deadline, "TxnOffsetCommit").await?;
    Ok(())
}

pub async fn end_txn(
    cluster: &mut Cluster,
    key: &mut CoordinatorKey,
    (producer_id, epoch): (i64, i16),
    commit: bool,
    deadline: Instant,
) -> Result<(), ClientError> {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(&key.key)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let code = |response: &ResponseKind| match response {
        ResponseKind::EndTxn(response) => response.error_code,
        _ => 0,
    };
    let body = RequestKind::EndTxn(request);
    coordinator_call(cluster, key, body, code, deadline, "EndTxn").await?;
    Ok(())
}
