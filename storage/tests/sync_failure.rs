//! fsyncgate at a roll (single-chaos seed 681): a roll syncs the segment it closes, and that sync
//! failed; the kernel may have marked pages clean that it never wrote, so no later sync persists
//! them. The group commit's ticket, captured before the roll and synced without the lock after
//! it, then "succeeded", the broker published its offsets as durable, consumers read them, and
//! a power loss took them back: offsets reused (inconsistent-offsets). Once a sync of the log
//! fails, the log refuses writes and completes no ticket until it is reopened and recovered.

mod common;

use common::*;
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
