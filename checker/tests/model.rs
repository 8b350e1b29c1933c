//! Model-based property tests: histories recorded against a correct in-memory broker must pass,
//! and the same histories with one record dropped, duplicated or reordered must not.
//!
//! The model: two partitions whose logs hold visible records and invisible slots (transaction
//! markers, aborted records). Processes send, run multi-send transactions, poll their assigned
//! partitions, reassign, commit and list consumer offsets, and crash. Each operation takes effect
//! atomically at its completion (an `Info` one takes effect or not, by coin flip), so the broker
//! it models is linearizable and every check must stay quiet. A final phase assigns every
//! partition from the beginning and polls everything.

use checker::{check, EventKind, History, MicroOp, Op, Partition, Record};
use proptest::prelude::*;
use std::collections::BTreeMap;

const PARTITION_COUNT: usize = 2;
const PROCESS_COUNT: u64 = 4;
const FINAL_PROCESS: u64 = 99;
const GROUP: &str = "g";

fn partition(index: usize) -> Partition {
    Partition::new("t", index as i32)
}

#[derive(Clone, Copy, Debug)]
struct Action {
    process: u64,
    choice: u8,
    parameter: u8,
}

#[derive(Default)]
struct Consumer {
    /// Assigned partition -> next offset to read.
    positions: BTreeMap<usize, usize>,
}

#[derive(Default)]
struct Model {
    history: History,
    /// Per partition: offset -> visible value, or `None` for an invisible slot.
    logs: [Vec<Option<i64>>; PARTITION_COUNT],
    committed: BTreeMap<usize, i64>,
    value_next: i64,
    /// Process -> the invocation of its open operation.
    open: BTreeMap<u64, Op>,
    consumers: BTreeMap<u64, Consumer>,
}

impl Model {
    fn record(&mut self, process: u64, kind: EventKind, op: Op) {
        let time_ns = self.history.events.len() as u64 * 1_000;
        self.history.push(time_ns, process, kind, op);
    }

    fn step(&mut self, action: Action) {
        if !self.open.contains_key(&action.process) {
            let op = self.invocation(action);
            self.record(action.process, EventKind::Invoke, op.clone());
            self.open.insert(action.process, op);
        } else if action.choice % 10 == 9 {
            self.crash(action);
        } else {
            let kind = match action.choice % 8 {
                0 => EventKind::Fail,
                1 => EventKind::Info,
                _ => EventKind::Ok,
            };
            self.complete(
                action.process,
                kind,
                action.parameter.is_multiple_of(2),
                action.parameter,
            );
        }
    }

    fn invocation(&mut self, action: Action) -> Op {
        let parameter = action.parameter as usize;
        match action.choice % 6 {
            0 | 1 => Op::send(partition(parameter % PARTITION_COUNT), self.value_new()),
            2 => {
                let count = 2 + parameter % 2;
                let micro_ops = (0..count)
                    .map(|i| MicroOp::Send {
                        partition: partition((parameter + i / 2) % PARTITION_COUNT),
                        value: self.value_new(),
                        offset: None,
                        timestamp: None,
                    })
                    .collect();
                Op::Txn(micro_ops)
            }
            3 => Op::poll(false),
            4 => Op::Assign {
                partitions: (0..PARTITION_COUNT)
                    .filter(|i| parameter & (1 << i) != 0)
                    .map(partition)
                    .collect(),
                seek_to_beginning: parameter & 4 != 0,
            },
            _ if parameter.is_multiple_of(2) => {
                let consumer = self.consumers.entry(action.process).or_default();
                let offsets = consumer
                    .positions
                    .iter()
                    .map(|(p, o)| (partition(*p), *o as i64))
                    .collect();
                Op::Commit {
                    group: GROUP.to_string(),
                    generation: None,
                    offsets,
                }
            }
            _ => Op::ListCommitted {
                group: GROUP.to_string(),
                offsets: (0..PARTITION_COUNT).map(|p| (partition(p), -1)).collect(),
            },
        }
    }

    fn value_new(&mut self) -> i64 {
        self.value_next += 1;
        self.value_next
    }

    /// Completes `process`'s open operation. `Info` takes effect only if `applies`.
    fn complete(&mut self, process: u64, kind: EventKind, applies: bool, parameter: u8) {
        let invoked = self.open.remove(&process).expect("open operation");
        let takes_effect = kind == EventKind::Ok || (kind == EventKind::Info && applies);
        let mut op = invoked.clone();
        if takes_effect {
            op = self.apply(process, &invoked, parameter as usize);
        }
        if kind != EventKind::Ok {
            op = invoked; // Only `Ok` completions carry results.
        }
        self.record(process, kind, op);
    }

    /// A crash: the open operation takes effect or not, and the consumer starts over.
    fn crash(&mut self, action: Action) {
        let invoked = self.open.remove(&action.process).expect("open operation");
        if action.parameter.is_multiple_of(2) {
            self.apply(action.process, &invoked, action.parameter as usize);
        }
        self.consumers.remove(&action.process);
        self.record(action.process, EventKind::Info, Op::Crash);
    }

    /// Applies an operation to the model; returns it with results filled in.
    fn apply(&mut self, process: u64, invoked: &Op, parameter: usize) -> Op {
        match invoked {
            Op::Txn(micro_ops) if micro_ops.iter().all(|m| matches!(m, MicroOp::Send { .. })) => {
                Op::Txn(self.append(micro_ops))
            }
            Op::Txn(_) => Op::Txn(vec![self.poll(process, parameter)]),
            Op::Assign {
                partitions,
                seek_to_beginning,
            } => {
                let consumer = self.consumers.entry(process).or_default();
                let assigned: Vec<usize> = (0..PARTITION_COUNT)
                    .filter(|p| partitions.contains(&partition(*p)))
                    .collect();
                consumer
                    .positions
                    .retain(|p, _| assigned.contains(p) && !seek_to_beginning);
                for p in assigned {
                    consumer.positions.entry(p).or_insert(0);
                }
                invoked.clone()
            }
            Op::Commit { offsets, .. } => {
                for (partition, offset) in offsets {
                    self.committed.insert(partition.partition as usize, *offset);
                }
                invoked.clone()
            }
            Op::ListCommitted { group, .. } => Op::ListCommitted {
                group: group.clone(),
                offsets: (0..PARTITION_COUNT)
                    .map(|p| (partition(p), self.committed.get(&p).copied().unwrap_or(-1)))
                    .collect(),
            },
            other => other.clone(),
        }
    }

    /// Appends sends in order; a transaction's commit marker takes one more offset.
    fn append(&mut self, micro_ops: &[MicroOp]) -> Vec<MicroOp> {
        let acknowledged: Vec<MicroOp> = micro_ops
            .iter()
            .map(|micro_op| {
                let MicroOp::Send {
                    partition, value, ..
                } = micro_op
                else {
                    unreachable!()
                };
                let log = &mut self.logs[partition.partition as usize];
                log.push(Some(*value));
                let offset = Some(log.len() as i64 - 1);
                MicroOp::Send {
                    partition: partition.clone(),
                    value: *value,
                    offset,
                    timestamp: None,
                }
            })
            .collect();
        if micro_ops.len() > 1 {
            for log in &mut self.logs {
                log.push(None);
            }
        }
        acknowledged
    }

    /// Reads up to `parameter % 4` visible records from each assigned partition.
    fn poll(&mut self, process: u64, parameter: usize) -> MicroOp {
        let consumer = self.consumers.entry(process).or_default();
        let mut records = BTreeMap::new();
        for (p, position) in consumer.positions.iter_mut() {
            let mut read = Vec::new();
            let log = &self.logs[*p];
            while *position < log.len() && read.len() < parameter % 4 {
                if let Some(value) = log[*position] {
                    read.push(Record {
                        offset: *position as i64,
                        value,
                    });
                }
                *position += 1;
            }
            if !read.is_empty() {
                records.insert(partition(*p), read);
            }
        }
        MicroOp::Poll {
            records,
            final_poll: false,
        }
    }

    /// Finishes open operations, then one final poll reads every partition from the start.
    fn finish(mut self) -> History {
        let open: Vec<u64> = self.open.keys().copied().collect();
        for process in open {
            self.complete(process, EventKind::Ok, true, 3);
        }
        let all: Vec<Partition> = (0..PARTITION_COUNT).map(partition).collect();
        let assign = Op::Assign {
            partitions: all,
            seek_to_beginning: true,
        };
        self.record(FINAL_PROCESS, EventKind::Invoke, assign.clone());
        self.record(FINAL_PROCESS, EventKind::Ok, assign);
        let records: BTreeMap<Partition, Vec<Record>> = (0..PARTITION_COUNT)
            .map(|p| {
                let log = self.logs[p].iter().enumerate();
                let visible = log.filter_map(|(o, v)| {
                    v.map(|value| Record {
                        offset: o as i64,
                        value,
                    })
                });
                (partition(p), visible.collect())
            })
            .collect();
        self.record(FINAL_PROCESS, EventKind::Invoke, Op::poll(true));
        let final_poll = Op::Txn(vec![MicroOp::Poll {
            records,
            final_poll: true,
        }]);
        self.record(FINAL_PROCESS, EventKind::Ok, final_poll);
        self.history
    }
}

/// Three acknowledged sends to t-0 first, so every history has records for the mutations.
fn history(actions: &[Action]) -> History {
    let mut model = Model::default();
    for _ in 0..3 {
        model.step(Action {
            process: 0,
            choice: 0,
            parameter: 0,
        });
        model.complete(0, EventKind::Ok, true, 0);
    }
    for action in actions {
        model.step(*action);
    }
    model.finish()
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    let action =
        (0..PROCESS_COUNT, any::<u8>(), any::<u8>()).prop_map(|(process, choice, parameter)| {
            Action {
                process,
                choice,
                parameter,
            }
        });
    prop::collection::vec(action, 0..300)
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    Drop,
    Duplicate,
    Swap,
}

/// Mutates the final poll's t-0 records around the second one (acknowledged offset 1).
fn mutated(mut history: History, mutation: Mutation) -> History {
    let last = history.events.last_mut().expect("final poll");
    let Op::Txn(micro_ops) = &mut last.op else {
        unreachable!()
    };
    let MicroOp::Poll { records, .. } = &mut micro_ops[0] else {
        unreachable!()
    };
    let records = records.get_mut(&partition(0)).expect("t-0 records");
    match mutation {
        Mutation::Drop => {
            records.remove(1);
        }
        Mutation::Duplicate => records[1].value = records[0].value,
        Mutation::Swap => records.swap(1, 2),
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn correct_broker_histories_pass(actions in actions()) {
        let history = history(&actions);
        let report = check(&history);
        prop_assert!(report.is_valid(), "{}", report.render_text());
        prop_assert!(report.stats.final_polls_ok == 1);
    }

    #[test]
    fn mutated_histories_fail(actions in actions(), which in 0..3usize) {
        let mutation = [Mutation::Drop, Mutation::Duplicate, Mutation::Swap][which];
        let report = check(&mutated(history(&actions), mutation));
        prop_assert!(!report.is_valid(), "{mutation:?} not caught");
    }

    #[test]
    fn histories_survive_json(actions in actions()) {
        let history = history(&actions);
        let json = serde_json::to_string(&history).expect("serializes");
        let parsed: History = serde_json::from_str(&json).expect("parses");
        prop_assert_eq!(&parsed, &history);
        let report = check(&history);
        let report_json = serde_json::to_string(&report).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<checker::Report>(&report_json).expect("parses"), report);
    }
}

/// Guards the properties above against a generator that stopped exercising something.
#[test]
fn generator_exercises_every_operation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = checker::Stats::default();
    for _ in 0..20 {
        let actions = actions()
            .new_tree(&mut runner)
            .expect("generates")
            .current();
        let stats = check(&history(&actions)).stats;
        total.sends_fail += stats.sends_fail;
        total.sends_info += stats.sends_info;
        total.polls_ok += stats.polls_ok;
        total.records_polled += stats.records_polled;
        total.commits_ok += stats.commits_ok;
        total.lists_committed_ok += stats.lists_committed_ok;
        total.crashes += stats.crashes;
    }
    assert!(total.sends_fail > 0 && total.sends_info > 0, "{total:?}");
    assert!(
        total.polls_ok > 20 * 2 && total.records_polled > total.polls_ok,
        "{total:?}"
    );
    assert!(
        total.commits_ok > 0 && total.lists_committed_ok > 0 && total.crashes > 0,
        "{total:?}"
    );
}

/// About 10^5 events, the size of a long simulation run; in release this checks in well under a
/// second (measure with `cargo test -p checker --release --test model large -- --nocapture`).
#[test]
fn large_history_is_valid() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let action =
        (0..PROCESS_COUNT, any::<u8>(), any::<u8>()).prop_map(|(process, choice, parameter)| {
            Action {
                process,
                choice,
                parameter,
            }
        });
    let mut runner = TestRunner::deterministic();
    let actions = prop::collection::vec(action, 100_000)
        .new_tree(&mut runner)
        .expect("generates")
        .current();
    let history = history(&actions);
    assert!(
        history.events.len() > 90_000,
        "{} events",
        history.events.len()
    );
    let report = check(&history);
    assert!(report.is_valid(), "{}", report.render_text());
    println!("{:?}", report.stats);
}
