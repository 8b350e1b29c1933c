//! `Segment`: one `<base_offset>.log` file, its in-memory indexes and what the log needs to know
//! about it (size, next offset, newest timestamp). It appends, locates batches by offset, and is
//! opened either by a full validating scan (unclean tail, rebuilt indexes) or from its index files
//! (a clean closed segment). Directory-level decisions are `recovery`'s and `log`'s.

use crate::error::{IoContext, LogError};
use crate::index::{IndexBuilder, OffsetEntry, OffsetIndex, TimeIndex, TIMESTAMP_NONE};
use crate::layout::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX};
use crate::producer_state::AbortedTxn;
use crate::scan::{header_read, BatchScan, ScanItem};
use runtime::disk::{read_all, write_atomic};
use runtime::{Disk, DiskFile, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wire::{BatchHeader, ValidatedBatch};

/// Why a scan stopped before the end of a segment file: recovery truncates there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanStop {
    pub position: u64,
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    size_bytes: u64,
    /// The offset after the last batch; `base_offset` while empty.
    next_offset: i64,
    indexes: IndexBuilder,
    /// Wall time of the first append since this process opened the segment: its age for
    /// `segment_ms`. A restart restarts the age, which only delays a time-based roll.
    rolling_ms: Option<i64>,
    /// Wall time of the last change to the file: Kafka's file last-modified time, the age that
    /// time retention falls back to when no record carries a timestamp. The `Disk` seam has no
    /// file times, so it lives in memory: set at creation and by every append, and on opening
    /// an existing file to the time of the open. That is never older than the file's true last
    /// change, so a restart can only postpone deletion, never bring it forward.
    modified_ms: i64,
    /// The aborted transactions whose ABORT markers this segment holds, in log order
    /// (`txn_index`). Set by the log (appends, recovery's replay, compaction), which knows the
    /// transactions' first offsets; a scan alone cannot.
    aborted: Vec<AbortedTxn>,
}

impl Segment {
    /// Creates an empty segment file (emptying a leftover of the same name). The caller makes
    /// the new name durable with `sync_dir`.
    pub fn create(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        interval: u32,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = disk
            .open(&path, OpenMode::Create)
            .context("create", &path)?;
        file.truncate(0).context("truncate", &path)?;
        let indexes = IndexBuilder::new(base_offset, interval);
        Ok(Segment {
            base_offset,
            path,
            file,
            size_bytes: 0,
            next_offset: base_offset,
            indexes,
            rolling_ms: None,
            modified_ms: now_ms,
            aborted: Vec::new(),
        })
    }

    /// A segment just written in full elsewhere (compaction) and renamed into place; `file` is
    /// the handle it was written through. `modified_ms` is the newest of the segments it
    /// replaces, as Kafka's cleaner keeps it: a rewrite adds no records, so it must not make
    /// untimed records look younger, nor older.
    #[allow(clippy::too_many_arguments)]
    pub fn installed(
        dir: &Path,
        file: Arc<dyn DiskFile>,
        base_offset: i64,
        size_bytes: u64,
        next_offset: i64,
        indexes: IndexBuilder,
        modified_ms: i64,
        aborted: Vec<AbortedTxn>,
    ) -> Segment {
        assert!(size_bytes > 0 && next_offset > base_offset);
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        Segment {
            base_offset,
            path,
            file,
            size_bytes,
            next_offset,
            indexes,
            rolling_ms: None,
            modified_ms,
            aborted,
        }
    }

    /// Opens a segment by validating every batch, showing each valid header to `visit`. Stops
    /// at the first byte that is not a valid batch following `offset_floor` and returns the
    /// segment up to there plus why it stopped; the file itself is not modified. `now_ms` is
    /// taken as its last-modified time (see `modified_ms`).
    #[allow(clippy::too_many_arguments)]
    pub fn scan_open(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        offset_floor: i64,
        interval: u32,
        verify_crc: bool,
        now_ms: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Segment, Option<ScanStop>), LogError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = disk
            .open(&path, OpenMode::Existing)
            .context("open", &path)?;
        let file_bytes = file.len().context("size", &path)?;
        let mut segment = Segment {
            base_offset,
            path: path.clone(),
            file: file.clone(),
            size_bytes: 0,
            next_offset: base_offset.max(offset_floor),
            indexes: IndexBuilder::new(base_offset, interval),
            rolling_ms: None,
            modified_ms: now_ms,
            aborted: Vec::new(),
        };
        let mut scan = BatchScan::new(&*file, &path, file_bytes).expecting(segment.next_offset);
        if !verify_crc {
            scan = scan.crc_unverified();
        }
        let stop = loop {
            let item = scan.next_checked(&mut |header| segment.offsets_check(header))?;
            match item {
                ScanItem::End => break None,
                ScanItem::Invalid { position, reason } => {
                    break Some(ScanStop { position, reason })
                }
                ScanItem::Batch { position, batch } => {
                    segment.observe(batch.header(), position);
                    visit(batch.header());
                }
            }
        };
        Ok((segment, stop))
    }

    /// Opens a clean closed segment from its index files, walking only the batch headers after
    /// the last index entry. `None` if an index file is missing or does not match the segment:
    /// the caller then falls back to `scan_open`, which rebuilds it. `now_ms` is taken as its
    /// last-modified time (see `modified_ms`).
    pub fn index_open(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Option<Segment>, LogError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = disk
            .open(&path, OpenMode::Existing)
            .context("open", &path)?;
        let size_bytes = file.len().context("size", &path)?;
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let time_path = segment_path(dir, base_offset, TIME_INDEX_SUFFIX);
        let txn_path = segment_path(dir, base_offset, TXN_INDEX_SUFFIX);
        if !disk.exists(&index_path) || !disk.exists(&time_path) {
            return Ok(None);
        }
        let index_bytes = read_all(disk, &index_path).context("read", &index_path)?;
        let Ok(offsets) = OffsetIndex::decode(&index_bytes, size_bytes) else {
            return Ok(None);
        };
        // Every index entry must name a batch that starts there with that offset; the first is
        // checked here and the last by the walk below.
        let walk_start = offsets.entries().last().copied().unwrap_or_default();
        if let Some(first) = offsets.entries().first() {
            match header_read(&*file, &path, u64::from(first.position), size_bytes)? {
                Ok(header)
                    if header.base_offset == base_offset + i64::from(first.relative_offset) => {}
                _ => return Ok(None),
            }
        }
        let Some(walk) = header_walk(&*file, &path, base_offset, walk_start, size_bytes)? else {
            return Ok(None);
        };
        let time_bytes = read_all(disk, &time_path).context("read", &time_path)?;
        let relative_end = (walk.next_offset - base_offset) as u64;
        let Ok(times) = TimeIndex::decode(&time_bytes, relative_end.max(1)) else {
            return Ok(None);
        };
        // The roll sealed the segment's maximum as the last entry, so no batch may carry a
        // later timestamp. No CRC covers an index file: a misread entry (single-chaos seed 250:
        // a flipped timestamp made a timestamp lookup start at the last batch) is rebuilt.
        if times.timestamp_last() < walk.timestamp_max {
            // `site`: the simulator counts these, so regression seeds can show they meet it.
            tracing::warn!(
                site = "time-index-misread",
                path = %time_path.display(),
                "time index ends below its segment's newest timestamp; rebuilding"
            );
            return Ok(None);
        }
        let timestamp_max = times.timestamp_last().max(walk.timestamp_max);
        let indexes = IndexBuilder::loaded(base_offset, offsets, times, timestamp_max);
        let next_offset = walk.next_offset;
        // Written before the offset index when not empty (`index_files_write`): missing means
        // no aborts.
        let txn_bytes = match disk.exists(&txn_path) {
            true => read_all(disk, &txn_path).context("read", &txn_path)?,
            false => Vec::new(),
        };
        let Ok(aborted) = crate::txn_index::decode(&txn_bytes, base_offset, next_offset) else {
            return Ok(None);
        };
        let segment = Segment {
            base_offset,
            path,
            file,
            size_bytes,
            next_offset,
            indexes,
            rolling_ms: None,
            modified_ms: now_ms,
            aborted,
        };
        // No checksum covers the file: each entry must end at a marker of its producer.
        for entry in &segment.aborted {
            match segment.locate(entry.last_offset)? {
                Some((_, header))
                    if header.base_offset == entry.last_offset
                        && header.is_control()
                        && header.producer_id == entry.producer_id => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(segment))
    }

    /// The offset checks a scanned batch must pass on top of its own validity: offsets only go
    /// up, and stay within `u32` of the segment's base (the index's relative offsets).
    fn offsets_check(&self, header: &BatchHeader) -> Result<(), String> {
        if header.base_offset < self.next_offset {
            return Err(format!(
                "batch at offset {} does not follow offset {}",
                header.base_offset, self.next_offset
            ));
        }
        if header.last_offset() - self.base_offset > i64::from(u32::MAX) {
            return Err(format!(
                "offset {} is too far from the base",
                header.last_offset()
            ));
        }
        Ok(())
    }

    fn observe(&mut self, header: &BatchHeader, position: u64) {
        assert_eq!(position, self.size_bytes);
        let position = u32::try_from(position).expect("segment positions fit u32 (config limit)");
        self.indexes.observe(header, position);
        self.size_bytes += header.size() as u64;
        self.next_offset = header.next_offset();
    }

    /// Appends a placed batch at the end. On a write error the file may hold a partial batch
    /// past `size_bytes`; it is cut off (best effort) and is in any case never read, and the
    /// next append overwrites it.
    /// Planted bug `OffsetReuseAfterRestart`: forget the last offset while keeping its bytes.
    pub(crate) fn planted_forget_last_offset(&mut self) {
        self.next_offset -= 1;
    }

    pub fn append(&mut self, batch: &ValidatedBatch, now_ms: i64) -> Result<(), LogError> {
        assert!(batch.header().base_offset >= self.next_offset);
        if let Err(error) = self.file.write_at(batch.bytes(), self.size_bytes) {
            let _ = self.file.truncate(self.size_bytes);
            return Err(error).context("append", &self.path);
        }
        self.observe(batch.header(), self.size_bytes);
        self.rolling_ms.get_or_insert(now_ms);
        // A wall clock stepped back must not make the segment look older than it is.
        self.modified_ms = self.modified_ms.max(now_ms);
        Ok(())
    }

    /// Cuts the segment at `position` (a batch boundary found by `locate`) and syncs the cut,
    /// then reopens by a scan so sizes and indexes match. Truncation is durable on return and
    /// modifies the file at `now_ms`, as a file system would record it.
    pub fn truncate(
        self,
        disk: &dyn Disk,
        dir: &Path,
        position: u64,
        interval: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        assert!(position <= self.size_bytes);
        self.file
            .truncate(position)
            .context("truncate", &self.path)?;
        self.file.sync_data().context("sync", &self.path)?;
        let (segment, stop) = Segment::scan_open(
            disk,
            dir,
            self.base_offset,
            self.base_offset,
            interval,
            true,
            self.modified_ms.max(now_ms),
            &mut |_| {},
        )?;
        if let Some(stop) = stop {
            return Err(LogError::Corrupt {
                path: self.path,
                position: stop.position,
                reason: stop.reason,
            });
        }
        assert_eq!(segment.size_bytes, position);
        Ok(Segment {
            rolling_ms: self.rolling_ms,
            ..segment
        })
    }

    /// The batch containing `offset`, or the first one after it, within this segment: its
    /// position and header. `None` if every batch here ends below `offset`.
    pub fn locate(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        self.locate_planted(offset, None)
    }

    /// `locate`, with a planted bug that may mislead the index lookup.
    pub fn locate_planted(
        &self,
        offset: i64,
        planted: Option<crate::PlantedBug>,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let entry = match planted {
            #[cfg(feature = "planted-bugs")]
            Some(crate::PlantedBug::IndexLookupOvershoots) => {
                self.indexes.offsets.planted_overshoot(relative)
            }
            _ => self.indexes.offsets.floor(relative),
        };
        let mut position = u64::from(entry.position);
        // Bounded: each step moves forward by a whole batch of at least a header.
        while position < self.size_bytes {
            let header = self.header_at(position)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// The header at `position`, which must be a batch boundary; a bad header there means the
    /// file changed under us (corruption at rest).
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        match header_read(&*self.file, &self.path, position, self.size_bytes)? {
            Ok(header) => Ok(header),
            Err(reason) => Err(LogError::Corrupt {
                path: self.path.clone(),
                position,
                reason,
            }),
        }
    }

    /// A position no batch starting below `offset` extends past: reads bounded by `offset`
    /// need no bytes after it.
    pub fn position_bound(&self, offset: i64) -> u64 {
        if offset >= self.next_offset {
            return self.size_bytes;
        }
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        self.indexes
            .offsets
            .ceiling(relative)
            .map_or(self.size_bytes, |e| u64::from(e.position))
    }

    pub fn read_exact(&self, buffer: &mut [u8], position: u64) -> Result<(), LogError> {
        assert!(position + buffer.len() as u64 <= self.size_bytes);
        self.file
            .read_exact_at(buffer, position)
            .context("read", &self.path)
    }

    /// Marks the segment closed: the final time index entry records its maximum timestamp.
    pub fn seal(&mut self) {
        self.indexes.seal();
    }

    /// Writes the index files atomically (a torn index is never mistaken for a valid one). The
    /// transaction index, written only when some transaction aborted here (as Kafka creates it
    /// lazily), goes first: a segment whose offset index is on disk has it if it needs it.
    pub fn index_files_write(&self, disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
        let files = [
            (TXN_INDEX_SUFFIX, crate::txn_index::encode(&self.aborted)),
            (INDEX_SUFFIX, self.indexes.offsets.encode()),
            (TIME_INDEX_SUFFIX, self.indexes.times.encode()),
        ];
        for (suffix, bytes) in files {
            if suffix == TXN_INDEX_SUFFIX && bytes.is_empty() {
                let path = segment_path(dir, self.base_offset, suffix);
                if disk.exists(&path) {
                    disk.remove_file(&path).context("remove", &path)?;
                }
                continue;
            }
            let path = segment_path(dir, self.base_offset, suffix);
            write_atomic(disk, &path, &bytes).context("write index", &path)?;
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().context("sync", &self.path)
    }

    /// Writes every batch from the one holding `offset` to the end back in place, so the next
    /// sync persists them. Recovery does this before it syncs the tail it will serve: after a
    /// failed fsync the kernel may have marked pages clean that never reached the platter
    /// (fsyncgate), and a process crash keeps those pages readable, so the bytes read back look
    /// whole while no sync will ever write them. A rewritten page is dirty again.
    ///
    /// Writing back is the one place recovery could turn a bit flipped on the way from the disk
    /// into corruption at rest, and the CRC does not cover baseOffset: so a batch is written back
    /// only once two reads of it agree byte for byte and its CRC checks (`SCAN_REREADS` tries).
    /// `verify_crc` is recovery's: false only for the planted bug `RecoverySkipsCrc`, which
    /// skips every CRC check of recovery, this one too.
    pub fn rewrite_from(&self, offset: i64, verify_crc: bool) -> Result<(), LogError> {
        let Some((mut position, _)) = self.locate(offset)? else {
            return Ok(());
        };
        while position < self.size_bytes {
            let size = self.header_at(position)?.size();
            let mut attempt = 1;
            let batch = loop {
                let (mut first, mut second) = (vec![0; size], vec![0; size]);
                self.read_exact(&mut first, position)?;
                self.read_exact(&mut second, position)?;
                let agreed = first == second;
                if agreed && !verify_crc {
                    break bytes::Bytes::from(first);
                }
                match ValidatedBatch::validate(first.into()) {
                    Ok(batch) if agreed => break batch.bytes().clone(),
                    _ if attempt >= crate::scan::SCAN_REREADS => {
                        return Err(LogError::Corrupt {
                            path: self.path.clone(),
                            position,
                            reason: "a batch recovery verified reads back differently".into(),
                        })
                    }
                    _ => {
                        tracing::warn!(
                            site = "rewrite-reread-differs",
                            path = %self.path.display(), position, attempt,
                            "a batch to rewrite read back differently; reading again"
                        );
                        attempt += 1;
                    }
                }
            };
            self.file
                .write_at(&batch, position)
                .context("rewrite", &self.path)?;
            position += size as u64;
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
    pub fn timestamp_max(&self) -> i64 {
        self.indexes.timestamp_max()
    }
    pub fn modified_ms(&self) -> i64 {
        self.modified_ms
    }
    pub fn rolling_ms(&self) -> Option<i64> {
        self.rolling_ms
    }
    pub fn rolling_start(&mut self, now_ms: i64) {
        self.rolling_ms.get_or_insert(now_ms);
    }
    pub fn file(&self) -> &Arc<dyn DiskFile> {
        &self.file
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn time_index(&self) -> &TimeIndex {
        &self.indexes.times
    }
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }
    /// Records an abort whose marker was just appended here.
    pub fn aborted_push(&mut self, entry: AbortedTxn) {
        assert!(entry.last_offset >= self.base_offset && entry.last_offset < self.next_offset);
        assert!(self
            .aborted
            .last()
            .is_none_or(|last| last.last_offset < entry.last_offset));
        self.aborted.push(entry);
    }
    /// Replaces the aborted transactions (a replay rebuilt them).
    pub fn aborted_set(&mut self, aborted: Vec<AbortedTxn>) {
        self.aborted = aborted;
    }
}

/// Removes a segment's files: indexes first, so a crash in between leaves an orphan index
/// (removed by recovery) rather than a log whose stale index survives.
pub(crate) fn segment_files_remove(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
) -> Result<(), LogError> {
    for suffix in [
        INDEX_SUFFIX,
        TIME_INDEX_SUFFIX,
        TXN_INDEX_SUFFIX,
        LOG_SUFFIX,
    ] {
        let path = segment_path(dir, base_offset, suffix);
        if disk.exists(&path) {
            disk.remove_file(&path).context("remove", &path)?;
        }
    }
    Ok(())
}

pub(crate) fn index_files_remove(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
) -> Result<(), LogError> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
        let path = segment_path(dir, base_offset, suffix);
        if disk.exists(&path) {
            disk.remove_file(&path).context("remove", &path)?;
        }
    }
    Ok(())
}

struct Walk {
    next_offset: i64,
    timestamp_max: i64,
}

/// Walks headers from an index entry to the end of the file. `None` unless the first header
/// matches the entry, offsets increase, and the last batch ends exactly at the end of the file.
fn header_walk(
    file: &dyn DiskFile,
    path: &Path,
    base_offset: i64,
    start: OffsetEntry,
    file_bytes: u64,
) -> Result<Option<Walk>, LogError> {
    let mut walk = Walk {
        next_offset: base_offset,
        timestamp_max: TIMESTAMP_NONE,
    };
    let expected_first = base_offset + i64::from(start.relative_offset);
    // Whole, CRC-checked batches (at most an index interval of them), not bare headers: the
    // walk decides the segment's next offset, and a bit flipped in a header on its way from the
    // disk must not move the log end (the simulator's single-crash seed 41 did exactly that).
    let mut scan = BatchScan::new(file, path, file_bytes)
        .starting_at(u64::from(start.position))
        .expecting(expected_first);
    let mut first = true;
    // Bounded: each step consumes a whole batch of at least a header, or stops.
    loop {
        let (next_expected, is_first) = (walk.next_offset, first);
        let item = scan.next_checked(&mut |header| {
            let misplaced = is_first && start.position > 0 && header.base_offset != expected_first;
            match misplaced || header.base_offset < next_expected {
                true => Err(format!(
                    "batch at offset {} is out of place",
                    header.base_offset
                )),
                false => Ok(()),
            }
        })?;
        let header = match item {
            ScanItem::End => return Ok(Some(walk)),
            ScanItem::Invalid { .. } => return Ok(None),
            ScanItem::Batch { batch, .. } => *batch.header(),
        };
        first = false;
        walk.next_offset = header.next_offset();
        walk.timestamp_max = walk.timestamp_max.max(header.max_timestamp);
    }
}
