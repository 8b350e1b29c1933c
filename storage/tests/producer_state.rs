//! Idempotent producers through the log: deduplication, and producer state that survives
//! crashes (snapshots at roll plus the log tail), corrupt snapshots, truncation and retention.

mod common;

use common::*;
use kafka_protocol::records::Compression;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use storage::producer_state::SequenceError;
use storage::{LogError, PartitionLog, Produced};
use wire::batch::build::batch_encode_with;
use wire::ValidatedBatch;

/// One 60-byte record from producer `producer_id`, epoch `epoch`, at `sequence`: three fill a
/// `config_small` segment.
fn idempotent(producer_id: i64, epoch: i16, sequence: i32) -> ValidatedBatch {
    let spec = record(None, Some(&"v".repeat(60)), 100 + i64::from(sequence));
    batch_encode_with(
        &[spec],
        Compression::None,
        producer_id,
        epoch,
        sequence,
        false,
    )
}

fn produce(log: &mut PartitionLog, batch: ValidatedBatch) -> Result<Produced, LogError> {
    log.produce(vec![batch], 0, 0)
}

fn snapshots(disk: &runtime::MemDisk) -> Vec<String> {
    disk.files()
        .into_iter()
        .filter_map(|(path, _)| {
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".snapshot").then_some(name)
        })
        .collect()
}

fn power_loss(disk: &runtime::MemDisk) {
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    );
}

#[test]
fn a_retry_after_a_crash_gets_its_original_offset() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for sequence in 0..8 {
        let produced = produce(&mut log, idempotent(7, 1, sequence)).unwrap();
        assert_eq!(produced.first.base_offset, i64::from(sequence));
        assert!(!produced.duplicate);
    }
    log.flush().unwrap();
    assert_eq!(
        snapshots(&disk),
        [
            "00000000000000000003.snapshot",
            "00000000000000000006.snapshot"
        ]
    );
    drop(log);
    power_loss(&disk);

    let mut log = open(&disk, config_small());
    // Batch 7 lies past the newest snapshot (6): it comes back from the log tail; 4 from the
    // snapshot.
    for (sequence, offset) in [(7, 7), (4, 4)] {
        let retry = produce(&mut log, idempotent(7, 1, sequence)).unwrap();
        assert!(retry.duplicate, "sequence {sequence}");
        assert_eq!(
            (retry.first.base_offset, retry.last_offset),
            (offset, offset)
        );
    }
    assert_eq!(log.log_end_offset(), 8, "no retry was appended");
    assert!(matches!(
        produce(&mut log, idempotent(7, 1, 9)),
        Err(LogError::Sequence(SequenceError::OutOfOrder { .. }))
    ));
    assert!(matches!(
        produce(&mut log, idempotent(7, 0, 8)),
        Err(LogError::Sequence(SequenceError::EpochFenced { .. }))
    ));
    assert!(!produce(&mut log, idempotent(7, 1, 8)).unwrap().duplicate);
}

#[test]
fn unsynced_batches_are_deduplicated_until_a_crash_takes_them() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    produce(&mut log, idempotent(7, 0, 0)).unwrap();
    log.flush().unwrap();
    produce(&mut log, idempotent(7, 0, 1)).unwrap();
    let in_flight = produce(&mut log, idempotent(7, 0, 1)).unwrap();
    assert!(
        in_flight.duplicate,
        "a retry before the fsync is a duplicate"
    );
    assert!(
        in_flight.last_offset >= log.recovery_point(),
        "and must wait for the original's fsync"
    );
    drop(log);
    power_loss(&disk);
    let mut log = open(&disk, config_small());
    assert_eq!(log.log_end_offset(), 1);
    let after = produce(&mut log, idempotent(7, 0, 1)).unwrap();
    assert!(!after.duplicate, "the lost batch is appended anew");
    assert_eq!(after.first.base_offset, 1);
}

#[test]
fn a_corrupt_snapshot_is_ignored_and_the_state_rebuilt() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for sequence in 0..7 {
        produce(&mut log, idempotent(7, 0, sequence)).unwrap();
    }
    log.flush().unwrap();
    let before = log.producers().clone();
    drop(log);
    let newest = dir().join("00000000000000000006.snapshot");
    disk.flip_bit(&newest, 8 * 20).unwrap();
    let log = open(&disk, config_small());
    assert_eq!(log.producers(), &before);
    assert_eq!(
        snapshots(&disk),
        ["00000000000000000003.snapshot"],
        "the corrupt one was removed"
    );
}

#[test]
fn truncation_forgets_the_truncated_batches() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for sequence in 0..8 {
        produce(&mut log, idempotent(7, 0, sequence)).unwrap();
    }
    log.truncate_to(5).unwrap();
    assert_eq!(snapshots(&disk), ["00000000000000000003.snapshot"]);
    assert!(matches!(
        produce(&mut log, idempotent(7, 0, 7)),
        Err(LogError::Sequence(SequenceError::OutOfOrder {
            expected_after: 4,
            ..
        }))
    ));
    let again = produce(&mut log, idempotent(7, 0, 5)).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.first.base_offset, 5);
    assert!(produce(&mut log, idempotent(7, 0, 4)).unwrap().duplicate);
}

#[test]
fn retention_keeps_producer_state_and_the_snapshot_it_needs() {
    let disk = mem_disk();
    let config = storage::LogConfig {
        retention_bytes: Some(387),
        ..config_small()
    };
    let mut log = open(&disk, config.clone());
    for sequence in 0..8 {
        produce(&mut log, idempotent(7, 0, sequence)).unwrap();
    }
    produce(&mut log, idempotent(8, 0, 0)).unwrap();
    log.flush().unwrap();
    let outcome = log.retention_enforce(0).unwrap();
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(snapshots(&disk), ["00000000000000000006.snapshot"]);
    drop(log);
    let mut log = open(&disk, config);
    assert!(produce(&mut log, idempotent(7, 0, 7)).unwrap().duplicate);
    assert!(
        produce(&mut log, idempotent(7, 0, 3)).unwrap().duplicate,
        "kept past its deletion, as KIP-360 asks"
    );
    assert_eq!(log.producers().len(), 2);
    assert_eq!(log.producers_expire(1_000, 1_000), 0);
    assert_eq!(log.producers_expire(100 + 8 + 1_000, 1_000), 2);
    assert!(
        !produce(&mut log, idempotent(7, 0, 7)).unwrap().duplicate,
        "an expired producer is unknown"
    );
}

#[test]
fn a_log_restarted_at_an_offset_has_no_producers() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for sequence in 0..4 {
        produce(&mut log, idempotent(7, 0, sequence)).unwrap();
    }
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(snapshots(&disk).is_empty());
    assert!(log.producers().is_empty());
    assert_eq!(
        produce(&mut log, idempotent(7, 0, 9))
            .unwrap()
            .first
            .base_offset,
        100
    );
}

/// Compaction keeps a producer's last data batch even when it removes every record of it, as
/// its header alone (Kafka's cleaner: `RETAIN_EMPTY`), and drops the producer's other emptied
/// batches: a replay of the log still knows each producer's last sequence, and a consumer whose
/// position reaches a removed tombstone at the end of a closed segment has a batch to move past
/// (single-compaction 297446326: the final reader sat one below the log end for good).
#[test]
fn compaction_keeps_a_producers_last_batch_as_its_header() {
    let disk = mem_disk();
    let config = storage::LogConfig {
        cleanup_policy: storage::CleanupPolicy::Compact,
        segment_ms: 10,
        delete_retention_ms: 100,
        ..config_small()
    };
    let keyed = |producer_id: i64, sequence: i32, value: Option<&str>, timestamp: i64| {
        let spec = record(Some("k"), value, timestamp);
        batch_encode_with(&[spec], Compression::None, producer_id, 0, sequence, false)
    };
    let mut log = open(&disk, config.clone());
    produce(&mut log, keyed(7, 0, Some("1"), 100)).unwrap();
    produce(&mut log, keyed(8, 0, Some("2"), 101)).unwrap();
    produce(&mut log, keyed(7, 1, None, 102)).unwrap();
    log.flush().unwrap();
    assert!(log.retention_enforce(200).unwrap().rolled);
    assert_eq!(log.compact(1_000).unwrap().records_removed, 3);
    let emptied = |log: &PartitionLog| -> Vec<(i64, i64, i32)> {
        let read = log.read(0, 10_000, log.log_end_offset()).unwrap();
        ValidatedBatch::validate_all(read.bytes)
            .unwrap()
            .iter()
            .map(|batch| {
                let header = batch.header();
                (
                    header.base_offset,
                    header.last_offset(),
                    header.record_count,
                )
            })
            .collect()
    };
    assert_eq!(
        emptied(&log),
        [(1, 1, 0), (2, 2, 0)],
        "each producer's last batch stays, without records; producer 7's first goes"
    );
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.compact(2_000).unwrap().records_removed, 0);
    assert_eq!(
        emptied(&log),
        [(1, 1, 0), (2, 2, 0)],
        "a second pass keeps them"
    );
    drop(log);
    for name in snapshots(&disk) {
        runtime::Disk::remove_file(&*disk, &dir().join(name)).unwrap();
    }
    let mut log = open(&disk, config);
    for (producer_id, sequence, offset) in [(7, 1, 2), (8, 0, 1)] {
        let retry = produce(&mut log, keyed(producer_id, sequence, None, 300)).unwrap();
        assert!(
            retry.duplicate,
            "producer {producer_id} rebuilt from the log"
        );
        assert_eq!(retry.first.base_offset, offset);
    }
}
