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
use runtime::buggify::Site;
use runtime::disk::{CrashOptions, MemDisk, MemFile};
use runtime::rng::ChaCha8Rng;
use runtime::{Disk, DiskFile, OpenMode, SyncDelay};
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
    /// An fdatasync fails with EIO, having written back only some of the dirty sectors and
    /// marked the rest clean (`MemFile::sync_fail`): the broker must take the partition offline.
    pub sync_error_rate: f64,
}

#[derive(Debug)]
struct FaultState {
    rates: DiskFaults,
    rng: ChaCha8Rng,
    /// Faults injected so far, by kind, for the run's summary: read errors, bit flips, ENOSPC,
    /// failed syncs.
    injected: [u64; 4],
}

/// How a node goes down. The kind decides what its disk keeps (see `MemDisk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrashKind {
    /// SIGKILL, OOM kill, panic: the page cache survives.
    Process,
    /// Power loss before the kernel wrote anything back: unsynced state is lost.
    PowerLose,
    /// Power loss after the kernel wrote back a random subset of the dirty state.
    PowerTear,
    /// A process crash, a quick restart, then a power loss before the recovered tail is synced.
    ProcessThenPower,
}

impl CrashKind {
    pub const ALL: [CrashKind; 4] = [
        CrashKind::Process,
        CrashKind::PowerLose,
        CrashKind::PowerTear,
        CrashKind::ProcessThenPower,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashKind::Process => "process",
            CrashKind::PowerLose => "power-lose",
            CrashKind::PowerTear => "power-tear",
            CrashKind::ProcessThenPower => "process-then-power",
        }
    }
}

/// The simulator's answer to an aimed fault at a site of this disk's node (see `Disk::buggify`).
pub type BuggifyHook = Arc<dyn Fn(&SimDisk, Site) -> bool + Send + Sync>;

pub struct SimDisk {
    true_bytes: Arc<MemDisk>,
    faults: Arc<Mutex<FaultState>>,
    /// Set while the node is down: a process that was killed in the middle of synchronous code
    /// runs on until its next await, and must not touch the disk meanwhile.
    down: Arc<std::sync::atomic::AtomicBool>,
    /// Set when an fdatasync failed since the node last started: some partition of it went
    /// offline, and only a restart brings it back (`nemesis::heal` restarts such nodes).
    sync_failed: Arc<std::sync::atomic::AtomicBool>,
    buggify: Mutex<Option<BuggifyHook>>,
    /// How often the node reached each aimed-fault site, fired or not: the nemesis waits on
    /// these to land a fault right after a site (see `nemesis::crash`).
    visits: Mutex<std::collections::BTreeMap<Site, u64>>,
    /// Set when the node died for good (`cluster_data`): no crash's restart brings it back.
    retired: std::sync::atomic::AtomicBool,
    /// Aimed crashes of this node requested by its buggify hook that still have a kill to come:
    /// `nemesis::heal` waits for them, so none kills a node in the liveness phase.
    kills_pending: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk")
            .field("true_bytes", &self.true_bytes)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

fn down_error() -> io::Error {
    io::Error::other("simulated node is down")
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
            2 => self.rates.write_nospace_rate,
            _ => self.rates.sync_error_rate,
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
                injected: [0; 4],
            })),
            down: Default::default(),
            sync_failed: Default::default(),
            buggify: Mutex::new(None),
            visits: Default::default(),
            retired: Default::default(),
            kills_pending: Default::default(),
        })
    }

    /// Removes the aimed-fault hook and answers it (to put back with `buggify_set`).
    pub fn buggify_take(&self) -> Option<BuggifyHook> {
        lock(&self.buggify).take()
    }

    /// Installs (or, with `None`, removes) the simulator's aimed-fault hook.
    pub fn buggify_set(&self, hook: Option<BuggifyHook>) {
        *lock(&self.buggify) = hook;
    }

    /// Marks the node down: every call fails until `up`.
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks the node up again, just before its restart.
    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
        self.sync_failed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks the node dead for good: down, and never up again (`nemesis::up` skips it).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.down();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// An aimed crash of this node was requested: its kills are to come until `kill_pending_done`.
    pub fn kill_pending_add(&self) {
        self.kills_pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// An aimed crash requested with `kill_pending_add` made its last kill (or none: the node
    /// was down already); only its restart may be to come.
    pub fn kill_pending_done(&self) {
        let before = self
            .kills_pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        assert!(before > 0, "a kill done was pending");
    }

    /// How many aimed crashes of this node still have a kill to come.
    pub fn kills_pending(&self) -> u64 {
        self.kills_pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How often the node reached `site` so far.
    pub fn visits(&self, site: Site) -> u64 {
        lock(&self.visits).get(&site).copied().unwrap_or(0)
    }

    /// Whether an fdatasync failed since the node last started.
    pub fn sync_failed(&self) -> bool {
        self.sync_failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check_up(&self) -> io::Result<()> {
        match self.is_down() {
            true => Err(down_error()),
            false => Ok(()),
        }
    }

    /// A process crash: open handles die, the page cache stays.
    pub fn crash_process(&self) {
        self.true_bytes.crash_process();
    }

    pub fn faults_set(&self, rates: DiskFaults) {
        lock(&self.faults).rates = rates;
    }

    /// Read errors, bit flips, ENOSPC and failed syncs injected so far.
    pub fn faults_injected(&self) -> [u64; 4] {
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
        self.check_up()?;
        let inner = self.true_bytes.open_file(path, mode)?;
        Ok(Arc::new(SimFile {
            inner,
            faults: self.faults.clone(),
            down: self.down.clone(),
            sync_failed: self.sync_failed.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check_up()?;
        self.true_bytes.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.check_up()?;
        self.true_bytes.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.true_bytes.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.true_bytes.is_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_up()?;
        self.true_bytes.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check_up()?;
        self.true_bytes.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check_up()?;
        self.true_bytes.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check_up()?;
        self.true_bytes.sync_dir(dir)
    }

    /// The latency is uniform in `[0, sync_delay_max]` (or stretched by an aimed fault); the
    /// sync takes effect at its start, at its end, or somewhere between, a third of the time
    /// each, so both halves of a real fsync's uncertainty are met (`runtime::SyncDelay`).
    fn sync_delay(&self) -> SyncDelay {
        let mut faults = lock(&self.faults);
        let max = faults.rates.sync_delay_max;
        if max.is_zero() {
            return SyncDelay::default();
        }
        let delay = max.mul_f64(faults.rng.gen_range(0.0..1.0));
        let share_before = match faults.rng.gen_range(0..3) {
            0 => 0.0,
            1 => 1.0,
            _ => faults.rng.gen_range(0.0..1.0),
        };
        drop(faults);
        let total = match self.buggify(Site::FsyncStretch) {
            true => max * FSYNC_STRETCH_FACTOR,
            false => delay,
        };
        let before = total.mul_f64(share_before);
        SyncDelay {
            before,
            after: total - before,
        }
    }

    fn buggify(&self, site: Site) -> bool {
        if self.is_down() {
            return false;
        }
        *lock(&self.visits).entry(site).or_default() += 1;
        let hook = lock(&self.buggify).clone();
        hook.is_some_and(|hook| hook(self, site))
    }
}

/// How much longer than its longest usual latency a stretched fsync takes: long enough (tens of
/// milliseconds to a second) that appends, reads and their clients' timeouts pile up behind it.
pub const FSYNC_STRETCH_FACTOR: u32 = 50;

#[derive(Debug)]
struct SimFile {
    inner: Arc<MemFile>,
    faults: Arc<Mutex<FaultState>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    sync_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl SimFile {
    fn check_up(&self) -> io::Result<()> {
        match self.down.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(down_error()),
            false => Ok(()),
        }
    }
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        self.check_up()?;
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
        self.check_up()?;
        if lock(&self.faults).strike(2) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated ENOSPC",
            ));
        }
        self.inner.write_at(bytes, position)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.check_up()?;
        self.inner.truncate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_up()?;
        let mut faults = lock(&self.faults);
        if faults.strike(3) {
            self.inner.sync_fail(&mut faults.rng as &mut dyn RngCore)?;
            self.sync_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(io::Error::other("simulated EIO on fdatasync"));
        }
        drop(faults);
        self.inner.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn disk() -> Arc<SimDisk> {
        SimDisk::new(ChaCha8Rng::seed_from_u64(1))
    }

    /// A node killed inside synchronous code runs on until its next await: while it is down,
    /// every call through the disk or an open handle fails, and none reaches the true bytes.
    #[test]
    fn a_down_node_cannot_touch_its_disk() {
        let disk = disk();
        let file = disk.open(Path::new("f"), OpenMode::Create).unwrap();
        file.append(b"kept").unwrap();
        disk.down();
        assert!(file.append(b"lost").is_err());
        assert!(file.sync_data().is_err());
        assert!(disk.rename(Path::new("f"), Path::new("g")).is_err());
        assert!(disk.open(Path::new("h"), OpenMode::Create).is_err());
        disk.up();
        assert_eq!(
            runtime::disk::read_all(&*disk, Path::new("f")).unwrap(),
            b"kept"
        );
        assert!(!disk.exists(Path::new("g")) && !disk.exists(Path::new("h")));
    }

    /// The hook decides; a down node's sites never fire; a stretched fsync is far longer.
    #[test]
    fn buggify_asks_the_hook_unless_down() {
        let disk = disk();
        assert!(!disk.buggify(Site::SegmentRoll), "no hook: no fault");
        disk.buggify_set(Some(Arc::new(|_: &SimDisk, site| site != Site::Recovery)));
        assert!(disk.buggify(Site::SegmentRoll));
        assert!(!disk.buggify(Site::Recovery));
        let max = std::time::Duration::from_millis(2);
        disk.faults_set(DiskFaults {
            sync_delay_max: max,
            ..DiskFaults::default()
        });
        assert_eq!(disk.sync_delay().total(), max * FSYNC_STRETCH_FACTOR);
        disk.down();
        assert!(!disk.buggify(Site::SegmentRoll));
    }
}
