//! InitProducerId (API 22). Without a transactional id: a new producer id at epoch 0, as Kafka's
//! TransactionCoordinator answers an idempotent producer (a given producer id and epoch, KIP-360's
//! re-initialisation, still gets a fresh id: without a transactional id there is nothing to fence).
//!
//! With a transactional id: the transaction coordinator's answer (`txn::coordinator`), once the
//! new epoch is durable in `__transaction_state` (created on first use). v3+ may name the
//! producer id and epoch the client has (KIP-360); v4+ knows PRODUCER_FENCED.

use crate::broker::Broker;
use crate::handlers::errors::{txn_error_code, NONE};
use crate::handlers::groups::reply_when;
use crate::handlers::txns::transactional_id_check;
use crate::handlers::Reply;
use crate::txn::Output;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use wire::ResponseKind;

fn response(result: Result<(i64, i16), ResponseError>) -> ResponseKind {
    let response = InitProducerIdResponse::default();
    let response = match result {
        Ok((producer_id, epoch)) => response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => response
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    };
    ResponseKind::InitProducerId(response)
}

pub fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest, version: i16) -> Reply {
    let Some(transactional_id) = request.transactional_id.as_ref() else {
        return Reply::Now(Box::new(idempotent(broker)));
    };
    let transactional_id = match transactional_id_check(transactional_id.as_str()) {
        Ok(transactional_id) => transactional_id,
        Err(error) => return Reply::Now(Box::new(response(Err(error)))),
    };
    if let Err(error) = broker.txn().topic_ensure(&mut broker.topics()) {
        tracing::warn!(%error, "cannot create the transaction state topic");
        let error = ResponseError::CoordinatorNotAvailable;
        return Reply::Now(Box::new(response(Err(error))));
    }
    // A zero or negative timeout is the core's INVALID_TRANSACTION_TIMEOUT.
    let timeout = Duration::from_millis(u64::try_from(request.transaction_timeout_ms).unwrap_or(0));
    let expected = (version >= 3 && request.producer_id.0 >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    let receiver = broker
        .txn()
        .init_producer_id(transactional_id, timeout, expected);
    let fenced_known = version >= 4;
    reply_when(receiver, move |output| match output {
        Some(Output::InitProducerId { result, .. }) => {
            response(result.map_err(|error| txn_error_code(error, fenced_known)))
        }
        _ => response(Err(ResponseError::CoordinatorNotAvailable)),
    })
}

fn idempotent(broker: &Broker) -> ResponseKind {
    match broker.producer_id_new() {
        Ok(producer_id) => response(Ok((producer_id, 0))),
        Err(error) => {
            // Retriable: the client asks again, and a later block write may succeed.
            tracing::warn!(%error, "cannot allocate a producer id");
            response(Err(ResponseError::CoordinatorNotAvailable))
        }
    }
}
