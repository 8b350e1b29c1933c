//! `DurableStorage`: raft-rs's `Storage` on a `runtime::Disk`.
//!
//! Two files in the node's Raft directory:
//! - `raft.log`, append-only, a sequence of records. Each record is framed as
//!   `len u32 | crc u32 | batch u64 | flags u8 | kind u8 | payload` (little endian; the CRC-32C
//!   covers everything after itself). Kinds: entries (which replace any suffix of the log from
//!   their first index, as Raft's append does), the hard state, the conf state. One `persist`
//!   writes one batch (a number shared by its records, the last one flagged `BATCH_END`) and
//!   syncs it before returning.
//! - `raft.snapshot`, the latest snapshot (metadata and the state machine's bytes), replaced
//!   atomically (`runtime::disk::write_atomic`). Writing one (ours at compaction, or a leader's)
//!   is followed by a rewrite of the log (temporary, sync, rename, directory sync) without the
//!   entries the snapshot makes unnecessary.
//!
//! Recovery reads every record and checks its CRC. A bad record is a torn tail, which a power
//! loss leaves, when nothing synced can follow it: only the last batch is ever unsynced, so a
//! valid record of a later batch behind a bad one proves the bad one was synced, and the log is
//! corrupt: recovery refuses to start rather than serve a log with a hole. Whole batches only
//! count. Recovery ends by rewriting the log it recovered (temporary, sync, rename, directory
//! sync): after a process crash the page cache may hold a batch no sync covered, and what the
//! node serves (a vote, an acknowledgement) must be durable; the torn tail goes with the old
//! file.
//!
//! Recovery then reconciles the log with the snapshot: if the snapshot was written but the log
//! rewrite that follows it was lost, the old log is kept only when it agrees with the snapshot
//! (it holds the snapshot's index with the snapshot's term, or starts right after it), which
//! is the same test raft-rs makes before it installs a snapshot.

use super::planted::RaftBug;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use runtime::{Disk, DiskFile, OpenMode};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const LOG_FILE: &str = "raft.log";
pub const SNAPSHOT_FILE: &str = "raft.snapshot";
/// Bytes before a record's payload: len, crc, batch, flags, kind.
const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 1 + 1;
/// A record larger than this is garbage (a torn length), not a record: refused before reading.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;
const FLAG_BATCH_END: u8 = 1;
const SNAPSHOT_MAGIC: &[u8; 4] = b"GRSN";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Entries = 1,
    HardState = 2,
    ConfState = 3,
}

/// One decoded log record.
#[derive(Debug)]
enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    ConfState(ConfState),
}

#[derive(Debug)]
struct Framed {
    batch: u64,
    batch_end: bool,
    record: Record,
    /// Where the next record starts.
    end: usize,
}

/// Raft's durable state: the log, the hard state, the conf state and the latest snapshot, kept
/// in memory (the metadata log is small and compacted) and on disk.
#[derive(Debug)]
pub struct DurableStorage {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// The log file, opened by the rewrite every `open` ends with.
    file: Option<Arc<dyn DiskFile>>,
    /// Where the next record goes (the end of the valid log).
    log_len: u64,
    /// The batch number of the next `persist`.
    batch_next: u64,
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot; index 0 when there is none.
    snapshot: Snapshot,
    /// The log, consecutive indexes; may start below the snapshot (a retained tail).
    entries: Vec<Entry>,
    planted: Option<RaftBug>,
    /// `SendBeforePersist`: the last batch was written but not synced.
    sync_owed: bool,
    /// Tests: stop after the snapshot file, before the log rewrite (a crash between the two).
    #[cfg(test)]
    interrupt_before_rewrite: bool,
}

fn corrupt(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl DurableStorage {
    /// Opens (recovering) the Raft state in `dir`, or bootstraps it with `voters` when `dir`
    /// holds none. Refuses (InvalidData) a log corrupt before its tail or a corrupt snapshot.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        voters: &[u64],
        planted: Option<RaftBug>,
    ) -> io::Result<DurableStorage> {
        assert!(!voters.is_empty(), "a Raft group needs voters");
        if !disk.is_dir(dir) {
            disk.create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                disk.sync_dir(parent)?;
            }
        }
        // A rename a process crash left in the page cache (a snapshot's, a log rewrite's) is
        // made durable before the state it names is served.
        disk.sync_dir(dir)?;
        let snapshot = snapshot_load(&*disk, &dir.join(SNAPSHOT_FILE))?;
        let path = dir.join(LOG_FILE);
        let mut storage = DurableStorage {
            disk,
            dir: dir.to_path_buf(),
            file: None,
            log_len: 0,
            batch_next: 1,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: snapshot.unwrap_or_default(),
            entries: Vec::new(),
            planted,
            sync_owed: false,
            #[cfg(test)]
            interrupt_before_rewrite: false,
        };
        if storage.disk.exists(&path) {
            storage.replay(&path)?;
        }
        storage.reconcile()?;
        if storage.conf_state.voters.is_empty() {
            // An empty directory (or a bootstrap a crash cut short): every node starts from the
            // same configuration, which is what raft-rs asks of a group without a snapshot.
            storage.conf_state = ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            };
        }
        let mut stored = storage.conf_state.voters.clone();
        let mut configured = voters.to_vec();
        stored.sort_unstable();
        configured.sort_unstable();
        if stored != configured {
            // Membership is `--voters`, fixed: a different list is a misconfiguration, and
            // running with it would make a quorum of nodes that never agreed on it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raft state in {} has voters {stored:?}, configured {configured:?}; \
                     membership changes are not supported",
                    storage.dir.display()
                ),
            ));
        }
        // What was read may be only in the page cache (the batch a process crash interrupted
        // before its sync, or bytes a failed sync left clean but never written): rewritten and
        // synced, what the node now serves is durable, and the torn tail is gone with the old
        // file.
        storage.rewrite()?;
        Ok(storage)
    }

    /// Reads every record of the log into memory, batch by batch (a batch counts only when its
    /// last record is read), and cuts a torn tail: an incomplete last batch.
    fn replay(&mut self, path: &Path) -> io::Result<()> {
        let bytes = runtime::disk::read_all_stable(&*self.disk, path)?;
        let mut at = 0;
        let mut batch_start = 0;
        let mut pending = Vec::new();
        let mut last: Option<(u64, bool)> = None;
        while at < bytes.len() {
            let Some(framed) = record_decode(&bytes, at) else {
                self.tail_check(&bytes, at, last)?;
                break;
            };
            if let Some((batch, false)) = last {
                if framed.batch != batch {
                    return Err(corrupt(format!(
                        "raft log {}: batch {batch} interrupted by batch {} at byte {at}",
                        path.display(),
                        framed.batch
                    )));
                }
            }
            pending.push(framed.record);
            last = Some((framed.batch, framed.batch_end));
            self.batch_next = self.batch_next.max(framed.batch + 1);
            at = framed.end;
            if framed.batch_end {
                for record in pending.drain(..) {
                    self.record_apply(record).map_err(|error| {
                        corrupt(format!("raft log {}: {error}", path.display()))
                    })?;
                }
                batch_start = at;
            }
        }
        if batch_start < bytes.len() {
            tracing::warn!(
                "raft log {}: torn tail of {} bytes at {batch_start} dropped",
                path.display(),
                bytes.len() - batch_start
            );
        }
        Ok(())
    }

    fn record_apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entries(entries) => entries_splice(&mut self.entries, entries)?,
            Record::HardState(hard_state) => self.hard_state = hard_state,
            Record::ConfState(conf_state) => self.conf_state = conf_state,
        }
        Ok(())
    }

    /// Errors if the bad record at `at` is not a torn tail: a valid record of a batch written
    /// after the bad record's own batch lies behind it.
    fn tail_check(&self, bytes: &[u8], at: usize, last: Option<(u64, bool)>) -> io::Result<()> {
        // The bad record belongs to the last valid record's batch, unless that batch ended.
        let bad_batch = match last {
            None => 0,
            Some((batch, true)) => batch + 1,
            Some((batch, false)) => batch,
        };
        for start in at + 1..bytes.len() {
            if !header_plausible(bytes, start, bad_batch) {
                continue;
            }
            if let Some(framed) = record_decode(bytes, start) {
                if framed.batch > bad_batch {
                    return Err(corrupt(format!(
                        "raft log {}: bad record at byte {at} before a valid record of a later \
                         batch ({}) at byte {start}: the log is corrupt, not torn; refusing to \
                         start",
                        self.dir.join(LOG_FILE).display(),
                        framed.batch
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes the log agree with the snapshot after a crash between the two (see module doc).
    fn reconcile(&mut self) -> io::Result<()> {
        let index = self.snapshot.get_metadata().index;
        if index == 0 {
            return Ok(());
        }
        let term = self.snapshot.get_metadata().term;
        let agrees = match self.entries.first() {
            None => true,
            Some(first) if first.index == index + 1 => true,
            Some(first) if first.index <= index => self
                .entries
                .get((index - first.index) as usize)
                .is_some_and(|entry| entry.term == term),
            Some(_) => false,
        };
        if !agrees {
            self.entries.clear();
        }
        if self
            .snapshot
            .get_metadata()
            .get_conf_state()
            .voters
            .is_empty()
        {
            return Err(corrupt(format!(
                "raft snapshot in {} has no voters",
                self.dir.display()
            )));
        }
        self.conf_state = self.snapshot.get_metadata().get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(term);
        self.hard_state.commit = self.hard_state.commit.max(index);
        let last = self.last();
        if self.hard_state.commit > last {
            return Err(corrupt(format!(
                "raft state in {}: commit index {} beyond the last entry {last}",
                self.dir.display(),
                self.hard_state.commit
            )));
        }
        Ok(())
    }

    /// Writes the ready's entries and hard state as one batch and syncs it.
    pub fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> io::Result<()> {
        let mut records = Vec::new();
        if let Some(first) = entries.first() {
            let snapshot_index = self.snapshot.get_metadata().index;
            if self.entries.is_empty() && first.index != snapshot_index + 1 {
                return Err(io::Error::other(format!(
                    "entries from {} leave a gap after the snapshot at {snapshot_index}",
                    first.index
                )));
            }
            splice_check(&self.entries, entries).map_err(io::Error::other)?;
            records.push(Record::Entries(entries.to_vec()));
        }
        if let Some(hard_state) = hard_state {
            records.push(Record::HardState(hard_state.clone()));
        }
        if records.is_empty() {
            return Ok(());
        }
        let sync = !RaftBug::active(self.planted, RaftBug::SendBeforePersist);
        self.write_batch(&records, sync)?;
        for record in records {
            self.record_apply(record).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Writes a hard state that differs from the stored one only in its commit index, without
    /// a sync (raft-rs's `must_sync` is false for it: a commit index need not be durable). The
    /// next batch syncs it first, so at most one batch is ever unsynced, which is what the
    /// torn-tail rule of recovery relies on.
    pub fn persist_commit(&mut self, hard_state: &HardState) -> io::Result<()> {
        assert_eq!(
            (hard_state.term, hard_state.vote),
            (self.hard_state.term, self.hard_state.vote),
            "only a commit index may be written lazily"
        );
        self.write_batch(&[Record::HardState(hard_state.clone())], false)?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    /// `persist` without the sync: the state a crash in the middle of one leaves.
    #[cfg(test)]
    fn persist_unsynced(&mut self, entries: &[Entry], hard_state: &HardState) -> io::Result<()> {
        let records = [
            Record::Entries(entries.to_vec()),
            Record::HardState(hard_state.clone()),
        ];
        self.write_batch(&records, false)
    }

    /// The commit index a light ready reports: kept in memory, written with the next hard state
    /// (a commit index need not be durable; raft-rs learns it again from the leader).
    pub fn commit_set(&mut self, commit: u64) {
        assert!(commit <= self.last(), "commit {commit} past the log");
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Installs a leader's snapshot: the snapshot file, then a log of no entries.
    pub fn snapshot_install(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        let metadata = snapshot.get_metadata();
        assert!(
            metadata.index >= self.hard_state.commit,
            "a snapshot below the commit index"
        );
        snapshot_store(&*self.disk, &self.dir.join(SNAPSHOT_FILE), snapshot)?;
        self.snapshot = snapshot.clone();
        self.entries.clear();
        self.conf_state = metadata.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = metadata.index;
        self.rewrite()
    }

    /// Takes a snapshot of the state machine at `applied` and compacts the log, keeping the
    /// `keep` entries at and below `applied` for followers that are only a little behind.
    pub fn compact(&mut self, applied: u64, data: Vec<u8>, keep: u64) -> io::Result<()> {
        assert!(
            applied <= self.hard_state.commit,
            "a snapshot of uncommitted entries"
        );
        if applied <= self.snapshot.get_metadata().index {
            return Ok(());
        }
        let term = self
            .term(applied)
            .map_err(|error| io::Error::other(format!("snapshot at {applied}: {error}")))?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = term;
        metadata.set_conf_state(self.conf_state.clone());
        snapshot_store(&*self.disk, &self.dir.join(SNAPSHOT_FILE), &snapshot)?;
        self.snapshot = snapshot;
        let first_kept = (applied + 1).saturating_sub(keep);
        self.entries.retain(|entry| entry.index >= first_kept);
        self.rewrite()
    }

    /// Replaces the log file by one batch holding the current state.
    fn rewrite(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.interrupt_before_rewrite {
            return Ok(());
        }
        let records = [
            Record::ConfState(self.conf_state.clone()),
            Record::HardState(self.hard_state.clone()),
            Record::Entries(self.entries.clone()),
        ];
        let bytes = batch_encode(self.batch_next, &records)?;
        self.batch_next += 1;
        let path = self.dir.join(LOG_FILE);
        let temporary = self.dir.join(format!("{LOG_FILE}.tmp"));
        let file = self.disk.open(&temporary, OpenMode::Create)?;
        file.truncate(0)?;
        file.write_at(&bytes, 0)?;
        file.sync_data()?;
        self.disk.rename(&temporary, &path)?;
        self.disk.sync_dir(&self.dir)?;
        self.file = Some(self.disk.open(&path, OpenMode::Existing)?);
        self.log_len = bytes.len() as u64;
        self.sync_owed = false;
        Ok(())
    }

    /// Appends one batch; syncs it unless `sync` is false (then the next batch syncs both).
    fn write_batch(&mut self, records: &[Record], sync: bool) -> io::Result<()> {
        let bytes = batch_encode(self.batch_next, records)?;
        let file = self.file.as_ref().expect("open rewrites the log");
        if self.sync_owed {
            file.sync_data()?;
            self.sync_owed = false;
        }
        file.write_at(&bytes, self.log_len)?;
        // Written, not yet synced: the simulator aims power losses here (a moment later), the
        // window in which a node that sent messages before its sync would lose what it promised.
        runtime::buggify::hit(&*self.disk, runtime::buggify::Site::RaftWritten);
        if sync {
            file.sync_data()?;
        } else {
            self.sync_owed = true;
        }
        self.log_len += bytes.len() as u64;
        self.batch_next += 1;
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The latest snapshot (index 0 if none).
    pub fn snapshot_latest(&self) -> &Snapshot {
        &self.snapshot
    }

    fn first(&self) -> u64 {
        match self.entries.first() {
            Some(entry) => entry.index,
            None => self.snapshot.get_metadata().index + 1,
        }
    }

    fn last(&self) -> u64 {
        match self.entries.last() {
            Some(entry) => entry.index,
            None => self.snapshot.get_metadata().index,
        }
    }
}

impl Storage for DurableStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let metadata = self.snapshot.get_metadata();
        if index == metadata.index {
            return Ok(metadata.term);
        }
        if index < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<raft::eraftpb::Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// Raft's append: `new` replaces the suffix of `log` from its first index.
fn entries_splice(log: &mut Vec<Entry>, new: Vec<Entry>) -> Result<(), String> {
    splice_check(log, &new)?;
    let Some(first_new) = new.first() else {
        return Ok(());
    };
    if let Some(first) = log.first() {
        let keep = (first_new.index - first.index) as usize;
        log.truncate(keep);
    }
    log.extend(new);
    Ok(())
}

/// Whether `new` (consecutive) can replace a suffix of `log` or extend it.
fn splice_check(log: &[Entry], new: &[Entry]) -> Result<(), String> {
    let Some(first_new) = new.first() else {
        return Ok(());
    };
    for pair in new.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(format!(
                "entries not consecutive: {} after {}",
                pair[1].index, pair[0].index
            ));
        }
    }
    let index = first_new.index;
    if let (Some(first), Some(last)) = (log.first(), log.last()) {
        if index < first.index || index > last.index + 1 {
            return Err(format!(
                "entries from {index} do not continue a log of {}..={}",
                first.index, last.index
            ));
        }
    }
    Ok(())
}

/// Encodes `records` as one batch. Entries are split into as many records as the payload
/// limit needs; an entry that cannot fit in one is refused.
fn batch_encode(batch: u64, records: &[Record]) -> io::Result<Vec<u8>> {
    let mut payloads: Vec<(Kind, Vec<u8>)> = Vec::new();
    for record in records {
        match record {
            Record::Entries(entries) => {
                let mut payload = Vec::new();
                for entry in entries {
                    let bytes = entry.write_to_bytes().map_err(io::Error::other)?;
                    if 4 + bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
                        return Err(io::Error::other(format!(
                            "raft entry {} of {} bytes is over the record limit",
                            entry.index,
                            bytes.len()
                        )));
                    }
                    if payload.len() + 4 + bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
                        payloads.push((Kind::Entries, std::mem::take(&mut payload)));
                    }
                    payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    payload.extend_from_slice(&bytes);
                }
                payloads.push((Kind::Entries, payload));
            }
            Record::HardState(hard_state) => payloads.push((
                Kind::HardState,
                hard_state.write_to_bytes().map_err(io::Error::other)?,
            )),
            Record::ConfState(conf_state) => payloads.push((
                Kind::ConfState,
                conf_state.write_to_bytes().map_err(io::Error::other)?,
            )),
        }
    }
    let mut out = Vec::new();
    let count = payloads.len();
    for (position, (kind, payload)) in payloads.into_iter().enumerate() {
        assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
        let flags = if position + 1 == count {
            FLAG_BATCH_END
        } else {
            0
        };
        let start = out.len();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&batch.to_le_bytes());
        out.push(flags);
        out.push(kind as u8);
        out.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(out)
}

/// Whether a record header at `at` could start a record of a batch after `batch`: a cheap
/// filter before the CRC, for the scan behind a bad record.
fn header_plausible(bytes: &[u8], at: usize, batch: u64) -> bool {
    let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
        return false;
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let record_batch = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    len <= bytes.len() - at - RECORD_HEADER_BYTES
        && record_batch > batch
        && header[16] <= FLAG_BATCH_END
        && (Kind::Entries as u8..=Kind::ConfState as u8).contains(&header[17])
}

/// The record at `at`, or None if it is not a whole, valid one.
fn record_decode(bytes: &[u8], at: usize) -> Option<Framed> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let end = at + RECORD_HEADER_BYTES + len;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if crc32c::crc32c(bytes.get(at + 8..end)?) != crc {
        return None;
    }
    let batch = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let flags = header[16];
    let payload = &bytes[at + RECORD_HEADER_BYTES..end];
    let record = match header[17] {
        k if k == Kind::Entries as u8 => Record::Entries(entries_decode(payload)?),
        k if k == Kind::HardState as u8 => {
            Record::HardState(HardState::parse_from_bytes(payload).ok()?)
        }
        k if k == Kind::ConfState as u8 => {
            Record::ConfState(ConfState::parse_from_bytes(payload).ok()?)
        }
        _ => return None,
    };
    Some(Framed {
        batch,
        batch_end: flags & FLAG_BATCH_END != 0,
        record,
        end,
    })
}

fn entries_decode(mut payload: &[u8]) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    while !payload.is_empty() {
        let len = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
        let bytes = payload.get(4..4usize.checked_add(len)?)?;
        entries.push(Entry::parse_from_bytes(bytes).ok()?);
        payload = &payload[4 + len..];
    }
    Some(entries)
}

/// `magic | len u32 | crc u32 | Snapshot`, written atomically.
fn snapshot_store(disk: &dyn Disk, path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let body = snapshot.write_to_bytes().map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(body.len() + 12);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    runtime::disk::write_atomic(disk, path, &bytes)
}

/// The stored snapshot, None if there is none; InvalidData if it is corrupt (it was synced
/// before it was renamed into place, so a bad one is damage at rest, not a torn write).
fn snapshot_load(disk: &dyn Disk, path: &Path) -> io::Result<Option<Snapshot>> {
    if !disk.exists(path) {
        return Ok(None);
    }
    let bytes = runtime::disk::read_all_stable(disk, path)?;
    let bad = |why: &str| corrupt(format!("raft snapshot {}: {why}", path.display()));
    if bytes.len() < 12 || &bytes[0..4] != SNAPSHOT_MAGIC {
        return Err(bad("no snapshot header"));
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body = &bytes[12..];
    if body.len() != len || crc32c::crc32c(body) != crc {
        return Err(bad("length or CRC mismatch"));
    }
    let snapshot = Snapshot::parse_from_bytes(body).map_err(|_| bad("undecodable"))?;
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests;
