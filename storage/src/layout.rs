//! The files of a partition directory: their names and how a name is classified on recovery.
//!
//! ```text
//! 00000000000000000000.log         segment: batches, base offset in the name (Kafka's layout)
//! 00000000000000000000.index       sparse offset index of a closed segment
//! 00000000000000000000.timeindex   sparse time index of a closed segment
//! 00000000000000000000.txnindex    aborted transactions whose markers a closed segment holds
//! <base>-<end>.cleaned             compaction output being written (discarded on recovery)
//! <base>-<end>.swap                compaction output committed to replace segments [base, end)
//! log.checkpoint                   log start offset and recovery point
//! leader-epoch-checkpoint          the leader-epoch cache (Kafka's name and format)
//! 00000000000000000000.snapshot    producer state below that offset (`producer_snapshot`)
//! *.tmp                            an interrupted `runtime::disk::write_atomic` (discarded)
//! ```

use std::path::{Path, PathBuf};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
pub(crate) const SWAP_SUFFIX: &str = "swap";
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
pub(crate) const CHECKPOINT_NAME: &str = "log.checkpoint";
pub(crate) const EPOCH_CHECKPOINT_NAME: &str = "leader-epoch-checkpoint";
const TEMPORARY_SUFFIX: &str = ".tmp";
/// Offsets are printed with 20 digits, as Kafka does, so names sort in offset order.
const OFFSET_DIGITS: usize = 20;

/// What a file in a partition directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log {
        base_offset: i64,
    },
    Index {
        base_offset: i64,
    },
    TimeIndex {
        base_offset: i64,
    },
    TxnIndex {
        base_offset: i64,
    },
    Cleaned,
    Swap {
        base_offset: i64,
        end_offset: i64,
    },
    Snapshot {
        offset: i64,
    },
    Temporary,
    Checkpoint,
    EpochCheckpoint,
    /// Not ours: left alone.
    Unknown,
}

pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    assert!(base_offset >= 0);
    dir.join(format!("{base_offset:0OFFSET_DIGITS$}.{suffix}"))
}

/// `<base>-<end>.<suffix>`: compaction output replacing the segments with base offsets in
/// [base, end). The range is in the name so recovery can finish an interrupted swap exactly.
pub(crate) fn compaction_path(
    dir: &Path,
    base_offset: i64,
    end_offset: i64,
    suffix: &str,
) -> PathBuf {
    assert!(base_offset < end_offset);
    dir.join(format!(
        "{base_offset:0OFFSET_DIGITS$}-{end_offset:0OFFSET_DIGITS$}.{suffix}"
    ))
}

fn offset_parse(digits: &str) -> Option<i64> {
    if digits.len() != OFFSET_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn file_kind(path: &Path) -> FileKind {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return FileKind::Unknown;
    };
    if name.ends_with(TEMPORARY_SUFFIX) {
        return FileKind::Temporary;
    }
    match name {
        CHECKPOINT_NAME => return FileKind::Checkpoint,
        EPOCH_CHECKPOINT_NAME => return FileKind::EpochCheckpoint,
        _ => {}
    }
    let Some((stem, suffix)) = name.split_once('.') else {
        return FileKind::Unknown;
    };
    if let Some((base, end)) = stem.split_once('-') {
        let (Some(base_offset), Some(end_offset)) = (offset_parse(base), offset_parse(end)) else {
            return FileKind::Unknown;
        };
        return match suffix {
            CLEANED_SUFFIX => FileKind::Cleaned,
            SWAP_SUFFIX => FileKind::Swap {
                base_offset,
                end_offset,
            },
            _ => FileKind::Unknown,
        };
    }
    let Some(base_offset) = offset_parse(stem) else {
        return FileKind::Unknown;
    };
    match suffix {
        LOG_SUFFIX => FileKind::Log { base_offset },
        INDEX_SUFFIX => FileKind::Index { base_offset },
        TIME_INDEX_SUFFIX => FileKind::TimeIndex { base_offset },
        TXN_INDEX_SUFFIX => FileKind::TxnIndex { base_offset },
        SNAPSHOT_SUFFIX => FileKind::Snapshot {
            offset: base_offset,
        },
        _ => FileKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_kind() {
        let dir = Path::new("d");
        assert_eq!(
            file_kind(&segment_path(dir, 42, LOG_SUFFIX)),
            FileKind::Log { base_offset: 42 }
        );
        assert_eq!(
            file_kind(&segment_path(dir, 7, TIME_INDEX_SUFFIX)),
            FileKind::TimeIndex { base_offset: 7 }
        );
        assert_eq!(
            file_kind(&segment_path(dir, 7, TXN_INDEX_SUFFIX)),
            FileKind::TxnIndex { base_offset: 7 }
        );
        assert_eq!(
            file_kind(&compaction_path(dir, 0, 9, SWAP_SUFFIX)),
            FileKind::Swap {
                base_offset: 0,
                end_offset: 9
            }
        );
        assert_eq!(
            file_kind(&segment_path(dir, 9, SNAPSHOT_SUFFIX)),
            FileKind::Snapshot { offset: 9 }
        );
        assert_eq!(
            file_kind(&compaction_path(dir, 0, 9, CLEANED_SUFFIX)),
            FileKind::Cleaned
        );
        assert_eq!(
            file_kind(Path::new("d/log.checkpoint.tmp")),
            FileKind::Temporary
        );
        assert_eq!(
            file_kind(Path::new("d/42.log")),
            FileKind::Unknown,
            "20 digits or not ours"
        );
        assert_eq!(file_kind(Path::new("d/notes.txt")), FileKind::Unknown);
    }
}
