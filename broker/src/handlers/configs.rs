//! What AlterConfigs and IncrementalAlterConfigs share: resource types, the refusals they answer
//! with, and the one read-modify-write of a topic's overrides under the topics lock (so two
//! concurrent incremental changes never lose each other's keys).

use crate::broker::Broker;
use crate::handlers::errors::topic_error_code;
use crate::topics::TopicError;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

/// Kafka's `ConfigResource.Type`.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Why one resource's change was refused: the code and a message naming the thing and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: String,
}

impl Refusal {
    pub fn new(error: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            error,
            message: message.into(),
        }
    }

    fn topic(name: &str, error: &TopicError) -> Refusal {
        let message = match error {
            TopicError::Unknown { .. } => {
                format!("topic {name:?} does not exist; create it first or check the name")
            }
            TopicError::Internal { .. } => {
                format!("topic {name:?} is internal to the broker; its configs are fixed")
            }
            other => format!("topic {name:?}: {other}"),
        };
        Refusal::new(topic_error_code(error), message)
    }
}

/// The answer for anything but a topic: gregor has no dynamic broker configs to alter.
pub fn resource_refusal(resource_type: i8) -> Refusal {
    match resource_type {
        RESOURCE_BROKER => Refusal::new(
            ResponseError::InvalidRequest,
            "broker configs are static; set them with flags or the config file and restart",
        ),
        other => Refusal::new(
            ResponseError::InvalidRequest,
            format!(
                "resource type {other} is not supported; only topics (2) have alterable configs"
            ),
        ),
    }
}

/// Computes a topic's new overrides from its current ones with `change`, validates them, and
/// (unless `validate_only`) persists and applies them, all under one hold of the topics lock.
pub fn topic_overrides_change(
    broker: &Broker,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Refusal>,
) -> Result<(), Refusal> {
    let mut topics = broker.topics();
    let Some(metadata) = topics.get(name) else {
        let error = TopicError::Unknown {
            name: name.to_string(),
        };
        return Err(Refusal::topic(name, &error));
    };
    let overrides = change(&metadata.configs)?;
    let outcome = match validate_only {
        true => topics.configs_check(name, &overrides).map(drop),
        false => topics.configs_replace(name, &overrides).map(drop),
    };
    outcome.map_err(|error| Refusal::topic(name, &error))
}
