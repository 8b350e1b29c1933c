//! Retention: deleting whole closed segments that time (`retention_ms`), size
//! (`retention_bytes`) or the log start offset (DeleteRecords) let go, oldest first, and moving
//! the log start offset up to the first segment kept. The plan is a pure function; applying it
//! writes the new log start offset durably *before* removing files, so a crash midway leaves
//! segments wholly below the start, which recovery removes.

use crate::checkpoint::LogCheckpoint;
use crate::config::LogConfig;
use crate::error::{IoContext, LogError};
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
    /// The segment file's last-modified time (`Segment::modified_ms`).
    pub modified_ms: i64,
}

/// The time a segment's age counts from: Kafka's `LogSegment.largestTimestamp`. That is the
/// newest record timestamp if there is a valid one (at least 0), else the file's last-modified
/// time. Records without a timestamp (-1, librdkafka's "no timestamp") thus age from their
/// append, never from 1970. A timestamp of 0 or far in the past is valid and ages from there;
/// one far in the future keeps the segment until then (both are Kafka's behaviour).
pub(crate) fn timestamp_largest(timestamp_max: i64, modified_ms: i64) -> i64 {
    match timestamp_max >= 0 {
        true => timestamp_max,
        false => modified_ms,
    }
}

/// Whether a segment is older than `retention_ms` (Kafka's `retention.ms` rule: strictly more
/// than the retention has passed since its largest timestamp).
fn expired_by_time(timestamp_max: i64, modified_ms: i64, retention_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(timestamp_largest(timestamp_max, modified_ms)) > retention_ms
}

/// How many of the oldest closed segments may go. A segment goes if it lies wholly below the
/// log start offset, or (delete policy) its newest timestamp is older than `retention_ms`, or
/// (delete policy) the log without it is still at least `retention_bytes` (Kafka's rule: never
/// go below the limit). The first segment that stays stops the count: deletion is a prefix.
/// A segment without valid timestamps ages from its last modification (`timestamp_largest`).
#[cfg(test)]
pub(crate) fn deletable_count(
    closed: &[ClosedSegment],
    log_bytes: u64,
    config: &LogConfig,
    now_ms: i64,
    log_start_offset: i64,
) -> usize {
    deletable_count_planted(closed, log_bytes, config, now_ms, log_start_offset, false)
}

/// `deletable_count`; `size_one_too_many` is the planted bug `RetentionSizeOneTooMany`.
fn deletable_count_planted(
    closed: &[ClosedSegment],
    log_bytes: u64,
    config: &LogConfig,
    now_ms: i64,
    log_start_offset: i64,
    size_one_too_many: bool,
) -> usize {
    let deletes = config.cleanup_policy.deletes();
    let mut remaining_bytes = log_bytes;
    let mut count = 0;
    for segment in closed {
        let below_start = segment.end_offset <= log_start_offset;
        let expired = deletes
            && config.retention_ms.is_some_and(|ms| {
                expired_by_time(segment.timestamp_max, segment.modified_ms, ms, now_ms)
            });
        let oversize = deletes
            && config
                .retention_bytes
                .is_some_and(|limit| match size_one_too_many {
                    // "Delete while the log is over the limit": the last deletion takes it below.
                    true => remaining_bytes > limit,
                    false => remaining_bytes - segment.size_bytes >= limit,
                });
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
        let mut closed = self.closed_segments();
        if crate::PlantedBug::active(self.planted, crate::PlantedBug::RetentionByModifiedTime) {
            for segment in &mut closed {
                segment.timestamp_max = -1;
            }
        }
        let count = deletable_count_planted(
            &closed,
            self.size_bytes(),
            &self.config,
            now_ms,
            self.log_start_offset,
            crate::PlantedBug::active(self.planted, crate::PlantedBug::RetentionSizeOneTooMany),
        );
        let mut outcome = RetentionOutcome {
            rolled,
            log_start_offset: self.log_start_offset,
            ..Default::default()
        };
        // A segment closed while a group commit was in flight is not durable until it returns
        // (`flushes_in_flight`): it waits for a later pass.
        let durable = closed
            .iter()
            .take_while(|segment| segment.end_offset <= self.recovery_point)
            .count();
        let count = count.min(durable);
        if count == 0 {
            return Ok(outcome);
        }
        let log_start_offset = self.log_start_offset.max(closed[count - 1].end_offset);
        assert!(
            log_start_offset <= self.recovery_point,
            "closed segments below the recovery point were synced"
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
        self.producer_snapshots_trim()?;
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
            && self.config.retention_ms.is_some_and(|ms| {
                expired_by_time(active.timestamp_max(), active.modified_ms(), ms, now_ms)
            });
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
                    modified_ms: segment.modified_ms(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CleanupPolicy;

    /// (base, bytes, newest timestamp, last modified); the last entry stands for the active
    /// segment and only gives the end offset of the one before it.
    fn segments(specs: &[(i64, u64, i64, i64)]) -> Vec<ClosedSegment> {
        specs
            .windows(2)
            .map(|pair| ClosedSegment {
                base_offset: pair[0].0,
                end_offset: pair[1].0,
                size_bytes: pair[0].1,
                timestamp_max: pair[0].2,
                modified_ms: pair[0].3,
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
        let closed = segments(&[
            (0, 100, 10, 0),
            (5, 100, 60, 0),
            (9, 100, 20, 0),
            (12, 100, 99, 0),
        ]);
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
    }

    const NOW_MS: i64 = 1_700_000_000_000;
    const DAY_MS: i64 = 24 * 3600 * 1000;
    const WEEK_MS: i64 = 7 * DAY_MS;

    /// One line per segment: its newest timestamp and last-modified time, both relative to now
    /// where that reads better, and whether a 7-day `retention.ms` deletes it now.
    fn by_time(cases: &[(&str, i64, i64)]) -> String {
        let config = config(Some(WEEK_MS), None, CleanupPolicy::Delete);
        let lines: Vec<String> = cases
            .iter()
            .map(|&(name, timestamp_max, modified_ms)| {
                let closed = segments(&[(0, 100, timestamp_max, modified_ms), (1, 0, 0, 0)]);
                let verdict = match deletable_count(&closed, 100, &config, NOW_MS, 0) {
                    0 => "kept",
                    _ => "deleted",
                };
                format!("{name}: {verdict}")
            })
            .collect();
        lines.join("\n")
    }

    /// Kafka's rule (`LogSegment.largestTimestamp`): the newest valid record timestamp, else
    /// the file's last-modified time. Issue 8: librdkafka's "no timestamp" (-1) batches were
    /// deleted about 30 s after they were acknowledged.
    #[test]
    fn time_retention_ages_a_segment_as_kafka_does() {
        insta::assert_snapshot!(by_time(&[
            ("-1, appended 30 s ago", -1, NOW_MS - 30_000),
            ("-1, appended 8 days ago", -1, NOW_MS - 8 * DAY_MS),
            ("-1, appended exactly 7 days ago", -1, NOW_MS - WEEK_MS),
            ("-7 (invalid), appended 30 s ago", -7, NOW_MS - 30_000),
            ("0, appended 30 s ago", 0, NOW_MS - 30_000),
            ("far past (1 s after 1970), appended now", 1_000, NOW_MS),
            ("an hour ago, appended 8 days ago", NOW_MS - 3_600_000, NOW_MS - 8 * DAY_MS),
            ("8 days ago, appended now", NOW_MS - 8 * DAY_MS, NOW_MS),
            ("far future (10 years on), appended 8 days ago", NOW_MS + 520 * WEEK_MS, NOW_MS - 8 * DAY_MS),
            ("i64::MAX, appended 8 days ago", i64::MAX, NOW_MS - 8 * DAY_MS),
            ("i64::MIN, appended 30 s ago", i64::MIN, NOW_MS - 30_000),
        ]), @r"
        -1, appended 30 s ago: kept
        -1, appended 8 days ago: deleted
        -1, appended exactly 7 days ago: kept
        -7 (invalid), appended 30 s ago: kept
        0, appended 30 s ago: deleted
        far past (1 s after 1970), appended now: deleted
        an hour ago, appended 8 days ago: kept
        8 days ago, appended now: deleted
        far future (10 years on), appended 8 days ago: kept
        i64::MAX, appended 8 days ago: kept
        i64::MIN, appended 30 s ago: kept
        ");
    }

    #[test]
    fn time_retention_of_mixed_segments_is_a_prefix() {
        let config = config(Some(WEEK_MS), None, CleanupPolicy::Delete);
        let old = NOW_MS - 8 * DAY_MS;
        let recent = NOW_MS - 30_000;
        // An untimed, recently appended segment shields an old timed one after it.
        let shielding = segments(&[(0, 100, -1, recent), (5, 100, 0, recent), (9, 0, 0, 0)]);
        assert_eq!(deletable_count(&shielding, 200, &config, NOW_MS, 0), 0);
        // Timed-old, untimed-old, then untimed-recent: the first two go.
        let mixed = segments(&[
            (0, 100, 5, recent),
            (5, 100, -1, old),
            (9, 100, -1, recent),
            (12, 0, 0, 0),
        ]);
        assert_eq!(deletable_count(&mixed, 300, &config, NOW_MS, 0), 2);
    }
}
