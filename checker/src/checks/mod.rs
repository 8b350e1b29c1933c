//! The checks, one module per family. Each takes the shared [`Analysis`] and appends anomalies in
//! a deterministic order (partition, then offset or event), so one history always yields one
//! report.

pub(crate) mod commits;
pub(crate) mod compaction;
pub(crate) mod exactly_once;
pub(crate) mod lookups;
pub(crate) mod lost;
pub(crate) mod offsets;
pub(crate) mod polls;
pub(crate) mod retention;
pub(crate) mod sends;
pub(crate) mod transactions;

use crate::history::History;
use crate::index::Index;
use crate::operations::Operations;
use crate::report::Anomaly;

/// Everything built once from the history and read by every check.
pub(crate) struct Analysis<'h> {
    pub history: &'h History,
    pub operations: Operations<'h>,
    pub index: Index<'h>,
    /// The log starts the broker reported (`retention`).
    pub log_starts: retention::LogStarts,
    /// Keys and sends of compacted partitions (`compaction`).
    pub compaction: compaction::Compaction,
}

pub(crate) fn run(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    offsets::check(anomalies, analysis);
    lost::check(anomalies, analysis);
    polls::check(anomalies, analysis);
    sends::check_nonmonotonic(anomalies, analysis);
    sends::check_realtime_order(anomalies, analysis);
    transactions::check_aborted_reads(anomalies, analysis);
    transactions::check_precommitted_reads(anomalies, analysis);
    transactions::check_torn(anomalies, analysis);
    commits::check(anomalies, analysis);
    commits::check_generations(anomalies, analysis);
    sends::check_malformed_accepted(anomalies, analysis);
    retention::check_early_deletion(anomalies, analysis);
    compaction::check_latest_values(anomalies, analysis);
    lookups::check(anomalies, analysis);
    exactly_once::check(anomalies, analysis);
}
