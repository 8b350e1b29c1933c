//! The `Disk` seam: every byte gregor stores goes through these two traits.
//!
//! Durability model (what callers may rely on, and what `MemDisk` and the simulator's disk enforce):
//! - File contents written with `write_at`/`append` sit in a page cache until `sync_data` returns;
//!   a crash may lose or tear (per 512-byte sector) anything not yet synced.
//! - Namespace changes (`open` with create, `rename`, `remove`) are durable only after `sync_dir` on
//!   the parent directory; a power loss keeps any subset of them that respects each path's order.
//! - A process crash (SIGKILL, OOM kill, panic) loses nothing: the page cache outlives the process,
//!   so unsynced bytes stay readable by the next process, and stay unsynced until it syncs them.
//! - Errors are real: reads and writes may fail with EIO or ENOSPC, and callers must handle them.
//!
//! The traits are synchronous: file system calls are short, and the one slow call (`sync_data`) is
//! issued by callers through `runtime::blocking` so it never stalls an async worker.

mod mem;
mod read_faults;
mod real;

pub use mem::{CrashOptions, MemDisk, MemFile};

/// A simulated fdatasync's latency, split at the moment the sync takes effect. Callers wait
/// `before`, sync, then wait `after`, and only then count the sync done. A crash in `before`
/// finds none of this sync on the platter; one in `after` finds all of it. Writes made during
/// `before` may become durable with it, writes made during `after` not: a real disk may do
/// either, and bugs hide behind each (a sync counted at its start; a roll that leaves the old
/// segment's tail to a sync that will not cover it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncDelay {
    pub before: std::time::Duration,
    pub after: std::time::Duration,
}

impl SyncDelay {
    pub fn total(&self) -> std::time::Duration {
        self.before + self.after
    }

    pub fn is_zero(&self) -> bool {
        self.total().is_zero()
    }
}
pub use read_faults::ReadFaults;
pub use real::RealDisk;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How `Disk::open` treats a missing or existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Open it, creating an empty file if missing.
    Create,
    /// Create it; fail with `AlreadyExists` if present.
    CreateNew,
}

/// A directory tree of files.
pub trait Disk: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>>;
    /// Creates `path` and its missing parents. Durable after `sync_dir` of each new parent.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory (files and directories), sorted by name.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the namespace changes in `dir` (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// How long the next fdatasync should take in simulated time. Real disks take real time and
    /// return zero; a simulated disk returns its modelled latency, which callers wait out around
    /// the sync (`SyncDelay`) before counting it done.
    fn sync_delay(&self) -> SyncDelay {
        SyncDelay::default()
    }

    /// An aimed fault at `site` (see `crate::buggify`); true if one fired. Only the simulator's
    /// disk ever fires, and only `buggify::hit` under `cfg(madsim)` asks.
    fn buggify(&self, _site: crate::buggify::Site) -> bool {
        false
    }
}

#[allow(clippy::len_without_is_empty)] // A file's length is a fallible query, not a collection size.
/// An open file. Positions are explicit (pread/pwrite), so one handle can serve readers and the
/// writer at once without a shared cursor.
pub trait DiskFile: Send + Sync + Debug {
    fn len(&self) -> io::Result<u64>;
    /// Reads up to `buffer.len()` bytes at `position`; fewer only at end of file.
    fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize>;
    /// Writes all of `bytes` at `position`, extending the file if needed.
    fn write_at(&self, bytes: &[u8], position: u64) -> io::Result<()>;
    /// Cuts (or zero-extends) the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// fdatasync: everything written so far survives a crash once this returns `Ok`.
    fn sync_data(&self) -> io::Result<()>;

    /// Writes `bytes` at the end of the file; returns the position they start at.
    fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let position = self.len()?;
        self.write_at(bytes, position)?;
        Ok(position)
    }

    /// Reads exactly `buffer.len()` bytes at `position`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, buffer: &mut [u8], position: u64) -> io::Result<()> {
        let mut filled = 0;
        while filled < buffer.len() {
            let count = self.read_at(&mut buffer[filled..], position + filled as u64)?;
            if count == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {position} hit end of file",
                        buffer.len()
                    ),
                ));
            }
            filled += count;
        }
        Ok(())
    }
}

/// Writes a whole small file durably: write a temporary, fsync it, rename over, fsync the directory.
/// The reader sees the old contents or the new, never a mix, even across a crash. A temporary
/// that could not be written in full (ENOSPC) is removed, best effort, so it holds no space.
pub fn write_atomic(disk: &dyn Disk, path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let file = disk.open(&temporary, OpenMode::Create)?;
    let written = file
        .truncate(0)
        .and_then(|()| file.write_at(contents, 0))
        .and_then(|()| file.sync_data());
    if let Err(error) = written {
        let _ = disk.remove_file(&temporary);
        return Err(error);
    }
    crate::buggify::hit(disk, crate::buggify::Site::CheckpointWrite);
    disk.rename(&temporary, path)?;
    disk.sync_dir(dir)
}

/// Reads of one small file that `read_all_stable` makes before it gives up: two must agree.
/// A transient fault (EIO, a bit flipped on the way from the disk) spoils one read, not the next.
pub const STABLE_READS_MAX: u32 = 4;

/// Reads a whole small file until two reads in a row agree, so a bit flipped in transit, which
/// a format without a checksum cannot notice, is never believed; errors, as the last read's,
/// when no two of `STABLE_READS_MAX` reads agree. For startup loads of metadata files, where
/// believing a transient fault would silently change state (a flipped topic name would make the
/// real topic's directories orphans).
pub fn read_all_stable(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let mut previous: Option<Vec<u8>> = None;
    let mut last_error = None;
    for _ in 0..STABLE_READS_MAX {
        match read_all(disk, path) {
            Ok(bytes) if previous.as_ref() == Some(&bytes) => return Ok(bytes),
            Ok(bytes) => previous = Some(bytes),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no two of {STABLE_READS_MAX} reads agreed"),
        )
    }))
}

/// Reads a whole small file.
pub fn read_all(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path, OpenMode::Existing)?;
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut contents = vec![0; len];
    file.read_exact_at(&mut contents, 0)?;
    Ok(contents)
}
