//! FindCoordinator: on a single node, this broker coordinates every group (key type 0) and every
//! transactional id (key type 1). v0-3 ask for one key; v4+ batch them (`coordinator_keys`,
//! KIP-699). The first lookup of a transactional id creates `__transaction_state`, as Kafka
//! does. Other key types are invalid, and so is an empty transactional id.

use crate::broker::Broker;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use crate::handlers::txns::transactional_id_check;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `CoordinatorType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;
/// Kafka's `CoordinatorType.TRANSACTION`.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// This broker, or why it does not coordinate `key` of `key_type`.
fn lookup(
    broker: &Arc<Broker>,
    key: &str,
    key_type: i8,
) -> Result<(BrokerId, String, i32), ResponseError> {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            transactional_id_check(key)?;
            broker
                .txn()
                .topic_ensure(&mut broker.topics())
                .map_err(|error| {
                    tracing::warn!(%error, "cannot create the transaction state topic");
                    ResponseError::CoordinatorNotAvailable
                })?;
        }
        _ => return Err(ResponseError::InvalidRequest),
    }
    let (host, port) = broker.config.advertised();
    Ok((BrokerId(broker.config.node_id), host, port))
}

pub fn handle(broker: &Arc<Broker>, request: FindCoordinatorRequest, version: i16) -> ResponseKind {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| coordinator(broker, key, request.key_type))
            .collect();
        return ResponseKind::FindCoordinator(
            FindCoordinatorResponse::default().with_coordinators(coordinators),
        );
    }
    let response = match lookup(broker, request.key.as_str(), request.key_type) {
        Ok((node_id, host, port)) => FindCoordinatorResponse::default()
            .with_error_code(NONE)
            .with_node_id(node_id)
            .with_host(str_bytes(host))
            .with_port(port),
        Err(error) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(error.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(error.to_string())))
            } else {
                response
            }
        }
    };
    ResponseKind::FindCoordinator(response)
}

fn coordinator(broker: &Arc<Broker>, key: StrBytes, key_type: i8) -> Coordinator {
    let found = lookup(broker, key.as_str(), key_type);
    let coordinator = Coordinator::default().with_key(key);
    match found {
        Ok((node_id, host, port)) => coordinator
            .with_error_code(NONE)
            .with_node_id(node_id)
            .with_host(str_bytes(host))
            .with_port(port),
        Err(error) => coordinator
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(error.to_string())))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
