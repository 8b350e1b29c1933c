//! `MemDisk`: an in-memory `Disk` that models a page cache and a journaling file system, so tests
//! and the simulator can crash a node and see exactly what a real disk could have kept.
//!
//! Model. Each file keeps `cached` bytes (what the running process reads) and `durable` bytes (what
//! survives a crash); `sync_data` copies the first to the second. Namespace operations go to an
//! ordered journal; `sync_dir` commits the journal up to the last operation touching that directory.
//!
//! Two kinds of crash:
//! - `crash_process` (SIGKILL, OOM kill, panic): the kernel keeps the page cache, so nothing is
//!   lost; unsynced bytes and namespace changes stay readable and stay unsynced, for a later
//!   sync to make durable or a later power loss to drop.
//! - `crash` (power loss): what was synced survives. With `Tear`, the kernel had already written
//!   back a random subset of the dirty state: each unsynced 512-byte sector comes from the old or
//!   the new contents, the length is the old, the new or in between, and each uncommitted journal
//!   entry survives or not, except that an entry is lost whenever an earlier one on the same path
//!   (or a parent or child of it) was. Lost writes, torn writes and holes; never invented bytes.
//!
//! A failed fdatasync (`MemFile::sync_fail`, the simulator's injected EIO) behaves as Linux's
//! does since fsyncgate: the kernel wrote back some of the dirty sectors and marked the rest
//! clean although they never reached the platter. Those stale sectors read back the new bytes
//! until a power loss, which shows what the platter holds; a later sync does not write them, only
//! a later write to the same sector makes it dirty again.
//!
//! Handles opened before either crash fail afterwards, as a dead process's file descriptors would.
//! A disk set full (`full_set`) refuses, with ENOSPC and writing nothing, every write that would
//! need a new block: one that extends a file. Overwrites in place, truncation, removal, renames
//! and syncs still work, as on a real file system with no free blocks.

use super::{Disk, DiskFile, OpenMode};
use rand::{Rng, RngCore};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit a crash tears at: a disk sector.
pub const SECTOR_BYTES: usize = 512;

/// What a crash does to unsynced state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashOptions {
    /// Every unsynced byte and namespace change is lost; synced state is intact.
    LoseUnsynced,
    /// Unsynced sectors and journal entries each survive or not at random (torn writes).
    Tear,
}

#[derive(Debug, Default)]
struct FileData {
    cached: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors the kernel marked clean after a failed sync without writing them back: `cached`
    /// holds bytes there that no sync will persist until a write dirties the sector again.
    stale: BTreeSet<usize>,
}

impl FileData {
    /// The bytes the platter holds for sector `index`, as long as `len` asks (zeros past its end).
    fn durable_sector(&self, index: usize, len: usize) -> Vec<u8> {
        let start = index * SECTOR_BYTES;
        (start..start + len)
            .map(|at| self.durable.get(at).copied().unwrap_or(0))
            .collect()
    }

    /// What a sync writes: the cache, except stale sectors, which keep the platter's bytes.
    fn sync(&mut self) {
        let mut durable = self.cached.clone();
        for &index in &self.stale {
            let start = index * SECTOR_BYTES;
            if start >= durable.len() {
                continue;
            }
            let len = SECTOR_BYTES.min(durable.len() - start);
            durable[start..start + len].copy_from_slice(&self.durable_sector(index, len));
        }
        self.durable = durable;
    }

    /// A write or truncation touched `start..end`: those sectors are dirty (or gone) again.
    fn stale_forget(&mut self, start: usize, end: usize) {
        let (first, last) = (start / SECTOR_BYTES, end.div_ceil(SECTOR_BYTES));
        self.stale.retain(|index| *index < first || *index >= last);
    }
}

type Inode = Arc<Mutex<FileData>>;

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File(Inode),
}

#[derive(Debug, Clone)]
enum JournalOp {
    Insert { path: PathBuf, entry: Entry },
    Remove { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
    RemoveTree { path: PathBuf },
}

type Namespace = BTreeMap<PathBuf, Entry>;

#[derive(Debug, Default)]
struct State {
    generation: u64,
    namespace: Namespace,
    namespace_durable: Namespace,
    journal: Vec<JournalOp>,
    /// No free space: writes that extend a file fail with `StorageFull`.
    full: bool,
}

/// The in-memory disk. Clone the `Arc` to share it across a node's restarts.
#[derive(Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

/// An open file of a `MemDisk`.
#[derive(Debug)]
pub struct MemFile {
    inode: Inode,
    generation: u64,
    state: Arc<Mutex<State>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not hide the disk from the test that is reporting it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn is_root(path: &Path) -> bool {
    path.as_os_str().is_empty() || path == Path::new("/") || path == Path::new(".")
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn journal_apply(namespace: &mut Namespace, op: &JournalOp) {
    match op {
        JournalOp::Insert { path, entry } => {
            namespace.insert(path.clone(), entry.clone());
        }
        JournalOp::Remove { path } => {
            namespace.remove(path);
        }
        JournalOp::Rename { from, to } => {
            if let Some(entry) = namespace.remove(from) {
                namespace.insert(to.clone(), entry);
            }
        }
        JournalOp::RemoveTree { path } => namespace.retain(|name, _| !name.starts_with(path)),
    }
}

fn journal_touches(op: &JournalOp, dir: &Path) -> bool {
    match op {
        JournalOp::Insert { path, .. } | JournalOp::Remove { path } => parent_of(path) == dir,
        JournalOp::Rename { from, to } => parent_of(from) == dir || parent_of(to) == dir,
        JournalOp::RemoveTree { path } => parent_of(path) == dir || path == dir,
    }
}

impl MemDisk {
    pub fn new() -> Arc<MemDisk> {
        Arc::new(MemDisk::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Fills the disk (`true`) or frees space again; survives crashes, as a full disk does.
    pub fn full_set(&self, full: bool) {
        self.state().full = full;
    }

    /// Simulates a process crash: the page cache survives, only the open handles die.
    pub fn crash_process(&self) {
        self.state().generation += 1;
    }

    /// Simulates power loss: see the module doc for what survives.
    pub fn crash(&self, options: CrashOptions, rng: &mut dyn RngCore) {
        let mut state = self.state();
        state.generation += 1;
        let journal = std::mem::take(&mut state.journal);
        let mut namespace = std::mem::take(&mut state.namespace_durable);
        if options == CrashOptions::Tear {
            for op in journal_written_back(&journal, rng) {
                journal_apply(&mut namespace, op);
            }
        }
        for entry in namespace.values() {
            if let Entry::File(inode) = entry {
                file_crash(&mut lock(inode), options, rng);
            }
        }
        state.namespace = namespace.clone();
        state.namespace_durable = namespace;
    }

    /// Flips one bit of a file's contents, cached and durable alike: corruption at rest.
    pub fn flip_bit(&self, path: &Path, bit_position: u64) -> io::Result<()> {
        let state = self.state();
        let Some(Entry::File(inode)) = state.namespace.get(path) else {
            return Err(not_found(path));
        };
        let mut guard = lock(inode);
        let data = &mut *guard;
        let byte = usize::try_from(bit_position / 8).map_err(io::Error::other)?;
        let mask = 1u8 << (bit_position % 8);
        for contents in [&mut data.cached, &mut data.durable] {
            if let Some(value) = contents.get_mut(byte) {
                *value ^= mask;
            }
        }
        Ok(())
    }

    /// Every file and its cached length, for tests and traces.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let state = self.state();
        state
            .namespace
            .iter()
            .filter_map(|(path, entry)| match entry {
                Entry::File(inode) => Some((path.clone(), lock(inode).cached.len() as u64)),
                Entry::Dir => None,
            })
            .collect()
    }

    fn journal_push(state: &mut State, op: JournalOp) {
        journal_apply(&mut state.namespace, &op);
        state.journal.push(op);
    }

    fn parent_check(state: &State, path: &Path) -> io::Result<()> {
        let parent = parent_of(path);
        match state.namespace.get(parent) {
            Some(Entry::Dir) => Ok(()),
            _ if is_root(parent) => Ok(()),
            _ => Err(not_found(parent)),
        }
    }
}

/// The paths an operation changes.
fn journal_paths(op: &JournalOp) -> Vec<&Path> {
    match op {
        JournalOp::Insert { path, .. }
        | JournalOp::Remove { path }
        | JournalOp::RemoveTree { path } => vec![path],
        JournalOp::Rename { from, to } => vec![from, to],
    }
}

/// A random subset of uncommitted operations that a kernel may have written back: each survives
/// at random, but never after an earlier operation on a related path (the same, a parent or a
/// child) was lost, since a file system does not apply a change to a name it has not created.
fn journal_written_back<'a>(journal: &'a [JournalOp], rng: &mut dyn RngCore) -> Vec<&'a JournalOp> {
    let mut lost: Vec<&Path> = Vec::new();
    let mut kept = Vec::new();
    for op in journal {
        let paths = journal_paths(op);
        let related = paths.iter().any(|path| {
            lost.iter()
                .any(|gone| path.starts_with(gone) || gone.starts_with(path))
        });
        if !related && rng.gen_bool(0.5) {
            kept.push(op);
        } else {
            lost.extend(paths);
        }
    }
    kept
}

fn file_crash(data: &mut FileData, options: CrashOptions, rng: &mut dyn RngCore) {
    // Stale sectors are clean to the kernel: it never writes them back, torn or not.
    let stale = std::mem::take(&mut data.stale);
    for &index in &stale {
        let start = index * SECTOR_BYTES;
        if start < data.cached.len() {
            let len = SECTOR_BYTES.min(data.cached.len() - start);
            let platter = data.durable_sector(index, len);
            data.cached[start..start + len].copy_from_slice(&platter);
        }
    }
    if options == CrashOptions::LoseUnsynced || data.cached == data.durable {
        data.cached = data.durable.clone();
        return;
    }
    let (len_old, len_new) = (data.durable.len(), data.cached.len());
    let len = match rng.gen_range(0..3) {
        0 => len_old,
        1 => len_new,
        _ => rng.gen_range(len_old.min(len_new)..=len_old.max(len_new)),
    };
    let mut contents = vec![0; len];
    for (index, sector) in contents.chunks_mut(SECTOR_BYTES).enumerate() {
        let start = index * SECTOR_BYTES;
        let source = if rng.gen_bool(0.5) {
            &data.cached
        } else {
            &data.durable
        };
        for (offset, byte) in sector.iter_mut().enumerate() {
            *byte = source.get(start + offset).copied().unwrap_or(0);
        }
    }
    data.durable = contents.clone();
    data.cached = contents;
}

impl MemDisk {
    /// `Disk::open`, typed: the simulator's disk wraps the file to inject failed syncs.
    pub fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<MemFile>> {
        let mut state = self.state();
        let inode = match (state.namespace.get(path), mode) {
            (Some(Entry::Dir), _) => {
                return Err(io::Error::other(format!(
                    "{}: is a directory",
                    path.display()
                )))
            }
            (Some(Entry::File(_)), OpenMode::CreateNew) => {
                let message = format!("{}: already exists", path.display());
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
            }
            (Some(Entry::File(inode)), _) => inode.clone(),
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, OpenMode::Create | OpenMode::CreateNew) => {
                MemDisk::parent_check(&state, path)?;
                let inode = Inode::default();
                let entry = Entry::File(inode.clone());
                MemDisk::journal_push(
                    &mut state,
                    JournalOp::Insert {
                        path: path.into(),
                        entry,
                    },
                );
                inode
            }
        };
        Ok(Arc::new(MemFile {
            inode,
            generation: state.generation,
            state: self.state.clone(),
        }))
    }
}

impl Disk for MemDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        Ok(self.open_file(path, mode)?)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|dir| !is_root(dir) && !state.namespace.contains_key(*dir))
            .collect();
        missing.reverse();
        for dir in missing {
            let op = JournalOp::Insert {
                path: dir.into(),
                entry: Entry::Dir,
            };
            MemDisk::journal_push(&mut state, op);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state();
        if !is_root(dir) && !matches!(state.namespace.get(dir), Some(Entry::Dir)) {
            return Err(not_found(dir));
        }
        Ok(state
            .namespace
            .keys()
            .filter(|path| parent_of(path) == dir)
            .cloned()
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        is_root(path) || self.state().namespace.contains_key(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || matches!(self.state().namespace.get(path), Some(Entry::Dir))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.namespace.contains_key(from) {
            return Err(not_found(from));
        }
        MemDisk::parent_check(&state, to)?;
        MemDisk::journal_push(
            &mut state,
            JournalOp::Rename {
                from: from.into(),
                to: to.into(),
            },
        );
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        match state.namespace.get(path) {
            Some(Entry::File(_)) => {}
            Some(Entry::Dir) => return Err(io::Error::other("is a directory")),
            None => return Err(not_found(path)),
        }
        MemDisk::journal_push(&mut state, JournalOp::Remove { path: path.into() });
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.namespace.contains_key(path) {
            return Err(not_found(path));
        }
        MemDisk::journal_push(&mut state, JournalOp::RemoveTree { path: path.into() });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        let Some(last) = state
            .journal
            .iter()
            .rposition(|op| journal_touches(op, dir))
        else {
            return Ok(());
        };
        let committed: Vec<JournalOp> = state.journal.drain(..=last).collect();
        for op in &committed {
            journal_apply(&mut state.namespace_durable, op);
        }
        Ok(())
    }
}

impl MemFile {
    /// A failed fdatasync (see the module doc): each dirty sector was written back or not at
    /// random, and the kernel marked every one clean. The caller reports the error.
    pub fn sync_fail(&self, rng: &mut dyn RngCore) -> io::Result<()> {
        let mut data = self.data()?;
        let data = &mut *data;
        let len = data.cached.len();
        let mut durable = vec![0; len];
        for (index, sector) in durable.chunks_mut(SECTOR_BYTES).enumerate() {
            let start = index * SECTOR_BYTES;
            let cached = &data.cached[start..start + sector.len()];
            let platter = data.durable_sector(index, sector.len());
            let stale = data.stale.contains(&index);
            if !stale && (cached == platter.as_slice() || rng.gen_bool(0.5)) {
                sector.copy_from_slice(cached);
            } else {
                sector.copy_from_slice(&platter);
                if cached != platter.as_slice() {
                    data.stale.insert(index);
                }
            }
        }
        data.durable = durable;
        Ok(())
    }

    fn data(&self) -> io::Result<MutexGuard<'_, FileData>> {
        if lock(&self.state).generation != self.generation {
            return Err(io::Error::other(
                "stale file handle: the disk crashed since it was opened",
            ));
        }
        Ok(lock(&self.inode))
    }
}

impl DiskFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data()?.cached.len() as u64)
    }

    fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        let data = self.data()?;
        let start = usize::try_from(position)
            .map_err(io::Error::other)?
            .min(data.cached.len());
        let count = buffer.len().min(data.cached.len() - start);
        buffer[..count].copy_from_slice(&data.cached[start..start + count]);
        Ok(count)
    }

    fn write_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        let full = lock(&self.state).full;
        let mut data = self.data()?;
        let start = usize::try_from(position).map_err(io::Error::other)?;
        let end = start + bytes.len();
        if full && end > data.cached.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (MemDisk is full)",
            ));
        }
        if data.cached.len() < end {
            data.cached.resize(end, 0);
        }
        data.cached[start..end].copy_from_slice(bytes);
        data.stale_forget(start, end);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut data = self.data()?;
        let old_len = data.cached.len();
        data.cached.resize(len, 0);
        data.stale_forget(len.min(old_len), usize::MAX);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.data()?.sync();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn full_disk_refuses_growth_only_and_write_atomic_leaves_no_temporary() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("d")).unwrap();
        let file = disk.open(Path::new("d/f"), OpenMode::Create).unwrap();
        file.write_at(b"abcd", 0).unwrap();
        disk.full_set(true);
        let error = file.write_at(b"e", 4).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.len().unwrap(), 4, "nothing written");
        file.write_at(b"X", 1).unwrap();
        file.truncate(2).unwrap();
        let error = crate::disk::write_atomic(&*disk, Path::new("d/g"), b"new").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(
            !disk.exists(Path::new("d/g.tmp")),
            "the temporary is removed"
        );
        disk.full_set(false);
        crate::disk::write_atomic(&*disk, Path::new("d/g"), b"new").unwrap();
        assert_eq!(
            crate::disk::read_all(&*disk, Path::new("d/f")).unwrap(),
            b"aX"
        );
    }

    /// fsyncgate: after a failed sync, unwritten sectors read back new bytes, survive a process
    /// crash and a later successful sync as far as reads go, and are lost to a power loss; only
    /// writing them again makes a sync persist them.
    #[test]
    fn a_failed_sync_leaves_clean_sectors_that_no_sync_persists() {
        let path = Path::new("a.log");
        let old = vec![1u8; 2 * SECTOR_BYTES];
        let new = vec![2u8; 2 * SECTOR_BYTES];
        let mut rng = rng();
        let (mut lost, mut rewritten) = (0, 0);
        for _ in 0..32 {
            let disk = MemDisk::new();
            let file = disk.open_file(path, OpenMode::CreateNew).unwrap();
            disk.sync_dir(Path::new("")).unwrap();
            file.write_at(&old, 0).unwrap();
            file.sync_data().unwrap();
            file.write_at(&new, 0).unwrap();
            file.sync_fail(&mut rng).unwrap();
            disk.crash_process();
            let file = disk.open_file(path, OpenMode::Existing).unwrap();
            let mut read = vec![0; new.len()];
            file.read_at(&mut read, 0).unwrap();
            assert_eq!(read, new, "the page cache serves the new bytes");
            file.sync_data().unwrap();
            // Rewriting the second sector dirties it again: that one a sync does persist.
            file.write_at(&new[SECTOR_BYTES..], SECTOR_BYTES as u64)
                .unwrap();
            file.sync_data().unwrap();
            disk.crash(CrashOptions::LoseUnsynced, &mut rng);
            let platter = super::super::read_all(&*disk, path).unwrap();
            assert_eq!(platter[SECTOR_BYTES..], new[SECTOR_BYTES..]);
            match &platter[..SECTOR_BYTES] {
                first if first == &old[..SECTOR_BYTES] => lost += 1,
                first => assert_eq!(first, &new[..SECTOR_BYTES], "never invented"),
            }
            rewritten += 1;
        }
        assert!(
            lost > 0 && lost < rewritten,
            "written back or not at random: {lost}"
        );
    }

    #[test]
    fn synced_bytes_survive_and_unsynced_are_lost() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("data/t-0")).unwrap();
        disk.sync_dir(Path::new("data")).unwrap();
        disk.sync_dir(Path::new("data/t-0")).unwrap();
        let file = disk
            .open(Path::new("data/t-0/a.log"), OpenMode::CreateNew)
            .unwrap();
        disk.sync_dir(Path::new("data/t-0")).unwrap();
        file.append(b"hello").unwrap();
        file.sync_data().unwrap();
        file.append(b" world").unwrap();
        disk.crash(CrashOptions::LoseUnsynced, &mut rng());
        assert!(file.len().is_err(), "handles die with the crash");
        let contents = super::super::read_all(&*disk, Path::new("data/t-0/a.log")).unwrap();
        assert_eq!(contents, b"hello");
    }

    #[test]
    fn unsynced_create_is_lost() {
        let disk = MemDisk::new();
        disk.open(Path::new("a"), OpenMode::Create)
            .unwrap()
            .sync_data()
            .unwrap();
        disk.crash(CrashOptions::LoseUnsynced, &mut rng());
        assert!(!disk.exists(Path::new("a")));
    }

    #[test]
    fn write_atomic_is_old_or_new_after_any_crash() {
        for seed in 0..200 {
            let disk = MemDisk::new();
            super::super::write_atomic(&*disk, Path::new("meta"), b"old contents").unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let new = vec![b'n'; 2000];
            let file = disk.open(Path::new("meta.tmp"), OpenMode::Create).unwrap();
            file.write_at(&new, 0).unwrap();
            if rng.gen_bool(0.5) {
                file.sync_data().unwrap();
                disk.rename(Path::new("meta.tmp"), Path::new("meta"))
                    .unwrap();
            }
            disk.crash(CrashOptions::Tear, &mut rng);
            let contents = super::super::read_all(&*disk, Path::new("meta")).unwrap();
            assert!(
                contents == b"old contents" || contents == new,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn tear_keeps_synced_prefix_and_invents_nothing() {
        for seed in 0..200 {
            let disk = MemDisk::new();
            let file = disk.open(Path::new("f"), OpenMode::Create).unwrap();
            disk.sync_dir(Path::new("")).unwrap();
            file.write_at(&[1; 1000], 0).unwrap();
            file.sync_data().unwrap();
            file.write_at(&[2; 3000], 1000).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            disk.crash(CrashOptions::Tear, &mut rng);
            let contents = super::super::read_all(&*disk, Path::new("f")).unwrap();
            assert!(contents.len() >= 1000 && contents.len() <= 4000);
            assert!(contents[..1000].iter().all(|byte| *byte == 1));
            assert!(contents[1000..].iter().all(|byte| *byte == 2 || *byte == 0));
        }
    }

    /// One step of a crash-kind case: what happens to the node between the write and the read.
    fn step(disk: &MemDisk, step: &str, rng: &mut rand_chacha::ChaCha8Rng) {
        match step {
            "process" => disk.crash_process(),
            "power" => disk.crash(CrashOptions::LoseUnsynced, rng),
            "sync" => {
                let file = disk.open(Path::new("d/f"), OpenMode::Existing).unwrap();
                file.sync_data().unwrap();
                disk.sync_dir(Path::new("d")).unwrap();
            }
            other => panic!("unknown step {other}"),
        }
    }

    /// Each crash kind and sequence of them, from one state: "old" synced, "+new" unsynced, and
    /// an unsynced file `d/g`. What a later process reads, and whether `g` is there.
    #[test]
    fn crash_kinds_keep_what_their_kind_keeps() {
        let cases = [
            ("process", "old+new g"),
            ("process process", "old+new g"),
            ("power", "old"),
            ("process power", "old"),
            ("process sync power", "old+new g"),
            ("power process", "old"),
            ("process sync process power", "old+new g"),
        ];
        for (steps, expected) in cases {
            let disk = MemDisk::new();
            disk.create_dir_all(Path::new("d")).unwrap();
            disk.sync_dir(Path::new("")).unwrap();
            let file = disk.open(Path::new("d/f"), OpenMode::Create).unwrap();
            disk.sync_dir(Path::new("d")).unwrap();
            file.append(b"old").unwrap();
            file.sync_data().unwrap();
            file.append(b"+new").unwrap();
            disk.open(Path::new("d/g"), OpenMode::Create).unwrap();
            let mut rng = rng();
            for name in steps.split(' ') {
                step(&disk, name, &mut rng);
            }
            assert!(file.len().is_err(), "{steps}: handles die with any crash");
            let contents = super::super::read_all(&*disk, Path::new("d/f")).unwrap();
            let mut seen = String::from_utf8(contents).unwrap();
            if disk.exists(Path::new("d/g")) {
                seen.push_str(" g");
            }
            assert_eq!(seen, expected, "{steps}");
        }
    }

    /// A power loss with writeback keeps a subset of dirty sectors, not only a prefix: over many
    /// seeds some run keeps a later sector and loses an earlier one, and none invents a byte.
    #[test]
    fn tear_writes_back_any_subset_of_sectors() {
        let mut holes = 0;
        for seed in 0..100 {
            let disk = MemDisk::new();
            let file = disk.open(Path::new("f"), OpenMode::Create).unwrap();
            disk.sync_dir(Path::new("")).unwrap();
            file.write_at(&[1; 4 * SECTOR_BYTES], 0).unwrap();
            file.sync_data().unwrap();
            file.write_at(&[2; 4 * SECTOR_BYTES], 0).unwrap();
            disk.crash_process();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            disk.crash(CrashOptions::Tear, &mut rng);
            let contents = super::super::read_all(&*disk, Path::new("f")).unwrap();
            assert!(
                contents.iter().all(|byte| *byte == 1 || *byte == 2),
                "seed {seed}"
            );
            let sectors: Vec<u8> = contents.chunks(SECTOR_BYTES).map(|s| s[0]).collect();
            holes += usize::from(sectors.windows(2).any(|pair| pair == [1, 2]));
        }
        assert!(
            holes > 10,
            "only {holes} runs kept a later sector without an earlier one"
        );
    }

    /// Journal entries survive a power loss as a subset, yet never a child without its parent:
    /// `b` may outlive `a` (unrelated), `d/f` never outlives `d`.
    #[test]
    fn tear_keeps_a_journal_subset_that_respects_each_path() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let disk = MemDisk::new();
            disk.open(Path::new("a"), OpenMode::Create).unwrap();
            disk.open(Path::new("b"), OpenMode::Create).unwrap();
            disk.create_dir_all(Path::new("d")).unwrap();
            disk.open(Path::new("d/f"), OpenMode::Create).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            disk.crash(CrashOptions::Tear, &mut rng);
            let names: Vec<&str> = ["a", "b", "d", "d/f"]
                .into_iter()
                .filter(|name| disk.exists(Path::new(name)))
                .collect();
            assert!(
                !names.contains(&"d/f") || names.contains(&"d"),
                "seed {seed}: {names:?}"
            );
            outcomes.insert(names.join(","));
        }
        assert!(
            outcomes.contains("b"),
            "a later entry survives an earlier loss: {outcomes:?}"
        );
        assert!(
            outcomes.contains("a,b,d,d/f") && outcomes.contains(""),
            "{outcomes:?}"
        );
    }
}
