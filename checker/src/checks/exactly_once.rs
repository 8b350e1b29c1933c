//! Exactly-once output of consume-transform-produce processors (`History::processing`).
//!
//! A processor turns each input record into one output record and commits the outputs together
//! with its input offsets in one transaction. Judged from what read_committed polls returned and
//! the group's final committed offsets (the last `Ok` `ListCommitted` of the processors' group
//! invoked after the final polls began, when the workload has stopped every processor and let
//! every transaction finish):
//! - output-duplicated: two distinct output records made from one input record (same partition
//!   and offset) were both returned by `Ok` polls: the input was processed twice and both
//!   transactions committed (a zombie not fenced, a commit applied after an abort, a replay that
//!   lost the committed offsets).
//! - output-missing: an input record below the final committed offset of its partition, known to
//!   be committed in the input log, has no output any `Ok` poll returned: its consumption was
//!   committed without its output (the offsets' marker applied, the output's lost or aborted).
//! - output-uncommitted-input: an output was returned whose input lies at or above the final
//!   committed offset: the output committed without the offsets of its transaction.
//!
//! The last two need a final `ListCommitted`; without one only duplicates are judged. Inputs below
//! a reported log start are excused, as everywhere.

use crate::checks::lost::final_polls_start;
use crate::checks::Analysis;
use crate::history::{Op, Partition, Record, Source};
use crate::operations::Outcome;
use crate::report::{listed, Anomaly};
use std::collections::BTreeMap;

/// An output record a poll returned: its source, partition, record and first reader.
type Output<'h> = (&'h Source, &'h Partition, Record, usize);

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let Some(processing) = &analysis.history.processing else {
        return;
    };
    // Input (partition, offset) -> the outputs read that were made from it, in partition and
    // value order, each with its first reader.
    let mut outputs: BTreeMap<(&Partition, i64), Vec<Output>> = BTreeMap::new();
    for (output, sources) in &processing.sources {
        let Some(index) = analysis.index.partitions.get(output) else {
            continue;
        };
        for (value, read) in &index.reads_ok {
            let Some(source) = sources.get(value) else {
                continue;
            };
            let record = Record {
                offset: read.offset,
                value: *value,
            };
            outputs
                .entry((&source.partition, source.offset))
                .or_default()
                .push((source, output, record, read.event));
        }
    }
    for made in outputs.values().filter(|made| made.len() > 1) {
        anomalies.push(Anomaly::OutputDuplicated {
            input: made[0].0.partition.clone(),
            input_value: made[0].0.value,
            outputs: listed(made)
                .into_iter()
                .map(|(_, partition, record, _)| (partition.clone(), record))
                .collect(),
            readers: listed(made).into_iter().map(|made| made.3).collect(),
        });
    }
    let committed = final_committed(analysis, &processing.group);
    for (input, (offset_committed, list)) in &committed {
        let Some(index) = analysis.index.partitions.get(input) else {
            continue;
        };
        let mut missing: Vec<(i64, i64)> = Vec::new();
        for (offset, seen) in index.log.range(..*offset_committed) {
            if analysis.log_starts.below(input, *offset) || outputs.contains_key(&(input, *offset))
            {
                continue;
            }
            missing.extend(seen.iter().map(|seen| (*offset, seen.value)));
        }
        if !missing.is_empty() {
            anomalies.push(Anomaly::OutputMissing {
                input: (*input).clone(),
                group: processing.group.clone(),
                committed: *offset_committed,
                list: *list,
                count: missing.len(),
                offsets: listed(&missing).iter().map(|m| m.0).collect(),
                values: listed(&missing).iter().map(|m| m.1).collect(),
            });
        }
    }
    for ((input, input_offset), made) in &outputs {
        let Some((offset_committed, list)) = committed.get(input) else {
            continue;
        };
        if input_offset < offset_committed {
            continue;
        }
        let (source, output, record, reader) = made[0];
        anomalies.push(Anomaly::OutputUncommittedInput {
            input: (*input).clone(),
            input_offset: *input_offset,
            input_value: source.value,
            output: output.clone(),
            output_record: record,
            reader,
            group: processing.group.clone(),
            committed: *offset_committed,
            list: *list,
        });
    }
}

/// Per input partition, `group`'s committed offset as the last `Ok` list invoked after the final
/// polls began answered it (-1, none, counts as 0), with that list's completion event.
fn final_committed<'h>(
    analysis: &Analysis<'h>,
    group: &str,
) -> BTreeMap<&'h Partition, (i64, usize)> {
    let mut committed = BTreeMap::new();
    let Some(start) = final_polls_start(analysis) else {
        return committed;
    };
    for operation in &analysis.operations.list {
        let (
            Op::ListCommitted {
                group: listed,
                offsets,
            },
            Outcome::Ok,
            Some(complete),
        ) = (operation.op, operation.outcome, operation.complete)
        else {
            continue;
        };
        if listed != group || operation.invoke < start {
            continue;
        }
        for (partition, offset) in offsets {
            committed.insert(partition, ((*offset).max(0), complete));
        }
    }
    committed
}
