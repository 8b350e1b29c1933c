//! Transactions: Kafka's transaction coordinator (KIP-98), over the compacted
//! `__transaction_state` topic.
//!
//! Module map, leaves first:
//! - `mod.rs` (here): the vocabulary (states, metadata, errors) and `TxnConfig`.
//! - `records`: the `__transaction_state` key/value formats (Kafka's `TransactionLogKey` and
//!   `TransactionLogValue` v0).
//! - `coordinator`: `Coordinator`, every transactional id this node coordinates behind one
//!   `step(outputs, input)`. Pure: no clock, no I/O; new producer ids arrive in inputs.
//! - `shell`: the async shell: one mutex around the core, replies parked until their record is
//!   durable, appends to `__transaction_state`, a timer task for transaction timeouts, markers
//!   through a `MarkerSender` (retried until every partition has one), and replay at startup
//!   (node-local topic) or on gaining a partition's leadership (replicated topic).
//! - `sender`: `BrokerMarkerSender`, markers to each partition's leader: this broker's handler
//!   or another broker over the network.
//!
//! **Invariant:** every state change is appended to `__transaction_state` and fsynced before it
//! is acknowledged or acted on; the in-memory state only ever shows durable transitions.
//! **Invariant:** a commit decision (PrepareCommit) is durable before any marker is sent, so no
//! partition can show a COMMIT that a crash turns into an abort.
//! **Invariant:** a transaction leaves PrepareCommit/PrepareAbort only once every partition in it
//! has its marker; a restart in Prepare* sends the markers again.

pub mod coordinator;
pub mod records;
pub mod sender;
pub mod shell;

#[cfg(test)]
mod shell_tests;
#[cfg(test)]
mod tests;

use crate::group::TopicPartition;
use std::collections::BTreeSet;
use std::time::Duration;

pub use coordinator::{Coordinator, Input, Output};

/// Identifies one request awaiting a reply from the core; chosen by the shell, unique.
pub type RequestId = u64;
/// Identifies one write to `__transaction_state`; chosen by the core, increasing.
pub type WriteId = u64;

/// The internal topic holding every transactional id's state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// Partitions of `__transaction_state` when this broker creates it: 16 as for
/// `__consumer_offsets` (see `group::OFFSETS_TOPIC_PARTITIONS_DEFAULT`; Kafka: 50).
pub const TRANSACTION_STATE_PARTITIONS_DEFAULT: i32 = 16;
/// Kafka's `transaction.max.timeout.ms` default: 15 minutes.
pub const TRANSACTION_TIMEOUT_MAX_DEFAULT: Duration = Duration::from_millis(900_000);
/// Transactional ids are keys in memory and in `__transaction_state`: bounded like group ids.
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = 255;
/// Partitions one transaction may hold; bounds a transaction's record (Kafka: unbounded).
pub const TRANSACTION_PARTITIONS_MAX: usize = 10_000;
/// The coordinator epoch written into markers by a node-local `__transaction_state`, whose
/// leadership never changes; a replicated one writes its partition's leader epoch.
pub const COORDINATOR_EPOCH: i32 = 0;

/// The transaction coordinator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// Kafka's `transaction.max.timeout.ms`: InitProducerId asking for longer gets
    /// INVALID_TRANSACTION_TIMEOUT.
    pub timeout_max: Duration,
    /// Kafka's `transaction.state.log.num.partitions` when this broker creates the topic;
    /// afterwards the topic's own count decides.
    pub state_partitions: i32,
}

impl TxnConfig {
    pub fn kafka_defaults() -> TxnConfig {
        TxnConfig {
            timeout_max: TRANSACTION_TIMEOUT_MAX_DEFAULT,
            state_partitions: TRANSACTION_STATE_PARTITIONS_DEFAULT,
        }
    }
}

/// Kafka's `TransactionState`, with its ids as written in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    /// The byte Kafka writes for the state in `TransactionLogValue`.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.name() == name)
    }

    /// A transaction is open: partitions may hold its data with no marker yet.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    }
}

/// One transactional id's durable state: exactly what one `__transaction_state` record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion), -1 if none.
    pub last_producer_id: i64,
    pub epoch: i16,
    /// The epoch before the last bump, -1 if none: an InitProducerId retry (KIP-360) names it.
    pub last_epoch: i16,
    pub timeout: Duration,
    pub state: TxnState,
    /// The partitions the open transaction wrote to (user partitions, and the
    /// `__consumer_offsets` partitions of groups whose offsets it commits); empty otherwise.
    pub partitions: BTreeSet<TopicPartition>,
    /// Wall-clock ms of the last transition.
    pub last_update_ms: i64,
    /// Wall-clock ms the open transaction started, -1 when none is open.
    pub start_ms: i64,
}

/// Why a transactional request failed; `handlers::errors::txn_error_code` picks the Kafka code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("unknown producer id for this transactional id")]
    InvalidProducerIdMapping,
    /// A newer producer with the same transactional id took over (or a timeout bumped the
    /// epoch): this one must stop.
    #[error("producer fenced by a newer epoch")]
    ProducerFenced,
    #[error("another transition of this transaction is in progress; retry")]
    ConcurrentTransactions,
    #[error("the request does not fit the transaction's state")]
    InvalidTxnState,
    #[error("transaction timeout outside 1..=transaction.max.timeout.ms")]
    InvalidTransactionTimeout,
    #[error("the write to __transaction_state failed; retry")]
    CoordinatorNotAvailable,
    #[error("transactional id not found")]
    TransactionalIdNotFound,
    /// The id's partition of a replicated `__transaction_state` is not led here (or no more).
    #[error("this broker does not coordinate the transactional id; find its coordinator again")]
    NotCoordinator,
    /// The id's partition is led here and still replaying, or not yet committed by the HW.
    #[error("the transaction coordinator is loading the transactional id's partition")]
    CoordinatorLoadInProgress,
}

/// What DescribeTransactions and ListTransactions show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub metadata: TxnMetadata,
}

/// The markers a finished decision needs: one per partition, all with the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: BTreeSet<TopicPartition>,
}
