//! History checker: Kafka delivery guarantees checked from a recorded history, with Jepsen's
//! Kafka-workload semantics plus a few more checks.
//!
//! **Invariant:** pure analysis. No runtime, clock or I/O, and no crate of ours; the same history
//! always yields the same report, byte for byte.
//! **Boundary:** [`History`] in, [`Report`] out ([`check`]); [`script`] builds small histories
//! from text for tests.
//!
//! Module map:
//! - `history`: the model a workload records (events, ops, micro-ops, partitions).
//! - `operations`: pairs invocations with completions; flags malformed histories.
//! - `index`: per-partition log (offset -> values), writers and reads, built once.
//! - `checks/`: one module per family of anomalies, each documenting its exact rule.
//! - `metadata_log`: the cluster control plane's checker, with its own history (Raft leaders,
//!   applied entries, admin operations, final images).
//! - `report`, `render`: anomalies, stats, text and JSON output.

mod checks;
pub mod history;
mod index;
pub mod metadata_log;
mod operations;
mod render;
mod report;
pub mod script;
mod stats;

pub use history::{
    Clocks, Event, EventKind, History, MicroOp, OffsetQuery, Op, Partition, Processing, Record,
    RecordSpec, Source, TopicSettings,
};
pub use report::{
    Anomaly, LookupRule, PrecommitReason, Report, Stats, LISTED_MAX, RENDERED_PER_KIND_MAX,
};

/// Checks a history. Linear in its size, up to logarithmic factors.
pub fn check(history: &History) -> Report {
    let mut anomalies = Vec::new();
    let operations = operations::pair(&mut anomalies, history);
    let index = index::build(&mut anomalies, &operations);
    let log_starts = checks::retention::LogStarts::build(&operations);
    let compaction = checks::compaction::Compaction::build(history, &operations, &index);
    let analysis = checks::Analysis {
        history,
        operations,
        index,
        log_starts,
        compaction,
    };
    checks::run(&mut anomalies, &analysis);
    let stats = stats::collect(&analysis, &anomalies);
    Report {
        seed: None,
        anomalies,
        stats,
    }
}
