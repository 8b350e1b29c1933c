//! What AlterConfigs and IncrementalAlterConfigs share: resource types and the refusals they
//! answer with.

use kafka_protocol::ResponseError;

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
