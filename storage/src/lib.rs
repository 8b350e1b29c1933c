//! The partition log storage engine: one Kafka partition's log in one directory, on
//! `runtime::Disk`, with Kafka's layout and semantics (DESIGN.md "Storage").
//!
//! Module map, leaves first:
//! - `config`: `LogConfig` (Kafka's topic settings) and the hard limits.
//! - `error`: `LogError`.
//! - `layout`: file names in a partition directory and their classification.
//! - `index`: sparse offset and time indexes (pure); `txn_index`: the aborted-transaction
//!   index's encoding (pure).
//! - `scan`: validating batch scans and header reads over a segment file.
//! - `segment`: one `.log` file with its indexes: append, locate, open by scan or by index.
//! - `checkpoint`: `log.checkpoint` (log start offset, recovery point).
//! - `epoch_cache`: the leader-epoch cache and its `leader-epoch-checkpoint` file.
//! - `recovery`: turning whatever a crash left in a directory into a consistent segment list.
//! - `read`: serving fetches: whole, CRC-checked batches into one buffer.
//! - `retention`: which closed segments time, size and the log start offset let go.
//! - `records`: raw record views inside a batch, and rewriting a batch to a subset of them.
//! - `compaction`: keeping the latest record per key, swapped in crash-safely.
//! - `flush`: `FlushTicket`, the group-commit handle.
//! - `producer_state`: idempotent producers' epochs and last batches (sans-IO, Kafka's
//!   ProducerStateManager), and `producer_snapshot`: its `.snapshot` files and rebuild.
//! - `log`: `PartitionLog`, the API the broker uses, tying the rest together.
//!
//! **Invariant:** every byte goes through `runtime::Disk`; nothing here knows tokio or std::fs.
//! **Invariant:** `log_start_offset <= recovery_point <= log_end_offset`, and the recovery point
//! never passes what a completed fsync covered.

mod checkpoint;
mod compaction;
mod config;
mod epoch_cache;
mod error;
mod flush;
mod index;
mod layout;
mod log;
mod planted;
mod producer_snapshot;
pub mod producer_state;
mod read;
mod records;
mod recovery;
mod retention;
mod scan;
mod segment;
mod txn_index;

pub use checkpoint::{crc_framed, crc_unframed};
pub use compaction::CompactionOutcome;
pub use config::{
    CleanupPolicy, ConfigError, LogConfig, TimestampType, GIB, KIB, MESSAGE_BYTES_MAX, MIB,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use error::LogError;
pub use flush::FlushTicket;
pub use log::{AppendInfo, PartitionLog, Produced};
pub use planted::PlantedBug;
pub use read::ReadResult;
pub use retention::RetentionOutcome;
