//! Producer state on disk and its rebuild: `<offset>.snapshot` files (Kafka's layout), written at
//! every roll with the state of every batch below the new segment, and the replay of the log's
//! batch headers past the newest snapshot that passes its CRC.
//!
//! Snapshots are caches: a missing, unreadable or corrupt one costs a longer replay, never
//! wrong state, so their writes are best effort (logged) and a bad one is ignored and removed.
//! What they may not do is claim batches the log no longer has: a snapshot past the log end (the
//! log was truncated below it) is removed before any is loaded.

use crate::error::{IoContext, LogError};
use crate::layout::{file_kind, segment_path, FileKind, SNAPSHOT_SUFFIX};
use crate::log::PartitionLog;
use crate::producer_state::{AbortedTxn, ProducerStates};
use crate::scan::{BatchScan, ScanItem};
use crate::segment::Segment;
use runtime::disk::{read_all_stable, write_atomic};
use runtime::Disk;
use std::path::Path;
use wire::BatchHeader;

/// The offsets of the snapshot files in `dir`, ascending.
fn snapshots_list(disk: &dyn Disk, dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut offsets: Vec<i64> = disk
        .list(dir)
        .context("list", dir)?
        .iter()
        .filter_map(|path| match file_kind(path) {
            FileKind::Snapshot { offset } => Some(offset),
            _ => None,
        })
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Removes the snapshots for which `doomed(offset)` holds; syncs the directory if any went.
fn snapshots_remove(
    disk: &dyn Disk,
    dir: &Path,
    doomed: impl Fn(i64) -> bool,
) -> Result<(), LogError> {
    let mut removed = false;
    for offset in snapshots_list(disk, dir)? {
        if doomed(offset) {
            let path = segment_path(dir, offset, SNAPSHOT_SUFFIX);
            disk.remove_file(&path).context("remove", &path)?;
            removed = true;
        }
    }
    if removed {
        disk.sync_dir(dir).context("sync", dir)?;
    }
    Ok(())
}

impl PartitionLog {
    /// Writes the producer state as `<end>.snapshot` (at a roll, the new segment's base). Best
    /// effort: a failure is logged and the next recovery replays more of the log.
    pub(crate) fn producer_snapshot_write(&self) {
        let offset = self.producers.end_offset();
        let path = segment_path(&self.dir, offset, SNAPSHOT_SUFFIX);
        let bytes = self.producers.snapshot_encode();
        if let Err(error) = write_atomic(&*self.disk, &path, &bytes) {
            tracing::warn!(path = %path.display(), %error, "producer snapshot not written; recovery will replay the log instead");
        }
    }

    /// Removes snapshots older than the first segment: their state is also in every later
    /// snapshot, and the log they were taken from is gone (retention).
    pub(crate) fn producer_snapshots_trim(&self) -> Result<(), LogError> {
        let first_base = *self.segments.keys().next().expect("never empty");
        let newest_kept = snapshots_list(&*self.disk, &self.dir)?
            .into_iter()
            .filter(|offset| *offset <= first_base)
            .max();
        snapshots_remove(&*self.disk, &self.dir, |offset| {
            newest_kept.is_some_and(|kept| offset < kept)
        })
    }

    /// Rebuilds the producer state from the newest valid snapshot at or below the log end and
    /// the batches after it (recovery, truncation). Snapshots past the log end go first.
    ///
    /// The aborted-transaction lists of the segments from `txn_index_from` on (scanned by
    /// recovery, cut by a truncation) are rebuilt by the same replay: an abort's entry needs its
    /// transaction's first offset, which may lie in an earlier segment, so the replay starts
    /// from a snapshot at or below the first of them (snapshots hold the open transactions),
    /// and each of them is replayed whole.
    pub(crate) fn producers_rebuild(&mut self, txn_index_from: i64) -> Result<(), LogError> {
        let log_end_offset = self.log_end_offset();
        snapshots_remove(&*self.disk, &self.dir, |offset| offset > log_end_offset)?;
        let first_base = *self.segments.keys().next().expect("never empty");
        let mut states = None;
        for offset in snapshots_list(&*self.disk, &self.dir)?.into_iter().rev() {
            if offset > txn_index_from {
                continue;
            }
            let path = segment_path(&self.dir, offset, SNAPSHOT_SUFFIX);
            let bytes = match read_all_stable(&*self.disk, &path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    // Unreadable now is not corrupt: keep it for the next recovery.
                    tracing::warn!(path = %path.display(), %error, "producer snapshot unreadable; trying an older one");
                    continue;
                }
            };
            let loaded = ProducerStates::snapshot_decode(&bytes)
                .filter(|states| states.end_offset() == offset);
            match loaded {
                Some(loaded) => {
                    states = Some(loaded);
                    break;
                }
                None => {
                    tracing::warn!(path = %path.display(), "corrupt producer snapshot; removing it");
                    snapshots_remove(&*self.disk, &self.dir, |bad| bad == offset)?;
                }
            }
        }
        let mut states = states.unwrap_or_else(|| ProducerStates::new(first_base));
        let mut batches = 0;
        for segment in self.segments.values_mut() {
            if segment.next_offset() <= states.end_offset() {
                continue;
            }
            let whole = segment.base_offset() >= states.end_offset();
            let (applied, aborted) = producers_replay(segment, &mut states)?;
            batches += applied;
            if segment.base_offset() >= txn_index_from {
                assert!(
                    whole,
                    "the replay starts at or below every segment it rebuilds"
                );
                segment.aborted_set(aborted);
            }
        }
        assert!(
            states.end_offset() <= log_end_offset,
            "replay stays within the log"
        );
        states.end_advance(log_end_offset);
        tracing::debug!(dir = %self.dir.display(), producers = states.len(), batches, "producer state rebuilt");
        self.producers = states;
        Ok(())
    }

    /// Removes every snapshot (the log restarts empty).
    pub(crate) fn producer_snapshots_clear(&self) -> Result<(), LogError> {
        snapshots_remove(&*self.disk, &self.dir, |_| true)
    }
}

/// Applies the batches of `segment` at or past `states`' end; returns how many, and the
/// aborted transactions whose markers it applied. Every batch is
/// CRC-checked and its offsets held to the segment's (the producer fields lie inside the CRC,
/// baseOffset outside it): a bit flipped on the way from the disk is read again rather than
/// believed, as recovery's own scan does (single-crash seed 37 replayed a flipped baseOffset
/// of 4104 into a 40-offset log).
fn producers_replay(
    segment: &Segment,
    states: &mut ProducerStates,
) -> Result<(usize, Vec<AbortedTxn>), LogError> {
    let next_offset = segment.next_offset();
    let mut scan = BatchScan::new(&**segment.file(), segment.path(), segment.size_bytes())
        .expecting(segment.base_offset());
    let mut check = |header: &BatchHeader| match header.last_offset() < next_offset {
        true => Ok(()),
        false => Err(format!(
            "batch ends at {} past the segment's end",
            header.last_offset()
        )),
    };
    let (mut applied, mut aborted) = (0, Vec::new());
    // Bounded: each step moves forward by a whole batch.
    loop {
        match scan.next_checked(&mut check)? {
            ScanItem::Batch { batch, .. } => {
                if batch.header().base_offset >= states.end_offset() {
                    let completed = states.apply_batch(&batch);
                    aborted.extend(completed.and_then(|done| states.aborted_entry(&done)));
                    applied += 1;
                }
            }
            ScanItem::End => return Ok((applied, aborted)),
            ScanItem::Invalid { position, reason } => {
                return Err(LogError::Corrupt {
                    path: segment.path().to_path_buf(),
                    position,
                    reason: format!("replaying producer state: {reason}"),
                })
            }
        }
    }
}
