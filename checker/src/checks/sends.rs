//! nonmonotonic-send and send-realtime-order. Only acknowledged sends count: a send in an `Ok`
//! operation whose completion carries its offset.
//!
//! - nonmonotonic-send: one process's acknowledged sends to one partition, in the order it issued
//!   them, get strictly increasing offsets. `internal` when both are in one operation (a
//!   transaction or batch sends in order, so its records land in order).
//! - malformed-accepted: a `SendMalformed` (a batch poisoned on purpose) acknowledged.
//! - send-realtime-order: if send A was acknowledged before send B was invoked, B's offset is
//!   after A's. Same-process pairs are left to nonmonotonic-send, so each bug is reported once.
//!   Checked in one pass: each partition keeps its highest acknowledged send and the highest from
//!   any other process, snapshotted when an operation is invoked and compared on its completion.

use crate::checks::Analysis;
use crate::history::{EventKind, Op, Partition, Record};
use crate::index::sends;
use crate::operations::Outcome;
use crate::report::Anomaly;
use std::collections::BTreeMap;

pub(crate) fn check_nonmonotonic(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    // (process, partition) -> last acknowledged send and its completion event.
    let mut last: BTreeMap<(u64, &Partition), (Record, usize)> = BTreeMap::new();
    for (position, event) in analysis.history.events.iter().enumerate() {
        let Some(id) = analysis.operations.completed_at[position] else {
            continue;
        };
        if analysis.operations.list[id].outcome != Outcome::Ok {
            continue;
        }
        let mut sent_here: Vec<&Partition> = Vec::new();
        for (partition, value, offset) in sends(event.op.micro_ops()) {
            let Some(offset) = offset else { continue };
            let next = Record { offset, value };
            if let Some((previous, previous_event)) =
                last.insert((event.process, partition), (next, position))
            {
                if next.offset <= previous.offset {
                    anomalies.push(Anomaly::NonmonotonicSend {
                        partition: partition.clone(),
                        process: event.process,
                        internal: sent_here.contains(&partition),
                        previous: previous_event,
                        next: position,
                        send_previous: previous,
                        send_next: next,
                    });
                }
            }
            sent_here.push(partition);
        }
    }
}

#[derive(Clone, Copy)]
struct Acked {
    send: Record,
    process: u64,
    complete: usize,
}

/// The highest acknowledged send of a partition, and the highest from a different process.
#[derive(Clone, Copy, Default)]
struct Highest {
    first: Option<Acked>,
    second: Option<Acked>,
}

impl Highest {
    fn add(&mut self, acked: Acked) {
        match self.first {
            Some(first) if first.process == acked.process => {
                if acked.send.offset > first.send.offset {
                    self.first = Some(acked);
                }
            }
            Some(first) if acked.send.offset > first.send.offset => {
                self.second = Some(first);
                self.first = Some(acked);
            }
            Some(_) => {
                if self
                    .second
                    .is_none_or(|second| acked.send.offset > second.send.offset)
                {
                    self.second = Some(acked);
                }
            }
            None => self.first = Some(acked),
        }
    }

    /// The highest acknowledged send by a process other than `process`.
    fn other_than(&self, process: u64) -> Option<Acked> {
        [self.first, self.second]
            .into_iter()
            .flatten()
            .find(|acked| acked.process != process)
    }
}

pub(crate) fn check_realtime_order(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let mut highest: BTreeMap<&Partition, Highest> = BTreeMap::new();
    // Process -> (invocation event, snapshot of `highest` for the partitions it sends to).
    let mut invoked: BTreeMap<u64, (usize, BTreeMap<&Partition, Highest>)> = BTreeMap::new();
    for (position, event) in analysis.history.events.iter().enumerate() {
        if event.kind == EventKind::Invoke {
            let snapshot = sends(event.op.micro_ops())
                .map(|(partition, _, _)| {
                    (
                        partition,
                        highest.get(partition).copied().unwrap_or_default(),
                    )
                })
                .collect();
            invoked.insert(event.process, (position, snapshot));
            continue;
        }
        let Some(id) = analysis.operations.completed_at[position] else {
            continue;
        };
        let Some((later_invoke, snapshot)) = invoked.remove(&event.process) else {
            continue;
        };
        if analysis.operations.list[id].outcome != Outcome::Ok {
            continue;
        }
        for (partition, value, offset) in sends(event.op.micro_ops()) {
            let Some(offset) = offset else { continue };
            let later_send = Record { offset, value };
            let earlier = snapshot
                .get(partition)
                .and_then(|h| h.other_than(event.process));
            if let Some(earlier) = earlier.filter(|earlier| earlier.send.offset >= offset) {
                anomalies.push(Anomaly::SendRealtimeOrder {
                    partition: partition.clone(),
                    earlier_complete: earlier.complete,
                    earlier_send: earlier.send,
                    later_invoke,
                    later_complete: position,
                    later_send,
                });
            }
        }
        for (partition, value, offset) in sends(event.op.micro_ops()) {
            let Some(offset) = offset else { continue };
            let acked = Acked {
                send: Record { offset, value },
                process: event.process,
                complete: position,
            };
            highest.entry(partition).or_default().add(acked);
        }
    }
}

/// Every acknowledged `SendMalformed`: a broker that validates what it stores refuses them all.
pub(crate) fn check_malformed_accepted(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    for (position, event) in analysis.history.events.iter().enumerate() {
        let Op::SendMalformed { partition, poison } = &event.op else {
            continue;
        };
        if event.kind == EventKind::Ok {
            anomalies.push(Anomaly::MalformedAccepted {
                partition: partition.clone(),
                poison: poison.clone(),
                send: position,
            });
        }
    }
}
