//! Recovery: turning whatever a crash left in a partition directory into a consistent log.
//!
//! In order: discard interrupted writes (`*.tmp`, compaction's `.cleaned`); finish committed
//! compaction swaps (`.swap`); drop segments wholly below the checkpointed log start offset (an
//! interrupted retention) and index files without a segment; then load segments oldest first.
//! A closed segment that ends at or below the checkpointed recovery point is clean: it opens
//! from its index files (validated, else rebuilt). Every other segment is scanned batch by
//! batch, CRC included, and the log is cut at the first byte that is not a valid batch with a
//! higher offset than the one before: the file is truncated there and later segments removed.
//! Finally the scanned segments are rewritten from the recovery point on and synced, so the whole
//! log is durable and the recovery point is the log end (rewritten, because after a failed fsync
//! the page cache may show bytes no sync will persist: `Segment::rewrite_from`), and the
//! leader-epoch cache is reconciled with the batches.
//!
//! What recovery writes (rebuilt index files, the epoch cache, the checkpoint) only caches what
//! the segments say, and the next recovery derives it again when missing or stale. So a failed
//! write (typically a disk filled up before the crash) does not stop the open: it is logged
//! loudly with the path and the error, the log keeps the rebuilt state in memory and serves
//! reads, and appends fail with the disk's error until space returns.

use crate::checkpoint::LogCheckpoint;
use crate::config::LogConfig;
use crate::epoch_cache::EpochCache;
use crate::error::{IoContext, LogError};
use crate::layout::{file_kind, segment_path, FileKind, LOG_SUFFIX};
use crate::log::PartitionLog;
use crate::segment::{index_files_remove, segment_files_remove, Segment};
use runtime::Disk;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wire::BatchHeader;

pub(crate) fn recover(
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: LogConfig,
    now_ms: i64,
    planted: Option<crate::PlantedBug>,
) -> Result<PartitionLog, LogError> {
    dir_prepare(&*disk, &dir)?;
    leftovers_remove(&*disk, &dir)?;
    swaps_complete(&*disk, &dir)?;
    let checkpoint = LogCheckpoint::read(&*disk, &dir)?;
    let log_start_hint = checkpoint.map_or(0, |checkpoint| checkpoint.log_start_offset);
    let recovery_point_hint = checkpoint.map_or(0, |checkpoint| checkpoint.recovery_point);
    let bases = segments_list(&*disk, &dir, log_start_hint)?;
    let hints = Hints {
        log_start_offset: log_start_hint,
        recovery_point: recovery_point_hint,
    };
    let verify_crc = !crate::PlantedBug::active(planted, crate::PlantedBug::RecoverySkipsCrc);
    let loaded = segments_load(
        &*disk,
        &dir,
        &bases,
        hints,
        config.index_interval_bytes,
        verify_crc,
        now_ms,
    )?;
    let mut segments = loaded.segments;
    if segments.is_empty() {
        let interval = config.index_interval_bytes;
        let segment = Segment::create(&*disk, &dir, log_start_hint, interval, now_ms)?;
        disk.sync_dir(&dir).context("sync", &dir)?;
        segments.insert(log_start_hint, segment);
    }
    runtime::buggify::hit(&*disk, runtime::buggify::Site::Recovery);
    if !crate::PlantedBug::active(planted, crate::PlantedBug::RecoveryTrustsPageCache) {
        for base in &loaded.scanned {
            // Below the recovery point every byte was synced; past it, only rewriting makes sure
            // the sync covers what the page cache shows (`Segment::rewrite_from`).
            segments[base].rewrite_from(recovery_point_hint, verify_crc)?;
            segments[base].sync()?;
        }
    }
    let last = segments.values_mut().next_back().expect("not empty");
    if !last.is_empty() {
        last.rolling_start(now_ms);
    }
    if crate::PlantedBug::active(planted, crate::PlantedBug::OffsetReuseAfterRestart)
        && !last.is_empty()
    {
        last.planted_forget_last_offset();
    }
    let log_end_offset = last.next_offset();
    // Without a checkpoint the first segment's base is the best guess. With one, the checkpoint
    // is the truth: compaction may have emptied the first segments without moving the start.
    let first_base = *segments.keys().next().expect("not empty");
    let log_start_offset = match checkpoint {
        Some(checkpoint) => checkpoint.log_start_offset,
        None => first_base.min(log_end_offset),
    };
    let mut log = PartitionLog {
        disk,
        dir,
        config,
        segments,
        log_start_offset: log_start_offset.min(log_end_offset),
        recovery_point: log_end_offset,
        epochs: EpochCache::default(),
        producers: crate::producer_state::ProducerStates::new(log_end_offset),
        unstable: Vec::new(),
        generation: 0,
        sync_failed: false,
        flushes_in_flight: 0,
        roll_point_deferred: None,
        planted,
        clock_ms: now_ms,
    };
    // The epoch cache goes first: a new checkpoint tells the next recovery to skip the segments
    // scanned now, so it must not be written while the epochs seen in them are not.
    let epochs_persisted = epochs_recover(&mut log, &loaded.epoch_starts)?;
    if epochs_persisted {
        cache_write_or_warn("log checkpoint", &log.dir, log.checkpoint_write())?;
    }
    if log_start_offset > log_end_offset {
        // The checkpoint's start lies past every batch that survived: start afresh there.
        log.truncate_fully_and_start_at(log_start_offset)?;
    } else if !crate::PlantedBug::active(planted, crate::PlantedBug::ProducerStateNotRestored) {
        // Scanned segments holding markers have no transaction index yet: the replay rebuilds
        // theirs (a scanned segment without markers has none to rebuild).
        let txn_index_from = loaded.with_markers.first().copied().unwrap_or(i64::MAX);
        log.producers_rebuild(txn_index_from)?;
    }
    scanned_indexes_write(&log, &loaded.with_markers)?;
    tracing::info!(
        dir = %log.dir.display(), log_start_offset = log.log_start_offset, log_end_offset = log.log_end_offset(),
        segments = log.segments.len(), scanned = loaded.scanned.len(), "recovered"
    );
    Ok(log)
}

/// Creates the directory and makes it and its entry in the parent durable.
fn dir_prepare(disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
    disk.create_dir_all(dir).context("create", dir)?;
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        disk.sync_dir(parent).context("sync", parent)?;
    }
    disk.sync_dir(dir).context("sync", dir)
}

/// Removes interrupted atomic writes and unfinished compaction output: the old files they were
/// meant to replace are intact.
fn leftovers_remove(disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
    let mut removed = false;
    for path in disk.list(dir).context("list", dir)? {
        if matches!(file_kind(&path), FileKind::Temporary | FileKind::Cleaned) {
            tracing::info!(path = %path.display(), "removing an interrupted write");
            disk.remove_file(&path).context("remove", &path)?;
            removed = true;
        }
    }
    if removed {
        disk.sync_dir(dir).context("sync", dir)?;
    }
    Ok(())
}

/// Finishes compaction swaps that were committed (named `.swap`, contents synced): the swap
/// replaces every segment with a base offset in its range.
fn swaps_complete(disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
    let files = disk.list(dir).context("list", dir)?;
    for swap in &files {
        let FileKind::Swap {
            base_offset,
            end_offset,
        } = file_kind(swap)
        else {
            continue;
        };
        tracing::info!(path = %swap.display(), "finishing an interrupted compaction swap");
        swap_install(disk, dir, swap, base_offset, end_offset, &files)?;
    }
    Ok(())
}

/// Replaces the segments [base, end) by the swap file: their indexes and logs go, then the swap
/// is renamed over `<base>.log` (or removed if compaction left nothing). Used by compaction
/// itself and by recovery to finish its work, so both end in the same state.
pub(crate) fn swap_install(
    disk: &dyn Disk,
    dir: &Path,
    swap: &Path,
    base_offset: i64,
    end_offset: i64,
    files: &[PathBuf],
) -> Result<(), LogError> {
    let replaced: BTreeSet<i64> = files
        .iter()
        .filter_map(|path| match file_kind(path) {
            FileKind::Log { base_offset }
            | FileKind::Index { base_offset }
            | FileKind::TimeIndex { base_offset }
            | FileKind::TxnIndex { base_offset } => Some(base_offset),
            _ => None,
        })
        .filter(|base| (base_offset..end_offset).contains(base))
        .collect();
    for base in &replaced {
        index_files_remove(disk, dir, *base)?;
        if *base != base_offset {
            segment_files_remove(disk, dir, *base)?;
        }
    }
    let empty = disk
        .open(swap, runtime::OpenMode::Existing)
        .and_then(|file| file.len())
        .context("size", swap)?
        == 0;
    let target = segment_path(dir, base_offset, LOG_SUFFIX);
    if empty {
        segment_files_remove(disk, dir, base_offset)?;
        disk.remove_file(swap).context("remove", swap)?;
    } else {
        disk.rename(swap, &target).context("rename", swap)?;
    }
    disk.sync_dir(dir).context("sync", dir)
}

/// The base offsets of the segments to load, after removing segments wholly below the log start
/// and index files whose segment is gone.
fn segments_list(disk: &dyn Disk, dir: &Path, log_start_offset: i64) -> Result<Vec<i64>, LogError> {
    let files = disk.list(dir).context("list", dir)?;
    let mut bases: Vec<i64> = files
        .iter()
        .filter_map(|path| match file_kind(path) {
            FileKind::Log { base_offset } => Some(base_offset),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    let below_start = bases
        .windows(2)
        .take_while(|pair| pair[1] <= log_start_offset)
        .count();
    let mut changed = below_start > 0;
    for base in bases.drain(..below_start) {
        tracing::info!(dir = %dir.display(), base, "removing a segment below the log start");
        segment_files_remove(disk, dir, base)?;
    }
    for path in &files {
        let orphan = match file_kind(path) {
            FileKind::Index { base_offset }
            | FileKind::TimeIndex { base_offset }
            | FileKind::TxnIndex { base_offset } => bases.binary_search(&base_offset).is_err(),
            _ => false,
        };
        if orphan && disk.exists(path) {
            disk.remove_file(path).context("remove", path)?;
            changed = true;
        }
    }
    if changed {
        disk.sync_dir(dir).context("sync", dir)?;
    }
    Ok(bases)
}

struct Loaded {
    segments: BTreeMap<i64, Segment>,
    /// Segments whose bytes were scanned: not known durable, synced before the log opens.
    scanned: Vec<i64>,
    /// The first batch of each leader epoch seen in the scanned segments.
    epoch_starts: Vec<(i32, i64)>,
    /// Scanned segments holding a control batch: their transaction index needs the producer
    /// state replay, so their index files are written after it (`scanned_indexes_write`).
    with_markers: BTreeSet<i64>,
}

/// What the checkpoint says, if anything (zeros otherwise).
#[derive(Debug, Clone, Copy)]
struct Hints {
    log_start_offset: i64,
    recovery_point: i64,
}

fn segments_load(
    disk: &dyn Disk,
    dir: &Path,
    bases: &[i64],
    hints: Hints,
    interval: u32,
    verify_crc: bool,
    now_ms: i64,
) -> Result<Loaded, LogError> {
    let mut loaded = Loaded {
        segments: BTreeMap::new(),
        scanned: Vec::new(),
        epoch_starts: Vec::new(),
        with_markers: BTreeSet::new(),
    };
    let mut offset_floor = 0;
    for (index, &base) in bases.iter().enumerate() {
        let next_base = bases.get(index + 1).copied();
        let clean =
            next_base.is_some_and(|next| next <= hints.recovery_point) && base >= offset_floor;
        let opened = match clean {
            true => Segment::index_open(disk, dir, base, now_ms)?
                .filter(|segment| segment.base_offset() >= offset_floor),
            false => None,
        };
        let (segment, mut stop) = match opened {
            Some(segment) => (segment, None),
            None => {
                // Batches wholly below the log start name no epoch the cache should know.
                let mut visit = |header: &BatchHeader| {
                    if header.last_offset() >= hints.log_start_offset {
                        epoch_observe(&mut loaded.epoch_starts, header);
                    }
                    if header.is_control() {
                        loaded.with_markers.insert(base);
                    }
                };
                loaded.scanned.push(base);
                Segment::scan_open(
                    disk,
                    dir,
                    base,
                    offset_floor,
                    interval,
                    verify_crc,
                    now_ms,
                    &mut visit,
                )?
            }
        };
        if stop.is_none() && next_base.is_some_and(|next| segment.next_offset() > next) {
            stop = Some(crate::segment::ScanStop {
                position: segment.size_bytes(),
                reason: "overlaps the next segment".into(),
            });
        }
        offset_floor = segment.next_offset();
        let path = segment.path().to_path_buf();
        loaded.segments.insert(base, segment);
        if let Some(stop) = stop {
            tracing::warn!(path = %path.display(), position = stop.position, reason = %stop.reason, "truncating the log at a bad batch");
            tail_cut(disk, dir, &path, stop.position, &bases[index + 1..])?;
            break;
        }
    }
    indexes_settle(disk, dir, &mut loaded)?;
    Ok(loaded)
}

/// Truncates the segment file at `position` and removes the segments after it, newest first so
/// any crash in between leaves a log without holes.
fn tail_cut(
    disk: &dyn Disk,
    dir: &Path,
    path: &Path,
    position: u64,
    later: &[i64],
) -> Result<(), LogError> {
    let file = disk
        .open(path, runtime::OpenMode::Existing)
        .context("open", path)?;
    file.truncate(position).context("truncate", path)?;
    file.sync_data().context("sync", path)?;
    for base in later.iter().rev() {
        segment_files_remove(disk, dir, *base)?;
    }
    disk.sync_dir(dir).context("sync", dir)
}

/// Seals and writes the indexes of closed segments that were rebuilt by a scan (as a roll
/// would have), and removes any index files of the active segment (its indexes live in
/// memory; files there would go stale). Index files that cannot be written are removed, so the
/// next recovery scans that segment again; its indexes serve from memory meanwhile. A segment
/// holding markers only loses its stale files here: its transaction index is not known before
/// the producer-state replay, after which `scanned_indexes_write` writes all of them (written
/// now, a crash before the replay could leave an offset index beside a missing transaction
/// index, which reads as "no aborts").
fn indexes_settle(disk: &dyn Disk, dir: &Path, loaded: &mut Loaded) -> Result<(), LogError> {
    let Some((&last, _)) = loaded.segments.iter().next_back() else {
        return Ok(());
    };
    for base in &loaded.scanned {
        if *base != last {
            let segment = loaded
                .segments
                .get_mut(base)
                .expect("scanned segments are loaded");
            segment.seal();
            if loaded.with_markers.contains(base) {
                index_files_remove(disk, dir, *base)?;
                continue;
            }
            let written = segment.index_files_write(disk, dir);
            if !cache_write_or_warn("index files", segment.path(), written)? {
                index_files_remove(disk, dir, *base)?;
            }
        }
    }
    index_files_remove(disk, dir, last)?;
    disk.sync_dir(dir).context("sync", dir)
}

/// Writes the index files of the closed segments recovery scanned that hold markers, now that
/// the replay rebuilt their transaction index (see `indexes_settle`).
fn scanned_indexes_write(log: &PartitionLog, with_markers: &BTreeSet<i64>) -> Result<(), LogError> {
    let active = log.active().base_offset();
    for base in with_markers.iter().filter(|base| **base != active) {
        let Some(segment) = log.segments.get(base) else {
            continue; // a full truncation removed it
        };
        let written = segment.index_files_write(&*log.disk, &log.dir);
        if !cache_write_or_warn("index files", segment.path(), written)? {
            index_files_remove(&*log.disk, &log.dir, *base)?;
        }
    }
    Ok(())
}

/// A header whose leader epoch rises, read until two reads agree: the epoch lies outside the
/// CRC (and this walk checks none), so a bit flipped on the way from the disk would otherwise
/// become the log's latest epoch and refuse every append at the real one (see
/// `BatchScan::surprise_confirm`).
fn header_confirmed(
    segment: &Segment,
    position: u64,
    mut header: BatchHeader,
) -> Result<BatchHeader, LogError> {
    for _ in 0..crate::scan::SCAN_REREADS {
        let again = segment.header_at(position)?;
        if again == header {
            return Ok(header);
        }
        tracing::warn!(
            site = "scan-epoch-reread-differs",
            position,
            "a batch header read differently twice"
        );
        header = again;
    }
    Err(LogError::Corrupt {
        path: segment.path().to_path_buf(),
        position,
        reason: "the batch header reads differently every time".to_string(),
    })
}

fn epoch_observe(starts: &mut Vec<(i32, i64)>, header: &BatchHeader) {
    let epoch = header.partition_leader_epoch;
    if starts.last().is_none_or(|(latest, _)| epoch > *latest) && epoch >= 0 {
        starts.push((epoch, header.base_offset));
    }
}

/// Whether a write of recovered state succeeded. An I/O failure is not fatal (see the module
/// doc): it is logged as a warning naming the file and the error, and `Ok(false)` returned.
fn cache_write_or_warn(
    what: &str,
    path: &Path,
    result: Result<(), LogError>,
) -> Result<bool, LogError> {
    match result {
        Ok(()) => Ok(true),
        Err(LogError::Io(error)) => {
            tracing::warn!(path = %path.display(), %error, "recovery cannot write the {what}; keeping it in memory, serving reads, and rebuilding it at the next recovery");
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Reconciles the epoch cache with the recovered batches: the persisted file (or, if it is
/// missing or unreadable, a header walk of every segment), plus epochs first seen in scanned
/// batches, minus entries past the log end or wholly before the log start. Returns whether the
/// file on disk matches the cache (false if it could not be written).
fn epochs_recover(log: &mut PartitionLog, scanned_starts: &[(i32, i64)]) -> Result<bool, LogError> {
    let persisted = EpochCache::read(&*log.disk, &log.dir)?;
    let mut epochs = match &persisted {
        Some(cache) => cache.clone(),
        None => epochs_walk(log)?,
    };
    for &(epoch, start_offset) in scanned_starts {
        epochs.assign(epoch, start_offset);
    }
    epochs.truncate_from_end(log.log_end_offset());
    epochs.truncate_from_start(log.log_start_offset);
    let mut written = true;
    if persisted.as_ref() != Some(&epochs) {
        let result = epochs.write(&*log.disk, &log.dir);
        written = cache_write_or_warn("leader-epoch cache", &log.dir, result)?;
    }
    log.epochs = epochs;
    Ok(written)
}

fn epochs_walk(log: &PartitionLog) -> Result<EpochCache, LogError> {
    let mut starts = Vec::new();
    for segment in log.segments.values() {
        let mut position = 0;
        // Bounded: each step moves forward by a whole batch.
        while position < segment.size_bytes() {
            let mut header = segment.header_at(position)?;
            let latest = starts.last().map_or(0, |(epoch, _)| *epoch);
            if header.partition_leader_epoch > latest {
                header = header_confirmed(segment, position, header)?;
            }
            epoch_observe(&mut starts, &header);
            position += header.size() as u64;
        }
    }
    let mut cache = EpochCache::default();
    for (epoch, start_offset) in starts {
        cache.assign(epoch, start_offset);
    }
    Ok(cache)
}
