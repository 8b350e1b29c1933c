//! FindCoordinator: on a single node, this broker coordinates every group. v0-3 ask for one key;
//! v4+ batch them (`coordinator_keys`, KIP-699). Only the group key type (0) is served:
//! transactions (key type 1) have no coordinator yet, and other key types are invalid.

use crate::broker::Broker;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `CoordinatorType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;

/// This broker, or why it does not coordinate `key_type`.
fn lookup(broker: &Broker, key_type: i8) -> Result<(BrokerId, String, i32), ResponseError> {
    if key_type != KEY_TYPE_GROUP {
        return Err(ResponseError::InvalidRequest);
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
    let response = match lookup(broker, request.key_type) {
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
                response.with_error_message(Some(str_bytes("unsupported key type")))
            } else {
                response
            }
        }
    };
    ResponseKind::FindCoordinator(response)
}

fn coordinator(broker: &Broker, key: StrBytes, key_type: i8) -> Coordinator {
    let coordinator = Coordinator::default().with_key(key);
    match lookup(broker, key_type) {
        Ok((node_id, host, port)) => coordinator
            .with_error_code(NONE)
            .with_node_id(node_id)
            .with_host(str_bytes(host))
            .with_port(port),
        Err(error) => coordinator
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes("unsupported key type")))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
