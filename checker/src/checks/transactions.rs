//! Transaction visibility: aborted-read (G1a), precommitted-read, torn-transaction. Consumers are
//! assumed to read committed (`isolation.level=read_committed`).
//!
//! - aborted-read: an `Ok` poll read a value whose sending operation completed `Fail`: the
//!   transaction aborted (or the plain send definitely failed), so the record must never be
//!   visible. Reported once per value, with the first reader and the number of reads.
//! - precommitted-read: an `Ok` poll read a value that cannot have been committed when it was read:
//!   either the reading operation is the writing transaction itself (Kafka never shows a
//!   transaction its own uncommitted records; Jepsen's rule), or the reading operation completed
//!   before the writing operation was even invoked. We cannot be stricter: a transaction commits
//!   somewhere between its invocation and its completion, and a reader may legitimately finish
//!   before the writer hears the commit's acknowledgement.
//! - torn-transaction: an `Ok` operation polled some record of a committed transaction with two
//!   or more sends, and its polls of another of that transaction's partitions returned records on
//!   both sides of (or at) the acknowledged offset of another send, without that send's value. A
//!   torn read is always also a skip, so poll-skip (internal) reports the same hole; this names
//!   the transaction that was split.

use crate::checks::Analysis;
use crate::history::{Partition, Record};
use crate::index::{polls, sends};
use crate::operations::{OpId, Operation, Outcome};
use crate::report::{Anomaly, PrecommitReason};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn check_aborted_reads(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    for (partition, index) in &analysis.index.partitions {
        for (value, read) in &index.reads_ok {
            let Some(writer) = index.writers.get(value) else {
                continue;
            };
            let operation = &analysis.operations.list[writer.op];
            if operation.outcome == Outcome::Fail {
                anomalies.push(Anomaly::AbortedRead {
                    partition: (*partition).clone(),
                    offset: read.offset,
                    value: *value,
                    writer: operation.event(),
                    reader: read.event,
                    reader_count: read.count,
                });
            }
        }
    }
}

pub(crate) fn check_precommitted_reads(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    for (id, reader) in analysis.operations.list.iter().enumerate() {
        let Some(reader_complete) = reader.complete.filter(|_| reader.outcome == Outcome::Ok)
        else {
            continue;
        };
        let mut reported: BTreeSet<(&Partition, i64)> = BTreeSet::new();
        for (partition, records) in polls(reader.op.micro_ops()) {
            let writers = &analysis.index.partitions[partition].writers;
            for record in records {
                let Some(writer) = writers.get(&record.value) else {
                    continue;
                };
                let writer_invoke = analysis.operations.list[writer.op].invoke;
                let reason = if writer.op == id {
                    PrecommitReason::OwnWrite
                } else if reader_complete < writer_invoke {
                    PrecommitReason::ReadBeforeWriteInvoked
                } else {
                    continue;
                };
                if reported.insert((partition, record.value)) {
                    anomalies.push(Anomaly::PrecommittedRead {
                        partition: partition.clone(),
                        offset: record.offset,
                        value: record.value,
                        writer: writer_invoke,
                        reader: reader_complete,
                        reason,
                    });
                }
            }
        }
    }
}

pub(crate) fn check_torn(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    for reader in &analysis.operations.list {
        if reader.outcome == Outcome::Ok {
            torn_reads(anomalies, analysis, reader);
        }
    }
}

fn torn_reads(anomalies: &mut Vec<Anomaly>, analysis: &Analysis, reader: &Operation) {
    // Partition -> lowest and highest offset this operation polled.
    let mut ranges: BTreeMap<&Partition, (i64, i64)> = BTreeMap::new();
    let mut read: BTreeSet<(&Partition, i64)> = BTreeSet::new();
    // Multi-send committed writers this operation read from -> the first record it read of each.
    let mut writers: BTreeMap<OpId, (&Partition, Record)> = BTreeMap::new();
    for (partition, records) in polls(reader.op.micro_ops()) {
        let index = &analysis.index.partitions[partition];
        for record in records {
            let range = ranges
                .entry(partition)
                .or_insert((record.offset, record.offset));
            *range = (range.0.min(record.offset), range.1.max(record.offset));
            read.insert((partition, record.value));
            let Some(writer) = index.writers.get(&record.value) else {
                continue;
            };
            let writer_op = analysis.operations.list[writer.op].op;
            if analysis.index.committed[writer.op] && sends(writer_op.micro_ops()).nth(1).is_some()
            {
                writers.entry(writer.op).or_insert((partition, *record));
            }
        }
    }
    for (writer_id, (observed_partition, observed)) in writers {
        let writer = &analysis.operations.list[writer_id];
        for (partition, value, offset) in sends(writer.op.micro_ops()) {
            let Some(offset) = offset else { continue };
            let Some((low, high)) = ranges.get(partition) else {
                continue;
            };
            if (*low..=*high).contains(&offset) && !read.contains(&(partition, value)) {
                anomalies.push(Anomaly::TornTransaction {
                    writer: writer.event(),
                    reader: reader.event(),
                    observed_partition: observed_partition.clone(),
                    observed,
                    missed_partition: partition.clone(),
                    missed: Record { offset, value },
                });
            }
        }
    }
}
