//! The recorder: every workload operation becomes two history events (invoke, complete) and two
//! trace lines, stamped with simulated time since the run began.

use crate::trace::Trace;
use checker::{EventKind, History, Op, RecordSpec};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: runtime::time::Instant,
}

#[derive(Debug)]
struct Inner {
    history: History,
    trace: Trace,
    /// Faults by name (crash kinds, aimed-fault sites), for the run's summary.
    counts: std::collections::BTreeMap<String, u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recorder {
    pub fn new(trace_lines: bool) -> Recorder {
        // Event times count from here; a broker's wall clock reads this plus the event time
        // (plus its skew), which the time-based checks need.
        let clocks = checker::Clocks {
            wall_origin_ms: runtime::Clock::system().wall_ms(),
            skew_ms_max: 0,
        };
        let inner = Inner {
            history: History {
                clocks: Some(clocks),
                ..History::default()
            },
            trace: Trace::new(trace_lines),
            counts: Default::default(),
        };
        Recorder {
            inner: Arc::new(Mutex::new(inner)),
            start: runtime::Clock::system().now(),
        }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        runtime::Clock::system().now() - self.start
    }

    /// Records a history event and its trace line.
    pub fn event(&self, process: u64, kind: EventKind, op: Op) {
        let elapsed = self.elapsed();
        let mut inner = lock(&self.inner);
        let line = format!(
            "p{process} {kind:?} {}",
            serde_json::to_string(&op).expect("ops serialize")
        );
        inner.trace.record(elapsed, &line);
        inner
            .history
            .push(elapsed.as_nanos() as u64, process, kind, op);
    }

    /// Records a line that is not a client operation: a nemesis action, a phase change.
    pub fn note(&self, line: &str) {
        let elapsed = self.elapsed();
        tracing::info!(at = ?elapsed, "{line}");
        lock(&self.inner).trace.record(elapsed, line);
    }

    /// Counts one fault named `name` for the run's summary.
    pub fn count(&self, name: &str) {
        *lock(&self.inner)
            .counts
            .entry(name.to_string())
            .or_default() += 1;
    }

    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.inner).counts.clone()
    }

    /// Records the settings of a topic whose log may lose records by rule (`checker`).
    pub fn topic_settings(&self, topic: &str, settings: checker::TopicSettings) {
        lock(&self.inner)
            .history
            .topics
            .insert(topic.to_string(), settings);
    }

    /// Records the leader epoch of each polled record's batch (`History::leader_epochs`).
    pub fn leader_epochs_note(&self, records: &[client::ConsumerRecord]) {
        let mut inner = lock(&self.inner);
        for record in records {
            let partition = checker::Partition::new(&record.topic, record.partition);
            epoch_raise(
                &mut inner.history,
                partition,
                record.offset,
                record.leader_epoch,
            );
        }
    }

    /// Records the epoch an acknowledged send was routed by (`History::leader_epochs`).
    pub fn ack_epoch_note(&self, metadata: &client::RecordMetadata) {
        let partition = checker::Partition::new(&metadata.topic, metadata.partition);
        let history = &mut lock(&self.inner).history;
        epoch_raise(history, partition, metadata.offset, metadata.leader_epoch);
    }

    /// Records what the workload put in value `value`'s record: key, tombstone, timestamp.
    pub fn record_spec(&self, partition: &checker::Partition, value: i64, spec: RecordSpec) {
        lock(&self.inner)
            .history
            .records
            .entry(partition.clone())
            .or_default()
            .insert(value, spec);
    }

    /// Names the consumer group the processors commit their input offsets to (`checker`'s
    /// exactly-once check).
    pub fn processing_group(&self, group: &str) {
        lock(&self.inner)
            .history
            .processing
            .get_or_insert_with(Default::default)
            .group = group.to_string();
    }

    /// Records that output `value` of `output` was made from the input record `source`.
    pub fn source(&self, output: &checker::Partition, value: i64, source: checker::Source) {
        lock(&self.inner)
            .history
            .processing
            .get_or_insert_with(Default::default)
            .sources
            .entry(output.clone())
            .or_default()
            .insert(value, source);
    }

    /// Records how far a broker's wall clock may be off the workload's.
    pub fn clock_skew_set(&self, skew_ms_max: i64) {
        if let Some(clocks) = lock(&self.inner).history.clocks.as_mut() {
            clocks.skew_ms_max = skew_ms_max;
        }
    }

    pub fn finish(&self) -> (History, Trace) {
        let inner = lock(&self.inner);
        (inner.history.clone(), inner.trace.clone())
    }
}

/// Raises the epoch known for `offset` to `epoch`: each is a lower bound on the epoch whose
/// leader committed the record.
fn epoch_raise(history: &mut History, partition: checker::Partition, offset: i64, epoch: i32) {
    let known = history.leader_epochs.entry(partition).or_default();
    let entry = known.entry(offset).or_insert(epoch);
    *entry = (*entry).max(epoch);
}
