//! `FlushTicket`: the handle that lets one fdatasync cover many appends (group commit).
//!
//! `PartitionLog::flush_begin` captures the files holding unsynced bytes and the log end offset;
//! the broker runs `sync` off the async workers without holding the log's lock, while appends
//! continue; `flush_complete` then advances the recovery point to the captured offset. A ticket
//! taken before a truncation (the `generation` changed) completes as a no-op: the bytes it
//! covered may no longer be the log's, and truncation made its own result durable. While a
//! ticket holding files is out, a roll's sync proves nothing (the ticket's sync of the same file
//! may have failed already: fsyncgate), so rolls made meanwhile move the recovery point only
//! when the last such ticket completes, and never if a sync failed (`sync_failure_note`).

use runtime::DiskFile;
use std::io;
use std::sync::Arc;

#[derive(Debug)]
#[must_use = "a flush counts only once sync() returned Ok and flush_complete ran"]
pub struct FlushTicket {
    pub(crate) files: Vec<Arc<dyn DiskFile>>,
    pub(crate) offset_end: i64,
    pub(crate) generation: u64,
    /// The simulated latency of this sync (`Disk::sync_delay`); zero on real disks.
    pub(crate) delay: runtime::SyncDelay,
}

impl FlushTicket {
    /// The fsync latency a simulated disk charges (zero on real disks): the broker waits out
    /// `before`, syncs, and waits out `after` (see `runtime::SyncDelay`).
    pub fn delay(&self) -> runtime::SyncDelay {
        self.delay
    }

    /// fdatasyncs every captured file. Slow: run it through `runtime::blocking`.
    pub fn sync(&self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Every offset below this is durable once `sync` returned `Ok`.
    pub fn offset_end(&self) -> i64 {
        self.offset_end
    }
}

// The broker moves tickets into `runtime::blocking` closures.
const _: () = {
    const fn send_static<T: Send + Sync + 'static>() {}
    send_static::<FlushTicket>()
};
