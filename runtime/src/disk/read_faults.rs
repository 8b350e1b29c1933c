//! `ReadFaults`: a `Disk` wrapper for tests of load and replay paths. It fails the next reads of
//! the files whose path contains a pattern (EIO), so a test can prove a startup path re-reads a
//! transient error and refuses to go on with part of its state when the error persists. The
//! simulator's `SimDisk` injects faults at random; this one injects them exactly where told.

use super::{Disk, DiskFile, OpenMode};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Plan {
    /// Reads of paths containing this fail while `remaining > 0`.
    pattern: String,
    remaining: u64,
    /// Reads failed so far.
    failed: u64,
}

#[derive(Debug)]
pub struct ReadFaults {
    inner: Arc<dyn Disk>,
    plan: Arc<Mutex<Plan>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ReadFaults {
    pub fn new(inner: Arc<dyn Disk>) -> Arc<ReadFaults> {
        Arc::new(ReadFaults {
            inner,
            plan: Arc::default(),
        })
    }

    /// The next `count` reads of files whose path contains `pattern` fail with EIO.
    pub fn fail_next(&self, pattern: &str, count: u64) {
        let mut plan = lock(&self.plan);
        plan.pattern = pattern.to_string();
        plan.remaining = count;
    }

    /// Reads failed so far.
    pub fn failed(&self) -> u64 {
        lock(&self.plan).failed
    }
}

impl Disk for ReadFaults {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(ReadFaultsFile {
            inner: self.inner.open(path, mode)?,
            path: path.to_path_buf(),
            plan: self.plan.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[derive(Debug)]
struct ReadFaultsFile {
    inner: Arc<dyn DiskFile>,
    path: PathBuf,
    plan: Arc<Mutex<Plan>>,
}

impl DiskFile for ReadFaultsFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        let mut plan = lock(&self.plan);
        if plan.remaining > 0 && self.path.to_string_lossy().contains(plan.pattern.as_str()) {
            plan.remaining -= 1;
            plan.failed += 1;
            return Err(io::Error::other("injected EIO on read"));
        }
        drop(plan);
        self.inner.read_at(buffer, position)
    }
    fn write_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_at(bytes, position)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}
