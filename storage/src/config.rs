//! `LogConfig`: the per-topic settings one partition log obeys (Kafka's topic-level configs with
//! Kafka's names and defaults), and the hard limits no configuration may exceed.

/// Bytes in a kibibyte, mebibyte and gibibyte, for readable limits.
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// A segment must hold at least one batch header; smaller would roll on every append.
pub const SEGMENT_BYTES_MIN: u64 = wire::batch::BATCH_HEADER_BYTES as u64;
/// Index positions are `u32` (Kafka's format) and Kafka caps `segment.bytes` at `i32::MAX`.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// The largest batch the log ever stores, leader or follower: a batch length is an `i32`.
pub const MESSAGE_BYTES_MAX: u32 = i32::MAX as u32;

// A segment may overshoot `segment_bytes` by one batch (a batch larger than the segment goes into a
// fresh segment of its own), and every position in it must still fit the index's `u32`.
const _: () = assert!(SEGMENT_BYTES_MAX + MESSAGE_BYTES_MAX as u64 <= u32::MAX as u64);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);

/// Which retention mechanisms apply (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Delete whole segments by age and size.
    Delete,
    /// Keep the latest record per key; never delete by age or size.
    Compact,
    /// Both (`compact,delete`).
    CompactAndDelete,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Delete | CleanupPolicy::CompactAndDelete
        )
    }
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }
}

/// Which timestamp a stored batch carries (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps, stored verbatim.
    CreateTime,
    /// The broker stamps every batch with its wall clock at append.
    LogAppendTime,
}

/// The settings of one partition log. Built explicitly (`kafka_defaults` plus overrides), never
/// from a global, so every choice is visible at the call site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it would exceed this many bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment once its first append is this old (`segment.ms`).
    pub segment_ms: i64,
    /// Delete closed segments whose newest timestamp (or, with no valid record timestamp, last
    /// modification) is older than this (`retention.ms`); `None` keeps data forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while the log stays at least this big
    /// (`retention.bytes`); `None` has no size limit.
    pub retention_bytes: Option<u64>,
    pub cleanup_policy: CleanupPolicy,
    /// Compaction keeps a tombstone this long after its timestamp (`delete.retention.ms`), so
    /// consumers that are behind still see the delete.
    pub delete_retention_ms: i64,
    /// Bytes of batches between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// The largest batch a producer may append (`max.message.bytes`).
    pub max_message_bytes: u32,
    pub message_timestamp_type: TimestampType,
}

/// A configuration the log cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("segment_bytes {value} is outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]")]
    SegmentBytes { value: u64 },
    #[error("max_message_bytes {value} is outside [1, {MESSAGE_BYTES_MAX}]")]
    MaxMessageBytes { value: u32 },
    #[error("{name} {value} must not be negative")]
    Negative { name: &'static str, value: i64 },
    #[error("index_interval_bytes must be at least 1")]
    IndexInterval,
}

impl LogConfig {
    /// Kafka's broker defaults: 1 GiB segments rolled weekly, 7-day retention without a size
    /// limit, delete policy, 1-day tombstone retention, an index entry per 4 KiB, 1 MiB + 12 B
    /// batches, producer timestamps.
    pub fn kafka_defaults() -> LogConfig {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: GIB,
            segment_ms: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DAY_MS,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
        }
    }

    /// Checks the limits. The broker validates topic configs on the way in; the log re-checks so
    /// a bad value is an error at `open`, never a corrupt segment.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(ConfigError::SegmentBytes {
                value: self.segment_bytes,
            });
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > MESSAGE_BYTES_MAX {
            return Err(ConfigError::MaxMessageBytes {
                value: self.max_message_bytes,
            });
        }
        let durations = [
            ("segment_ms", self.segment_ms),
            ("delete_retention_ms", self.delete_retention_ms),
            ("retention_ms", self.retention_ms.unwrap_or(0)),
        ];
        for (name, value) in durations {
            if value < 0 {
                return Err(ConfigError::Negative { name, value });
            }
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError::IndexInterval);
        }
        Ok(())
    }
}
