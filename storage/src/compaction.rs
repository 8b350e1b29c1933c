//! Compaction (`cleanup.policy=compact`): rewrite closed segments keeping only the latest record
//! per key, and drop tombstones (null values) once older than `delete_retention_ms`.
//!
//! 1. A key map (key -> offset of its latest record) is built over the closed segments, oldest
//!    first, within `COMPACTION_MAP_BYTES_MAX`; only the segments it covers are cleaned. Closed
//!    segments were synced at roll, so no key's latest record can vanish in a crash after its
//!    older records were cleaned away.
//! 2. Consecutive segments are grouped up to `segment_bytes` and each group is rewritten into
//!    one segment with the group's first base offset. Offsets never change: a partly kept batch
//!    is rebuilt around its surviving raw records (`records::batch_rebuild`); a batch left empty
//!    disappears, unless it is the last data batch of a producer the producer state still
//!    holds: that one stays as its header alone (Kafka's `RETAIN_EMPTY`), so a replay of the log
//!    rebuilds the producer's last sequence, and a consumer whose position reaches the batch
//!    moves past its offsets (a tombstone removed at the end of a closed segment left a
//!    position below the log end with nothing to fetch: single-compaction 297446326). Keyless
//!    records are kept (Kafka refuses them on compacted topics; here they
//!    are never silently lost). Transactions: only segments wholly below the last stable offset
//!    are cleaned, so every transactional batch there is decided and no open transaction's
//!    records are touched. An aborted transaction's records (`AbortedTxn` ranges of the
//!    segments' transaction indexes) are removed and add no keys: they must never shadow a
//!    committed value. Committed transactional records are compacted like any others. Markers
//!    are kept (Kafka drops them after `delete.retention.ms`; keeping them costs a batch each).
//! 3. Swap, crash-safe: write `<base>-<end>.cleaned`, fsync, rename to `.swap` and fsync the
//!    directory (the commit point), then replace the group's files (`recovery::swap_install`,
//!    which recovery also runs to finish an interrupted swap). A crash before the commit point
//!    leaves the old segments; after it, the new one. Never a mix.

use crate::config::MIB;
use crate::error::{IoContext, LogError};
use crate::index::IndexBuilder;
use crate::layout::{compaction_path, CLEANED_SUFFIX, SWAP_SUFFIX};
use crate::log::PartitionLog;
use crate::producer_state::AbortedTxn;
use crate::records::{batch_rebuild, records_parse, records_section};
use crate::recovery::swap_install;
use crate::retention::ClosedSegment;
use crate::scan::{BatchScan, ScanItem};
use crate::segment::{index_files_remove, Segment};
use runtime::OpenMode;
use std::collections::BTreeMap;
use wire::{BatchHeader, ValidatedBatch};

/// The key map's memory budget: Kafka's `log.cleaner.dedupe.buffer.size` default.
pub(crate) const COMPACTION_MAP_BYTES_MAX: u64 = 128 * MIB;
/// What a key costs the map beyond its bytes (tree node, vector header, offset): an estimate.
const KEY_OVERHEAD_BYTES: u64 = 64;

/// What one `compact` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// The latest record of a key within the mapped segments.
#[derive(Debug, Clone, Copy)]
struct Latest {
    offset: i64,
    /// Index of its segment among the closed segments.
    segment_index: usize,
    tombstone_timestamp: Option<i64>,
}

/// The aborted transactions' offset ranges, by producer: whose records compaction removes.
#[derive(Debug, Default)]
struct Aborted {
    ranges: BTreeMap<i64, Vec<(i64, i64)>>,
}

impl Aborted {
    fn new<'a>(entries: impl Iterator<Item = &'a AbortedTxn>) -> Aborted {
        let mut aborted = Aborted::default();
        for entry in entries {
            aborted
                .ranges
                .entry(entry.producer_id)
                .or_default()
                .push((entry.first_offset, entry.last_offset));
        }
        aborted
    }

    /// Whether `batch` is data of an aborted transaction.
    fn holds(&self, batch: &ValidatedBatch) -> bool {
        let header = batch.header();
        if !header.is_transactional() || header.is_control() {
            return false;
        }
        self.ranges.get(&header.producer_id).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&header.base_offset))
        })
    }
}

/// Per producer id, the last offset of its last data batch (Kafka's `lastRecordsOfActiveProducers`):
/// the batches compaction keeps, emptied if need be.
type ProducersLast = BTreeMap<i64, i64>;

#[derive(Debug, Default)]
struct KeyMap {
    latest: BTreeMap<Vec<u8>, Latest>,
    /// Per mapped segment, how many of its records cleaning would remove.
    removable: Vec<u64>,
    bytes: u64,
}

impl PartitionLog {
    /// Compacts the closed segments (a no-op under the delete policy); see the module doc.
    pub fn compact(&mut self, now_ms: i64) -> Result<CompactionOutcome, LogError> {
        self.clock_observe(now_ms);
        let mut outcome = CompactionOutcome {
            segments_before: self.segment_count(),
            bytes_before: self.size_bytes(),
            ..Default::default()
        };
        if self.config.cleanup_policy.compacts() {
            // Closed segments were synced at roll: the recovery point is past them all.
            let stable = self.last_stable_offset(self.recovery_point);
            let mut closed = self.closed_segments();
            closed.retain(|segment| segment.end_offset <= stable);
            let horizon_ms = now_ms.saturating_sub(self.config.delete_retention_ms);
            let aborted = Aborted::new(self.segments.values().flat_map(|s| s.aborted()));
            let map = self.key_map_build(&closed, &aborted, horizon_ms)?;
            let producers_last = self.producers.last_data_offsets();
            let mapped = &closed[..map.removable.len()];
            for group in groups_plan(mapped, self.config.segment_bytes) {
                let first = mapped
                    .iter()
                    .position(|s| s.base_offset == group[0].base_offset)
                    .expect("planned");
                if group.len() == 1 && map.removable[first] == 0 {
                    continue;
                }
                outcome.records_removed +=
                    self.group_clean(group, &map, &aborted, &producers_last, horizon_ms)?;
            }
        }
        outcome.segments_after = self.segment_count();
        outcome.bytes_after = self.size_bytes();
        if outcome.segments_after != outcome.segments_before || outcome.records_removed > 0 {
            tracing::info!(dir = %self.dir.display(), ?outcome, "compacted");
        }
        self.invariants_check();
        Ok(outcome)
    }

    /// Maps keys to their latest record, oldest segment first, until the budget is spent (the
    /// segment that spends it is still mapped whole: the budget may be exceeded by one segment).
    fn key_map_build(
        &self,
        closed: &[ClosedSegment],
        aborted: &Aborted,
        horizon_ms: i64,
    ) -> Result<KeyMap, LogError> {
        let mut map = KeyMap::default();
        for (segment_index, summary) in closed.iter().enumerate() {
            if map.bytes >= COMPACTION_MAP_BYTES_MAX {
                break;
            }
            map.removable.push(0);
            let keep_first =
                crate::PlantedBug::active(self.planted, crate::PlantedBug::CompactionKeepsFirst);
            self.batches_visit(summary.base_offset, &mut |batch| {
                if aborted.holds(batch) {
                    map.removable[segment_index] += u64::from(batch.header().record_count as u32);
                    return Ok(());
                }
                map_batch(&mut map, batch, segment_index, keep_first);
                Ok(())
            })?;
        }
        for latest in map.latest.values() {
            if latest
                .tombstone_timestamp
                .is_some_and(|timestamp| timestamp < horizon_ms)
            {
                map.removable[latest.segment_index] += 1;
            }
        }
        Ok(map)
    }

    /// Shows every batch of a segment to `visit`, CRC-checked; corruption fails the compaction
    /// rather than being copied into a rewritten segment.
    fn batches_visit(
        &self,
        base_offset: i64,
        visit: &mut dyn FnMut(&ValidatedBatch) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let segment = &self.segments[&base_offset];
        let mut scan = BatchScan::new(&**segment.file(), segment.path(), segment.size_bytes());
        // baseOffset lies outside the CRC: a flipped bit there must fail the scan, not be copied
        // into the rewritten segment, so offsets must rise within the segment's range.
        let (segment_end, mut next_expected) = (segment.next_offset(), base_offset);
        // Bounded: the scan ends at the segment's size.
        loop {
            let item =
                scan.next_checked(&mut |header| match header.base_offset >= next_expected
                    && header.next_offset() <= segment_end
                {
                    true => Ok(()),
                    false => Err(format!(
                        "batch at offset {} is out of place",
                        header.base_offset
                    )),
                })?;
            if let ScanItem::Batch { batch, .. } = &item {
                next_expected = batch.header().next_offset();
            }
            match item {
                ScanItem::End => return Ok(()),
                ScanItem::Batch { batch, .. } => visit(&batch)?,
                ScanItem::Invalid { position, reason } => {
                    let path = segment.path().to_path_buf();
                    return Err(LogError::Corrupt {
                        path,
                        position,
                        reason,
                    });
                }
            }
        }
    }

    /// Rewrites one group and swaps it in; returns how many records it removed.
    fn group_clean(
        &mut self,
        group: &[ClosedSegment],
        map: &KeyMap,
        aborted: &Aborted,
        producers_last: &ProducersLast,
        horizon_ms: i64,
    ) -> Result<u64, LogError> {
        let base_offset = group[0].base_offset;
        let end_offset = group[group.len() - 1].end_offset;
        let cleaned = compaction_path(&self.dir, base_offset, end_offset, CLEANED_SUFFIX);
        let file = self
            .disk
            .open(&cleaned, OpenMode::Create)
            .context("create", &cleaned)?;
        file.truncate(0).context("truncate", &cleaned)?;
        let mut indexes = IndexBuilder::new(base_offset, self.config.index_interval_bytes);
        let (mut position, mut next_offset, mut removed) = (0u64, base_offset, 0);
        for summary in group {
            self.batches_visit(summary.base_offset, &mut |batch| {
                let (kept, count) = match aborted.holds(batch) {
                    true => {
                        let header = batch.header();
                        let emptied = producer_last_holds(producers_last, header)
                            .then(|| batch_rebuild(header, &[]));
                        (emptied, u64::from(header.record_count as u32))
                    }
                    false => batch_clean(batch, map, producers_last, horizon_ms),
                };
                removed += count;
                let Some(kept) = kept else { return Ok(()) };
                if count > 0 && kept.header().record_count == 0 {
                    // `site`: the simulator counts these, so a regression seed can show it meets it.
                    tracing::info!(site = "compaction-kept-producer-last", dir = %self.dir.display(), base_offset = kept.header().base_offset, producer_id = kept.header().producer_id, "compaction emptied a producer's last batch and kept its header");
                }
                file.write_at(kept.bytes(), position)
                    .context("write", &cleaned)?;
                indexes.observe(
                    kept.header(),
                    u32::try_from(position).expect("a group fits a segment"),
                );
                position += kept.size() as u64;
                next_offset = kept.header().next_offset();
                Ok(())
            })?;
        }
        indexes.seal();
        file.sync_data().context("sync", &cleaned)?;
        let swap = compaction_path(&self.dir, base_offset, end_offset, SWAP_SUFFIX);
        self.disk
            .rename(&cleaned, &swap)
            .context("rename", &cleaned)?;
        self.disk.sync_dir(&self.dir).context("sync", &self.dir)?;
        runtime::buggify::hit(&*self.disk, runtime::buggify::Site::CompactionSwap);
        let files = self.disk.list(&self.dir).context("list", &self.dir)?;
        swap_install(
            &*self.disk,
            &self.dir,
            &swap,
            base_offset,
            end_offset,
            &files,
        )?;
        // The markers stay, and with them their transaction index entries.
        let mut aborted_kept = Vec::new();
        for summary in group {
            let segment = self
                .segments
                .remove(&summary.base_offset)
                .expect("a closed segment");
            aborted_kept.extend_from_slice(segment.aborted());
        }
        if position > 0 {
            let modified_ms = group.iter().map(|s| s.modified_ms).max().expect("a group");
            let segment = Segment::installed(
                &self.dir,
                file,
                base_offset,
                position,
                next_offset,
                indexes,
                modified_ms,
                aborted_kept,
            );
            // The swap is committed: the segment must join the log whatever happens next. Its
            // index files are a cache (recovery rebuilds them); a disk that refuses them must not
            // make the log forget the segment, which would serve reads across its offsets as a
            // gap (seed 25 of single-compaction: a consumer skipped a live record).
            if let Err(error) = segment.index_files_write(&*self.disk, &self.dir) {
                // `site`: the simulator counts these, so a regression seed can show it meets it.
                tracing::warn!(site = "compaction-index-unwritten", dir = %self.dir.display(), %error, "compacted segment's index files not written; recovery will rebuild them");
                let _ = index_files_remove(&*self.disk, &self.dir, base_offset);
            }
            self.segments.insert(base_offset, segment);
        }
        Ok(removed)
    }
}

/// `keep_first` is the planted bug `CompactionKeepsFirst`: a key's first record stays mapped.
fn map_batch(map: &mut KeyMap, batch: &ValidatedBatch, segment_index: usize, keep_first: bool) {
    let header = batch.header();
    if header.is_control() {
        return;
    }
    // A batch whose records do not parse is kept verbatim by cleaning; it adds no keys.
    let Ok(section) = records_section(batch) else {
        return;
    };
    let Ok(records) = records_parse(&section, header) else {
        return;
    };
    for record in records {
        let Some(key) = record.key else { continue };
        let latest = Latest {
            offset: record.offset,
            segment_index,
            tombstone_timestamp: record.value_is_null.then_some(record.timestamp),
        };
        match map.latest.get_mut(key) {
            Some(_) if keep_first => map.removable[segment_index] += 1,
            Some(previous) => {
                map.removable[previous.segment_index] += 1;
                *previous = latest;
            }
            None => {
                map.bytes += key.len() as u64 + KEY_OVERHEAD_BYTES;
                map.latest.insert(key.to_vec(), latest);
            }
        }
    }
}

/// Whether `header` is the last data batch of a producer whose state is still held.
fn producer_last_holds(producers_last: &ProducersLast, header: &BatchHeader) -> bool {
    header.producer_id >= 0
        && !header.is_control()
        && producers_last.get(&header.producer_id) == Some(&header.last_offset())
}

/// The batch as compaction leaves it (`None`: nothing survives) and how many records it lost.
/// A producer's last data batch survives its records, emptied (see the module doc); any other
/// batch left without records disappears, also one a past cleaning emptied.
fn batch_clean(
    batch: &ValidatedBatch,
    map: &KeyMap,
    producers_last: &ProducersLast,
    horizon_ms: i64,
) -> (Option<ValidatedBatch>, u64) {
    let header = batch.header();
    if header.is_control() {
        return (Some(batch.clone()), 0);
    }
    let Ok(section) = records_section(batch) else {
        return (Some(batch.clone()), 0);
    };
    let Ok(records) = records_parse(&section, header) else {
        return (Some(batch.clone()), 0);
    };
    let kept: Vec<_> = records
        .iter()
        .filter(|record| {
            let Some(key) = record.key else { return true };
            // A key missing from the map was never mapped: keeping it is always safe.
            map.latest.get(key).is_none_or(|latest| {
                let expired = record.value_is_null && record.timestamp < horizon_ms;
                latest.offset == record.offset && !expired
            })
        })
        .copied()
        .collect();
    let removed = (records.len() - kept.len()) as u64;
    let last = producer_last_holds(producers_last, header);
    match (removed, kept.is_empty(), last) {
        (0, false, _) | (0, true, true) => (Some(batch.clone()), 0),
        (_, true, true) => (Some(batch_rebuild(header, &[])), removed),
        (_, true, false) => (None, removed),
        (_, false, _) => (Some(batch_rebuild(header, &kept)), removed),
    }
}

/// Splits consecutive closed segments into groups whose total size fits `segment_bytes` and
/// whose offsets fit the index's `u32` relative offsets. Every segment is in exactly one group.
pub(crate) fn groups_plan(closed: &[ClosedSegment], segment_bytes: u64) -> Vec<&[ClosedSegment]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, segment) in closed.iter().enumerate() {
        let span = segment.end_offset - 1 - closed[start].base_offset;
        let fits = bytes + segment.size_bytes <= segment_bytes && span <= i64::from(u32::MAX);
        if index > start && !fits {
            groups.push(&closed[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += segment.size_bytes;
    }
    if start < closed.len() {
        groups.push(&closed[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_respect_size_and_cover_every_segment() {
        let closed: Vec<ClosedSegment> = [(0, 40), (10, 70), (20, 30), (30, 200), (40, 10)]
            .windows(2)
            .map(|pair| ClosedSegment {
                base_offset: pair[0].0,
                end_offset: pair[1].0,
                size_bytes: pair[0].1,
                timestamp_max: 0,
                modified_ms: 0,
            })
            .collect();
        let groups = groups_plan(&closed, 100);
        let bases: Vec<Vec<i64>> = groups
            .iter()
            .map(|group| group.iter().map(|s| s.base_offset).collect())
            .collect();
        assert_eq!(
            bases,
            [vec![0], vec![10, 20], vec![30]],
            "an oversized segment stands alone"
        );
    }
}
