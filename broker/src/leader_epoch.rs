//! Leader epochs as the data plane answers them (KIP-101, KIP-279, KIP-320): the fencing of a
//! client's `current_leader_epoch`, and the leader's end offset for an epoch, which answers
//! OffsetForLeaderEpoch and Fetch's diverging epoch.
//!
//! A partition's leader epoch comes from the metadata image in cluster mode; a single node
//! leads every partition at epoch 0 forever (its appends are stamped 0 and Metadata reports 0).

use kafka_protocol::ResponseError;
use storage::PartitionLog;

/// The leader epoch of every partition of a single node.
pub const SINGLE_NODE: i32 = 0;

/// The wire's "no epoch given" (-1; any negative) as `None`.
pub fn from_wire(epoch: i32) -> Option<i32> {
    (epoch >= 0).then_some(epoch)
}

/// Kafka's `Partition.checkCurrentLeaderEpoch`: a client behind the partition's leader epoch
/// is fenced (its metadata is stale), one ahead of it knows an epoch this broker has not seen
/// yet. Both are retriable: the client refreshes its metadata.
pub fn check(local: i32, remote: Option<i32>) -> Result<(), ResponseError> {
    match remote {
        Some(remote) if remote < local => Err(ResponseError::FencedLeaderEpoch),
        Some(remote) if remote > local => Err(ResponseError::UnknownLeaderEpoch),
        _ => Ok(()),
    }
}

/// The end offset of `requested` as the leader at `leader_epoch` answers it (Kafka's
/// `LeaderEpochFileCache.endOffsetFor`): the largest epoch at or below `requested` and the
/// start offset of the next higher epoch, or the log end offset for the latest epoch; for an
/// epoch below every known one, that epoch and the first known start (what is below was
/// removed; the follower replicates from there); `None` (UNDEFINED, -1/-1 on the wire) for no
/// epoch (-1) and for an epoch newer than the leader's.
///
/// Kafka's leader writes its epoch into the cache when it becomes leader; ours is written with
/// the epoch's first batch. So the leader's epoch counts here as an entry at the log end when
/// the log has not reached it yet, and the answers are Kafka's either way.
pub fn end_offset_for(log: &PartitionLog, requested: i32, leader_epoch: i32) -> Option<(i32, i64)> {
    end_offset_as_leader(
        requested,
        leader_epoch,
        log.latest_epoch(),
        log.log_end_offset(),
        |epoch| log.epoch_end_offset(epoch),
    )
}

/// Whether a fetcher whose last batch is of `last_fetched_epoch` holds a history that diverges
/// from the leader's before its fetch offset (Kafka's `Partition.readRecords`), given the
/// leader's end offset for that epoch (`end_offset_for`): then the epoch and end offset it must
/// truncate to. OFFSET_OUT_OF_RANGE when the leader cannot tell (no end for that epoch) or the
/// fetch offset is below its log start, diverging or not, as Kafka answers.
pub fn divergence(
    end: Option<(i32, i64)>,
    last_fetched_epoch: i32,
    fetch_offset: i64,
    log_start_offset: i64,
) -> Result<Option<(i32, i64)>, ResponseError> {
    let Some((epoch, end_offset)) = end else {
        return Err(ResponseError::OffsetOutOfRange);
    };
    if fetch_offset < log_start_offset {
        return Err(ResponseError::OffsetOutOfRange);
    }
    let diverges = epoch < last_fetched_epoch || end_offset < fetch_offset;
    Ok(diverges.then_some((epoch, end_offset)))
}

pub(crate) fn end_offset_as_leader(
    requested: i32,
    leader_epoch: i32,
    latest_cached: Option<i32>,
    log_end_offset: i64,
    cache: impl Fn(i32) -> Option<(i32, i64)>,
) -> Option<(i32, i64)> {
    if requested < 0 {
        return None;
    }
    let latest = latest_cached.map_or(leader_epoch, |cached| cached.max(leader_epoch));
    if requested > latest {
        return None;
    }
    if requested == latest {
        return Some((requested, log_end_offset));
    }
    // Below the latest: the cache knows, except that an epoch the log has not reached ends at
    // the log end (where the leader's own epoch starts), and an empty cache knows nothing but
    // that the leader's epoch starts at the log end.
    Some(cache(requested).unwrap_or((requested, log_end_offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache model: (epoch, start offset) entries, and Kafka's floor/higher rule on them with
    /// the leader's epoch at the log end when it is newer than every entry (as Kafka's cache
    /// holds it), so it can be compared with `end_offset_as_leader`.
    fn kafka(
        entries: &[(i32, i64)],
        leader_epoch: i32,
        log_end: i64,
        requested: i32,
    ) -> Option<(i32, i64)> {
        let mut entries = entries.to_vec();
        if entries
            .last()
            .is_none_or(|(epoch, _)| *epoch < leader_epoch)
        {
            entries.push((leader_epoch, log_end));
        }
        if requested < 0 {
            return None;
        }
        let latest = entries.last().unwrap().0;
        if requested == latest {
            return Some((requested, log_end));
        }
        let higher = entries.iter().find(|(epoch, _)| *epoch > requested)?;
        match entries.iter().rev().find(|(epoch, _)| *epoch <= requested) {
            Some((floor, _)) => Some((*floor, higher.1)),
            None => Some((requested, higher.1)),
        }
    }

    /// The storage cache's answer (`EpochCache::end_offset_for`), restated for the test.
    fn storage(entries: &[(i32, i64)], log_end: i64, requested: i32) -> Option<(i32, i64)> {
        let count = entries
            .iter()
            .filter(|(epoch, _)| *epoch <= requested)
            .count();
        let next = entries.get(count).map_or(log_end, |(_, start)| *start);
        match count {
            0 => entries.first().map(|(_, start)| (requested, *start)),
            _ => Some((entries[count - 1].0, next)),
        }
    }

    #[test]
    fn answers_are_kafkas_whether_or_not_the_log_reached_the_leader_epoch() {
        let caches: &[&[(i32, i64)]] = &[&[], &[(0, 0)], &[(1, 0), (3, 10), (4, 25)], &[(2, 5)]];
        for entries in caches {
            for leader_epoch in 0..=6 {
                let latest = entries.last().map(|(epoch, _)| *epoch);
                if latest.is_some_and(|latest| latest > leader_epoch) {
                    continue; // a leader's log never holds an epoch newer than its own
                }
                for requested in -2..=8 {
                    let ours = end_offset_as_leader(requested, leader_epoch, latest, 40, |e| {
                        storage(entries, 40, e)
                    });
                    assert_eq!(
                        ours,
                        kafka(entries, leader_epoch, 40, requested),
                        "cache {entries:?}, leader epoch {leader_epoch}, requested {requested}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_documented_cases() {
        let entries = [(1, 0), (3, 10), (4, 25)];
        let answer = |requested| {
            end_offset_as_leader(requested, 5, Some(4), 40, |e| storage(&entries, 40, e))
        };
        assert_eq!(answer(-1), None, "no epoch: UNDEFINED");
        assert_eq!(
            answer(0),
            Some((0, 0)),
            "below every epoch: the first start"
        );
        assert_eq!(answer(2), Some((1, 10)), "floor epoch, next start");
        assert_eq!(
            answer(4),
            Some((4, 40)),
            "ends where the leader's epoch starts"
        );
        assert_eq!(
            answer(5),
            Some((5, 40)),
            "the leader's epoch ends at the log end"
        );
        assert_eq!(answer(6), None, "newer than the leader's: UNDEFINED");
    }

    #[test]
    fn fencing_is_kafkas() {
        assert_eq!(check(3, None), Ok(()));
        assert_eq!(check(3, Some(3)), Ok(()));
        assert_eq!(check(3, Some(2)), Err(ResponseError::FencedLeaderEpoch));
        assert_eq!(check(3, Some(4)), Err(ResponseError::UnknownLeaderEpoch));
        assert_eq!(from_wire(-1), None);
        assert_eq!(from_wire(0), Some(0));
    }
}
