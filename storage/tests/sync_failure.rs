//! fsyncgate at a roll (single-chaos seed 681): a roll syncs the segment it closes, and that sync
//! failed; the kernel may have marked pages clean that it never wrote, so no later sync persists
//! them. The group commit's ticket, captured before the roll and synced without the lock after
//! it, then "succeeded", the broker published its offsets as durable, consumers read them, and
//! a power loss took them back: offsets reused (inconsistent-offsets). Once a sync of the log
//! fails, the log refuses writes and completes no ticket until it is reopened and recovered.

mod common;

use common::*;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use runtime::{MemDisk, ReadFaults};
use storage::{LogError, PartitionLog};

#[test]
fn a_failed_roll_sync_stops_the_log_and_its_flushes() {
    let disk = ReadFaults::new(MemDisk::new());
    let mut log = PartitionLog::open(disk.clone(), dir(), config_small(), 0).unwrap();
    for index in 0..3 {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    let ticket = log.flush_begin();
    assert_eq!(ticket.offset_end(), 3);
    disk.sync_fail_next(".log");
    let rolled = log.append(batch_sized(1, 60, 200), 0, 0);
    assert!(
        rolled.is_err(),
        "the fourth batch needs a roll, whose sync fails"
    );
    assert!(log.sync_failed());
    assert_eq!(
        log.segment_count(),
        1,
        "a failed roll leaves the log as it was"
    );
    ticket.sync().unwrap();
    log.flush_complete(ticket);
    assert_eq!(
        log.recovery_point(),
        0,
        "a sync after a failed one proves nothing: the recovery point stays"
    );
    assert!(matches!(
        log.append(batch_sized(1, 60, 300), 0, 0),
        Err(LogError::SyncFailed { .. })
    ));
    assert!(matches!(log.flush(), Err(LogError::SyncFailed { .. })));
    drop(log);
    let reopened = PartitionLog::open(disk, dir(), config_small(), 0).unwrap();
    assert!(!reopened.sync_failed(), "recovery starts afresh");
    assert_eq!(
        reopened.recovery_point(),
        3,
        "and makes what it serves durable"
    );
}

/// A ticket whose sync fails always draws "not written back" for a dirty sector.
struct LoseEverySector;

impl rand::RngCore for LoseEverySector {
    fn next_u32(&mut self) -> u32 {
        u32::MAX
    }
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0xff);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        dest.fill(0xff);
        Ok(())
    }
}

/// fsyncgate across a roll (single-groups seed 3156095245): the group commit's ticket captured
/// the active segment, and its sync failed (marking the dirty sectors clean, never written)
/// while the broker waited out the rest of the fsync latency without the lock. A roll then
/// synced the same file, found nothing dirty, "succeeded" and checkpointed a recovery point past
/// the lost bytes. A process crash kept them in the page cache, recovery trusted the closed
/// segment below the checkpoint, served its records, and a later power loss took them back:
/// offsets reused. A roll while a ticket is in flight no longer moves the recovery point.
#[test]
fn a_roll_during_a_failing_group_commit_does_not_checkpoint_its_segment() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for index in 0..3 {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    let ticket = log.flush_begin();
    assert_eq!(ticket.offset_end(), 3);
    // The ticket's sync takes effect and fails; the broker learns it only later.
    disk.open_file(
        &dir().join("00000000000000000000.log"),
        runtime::OpenMode::Existing,
    )
    .unwrap()
    .sync_fail(&mut LoseEverySector)
    .unwrap();
    log.append(batch_sized(1, 60, 200), 0, 0)
        .expect("the roll's sync finds nothing dirty and succeeds");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        log.recovery_point(),
        0,
        "a roll's sync proves nothing while a ticket of the same file is in flight"
    );
    drop(ticket);
    log.sync_failure_note();
    drop(log);
    disk.crash_process();
    let log = open(&disk, config_small());
    assert_eq!(
        log.log_end_offset(),
        4,
        "the page cache still shows every batch"
    );
    drop(log);
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    );
    let log = open(&disk, config_small());
    assert_eq!(
        log.log_end_offset(),
        4,
        "what recovery served after the process crash was made durable"
    );
}

#[test]
fn a_roll_during_a_successful_group_commit_counts_once_it_returns() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    for index in 0..3 {
        log.append(batch_sized(1, 60, 100 + index), 0, 0).unwrap();
    }
    let ticket = log.flush_begin();
    log.append(batch_sized(1, 60, 200), 0, 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    ticket.sync().unwrap();
    log.flush_complete(ticket);
    assert_eq!(log.recovery_point(), 3, "the roll's sync counts too");
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 4);
}
