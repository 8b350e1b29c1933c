//! Incremental lag tracking for the simulator's liveness phase.
//!
//! Feed it every event as it is recorded; `pending()` answers "has every acknowledged send been
//! polled yet?" the way the simulator prints a liveness failure: `partition t-0: lag 12 after
//! heal`. It counts every send acknowledged so far; [`crate::check`]'s `unseen` anomaly is the
//! after-the-fact version, which counts only sends acknowledged before the final polls began and
//! leaves out those it already reports as lost writes.

use crate::history::{Event, EventKind, MicroOp, Partition};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Acknowledged and not yet polled, per partition.
    unseen: BTreeMap<Partition, BTreeSet<i64>>,
    /// Polled by an `Ok` operation, per partition.
    seen: BTreeMap<Partition, BTreeSet<i64>>,
}

impl Liveness {
    /// Takes one event; only `Ok` completions of `Txn`s matter.
    pub fn observe(&mut self, event: &Event) {
        if event.kind != EventKind::Ok {
            return;
        }
        for micro_op in event.op.micro_ops() {
            match micro_op {
                MicroOp::Send {
                    partition, value, ..
                } => {
                    let seen = self
                        .seen
                        .get(partition)
                        .is_some_and(|seen| seen.contains(value));
                    if !seen {
                        self.unseen
                            .entry(partition.clone())
                            .or_default()
                            .insert(*value);
                    }
                }
                MicroOp::Poll { records, .. } => {
                    for (partition, records) in records {
                        let seen = self.seen.entry(partition.clone()).or_default();
                        let unseen = self.unseen.entry(partition.clone()).or_default();
                        for record in records {
                            seen.insert(record.value);
                            unseen.remove(&record.value);
                        }
                    }
                }
            }
        }
    }

    /// Acknowledged sends not yet polled, per partition with any.
    pub fn lag(&self) -> BTreeMap<Partition, usize> {
        self.unseen
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(partition, values)| (partition.clone(), values.len()))
            .collect()
    }

    /// `None` once every acknowledged send was polled, else the first lagging partition.
    pub fn pending(&self) -> Option<String> {
        let (partition, lag) = self.lag().into_iter().next()?;
        Some(format!("partition {partition}: lag {lag} after heal"))
    }
}
