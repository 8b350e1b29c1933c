//! DurableStorage against a model, through process crashes and power losses (MemDisk).

use super::*;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use runtime::rng::{ChaCha8Rng, Rng};
use runtime::MemDisk;

const VOTERS: [u64; 3] = [1, 2, 3];

fn dir() -> PathBuf {
    PathBuf::from("/data/raft")
}

fn open(disk: &Arc<MemDisk>) -> io::Result<DurableStorage> {
    DurableStorage::open(disk.clone(), &dir(), &VOTERS, None)
}

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

/// What a storage must hold: everything a completed (synced) call wrote.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    entries: Vec<(u64, u64, Vec<u8>)>,
    term: u64,
    vote: u64,
    commit: u64,
    snapshot: (u64, u64, Vec<u8>),
}

impl Model {
    fn of(storage: &DurableStorage) -> Model {
        let metadata = storage.snapshot.get_metadata();
        Model {
            entries: storage
                .entries
                .iter()
                .map(|entry| (entry.index, entry.term, entry.data.to_vec()))
                .collect(),
            term: storage.hard_state.term,
            vote: storage.hard_state.vote,
            commit: storage.hard_state.commit,
            snapshot: (
                metadata.index,
                metadata.term,
                storage.snapshot.data.to_vec(),
            ),
        }
    }
}

/// Checks the recovered storage against the model: equal, except the commit index, which is
/// written only with a hard state and may come back lower (never below the snapshot).
fn check(recovered: &DurableStorage, model: &Model, context: &str) {
    let mut got = Model::of(recovered);
    assert!(got.commit <= model.commit, "{context}: commit grew");
    assert!(
        got.commit >= got.snapshot.0,
        "{context}: commit below snapshot"
    );
    got.commit = model.commit;
    assert_eq!(&got, model, "{context}");
    assert_eq!(recovered.conf_state.voters, VOTERS, "{context}");
}

#[test]
fn bootstrap_then_reopen_keeps_state() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    assert_eq!(storage.initial_state().unwrap().conf_state.voters, VOTERS);
    assert_eq!((storage.first(), storage.last()), (1, 0));
    storage
        .persist(
            &[entry(1, 1, b"a"), entry(2, 1, b"b")],
            Some(&hard_state(1, 1, 0)),
        )
        .unwrap();
    storage.persist(&[entry(2, 2, b"c")], None).unwrap();
    let model = Model::of(&storage);
    assert_eq!(model.entries.len(), 2);
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    let recovered = open(&disk).unwrap();
    check(&recovered, &model, "after power loss");
    assert_eq!(recovered.term(2).unwrap(), 2);
}

/// Random appends (with overwrites), hard states, compactions and installed snapshots, with
/// process crashes, power losses and torn in-flight batches between them: every recovery holds
/// exactly what completed calls wrote, or that plus the whole in-flight batch, never part of it.
#[test]
fn crashes_lose_nothing_synced_and_serve_nothing_torn() {
    for seed in 0..300 {
        crash_run(seed);
    }
}

fn crash_run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    let mut model = Model::of(&storage);
    let mut term = 1;
    for step in 0..60 {
        let context = format!("seed {seed} step {step}");
        match rng.gen_range(0..10) {
            0..=3 => {
                let (first, last) = (storage.first(), storage.last());
                let low = first
                    .max(storage.snapshot.get_metadata().index + 1)
                    .max(storage.hard_state.commit + 1);
                let start = rng.gen_range(low..=last + 1);
                if rng.gen_bool(0.3) {
                    term += 1;
                }
                let count = rng.gen_range(1..5);
                let entries: Vec<Entry> = (start..start + count)
                    .map(|index| entry(index, term, format!("{seed}.{step}.{index}").as_bytes()))
                    .collect();
                let hard_state = hard_state(term, rng.gen_range(0..4), storage.hard_state.commit);
                storage.persist(&entries, Some(&hard_state)).unwrap();
            }
            4 => {
                let commit = rng.gen_range(storage.hard_state.commit..=storage.last());
                storage.commit_set(commit);
                let hard_state = storage.hard_state.clone();
                if rng.gen_bool(0.5) {
                    storage.persist(&[], Some(&hard_state)).unwrap();
                } else {
                    storage.persist_commit(&hard_state).unwrap();
                }
            }
            5 => {
                let low = storage.snapshot.get_metadata().index;
                let applied = rng.gen_range(low..=storage.hard_state.commit);
                let keep = rng.gen_range(0..3);
                storage
                    .compact(applied, format!("state@{applied}").into_bytes(), keep)
                    .unwrap();
            }
            6 => {
                term += 1;
                let index = storage.last() + rng.gen_range(1..4);
                let mut snapshot = Snapshot {
                    data: format!("leader@{index}").into_bytes().into(),
                    ..Default::default()
                };
                snapshot.mut_metadata().index = index;
                snapshot.mut_metadata().term = term;
                snapshot.mut_metadata().mut_conf_state().voters = VOTERS.to_vec();
                storage.snapshot_install(&snapshot).unwrap();
            }
            7 => {
                disk.crash_process();
                storage = open(&disk).unwrap();
                check(&storage, &model, &context);
            }
            8 => {
                let options = if rng.gen_bool(0.5) {
                    CrashOptions::Tear
                } else {
                    CrashOptions::LoseUnsynced
                };
                disk.crash(options, &mut rng);
                storage = open(&disk).unwrap();
                check(&storage, &model, &context);
            }
            _ => {
                // A batch in flight when the power fails: recovered whole or not at all.
                let start = storage.last() + 1;
                let entries: Vec<Entry> = (start..start + rng.gen_range(1..40))
                    .map(|index| entry(index, term, &[7; 100]))
                    .collect();
                let hard_state = hard_state(term, 9, storage.hard_state.commit);
                let mut after = model.clone();
                after
                    .entries
                    .extend(entries.iter().map(|e| (e.index, e.term, e.data.to_vec())));
                after.vote = 9;
                after.term = term;
                storage.persist_unsynced(&entries, &hard_state).unwrap();
                disk.crash(CrashOptions::Tear, &mut rng);
                storage = open(&disk).unwrap();
                let got = Model::of(&storage);
                if got.entries.len() == after.entries.len() {
                    check(&storage, &after, &context);
                } else {
                    check(&storage, &model, &context);
                }
            }
        }
        model = Model::of(&storage);
    }
}

#[test]
fn corruption_before_the_tail_refuses_to_start() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    for index in 1..=5 {
        storage
            .persist(&[entry(index, 1, b"x")], Some(&hard_state(1, 1, 0)))
            .unwrap();
    }
    let path = dir().join(LOG_FILE);
    // A bit in the first entries record (batch 2, after the bootstrap's conf state).
    disk.flip_bit(&path, 8 * 60).unwrap();
    let error = open(&disk).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("corrupt"), "{error}");
}

#[test]
fn damage_in_the_last_batch_is_a_torn_tail() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    storage
        .persist(&[entry(1, 1, b"x")], Some(&hard_state(1, 1, 0)))
        .unwrap();
    let before = Model::of(&storage);
    storage
        .persist(&[entry(2, 1, b"y")], Some(&hard_state(1, 1, 1)))
        .unwrap();
    let len = disk
        .open(&dir().join(LOG_FILE), OpenMode::Existing)
        .unwrap()
        .len()
        .unwrap();
    disk.flip_bit(&dir().join(LOG_FILE), len * 8 - 3).unwrap();
    let recovered = open(&disk).unwrap();
    check(&recovered, &before, "torn last batch");
}

#[test]
fn corrupt_snapshot_refuses_to_start() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    storage
        .persist(&[entry(1, 1, b"x")], Some(&hard_state(1, 1, 1)))
        .unwrap();
    storage.compact(1, b"state".to_vec(), 0).unwrap();
    disk.flip_bit(&dir().join(SNAPSHOT_FILE), 8 * 20).unwrap();
    let error = open(&disk).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
}

#[test]
fn storage_answers_raft_queries() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    let entries: Vec<Entry> = (1..=6).map(|index| entry(index, 1, b"e")).collect();
    storage
        .persist(&entries, Some(&hard_state(1, 1, 6)))
        .unwrap();
    storage.compact(4, b"s".to_vec(), 2).unwrap();
    assert_eq!((storage.first(), storage.last()), (3, 6));
    let context = || GetEntriesContext::empty(false);
    assert_eq!(
        storage.entries(1, 4, None, context()),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(
        storage.entries(5, 8, None, context()),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
    assert_eq!(storage.entries(3, 7, None, context()).unwrap().len(), 4);
    assert_eq!(storage.entries(3, 7, Some(0), context()).unwrap().len(), 1);
    assert_eq!(storage.term(4), Ok(1));
    assert_eq!(
        storage.term(2),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(storage.snapshot(4, 2).unwrap().get_metadata().index, 4);
    assert!(storage.snapshot(5, 2).is_err());
}

fn entries_model(storage: &DurableStorage) -> Vec<(u64, u64)> {
    storage.entries.iter().map(|e| (e.index, e.term)).collect()
}

/// A crash between a compaction's snapshot file and its log rewrite: the old log agrees with
/// the snapshot (it holds the snapshot's index and term), so it is kept whole.
#[test]
fn crash_between_compaction_snapshot_and_rewrite_keeps_the_log() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    let entries: Vec<Entry> = (1..=6).map(|index| entry(index, 1, b"e")).collect();
    storage
        .persist(&entries, Some(&hard_state(1, 1, 6)))
        .unwrap();
    let before = entries_model(&storage);
    storage.interrupt_before_rewrite = true;
    storage.compact(4, b"s".to_vec(), 0).unwrap();
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    let recovered = open(&disk).unwrap();
    assert_eq!(recovered.snapshot.get_metadata().index, 4);
    assert_eq!(entries_model(&recovered), before);
    assert_eq!(recovered.term(4), Ok(1));
    assert_eq!(recovered.last(), 6);
}

/// A crash between a leader's snapshot file and the log rewrite: the old log conflicts with
/// the snapshot (another term at its index), so recovery drops it, as raft-rs would have.
#[test]
fn crash_between_installed_snapshot_and_rewrite_drops_a_conflicting_log() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    let entries: Vec<Entry> = (1..=6).map(|index| entry(index, 1, b"e")).collect();
    storage
        .persist(&entries, Some(&hard_state(1, 1, 2)))
        .unwrap();
    let mut snapshot = Snapshot {
        data: b"leader".to_vec().into(),
        ..Default::default()
    };
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().term = 2;
    snapshot.mut_metadata().mut_conf_state().voters = VOTERS.to_vec();
    storage.interrupt_before_rewrite = true;
    storage.snapshot_install(&snapshot).unwrap();
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    let recovered = open(&disk).unwrap();
    assert_eq!(entries_model(&recovered), vec![]);
    assert_eq!((recovered.first(), recovered.last()), (6, 5));
    assert_eq!(recovered.term(5), Ok(2));
    assert_eq!(recovered.hard_state.commit, 5);
    assert_eq!(recovered.hard_state.term, 2);
}

#[test]
fn other_voters_than_the_stored_ones_refuse_to_start() {
    let disk = MemDisk::new();
    drop(open(&disk).unwrap());
    let error = DurableStorage::open(disk.clone(), &dir(), &[1, 2, 3, 4], None).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    DurableStorage::open(disk, &dir(), &[3, 1, 2], None).unwrap();
}

/// A process crash between a batch's write and its sync leaves the batch in the page cache;
/// recovery serves it, so recovery must make it durable: a power loss afterwards keeps it.
#[test]
fn what_recovery_serves_after_a_process_crash_survives_a_power_loss() {
    let disk = MemDisk::new();
    let mut storage = open(&disk).unwrap();
    storage
        .persist(&[entry(1, 1, b"x")], Some(&hard_state(1, 1, 0)))
        .unwrap();
    storage
        .persist_unsynced(&[entry(2, 2, b"y")], &hard_state(2, 3, 0))
        .unwrap();
    disk.crash_process();
    let served = Model::of(&open(&disk).unwrap());
    assert_eq!((served.term, served.vote, served.entries.len()), (2, 3, 2));
    disk.crash(
        CrashOptions::LoseUnsynced,
        &mut ChaCha8Rng::seed_from_u64(3),
    );
    check(&open(&disk).unwrap(), &served, "power loss after recovery");
}
