//! lost-write and unseen (the liveness check).
//!
//! lost-write follows Jepsen's bound rule exactly. Per partition, walk the log in offset order;
//! a value's index is its position among the log's non-empty offsets. Every value read by an `Ok`
//! poll has a first index; the largest is the bound: some poll read that far. Every value whose
//! *last* index is at or below the bound should then have been read by someone; one that no `Ok`
//! poll read, and whose operation must have committed, is lost. First and last indices differ
//! only when a value is duplicated; taking the earliest for the bound and the latest for the
//! candidates keeps a duplicate from manufacturing a loss.
//!
//! Both excuse values at offsets below the largest log start the broker reported (retention may
//! have deleted them; `checks::retention` judges whether it was allowed to) and skip compacted
//! partitions, which `checks::compaction` holds to Kafka's compaction guarantee instead.
//!
//! unseen: if the history has final polls, every send acknowledged (`Ok`) before the first final
//! poll was invoked must have been read by some `Ok` poll. Sends acknowledged later raced the final
//! polls and are not required. So must every send of an indeterminate (`Info`) transaction of
//! which an `Ok` poll that completed before the final polls began read some value: a transaction
//! commits all or nothing, so by that read all of it had committed (a coordinator that commits
//! some partitions of a transaction and aborts the rest, whose client never heard back, shows
//! here). Values already reported as lost writes are not repeated here, so an unseen value is one
//! nobody read past: lag, reported as `partition t-0: lag N after heal`.

use crate::checks::Analysis;
use crate::history::{MicroOp, Op, Partition};
use crate::index::PartitionIndex;
use crate::operations::Outcome;
use crate::report::{listed, Anomaly};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let mut lost: BTreeMap<&Partition, BTreeSet<i64>> = BTreeMap::new();
    for (partition, index) in &analysis.index.partitions {
        if analysis.compaction.covers(partition) {
            continue; // `compaction::check_latest_values` holds compacted partitions instead.
        }
        for anomaly in lost_writes(analysis, partition, index) {
            if let Anomaly::LostWrite { value, .. } = anomaly {
                lost.entry(*partition).or_default().insert(value);
            }
            anomalies.push(anomaly);
        }
    }
    let Some(cutoff) = final_polls_start(analysis) else {
        return;
    };
    let observed_before = observed_committed_before(analysis, cutoff);
    for (partition, index) in &analysis.index.partitions {
        if analysis.compaction.covers(partition) {
            continue;
        }
        let mut unseen: Vec<(i64, usize)> = Vec::new();
        for (value, writer) in &index.writers {
            let operation = &analysis.operations.list[writer.op];
            let acknowledged = (operation.outcome == Outcome::Ok
                && operation.complete.is_some_and(|complete| complete < cutoff))
                || observed_before[writer.op];
            let lost_here = lost
                .get(partition)
                .is_some_and(|values| values.contains(value));
            let deleted = send_offset(operation.op, partition, *value)
                .is_some_and(|offset| analysis.log_starts.below(partition, offset));
            if acknowledged && !lost_here && !deleted && !index.reads_ok.contains_key(value) {
                unseen.push((*value, operation.event()));
            }
        }
        if !unseen.is_empty() {
            anomalies.push(Anomaly::Unseen {
                partition: (*partition).clone(),
                count: unseen.len(),
                values: listed(&unseen).iter().map(|u| u.0).collect(),
                writers: listed(&unseen).iter().map(|u| u.1).collect(),
            });
        }
    }
}

/// Per operation: an indeterminate transaction with more than one send, of which an `Ok` poll
/// completed before `cutoff` read some value.
fn observed_committed_before(analysis: &Analysis, cutoff: usize) -> Vec<bool> {
    analysis
        .operations
        .list
        .iter()
        .map(|operation| {
            operation.outcome == Outcome::Info
                && crate::index::sends(operation.op.micro_ops())
                    .nth(1)
                    .is_some()
                && crate::index::sends(operation.op.micro_ops()).any(|(partition, value, _)| {
                    analysis.index.partitions[partition]
                        .reads_ok
                        .get(&value)
                        .is_some_and(|read| read.event < cutoff)
                })
        })
        .collect()
}

/// Where a value sits in the log: first and last index, and the offset of the first.
struct Placement {
    index_first: usize,
    index_last: usize,
    offset_first: i64,
}

fn lost_writes(analysis: &Analysis, partition: &Partition, index: &PartitionIndex) -> Vec<Anomaly> {
    let mut placements: BTreeMap<i64, Placement> = BTreeMap::new();
    let mut offsets: Vec<i64> = Vec::with_capacity(index.log.len());
    for (position, (offset, seen)) in index.log.iter().enumerate() {
        offsets.push(*offset);
        for s in seen {
            let placement = placements.entry(s.value).or_insert(Placement {
                index_first: position,
                index_last: position,
                offset_first: *offset,
            });
            placement.index_last = position;
        }
    }
    // The bound: the furthest first placement of any value an `Ok` poll read.
    let Some((bound, bound_value)) = index
        .reads_ok
        .keys()
        .filter_map(|value| placements.get(value).map(|p| (p.index_first, *value)))
        .max()
    else {
        return Vec::new();
    };
    let mut lost: Vec<(i64, i64)> = placements
        .iter()
        .filter(|(value, placement)| {
            placement.index_last <= bound && !index.reads_ok.contains_key(value)
        })
        // Below a reported log start, retention may have taken it (`checks::retention`).
        .filter(|(_, placement)| {
            !analysis
                .log_starts
                .below(partition, offsets[placement.index_last])
        })
        .filter(|(value, _)| {
            index
                .writers
                .get(value)
                .is_some_and(|writer| analysis.index.committed[writer.op])
        })
        .map(|(value, placement)| (placement.offset_first, *value))
        .collect();
    lost.sort_unstable();
    lost.into_iter()
        .map(|(offset, value)| Anomaly::LostWrite {
            partition: partition.clone(),
            offset,
            value,
            writer: analysis.operations.list[index.writers[&value].op].event(),
            bound_offset: offsets[bound],
            bound_value,
            bound_reader: index.reads_ok[&bound_value].event,
        })
        .collect()
}

/// The offset a send acknowledged for `value` on `partition`, if any.
fn send_offset(op: &Op, partition: &Partition, value: i64) -> Option<i64> {
    crate::index::sends(op.micro_ops())
        .find(|(p, v, _)| *p == partition && *v == value)
        .and_then(|(_, _, offset)| offset)
}

/// The invocation of the first final poll, if the history has any.
pub(crate) fn final_polls_start(analysis: &Analysis) -> Option<usize> {
    analysis
        .operations
        .list
        .iter()
        .find(|operation| {
            let invoked = &analysis.history.events[operation.invoke].op;
            is_final_poll(invoked) || is_final_poll(operation.op)
        })
        .map(|operation| operation.invoke)
}

fn is_final_poll(op: &Op) -> bool {
    op.micro_ops().iter().any(|m| {
        matches!(
            m,
            MicroOp::Poll {
                final_poll: true,
                ..
            }
        )
    })
}
