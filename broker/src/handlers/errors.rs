//! The one place Kafka error codes are chosen for internal errors (STYLE.md 14).

use kafka_protocol::ResponseError;
use storage::producer_state::SequenceError;
use storage::LogError;
use wire::{BatchError, RecordError};

use crate::group::GroupError;
use crate::txn::TxnError;

pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        // Kafka answers an idempotent producer's stale epoch with INVALID_PRODUCER_EPOCH
        // (PRODUCER_FENCED is for transactional producers, KIP-588).
        LogError::Sequence(SequenceError::EpochFenced { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        LogError::Sequence(SequenceError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced
        }
        _ => ResponseError::KafkaStorageError,
    }
}

pub fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::Magic { .. } => ResponseError::UnsupportedForMessageFormat,
        _ => ResponseError::CorruptMessage,
    }
}

/// Bytes that do not form the records they claim are CORRUPT_MESSAGE; well-formed records the
/// topic or protocol does not allow are INVALID_RECORD (as Kafka's LogValidator answers).
pub fn record_error_code(error: &RecordError) -> ResponseError {
    match error {
        RecordError::Codec { .. }
        | RecordError::Decompress { .. }
        | RecordError::DecompressedTooLarge { .. }
        | RecordError::Malformed { .. }
        | RecordError::CountMismatch { .. }
        | RecordError::TrailingBytes { .. } => ResponseError::CorruptMessage,
        RecordError::Control
        | RecordError::CountOffsets { .. }
        | RecordError::TransactionalWithoutProducer { .. }
        | RecordError::ProducerFields { .. }
        | RecordError::OffsetDelta { .. }
        | RecordError::TimestampDelta { .. }
        | RecordError::HeaderKeyNull { .. }
        | RecordError::HeaderKeyNotUtf8 { .. }
        | RecordError::KeyMissing { .. } => ResponseError::InvalidRecord,
    }
}

/// The wire value of "no error".
pub const NONE: i16 = 0;

/// The Kafka error for a group request that failed in the coordinator.
pub fn group_error_code(error: &GroupError) -> ResponseError {
    match error {
        GroupError::InvalidGroupId { .. } => ResponseError::InvalidGroupId,
        GroupError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached { .. } => ResponseError::GroupMaxSizeReached,
        GroupError::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        GroupError::GroupIdNotFound { .. } => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup { .. } => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
        GroupError::CoordinatorNotAvailable { .. } => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
    }
}

/// The Kafka code for a transaction coordinator error. `fenced_known`: the request's version
/// knows PRODUCER_FENCED (KIP-588); older clients get INVALID_PRODUCER_EPOCH instead.
pub fn txn_error_code(error: TxnError, fenced_known: bool) -> ResponseError {
    match error {
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if fenced_known => ResponseError::ProducerFenced,
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
        TxnError::NotCoordinator => ResponseError::NotCoordinator,
        TxnError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
    }
}
