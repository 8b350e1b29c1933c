//! The leader-epoch cache (KIP-101): for each leader epoch in the log, the offset of its first
//! batch. It answers OffsetForLeaderEpoch, which a follower uses to find where its log diverges
//! from the leader's. Persisted as `leader-epoch-checkpoint` in Kafka's text format (version,
//! count, then one `epoch start_offset` line each) with `write_atomic` whenever it changes.
//!
//! The file is written before the first batch of a new epoch, so after a crash it may name an
//! epoch whose batches were lost; recovery trims entries at or past the log end, and adds
//! epochs found in the batches it scanned.

use crate::error::{IoContext, LogError};
use crate::layout::EPOCH_CHECKPOINT_NAME;
use runtime::disk::{read_all_stable, write_atomic};
use runtime::Disk;
use std::path::Path;

const VERSION: &str = "0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// **Invariant:** epochs and start offsets strictly increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest; returns
    /// whether the cache changed. An epoch that wrote nothing before a newer one started at the
    /// same offset is replaced, as in Kafka.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|last| last.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// The largest epoch at or below `epoch` and the start of the next higher epoch (or the log
    /// end). Asked for an epoch older than every entry, answers (that epoch, the first entry's
    /// start), as Kafka does, so the follower truncates to where the known history begins.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let count = self.entries.partition_point(|entry| entry.epoch <= epoch);
        let next_start = self
            .entries
            .get(count)
            .map_or(log_end_offset, |entry| entry.start_offset);
        match count {
            0 => self
                .entries
                .first()
                .map(|first| (epoch, first.start_offset)),
            _ => Some((self.entries[count - 1].epoch, next_start)),
        }
    }

    /// The epoch in force at `offset`: the latest whose start is at or below it (Kafka's
    /// `epochForOffset`); `None` below the first entry.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        let count = self
            .entries
            .partition_point(|entry| entry.start_offset <= offset);
        count.checked_sub(1).map(|last| self.entries[last].epoch)
    }

    /// Forgets epochs that start at or after `end_offset` (truncation, lost tail).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Forgets epochs wholly below `start_offset`; the epoch in force there now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .partition_point(|entry| entry.start_offset < start_offset);
        if below == 0 {
            return false;
        }
        let in_force = self.entries[below - 1];
        let starts_exactly = self
            .entries
            .get(below)
            .is_some_and(|e| e.start_offset == start_offset);
        self.entries.drain(..below);
        if !starts_exactly {
            self.entries.insert(
                0,
                EpochEntry {
                    epoch: in_force.epoch,
                    start_offset,
                },
            );
        }
        true
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text
    }

    fn decode(text: &str) -> Option<EpochCache> {
        let mut lines = text.lines();
        if lines.next()? != VERSION {
            return None;
        }
        let count: usize = lines.next()?.parse().ok()?;
        let mut cache = EpochCache::default();
        for line in lines.by_ref().take(count) {
            let (epoch, start_offset) = line.split_once(' ')?;
            let entry = EpochEntry {
                epoch: epoch.parse().ok()?,
                start_offset: start_offset.parse().ok()?,
            };
            let increasing = cache.entries.last().is_none_or(|last| {
                entry.epoch > last.epoch && entry.start_offset > last.start_offset
            });
            if entry.epoch < 0 || entry.start_offset < 0 || !increasing {
                return None;
            }
            cache.entries.push(entry);
        }
        (cache.entries.len() == count && lines.next().is_none()).then_some(cache)
    }

    /// The persisted cache, or `None` if missing or unreadable (recovery rebuilds it).
    pub fn read(disk: &dyn Disk, dir: &Path) -> Result<Option<EpochCache>, LogError> {
        let path = dir.join(EPOCH_CHECKPOINT_NAME);
        if !disk.exists(&path) {
            return Ok(None);
        }
        // Read twice alike, so a transient flip does not throw the cache away.
        let bytes = read_all_stable(disk, &path).context("read", &path)?;
        Ok(std::str::from_utf8(&bytes)
            .ok()
            .and_then(EpochCache::decode))
    }

    pub fn write(&self, disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
        let path = dir.join(EPOCH_CHECKPOINT_NAME);
        write_atomic(disk, &path, self.encode().as_bytes()).context("write", &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut cache = EpochCache::default();
        for &(epoch, start_offset) in entries {
            assert!(cache.assign(epoch, start_offset));
        }
        cache
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let cache = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(
            cache.end_offset_for(0, 40),
            Some((0, 0)),
            "older than all: first start"
        );
        assert_eq!(cache.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(
            cache.end_offset_for(2, 40),
            Some((1, 10)),
            "floor epoch, next start"
        );
        assert_eq!(
            cache.end_offset_for(4, 40),
            Some((4, 40)),
            "latest ends at the log end"
        );
        assert_eq!(cache.end_offset_for(9, 40), Some((4, 40)));
        assert_eq!(EpochCache::default().end_offset_for(1, 40), None);
    }

    #[test]
    fn epoch_at_an_offset_is_the_one_in_force() {
        let cache = cache(&[(1, 5), (3, 10), (4, 25)]);
        assert_eq!(cache.epoch_at(4), None, "below the first entry");
        assert_eq!(cache.epoch_at(5), Some(1));
        assert_eq!(cache.epoch_at(9), Some(1));
        assert_eq!(cache.epoch_at(10), Some(3));
        assert_eq!(cache.epoch_at(24), Some(3));
        assert_eq!(cache.epoch_at(99), Some(4));
        assert_eq!(EpochCache::default().epoch_at(0), None);
    }

    #[test]
    fn assign_and_truncation() {
        let mut cache = cache(&[(1, 0), (3, 10)]);
        assert!(!cache.assign(2, 20), "older epochs are ignored");
        assert!(cache.assign(5, 10), "an empty epoch is replaced");
        assert_eq!(cache.entries(), cache_entries(&[(1, 0), (5, 10)]));
        assert!(cache.truncate_from_end(10));
        assert_eq!(cache.entries(), cache_entries(&[(1, 0)]));
        let mut cache = self::cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(cache.truncate_from_start(12));
        assert_eq!(cache.entries(), cache_entries(&[(3, 12), (4, 25)]));
        assert!(cache.truncate_from_start(25));
        assert_eq!(cache.entries(), cache_entries(&[(4, 25)]));
        assert!(!cache.truncate_from_start(20));
    }

    fn cache_entries(entries: &[(i32, i64)]) -> Vec<EpochEntry> {
        entries
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect()
    }

    #[test]
    fn file_format_is_kafkas_and_garbage_is_rejected() {
        let cache = cache(&[(1, 0), (3, 10)]);
        insta::assert_snapshot!(cache.encode(), @r"
        0
        2
        1 0
        3 10
        ");
        assert_eq!(EpochCache::decode(&cache.encode()), Some(cache));
        assert_eq!(EpochCache::decode("0\n2\n1 0\n"), None, "count mismatch");
        assert_eq!(
            EpochCache::decode("0\n2\n3 0\n1 10\n"),
            None,
            "not increasing"
        );
        assert_eq!(EpochCache::decode("\0\0\0"), None);
    }
}
