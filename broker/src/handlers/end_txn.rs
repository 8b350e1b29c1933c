//! EndTxn (API 26): commit or abort. Answered once the decision (PrepareCommit or PrepareAbort)
//! is durable in `__transaction_state`; the markers follow, and the transaction's next request
//! meets CONCURRENT_TRANSACTIONS until they are all written, as in Kafka. v2+ knows
//! PRODUCER_FENCED. v5 (KIP-890's epoch bump at every commit) is not served.

use crate::broker::Broker;
use crate::handlers::errors::{txn_error_code, NONE};
use crate::handlers::groups::reply_when;
use crate::handlers::txns::transactional_id_check;
use crate::handlers::Reply;
use crate::txn::{Input, Output};
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

fn response(code: i16) -> ResponseKind {
    ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code))
}

pub fn handle(broker: &Arc<Broker>, request: EndTxnRequest, version: i16) -> Reply {
    let transactional_id = match transactional_id_check(request.transactional_id.as_str()) {
        Ok(transactional_id) => transactional_id,
        Err(error) => return Reply::Now(Box::new(response(error.code()))),
    };
    let receiver = broker.txn().submit(|id, _now, wall_ms| Input::EndTxn {
        request: id,
        wall_ms,
        transactional_id,
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        commit: request.committed,
    });
    let fenced_known = version >= 2;
    reply_when(receiver, move |output| match output {
        Some(Output::EndTxn { result: Ok(()), .. }) => response(NONE),
        Some(Output::EndTxn {
            result: Err(error), ..
        }) => response(txn_error_code(error, fenced_known).code()),
        _ => response(ResponseError::CoordinatorNotAvailable.code()),
    })
}
