//! Shared test helpers: batches, a small config, and a text rendering of a partition directory.
#![allow(dead_code)]

use bytes::Bytes;
use kafka_protocol::records::Compression;
use runtime::disk::read_all;
use runtime::{Disk, MemDisk};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{CleanupPolicy, LogConfig, PartitionLog, TimestampType};
use wire::batch::build::{batch_encode, RecordSpec};
use wire::ValidatedBatch;

pub const DIR: &str = "data/t-0";

pub fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

/// Small segments and a dense index so a few batches exercise rolls and index lookups.
pub fn config_small() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        segment_ms: i64::MAX / 2,
        retention_ms: None,
        retention_bytes: None,
        cleanup_policy: CleanupPolicy::Delete,
        delete_retention_ms: 1_000,
        index_interval_bytes: 100,
        max_message_bytes: 10_000,
        message_timestamp_type: TimestampType::CreateTime,
    }
}

/// One record: `key=value`, `-` for no key, `null` value for a tombstone.
pub fn record(key: Option<&str>, value: Option<&str>, timestamp: i64) -> RecordSpec {
    RecordSpec {
        key: key.map(|key| Bytes::from(key.to_string())),
        value: value.map(|value| Bytes::from(value.to_string())),
        headers: Vec::new(),
        timestamp,
    }
}

/// A batch of `count` keyless records with `value_bytes`-byte values.
pub fn batch_sized(count: usize, value_bytes: usize, timestamp: i64) -> ValidatedBatch {
    let value = "v".repeat(value_bytes);
    let records: Vec<RecordSpec> = (0..count)
        .map(|index| record(None, Some(&value), timestamp + index as i64))
        .collect();
    batch_encode(&records, Compression::None)
}

pub fn mem_disk() -> Arc<MemDisk> {
    MemDisk::new()
}

pub fn open(disk: &Arc<MemDisk>, config: LogConfig) -> PartitionLog {
    let disk: Arc<dyn Disk> = disk.clone();
    PartitionLog::open(disk, dir(), config, 0).expect("open")
}

/// Every file of the directory with its size; each segment also with its batches' offsets.
pub fn layout(disk: &MemDisk, dir: &Path) -> String {
    let mut lines = Vec::new();
    for (path, size) in disk.files() {
        if path.parent() != Some(dir) {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Producer snapshots come with every roll; `tests/producer_state.rs` looks at them.
        if name.ends_with(".snapshot") {
            continue;
        }
        let mut line = format!("{name} {size}B");
        if name.ends_with(".log") {
            let bytes = Bytes::from(read_all(disk, &path).unwrap());
            match ValidatedBatch::validate_prefix(bytes) {
                Ok((batches, rest)) => {
                    let ranges: Vec<String> = batches
                        .iter()
                        .map(|batch| {
                            let header = batch.header();
                            format!("{}..{}", header.base_offset, header.last_offset())
                        })
                        .collect();
                    line.push_str(&format!(" [{}]", ranges.join(" ")));
                    if !rest.is_empty() {
                        line.push_str(&format!(" +{}B partial", rest.len()));
                    }
                }
                Err(error) => line.push_str(&format!(" invalid: {error}")),
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// The batches a read returns, as `base..last` ranges.
pub fn ranges(bytes: &Bytes) -> Vec<(i64, i64)> {
    ValidatedBatch::validate_all(bytes.clone())
        .expect("reads return whole valid batches")
        .iter()
        .map(|batch| (batch.header().base_offset, batch.header().last_offset()))
        .collect()
}
