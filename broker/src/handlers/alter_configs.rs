//! AlterConfigs (v0-2): replaces the whole set of a topic's overrides; a key left out goes back
//! to its default, as in Kafka. Each resource succeeds or fails on its own (the handler is in
//! `admin`, through the controller). Broker resources are refused: gregor's broker settings are
//! static.

use crate::handlers::configs::Refusal;
use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

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
