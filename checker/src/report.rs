//! The checker's output: [`Anomaly`] (one proof of one broken guarantee), [`Stats`], and
//! [`Report`] with its text rendering. Every anomaly names its partition, offsets, values and the
//! event indices (positions in `History::events`) that prove it. Rules live in `checks/`.

use crate::history::{OffsetQuery, Partition, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// How many anomalies of one kind `render_text` prints before summarising the rest.
pub const RENDERED_PER_KIND_MAX: usize = 10;

/// How many values or records one anomaly lists; counts always cover all of them.
pub const LISTED_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anomaly {
    /// The history itself breaks the recording rules (see `history.rs`); the event is ignored.
    MalformedHistory { event: usize, reason: String },
    /// One offset was seen holding different values. `events[i]` first saw `values[i]` there.
    InconsistentOffsets {
        partition: Partition,
        offset: i64,
        values: Vec<i64>,
        events: Vec<usize>,
    },
    /// One value was seen at different offsets. `events[i]` first saw it at `offsets[i]`.
    Duplicate {
        partition: Partition,
        value: i64,
        offsets: Vec<i64>,
        events: Vec<usize>,
    },
    /// A poll returned a value that no operation ever sent to that partition.
    PhantomRead {
        partition: Partition,
        offset: i64,
        value: i64,
        reader: usize,
    },
    /// A committed send was never polled although a poll read past it: `bound_reader` read
    /// `bound_value` at `bound_offset`, which the log places after `offset`.
    LostWrite {
        partition: Partition,
        offset: i64,
        value: i64,
        writer: usize,
        bound_offset: i64,
        bound_value: i64,
        bound_reader: usize,
    },
    /// Liveness: the history has final polls, yet `count` sends acknowledged before they began
    /// were never polled (and no poll read past them, which would make them lost writes).
    Unseen {
        partition: Partition,
        count: usize,
        values: Vec<i64>,
        writers: Vec<usize>,
    },
    /// A consumer jumped over offsets known to hold committed records. `internal` when both
    /// reads are in the same operation.
    PollSkip {
        partition: Partition,
        process: u64,
        internal: bool,
        previous: usize,
        next: usize,
        offset_previous: i64,
        offset_next: i64,
        skipped_count: usize,
        skipped: Vec<Record>,
    },
    /// A consumer read an offset at or before one it had already read, with no reset between.
    NonmonotonicPoll {
        partition: Partition,
        process: u64,
        internal: bool,
        previous: usize,
        next: usize,
        offset_previous: i64,
        offset_next: i64,
    },
    /// A process's later acknowledged send got an offset at or before its earlier one.
    NonmonotonicSend {
        partition: Partition,
        process: u64,
        internal: bool,
        previous: usize,
        next: usize,
        send_previous: Record,
        send_next: Record,
    },
    /// Send A was acknowledged (`earlier_complete`) before send B was invoked (`later_invoke`), by
    /// different processes, yet B's offset is not after A's.
    SendRealtimeOrder {
        partition: Partition,
        earlier_complete: usize,
        earlier_send: Record,
        later_invoke: usize,
        later_complete: usize,
        later_send: Record,
    },
    /// G1a: an `Ok` poll read a value whose operation failed (an aborted transaction's record).
    AbortedRead {
        partition: Partition,
        offset: i64,
        value: i64,
        writer: usize,
        reader: usize,
        reader_count: usize,
    },
    /// A poll read a value before its transaction could have committed (see `reason`). `writer`
    /// is the writing operation's invocation event, `reader` the reading one's completion.
    PrecommittedRead {
        partition: Partition,
        offset: i64,
        value: i64,
        writer: usize,
        reader: usize,
        reason: PrecommitReason,
    },
    /// One operation's poll read some of a committed transaction's records and read across the
    /// offset of another of its records without seeing it.
    TornTransaction {
        writer: usize,
        reader: usize,
        observed_partition: Partition,
        observed: Record,
        missed_partition: Partition,
        missed: Record,
    },
    /// A group's committed offset went backwards: `commit` was acknowledged before `list` was
    /// invoked, yet `list` returned less, and no commit of `offset_listed` could have come after.
    CommittedOffsetRegression {
        group: String,
        partition: Partition,
        commit: usize,
        offset_committed: i64,
        list: usize,
        offset_listed: i64,
    },
    /// An offset commit from an old generation was acknowledged: `commit` carried generation
    /// `generation`, but `newer` (generation `generation_newer`) was acknowledged before it was
    /// invoked, so the group had moved on and the coordinator had to refuse it.
    StaleGenerationCommit {
        group: String,
        commit: usize,
        generation: i32,
        newer: usize,
        generation_newer: i32,
    },
    /// The broker acknowledged a batch the client had poisoned on purpose (`poison`): it stored
    /// bytes a reader cannot decode. `send` is the acknowledging completion.
    MalformedAccepted {
        partition: Partition,
        poison: String,
        send: usize,
    },
    /// Retention deleted a record while Kafka's rules kept it: `observer` saw the log start at
    /// `log_start`, past `offset`, yet neither its segment's age (the record's `timestamp` is
    /// younger than `retention.ms` by the broker's clock) nor the log's size (fewer bytes could
    /// follow it than `retention.bytes`) allowed the deletion.
    EarlyDeletion {
        partition: Partition,
        offset: i64,
        value: i64,
        timestamp: i64,
        writer: usize,
        observer: usize,
        log_start: i64,
    },
    /// Compaction lost a key's latest value: `writer` acknowledged `value` at `offset` for `key`
    /// before the final polls began, no later write of the key may have replaced it, yet the
    /// final polls, reading the whole log, never returned it.
    LatestValueLost {
        partition: Partition,
        key: i64,
        offset: i64,
        value: i64,
        writer: usize,
    },
    /// After `seek` moved the process's position on `partition` to `offset_sought`, the first
    /// record it read there (`read`, at `offset_read`) jumped over records known to be committed
    /// at or after the offset sought.
    SeekSkip {
        partition: Partition,
        process: u64,
        seek: usize,
        read: usize,
        offset_sought: i64,
        offset_read: i64,
        skipped_count: usize,
        skipped: Vec<Record>,
    },
    /// After `seek` to `offset_sought`, the first record the process read there lies below it.
    SeekWrongRecord {
        partition: Partition,
        process: u64,
        seek: usize,
        read: usize,
        offset_sought: i64,
        offset_read: i64,
    },
    /// A ListOffsets answer (`lookup`, its completion) the log cannot have given; `rule` says
    /// which, `witness` is the event that proves it and `record` the record involved.
    LookupWrong {
        partition: Partition,
        lookup: usize,
        query: OffsetQuery,
        offset: i64,
        rule: LookupRule,
        witness: usize,
        record: Record,
    },
    /// Exactly-once output broken: the input record `input_value` of `input` was made into more
    /// than one output record that a read_committed poll returned (`outputs`, each with the
    /// first event that read it). Its input was processed twice and both results committed.
    OutputDuplicated {
        input: Partition,
        input_value: i64,
        outputs: Vec<(Partition, Record)>,
        readers: Vec<usize>,
    },
    /// Exactly-once output broken: `group`'s final committed offset on `input` (`committed`,
    /// listed by event `list`) says these `count` input records were consumed, yet no poll
    /// returned an output made from any of them. `offsets` and `values` list them.
    OutputMissing {
        input: Partition,
        group: String,
        committed: i64,
        list: usize,
        count: usize,
        offsets: Vec<i64>,
        values: Vec<i64>,
    },
    /// Exactly-once output broken: a poll returned `output`, made from the input record at
    /// `input_offset`, yet `group`'s final committed offset on `input` (`committed`, listed by
    /// event `list`) does not cover that record: the output committed without its offsets.
    OutputUncommittedInput {
        input: Partition,
        input_offset: i64,
        input_value: i64,
        output: Partition,
        output_record: Record,
        reader: usize,
        group: String,
        committed: i64,
        list: usize,
    },
}

/// Which rule a ListOffsets answer broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LookupRule {
    /// The answer counts `record`'s offset as existing (below the end, the log start, or the
    /// record found), yet `record` was sent by an operation invoked after the answer came: the
    /// answer counted records that were later lost.
    BeyondEnd,
    /// The end offset is at or below `record`, which was acknowledged or read before the lookup
    /// was invoked: the end went backwards.
    BehindEnd,
    /// `record`, below the answer, has a timestamp at or after the one asked: it was the first.
    TimestampSkipped,
    /// The answer's `record` has a timestamp before the one asked.
    TimestampEarly,
    /// No record was found, yet `record`, acknowledged or read before the lookup was invoked,
    /// has a timestamp at or after the one asked.
    TimestampMissed,
    /// The timestamp answered is not the timestamp `record` was sent with.
    TimestampMismatch,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecommitReason {
    /// The reading operation is the writing transaction: it saw its own uncommitted record.
    OwnWrite,
    /// The reading operation completed before the writing operation was even invoked.
    ReadBeforeWriteInvoked,
}

/// Counts that say how much the history exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub events: usize,
    pub operations: usize,
    pub sends_ok: usize,
    pub sends_fail: usize,
    pub sends_info: usize,
    pub polls_ok: usize,
    pub final_polls_ok: usize,
    pub records_polled: usize,
    pub values_observed: usize,
    pub partitions: usize,
    pub commits_ok: usize,
    pub lists_committed_ok: usize,
    pub crashes: usize,
    pub rebalances: usize,
    /// Anomaly kind (as in the JSON `kind` field) -> count.
    pub anomalies: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The simulation seed, filled in by the caller so a report names how to replay it.
    pub seed: Option<u64>,
    pub anomalies: Vec<Anomaly>,
    pub stats: Stats,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The liveness verdict, as the simulator prints it: `partition t-0: lag 12 after heal` for
    /// the first partition with unseen acknowledged sends, or `None`.
    pub fn liveness_reason(&self) -> Option<String> {
        self.anomalies.iter().find_map(|anomaly| match anomaly {
            Anomaly::Unseen {
                partition, count, ..
            } => Some(format!("partition {partition}: lag {count} after heal")),
            _ => None,
        })
    }

    /// A header line, then one paragraph per anomaly (at most `RENDERED_PER_KIND_MAX` per kind).
    pub fn render_text(&self) -> String {
        let mut text = String::new();
        let verdict = if self.is_valid() { "valid" } else { "INVALID" };
        let seed = self
            .seed
            .map(|seed| format!(", seed {seed}"))
            .unwrap_or_default();
        let stats = &self.stats;
        let _ = writeln!(
            text,
            "{verdict}: {} anomalies in {} events{seed} ({} sends ok, {} polls ok, {} values \
             observed)",
            self.anomalies.len(),
            stats.events,
            stats.sends_ok,
            stats.polls_ok,
            stats.values_observed,
        );
        let mut rendered: BTreeMap<&'static str, usize> = BTreeMap::new();
        for anomaly in &self.anomalies {
            let count = rendered.entry(anomaly.kind()).or_default();
            *count += 1;
            if *count <= RENDERED_PER_KIND_MAX {
                text.push('\n');
                text.push_str(&anomaly.render());
            }
        }
        for (kind, count) in &rendered {
            if *count > RENDERED_PER_KIND_MAX {
                let _ = write!(
                    text,
                    "\n... {} more {kind}\n",
                    count - RENDERED_PER_KIND_MAX
                );
            }
        }
        text
    }
}

impl Anomaly {
    /// The kebab-case kind, as serialized in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::MalformedHistory { .. } => "malformed-history",
            Anomaly::InconsistentOffsets { .. } => "inconsistent-offsets",
            Anomaly::Duplicate { .. } => "duplicate",
            Anomaly::PhantomRead { .. } => "phantom-read",
            Anomaly::LostWrite { .. } => "lost-write",
            Anomaly::Unseen { .. } => "unseen",
            Anomaly::PollSkip { .. } => "poll-skip",
            Anomaly::NonmonotonicPoll { .. } => "nonmonotonic-poll",
            Anomaly::NonmonotonicSend { .. } => "nonmonotonic-send",
            Anomaly::SendRealtimeOrder { .. } => "send-realtime-order",
            Anomaly::AbortedRead { .. } => "aborted-read",
            Anomaly::PrecommittedRead { .. } => "precommitted-read",
            Anomaly::TornTransaction { .. } => "torn-transaction",
            Anomaly::CommittedOffsetRegression { .. } => "committed-offset-regression",
            Anomaly::StaleGenerationCommit { .. } => "stale-generation-commit",
            Anomaly::MalformedAccepted { .. } => "malformed-accepted",
            Anomaly::EarlyDeletion { .. } => "early-deletion",
            Anomaly::LatestValueLost { .. } => "latest-value-lost",
            Anomaly::SeekSkip { .. } => "seek-skip",
            Anomaly::SeekWrongRecord { .. } => "seek-wrong-record",
            Anomaly::LookupWrong { .. } => "lookup-wrong",
            Anomaly::OutputDuplicated { .. } => "output-duplicated",
            Anomaly::OutputMissing { .. } => "output-missing",
            Anomaly::OutputUncommittedInput { .. } => "output-uncommitted-input",
        }
    }

    /// One paragraph: a title line naming the kind and the partition, then the proof.
    pub fn render(&self) -> String {
        crate::render::anomaly(self)
    }
}

/// Lists at most `LISTED_MAX` items.
pub(crate) fn listed<T: Clone>(items: &[T]) -> Vec<T> {
    items[..items.len().min(LISTED_MAX)].to_vec()
}
