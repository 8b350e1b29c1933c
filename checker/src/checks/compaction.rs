//! Compacted topics (`cleanup.policy` with `compact`): what the cleaner may take, and the
//! guarantee it must keep.
//!
//! On a compacted partition a record may legitimately vanish from the log, so the bound rule
//! (lost-write), unseen and poll-skip do not apply as they stand. Instead:
//! - poll-skip counts only skipped records that had to be there (`Compaction::removable` is
//!   false): compaction removes a record only once a later record of its key is in the log; a
//!   tombstone (null value) also once `delete.retention.ms` has passed since it was cleaned,
//!   which is after its append. So a skipped record is excused if, before the poll that skipped
//!   it completed, a send of its key was invoked that did not fail and whose offset is unknown
//!   or higher; or it is a tombstone and the poll completed at least `delete.retention.ms` after
//!   the tombstone's send was invoked (minus twice the clock skew bound and `SLACK_MS`); or a
//!   reported log start had passed it.
//! - latest-value-lost: for every key, the committed send with the highest known offset must
//!   be returned by some final poll, if it was acknowledged before the final polls began. Keys
//!   with a send that did not fail and whose offset is unknown are skipped (it may have
//!   replaced the latest), as are latest tombstones old enough to be removed by the end of the
//!   final polls and latest records below a reported log start.
//!
//! Offsets never changing and order being kept need no rule of their own: values are unique
//! per partition, so a record moved to another offset is a duplicate, two records at one
//! offset are inconsistent-offsets, and a reordering shows as nonmonotonic or realtime-order
//! sends (`checks::offsets`, `checks::sends`).

use crate::checks::retention::{wall_ms, SLACK_MS};
use crate::checks::Analysis;
use crate::history::{History, MicroOp, Partition};
use crate::index::{sends, Index};
use crate::operations::{Operations, Outcome};
use crate::report::Anomaly;
use std::collections::{BTreeMap, BTreeSet};

/// One send of a key.
#[derive(Clone, Copy, Debug)]
struct KeySend {
    value: i64,
    /// The operation's invocation event.
    invoke: usize,
    outcome: Outcome,
    /// The operation's completion event, if any.
    complete: Option<usize>,
    committed: bool,
    /// The offset acknowledged or read, if known.
    offset: Option<i64>,
    tombstone: bool,
}

#[derive(Default)]
struct CompactedPartition {
    delete_retention_ms: i64,
    /// value -> key.
    keys_of: BTreeMap<i64, i64>,
    /// key -> its sends.
    sends: BTreeMap<i64, Vec<KeySend>>,
}

/// What the compaction rules need, built once.
#[derive(Default)]
pub(crate) struct Compaction {
    partitions: BTreeMap<Partition, CompactedPartition>,
}

impl Compaction {
    pub fn build(history: &History, operations: &Operations, index: &Index) -> Compaction {
        let mut compaction = Compaction::default();
        for (id, operation) in operations.list.iter().enumerate() {
            for (partition, value, _) in sends(operation.op.micro_ops()) {
                let Some(settings) = history.topics.get(&partition.topic) else {
                    continue;
                };
                if !settings.compact {
                    continue;
                }
                let spec = history
                    .records
                    .get(partition)
                    .and_then(|specs| specs.get(&value));
                let Some(key) = spec.and_then(|spec| spec.key) else {
                    continue; // Keyless: never removable, so the plain checks hold.
                };
                let offset = index.partitions.get(partition).and_then(|p| {
                    p.reads_ok
                        .get(&value)
                        .map(|read| read.offset)
                        .or_else(|| first_offset(p, value))
                });
                let compacted = compaction
                    .partitions
                    .entry(partition.clone())
                    .or_insert_with(|| CompactedPartition {
                        delete_retention_ms: settings.delete_retention_ms,
                        ..Default::default()
                    });
                compacted.keys_of.insert(value, key);
                compacted.sends.entry(key).or_default().push(KeySend {
                    value,
                    invoke: operation.invoke,
                    outcome: operation.outcome,
                    complete: operation.complete,
                    committed: index.committed.get(id).copied().unwrap_or(false),
                    offset,
                    tombstone: spec.is_some_and(|spec| spec.tombstone),
                });
            }
        }
        compaction
    }

    /// Whether `partition` is compacted (its topic's policy has `compact`).
    pub fn covers(&self, partition: &Partition) -> bool {
        self.partitions.contains_key(partition)
    }

    /// Whether compaction (or retention) may have removed `value` at `offset` by the time of
    /// event `at`; see the module doc. Records the workload did not key are never removable.
    pub fn removable(
        &self,
        analysis: &Analysis,
        partition: &Partition,
        offset: i64,
        value: i64,
        at: usize,
    ) -> bool {
        analysis.log_starts.past_before(partition, offset, at)
            || self.cleanable(analysis, partition, offset, value, at)
    }

    /// Whether the cleaner may have removed `value` at `offset` by event `at`: a later record
    /// of its key may exist, or it is a tombstone past `delete.retention.ms`.
    pub fn cleanable(
        &self,
        analysis: &Analysis,
        partition: &Partition,
        offset: i64,
        value: i64,
        at: usize,
    ) -> bool {
        let Some(compacted) = self.partitions.get(partition) else {
            return false;
        };
        let Some(key) = compacted.keys_of.get(&value) else {
            return false;
        };
        let sends = &compacted.sends[key];
        let superseded = sends.iter().any(|send| {
            send.value != value
                && send.outcome != Outcome::Fail
                && send.invoke < at
                && send.offset.is_none_or(|later| later > offset)
        });
        superseded
            || sends
                .iter()
                .find(|send| send.value == value)
                .is_some_and(|send| {
                    send.tombstone && tombstone_expired(analysis, compacted, send.invoke, at)
                })
    }
}

/// Whether a tombstone whose send was invoked at event `invoke` may be gone by event `at`.
fn tombstone_expired(
    analysis: &Analysis,
    compacted: &CompactedPartition,
    invoke: usize,
    at: usize,
) -> bool {
    let history = analysis.history;
    let (Some((written, skew)), Some((now, _))) = (
        wall_ms(history, &history.events[invoke]),
        wall_ms(history, &history.events[at]),
    ) else {
        return true; // Without clocks nothing bounds it: excuse.
    };
    now - written + 2 * skew + SLACK_MS >= compacted.delete_retention_ms
}

fn first_offset(index: &crate::index::PartitionIndex, value: i64) -> Option<i64> {
    index
        .log
        .iter()
        .find(|(_, seen)| seen.iter().any(|s| s.value == value))
        .map(|(offset, _)| *offset)
}

pub(crate) fn check_latest_values(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let Some(cutoff) = crate::checks::lost::final_polls_start(analysis) else {
        return;
    };
    let (finals, final_last) = final_reads(analysis);
    for (partition, compacted) in &analysis.compaction.partitions {
        let read = finals.get(partition);
        for (key, sends) in &compacted.sends {
            let uncertain = sends
                .iter()
                .any(|send| send.outcome != Outcome::Fail && send.offset.is_none());
            if uncertain {
                continue;
            }
            let Some(latest) = sends
                .iter()
                .filter(|send| send.committed)
                .max_by_key(|send| send.offset)
            else {
                continue;
            };
            let offset = latest.offset.expect("no send without an offset is left");
            let acknowledged = latest.outcome == Outcome::Ok
                && latest.complete.is_some_and(|complete| complete < cutoff);
            if !acknowledged
                || analysis.log_starts.below(partition, offset)
                || (latest.tombstone
                    && tombstone_expired(analysis, compacted, latest.invoke, final_last))
                || read.is_some_and(|values| values.contains(&latest.value))
            {
                continue;
            }
            anomalies.push(Anomaly::LatestValueLost {
                partition: partition.clone(),
                key: *key,
                offset,
                value: latest.value,
                writer: latest.complete.unwrap_or(latest.invoke),
            });
        }
    }
}

/// The values every `Ok` final poll returned, per partition, and the last event of the history
/// (when the final polls were over).
fn final_reads<'h>(analysis: &Analysis<'h>) -> (BTreeMap<&'h Partition, BTreeSet<i64>>, usize) {
    let mut finals: BTreeMap<&Partition, BTreeSet<i64>> = BTreeMap::new();
    for operation in &analysis.operations.list {
        if operation.outcome != Outcome::Ok {
            continue;
        }
        for micro_op in operation.op.micro_ops() {
            if let MicroOp::Poll {
                records,
                final_poll: true,
            } = micro_op
            {
                for (partition, records) in records {
                    finals
                        .entry(partition)
                        .or_default()
                        .extend(records.iter().map(|record| record.value));
                }
            }
        }
    }
    let last = analysis.history.events.len().saturating_sub(1);
    (finals, last)
}

#[cfg(test)]
mod tests {
    use crate::script;

    fn kinds(text: &str) -> Vec<&'static str> {
        let history = script::parse(text).expect("valid script");
        let report = crate::check(&history);
        report.anomalies.iter().map(|a| a.kind()).collect()
    }

    /// Key 1 is written twice (values 1, 2), key 2 once (value 3); value 4 of key 1 is a
    /// tombstone written later.
    const WRITES: &str = "
        topic t compact delete-retention-ms=10000
        clocks origin=0 skew=0
        record t-0 1 key=1; record t-0 2 key=1; record t-0 3 key=2; record t-0 4 key=1 tombstone
        p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2
        p2 poll t-0 [0:1 1:2 2:3]
    ";

    /// The overwritten value may vanish; the latest may not.
    #[test]
    fn latest_value_must_stay_readable() {
        let compacted = format!("{WRITES}; p3 final-poll t-0 [1:2 2:3]");
        assert_eq!(kinds(&compacted), Vec::<&str>::new());
        let latest_lost = format!("{WRITES}; p3 final-poll t-0 [0:1 2:3]");
        assert_eq!(kinds(&latest_lost), ["poll-skip", "latest-value-lost"]);
    }

    /// A later send of the key whose outcome is unknown may have replaced the latest.
    #[test]
    fn an_indeterminate_overwrite_excuses_the_latest() {
        let history = format!(
            "{WRITES}; record t-0 5 key=1; p1 invoke send t-0 5; p1 info send t-0 5;
             p3 final-poll t-0 [2:3]"
        );
        assert_eq!(kinds(&history), Vec::<&str>::new());
    }

    /// A tombstone stays readable for `delete.retention.ms` after it was written.
    #[test]
    fn tombstones_stay_for_delete_retention() {
        let tombstone = format!("{WRITES}; p1 send t-0 4@3");
        let early = format!("{tombstone}; p3 final-poll t-0 [2:3]");
        assert_eq!(kinds(&early), ["latest-value-lost"]);
        let late = format!("{tombstone}; sleep 20000; p3 final-poll t-0 [2:3]");
        assert_eq!(kinds(&late), Vec::<&str>::new());
        let kept = format!("{tombstone}; p3 final-poll t-0 [2:3 3:4]");
        assert_eq!(kinds(&kept), Vec::<&str>::new());
    }

    /// A consumer that skips a record compaction could not have removed yet is a poll-skip.
    #[test]
    fn skipping_a_record_that_must_stay_is_a_poll_skip() {
        let history = "
            topic t compact delete-retention-ms=10000
            record t-0 1 key=1; record t-0 2 key=2; record t-0 3 key=1
            p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2
            p2 poll t-0 [0:1]; p2 poll t-0 [2:3]
        ";
        assert_eq!(kinds(history), ["poll-skip"]);
        let superseded = history.replace(
            "p2 poll t-0 [0:1]; p2 poll t-0 [2:3]",
            "p2 poll t-0 [1:2]; p2 poll t-0 [2:3]",
        );
        assert_eq!(kinds(&superseded), Vec::<&str>::new());
    }
}
