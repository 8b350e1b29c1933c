//! The one place Kafka error codes are chosen for internal errors (STYLE.md 14).

use kafka_protocol::ResponseError;
use storage::LogError;
use wire::BatchError;

use crate::topics::TopicError;

pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::KafkaStorageError,
    }
}

pub fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::Magic { .. } => ResponseError::UnsupportedForMessageFormat,
        _ => ResponseError::CorruptMessage,
    }
}

pub fn topic_error_code(error: &TopicError) -> ResponseError {
    match error {
        TopicError::Config(crate::topic_config::TopicConfigError::Name { .. }) => {
            ResponseError::InvalidTopicException
        }
        TopicError::Config(_) => ResponseError::InvalidConfig,
        TopicError::Exists { .. } => ResponseError::TopicAlreadyExists,
        TopicError::Unknown { .. } => ResponseError::UnknownTopicOrPartition,
        TopicError::Partitions { .. } => ResponseError::InvalidPartitions,
        TopicError::ReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        TopicError::Storage { .. } | TopicError::Io { .. } | TopicError::Corrupt { .. } => {
            ResponseError::KafkaStorageError
        }
    }
}

/// The wire value of "no error".
pub const NONE: i16 = 0;
