//! poll-skip and nonmonotonic-poll, across operations and within one (internal).
//!
//! Each process's consumer has a position per partition: the offset of the last record it read in
//! an `Ok` operation. Walking the history in order, every record a process polls is compared with
//! that position:
//! - nonmonotonic-poll: the record's offset is at or before the position.
//! - poll-skip: some offset strictly between the position and the record is known to hold a
//!   committed record (it is in the index's log), yet the consumer jumped over it.
//!
//! Compared with Jepsen, which measures both with value indices, we compare offsets: a consumer's
//! position is an offset, and offsets stay exact when values are duplicated. Gaps without known
//! records (transaction markers, aborted records) are not skips.
//!
//! On compacted partitions a skipped record counts only if compaction could not have removed it
//! by then (`checks::compaction`).
//!
//! Positions reset (are forgotten) on what legitimately moves a consumer: `Assign` (partitions no
//! longer assigned; all of them with `seek_to_beginning`), `Subscribe`, `Seek`, `Rebalance`,
//! `Crash`, and any `Fail` or `Info` operation that polled (its consumer may have advanced while
//! the operation did not count). If a rebalance happens while an operation is open, its poll
//! micro-ops are not compared with each other either: we cannot tell which side of the rebalance
//! each was on.
//!
//! An `Ok` `Seek` to offset O sets the position to "just before O" instead, until the process
//! next reads that partition. That first record must be the first known committed record at or
//! after O:
//! - seek-skip: it lies above O, and known committed records lie in [O, its offset).
//! - seek-wrong-record: it lies below O (a fetch from mid-batch must drop the batch's records
//!   before O).
//!
//! An `Info` seek may or may not have moved the position: it is forgotten, as before.

use crate::checks::Analysis;
use crate::history::{EventKind, MicroOp, Op, Partition, Record};
use crate::index::PartitionIndex;
use crate::operations::{OpId, Outcome};
use crate::report::{Anomaly, LISTED_MAX};
use std::collections::BTreeMap;

#[derive(Default)]
struct Consumer<'h> {
    positions: BTreeMap<&'h Partition, Position>,
    /// Partitions sought by an `Ok` seek and not read since: the offset and the seek's event.
    sought: BTreeMap<&'h Partition, (i64, usize)>,
    open: bool,
    rebalanced_while_open: bool,
}

impl Consumer<'_> {
    fn forget(&mut self) {
        self.positions.clear();
        self.sought.clear();
    }
}

#[derive(Clone, Copy)]
struct Position {
    offset: i64,
    /// The operation that read it, and that operation's completion event.
    op: OpId,
    event: usize,
}

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let mut consumers: BTreeMap<u64, Consumer> = BTreeMap::new();
    for (position, event) in analysis.history.events.iter().enumerate() {
        let consumer = consumers.entry(event.process).or_default();
        if event.op.is_marker() {
            consumer.forget();
            consumer.rebalanced_while_open |= consumer.open;
            continue;
        }
        if event.kind == EventKind::Invoke {
            consumer.open = true;
            consumer.rebalanced_while_open = false;
            continue;
        }
        let Some(id) = analysis.operations.completed_at[position] else {
            continue;
        };
        consumer.open = false;
        let outcome = analysis.operations.list[id].outcome;
        match (&event.op, outcome) {
            (Op::Txn(micro_ops), Outcome::Ok) => {
                let polled = Polled {
                    process: event.process,
                    op: id,
                    event: position,
                };
                consume(anomalies, analysis, consumer, polled, micro_ops);
            }
            (Op::Txn(micro_ops), Outcome::Fail | Outcome::Info) => {
                if micro_ops.iter().any(|m| matches!(m, MicroOp::Poll { .. })) {
                    consumer.forget();
                }
            }
            (_, Outcome::Fail) => {}
            (Op::Seek { offsets }, Outcome::Ok) => {
                for (partition, offset) in offsets {
                    consumer.positions.remove(partition);
                    consumer.sought.insert(partition, (*offset, position));
                }
            }
            (op, Outcome::Ok | Outcome::Info) => reset(consumer, op),
        }
    }
}

/// Applies a completed `Assign`, `Subscribe` or `Seek` (an `Info` one may have applied).
fn reset(consumer: &mut Consumer, op: &Op) {
    match op {
        Op::Assign {
            seek_to_beginning: true,
            ..
        }
        | Op::Subscribe { .. } => {
            consumer.forget();
        }
        Op::Assign {
            partitions,
            seek_to_beginning: false,
        } => {
            consumer
                .positions
                .retain(|partition, _| partitions.contains(partition));
            consumer
                .sought
                .retain(|partition, _| partitions.contains(partition));
        }
        Op::Seek { offsets } => {
            consumer
                .positions
                .retain(|partition, _| !offsets.contains_key(*partition));
            consumer
                .sought
                .retain(|partition, _| !offsets.contains_key(*partition));
        }
        _ => {}
    }
}

/// Who polled: the process, its operation and that operation's completion event.
#[derive(Clone, Copy)]
struct Polled {
    process: u64,
    op: OpId,
    event: usize,
}

fn consume<'h>(
    anomalies: &mut Vec<Anomaly>,
    analysis: &Analysis<'h>,
    consumer: &mut Consumer<'h>,
    polled: Polled,
    micro_ops: &'h [MicroOp],
) {
    for micro_op in micro_ops {
        let MicroOp::Poll { records, .. } = micro_op else {
            continue;
        };
        if consumer.rebalanced_while_open {
            consumer.forget();
        }
        for (partition, records) in records {
            let index = &analysis.index.partitions[partition];
            for record in records {
                let next = Position {
                    offset: record.offset,
                    op: polled.op,
                    event: polled.event,
                };
                if let Some((offset_sought, seek)) = consumer.sought.remove(partition) {
                    let sought = Sought {
                        partition,
                        process: polled.process,
                        offset: offset_sought,
                        seek,
                    };
                    anomalies.extend(seek_compare(index, sought, next));
                }
                if let Some(previous) = consumer.positions.insert(partition, next) {
                    let step = Step {
                        partition,
                        process: polled.process,
                        previous,
                        next,
                    };
                    anomalies.extend(compare(analysis, index, step));
                }
            }
        }
    }
}

struct Sought<'a> {
    partition: &'a Partition,
    process: u64,
    offset: i64,
    /// The seek's completion event.
    seek: usize,
}

/// The first record read after a seek against the offset sought.
fn seek_compare(index: &PartitionIndex, sought: Sought, read: Position) -> Option<Anomaly> {
    let Sought {
        partition,
        process,
        offset,
        seek,
    } = sought;
    if read.offset < offset {
        return Some(Anomaly::SeekWrongRecord {
            partition: partition.clone(),
            process,
            seek,
            read: read.event,
            offset_sought: offset,
            offset_read: read.offset,
        });
    }
    let skipped_count = index.offsets_between(offset.saturating_sub(1), read.offset);
    if skipped_count == 0 {
        return None;
    }
    Some(Anomaly::SeekSkip {
        partition: partition.clone(),
        process,
        seek,
        read: read.event,
        offset_sought: offset,
        offset_read: read.offset,
        skipped_count,
        skipped: skipped_list(index, offset.saturating_sub(1), read.offset),
    })
}

/// The known records strictly between two offsets, at most `LISTED_MAX`.
fn skipped_list(index: &PartitionIndex, low: i64, high: i64) -> Vec<Record> {
    index
        .log
        .range(low.saturating_add(1)..high.max(low.saturating_add(1)))
        .take(LISTED_MAX)
        .map(|(offset, seen)| Record {
            offset: *offset,
            value: seen[0].value,
        })
        .collect()
}

struct Step<'a> {
    partition: &'a Partition,
    process: u64,
    previous: Position,
    next: Position,
}

fn compare(analysis: &Analysis, index: &PartitionIndex, step: Step) -> Option<Anomaly> {
    let Step {
        partition,
        process,
        previous,
        next,
    } = step;
    let internal = previous.op == next.op;
    if next.offset <= previous.offset {
        return Some(Anomaly::NonmonotonicPoll {
            partition: partition.clone(),
            process,
            internal,
            previous: previous.event,
            next: next.event,
            offset_previous: previous.offset,
            offset_next: next.offset,
        });
    }
    let mut skipped_count = index.offsets_between(previous.offset, next.offset);
    if skipped_count == 0 {
        return None;
    }
    let between = index.log.range(previous.offset + 1..next.offset);
    let skipped: Vec<Record> = if analysis.compaction.covers(partition) {
        // Compaction may have removed some; only the others had to be read.
        let kept: Vec<Record> = between
            .filter(|(offset, seen)| {
                !seen.iter().any(|s| {
                    analysis
                        .compaction
                        .removable(analysis, partition, **offset, s.value, next.event)
                })
            })
            .map(|(offset, seen)| Record {
                offset: *offset,
                value: seen[0].value,
            })
            .collect();
        skipped_count = kept.len();
        if skipped_count == 0 {
            return None;
        }
        kept.into_iter().take(LISTED_MAX).collect()
    } else {
        between
            .take(LISTED_MAX)
            .map(|(offset, seen)| Record {
                offset: *offset,
                value: seen[0].value,
            })
            .collect()
    };
    Some(Anomaly::PollSkip {
        partition: partition.clone(),
        process,
        internal,
        previous: previous.event,
        next: next.event,
        offset_previous: previous.offset,
        offset_next: next.offset,
        skipped_count,
        skipped,
    })
}
