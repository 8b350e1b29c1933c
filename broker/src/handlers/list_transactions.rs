//! ListTransactions (API 66), v0-1: every transactional id, filtered by state names (unknown
//! names are echoed in `unknown_state_filters`, as Kafka does), by producer ids, and (v1) by how
//! long the transaction has been open. v2's regular-expression filter is not served.

use crate::broker::Broker;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use crate::txn::TxnState;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
    version: i16,
) -> ResponseKind {
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(state) => {
                states.insert(state);
            }
            None => unknown.push(name),
        }
    }
    let producer_ids: BTreeSet<i64> = request.producer_id_filters.iter().map(|id| id.0).collect();
    // v1+: only transactions open longer than this many ms (-1: no filter).
    let open_for_ms = if version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let wall_ms = broker.txn().wall_ms();
    let listed = broker.txn().read(|core| {
        core.list()
            .filter(|description| {
                let metadata = &description.metadata;
                let state_ok =
                    states.is_empty() && unknown.is_empty() || states.contains(&metadata.state);
                let producer_ok =
                    producer_ids.is_empty() || producer_ids.contains(&metadata.producer_id);
                let duration_ok = open_for_ms < 0
                    || metadata.state.is_open()
                        && metadata.start_ms >= 0
                        && wall_ms.saturating_sub(metadata.start_ms) >= open_for_ms;
                state_ok && producer_ok && duration_ok
            })
            .collect::<Vec<_>>()
    });
    let transaction_states = listed
        .into_iter()
        .map(|description| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(description.transactional_id)))
                .with_producer_id(ProducerId(description.metadata.producer_id))
                .with_transaction_state(str_bytes(description.metadata.state.name()))
        })
        .collect();
    ResponseKind::ListTransactions(
        ListTransactionsResponse::default()
            .with_error_code(NONE)
            .with_unknown_state_filters(unknown)
            .with_transaction_states(transaction_states),
    )
}
