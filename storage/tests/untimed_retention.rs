//! Issue 8: records produced without a timestamp must not be deleted by time retention as if
//! they were written in 1970. librdkafka sends them as records with timestamp -1 in a batch whose
//! header says MaxTimestamp 0; Kafka recomputes the max from the records (-1) and then ages the
//! segment by its last-modified time (`LogSegment.largestTimestamp`). These tests drive a log
//! through appends, retention passes and restarts on that clock.

mod common;

use common::*;
use kafka_protocol::records::Compression;
use runtime::Disk;
use std::sync::Arc;
use storage::{LogConfig, PartitionLog};
use wire::batch::build::batch_encode;
use wire::ValidatedBatch;

const APPENDED_MS: i64 = 1_700_000_000_000;
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

fn config_week() -> LogConfig {
    LogConfig {
        retention_ms: Some(WEEK_MS),
        ..LogConfig::kafka_defaults()
    }
}

/// One batch as librdkafka builds it for `produce(..., timestamp=-1)`: each record's timestamp
/// is -1, the header's base timestamp -1 and its MaxTimestamp 0 (its running max starts at 0).
fn batch_untimed(compression: Compression) -> ValidatedBatch {
    let batch = batch_encode(&[record(None, Some("v"), -1)], compression);
    let mut bytes = batch.bytes().to_vec();
    bytes[27..35].copy_from_slice(&(-1i64).to_be_bytes());
    bytes[35..43].copy_from_slice(&0i64.to_be_bytes());
    let crc = wire::batch::crc_compute(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let batch = ValidatedBatch::validate(bytes.into()).expect("valid");
    assert_eq!(batch.header().max_timestamp, 0, "librdkafka's header");
    batch
}

fn open_at(disk: &Arc<runtime::MemDisk>, now_ms: i64) -> PartitionLog {
    let disk: Arc<dyn Disk> = disk.clone();
    PartitionLog::open(disk, dir(), config_week(), now_ms).expect("open")
}

/// `low..high` after a retention pass at `now_ms`.
fn offsets_after_retention(log: &mut PartitionLog, now_ms: i64) -> (i64, i64) {
    log.retention_enforce(now_ms).expect("retention");
    (log.log_start_offset(), log.log_end_offset())
}

#[test]
fn untimed_records_age_from_their_append() {
    for compression in [Compression::None, Compression::Gzip] {
        let disk = mem_disk();
        let mut log = open_at(&disk, APPENDED_MS);
        for _ in 0..5 {
            log.append(batch_untimed(compression), 0, APPENDED_MS)
                .unwrap();
        }
        log.flush().unwrap();
        let stored = log.read(0, usize::MAX, i64::MAX).unwrap();
        let stored = ValidatedBatch::validate_all(stored.bytes).unwrap();
        assert!(
            stored
                .iter()
                .all(|batch| batch.header().max_timestamp == -1),
            "the header's max is the records' (Kafka's LogValidator), for {compression:?}"
        );
        // The observation: gone 30 s after the acknowledgement.
        let after_30_s = offsets_after_retention(&mut log, APPENDED_MS + 30_000);
        assert_eq!(after_30_s, (0, 5), "{compression:?}");
        let after_a_week = offsets_after_retention(&mut log, APPENDED_MS + WEEK_MS);
        assert_eq!(after_a_week, (0, 5), "not older than the retention yet");
        // Kafka's fallback: a segment without timestamps ages from its last modification.
        let after_more = offsets_after_retention(&mut log, APPENDED_MS + WEEK_MS + 1);
        assert_eq!(after_more, (5, 5), "{compression:?}");
    }
}

/// After a restart the segment's last-modified time is the time of recovery (the `Disk` seam
/// has no file times): never older than the truth, so a restart postpones deletion only.
#[test]
fn a_restart_postpones_untimed_deletion_never_hastens_it() {
    let disk = mem_disk();
    let mut log = open_at(&disk, APPENDED_MS);
    for _ in 0..5 {
        log.append(batch_untimed(Compression::None), 0, APPENDED_MS)
            .unwrap();
    }
    log.flush().unwrap();
    drop(log);
    let reopened_ms = APPENDED_MS + 8 * 24 * 3600 * 1000;
    let mut log = open_at(&disk, reopened_ms);
    assert_eq!(
        offsets_after_retention(&mut log, reopened_ms + 30_000),
        (0, 5)
    );
    assert_eq!(
        offsets_after_retention(&mut log, reopened_ms + WEEK_MS + 1),
        (5, 5)
    );
}

/// Timestamps 0 and far past are valid: Kafka deletes them by time at once, and so do we. A far
/// future timestamp keeps its segment until then.
#[test]
fn valid_timestamps_age_from_themselves() {
    for (timestamp, expected) in [(0, (1, 1)), (1_000, (1, 1)), (APPENDED_MS * 2, (0, 1))] {
        let disk = mem_disk();
        let mut log = open_at(&disk, APPENDED_MS);
        let batch = batch_encode(&[record(None, Some("v"), timestamp)], Compression::None);
        log.append(batch, 0, APPENDED_MS).unwrap();
        log.flush().unwrap();
        let offsets = offsets_after_retention(&mut log, APPENDED_MS + 30_000);
        assert_eq!(offsets, expected, "timestamp {timestamp}");
    }
}
