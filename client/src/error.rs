//! What can go wrong talking to a Kafka cluster, as one `ClientError` enum.
//!
//! Errors are `Clone` because one failed Produce request fails every record it carried, and each
//! waiting `send` gets its own copy. That is why I/O errors keep their kind and text rather than the
//! `std::io::Error` itself.
//!
//! Two questions callers ask of every error are answered here, in one place: may the operation be
//! retried (`is_retriable`), and is our metadata (who leads what) probably stale
//! (`is_metadata_stale`)?

use kafka_protocol::error::ResponseError;
use std::time::Duration;
use wire::codec::{DecodeError, EncodeError};
use wire::protocol::messages::ApiKey;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error talking to {address}: {kind:?}: {message}")]
    Io {
        address: String,
        kind: std::io::ErrorKind,
        message: String,
    },
    /// The outcome is unknown: the broker may or may not have applied the request.
    #[error("{what} to {address} timed out after {after:?}")]
    Timeout {
        address: String,
        what: String,
        after: Duration,
    },
    /// The length prefix was refused (`wire::FrameError`, kept as text since it is not `Clone`).
    #[error("bad frame from {address}: {reason}")]
    Frame { address: String, reason: String },
    #[error("cannot decode the response from {address}: {source}")]
    Decode {
        address: String,
        source: DecodeError,
    },
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// The broker broke the protocol (wrong correlation id, missing partition, ...).
    #[error("protocol violation by {address}: {reason}")]
    Protocol { address: String, reason: String },
    #[error("{api_key:?}: broker supports v{broker_min}..=v{broker_max}, this client v{ours_min}..=v{ours_max}")]
    UnsupportedVersion {
        api_key: ApiKey,
        broker_min: i16,
        broker_max: i16,
        ours_min: i16,
        ours_max: i16,
    },
    #[error("{request} is not implemented by this client")]
    UnsupportedRequest { request: String },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error} (code {code})", code = error.code())]
    Kafka {
        error: ResponseError,
        context: String,
    },
    #[error("no leader known for {topic}-{partition}")]
    NoLeader { topic: String, partition: i32 },
    #[error("broker {node_id} is not in the cluster metadata")]
    UnknownBroker { node_id: i32 },
    #[error("topic {topic} has no partition {partition} (it has {partition_count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partition_count: i32,
    },
    #[error("could not reach any broker (tried {tried}): {last}")]
    NoBrokerReachable { tried: usize, last: String },
    #[error(
        "offset {offset} is out of range for {topic}-{partition} and the reset policy is error"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("{topic}-{partition} is not assigned to this consumer")]
    NotAssigned { topic: String, partition: i32 },
    #[error("record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    /// The records before the batch were delivered; the position stays at `offset` until the
    /// caller seeks, to `skip_to` if it chooses to skip the batch.
    #[error("corrupt record batch at offset {offset} of {topic}-{partition}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        offset: i64,
        skip_to: i64,
        reason: String,
    },
    /// The producer's background task is gone (closed, or its node was killed).
    #[error("the producer is closed")]
    ProducerClosed,
    /// A transactional call out of order (a send outside a transaction, commit before begin),
    /// or a transaction that must be aborted because `cause` failed part of it.
    #[error("transaction: {reason}")]
    TransactionState { reason: String },
}

impl ClientError {
    pub(crate) fn io(address: &str, error: &std::io::Error) -> ClientError {
        ClientError::Io {
            address: address.to_string(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    pub(crate) fn protocol(address: &str, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            address: address.to_string(),
            reason: reason.into(),
        }
    }

    /// `Ok(())` for error code 0, else a `Kafka` error naming what was being done.
    pub fn from_code(code: i16, context: impl FnOnce() -> String) -> Result<(), ClientError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(error) => Err(ClientError::Kafka {
                error,
                context: context(),
            }),
        }
    }

    /// The Kafka error code behind this error, if the broker sent one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether trying again (after a metadata refresh and a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader { .. }
            | ClientError::UnknownBroker { .. }
            | ClientError::NoBrokerReachable { .. } => true,
            ClientError::Kafka { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// Whether the error suggests that leadership moved or the topic changed, so the metadata
    /// cache should be refreshed before the next attempt.
    pub fn is_metadata_stale(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader { .. }
            | ClientError::UnknownBroker { .. }
            | ClientError::UnknownPartition { .. } => true,
            ClientError::Kafka { error, .. } => response_error_is_metadata_stale(*error),
            _ => false,
        }
    }

    /// Whether a transactional producer that met this error can never continue (Java's fatal
    /// errors): a newer producer took its transactional id over, or the coordinator does not know
    /// its producer id. The application must close it and start a new one.
    pub fn is_transaction_fatal(&self) -> bool {
        matches!(
            self.kafka_error(),
            Some(
                ResponseError::ProducerFenced
                    | ResponseError::InvalidProducerEpoch
                    | ResponseError::InvalidProducerIdMapping
                    | ResponseError::TransactionalIdAuthorizationFailed
                    | ResponseError::InvalidTransactionTimeout
                    | ResponseError::UnsupportedVersion
            )
        )
    }

    /// Whether the connection that produced this error can no longer be trusted.
    pub fn is_connection_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Frame { .. }
                | ClientError::Decode { .. }
                | ClientError::Protocol { .. }
        )
    }
}

/// Kafka error codes that mean "your idea of who leads this partition is out of date".
pub fn response_error_is_metadata_stale(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::KafkaStorageError
            | ResponseError::NotController
            | ResponseError::UnknownTopicId
            | ResponseError::InconsistentTopicId
            | ResponseError::ReplicaNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: i16) -> String {
        match ClientError::from_code(code, || "produce t-0".to_string()) {
            Ok(()) => "ok".to_string(),
            Err(error) => format!(
                "{error} retriable={} stale={}",
                error.is_retriable(),
                error.is_metadata_stale()
            ),
        }
    }

    #[test]
    fn kafka_codes_map_to_errors_with_retry_and_refresh_advice() {
        let rendered: Vec<String> = [0, 1, 3, 6, 7, 10, 19, 36, 74, 9999].map(classify).to_vec();
        assert_eq!(
            rendered,
            [
                "ok",
                "produce t-0: OffsetOutOfRange (code 1) retriable=false stale=false",
                "produce t-0: UnknownTopicOrPartition (code 3) retriable=true stale=true",
                "produce t-0: NotLeaderOrFollower (code 6) retriable=true stale=true",
                "produce t-0: RequestTimedOut (code 7) retriable=true stale=false",
                "produce t-0: MessageTooLarge (code 10) retriable=false stale=false",
                "produce t-0: NotEnoughReplicas (code 19) retriable=true stale=false",
                "produce t-0: TopicAlreadyExists (code 36) retriable=false stale=false",
                "produce t-0: FencedLeaderEpoch (code 74) retriable=true stale=true",
                "produce t-0: Unknown error code: 9999 (code 9999) retriable=false stale=false",
            ]
        );
    }

    #[test]
    fn transport_errors_poison_the_connection_and_kafka_errors_do_not() {
        let io = ClientError::io(
            "b:9092",
            &std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        );
        assert!(io.is_connection_fatal());
        assert!(io.is_retriable());
        assert!(io.is_metadata_stale());
        let kafka = ClientError::from_code(6, String::new).unwrap_err();
        assert!(!kafka.is_connection_fatal());
        assert_eq!(
            kafka.kafka_error(),
            Some(ResponseError::NotLeaderOrFollower)
        );
        let protocol = ClientError::protocol("b:9092", "correlation id 3, expected 2");
        assert!(protocol.is_connection_fatal());
        assert!(!protocol.is_retriable());
    }
}
