//! committed-offset-regression: a consumer group's committed offset must not go backwards.
//!
//! Rule, per group and partition: let `list` be an `Ok` ListCommitted returning `x` (`-1`: none).
//! Take every `Ok` commit acknowledged before `list` was invoked that committed more than `x`; if
//! there is one, let `c` be the one invoked last. `list` is explained only by a commit of exactly
//! `x` (any outcome but `Fail`) that may have taken effect after `c`: invoked before `list`
//! completed and not completed before `c` was invoked. Consumers may legitimately commit lower
//! offsets (a rewind, or a new owner after a rebalance), which this allows; a listed offset no
//! such commit explains is a regression. Choosing the last-invoked `c` is enough: a commit that
//! may follow it may follow every earlier one too. The commit's `generation` is not needed: a
//! commit the coordinator fenced completes `Fail` and explains nothing.

use crate::checks::Analysis;
use crate::history::{Op, Partition};
use crate::operations::Outcome;
use crate::report::Anomaly;
use std::collections::BTreeMap;

#[derive(Clone, Copy)]
struct Commit {
    offset: i64,
    invoke: usize,
    /// `None` when it never completed: it may take effect at any later time.
    complete: Option<usize>,
    acknowledged: bool,
}

#[derive(Clone, Copy)]
struct List {
    offset: i64,
    invoke: usize,
    complete: usize,
}

type Key<'h> = (&'h str, &'h Partition);

/// stale-generation-commit, per group: an `Ok` commit under generation `g >= 0` invoked after an
/// `Ok` commit under a higher generation completed. The coordinator only accepts commits from
/// the current generation, and that one proves the group had already reached a later one.
/// Commits without a generation (simple consumers, -1) are exempt.
pub(crate) fn check_generations(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let mut by_group: BTreeMap<&str, Vec<(usize, usize, i32)>> = BTreeMap::new();
    for operation in &analysis.operations.list {
        if let (
            Op::Commit {
                group,
                generation: Some(generation),
                ..
            },
            Outcome::Ok,
            Some(complete),
        ) = (operation.op, operation.outcome, operation.complete)
        {
            if *generation >= 0 {
                by_group
                    .entry(group)
                    .or_default()
                    .push((operation.invoke, complete, *generation));
            }
        }
    }
    for (group, mut commits) in by_group {
        commits.sort_by_key(|(invoke, _, _)| *invoke);
        let mut completed: Vec<(usize, usize, i32)> = commits.clone();
        completed.sort_by_key(|(_, complete, _)| *complete);
        // Sweep by invocation: the highest generation acknowledged so far, and by which event.
        let mut newest: Option<(usize, i32)> = None;
        let mut next = 0;
        for (invoke, complete, generation) in &commits {
            while let Some((_, done, seen)) = completed.get(next).filter(|c| c.1 < *invoke) {
                if newest.is_none_or(|(_, newest)| *seen > newest) {
                    newest = Some((*done, *seen));
                }
                next += 1;
            }
            if let Some((newer, generation_newer)) = newest.filter(|(_, g)| g > generation) {
                anomalies.push(Anomaly::StaleGenerationCommit {
                    group: group.to_string(),
                    commit: *complete,
                    generation: *generation,
                    newer,
                    generation_newer,
                });
            }
        }
    }
}

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    let mut commits: BTreeMap<Key, Vec<Commit>> = BTreeMap::new();
    let mut lists: BTreeMap<Key, Vec<List>> = BTreeMap::new();
    for operation in &analysis.operations.list {
        match (operation.op, operation.outcome, operation.complete) {
            (Op::Commit { group, offsets, .. }, Outcome::Ok | Outcome::Info, complete) => {
                for (partition, offset) in offsets {
                    commits.entry((group, partition)).or_default().push(Commit {
                        offset: *offset,
                        invoke: operation.invoke,
                        complete,
                        acknowledged: operation.outcome == Outcome::Ok,
                    });
                }
            }
            (Op::ListCommitted { group, offsets }, Outcome::Ok, Some(complete)) => {
                for (partition, offset) in offsets {
                    let list = List {
                        offset: *offset,
                        invoke: operation.invoke,
                        complete,
                    };
                    lists.entry((group, partition)).or_default().push(list);
                }
            }
            _ => {}
        }
    }
    for (key, lists) in lists {
        let commits = commits.remove(&key).unwrap_or_default();
        check_partition(anomalies, key, &commits, lists);
    }
}

fn check_partition(anomalies: &mut Vec<Anomaly>, key: Key, commits: &[Commit], lists: Vec<List>) {
    let mut acknowledged: Vec<&Commit> = commits.iter().filter(|c| c.acknowledged).collect();
    acknowledged.sort_by_key(|commit| commit.complete);
    let mut by_offset: BTreeMap<i64, Vec<&Commit>> = BTreeMap::new();
    for commit in commits {
        by_offset.entry(commit.offset).or_default().push(commit);
    }
    let mut lists = lists;
    lists.sort_by_key(|list| list.invoke);
    // Sweep lists by invocation, adding commits acknowledged before it: committed offset ->
    // the latest invocation of an acknowledged commit of that offset.
    let mut latest: BTreeMap<i64, &Commit> = BTreeMap::new();
    let mut added = 0;
    for list in lists {
        while let Some(commit) = acknowledged
            .get(added)
            .filter(|c| c.complete < Some(list.invoke))
        {
            let entry = latest.entry(commit.offset).or_insert(commit);
            if commit.invoke > entry.invoke {
                *entry = commit;
            }
            added += 1;
        }
        let Some(last) = latest
            .range(list.offset + 1..)
            .map(|(_, c)| *c)
            .max_by_key(|c| c.invoke)
        else {
            continue;
        };
        let candidates = by_offset
            .get(&list.offset)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let explained = candidates.iter().any(|commit| {
            commit.invoke < list.complete
                && commit
                    .complete
                    .is_none_or(|complete| complete > last.invoke)
        });
        if !explained {
            anomalies.push(Anomaly::CommittedOffsetRegression {
                group: key.0.to_string(),
                partition: key.1.clone(),
                commit: last.complete.expect("acknowledged commits completed"),
                offset_committed: last.offset,
                list: list.complete,
                offset_listed: list.offset,
            });
        }
    }
}
