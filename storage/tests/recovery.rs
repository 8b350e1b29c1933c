//! Recovery corners, one test each: the directory is damaged by hand on a `MemDisk` the way a
//! crash or the disk could leave it, then reopened. `reopened` renders what recovery made of it:
//! the files, the offsets, and the batches a full read returns (reads check every CRC).

mod common;

use common::*;
use rand::SeedableRng;
use runtime::disk::{read_all, CrashOptions};
use runtime::{Disk, DiskFile, MemDisk, OpenMode};
use std::path::PathBuf;
use std::sync::Arc;
use storage::{CleanupPolicy, LogConfig, PartitionLog};

fn segment(base_offset: i64, suffix: &str) -> PathBuf {
    dir().join(format!("{base_offset:020}.{suffix}"))
}

fn file(disk: &MemDisk, path: &std::path::Path) -> Arc<dyn DiskFile> {
    disk.open(path, OpenMode::Create).unwrap()
}

/// A log of `count` one-record batches (129 bytes each: three per 400-byte segment), flushed.
fn log_written(disk: &Arc<MemDisk>, config: LogConfig, count: i64) -> PartitionLog {
    let mut log = open(disk, config);
    for index in 0..count {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    log.flush().unwrap();
    log
}

/// Opens the log again and renders it; checks that every offset reads back whole batches.
fn reopened(disk: &Arc<MemDisk>, config: LogConfig) -> String {
    let log = open(disk, config);
    let everything = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX)
        .unwrap();
    let batches = ranges(&everything.bytes);
    for offset in log.log_start_offset()..log.log_end_offset() {
        let one = log.read(offset, 1, i64::MAX).unwrap();
        // The batch that holds `offset`, or after a gap (compaction) the next one.
        let expected = batches.iter().find(|(_, last)| *last >= offset);
        assert_eq!(
            ranges(&one.bytes).first(),
            expected,
            "read at offset {offset}"
        );
    }
    format!(
        "{}\nlog_start={} log_end={} recovery_point={} read={:?}",
        layout(disk, &dir()),
        log.log_start_offset(),
        log.log_end_offset(),
        log.recovery_point(),
        ranges(&everything.bytes)
    )
}

#[test]
fn empty_directory_and_empty_segment() {
    let disk = mem_disk();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 0B []
    leader-epoch-checkpoint 4B
    log.checkpoint 75B
    log_start=0 log_end=0 recovery_point=0 read=[]
    ");
    // A crash during a roll can leave the new segment empty: it becomes the active segment.
    drop(log_written(&disk, config_small(), 3));
    file(&disk, &segment(3, "log"));
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 0B []
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=3 recovery_point=3 read=[(0, 0), (1, 1), (2, 2)]
    ");
}

#[test]
fn torn_header_is_cut() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 2));
    let next = batch_sized(1, 60, 0).with_placement(2, 0);
    file(&disk, &segment(0, "log"))
        .write_at(&next.bytes()[..30], 258)
        .unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 258B [0..0 1..1]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=2 recovery_point=2 read=[(0, 0), (1, 1)]
    ");
}

#[test]
fn torn_body_is_cut() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 2));
    let next = batch_sized(1, 60, 0).with_placement(2, 0);
    file(&disk, &segment(0, "log"))
        .write_at(&next.bytes()[..100], 258)
        .unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 258B [0..0 1..1]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=2 recovery_point=2 read=[(0, 0), (1, 1)]
    ");
}

#[test]
fn bad_crc_cuts_the_log_there_and_drops_later_segments() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 5));
    // Byte 200 lies in the second batch of the first segment; the checkpoint says that segment is
    // clean, so remove the checkpoint to force the scan a torn write would get.
    disk.flip_bit(&segment(0, "log"), 200 * 8).unwrap();
    disk.remove_file(&dir().join("log.checkpoint")).unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 129B [0..0]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=1 recovery_point=1 read=[(0, 0)]
    ");
}

#[test]
fn bad_crc_in_a_clean_segment_is_never_served() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 5));
    disk.flip_bit(&segment(0, "log"), 200 * 8).unwrap();
    let log = open(&disk, config_small());
    let error = log.read(1, 1, i64::MAX).unwrap_err();
    insta::assert_snapshot!(error, @"data/t-0/00000000000000000000.log: corrupt at byte 129: CRC mismatch: stored 0x66f12850, computed 0xd384f6a4");
    let first = log.read(0, usize::MAX, i64::MAX).unwrap();
    assert_eq!(
        ranges(&first.bytes),
        [(0, 0)],
        "the good prefix is served, the bad batch is not"
    );
}

#[test]
fn zero_filled_hole_is_cut() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 4));
    // A torn sector of the active segment reads as zeros (what MemDisk tears produce).
    file(&disk, &segment(3, "log"))
        .write_at(&[0; 512], 0)
        .unwrap();
    file(&disk, &segment(3, "log")).truncate(129).unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 0B []
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=3 recovery_point=3 read=[(0, 0), (1, 1), (2, 2)]
    ");
    // And zeros after the last batch.
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 2));
    file(&disk, &segment(0, "log"))
        .write_at(&[0; 512], 258)
        .unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 258B [0..0 1..1]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=2 recovery_point=2 read=[(0, 0), (1, 1)]
    ");
}

#[test]
fn offsets_that_go_back_are_cut() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 2));
    let stale = batch_sized(1, 60, 0).with_placement(1, 0);
    file(&disk, &segment(0, "log"))
        .write_at(stale.bytes(), 258)
        .unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 258B [0..0 1..1]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=2 recovery_point=2 read=[(0, 0), (1, 1)]
    ");
}

#[test]
fn missing_index_is_rebuilt() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 7));
    let before = read_all(&*disk, &segment(0, "index")).unwrap();
    let time_before = read_all(&*disk, &segment(0, "timeindex")).unwrap();
    disk.remove_file(&segment(0, "index")).unwrap();
    disk.remove_file(&segment(3, "timeindex")).unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.index 16B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000003.timeindex 36B
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=7 recovery_point=7 read=[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    ");
    assert_eq!(
        read_all(&*disk, &segment(0, "index")).unwrap(),
        before,
        "rebuilt identically"
    );
    assert_eq!(
        read_all(&*disk, &segment(0, "timeindex")).unwrap(),
        time_before
    );
}

#[test]
fn garbage_and_stale_indexes_are_rebuilt() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 7));
    let good = read_all(&*disk, &segment(0, "index")).unwrap();
    for damage in [
        vec![0xab; 16],
        vec![0; 8],
        vec![1, 2, 3],
        [0, 0, 0, 1, 0, 0, 0, 5].to_vec(),
    ] {
        runtime::disk::write_atomic(&*disk, &segment(0, "index"), &damage).unwrap();
        runtime::disk::write_atomic(&*disk, &segment(3, "timeindex"), &damage).unwrap();
        let log = open(&disk, config_small());
        let all = log.read(0, usize::MAX, i64::MAX).unwrap();
        assert_eq!(all.batch_count, 7, "{damage:?}");
        assert_eq!(
            read_all(&*disk, &segment(0, "index")).unwrap(),
            good,
            "{damage:?}"
        );
    }
}

#[test]
fn index_files_of_the_active_segment_are_removed() {
    // A crash during a roll after the closing segment's indexes were written but before the
    // new segment existed leaves the old segment active with index files that would go stale.
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 4));
    runtime::disk::write_atomic(&*disk, &segment(3, "index"), &[]).unwrap();
    runtime::disk::write_atomic(&*disk, &segment(3, "timeindex"), &[]).unwrap();
    let mut log = open(&disk, config_small());
    log.append(batch_sized(1, 60, 0), 0, 0).unwrap();
    drop(log);
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 258B [3..3 4..4]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=5 recovery_point=5 read=[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    ");
}

#[test]
fn leftover_temporary_files_are_removed() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 2));
    file(&disk, &dir().join("log.checkpoint.tmp"))
        .write_at(b"half", 0)
        .unwrap();
    file(&disk, &dir().join(format!("{:020}-{:020}.cleaned", 0, 3)))
        .write_at(b"x", 0)
        .unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.log 258B [0..0 1..1]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=2 recovery_point=2 read=[(0, 0), (1, 1)]
    ");
}

#[test]
fn unreadable_checkpoints_mean_a_full_scan() {
    let disk = mem_disk();
    drop(log_written(&disk, config_small(), 5));
    runtime::disk::write_atomic(&*disk, &dir().join("log.checkpoint"), b"garbage").unwrap();
    runtime::disk::write_atomic(&*disk, &dir().join("leader-epoch-checkpoint"), b"0\n9\n").unwrap();
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 258B [3..3 4..4]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=5 recovery_point=5 read=[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    ");
}

#[test]
fn interrupted_retention_is_finished() {
    // Retention writes the new log start first; a crash before the files go leaves them.
    let disk = mem_disk();
    let mut log = log_written(&disk, config_small(), 7);
    log.advance_log_start_offset(6).unwrap();
    drop(log);
    insta::assert_snapshot!(reopened(&disk, config_small()), @"
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=6 log_end=7 recovery_point=7 read=[(6, 6)]
    ");
}

fn config_compact() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..config_small()
    }
}

/// Two same-keyed batches per closed segment, so compaction has something to remove.
fn log_keyed(disk: &Arc<MemDisk>) -> PartitionLog {
    let mut log = open(disk, config_compact());
    for index in 0..7 {
        let key = format!("k{}", index % 2);
        let batch = wire::batch::build::batch_encode(
            &[record(Some(&key), Some(&"v".repeat(60)), 100 + index)],
            kafka_protocol::records::Compression::None,
        );
        log.append(batch, 0, 0).unwrap();
    }
    log.flush().unwrap();
    log
}

#[test]
fn interrupted_compaction_before_the_swap_keeps_the_old_segments() {
    let disk = mem_disk();
    drop(log_keyed(&disk));
    let before = layout(&disk, &dir());
    file(&disk, &dir().join(format!("{:020}-{:020}.cleaned", 0, 6)))
        .write_at(&[7; 100], 0)
        .unwrap();
    let after = reopened(&disk, config_compact());
    assert!(after.starts_with(&before), "{before}\n---\n{after}");
}

#[test]
fn interrupted_compaction_after_the_swap_installs_the_new_segment() {
    // Compact one copy of the log to learn the result, then leave a second copy in the state a
    // crash right after the commit point leaves: the `.swap` file beside all old segments.
    let compacted = mem_disk();
    let mut log = log_keyed(&compacted);
    // Segments big enough to merge both closed segments into one compacted segment.
    log.config_update(LogConfig {
        segment_bytes: 1000,
        ..config_compact()
    });
    log.compact(1_000).unwrap();
    drop(log);
    let cleaned = read_all(&*compacted, &segment(0, "log")).unwrap();
    let disk = mem_disk();
    drop(log_keyed(&disk));
    let swap = dir().join(format!("{:020}-{:020}.swap", 0, 6));
    file(&disk, &swap).write_at(&cleaned, 0).unwrap();
    let render = reopened(&disk, config_compact());
    assert_eq!(render, reopened(&compacted, config_compact()));
    insta::assert_snapshot!(render, @"
    00000000000000000000.index 8B
    00000000000000000000.log 262B [4..4 5..5]
    00000000000000000000.timeindex 24B
    00000000000000000006.log 131B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=7 recovery_point=7 read=[(4, 4), (5, 5), (6, 6)]
    ");
}

#[test]
fn torn_crashes_recover_a_prefix_of_the_appends() {
    for seed in 0..100 {
        let disk = mem_disk();
        let mut log = log_written(&disk, config_small(), 4);
        for index in 0..5 {
            log.append(batch_sized(1 + index % 3, 40, 200 + index as i64), 0, 0)
                .unwrap();
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        disk.crash(CrashOptions::Tear, &mut rng);
        let log = open(&disk, config_small());
        assert!(
            log.log_end_offset() >= 4,
            "seed {seed}: flushed batches survive"
        );
        let all = log.read(0, usize::MAX, i64::MAX).unwrap();
        let offsets: Vec<_> = ranges(&all.bytes);
        assert_eq!(offsets.first(), Some(&(0, 0)), "seed {seed}");
        assert!(
            offsets.windows(2).all(|pair| pair[1].0 == pair[0].1 + 1),
            "seed {seed}: contiguous"
        );
        assert_eq!(log.recovery_point(), log.log_end_offset());
    }
}

/// fsyncgate: the flush of two batches fails having marked their pages clean without writing
/// all of them, and the broker's process is restarted (page cache kept). Recovery serves those
/// batches, so it must make them durable, although a plain sync would not write clean pages: a
/// later power loss must find every batch the recovered log held.
#[test]
fn recovery_makes_a_failed_syncs_clean_pages_durable() {
    for seed in 0..16 {
        let disk = mem_disk();
        let mut log = log_written(&disk, config_small(), 1);
        for index in 0..2 {
            log.append(batch_sized(1, 60, 200 + index), 0, 0).unwrap();
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let active = disk
            .open_file(&segment(0, "log"), OpenMode::Existing)
            .unwrap();
        active.sync_fail(&mut rng).unwrap();
        drop(log);
        disk.crash_process();
        let recovered = open(&disk, config_small());
        assert_eq!(
            recovered.log_end_offset(),
            3,
            "seed {seed}: the cache shows all"
        );
        assert_eq!(recovered.recovery_point(), 3, "seed {seed}");
        drop(recovered);
        disk.crash(CrashOptions::LoseUnsynced, &mut rng);
        let log = open(&disk, config_small());
        assert_eq!(
            log.log_end_offset(),
            3,
            "seed {seed}: what recovery called durable survives a power loss"
        );
    }
}

/// A bit flipped on the way from the disk in a batch's partition leader epoch (outside the CRC)
/// must not reach the leader-epoch cache: with a latest epoch it never had, the log refused every
/// append at its real epoch (single-txn seeds 65, 358, 359, 944: `__transaction_state` took no
/// write after a restart, so a transaction's timeout abort failed forever and it hung). A batch
/// whose epoch rises is read again before it is believed.
#[test]
fn a_leader_epoch_flipped_in_a_read_is_read_again() {
    let disk = runtime::ReadFaults::new(mem_disk());
    let config = LogConfig {
        segment_bytes: 10_000,
        ..config_small()
    };
    let open = || PartitionLog::open(disk.clone(), dir(), config.clone(), 0).expect("open");
    let mut log = open();
    let mut positions = Vec::new();
    for index in 0..3 {
        positions.push(log.size_bytes());
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    // The low byte of the second batch's partitionLeaderEpoch (bytes 12..16, big-endian), in
    // recovery's scan of the active segment (one read from the file's start).
    disk.flip_next(".log", 1, positions[1] as usize + 15);
    let mut log = open();
    assert_eq!(disk.failed(), 1, "the flip happened");
    assert_eq!(
        log.latest_epoch(),
        Some(0),
        "the flipped epoch was believed"
    );
    assert_eq!(log.log_end_offset(), 3, "nothing was cut");
    log.append(batch_sized(1, 60, 200), 0, 0)
        .expect("an append at the log's real epoch");
}

/// The same flip in the header walk that rebuilds a missing leader-epoch cache: the walk reads
/// only headers and checks no CRC, so a rising epoch is read until two reads agree.
#[test]
fn a_leader_epoch_flipped_in_the_header_walk_is_read_again() {
    let disk = runtime::ReadFaults::new(mem_disk());
    let open = || PartitionLog::open(disk.clone(), dir(), config_small(), 0).expect("open");
    let mut log = open();
    for index in 0..4 {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.segment_count(), 2);
    drop(log);
    disk.remove_file(&dir().join("leader-epoch-checkpoint"))
        .unwrap();
    // Every read of the closed segment up to and including the walk's first header read (the
    // fourth: the index check and the scans come first) has byte 15 flipped: the low byte of
    // the first batch's partitionLeaderEpoch. The confirming read (the fifth) is clean.
    disk.flip_next("00000000000000000000.log", 4, 15);
    let mut log = open();
    assert_eq!(disk.failed(), 4, "the flips happened");
    assert_eq!(
        log.latest_epoch(),
        Some(0),
        "the flipped epoch was believed"
    );
    log.append(batch_sized(1, 60, 200), 0, 0)
        .expect("an append at the log's real epoch");
}
