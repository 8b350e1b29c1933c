//! Log start observations and early-deletion: what retention may take, and when it took too much.
//!
//! Kafka lets a partition's records below its log start offset be gone, and nothing else. The
//! history records the log start the broker reported (`ListOffsets` earliest, `Ok`). Since the
//! broker moves its log start only forwards (it is checkpointed before segments go), every
//! record below the largest log start reported is excused by the lost-write and unseen checks
//! (`LogStarts::below`).
//!
//! early-deletion checks that retention took only what Kafka's rules allowed. For each record
//! of a `delete`-policy topic that a reported log start passed, at the first report past it
//! (event `e`), at least one rule must be able to explain the deletion:
//! - time: the segment's age counts from its largest timestamp, which is at least the record's
//!   own (if valid, `>= 0`), and the deletion happened before `e` by a broker clock at most
//!   `skew_ms_max` ahead of `e`'s wall time. Time explains it only if
//!   `timestamp + retention.ms < wall(e) + skew_ms_max + SLACK_MS`.
//! - size: the record's segment goes only while the segments after it hold `retention.bytes`.
//!   They hold only offsets above the record, fewer than the sends invoked on the partition
//!   before `e` (each send is one record, and the log end never passes the records appended),
//!   each at most `offset_bytes_max` bytes. Size explains it only if
//!   `(sends_invoked - offset - 1) * offset_bytes_max >= retention.bytes`.
//!
//! Records compaction may have removed first (`compact,delete`) and records without a valid
//! timestamp (-1) are never flagged: their segment may age from a
//! neighbour's timestamp, which the checker cannot bound. The check is therefore sound but
//! conservative: a deletion a rule could explain by these bounds passes even if the broker's
//! actual reason was wrong.

use crate::checks::Analysis;
use crate::history::{Event, EventKind, History, OffsetQuery, Op, Partition};
use crate::index::sends;
use crate::operations::Operations;
use crate::report::Anomaly;
use std::collections::BTreeMap;

/// Rounding between simulated nanoseconds and the brokers' milliseconds, with room to spare.
pub(crate) const SLACK_MS: i64 = 1_000;

/// Per partition, the log starts reported, in event order, as (completion event, running
/// maximum): the running maximum makes "the first report past offset O" a binary search.
#[derive(Default)]
pub(crate) struct LogStarts {
    pub partitions: BTreeMap<Partition, Vec<(usize, i64)>>,
}

impl LogStarts {
    pub fn build(operations: &Operations) -> LogStarts {
        let mut starts = LogStarts::default();
        for operation in &operations.list {
            let (Some(event), crate::operations::Outcome::Ok) =
                (operation.complete, operation.outcome)
            else {
                continue;
            };
            if let Op::ListOffsets {
                partition,
                query: OffsetQuery::Earliest,
                offset: Some(offset),
                ..
            } = operation.op
            {
                starts
                    .partitions
                    .entry(partition.clone())
                    .or_default()
                    .push((event, *offset));
            }
        }
        for reports in starts.partitions.values_mut() {
            reports.sort_unstable();
            let mut highest = i64::MIN;
            for report in reports.iter_mut() {
                highest = highest.max(report.1);
                report.1 = highest;
            }
        }
        starts
    }

    /// Whether `offset` lies below the largest log start ever reported for `partition`.
    pub fn below(&self, partition: &Partition, offset: i64) -> bool {
        self.partitions
            .get(partition)
            .and_then(|reports| reports.last())
            .is_some_and(|(_, highest)| offset < *highest)
    }

    /// The first report (event, log start) past `offset`, if any.
    pub fn first_past(&self, partition: &Partition, offset: i64) -> Option<(usize, i64)> {
        let reports = self.partitions.get(partition)?;
        let at = reports.partition_point(|(_, highest)| *highest <= offset);
        reports.get(at).copied()
    }

    /// Whether a report before `event` had passed `offset`.
    pub fn past_before(&self, partition: &Partition, offset: i64, event: usize) -> bool {
        self.first_past(partition, offset)
            .is_some_and(|(report, _)| report < event)
    }
}

/// The broker wall time (ms) of an event, as the history's clocks say, and the skew bound.
pub(crate) fn wall_ms(history: &History, event: &Event) -> Option<(i64, i64)> {
    let clocks = history.clocks?;
    let elapsed_ms = i64::try_from(event.time_ns / 1_000_000).unwrap_or(i64::MAX);
    Some((
        clocks.wall_origin_ms.saturating_add(elapsed_ms),
        clocks.skew_ms_max,
    ))
}

pub(crate) fn check_early_deletion(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let history = analysis.history;
    for (partition, index) in &analysis.index.partitions {
        let Some(settings) = history.topics.get(&partition.topic) else {
            continue;
        };
        if !settings.delete {
            continue;
        }
        let Some(specs) = history.records.get(*partition) else {
            continue;
        };
        let invoked = sends_invoked(history, partition);
        for (offset, seen) in &index.log {
            let Some((observer, log_start)) = analysis.log_starts.first_past(partition, *offset)
            else {
                break; // Offsets rise: no later one was passed either.
            };
            for s in seen {
                let Some(spec) = specs.get(&s.value) else {
                    continue;
                };
                // Under `compact,delete` the cleaner may have taken it before retention came.
                let cleanable = analysis
                    .compaction
                    .cleanable(analysis, partition, *offset, s.value, observer);
                if spec.timestamp < 0 || cleanable {
                    continue;
                }
                let Some((wall, skew)) = wall_ms(history, &history.events[observer]) else {
                    continue;
                };
                let by_time = settings.retention_ms.is_some_and(|retention| {
                    spec.timestamp.saturating_add(retention) < wall + skew + SLACK_MS
                });
                let sends_before = invoked.partition_point(|event| *event < observer) as i64;
                let by_size = settings.retention_bytes.is_some_and(|limit| {
                    let offsets_after = (sends_before - offset - 1).max(0) as u64;
                    offsets_after.saturating_mul(settings.offset_bytes_max) >= limit
                });
                if by_time || by_size {
                    continue;
                }
                let writer = index
                    .writers
                    .get(&s.value)
                    .map_or(s.event, |w| analysis.operations.list[w.op].event());
                anomalies.push(Anomaly::EarlyDeletion {
                    partition: (*partition).clone(),
                    offset: *offset,
                    value: s.value,
                    timestamp: spec.timestamp,
                    writer,
                    observer,
                    log_start,
                });
            }
        }
    }
}

/// The invocation event of every send to `partition` (one entry per record, so a transaction
/// of two sends counts twice), in order. Malformed sends count too: one the broker wrongly
/// accepted takes offsets.
fn sends_invoked(history: &History, partition: &Partition) -> Vec<usize> {
    let mut invoked = Vec::new();
    for event in &history.events {
        if event.kind != EventKind::Invoke {
            continue;
        }
        let records = sends(event.op.micro_ops())
            .filter(|(p, _, _)| *p == partition)
            .count();
        let malformed =
            matches!(&event.op, Op::SendMalformed { partition: p, .. } if p == partition);
        invoked.extend(std::iter::repeat_n(
            event.index,
            records + usize::from(malformed),
        ));
    }
    invoked
}

#[cfg(test)]
mod tests {
    use crate::script;

    fn kinds(text: &str) -> Vec<&'static str> {
        let history = script::parse(text).expect("valid script");
        let report = crate::check(&history);
        report.anomalies.iter().map(|a| a.kind()).collect()
    }

    const SENDS: &str = "
        clocks origin=100000 skew=0
        p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2; p1 send t-0 4@3; p1 send t-0 5@4
    ";

    /// Acknowledged records below a reported log start may be gone; without the report, the
    /// same history has lost them.
    #[test]
    fn records_below_the_reported_log_start_are_excused() {
        let reads = "p2 poll t-0 [2:3 3:4]; p3 final-poll t-0 [2:3 3:4 4:5]";
        let topic = "topic t delete retention-ms=0";
        let excused = format!("{topic}; {SENDS}; p4 earliest t-0 2; {reads}");
        assert_eq!(kinds(&excused), Vec::<&str>::new());
        let unexcused = format!("{topic}; {SENDS}; p4 earliest t-0 1; {reads}");
        assert_eq!(kinds(&unexcused), ["lost-write"]);
    }

    /// Time retention may not delete a record younger than `retention.ms` by its timestamp.
    #[test]
    fn early_deletion_by_time() {
        let history = |timestamp: i64, sleep: i64| {
            format!(
                "topic t delete retention-ms=10000; {SENDS}; record t-0 1 ts={timestamp};
                 sleep {sleep}; p4 earliest t-0 1"
            )
        };
        // Written at wall 100 000: within retention until 110 000.
        assert_eq!(kinds(&history(100_000, 2_000)), ["early-deletion"]);
        assert_eq!(kinds(&history(100_000, 20_000)), Vec::<&str>::new());
        // Far in the future: never old enough.
        assert_eq!(kinds(&history(i64::MAX, 20_000)), ["early-deletion"]);
        // Far in the past, or no timestamp (not judged): old enough at once.
        assert_eq!(kinds(&history(0, 0)), Vec::<&str>::new());
        assert_eq!(kinds(&history(-1, 0)), Vec::<&str>::new());
    }

    /// Size retention may delete a segment only while what follows it fills `retention.bytes`:
    /// five one-record sends of at most 100 bytes leave at most 300 bytes above offset 1.
    #[test]
    fn early_deletion_by_size() {
        let history = |limit: u64| {
            format!(
                "topic t delete retention-bytes={limit} offset-bytes=100; {SENDS};
                 record t-0 1 ts=100000; record t-0 2 ts=100000; p4 earliest t-0 2"
            )
        };
        assert_eq!(kinds(&history(300)), Vec::<&str>::new());
        assert_eq!(kinds(&history(301)), ["early-deletion"]);
    }

    /// Under `compact,delete` a record a later one of its key superseded may be gone before
    /// retention applies to it.
    #[test]
    fn compaction_excuses_a_superseded_record() {
        let history = |key_of_5: i64| {
            format!(
                "topic t delete compact retention-ms=10000; {SENDS};
                 record t-0 1 key=1 ts=0; record t-0 2 key=2 ts=100000;
                 record t-0 3 key=3; record t-0 4 key=4; record t-0 5 key={key_of_5};
                 p4 earliest t-0 2; p3 final-poll t-0 [2:3 3:4 4:5]"
            )
        };
        assert_eq!(kinds(&history(2)), Vec::<&str>::new());
        assert_eq!(kinds(&history(5)), ["early-deletion"]);
    }
}
