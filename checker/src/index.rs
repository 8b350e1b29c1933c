//! The per-partition index, built once and shared by every check.
//!
//! For each partition it holds:
//! - `log`: offset -> the distinct values anyone saw there. Following Jepsen, polls count from
//!   every operation (a consumer returns only what the broker served, whatever happens to the
//!   surrounding operation), but a send's acknowledged offset counts only if its operation must
//!   have committed: `Ok`, or `Info` with some of its values read by an `Ok` poll (a transaction
//!   commits all or nothing, so one observed value proves the rest).
//! - `writers`: value -> the send that wrote it (values are unique per partition).
//! - `reads_ok`: value -> the first `Ok` poll completion that read it, and how many `Ok` records
//!   returned it. "Observed" in every check means present here.
//!
//! Offsets without values (transaction markers, aborted records) never enter `log`, so the log's
//! keys are exactly the offsets known to hold committed, visible records; Jepsen's "dense index"
//! is the position among those keys.

use crate::history::{MicroOp, Partition, Record};
use crate::operations::{OpId, Operations, Outcome};
use crate::report::Anomaly;
use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct Index<'h> {
    pub partitions: BTreeMap<&'h Partition, PartitionIndex>,
    /// Per operation: must its sends have taken effect? (See the module doc.)
    pub committed: Vec<bool>,
}

#[derive(Default)]
pub(crate) struct PartitionIndex {
    pub log: BTreeMap<i64, Vec<Seen>>,
    pub writers: BTreeMap<i64, Writer>,
    pub reads_ok: BTreeMap<i64, Read>,
    /// The keys of `log`, sorted, for counting offsets in a range in O(log n).
    pub offsets: Vec<i64>,
}

/// One value seen at one offset, with the first event that saw it there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub value: i64,
    pub event: usize,
}

/// How an `Ok` poll first read a value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Read {
    pub event: usize,
    pub offset: i64,
    /// How many `Ok` poll records returned this value, in all.
    pub count: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer {
    pub op: OpId,
}

impl PartitionIndex {
    /// How many log offsets lie strictly between `low` and `high`.
    pub fn offsets_between(&self, low: i64, high: i64) -> usize {
        let start = self.offsets.partition_point(|offset| *offset <= low);
        let end = self.offsets.partition_point(|offset| *offset < high);
        end.saturating_sub(start)
    }

    fn observe(&mut self, offset: i64, value: i64, event: usize) {
        let values = self.log.entry(offset).or_default();
        match values.iter_mut().find(|seen| seen.value == value) {
            // Keep the earliest witness: sends are indexed after polls.
            Some(seen) => seen.event = seen.event.min(event),
            None => values.push(Seen { value, event }),
        }
    }
}

/// Builds the index; a value sent twice to one partition is reported as a malformed history.
pub(crate) fn build<'h>(anomalies: &mut Vec<Anomaly>, operations: &Operations<'h>) -> Index<'h> {
    let mut index = Index::default();
    index_sends_and_polls(anomalies, &mut index, operations);
    index.committed = operations
        .list
        .iter()
        .map(|operation| match operation.outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Info => sends(operation.op.micro_ops()).any(|(partition, value, _)| {
                index.partitions[partition].reads_ok.contains_key(&value)
            }),
        })
        .collect();
    // Acknowledged offsets join the log only once we know which sends took effect.
    for (id, operation) in operations.list.iter().enumerate() {
        if !index.committed[id] {
            continue;
        }
        for (partition, value, offset) in sends(operation.op.micro_ops()) {
            if let Some(offset) = offset {
                let log = index.partitions.get_mut(partition).expect("indexed send");
                log.observe(offset, value, operation.event());
            }
        }
    }
    for partition_index in index.partitions.values_mut() {
        partition_index.offsets = partition_index.log.keys().copied().collect();
    }
    index
}

fn index_sends_and_polls<'h>(
    anomalies: &mut Vec<Anomaly>,
    index: &mut Index<'h>,
    operations: &Operations<'h>,
) {
    for (id, operation) in operations.list.iter().enumerate() {
        for (partition, value, _) in sends(operation.op.micro_ops()) {
            let writers = &mut index.partitions.entry(partition).or_default().writers;
            if let Some(earlier) = writers.insert(value, Writer { op: id }) {
                let reason = format!(
                    "value {value} sent to {partition} again (first by event {}); values must be \
                     unique per partition",
                    operations.list[earlier.op].invoke
                );
                anomalies.push(Anomaly::MalformedHistory {
                    event: operation.invoke,
                    reason,
                });
            }
        }
        let Some(event) = operation.complete else {
            continue;
        };
        for (partition, records) in polls(operation.op.micro_ops()) {
            let partition_index = index.partitions.entry(partition).or_default();
            for record in records {
                partition_index.observe(record.offset, record.value, event);
                if operation.outcome == Outcome::Ok {
                    let read = Read {
                        event,
                        offset: record.offset,
                        count: 0,
                    };
                    partition_index
                        .reads_ok
                        .entry(record.value)
                        .or_insert(read)
                        .count += 1;
                }
            }
        }
    }
}

/// The sends of a txn: (partition, value, acknowledged offset).
pub(crate) fn sends(
    micro_ops: &[MicroOp],
) -> impl Iterator<Item = (&Partition, i64, Option<i64>)> + '_ {
    micro_ops.iter().filter_map(|micro_op| match micro_op {
        MicroOp::Send {
            partition,
            value,
            offset,
            ..
        } => Some((partition, *value, *offset)),
        MicroOp::Poll { .. } => None,
    })
}

/// The polled records of a txn, per poll micro-op and partition, in order.
pub(crate) fn polls(micro_ops: &[MicroOp]) -> impl Iterator<Item = (&Partition, &[Record])> + '_ {
    micro_ops
        .iter()
        .flat_map(|micro_op| match micro_op {
            MicroOp::Poll { records, .. } => Some(
                records
                    .iter()
                    .map(|(partition, records)| (partition, records.as_slice())),
            ),
            MicroOp::Send { .. } => None,
        })
        .flatten()
}
