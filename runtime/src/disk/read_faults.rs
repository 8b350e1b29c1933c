//! `ReadFaults`: a `Disk` wrapper for tests of load and replay paths. It fails the next reads of
//! the files whose path contains a pattern (EIO), or flips a bit in what they return, so a test
//! can prove a startup path re-reads a transient fault and refuses to go on with part of its
//! state, or a wrong one, when the fault persists. It can also fail the next fdatasync of such
//! files (EIO, nothing written), for tests of what a log does after a failed sync. The
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
    /// `Some(byte)`: the read succeeds with the low bit of its `byte`-th byte flipped (in the
    /// buffer, not at rest). `None`: the read fails with EIO.
    flip_byte: Option<usize>,
    /// Reads failed or flipped so far.
    failed: u64,
    /// The next fdatasync of a file whose path contains this fails.
    sync_pattern: Option<String>,
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
        plan.flip_byte = None;
    }

    /// The next `count` reads of files whose path contains `pattern` return with the low bit of
    /// byte `byte` of the buffer flipped (reads too short to hold it are not counted).
    pub fn flip_next(&self, pattern: &str, count: u64, byte: usize) {
        let mut plan = lock(&self.plan);
        plan.pattern = pattern.to_string();
        plan.remaining = count;
        plan.flip_byte = Some(byte);
    }

    /// The next fdatasync of a file whose path contains `pattern` fails with EIO, writing
    /// nothing back.
    pub fn sync_fail_next(&self, pattern: &str) {
        lock(&self.plan).sync_pattern = Some(pattern.to_string());
    }

    /// Reads failed or flipped so far.
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
        let struck =
            plan.remaining > 0 && self.path.to_string_lossy().contains(plan.pattern.as_str());
        if struck && plan.flip_byte.is_none() {
            plan.remaining -= 1;
            plan.failed += 1;
            return Err(io::Error::other("injected EIO on read"));
        }
        let count = self.inner.read_at(buffer, position)?;
        if let Some(byte) = plan.flip_byte.filter(|byte| struck && *byte < count) {
            plan.remaining -= 1;
            plan.failed += 1;
            buffer[byte] ^= 1;
        }
        Ok(count)
    }
    fn write_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_at(bytes, position)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut plan = lock(&self.plan);
        let path = self.path.to_string_lossy();
        if plan
            .sync_pattern
            .as_ref()
            .is_some_and(|pattern| path.contains(pattern.as_str()))
        {
            plan.sync_pattern = None;
            return Err(io::Error::other("injected EIO on fdatasync"));
        }
        drop(plan);
        self.inner.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{read_all, read_all_stable, MemDisk};

    /// `read_all_stable` after `fault` (EIO or flip, how many): what it returns, and the reads
    /// spoiled.
    fn stable_after(flip: bool, count: u64) -> String {
        let disk = ReadFaults::new(MemDisk::new());
        let path = Path::new("meta");
        disk.open(path, OpenMode::Create)
            .unwrap()
            .write_at(b"topic t", 0)
            .unwrap();
        if flip {
            disk.flip_next("meta", count, 6);
        } else {
            disk.fail_next("meta", count);
        }
        let read = match read_all_stable(&*disk, path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("error: {error}"),
        };
        format!("{read} (spoiled {})", disk.failed())
    }

    #[test]
    fn stable_reads_never_believe_a_transient_fault() {
        // Random flips do not repeat: one flipped read is the realistic case (two identical
        // flips in a row would be believed, which is the assumption `read_all_stable` states).
        let cases = [(false, 0), (false, 2), (false, 4), (true, 1)];
        let lines: Vec<String> = cases
            .iter()
            .map(|&(flip, count)| {
                let kind = if flip { "flip" } else { "eio" };
                format!("{kind} x{count}: {}", stable_after(flip, count))
            })
            .collect();
        assert_eq!(
            lines,
            [
                "eio x0: topic t (spoiled 0)",
                "eio x2: topic t (spoiled 2)",
                "eio x4: error: injected EIO on read (spoiled 4)",
                "flip x1: topic t (spoiled 1)",
            ]
        );
    }

    #[test]
    fn a_plain_read_believes_a_flip() {
        let disk = ReadFaults::new(MemDisk::new());
        let path = Path::new("meta");
        disk.open(path, OpenMode::Create)
            .unwrap()
            .write_at(b"topic t", 0)
            .unwrap();
        disk.flip_next("meta", 1, 6);
        assert_eq!(read_all(&*disk, path).unwrap(), b"topic u");
    }
}
