//! SimDisk: a node's disk in the simulator. `MemDisk` keeps the true bytes (page cache vs durable,
//! ordered metadata journal); this wrapper overlays the faults a real disk produces, each drawn
//! from the node's own rng stream at the rates the seed's swarm options chose.
//!
//! Fault model and budget. A single node promises to survive: losing or tearing unsynced writes at
//! a crash (MemDisk), transient read errors (EIO), bytes corrupted on the way from the platter to
//! memory (a bit flipped in a read's buffer, not at rest: the CRC must catch it and the read must
//! fail rather than serve it), and writes refused for lack of space (ENOSPC, nothing written).
//! It does not promise to survive corruption of fsynced data at rest, so on a single node the
//! simulator never flips durable bits: a fault beyond the promise is not a bug.

use rand::{Rng, RngCore};
use runtime::disk::{CrashOptions, MemDisk};
use runtime::rng::ChaCha8Rng;
use runtime::{Disk, DiskFile, OpenMode};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Fault rates, each a probability per call. All zero: a perfect disk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskFaults {
    /// A read fails with EIO.
    pub read_error_rate: f64,
    /// A read returns with one bit flipped in its buffer.
    pub read_bitflip_rate: f64,
    /// A write fails with ENOSPC before writing anything.
    pub write_nospace_rate: f64,
    /// fdatasync latency is drawn uniformly from `[0, sync_delay_max]`.
    pub sync_delay_max: std::time::Duration,
}

#[derive(Debug)]
struct FaultState {
    rates: DiskFaults,
    rng: ChaCha8Rng,
    /// Faults injected so far, by kind, for the run's summary.
    injected: [u64; 3],
}

#[derive(Debug)]
pub struct SimDisk {
    true_bytes: Arc<MemDisk>,
    faults: Arc<Mutex<FaultState>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultState {
    /// Draws whether a fault of `kind` happens now. Draws even at rate 0 would shift the stream
    /// when rates change, so a zero rate draws nothing.
    fn strike(&mut self, kind: usize) -> bool {
        let rate = match kind {
            0 => self.rates.read_error_rate,
            1 => self.rates.read_bitflip_rate,
            _ => self.rates.write_nospace_rate,
        };
        let hit = rate > 0.0 && self.rng.gen_bool(rate.min(1.0));
        if hit {
            self.injected[kind] += 1;
        }
        hit
    }
}

impl SimDisk {
    pub fn new(rng: ChaCha8Rng) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            true_bytes: MemDisk::new(),
            faults: Arc::new(Mutex::new(FaultState {
                rates: DiskFaults::default(),
                rng,
                injected: [0; 3],
            })),
        })
    }

    pub fn faults_set(&self, rates: DiskFaults) {
        lock(&self.faults).rates = rates;
    }

    /// Read errors, bit flips and ENOSPC injected so far.
    pub fn faults_injected(&self) -> [u64; 3] {
        lock(&self.faults).injected
    }

    /// Power loss: unsynced state is lost or torn (see `MemDisk::crash`).
    pub fn crash(&self, options: CrashOptions) {
        let mut faults = lock(&self.faults);
        self.true_bytes
            .crash(options, &mut faults.rng as &mut dyn RngCore);
    }

    /// The true bytes, for checks that must see past the fault overlay.
    pub fn true_bytes(&self) -> &Arc<MemDisk> {
        &self.true_bytes
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let inner = self.true_bytes.open(path, mode)?;
        Ok(Arc::new(SimFile {
            inner,
            faults: self.faults.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.true_bytes.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.true_bytes.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.true_bytes.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.true_bytes.is_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.true_bytes.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.true_bytes.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.true_bytes.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.true_bytes.sync_dir(dir)
    }

    fn sync_delay(&self) -> std::time::Duration {
        let mut faults = lock(&self.faults);
        let max = faults.rates.sync_delay_max;
        if max.is_zero() {
            return max;
        }
        max.mul_f64(faults.rng.gen_range(0.0..1.0))
    }
}

#[derive(Debug)]
struct SimFile {
    inner: Arc<dyn DiskFile>,
    faults: Arc<Mutex<FaultState>>,
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        let mut faults = lock(&self.faults);
        if faults.strike(0) {
            return Err(io::Error::other("simulated EIO on read"));
        }
        let count = self.inner.read_at(buffer, position)?;
        if count > 0 && faults.strike(1) {
            let bit = faults.rng.gen_range(0..count * 8);
            buffer[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(count)
    }

    fn write_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        if lock(&self.faults).strike(2) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated ENOSPC",
            ));
        }
        self.inner.write_at(bytes, position)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}
