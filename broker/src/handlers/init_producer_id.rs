//! InitProducerId (API 22) without a transactional id: a new producer id at epoch 0, as Kafka's
//! TransactionCoordinator answers an idempotent producer (a given producer id and epoch, KIP-360's
//! re-initialisation, still gets a fresh id: without a transactional id there is nothing to fence).
//!
//! With a transactional id the request needs a transaction coordinator, which gregor does not
//! have yet: it is refused with INVALID_REQUEST, which clients treat as fatal rather than retry.

use crate::broker::Broker;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest, _version: i16) -> ResponseKind {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        let response = response.with_error_code(ResponseError::InvalidRequest.code());
        return ResponseKind::InitProducerId(response);
    }
    let response = match broker.producer_id_new() {
        Ok(producer_id) => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(error) => {
            // Retriable: the client asks again, and a later block write may succeed.
            tracing::warn!(%error, "cannot allocate a producer id");
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    };
    ResponseKind::InitProducerId(response)
}
