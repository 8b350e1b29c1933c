//! Retention: deleting whole closed segments that time (`retention_ms`), size
//! (`retention_bytes`) or the log start offset (DeleteRecords) let go, oldest first, and moving
//! the log start offset up to the first segment kept. The plan is a pure function; applying it
//! writes the new log start offset durably *before* removing files, so a crash midway leaves
//! segments wholly below the start, which recovery removes.

use crate::checkpoint::LogCheckpoint;
use crate::config::LogConfig;
use crate::error::{IoContext, LogError};
use crate::index::TIMESTAMP_NONE;
use crate::log::PartitionLog;
use crate::segment::segment_files_remove;

/// What one `retention_enforce` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
    /// Whether the active segment was rolled first (due by `segment_ms`, or wholly expired).
    pub rolled: bool,
}

/// A closed segment as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClosedSegment {
    pub base_offset: i64,
    /// The base offset of the segment after it: every offset of this one is below.
    pub end_offset: i64,
    pub size_bytes: u64,
    pub timestamp_max: i64,
}

/// How many of the oldest closed segments may go. A segment goes if it lies wholly below the
/// log start offset, or (delete policy) its newest timestamp is older than `retention_ms`, or
/// (delete policy) the log without it is still at least `retention_bytes` (Kafka's rule: never
/// go below the limit). The first segment that stays stops the count: deletion is a prefix.
/// A segment without timestamps has no age and is kept by time.
pub(crate) fn deletable_count(
    closed: &[ClosedSegment],
    log_bytes: u64,
    config: &LogConfig,
    now_ms: i64,
    log_start_offset: i64,
) -> usize {
    let deletes = config.cleanup_policy.deletes();
    let mut remaining_bytes = log_bytes;
    let mut count = 0;
    for segment in closed {
        let below_start = segment.end_offset <= log_start_offset;
        let expired = deletes
            && segment.timestamp_max != TIMESTAMP_NONE
            && config
                .retention_ms
                .is_some_and(|ms| now_ms.saturating_sub(segment.timestamp_max) > ms);
        let oversize = deletes
            && config
                .retention_bytes
                .is_some_and(|limit| remaining_bytes - segment.size_bytes >= limit);
        if !(below_start || expired || oversize) {
            break;
        }
        remaining_bytes -= segment.size_bytes;
        count += 1;
    }
    count
}

impl PartitionLog {
    /// Applies retention; see the module doc. Never deletes the active segment: it is rolled
    /// first when due by `segment_ms` or when all of it has expired, so a quiet partition's data
    /// can age out.
    pub fn retention_enforce(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        self.clock_observe(now_ms);
        let rolled = self.retention_roll_due(now_ms);
        if rolled {
            self.roll(now_ms)?;
        }
        let closed = self.closed_segments();
        let count = deletable_count(
            &closed,
            self.size_bytes(),
            &self.config,
            now_ms,
            self.log_start_offset,
        );
        let mut outcome = RetentionOutcome {
            rolled,
            log_start_offset: self.log_start_offset,
            ..Default::default()
        };
        if count == 0 {
            return Ok(outcome);
        }
        let log_start_offset = self.log_start_offset.max(closed[count - 1].end_offset);
        assert!(
            log_start_offset <= self.recovery_point,
            "closed segments are synced at roll"
        );
        self.log_start_offset = log_start_offset;
        LogCheckpoint {
            log_start_offset,
            recovery_point: self.recovery_point,
        }
        .write(&*self.disk, &self.dir)?;
        for segment in &closed[..count] {
            self.segments
                .remove(&segment.base_offset)
                .expect("a closed segment");
            segment_files_remove(&*self.disk, &self.dir, segment.base_offset)?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size_bytes;
        }
        self.disk.sync_dir(&self.dir).context("sync", &self.dir)?;
        self.epochs_truncate_from_start()?;
        tracing::info!(dir = %self.dir.display(), ?outcome, "retention deleted segments");
        outcome.log_start_offset = log_start_offset;
        Ok(outcome)
    }

    fn retention_roll_due(&self, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let expired = self.config.cleanup_policy.deletes()
            && active.timestamp_max() != TIMESTAMP_NONE
            && self
                .config
                .retention_ms
                .is_some_and(|ms| now_ms.saturating_sub(active.timestamp_max()) > ms);
        expired || self.roll_due_by_time(now_ms)
    }

    pub(crate) fn closed_segments(&self) -> Vec<ClosedSegment> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        bases
            .windows(2)
            .map(|pair| {
                let segment = &self.segments[&pair[0]];
                ClosedSegment {
                    base_offset: pair[0],
                    end_offset: pair[1],
                    size_bytes: segment.size_bytes(),
                    timestamp_max: segment.timestamp_max(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CleanupPolicy;

    fn segments(specs: &[(i64, u64, i64)]) -> Vec<ClosedSegment> {
        specs
            .windows(2)
            .map(|pair| ClosedSegment {
                base_offset: pair[0].0,
                end_offset: pair[1].0,
                size_bytes: pair[0].1,
                timestamp_max: pair[0].2,
            })
            .collect()
    }

    fn config(
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
        cleanup_policy: CleanupPolicy,
    ) -> LogConfig {
        LogConfig {
            retention_ms,
            retention_bytes,
            cleanup_policy,
            ..LogConfig::kafka_defaults()
        }
    }

    #[test]
    fn each_rule_deletes_a_prefix() {
        // (base, bytes, newest timestamp); the last entry stands for the active segment.
        let closed = segments(&[(0, 100, 10), (5, 100, 60), (9, 100, 20), (12, 100, 99)]);
        let log_bytes = 400;
        let by_time = config(Some(45), None, CleanupPolicy::Delete);
        let stops = deletable_count(&closed, log_bytes, &by_time, 100, 0);
        assert_eq!(
            stops, 1,
            "stops at the kept one, though the one after it expired"
        );
        assert_eq!(deletable_count(&closed, log_bytes, &by_time, 110, 0), 3);
        assert_eq!(
            deletable_count(&closed, log_bytes, &by_time, 55, 0),
            0,
            "45 ms is not older"
        );
        let by_size = config(None, Some(150), CleanupPolicy::Delete);
        assert_eq!(
            deletable_count(&closed, log_bytes, &by_size, 0, 0),
            2,
            "never below the limit"
        );
        let none = config(None, None, CleanupPolicy::Delete);
        assert_eq!(
            deletable_count(&closed, log_bytes, &none, 0, 9),
            2,
            "below the log start"
        );
        assert_eq!(deletable_count(&closed, log_bytes, &none, 0, 8), 1);
        let compact = config(Some(0), Some(0), CleanupPolicy::Compact);
        assert_eq!(
            deletable_count(&closed, log_bytes, &compact, 1000, 0),
            0,
            "compact keeps all"
        );
        assert_eq!(deletable_count(&closed, log_bytes, &compact, 1000, 5), 1);
        let untimed = segments(&[(0, 100, TIMESTAMP_NONE), (5, 100, 50)]);
        assert_eq!(
            deletable_count(&untimed, 200, &by_time, 1000, 0),
            0,
            "no timestamp, no age"
        );
    }
}
