//! `LogError`: everything a partition log operation can fail with. Bad input (a batch too large, an
//! offset outside the log, bytes on disk that fail their checks) is an error value; a broken
//! invariant of the log itself is a panic (STYLE.md 14).

use crate::config::ConfigError;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("batch of {bytes} bytes exceeds the {limit}-byte limit")]
    RecordTooLarge { bytes: usize, limit: u32 },
    #[error("replicated batch starts at offset {base_offset}, the log ends at {log_end_offset}")]
    OffsetMismatch {
        base_offset: i64,
        log_end_offset: i64,
    },
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    EpochRegression { epoch: i32, latest: i32 },
    #[error("{}: corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{}: an fsync failed; no writes until the log is reopened and recovered", dir.display())]
    SyncFailed { dir: PathBuf },
    #[error(transparent)]
    Sequence(#[from] crate::producer_state::SequenceError),
    #[error("invalid log config: {0}")]
    Config(#[from] ConfigError),
    /// The inner error's message names the operation and the path; its kind is the original's.
    #[error(transparent)]
    Io(io::Error),
}

/// Adds the operation and path to an I/O error, keeping its kind for callers that match on it.
pub(crate) fn io_context(error: io::Error, operation: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{operation} {}: {error}", path.display()),
    )
}

/// `result.context("read", path)?` turns an `io::Result` into a `LogError::Io` with context.
pub(crate) trait IoContext<T> {
    fn context(self, operation: &str, path: &Path) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, operation: &str, path: &Path) -> Result<T, LogError> {
        self.map_err(|error| LogError::Io(io_context(error, operation, path)))
    }
}
