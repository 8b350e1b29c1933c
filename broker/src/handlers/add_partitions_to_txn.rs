//! AddPartitionsToTxn (API 24). v0-3: one transaction, from its producer. v4+ (KIP-890) is the
//! brokers' batched form: several transactions, each answered on its own, and `verify_only`,
//! which checks that the partitions are already in the transaction without adding them.
//!
//! Per transaction, every partition must exist and not be internal; if one fails, that one gets
//! its error and the others OPERATION_NOT_ATTEMPTED, as Kafka answers. The rest goes to the
//! coordinator as one AddPartitions, answered once the Ongoing state is durable.

use crate::broker::Broker;
use crate::group::TopicPartition;
use crate::handlers::errors::{txn_error_code, NONE};
use crate::handlers::txns::{partition_check, transactional_id_check};
use crate::handlers::Reply;
use crate::txn::{Input, Output, TxnError};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};
use kafka_protocol::ResponseError;
use runtime::sync::oneshot;
use std::sync::Arc;
use wire::ResponseKind;

/// One transaction's answer: per topic, per partition, the error code.
type Answer = Vec<(TopicName, Vec<(i32, i16)>)>;

/// What one transaction of the request waits for.
enum Pending {
    Done(Answer),
    /// The coordinator's answer applies to every partition.
    Coordinator {
        partitions: Vec<(TopicName, Vec<i32>)>,
        receiver: oneshot::Receiver<Output>,
    },
}

struct Transaction {
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
}

pub fn handle(broker: &Arc<Broker>, request: AddPartitionsToTxnRequest, version: i16) -> Reply {
    let fenced_known = version >= 2;
    if version <= 3 {
        let transaction = Transaction {
            transactional_id: request.v3_and_below_transactional_id.to_string(),
            producer_id: request.v3_and_below_producer_id.0,
            epoch: request.v3_and_below_producer_epoch,
            verify_only: false,
            topics: request.v3_and_below_topics,
        };
        let pending = start(broker, transaction, fenced_known);
        return Reply::Later(Box::pin(async move {
            let answer = finish(pending, fenced_known).await;
            ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(topic_results(answer)),
            )
        }));
    }
    let started: Vec<(TransactionalId, Pending)> = request
        .transactions
        .into_iter()
        .map(|transaction| {
            let id = transaction.transactional_id.clone();
            let transaction = Transaction {
                transactional_id: transaction.transactional_id.to_string(),
                producer_id: transaction.producer_id.0,
                epoch: transaction.producer_epoch,
                verify_only: transaction.verify_only,
                topics: transaction.topics,
            };
            (id, start(broker, transaction, fenced_known))
        })
        .collect();
    Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(started.len());
        for (transactional_id, pending) in started {
            let answer = finish(pending, fenced_known).await;
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(transactional_id)
                    .with_topic_results(topic_results(answer)),
            );
        }
        ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default()
                .with_error_code(NONE)
                .with_results_by_transaction(results),
        )
    }))
}

fn code_of(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(NONE, |error| error.code())
}

fn start(broker: &Arc<Broker>, transaction: Transaction, fenced_known: bool) -> Pending {
    let transactional_id = match transactional_id_check(&transaction.transactional_id) {
        Ok(transactional_id) => transactional_id,
        Err(error) => {
            let answer = transaction
                .topics
                .iter()
                .map(|topic| {
                    let codes = topic.partitions.iter().map(|index| (*index, error.code()));
                    (topic.name.clone(), codes.collect())
                })
                .collect();
            return Pending::Done(answer);
        }
    };
    type Checked = Vec<(TopicName, Vec<(i32, Result<TopicPartition, ResponseError>)>)>;
    let checked: Checked = transaction
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|index| (*index, partition_check(broker, topic.name.as_str(), *index)))
                .collect();
            (topic.name.clone(), partitions)
        })
        .collect();
    let (producer_id, epoch) = (transaction.producer_id, transaction.epoch);
    if transaction.verify_only {
        let answer = checked
            .into_iter()
            .map(|(name, partitions)| {
                let codes = partitions.into_iter().map(|(index, partition)| {
                    let verified = partition.and_then(|partition| {
                        broker
                            .txn()
                            .read(|core| {
                                core.verify(&transactional_id, producer_id, epoch, &partition)
                            })
                            .map_err(|error| txn_error_code(error, fenced_known))
                    });
                    (index, code_of(verified))
                });
                (name, codes.collect())
            })
            .collect();
        return Pending::Done(answer);
    }
    let any_refused = checked
        .iter()
        .any(|(_, partitions)| partitions.iter().any(|(_, result)| result.is_err()));
    if any_refused {
        let answer = checked
            .into_iter()
            .map(|(name, partitions)| {
                let codes = partitions.into_iter().map(|(index, result)| {
                    let error = result.err().unwrap_or(ResponseError::OperationNotAttempted);
                    (index, error.code())
                });
                (name, codes.collect())
            })
            .collect();
        return Pending::Done(answer);
    }
    let partitions: Vec<TopicPartition> = checked
        .iter()
        .flat_map(|(_, partitions)| partitions.iter())
        .filter_map(|(_, result)| result.clone().ok())
        .collect();
    let receiver = broker
        .txn()
        .submit(|request, now, wall_ms| Input::AddPartitions {
            request,
            now,
            wall_ms,
            transactional_id,
            producer_id,
            epoch,
            partitions,
        });
    Pending::Coordinator {
        partitions: transaction
            .topics
            .into_iter()
            .map(|topic| (topic.name, topic.partitions))
            .collect(),
        receiver,
    }
}

async fn finish(pending: Pending, fenced_known: bool) -> Answer {
    let (partitions, receiver) = match pending {
        Pending::Done(answer) => return answer,
        Pending::Coordinator {
            partitions,
            receiver,
        } => (partitions, receiver),
    };
    let result = match receiver.await {
        Ok(Output::AddPartitions { result, .. }) => result,
        _ => Err(TxnError::CoordinatorNotAvailable),
    };
    let code = code_of(result.map_err(|error| txn_error_code(error, fenced_known)));
    partitions
        .into_iter()
        .map(|(name, indexes)| {
            (
                name,
                indexes.into_iter().map(|index| (index, code)).collect(),
            )
        })
        .collect()
}

fn topic_results(answer: Answer) -> Vec<AddPartitionsToTxnTopicResult> {
    answer
        .into_iter()
        .map(|(name, partitions)| {
            let results = partitions
                .into_iter()
                .map(|(index, code)| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(results)
        })
        .collect()
}
