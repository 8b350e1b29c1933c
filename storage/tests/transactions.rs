//! Transactions through the log: markers end transactions and fence old epochs, the last stable
//! offset (LSO) waits for open and not-yet-durable decisions, each ABORT lands in its segment's
//! aborted-transaction index, and that index survives restarts, damage, truncation, retention
//! and compaction (which removes aborted records without letting them shadow committed ones).

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use runtime::Disk;
use storage::producer_state::{AbortedTxn, SequenceError};
use storage::{CleanupPolicy, LogConfig, LogError, PartitionLog};
use wire::batch::build::batch_encode_with;
use wire::ValidatedBatch;

/// One record `key=value` (value padded to 60 bytes, so three data batches fill a
/// `config_small` segment) from `producer_id`: transactional if `transactional`.
fn batch(
    producer_id: i64,
    sequence: i32,
    transactional: bool,
    key: &str,
    value: &str,
) -> ValidatedBatch {
    let spec = record(Some(key), Some(&format!("{value:-<60}")), 100);
    let epoch = if producer_id >= 0 { 0 } else { -1 };
    batch_encode_with(
        &[spec],
        Compression::None,
        producer_id,
        epoch,
        sequence,
        transactional,
    )
}

fn txn(log: &mut PartitionLog, producer_id: i64, sequence: i32, key: &str, value: &str) -> i64 {
    let batch = batch(producer_id, sequence, true, key, value);
    log.produce(vec![batch], 0, 0).unwrap().first.base_offset
}

fn plain(log: &mut PartitionLog, key: &str, value: &str) -> i64 {
    log.produce(vec![batch(-1, -1, false, key, value)], 0, 0)
        .unwrap()
        .first
        .base_offset
}

fn abort(log: &mut PartitionLog, producer_id: i64) -> i64 {
    log.append_marker(producer_id, 0, 0, false, 0, 0)
        .unwrap()
        .base_offset
}

fn commit(log: &mut PartitionLog, producer_id: i64) -> i64 {
    log.append_marker(producer_id, 0, 0, true, 0, 0)
        .unwrap()
        .base_offset
}

fn power_loss(disk: &runtime::MemDisk) {
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    );
}

/// The LSO with every byte durable.
fn lso(log: &PartitionLog) -> i64 {
    log.last_stable_offset(log.log_end_offset())
}

/// (producer id, first, last) of every aborted transaction in the log.
fn aborted(log: &PartitionLog) -> Vec<(i64, i64, i64)> {
    triples(&log.aborted_transactions(0, log.log_end_offset()))
}

fn triples(entries: &[AbortedTxn]) -> Vec<(i64, i64, i64)> {
    entries
        .iter()
        .map(|txn| (txn.producer_id, txn.first_offset, txn.last_offset))
        .collect()
}

fn txn_indexes(disk: &runtime::MemDisk) -> Vec<(String, u64)> {
    disk.files()
        .into_iter()
        .filter_map(|(path, size)| {
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".txnindex").then_some((name, size))
        })
        .collect()
}

#[test]
fn the_lso_waits_for_open_and_undurable_transactions() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    assert_eq!(txn(&mut log, 7, 0, "a", "a0"), 0);
    plain(&mut log, "p", "p1");
    assert_eq!(txn(&mut log, 8, 0, "b", "b0"), 2);
    txn(&mut log, 7, 1, "a", "a1");
    assert_eq!(lso(&log), 0);
    assert_eq!(log.last_stable_offset(0), 0);
    log.flush().unwrap();

    assert_eq!(abort(&mut log, 7), 4);
    assert_eq!(
        log.last_stable_offset(4),
        0,
        "the abort is not durable: a crash would reopen the transaction"
    );
    assert_eq!(
        log.last_stable_offset(5),
        2,
        "once it is, 8's transaction holds the LSO"
    );
    log.flush().unwrap();
    assert_eq!(log.last_stable_offset(5), 2);
    let entry = AbortedTxn {
        producer_id: 7,
        first_offset: 0,
        last_offset: 4,
        last_stable_offset: 2,
    };
    assert_eq!(log.aborted_transactions(0, 5), [entry]);
    assert_eq!(log.aborted_transactions(4, 5), [entry], "ends at 4");
    assert_eq!(log.aborted_transactions(0, 1), [entry], "begins at 0");
    assert_eq!(log.aborted_transactions(5, 6), []);

    assert_eq!(commit(&mut log, 8), 5);
    log.flush().unwrap();
    assert_eq!(lso(&log), 6);
    assert_eq!(aborted(&log), [(7, 0, 4)], "a commit is not indexed");
    assert_eq!(log.producers().first_unstable_offset(), None);
}

#[test]
fn markers_fence_old_epochs_and_deposed_coordinators() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    txn(&mut log, 7, 0, "a", "a0");
    log.append_marker(7, 1, 5, false, 0, 0).unwrap();
    let zombie = log.produce(vec![batch(7, 1, true, "a", "z")], 0, 0);
    assert!(matches!(
        zombie,
        Err(LogError::Sequence(SequenceError::EpochFenced {
            epoch: 0,
            current: 1,
            ..
        }))
    ));
    assert!(matches!(
        log.append_marker(7, 0, 5, true, 0, 0),
        Err(LogError::Sequence(SequenceError::EpochFenced { .. }))
    ));
    assert!(matches!(
        log.append_marker(7, 1, 4, true, 0, 0),
        Err(LogError::Sequence(SequenceError::CoordinatorFenced {
            current: 5,
            ..
        }))
    ));
    assert_eq!(log.log_end_offset(), 2, "nothing refused was written");
    assert!(
        log.append_marker(-1, 0, 0, true, 0, 0).is_err(),
        "no producer, no marker"
    );
    let empty = log.append_marker(9, 0, 0, false, 0, 0).unwrap();
    assert_eq!(
        empty.base_offset, 2,
        "a marker with nothing open is written"
    );
    assert_eq!(aborted(&log), [(7, 0, 1)], "and indexes nothing");
    drop(log);
    let mut log = open(&disk, config_small());
    assert!(
        matches!(
            log.produce(vec![batch(7, 1, true, "a", "z")], 0, 0),
            Err(LogError::Sequence(SequenceError::EpochFenced { .. }))
        ),
        "the fence is rebuilt from the log"
    );
}

#[test]
fn a_power_loss_before_the_markers_fsync_reopens_the_transaction() {
    let disk = mem_disk();
    let mut log = open(&disk, config_small());
    txn(&mut log, 7, 0, "a", "a0");
    log.flush().unwrap();
    abort(&mut log, 7);
    assert_eq!(log.last_stable_offset(log.recovery_point()), 0);
    drop(log);
    power_loss(&disk);
    let mut log = open(&disk, config_small());
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(lso(&log), 0, "open again");
    assert_eq!(aborted(&log), []);
    abort(&mut log, 7);
    assert_eq!((lso(&log), aborted(&log)), (2, vec![(7, 0, 1)]));
}

/// A log whose abort marker (of a transaction begun two segments earlier) lies in a closed
/// segment: 0 txn 7, 1-5 plain, 6 abort 7 (segment 6), 7-8 plain, 9 plain (segment 9).
fn log_with_an_old_abort(disk: &std::sync::Arc<runtime::MemDisk>) -> PartitionLog {
    let mut log = open(disk, config_small());
    txn(&mut log, 7, 0, "a", "aborted");
    for index in 1..6 {
        plain(&mut log, "p", &format!("p{index}"));
    }
    assert_eq!(abort(&mut log, 7), 6);
    for index in 7..10 {
        plain(&mut log, "p", &format!("p{index}"));
    }
    log.flush().unwrap();
    assert_eq!(log.segment_count(), 4);
    assert_eq!(aborted(&log), [(7, 0, 6)]);
    log
}

#[test]
fn recovery_rebuilds_a_missing_or_damaged_transaction_index() {
    let disk = mem_disk();
    drop(log_with_an_old_abort(&disk));
    let index = dir().join("00000000000000000006.txnindex");
    assert_eq!(
        txn_indexes(&disk),
        [("00000000000000000006.txnindex".to_string(), 34)],
        "written at roll, only where an abort is"
    );
    let log = open(&disk, config_small());
    assert_eq!(aborted(&log), [(7, 0, 6)], "loaded from the file");
    drop(log);

    // A torn file, a flipped producer id (no checksum: the marker check catches it), a removed
    // offset index: each time the segment is rescanned and its index rebuilt by the replay,
    // from the snapshot at its base, which holds transaction 7 open since offset 0.
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: [Damage; 3] = [
        (
            "torn",
            Box::new(|| {
                let file = disk.open(&index, runtime::OpenMode::Existing).unwrap();
                file.truncate(20).unwrap();
            }),
        ),
        (
            "flipped",
            Box::new(|| disk.flip_bit(&index, 8 * 9).unwrap()),
        ),
        (
            "no offset index",
            Box::new(|| {
                disk.remove_file(&dir().join("00000000000000000006.index"))
                    .unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage();
        let log = open(&disk, config_small());
        assert_eq!(aborted(&log), [(7, 0, 6)], "{what}");
        assert_eq!(lso(&log), 10, "{what}");
        drop(log);
        let bytes = runtime::disk::read_all(&*disk, &index).unwrap();
        assert_eq!(bytes.len(), 34, "{what}: rewritten whole");
    }

    // Without snapshots the replay starts at the first segment: the same index.
    for (path, _) in disk.files() {
        if path.extension().is_some_and(|ext| ext == "snapshot") {
            disk.remove_file(&path).unwrap();
        }
    }
    disk.remove_file(&index).unwrap();
    disk.remove_file(&dir().join("00000000000000000006.index"))
        .unwrap();
    let log = open(&disk, config_small());
    assert_eq!(aborted(&log), [(7, 0, 6)]);
}

#[test]
fn truncation_below_a_marker_reopens_its_transaction() {
    let disk = mem_disk();
    let mut log = log_with_an_old_abort(&disk);
    log.truncate_to(8).unwrap();
    assert_eq!((aborted(&log), lso(&log)), (vec![(7, 0, 6)], 8));
    log.truncate_to(6).unwrap();
    assert_eq!(aborted(&log), [], "the marker is gone");
    assert_eq!(lso(&log), 0, "and the transaction open again");
    assert!(txn_indexes(&disk).is_empty());
    assert_eq!(abort(&mut log, 7), 6);
    assert_eq!(aborted(&log), [(7, 0, 6)]);
    drop(log);
    let log = open(&disk, config_small());
    assert_eq!(aborted(&log), [(7, 0, 6)]);
}

#[test]
fn retention_past_an_open_transaction_keeps_the_lso_at_the_log_start() {
    let disk = mem_disk();
    let config = LogConfig {
        retention_bytes: Some(500),
        ..config_small()
    };
    let mut log = open(&disk, config.clone());
    txn(&mut log, 7, 0, "a", "open");
    for index in 1..7 {
        plain(&mut log, "p", &format!("p{index}"));
    }
    log.flush().unwrap();
    log.retention_enforce(0).unwrap();
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(lso(&log), 3, "log_start <= LSO");
    drop(log);
    let mut log = open(&disk, config);
    assert_eq!(lso(&log), 3);
    assert_eq!(
        abort(&mut log, 7),
        7,
        "the producer state still knows the transaction"
    );
    assert_eq!(aborted(&log), [(7, 0, 7)]);
    assert_eq!(lso(&log), 8);
}

/// (key, value prefix, is control) of every record in the log.
fn records(log: &PartitionLog) -> Vec<(String, String, bool)> {
    let (mut offset, mut sets) = (log.log_start_offset(), Vec::new());
    // Bounded: each read returns at least one batch below the end (reads stop at gaps).
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, log.log_end_offset()).unwrap();
        assert!(read.next_offset > offset);
        offset = read.next_offset;
        let mut bytes = read.bytes;
        sets.extend(RecordBatchDecoder::decode_all(&mut bytes).unwrap());
    }
    let mut found = Vec::new();
    for set in sets {
        for record in set.records {
            let text = |bytes: Option<Bytes>| {
                String::from_utf8_lossy(&bytes.unwrap_or_default())
                    .trim_end_matches('-')
                    .to_string()
            };
            let control = record.control;
            let key = if control {
                String::new()
            } else {
                text(record.key)
            };
            let value = if control {
                String::new()
            } else {
                text(record.value)
            };
            found.push((key, value, control));
        }
    }
    found
}

#[test]
fn compaction_removes_aborted_records_and_spares_open_ones() {
    let disk = mem_disk();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..config_small()
    };
    let mut log = open(&disk, config);
    plain(&mut log, "a", "a-old");
    txn(&mut log, 7, 0, "a", "a-aborted");
    abort(&mut log, 7);
    plain(&mut log, "b", "b-old");
    txn(&mut log, 8, 0, "b", "b-committed");
    commit(&mut log, 8);
    plain(&mut log, "c", "c-old");
    txn(&mut log, 9, 0, "c", "c-open");
    plain(&mut log, "c", "c-new");
    for index in 0..6 {
        plain(&mut log, &format!("f{index}"), "filler");
    }
    log.flush().unwrap();
    let outcome = log.compact(0).unwrap();
    assert!(outcome.records_removed >= 2, "{outcome:?}");
    let kept = records(&log);
    let has = |key: &str, value: &str| kept.iter().any(|r| r.0 == key && r.1 == value);
    assert!(
        has("a", "a-old"),
        "an aborted record never shadows: {kept:?}"
    );
    assert!(
        !has("a", "a-aborted"),
        "aborted records are removed: {kept:?}"
    );
    assert!(
        !has("b", "b-old") && has("b", "b-committed"),
        "committed ones compact: {kept:?}"
    );
    assert!(
        has("c", "c-old") && has("c", "c-open"),
        "nothing at or above the LSO is compacted: {kept:?}"
    );
    assert_eq!(kept.iter().filter(|r| r.2).count(), 2, "markers are kept");
    assert_eq!(aborted(&log), [(7, 1, 2)], "and their index entries");
    drop(log);
    let log = open(
        &disk,
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..config_small()
        },
    );
    assert_eq!(aborted(&log), [(7, 1, 2)]);
    assert_eq!(lso(&log), 7);
}

/// The planted transaction bugs (DESIGN.md, Planted bugs) against the checks above: each check
/// passes on the real log and fails with its bug. Run with `--features planted-bugs` (ci/test).
#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;
    use storage::PlantedBug;

    fn open_with(disk: &std::sync::Arc<runtime::MemDisk>, bug: Option<PlantedBug>) -> PartitionLog {
        let disk: std::sync::Arc<dyn Disk> = disk.clone();
        PartitionLog::open_planted(disk, dir(), config_small(), 0, bug).unwrap()
    }

    /// An open transaction holds the LSO at its first offset.
    fn open_transaction_holds_the_lso(bug: Option<PlantedBug>) -> bool {
        let disk = mem_disk();
        let mut log = open_with(&disk, bug);
        plain(&mut log, "p", "p0");
        txn(&mut log, 7, 0, "a", "open");
        plain(&mut log, "p", "p2");
        log.flush().unwrap();
        lso(&log) == 1
    }

    /// A data batch of an epoch a marker fenced is refused.
    fn fenced_producer_is_refused(bug: Option<PlantedBug>) -> bool {
        let disk = mem_disk();
        let mut log = open_with(&disk, bug);
        txn(&mut log, 7, 0, "a", "a0");
        log.append_marker(7, 1, 0, false, 0, 0).unwrap();
        let zombie = log.produce(vec![batch(7, 1, true, "a", "z")], 0, 0);
        matches!(
            zombie,
            Err(LogError::Sequence(SequenceError::EpochFenced { .. }))
        )
    }

    #[test]
    fn lso_from_high_watermark_is_caught() {
        assert!(open_transaction_holds_the_lso(None));
        assert!(!open_transaction_holds_the_lso(Some(
            PlantedBug::LsoFromHighWatermark
        )));
    }

    #[test]
    fn fenced_producer_accepted_is_caught() {
        assert!(fenced_producer_is_refused(None));
        assert!(!fenced_producer_is_refused(Some(
            PlantedBug::FencedProducerAccepted
        )));
    }
}

/// One step of the transaction model test.
#[derive(Debug, Clone)]
enum Step {
    Data { producer: i64, transactional: bool },
    Marker { producer: i64, commit: bool },
    Flush,
    Crash { seed: u64 },
    Truncate { back: u8 },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0i64..3, any::<bool>()).prop_map(|(producer, transactional)| Step::Data { producer, transactional }),
        3 => (0i64..3, any::<bool>()).prop_map(|(producer, commit)| Step::Marker { producer, commit }),
        3 => Just(Step::Flush),
        1 => any::<u64>().prop_map(|seed| Step::Crash { seed }),
        1 => (1u8..6).prop_map(|back| Step::Truncate { back }),
    ]
}

/// What the log holds, as the model sees it: per offset, (producer, transactional data or a
/// marker and whether it commits).
#[derive(Debug, Clone, Copy)]
enum Held {
    Data { producer: i64, transactional: bool },
    Marker { producer: i64, commit: bool },
}

/// The model's LSO for high watermark `hw` and aborted (producer, first, last) list.
fn model(held: &[Held], hw: i64) -> (i64, Vec<(i64, i64, i64)>) {
    let mut open: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut undecided = Vec::new();
    let mut aborted = Vec::new();
    for (offset, held) in held.iter().enumerate() {
        let offset = offset as i64;
        match *held {
            Held::Data {
                producer,
                transactional: true,
            } => {
                open.entry(producer).or_insert(offset);
            }
            Held::Data { .. } => {}
            Held::Marker { producer, commit } => {
                if let Some(first) = open.remove(&producer) {
                    if offset >= hw {
                        undecided.push(first);
                    }
                    if !commit {
                        aborted.push((producer, first, offset));
                    }
                }
            }
        }
    }
    let lso = open
        .values()
        .chain(&undecided)
        .copied()
        .chain([hw])
        .min()
        .unwrap();
    (lso, aborted)
}

proptest::proptest! {
    /// Whatever producers, markers, fsyncs, power losses and truncations do, the log's LSO (at
    /// the durable offset) and aborted transactions equal a model's replay of what the log
    /// holds, and a reopened log agrees.
    #[test]
    fn lso_and_aborted_transactions_follow_the_model(
        steps in proptest::collection::vec(step(), 1..50)
    ) {
        let disk = mem_disk();
        let mut log = open(&disk, config_small());
        let mut held: Vec<Held> = Vec::new();
        for step in steps {
            match step {
                Step::Data { producer, transactional } => {
                    let sequence = log
                        .producers()
                        .entry(producer)
                        .and_then(|entry| entry.batches.back())
                        .map_or(0, |batch| batch.last_sequence + 1);
                    let batch = batch(producer, sequence, transactional, "k", "v");
                    log.produce(vec![batch], 0, 0).unwrap();
                    held.push(Held::Data { producer, transactional });
                }
                Step::Marker { producer, commit } => {
                    log.append_marker(producer, 0, 0, commit, 0, 0).unwrap();
                    held.push(Held::Marker { producer, commit });
                }
                Step::Flush => log.flush().unwrap(),
                Step::Crash { seed } => {
                    let durable = log.recovery_point();
                    drop(log);
                    disk.crash(CrashOptions::LoseUnsynced, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
                    log = open(&disk, config_small());
                    proptest::prop_assert!(log.log_end_offset() >= durable);
                    held.truncate(log.log_end_offset() as usize);
                }
                Step::Truncate { back } => {
                    let offset = (log.log_end_offset() - i64::from(back)).max(0);
                    log.truncate_to(offset).unwrap();
                    held.truncate(log.log_end_offset() as usize);
                }
            }
            proptest::prop_assert_eq!(held.len() as i64, log.log_end_offset());
            let hw = log.recovery_point();
            let (lso, expected) = model(&held, hw);
            proptest::prop_assert_eq!(log.last_stable_offset(hw), lso);
            proptest::prop_assert_eq!(aborted(&log), expected);
        }
        log.flush().unwrap();
        let end = log.log_end_offset();
        let before = (lso(&log), aborted(&log));
        drop(log);
        let log = open(&disk, config_small());
        proptest::prop_assert_eq!((lso(&log), aborted(&log)), before);
        proptest::prop_assert_eq!(model(&held, end).0, lso(&log));
    }
}
