//! DescribeTransactions (API 65): each transactional id's durable state, or
//! TRANSACTIONAL_ID_NOT_FOUND.

use crate::broker::Broker;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use crate::txn::TxnDescription;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: DescribeTransactionsRequest) -> ResponseKind {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|transactional_id| {
            let found = broker.txn().read(|core| {
                let id = transactional_id.as_str();
                core.serves(id).map(|()| core.describe(id))
            });
            let state = TransactionState::default().with_transactional_id(transactional_id);
            let error = match found {
                Ok(Some(description)) => return described(state, description),
                Ok(None) => ResponseError::TransactionalIdNotFound,
                // Another broker coordinates it (a replicated `__transaction_state`), or it
                // is loading here.
                Err(error) => crate::handlers::errors::txn_error_code(error, true),
            };
            state
                .with_error_code(error.code())
                .with_transaction_state(str_bytes(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1)
        })
        .collect();
    ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

fn described(state: TransactionState, description: TxnDescription) -> TransactionState {
    let metadata = description.metadata;
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for partition in &metadata.partitions {
        topics
            .entry(partition.topic.clone())
            .or_default()
            .push(partition.partition);
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            TopicData::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    state
        .with_error_code(NONE)
        .with_transaction_state(str_bytes(metadata.state.name()))
        .with_transaction_timeout_ms(
            i32::try_from(metadata.timeout.as_millis()).unwrap_or(i32::MAX),
        )
        .with_transaction_start_time_ms(metadata.start_ms)
        .with_producer_id(ProducerId(metadata.producer_id))
        .with_producer_epoch(metadata.epoch)
        .with_topics(topics)
}
