//! The history model: what a workload records and the checker reads.
//!
//! A history is a list of [`Event`]s in real-time order. Every client operation is two events from
//! the same process: an `Invoke` when the client starts it and a completion (`Ok`, `Fail` or
//! `Info`) when it learns the outcome. A process runs one operation at a time. Two operations are
//! single events instead of pairs ("markers"): [`Op::Crash`] and [`Op::Rebalance`].
//!
//! Values are unique integers per partition: a workload never sends one value twice to one
//! partition, so a value names the send that wrote it (Jepsen's Kafka workload model).
//!
//! Completion kinds:
//! - `Ok`: the operation happened. Its op carries results: send offsets, polled records.
//! - `Fail`: the operation definitely did not happen. A failed `Txn` was aborted.
//! - `Info`: indeterminate; it may or may not have happened, now or at any later time.
//!
//! An operation never completed (the history ended, or a [`Op::Crash`] of its process came first)
//! is treated as `Info`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A recorded history: events in the real-time order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
    /// Settings of the topics whose logs may legitimately lose records (retention, compaction),
    /// recorded by the workload that created them. A topic missing here keeps every record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, TopicSettings>,
    /// What the workload put in each record beyond its value, per partition and value: key,
    /// tombstone, timestamp. Only workloads that set them record them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<Partition, BTreeMap<i64, RecordSpec>>,
    /// How event times relate to the brokers' wall clocks; needed by the time-based checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clocks: Option<Clocks>,
    /// Consume-transform-produce processors, when the workload ran some (`checks::exactly_once`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
    /// By partition and offset, a lower bound on the leader epoch under which each record was
    /// committed: the larger of its batch's epoch, as reads saw it, and the epoch its
    /// acknowledged send was routed by (`checks::lookups` tells a deposed leader's stale answer
    /// from a wrong one with it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leader_epochs: BTreeMap<Partition, BTreeMap<i64, i32>>,
}

/// What consume-transform-produce processors did, beyond their events. A processor polls input
/// records (recorded as polls), sends one output record per input record in a transaction that
/// also commits the input offsets to `group` (Kafka's `sendOffsetsToTransaction`), and commits or
/// aborts it. An aborted input is processed again into a new output value, so output values stay
/// unique per partition; `sources` names each output value's input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processing {
    /// The consumer group the processors commit their input offsets to.
    pub group: String,
    /// Output partition -> output value -> the input record it was made from.
    pub sources: BTreeMap<Partition, BTreeMap<i64, Source>>,
}

/// An input record as the processor read it: partition, offset, value. Exactly-once is judged
/// per offset, so a duplicated input record (a producer's anomaly, reported as `duplicate`) is two
/// inputs here, each owed one output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    pub partition: Partition,
    pub offset: i64,
    pub value: i64,
}

/// A topic's cleanup settings, as the broker was told them (Kafka's topic configs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// `cleanup.policy` contains `delete`: segments go by `retention_ms` / `retention_bytes`.
    pub delete: bool,
    /// `cleanup.policy` contains `compact`: a record may go once a later one has its key.
    pub compact: bool,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    /// `delete.retention.ms`: how long a tombstone stays readable.
    pub delete_retention_ms: i64,
    /// An upper bound on the log bytes one offset takes (the workload writes one record per
    /// batch and knows its largest record), so a count of offsets bounds a log's size.
    pub offset_bytes_max: u64,
}

/// The workload's choices for one record. `timestamp` is its CreateTime, -1 for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSpec {
    pub key: Option<i64>,
    /// A null value (compaction's delete marker); the value id then travels in a header.
    pub tombstone: bool,
    pub timestamp: i64,
}

/// Event times (`time_ns`) are simulated time since the run began; a broker's wall clock reads
/// `wall_origin_ms + time_ns / 1e6`, off by at most `skew_ms_max` either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    pub wall_origin_ms: i64,
    pub skew_ms_max: i64,
}

/// One invocation, completion or marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position of this event in `History::events`; reports name events by it.
    pub index: usize,
    /// Simulated time when the event happened; only displayed, ordering comes from `index`.
    pub time_ns: u64,
    /// The client process; one operation at a time per process.
    pub process: u64,
    pub kind: EventKind,
    pub op: Op,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What a process did. See each variant for what the invocation and the completion carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Sends and polls, in the order the client issued them. A plain send is `Txn([Send])`, a
    /// plain poll `Txn([Poll])`. More than one send makes it a Kafka transaction: all its sends
    /// commit (`Ok`) or abort (`Fail`) together. The completion repeats the micro-ops, with
    /// results filled in on `Ok`.
    Txn(Vec<MicroOp>),
    /// `consumer.assign(partitions)`. Positions of partitions that stay assigned are kept, unless
    /// `seek_to_beginning` is set, which resets every position to the log start.
    Assign {
        partitions: Vec<Partition>,
        seek_to_beginning: bool,
    },
    /// `consumer.subscribe(topics)`: the group decides the partitions; every position resets.
    Subscribe { topics: Vec<String> },
    /// `consumer.seek(partition, offset)` for each entry: those positions move there, so the
    /// next record the process reads from each partition must be the first known record at or
    /// after its offset (`checks::seeks`).
    Seek { offsets: BTreeMap<Partition, i64> },
    /// ListOffsets of one partition (Kafka's `beginningOffsets`, `endOffsets`, `offsetsForTimes`):
    /// `query` is what was asked. The `Ok` completion fills in `offset` (for a timestamp, `-1`
    /// when no readable record has one at or after it) and `timestamp` (the found record's
    /// timestamp; -1 for earliest, latest and none found) and the answering leader's epoch.
    ListOffsets {
        partition: Partition,
        query: OffsetQuery,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
        /// The answering leader's epoch (ListOffsets v4+), on the `Ok` completion.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_epoch: Option<i32>,
    },
    /// Marker (a single event, kind `Ok`): the consumer group rebalanced this process's consumer,
    /// which now owns `assigned`. Every position resets (eager rebalance: resume from the
    /// committed offset). A workload using `Subscribe` must record these, or the poll checks see
    /// the jumps a rebalance legitimately causes.
    Rebalance { assigned: Vec<Partition> },
    /// Consumer offset commit for `group`: `offsets` are the next offsets to read.
    Commit {
        group: String,
        generation: Option<i32>,
        offsets: BTreeMap<Partition, i64>,
    },
    /// Fetch of `group`'s committed offsets. The invocation lists the partitions asked for (any
    /// offsets); the `Ok` completion has each asked partition's committed offset, `-1` for none.
    ListCommitted {
        group: String,
        offsets: BTreeMap<Partition, i64>,
    },
    /// A produce of a batch the client poisoned on purpose (`poison` names how: garbage records,
    /// a wrong count, an unknown codec, ...). A broker must refuse it (`Fail`); `Ok` means it was
    /// acknowledged, an anomaly. Its records carry no workload value, so a poll that returns one
    /// is a phantom read.
    SendMalformed {
        partition: Partition,
        poison: String,
    },
    /// Marker (a single event, kind `Info`): the client process crashed. Its open operation, if
    /// any, becomes indeterminate and its consumer positions are forgotten.
    Crash,
}

/// What a `ListOffsets` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The end: the high watermark, one past the last record a consumer may read.
    Latest,
    /// The first offset whose record timestamp is at or after this one (milliseconds).
    Timestamp(i64),
}

/// One step of a `Txn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroOp {
    /// Append `value` to `partition`. `offset` is `None` at invocation and filled in on `Ok`
    /// (the offset the broker acknowledged); on `Info` fill it only if the client learned it.
    /// `timestamp` is the record's CreateTime when the producer set it explicitly (the seek
    /// checks need it), on the invocation and the completion alike.
    Send {
        partition: Partition,
        value: i64,
        offset: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
    },
    /// One `consumer.poll()`. `records` is empty at invocation and, on `Ok`, holds what the poll
    /// returned, per partition in the order returned. `final_poll` marks the polls of the
    /// liveness phase, after every fault is healed, that must observe every acknowledged send;
    /// set it on the invocation and the completion alike.
    Poll {
        records: BTreeMap<Partition, Vec<Record>>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        final_poll: bool,
    },
}

/// A record returned by a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Record {
    pub offset: i64,
    pub value: i64,
}

/// A topic partition. Displays and serializes as `topic-partition`, e.g. `t-0`, so it can key a
/// JSON object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl Partition {
    pub fn new(topic: &str, partition: i32) -> Partition {
        Partition {
            topic: topic.to_string(),
            partition,
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl FromStr for Partition {
    type Err = String;

    /// Splits at the last `-`, so topics may contain dashes.
    fn from_str(text: &str) -> Result<Partition, String> {
        let (topic, number) = text
            .rsplit_once('-')
            .ok_or_else(|| format!("partition {text:?} is not topic-N"))?;
        let partition = number
            .parse()
            .map_err(|_| format!("partition {text:?} is not topic-N"))?;
        if topic.is_empty() {
            return Err(format!("partition {text:?} has an empty topic"));
        }
        Ok(Partition::new(topic, partition))
    }
}

impl From<Partition> for String {
    fn from(partition: Partition) -> String {
        partition.to_string()
    }
}

impl TryFrom<String> for Partition {
    type Error = String;
    fn try_from(text: String) -> Result<Partition, String> {
        text.parse()
    }
}

impl History {
    /// Appends an event, filling in its index; returns that index.
    pub fn push(&mut self, time_ns: u64, process: u64, kind: EventKind, op: Op) -> usize {
        let index = self.events.len();
        self.events.push(Event {
            index,
            time_ns,
            process,
            kind,
            op,
        });
        index
    }
}

impl Op {
    /// A plain send invocation: `Txn([Send])` with no offset yet.
    pub fn send(partition: Partition, value: i64) -> Op {
        Op::Txn(vec![MicroOp::Send {
            partition,
            value,
            offset: None,
            timestamp: None,
        }])
    }

    /// A plain poll invocation: `Txn([Poll])` with no records yet.
    pub fn poll(final_poll: bool) -> Op {
        Op::Txn(vec![MicroOp::Poll {
            records: BTreeMap::new(),
            final_poll,
        }])
    }

    /// Single-event operations: they have no completion.
    pub fn is_marker(&self) -> bool {
        matches!(self, Op::Crash | Op::Rebalance { .. })
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Txn(micro_ops) => match micro_ops.as_slice() {
                [MicroOp::Send { .. }] => "send",
                [MicroOp::Poll {
                    final_poll: true, ..
                }] => "final-poll",
                [MicroOp::Poll { .. }] => "poll",
                _ => "txn",
            },
            Op::Assign { .. } => "assign",
            Op::Subscribe { .. } => "subscribe",
            Op::Seek { .. } => "seek",
            Op::ListOffsets { .. } => "list-offsets",
            Op::Rebalance { .. } => "rebalance",
            Op::Commit { .. } => "commit",
            Op::ListCommitted { .. } => "list-committed",
            Op::SendMalformed { .. } => "send-malformed",
            Op::Crash => "crash",
        }
    }

    /// The micro-ops of a `Txn`, empty for every other op.
    pub fn micro_ops(&self) -> &[MicroOp] {
        match self {
            Op::Txn(micro_ops) => micro_ops,
            _ => &[],
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        })
    }
}
