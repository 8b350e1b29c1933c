//! Issue 8: after a crash on a full disk the log must still open and serve what was
//! acknowledged. The disk fills just before a roll: the roll's index files and checkpoint cannot
//! be written, the process dies, and recovery, which rebuilds that segment's indexes, cannot
//! write them either. It keeps them in memory, logs, and opens; appends fail with ENOSPC.

mod common;

use common::*;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use storage::{LogError, PartitionLog};

/// The log's offsets and what a full read returns (every CRC checked).
fn served(log: &PartitionLog) -> String {
    let everything = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX)
        .unwrap();
    format!(
        "log_start={} log_end={} read={:?}",
        log.log_start_offset(),
        log.log_end_offset(),
        ranges(&everything.bytes)
    )
}

#[test]
fn recovery_on_a_full_disk_serves_reads_and_refuses_appends() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    // 129-byte batches, three per 400-byte segment: segments 0 and 3 are full.
    for index in 0..6 {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    log.flush().unwrap();
    disk.full_set(true);
    let refused = log.append(batch_sized(1, 60, 106), 0, 0).unwrap_err();
    assert!(
        matches!(&refused, LogError::Io(error) if error.kind() == std::io::ErrorKind::StorageFull),
        "{refused}"
    );
    drop(log);
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    );
    insta::assert_snapshot!(layout(&disk, &dir()), @r"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000006.log 0B []
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    ");

    // Still full: segment 3 lies past the checkpoint's recovery point, so it is scanned and its
    // index files cannot be written. Before issue 8's fix this open failed.
    let mut log = open(&disk, config_small());
    insta::assert_snapshot!(served(&log), @r"
    log_start=0 log_end=6 read=[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    ");
    for offset in 0..6 {
        let one = log.read(offset, 1, i64::MAX).unwrap();
        assert_eq!(
            ranges(&one.bytes),
            [(offset, offset)],
            "indexes serve from memory"
        );
    }
    let refused = log.append(batch_sized(1, 60, 106), 0, 0).unwrap_err();
    assert!(
        matches!(&refused, LogError::Io(error) if error.kind() == std::io::ErrorKind::StorageFull),
        "{refused}"
    );
    drop(log);
    insta::assert_snapshot!(layout(&disk, &dir()), @r"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000006.log 0B []
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    ");

    // Space returns: the next recovery writes what the full one could not.
    disk.full_set(false);
    let mut log = open(&disk, config_small());
    log.append(batch_sized(1, 60, 106), 0, 0).unwrap();
    insta::assert_snapshot!(served(&log), @r"
    log_start=0 log_end=7 read=[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    ");
    drop(log);
    insta::assert_snapshot!(layout(&disk, &dir()), @r"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.index 16B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000003.timeindex 36B
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    ");
}
