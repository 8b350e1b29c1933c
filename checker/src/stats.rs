//! Counts that show how much a history exercised, so a clean report on an idle run is visible.

use crate::checks::Analysis;
use crate::history::{MicroOp, Op};
use crate::index::sends;
use crate::operations::Outcome;
use crate::report::{Anomaly, Stats};

pub(crate) fn collect(analysis: &Analysis, anomalies: &[Anomaly]) -> Stats {
    let mut stats = Stats {
        events: analysis.history.events.len(),
        operations: analysis.operations.list.len(),
        partitions: analysis.index.partitions.len(),
        ..Stats::default()
    };
    for operation in &analysis.operations.list {
        let send_count = sends(operation.op.micro_ops()).count();
        match operation.outcome {
            Outcome::Ok => stats.sends_ok += send_count,
            Outcome::Fail => stats.sends_fail += send_count,
            Outcome::Info => stats.sends_info += send_count,
        }
        if operation.outcome != Outcome::Ok {
            continue;
        }
        for micro_op in operation.op.micro_ops() {
            if let MicroOp::Poll {
                records,
                final_poll,
            } = micro_op
            {
                stats.polls_ok += 1;
                stats.final_polls_ok += usize::from(*final_poll);
                stats.records_polled += records.values().map(Vec::len).sum::<usize>();
            }
        }
        match operation.op {
            Op::Commit { .. } => stats.commits_ok += 1,
            Op::ListCommitted { .. } => stats.lists_committed_ok += 1,
            _ => {}
        }
    }
    for event in &analysis.history.events {
        match event.op {
            Op::Crash => stats.crashes += 1,
            Op::Rebalance { .. } => stats.rebalances += 1,
            _ => {}
        }
    }
    stats.values_observed = analysis
        .index
        .partitions
        .values()
        .map(|p| p.reads_ok.len())
        .sum();
    for anomaly in anomalies {
        *stats
            .anomalies
            .entry(anomaly.kind().to_string())
            .or_default() += 1;
    }
    stats
}
