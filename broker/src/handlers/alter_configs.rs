//! AlterConfigs (v0-2): replaces the whole set of a topic's overrides; a key left out goes back
//! to its default, as in Kafka. Each resource succeeds or fails on its own. Broker resources are
//! refused: gregor's broker settings are static.

use crate::broker::Broker;
use crate::handlers::configs::{resource_refusal, topic_overrides_change, Refusal, RESOURCE_TOPIC};
use crate::handlers::errors::NONE;
use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: AlterConfigsRequest, _version: i16) -> ResponseKind {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let outcome = resource_alter(broker, &resource, request.validate_only);
            if let Err(refusal) = &outcome {
                tracing::info!(resource = %resource.resource_name.as_str(), message = %refusal.message, "alter configs refused");
            }
            response(resource, outcome)
        })
        .collect();
    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
}

fn resource_alter(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    if resource.resource_type != RESOURCE_TOPIC {
        return Err(resource_refusal(resource.resource_type));
    }
    let overrides = overrides_requested(resource)?;
    let name = resource.resource_name.as_str();
    topic_overrides_change(broker, name, validate_only, |_current| Ok(overrides))
}

/// The requested set, refusing a key named twice or without a value.
pub fn overrides_requested(
    resource: &AlterConfigsResource,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut overrides = BTreeMap::new();
    for config in &resource.configs {
        let key = config.name.as_str();
        let Some(value) = &config.value else {
            let message = format!("config {key:?} has no value; leave it out to use the default");
            return Err(Refusal::new(ResponseError::InvalidConfig, message));
        };
        if overrides
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            let message = format!("config {key:?} is named twice; name each key once");
            return Err(Refusal::new(ResponseError::InvalidRequest, message));
        }
    }
    Ok(overrides)
}

fn response(
    resource: AlterConfigsResource,
    outcome: Result<(), Refusal>,
) -> AlterConfigsResourceResponse {
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name);
    match outcome {
        Ok(()) => response.with_error_code(NONE),
        Err(refusal) => response
            .with_error_code(refusal.error.code())
            .with_error_message(Some(StrBytes::from_string(refusal.message))),
    }
}
