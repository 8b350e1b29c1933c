//! lookup-wrong: ListOffsets answers checked against what was acknowledged and read.
//!
//! A ListOffsets answer is only ever computed from readable records, those below the high
//! watermark, which no crash may take back. So, for an `Ok` answer `offset` on a partition:
//! - beyond-end: every offset the answer counts as existing (below an earliest or latest answer,
//!   at or below a found timestamp's record) held its record when the answer came. A known
//!   record there whose send was invoked only after the answer completed proves the answer
//!   counted a record that was later lost, and its offset reused.
//! - behind-end: a latest answer lies above every offset acknowledged (`Ok` send) or read (`Ok`
//!   poll) before the lookup was invoked, of a record committed at an epoch at most the
//!   answer's, as far as the history tells (`History::leader_epochs`, a lower bound: the batch's
//!   epoch, or the epoch its acknowledgement was routed by; a record with none counts against
//!   every answer). A leader at epoch E answers only once its HW reaches the start of E
//!   (KIP-207), so it covers everything committed before E began, and what it committed itself;
//!   a record committed at a later epoch may be ahead of a deposed leader that has not learned
//!   of its successor, which Kafka fences only by the epoch a client sends (KIP-320), not by
//!   time.
//! - For a timestamp `T` (Kafka: the first offset whose record timestamp is at or after `T`):
//!   timestamp-skipped, a known record below the answer has a timestamp >= T; timestamp-early,
//!   the known record at the answer has a timestamp < T; timestamp-mismatch, the answer's
//!   timestamp is not that record's; timestamp-missed, no record was found although one
//!   acknowledged or read before the lookup was invoked has a timestamp >= T.
//!
//! A record's timestamp is the one its send recorded (`MicroOp::Send::timestamp`); records
//! whose send recorded none are not used for the timestamp rules. Known records are the index's
//! log, so `Info` sends count only once observed, and an offset nobody observed constrains
//! nothing. Records below the log start are not special-cased: the rules assume no retention or
//! DeleteRecords moved the log start (the seek workload runs on topics without them).

use crate::checks::Analysis;
use crate::history::{EventKind, MicroOp, OffsetQuery, Op, Partition, Record};
use crate::index::PartitionIndex;
use crate::operations::Outcome;
use crate::report::{Anomaly, LookupRule};
use std::collections::BTreeMap;

/// One known record with what the rules need: when its send began and its timestamp.
#[derive(Clone, Copy)]
struct Known {
    record: Record,
    /// The invocation event of its send; `None` for a value no operation sent (a phantom).
    writer_invoke: Option<usize>,
    /// The event that first saw it (its witness).
    event: usize,
    timestamp: Option<i64>,
}

/// Per partition: known records in offset order, with prefix maxima for the range rules.
struct Timeline {
    known: Vec<Known>,
    /// `writer_latest[i]`: among `known[..=i]`, the one whose send was invoked last.
    writer_latest: Vec<usize>,
    /// `timestamp_max[i]`: among `known[..=i]` with a timestamp, the one with the largest.
    timestamp_max: Vec<Option<usize>>,
}

/// What a process knew of a partition when it invoked a lookup.
#[derive(Clone, Default)]
struct Visible {
    /// Per epoch the record is known committed at or after (`History::leader_epochs`; -1:
    /// unknown), the highest offset acknowledged or read so far, and the event that did.
    offset_max: BTreeMap<i32, (Record, usize)>,
    /// Per leader epoch likewise, the largest timestamp among records acknowledged or read.
    timestamp_max: BTreeMap<i32, (i64, Record, usize)>,
}

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let timestamps = send_timestamps(analysis);
    let mut timelines: BTreeMap<&Partition, Timeline> = BTreeMap::new();
    let mut visible: BTreeMap<&Partition, Visible> = BTreeMap::new();
    // Per process: the `Visible` of the partition of its open lookup, as of its invocation.
    let mut invoked: BTreeMap<u64, Visible> = BTreeMap::new();
    for (position, event) in analysis.history.events.iter().enumerate() {
        if let (EventKind::Invoke, Op::ListOffsets { partition, .. }) = (event.kind, &event.op) {
            let seen = visible.get(partition).cloned().unwrap_or_default();
            invoked.insert(event.process, seen);
            continue;
        }
        let Some(id) = analysis.operations.completed_at[position] else {
            continue;
        };
        let operation = &analysis.operations.list[id];
        if operation.outcome != Outcome::Ok {
            continue;
        }
        match operation.op {
            Op::Txn(micro_ops) => {
                let epochs = &analysis.history.leader_epochs;
                visible_update(&mut visible, &timestamps, epochs, micro_ops, position);
            }
            Op::ListOffsets {
                partition,
                query,
                offset: Some(offset),
                timestamp,
                leader_epoch,
            } => {
                let Some(index) = analysis.index.partitions.get(partition) else {
                    continue;
                };
                let timeline = timelines
                    .entry(partition)
                    .or_insert_with(|| timeline_build(analysis, index, &timestamps[partition]));
                let before = invoked.remove(&event.process).unwrap_or_default();
                let answer = Answer {
                    partition,
                    lookup: position,
                    query: *query,
                    offset: *offset,
                    timestamp: timestamp.unwrap_or(-1),
                    leader_epoch: *leader_epoch,
                };
                anomalies.extend(answer_check(timeline, before, answer));
            }
            _ => {}
        }
    }
}

struct Answer<'a> {
    partition: &'a Partition,
    lookup: usize,
    query: OffsetQuery,
    offset: i64,
    timestamp: i64,
    /// The answering leader's epoch; `None` holds the answer to every record.
    leader_epoch: Option<i32>,
}

fn answer_check(timeline: &Timeline, before: Visible, answer: Answer) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut wrong = |rule, witness: usize, record: Record| {
        anomalies.push(Anomaly::LookupWrong {
            partition: answer.partition.clone(),
            lookup: answer.lookup,
            query: answer.query,
            offset: answer.offset,
            rule,
            witness,
            record,
        });
    };
    // The offsets the answer says existed: below it, and for a found timestamp the record too.
    let existing_end = match answer.query {
        OffsetQuery::Timestamp(_) if answer.offset >= 0 => answer.offset.saturating_add(1),
        OffsetQuery::Timestamp(_) => 0,
        OffsetQuery::Earliest | OffsetQuery::Latest => answer.offset,
    };
    let below = timeline
        .known
        .partition_point(|known| known.record.offset < existing_end);
    if below > 0 {
        let latest = timeline.known[timeline.writer_latest[below - 1]];
        if latest
            .writer_invoke
            .is_some_and(|invoke| invoke > answer.lookup)
        {
            let witness = latest.writer_invoke.expect("some");
            wrong(LookupRule::BeyondEnd, witness, latest.record);
        }
    }
    if answer.query == OffsetQuery::Latest {
        let covered = before
            .offset_max
            .range(..=answer.leader_epoch.unwrap_or(i32::MAX))
            .map(|(_, seen)| *seen)
            .max_by_key(|(record, _)| record.offset);
        if let Some((record, event)) = covered {
            if answer.offset <= record.offset {
                wrong(LookupRule::BehindEnd, event, record);
            }
        }
    }
    let OffsetQuery::Timestamp(asked) = answer.query else {
        return anomalies;
    };
    if answer.offset < 0 {
        let covered = before
            .timestamp_max
            .range(..=answer.leader_epoch.unwrap_or(i32::MAX))
            .map(|(_, seen)| *seen)
            .max_by_key(|(timestamp, _, _)| *timestamp);
        if let Some((timestamp, record, event)) = covered {
            if timestamp >= asked {
                wrong(LookupRule::TimestampMissed, event, record);
            }
        }
        return anomalies;
    }
    let start = timeline
        .known
        .partition_point(|known| known.record.offset < answer.offset);
    if let Some(max) = start
        .checked_sub(1)
        .and_then(|last| timeline.timestamp_max[last])
    {
        let known = timeline.known[max];
        if known.timestamp.is_some_and(|timestamp| timestamp >= asked) {
            wrong(LookupRule::TimestampSkipped, known.event, known.record);
        }
    }
    for known in &timeline.known[start..below] {
        let Some(timestamp) = known.timestamp else {
            continue;
        };
        if timestamp < asked {
            wrong(LookupRule::TimestampEarly, known.event, known.record);
        } else if timestamp != answer.timestamp {
            wrong(LookupRule::TimestampMismatch, known.event, known.record);
        }
    }
    anomalies
}

/// Per partition: value -> the timestamp its send recorded.
fn send_timestamps<'h>(analysis: &Analysis<'h>) -> BTreeMap<&'h Partition, BTreeMap<i64, i64>> {
    let mut timestamps: BTreeMap<&Partition, BTreeMap<i64, i64>> = BTreeMap::new();
    for partition in analysis.index.partitions.keys() {
        timestamps.entry(partition).or_default();
    }
    for event in &analysis.history.events {
        for micro_op in event.op.micro_ops() {
            if let MicroOp::Send {
                partition,
                value,
                timestamp: Some(timestamp),
                ..
            } = micro_op
            {
                timestamps
                    .entry(partition)
                    .or_default()
                    .insert(*value, *timestamp);
            }
        }
    }
    timestamps
}

fn visible_update<'h>(
    visible: &mut BTreeMap<&'h Partition, Visible>,
    timestamps: &BTreeMap<&'h Partition, BTreeMap<i64, i64>>,
    epochs: &BTreeMap<Partition, BTreeMap<i64, i32>>,
    micro_ops: &'h [MicroOp],
    event: usize,
) {
    let mut see = |partition: &'h Partition, record: Record| {
        let seen = visible.entry(partition).or_default();
        let epoch = epochs
            .get(partition)
            .and_then(|offsets| offsets.get(&record.offset))
            .copied()
            .unwrap_or(-1);
        let max = seen.offset_max.entry(epoch).or_insert((record, event));
        if record.offset > max.0.offset {
            *max = (record, event);
        }
        let timestamp = timestamps
            .get(partition)
            .and_then(|values| values.get(&record.value));
        if let Some(&timestamp) = timestamp {
            let max = seen
                .timestamp_max
                .entry(epoch)
                .or_insert((timestamp, record, event));
            if timestamp > max.0 {
                *max = (timestamp, record, event);
            }
        }
    };
    for micro_op in micro_ops {
        match micro_op {
            MicroOp::Send {
                partition,
                value,
                offset: Some(offset),
                ..
            } => see(
                partition,
                Record {
                    offset: *offset,
                    value: *value,
                },
            ),
            MicroOp::Send { .. } => {}
            MicroOp::Poll { records, .. } => {
                for (partition, records) in records {
                    for record in records {
                        see(partition, *record);
                    }
                }
            }
        }
    }
}

fn timeline_build(
    analysis: &Analysis,
    index: &PartitionIndex,
    timestamps: &BTreeMap<i64, i64>,
) -> Timeline {
    let mut timeline = Timeline {
        known: Vec::new(),
        writer_latest: Vec::new(),
        timestamp_max: Vec::new(),
    };
    for (offset, seen) in &index.log {
        for s in seen {
            let writer_invoke = index
                .writers
                .get(&s.value)
                .map(|writer| analysis.operations.list[writer.op].invoke);
            let known = Known {
                record: Record {
                    offset: *offset,
                    value: s.value,
                },
                writer_invoke,
                event: s.event,
                timestamp: timestamps.get(&s.value).copied(),
            };
            let i = timeline.known.len();
            timeline.known.push(known);
            let writer_latest = match timeline.writer_latest.last() {
                Some(&previous) if timeline.known[previous].writer_invoke >= writer_invoke => {
                    previous
                }
                _ => i,
            };
            timeline.writer_latest.push(writer_latest);
            let timestamp_max = match timeline.timestamp_max.last().copied().flatten() {
                Some(previous) if timeline.known[previous].timestamp >= known.timestamp => {
                    Some(previous)
                }
                _ if known.timestamp.is_some() => Some(i),
                previous => previous,
            };
            timeline.timestamp_max.push(timestamp_max);
        }
    }
    timeline
}
