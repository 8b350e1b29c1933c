//! The coordinator without any runtime: scripted scenarios rendered as text, record round trips,
//! replay, and the ordering rule for markers (checked on every scenario's output log).

use super::coordinator::{Coordinator, Input, Output};
use super::records::{record_decode, record_encode, TxnRecord};
use super::*;
use crate::planted::Bug;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

const ID: &str = "tx";
const TIMEOUT: Duration = Duration::from_millis(1_000);

fn config() -> TxnConfig {
    TxnConfig {
        timeout_max: Duration::from_millis(60_000),
        state_partitions: 4,
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: topic.to_string(),
        partition,
    }
}

/// One event of a run, for the ordering check.
#[derive(Debug, Clone)]
enum Event {
    Output(Output),
    Durable(WriteId),
}

struct Harness {
    core: Coordinator,
    now: Duration,
    request_next: RequestId,
    producer_id_next: i64,
    /// Writes emitted and not yet reported durable.
    pending: Vec<(WriteId, TxnRecord)>,
    /// Every record made durable, in order, for replay.
    durable_log: Vec<TxnRecord>,
    events: Vec<Event>,
    text: String,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(None)
    }

    fn with(planted: Option<Bug>) -> Harness {
        let mut core = Coordinator::new(config(), 4, 4);
        core.planted_set(planted);
        Harness {
            core,
            now: Duration::ZERO,
            request_next: 1,
            producer_id_next: 100,
            pending: Vec::new(),
            durable_log: Vec::new(),
            events: Vec::new(),
            text: String::new(),
        }
    }

    fn step(&mut self, input: Input) {
        let mut outputs = Vec::new();
        self.core.step(&mut outputs, input);
        for output in outputs {
            self.events.push(Event::Output(output.clone()));
            let line = match output {
                Output::InitProducerId { result, .. } => format!("init {result:?}"),
                Output::AddPartitions { result, .. } => format!("add {result:?}"),
                Output::EndTxn { result, .. } => format!("end {result:?}"),
                Output::Persist { write, record, .. } => {
                    let metadata = record.metadata.clone().expect("no tombstones here");
                    self.pending.push((write, record));
                    format!(
                        "persist {:?} pid={} epoch={} partitions={}",
                        metadata.state,
                        metadata.producer_id,
                        metadata.epoch,
                        metadata.partitions.len()
                    )
                }
                Output::Markers(markers) => format!(
                    "markers {} pid={} epoch={} partitions={}",
                    if markers.commit { "COMMIT" } else { "ABORT" },
                    markers.producer_id,
                    markers.epoch,
                    markers.partitions.len()
                ),
            };
            writeln!(self.text, "{line}").unwrap();
        }
    }

    fn request(&mut self) -> RequestId {
        self.request_next += 1;
        self.request_next
    }

    fn init(&mut self, expected: Option<(i64, i16)>) {
        let fresh = self.core.needs_producer_id(ID).then(|| {
            self.producer_id_next += 1;
            self.producer_id_next - 1
        });
        let request = self.request();
        writeln!(self.text, "> init").unwrap();
        self.step(Input::InitProducerId {
            request,
            now: self.now,
            wall_ms: 5,
            transactional_id: ID.to_string(),
            timeout: TIMEOUT,
            expected,
            fresh_producer_id: fresh,
        });
    }

    fn add(&mut self, producer: (i64, i16), partitions: &[TopicPartition]) {
        let request = self.request();
        writeln!(self.text, "> add {}", partitions.len()).unwrap();
        self.step(Input::AddPartitions {
            request,
            now: self.now,
            wall_ms: 6,
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            epoch: producer.1,
            partitions: partitions.to_vec(),
        });
    }

    fn end(&mut self, producer: (i64, i16), commit: bool) {
        let request = self.request();
        writeln!(
            self.text,
            "> end {}",
            if commit { "commit" } else { "abort" }
        )
        .unwrap();
        self.step(Input::EndTxn {
            request,
            wall_ms: 7,
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            epoch: producer.1,
            commit,
        });
    }

    /// Reports every pending write durable (the last write of each partition suffices).
    fn durable(&mut self) {
        writeln!(self.text, "> durable").unwrap();
        for (write, record) in std::mem::take(&mut self.pending) {
            self.durable_log.push(record);
            self.events.push(Event::Durable(write));
            self.step(Input::Persisted { write });
        }
    }

    fn fail_writes(&mut self) {
        writeln!(self.text, "> write fails").unwrap();
        for (write, _) in std::mem::take(&mut self.pending) {
            self.step(Input::PersistFailed {
                write,
                now: self.now,
            });
        }
    }

    fn markers_written(&mut self, producer: (i64, i16)) {
        writeln!(self.text, "> markers written").unwrap();
        self.step(Input::MarkersWritten {
            wall_ms: 8,
            transactional_id: ID.to_string(),
            producer_id: producer.0,
            epoch: producer.1,
        });
    }

    fn tick(&mut self, now_ms: u64) {
        self.now = Duration::from_millis(now_ms);
        writeln!(self.text, "> tick {now_ms}").unwrap();
        self.step(Input::Tick {
            now: self.now,
            wall_ms: 9,
        });
    }

    fn state(&self) -> (TxnState, i64, i16) {
        let metadata = self.core.describe(ID).expect("described").metadata;
        (metadata.state, metadata.producer_id, metadata.epoch)
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// The rule the planted bug breaks: a COMMIT marker goes out only once a durable record says
/// PrepareCommit for that producer id and epoch. Returns the first violation.
fn markers_after_durable_decision(events: &[Event]) -> Result<(), String> {
    let mut written: std::collections::BTreeMap<WriteId, TxnMetadata> = Default::default();
    let mut decided = std::collections::BTreeSet::new();
    for event in events {
        match event {
            Event::Output(Output::Persist { write, record, .. }) => {
                written.insert(*write, record.metadata.clone().expect("no tombstones"));
            }
            Event::Durable(write) => {
                let metadata = &written[write];
                if metadata.state == TxnState::PrepareCommit {
                    decided.insert((metadata.producer_id, metadata.epoch));
                }
            }
            Event::Output(Output::Markers(markers)) if markers.commit => {
                if !decided.contains(&(markers.producer_id, markers.epoch)) {
                    return Err(format!(
                        "COMMIT markers before a durable decision: {markers:?}"
                    ));
                }
            }
            Event::Output(_) => {}
        }
    }
    Ok(())
}

fn committed_once(harness: &mut Harness) -> (i64, i16) {
    harness.init(None);
    harness.durable();
    let producer = (100, 0);
    harness.add(producer, &[tp("t", 0), tp("t", 1)]);
    harness.durable();
    harness.end(producer, true);
    harness.durable();
    harness.markers_written(producer);
    harness.durable();
    producer
}

#[test]
fn a_commit_goes_prepare_durable_markers_complete() {
    let mut harness = Harness::new();
    let producer = committed_once(&mut harness);
    insta::assert_snapshot!(harness.take(), @r"
    > init
    persist Empty pid=100 epoch=0 partitions=0
    > durable
    init Ok((100, 0))
    > add 2
    persist Ongoing pid=100 epoch=0 partitions=2
    > durable
    add Ok(())
    > end commit
    persist PrepareCommit pid=100 epoch=0 partitions=2
    > durable
    markers COMMIT pid=100 epoch=0 partitions=2
    end Ok(())
    > markers written
    persist CompleteCommit pid=100 epoch=0 partitions=0
    > durable
    ");
    assert_eq!(harness.state(), (TxnState::CompleteCommit, 100, 0));
    markers_after_durable_decision(&harness.events).unwrap();
    // A retried EndTxn of the completed commit is answered as the first; the opposite is not.
    harness.end(producer, true);
    harness.end(producer, false);
    // The next transaction starts from Complete*, and adding a partition again writes nothing.
    harness.add(producer, &[tp("t", 2)]);
    harness.durable();
    harness.add(producer, &[tp("t", 2)]);
    insta::assert_snapshot!(harness.take(), @r"
    > end commit
    end Ok(())
    > end abort
    end Err(InvalidTxnState)
    > add 1
    persist Ongoing pid=100 epoch=0 partitions=1
    > durable
    add Ok(())
    > add 1
    add Ok(())
    ");
}

#[test]
fn requests_during_a_transition_get_concurrent_transactions() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.init(None);
    harness.durable();
    let producer = (100, 0);
    harness.add(producer, &[tp("t", 0)]);
    harness.end(producer, true);
    harness.durable();
    harness.end(producer, true);
    harness.durable();
    // Markers out: the retry waits, a new transaction waits, InitProducerId waits.
    harness.end(producer, true);
    harness.add(producer, &[tp("t", 1)]);
    harness.init(Some(producer));
    insta::assert_snapshot!(harness.take(), @r"
    > init
    persist Empty pid=100 epoch=0 partitions=0
    > init
    init Err(ConcurrentTransactions)
    > durable
    init Ok((100, 0))
    > add 1
    persist Ongoing pid=100 epoch=0 partitions=1
    > end commit
    end Err(ConcurrentTransactions)
    > durable
    add Ok(())
    > end commit
    persist PrepareCommit pid=100 epoch=0 partitions=1
    > durable
    markers COMMIT pid=100 epoch=0 partitions=1
    end Ok(())
    > end commit
    end Err(ConcurrentTransactions)
    > add 1
    add Err(ConcurrentTransactions)
    > init
    init Err(ConcurrentTransactions)
    ");
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.durable();
    let old = (100, 0);
    harness.add(old, &[tp("t", 0)]);
    harness.durable();
    harness.take();
    harness.init(None);
    harness.durable();
    // The old producer is fenced at once, before the abort completes.
    harness.add(old, &[tp("t", 1)]);
    harness.end(old, true);
    harness.markers_written((100, 1));
    harness.durable();
    harness.init(None);
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > init
    persist PrepareAbort pid=100 epoch=1 partitions=1
    > durable
    markers ABORT pid=100 epoch=1 partitions=1
    init Err(ConcurrentTransactions)
    > add 1
    add Err(ProducerFenced)
    > end commit
    end Err(ProducerFenced)
    > markers written
    persist CompleteAbort pid=100 epoch=1 partitions=0
    > durable
    > init
    persist Empty pid=100 epoch=2 partitions=0
    > durable
    init Ok((100, 2))
    ");
    // The old producer, and a KIP-360 re-init naming it, stay fenced.
    harness.end(old, false);
    harness.init(Some(old));
    // A retry of the last bump (the client lost its answer) gets the same epoch back.
    harness.init(Some((100, 1)));
    harness.init(Some((100, 2)));
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > end abort
    end Err(ProducerFenced)
    > init
    init Err(ProducerFenced)
    > init
    init Ok((100, 2))
    > init
    persist Empty pid=100 epoch=3 partitions=0
    > durable
    init Ok((100, 3))
    ");
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_with_a_bumped_epoch() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.durable();
    let producer = (100, 0);
    harness.tick(10);
    harness.add(producer, &[tp("t", 0)]);
    harness.durable();
    harness.take();
    assert_eq!(
        harness.core.deadline_next(),
        Some(Duration::from_millis(1_010))
    );
    harness.tick(1_009);
    harness.tick(1_010);
    assert_eq!(
        harness.core.deadline_next(),
        None,
        "nothing runs while the abort is written"
    );
    harness.durable();
    harness.end(producer, true);
    harness.markers_written((100, 1));
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > tick 1009
    > tick 1010
    persist PrepareAbort pid=100 epoch=1 partitions=1
    > durable
    markers ABORT pid=100 epoch=1 partitions=1
    > end commit
    end Err(ProducerFenced)
    > markers written
    persist CompleteAbort pid=100 epoch=1 partitions=0
    > durable
    ");
    assert_eq!(harness.state(), (TxnState::CompleteAbort, 100, 1));
}

#[test]
fn a_failed_timeout_abort_is_retried_after_a_backoff_not_at_once() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.durable();
    harness.add((100, 0), &[tp("t", 0)]);
    harness.durable();
    harness.take();
    harness.tick(1_000);
    harness.fail_writes();
    assert_eq!(
        harness.core.deadline_next(),
        Some(Duration::from_millis(1_100)),
        "an offline log must not spin the timer"
    );
    harness.tick(1_000);
    harness.tick(1_100);
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > tick 1000
    persist PrepareAbort pid=100 epoch=1 partitions=1
    > write fails
    > tick 1000
    > tick 1100
    persist PrepareAbort pid=100 epoch=1 partitions=1
    > durable
    markers ABORT pid=100 epoch=1 partitions=1
    ");
}

#[test]
fn bad_requests_get_kafkas_errors() {
    let mut harness = Harness::new();
    harness.add((1, 0), &[tp("t", 0)]);
    harness.end((1, 0), true);
    harness.init(None);
    harness.durable();
    harness.add((99, 0), &[tp("t", 0)]);
    harness.add((100, 7), &[tp("t", 0)]);
    harness.end((100, 0), true);
    harness.end((100, 0), false);
    let request = harness.request();
    harness.step(Input::InitProducerId {
        request,
        now: Duration::ZERO,
        wall_ms: 0,
        transactional_id: ID.to_string(),
        timeout: Duration::from_millis(60_001),
        expected: None,
        fresh_producer_id: None,
    });
    insta::assert_snapshot!(harness.take(), @r"
    > add 1
    add Err(InvalidProducerIdMapping)
    > end commit
    end Err(InvalidProducerIdMapping)
    > init
    persist Empty pid=100 epoch=0 partitions=0
    > durable
    init Ok((100, 0))
    > add 1
    add Err(InvalidProducerIdMapping)
    > add 1
    add Err(ProducerFenced)
    > end commit
    end Err(InvalidTxnState)
    > end abort
    end Err(InvalidTxnState)
    init Err(InvalidTransactionTimeout)
    ");
}

#[test]
fn a_failed_write_changes_nothing_and_a_failed_completion_is_retried() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.fail_writes();
    assert!(harness.core.describe(ID).is_none(), "the id never existed");
    harness.init(None);
    harness.durable();
    let producer = (101, 0);
    harness.add(producer, &[tp("t", 0)]);
    harness.fail_writes();
    assert_eq!(harness.state(), (TxnState::Empty, 101, 0));
    harness.add(producer, &[tp("t", 0)]);
    harness.durable();
    harness.end(producer, false);
    harness.durable();
    harness.take();
    harness.markers_written(producer);
    harness.fail_writes();
    assert_eq!(harness.state(), (TxnState::PrepareAbort, 101, 0));
    harness.tick(100);
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > markers written
    persist CompleteAbort pid=101 epoch=0 partitions=0
    > write fails
    > tick 100
    persist CompleteAbort pid=101 epoch=0 partitions=0
    > durable
    ");
    assert_eq!(harness.state(), (TxnState::CompleteAbort, 101, 0));
}

/// A completion to retry (its write failed) while a resent `MarkersWritten` has started the
/// completion again: the retry waits for that write instead of starting a second one, and once
/// the completion is durable nothing is due any more. Before, the tick's retry started a second
/// write in flight for the id (a panic), and a tick that skipped it while `deadline_next` still
/// named it would have spun the timer at one instant (now a panic after `TICK_ROUNDS_MAX`).
#[test]
fn a_completion_retry_waits_for_a_completion_in_flight_and_ticks_leave_nothing_due() {
    let mut harness = Harness::new();
    harness.init(None);
    harness.durable();
    let producer = (100, 0);
    harness.add(producer, &[tp("t", 0)]);
    harness.durable();
    harness.end(producer, true);
    harness.durable();
    harness.take();
    harness.markers_written(producer);
    harness.fail_writes();
    assert_eq!(
        harness.core.deadline_next(),
        Some(super::coordinator::COMPLETE_RETRY_BACKOFF)
    );
    harness.markers_written(producer);
    assert_eq!(harness.core.deadline_next(), None, "a write is in flight");
    harness.tick(100);
    harness.durable();
    harness.tick(200);
    insta::assert_snapshot!(harness.take(), @r"
    > markers written
    persist CompleteCommit pid=100 epoch=0 partitions=0
    > write fails
    > markers written
    persist CompleteCommit pid=100 epoch=0 partitions=0
    > tick 100
    > durable
    > tick 200
    ");
    assert_eq!(harness.state(), (TxnState::CompleteCommit, 100, 0));
    assert_eq!(harness.core.deadline_next(), None);
}

#[test]
fn an_exhausted_epoch_rotates_the_producer_id() {
    let mut harness = Harness::new();
    let metadata = TxnMetadata {
        producer_id: 7,
        last_producer_id: -1,
        epoch: i16::MAX - 1,
        last_epoch: -1,
        timeout: TIMEOUT,
        state: TxnState::CompleteCommit,
        partitions: BTreeSet::new(),
        last_update_ms: 0,
        start_ms: 0,
    };
    let record = TxnRecord {
        transactional_id: ID.to_string(),
        metadata: Some(metadata),
    };
    harness.core.replay(Duration::ZERO, record);
    harness.core.replay_finish(&mut Vec::new());
    assert!(harness.core.needs_producer_id(ID));
    harness.init(None);
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > init
    persist Empty pid=100 epoch=0 partitions=0
    > durable
    init Ok((100, 0))
    ");
}

#[test]
fn replay_restores_every_id_and_resends_markers_of_prepared_decisions() {
    let mut harness = Harness::new();
    let producer = committed_once(&mut harness);
    harness.add(producer, &[tp("t", 0), tp("u", 3)]);
    harness.durable();
    harness.end(producer, true);
    harness.durable();
    let before = harness.core.describe(ID).unwrap();
    let mut replayed = Coordinator::new(config(), 4, 4);
    for record in &harness.durable_log {
        let (key, value) = record_encode(record);
        let decoded = record_decode(Some(&key), value.as_ref()).unwrap();
        replayed.replay(Duration::from_secs(3), decoded);
    }
    let mut outputs = Vec::new();
    replayed.replay_finish(&mut outputs);
    let after = replayed.describe(ID).unwrap();
    // v0 records do not hold the previous producer id and epoch.
    assert_eq!(
        after.metadata,
        TxnMetadata {
            last_epoch: -1,
            last_producer_id: -1,
            ..before.metadata
        }
    );
    assert_eq!(
        outputs,
        [Output::Markers(Markers {
            transactional_id: ID.to_string(),
            producer_id: 100,
            epoch: 0,
            commit: true,
            partitions: [tp("t", 0), tp("u", 3)].into(),
        })]
    );
}

#[test]
fn a_moved_partition_answers_not_coordinator_and_serves_only_once_loaded_and_active() {
    // The last coordinator's log: a commit decided, its markers not all written.
    let mut old = Harness::new();
    let producer = committed_once(&mut old);
    old.add(producer, &[tp("t", 0), tp("u", 3)]);
    old.durable();
    old.end(producer, true);
    old.durable();
    let index = old.core.partition_for(ID);

    let mut harness = Harness::new();
    harness.core = Coordinator::replicated(config(), 4, 4);
    // Not held: every request is answered NOT_COORDINATOR, and nothing is allocated.
    assert!(!harness.core.needs_producer_id(ID));
    harness.init(None);
    harness.end(producer, true);
    harness.core.partition_load_begin(index);
    for record in &old.durable_log {
        harness.core.replay(Duration::ZERO, record.clone());
    }
    // Loading: replayed, but neither served nor acted on (no markers, no deadline).
    harness.end(producer, true);
    assert_eq!(harness.core.deadline_next(), None);
    assert!(harness.core.describe(ID).is_none());
    let mut outputs = Vec::new();
    harness.core.partition_activate(&mut outputs, index);
    assert_eq!(
        outputs,
        [Output::Markers(Markers {
            transactional_id: ID.to_string(),
            producer_id: 100,
            epoch: 0,
            commit: true,
            partitions: [tp("t", 0), tp("u", 3)].into(),
        })],
        "the new coordinator finishes the decision it found"
    );
    harness.markers_written(producer);
    // Deposed with the completion in flight: it is failed NOT_COORDINATOR and forgotten.
    harness.end(producer, true);
    let mut outputs = Vec::new();
    harness.core.partition_unload(&mut outputs, index);
    harness.end(producer, true);
    insta::assert_snapshot!(harness.take(), @r"
    > init
    init Err(NotCoordinator)
    > end commit
    end Err(NotCoordinator)
    > end commit
    end Err(CoordinatorLoadInProgress)
    > markers written
    persist CompleteCommit pid=100 epoch=0 partitions=0
    > end commit
    end Err(ConcurrentTransactions)
    > end commit
    end Err(NotCoordinator)
    ");
    assert!(outputs.is_empty(), "the completion had nobody to answer");
    assert_eq!(harness.core.list().count(), 0);
}

#[test]
fn a_partition_activates_while_another_holds_a_new_id_with_its_first_write_in_flight() {
    // cluster-txn seed 0: the resend of prepared decisions looked at every id, and a new id of
    // another partition has no durable state yet.
    let mut harness = Harness::new();
    harness.core = Coordinator::replicated(config(), 4, 4);
    let index = harness.core.partition_for(ID);
    harness.core.partition_load_begin(index);
    harness.core.partition_activate(&mut Vec::new(), index);
    harness.init(None);
    let other = (0..4)
        .find(|candidate| *candidate != index)
        .expect("four partitions");
    harness.core.partition_load_begin(other);
    let mut outputs = Vec::new();
    harness.core.partition_activate(&mut outputs, other);
    assert!(outputs.is_empty());
    harness.durable();
    insta::assert_snapshot!(harness.take(), @r"
    > init
    persist Empty pid=100 epoch=0 partitions=0
    > durable
    init Ok((100, 0))
    ");
}

#[test]
fn records_round_trip_and_damaged_ones_are_refused() {
    let metadata = TxnMetadata {
        producer_id: 42,
        last_producer_id: -1,
        epoch: 3,
        last_epoch: -1,
        timeout: Duration::from_millis(60_000),
        state: TxnState::Ongoing,
        partitions: [tp("a", 0), tp("a", 2), tp("b", 1)].into(),
        last_update_ms: 1_700_000_000_000,
        start_ms: 1_699_999_999_000,
    };
    let record = TxnRecord {
        transactional_id: "app-1".to_string(),
        metadata: Some(metadata),
    };
    let (key, value) = record_encode(&record);
    assert_eq!(&key[..], b"\x00\x00\x00\x05app-1");
    let value = value.unwrap();
    assert_eq!(record_decode(Some(&key), Some(&value)), Ok(record.clone()));
    let tombstone = record_decode(Some(&key), None).unwrap();
    assert_eq!(tombstone.metadata, None);
    for cut in 0..value.len() {
        assert!(record_decode(Some(&key), Some(&value.slice(..cut))).is_err());
    }
    let mut bad_state = value.to_vec();
    bad_state[2 + 8 + 2 + 4] = 9;
    assert!(record_decode(Some(&key), Some(&bad_state.into())).is_err());
    assert!(record_decode(None, Some(&value)).is_err());
}

#[test]
fn the_planted_bug_sends_markers_before_the_decision_is_durable() {
    let mut harness = Harness::with(Some(Bug::MarkersBeforeDurableDecision));
    committed_once(&mut harness);
    let violation = markers_after_durable_decision(&harness.events);
    assert!(
        violation.is_err(),
        "the ordering check must catch the planted bug"
    );
}

#[test]
fn add_offsets_maps_a_group_to_its_offsets_partition() {
    let core = Coordinator::new(config(), 4, 16);
    assert_eq!(
        core.offsets_partition("my-group"),
        TopicPartition {
            topic: "__consumer_offsets".to_string(),
            partition: crate::group::coordinator::partition_for("my-group", 16),
        }
    );
}

/// One random step of the property below.
#[derive(Debug, Clone)]
enum Op {
    /// InitProducerId of id `0` or `1`; with the producer's current id and epoch (KIP-360) or not.
    Init(usize, bool),
    /// AddPartitions of `count` partitions, with the current producer or a stale epoch.
    Add(usize, usize, bool),
    End(usize, bool, bool),
    /// The oldest write in flight becomes durable.
    Durable,
    /// The oldest write in flight fails.
    Fail,
    /// The oldest outstanding markers are all written.
    MarkersDone,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, any::<bool>()).prop_map(|(id, expected)| Op::Init(id, expected)),
        (0..2usize, 1..3usize, any::<bool>()).prop_map(|(id, n, ok)| Op::Add(id, n, ok)),
        (0..2usize, any::<bool>(), any::<bool>()).prop_map(|(id, c, ok)| Op::End(id, c, ok)),
        Just(Op::Durable),
        Just(Op::Durable),
        Just(Op::Durable),
        Just(Op::Fail),
        Just(Op::MarkersDone),
        Just(Op::MarkersDone),
        (1..1_500u64).prop_map(Op::Advance),
    ]
}

const IDS: [&str; 2] = ["a", "b"];

/// Drives the core with two transactional ids and checks, after every step, the rules a client
/// and the partitions rely on: markers and EndTxn answers only after their decision is durable,
/// no producer id and epoch handed out twice, and replay of the durable log giving the state
/// the core shows.
struct Property {
    core: Coordinator,
    now: Duration,
    request_next: RequestId,
    producer_id_next: i64,
    /// Writes in flight, in emission order, with their records.
    in_flight: Vec<(WriteId, TxnRecord)>,
    /// Every durable record, in log order, for the replay check.
    durable_log: Vec<TxnRecord>,
    /// Decisions durable so far: (producer id, epoch, commit).
    decided: BTreeSet<(i64, i16, bool)>,
    markers: Vec<Markers>,
    /// Every (producer id, epoch) an InitProducerId handed out.
    issued: BTreeSet<(i64, i16)>,
    /// The last producer each id was given, as its client would hold it.
    producers: [Option<(i64, i16)>; 2],
    /// Outstanding EndTxn requests: request -> (producer id, epoch, commit).
    ends: BTreeMap<RequestId, (i64, i16, bool)>,
    /// Outstanding InitProducerId requests: request -> id index.
    inits: BTreeMap<RequestId, usize>,
}

impl Property {
    fn new(core: Coordinator) -> Property {
        Property {
            core,
            now: Duration::ZERO,
            request_next: 1,
            producer_id_next: 100,
            in_flight: Vec::new(),
            durable_log: Vec::new(),
            decided: BTreeSet::new(),
            markers: Vec::new(),
            issued: BTreeSet::new(),
            producers: [None, None],
            ends: BTreeMap::new(),
            inits: BTreeMap::new(),
        }
    }

    fn step(&mut self, input: Input) {
        let mut outputs = Vec::new();
        self.core.step(&mut outputs, input);
        for output in outputs {
            match output {
                Output::Persist { write, record, .. } => self.in_flight.push((write, record)),
                Output::Markers(markers) => {
                    let decision = (markers.producer_id, markers.epoch, markers.commit);
                    assert!(
                        self.decided.contains(&decision),
                        "markers before their decision is durable: {markers:?}"
                    );
                    self.markers.push(markers);
                }
                Output::InitProducerId { request, result } => {
                    let id = self.inits.remove(&request).expect("one answer per request");
                    if let Ok(producer) = result {
                        // A KIP-360 retry gets the same producer back; anything else is new.
                        if self.producers[id] != Some(producer) {
                            assert!(self.issued.insert(producer), "{producer:?} issued twice");
                        }
                        self.producers[id] = Some(producer);
                    }
                }
                Output::EndTxn { request, result } => {
                    let (producer_id, epoch, commit) = self.ends.remove(&request).expect("asked");
                    if result.is_ok() {
                        assert!(
                            self.decided.contains(&(producer_id, epoch, commit)),
                            "EndTxn answered before its decision was durable"
                        );
                    }
                }
                Output::AddPartitions { .. } => {}
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let request = self.request_next;
        self.request_next += 1;
        let wall_ms = self.now.as_millis() as i64;
        match op.clone() {
            Op::Init(id, expected) => {
                let fresh = self.core.needs_producer_id(IDS[id]).then(|| {
                    self.producer_id_next += 1;
                    self.producer_id_next
                });
                self.inits.insert(request, id);
                self.step(Input::InitProducerId {
                    request,
                    now: self.now,
                    wall_ms,
                    transactional_id: IDS[id].to_string(),
                    timeout: TIMEOUT,
                    expected: if expected { self.producers[id] } else { None },
                    fresh_producer_id: fresh,
                });
            }
            Op::Add(id, count, current) => {
                let Some((producer_id, epoch)) = self.producers[id] else {
                    return;
                };
                let epoch = if current {
                    epoch
                } else {
                    epoch.saturating_sub(1)
                };
                let partitions = (0..count as i32).map(|p| tp("t", p)).collect();
                self.step(Input::AddPartitions {
                    request,
                    now: self.now,
                    wall_ms,
                    transactional_id: IDS[id].to_string(),
                    producer_id,
                    epoch,
                    partitions,
                });
            }
            Op::End(id, commit, current) => {
                let Some((producer_id, epoch)) = self.producers[id] else {
                    return;
                };
                let epoch = if current {
                    epoch
                } else {
                    epoch.saturating_sub(1)
                };
                self.ends.insert(request, (producer_id, epoch, commit));
                self.step(Input::EndTxn {
                    request,
                    wall_ms,
                    transactional_id: IDS[id].to_string(),
                    producer_id,
                    epoch,
                    commit,
                });
            }
            Op::Durable => {
                if self.in_flight.is_empty() {
                    return;
                }
                let (write, record) = self.in_flight.remove(0);
                let metadata = record.metadata.clone().expect("no tombstones");
                let decision = match metadata.state {
                    TxnState::PrepareCommit => Some(true),
                    TxnState::PrepareAbort => Some(false),
                    _ => None,
                };
                if let Some(commit) = decision {
                    self.decided
                        .insert((metadata.producer_id, metadata.epoch, commit));
                }
                self.durable_log.push(record);
                self.step(Input::Persisted { write });
            }
            Op::Fail => {
                if self.in_flight.is_empty() {
                    return;
                }
                let (write, _) = self.in_flight.remove(0);
                self.step(Input::PersistFailed {
                    write,
                    now: self.now,
                });
            }
            Op::MarkersDone => {
                if self.markers.is_empty() {
                    return;
                }
                let markers = self.markers.remove(0);
                self.step(Input::MarkersWritten {
                    wall_ms,
                    transactional_id: markers.transactional_id,
                    producer_id: markers.producer_id,
                    epoch: markers.epoch,
                });
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.step(Input::Tick {
                    now: self.now,
                    wall_ms,
                });
            }
        }
    }

    /// Replaying the durable log gives the state the core shows (but for the previous producer
    /// id and epoch, which v0 records do not keep).
    fn replay_agrees(&self) {
        let mut replayed = Coordinator::new(config(), 4, 4);
        for record in &self.durable_log {
            let (key, value) = record_encode(record);
            replayed.replay(
                Duration::ZERO,
                record_decode(Some(&key), value.as_ref()).unwrap(),
            );
        }
        replayed.replay_finish(&mut Vec::new());
        let strip = |description: TxnDescription| TxnMetadata {
            last_producer_id: -1,
            last_epoch: -1,
            ..description.metadata
        };
        for id in IDS {
            assert_eq!(
                self.core.describe(id).map(strip),
                replayed.describe(id).map(strip),
                "{id}: replay disagrees"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_requests_keep_the_transaction_rules(ops in prop::collection::vec(op(), 1..150)) {
        let mut property = Property::new(Coordinator::new(config(), 4, 4));
        for op in &ops {
            property.apply(op);
            if property.in_flight.is_empty() {
                property.replay_agrees();
            }
        }
    }
}

/// The property above catches the planted bug (it would not be worth much otherwise).
#[test]
fn the_property_catches_markers_before_the_durable_decision() {
    let mut core = Coordinator::new(config(), 4, 4);
    core.planted_set(Some(Bug::MarkersBeforeDurableDecision));
    let mut property = Property::new(core);
    let ops = [
        Op::Init(0, false),
        Op::Durable,
        Op::Add(0, 1, true),
        Op::Durable,
        Op::End(0, true, true),
    ];
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for op in &ops {
            property.apply(op);
        }
    }));
    assert!(caught.is_err());
}
