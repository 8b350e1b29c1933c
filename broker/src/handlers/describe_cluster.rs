//! DescribeCluster (API 60, KIP-700): the brokers and the controller, from the metadata image:
//! live brokers, and with `include_fenced_brokers` (v2) the fenced ones too, marked; the
//! controller is the Raft leader (-1 while there is none; a lone voter is its own).
//!
//! Only the broker endpoints are served (endpoint type 1): clients reach the controllers
//! through the brokers, as in Kafka, so a request for controller endpoints is refused.

use crate::broker::Broker;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `ENDPOINT_TYPE_BROKER`.
const ENDPOINT_BROKERS: i8 = 1;
/// No authorized operations were asked for (Kafka's `Int.MinValue`).
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(broker: &Arc<Broker>, request: DescribeClusterRequest, version: i16) -> ResponseKind {
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.config.cluster_id.clone()))
        .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED);
    let response = match version {
        0 => response,
        _ => response.with_endpoint_type(request.endpoint_type),
    };
    if version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        return ResponseKind::DescribeCluster(
            response
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "only broker endpoints are served; controllers are reached through brokers",
                ))),
        );
    }
    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let cluster = broker.cluster();
    let image = cluster.image();
    let brokers = image
        .brokers()
        .filter(|registration| include_fenced || !registration.fenced)
        .map(|registration| {
            let entry = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(registration.broker_id))
                .with_host(StrBytes::from_string(registration.host.clone()))
                .with_port(i32::from(registration.port))
                .with_rack(registration.rack.clone().map(StrBytes::from_string));
            match version {
                0 | 1 => entry,
                _ => entry.with_is_fenced(registration.fenced),
            }
        })
        .collect();
    let controller = cluster.status().controller_leader.unwrap_or(-1);
    ResponseKind::DescribeCluster(
        response
            .with_controller_id(BrokerId(controller))
            .with_brokers(brokers),
    )
}
