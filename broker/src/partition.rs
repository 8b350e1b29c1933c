//! One partition hosted by this broker: its log behind a lock, and the group-commit flusher that
//! turns appends into durable, visible offsets.
//!
//! Durability contract (DESIGN.md): a produce is acknowledged only once its batch is fsynced, and
//! a consumer never sees a byte that a crash could take back, so on a single node the high
//! watermark is the log's recovery point. Appends only write to the page cache; the flusher task
//! syncs whatever has accumulated with one fdatasync (run off the async workers, without the log
//! lock held), then publishes the new durable offset. Producers and long-polling fetchers wait on
//! that one `watch` channel, so one fsync serves every request that arrived before it began.
//!
//! A partition with several replicas that this broker leads also holds the replica core
//! (`replica`, a `replica::shell::Led`): its high watermark is then the core's, the replicated
//! one (every ISR member fsynced below it), and the flusher feeds the core each group commit.
//! Lock order: the log, then the core. Parked fetches wake on the same watch when the core's
//! HW moves, and (followers) after appends.

use crate::planted::Bug;
use crate::replica::shell::Led;
use runtime::sync::{watch, Notify};
use std::sync::{Arc, Mutex, MutexGuard};
use storage::PartitionLog;

/// The durable state a flusher publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Every offset below this is fsynced: the high watermark on a single node.
    pub offset_end: i64,
    /// A sync failed: the page cache can no longer be trusted (fsyncgate), so the partition is
    /// offline until the broker restarts and recovers from what is truly on disk.
    pub failed: bool,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Shared with the flusher task, which must wait on it without keeping the partition alive.
    flush_wanted: Arc<Notify>,
    durable_sender: watch::Sender<Durable>,
    deleted: std::sync::atomic::AtomicBool,
    /// The high watermark this replica last learned as a follower (from the leader's fetch
    /// responses), so a replica that becomes leader starts its HW there, not at 0. Monotone.
    follower_hw: std::sync::atomic::AtomicI64,
    /// The leader core while this broker leads the partition and it has several replicas
    /// (`replica::shell`); `None` otherwise. Taken after the log's lock, never before.
    replica: Mutex<Option<Led>>,
    planted: Option<crate::planted::Bug>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Partition {
    /// The planted bug this partition runs with (simulation self-tests only).
    pub fn planted(&self) -> Option<Bug> {
        self.planted
    }

    /// Wraps a recovered log whose contents are all durable, and starts its flusher.
    pub fn start(
        topic: String,
        index: i32,
        log: PartitionLog,
        planted: Option<crate::planted::Bug>,
    ) -> Arc<Partition> {
        assert_eq!(
            log.recovery_point(),
            log.log_end_offset(),
            "opened logs are flushed first"
        );
        let durable = Durable {
            offset_end: log.log_end_offset(),
            failed: false,
        };
        let (durable_sender, _) = watch::channel(durable);
        let partition = Arc::new(Partition {
            topic,
            index,
            log: Mutex::new(log),
            flush_wanted: Arc::new(Notify::new()),
            durable_sender,
            deleted: std::sync::atomic::AtomicBool::new(false),
            follower_hw: std::sync::atomic::AtomicI64::new(0),
            replica: Mutex::new(None),
            planted,
        });
        runtime::spawn(flusher_run(Arc::downgrade(&partition)));
        partition
    }

    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        lock(&self.log)
    }

    /// Asks the flusher to make everything appended so far durable.
    pub fn flush_request(&self) {
        self.flush_wanted.notify_one();
    }

    pub fn durable(&self) -> Durable {
        *self.durable_sender.borrow()
    }

    /// Changes whenever this partition may have become readable in a new way: the durable offset
    /// advanced, it went offline, or (`readers_wake`) its log start moved.
    pub fn durable_watch(&self) -> watch::Receiver<Durable> {
        self.durable_sender.subscribe()
    }

    /// Wakes long-polling fetches of this partition without changing the durable state: retention
    /// or compaction moved the log start, so a parked fetch below it must now answer
    /// OFFSET_OUT_OF_RANGE. Producers waiting for durability re-check and keep waiting.
    pub fn readers_wake(&self) {
        self.durable_sender.send_modify(|_| {});
    }

    /// The high watermark: what consumers may read. With a leader core, the replicated HW;
    /// otherwise the local fsynced end.
    pub fn high_watermark(&self) -> i64 {
        if Bug::active(self.planted, Bug::FetchBeyondDurable) {
            return self.log().log_end_offset();
        }
        let replicated = self.replica().as_ref().map(|led| led.core.high_watermark());
        match replicated {
            // Planted: consumers read up to the leader's own fsynced end.
            Some(_) if Bug::active(self.planted, Bug::ReadAboveHw) => self.durable().offset_end,
            Some(high_watermark) => high_watermark,
            None => self.durable().offset_end,
        }
    }

    /// Whether a leader core runs here at `leader_epoch`, not deposed (`replica::shell`).
    pub fn led_at(&self, leader_epoch: i32) -> bool {
        self.replica()
            .as_ref()
            .is_some_and(|led| led.core.leader_epoch() == leader_epoch && !led.core.is_deposed())
    }

    /// This replica's own HW, whatever its role: the leader core's, a follower's last learned
    /// one (never past its fsynced end), or on a partition with one replica the fsynced end.
    /// What Kafka's debugging consumer (Fetch `replica_id` -2) may read.
    pub fn high_watermark_own(&self, replicated: bool) -> i64 {
        let durable_end = self.durable().offset_end;
        match self.replica().as_ref() {
            Some(led) => led.core.high_watermark(),
            None if replicated => self.follower_high_watermark().min(durable_end),
            None => durable_end,
        }
    }

    /// The leader core, if this broker leads the partition and it is replicated. Lock the log
    /// first when both are needed.
    pub fn replica(&self) -> MutexGuard<'_, Option<Led>> {
        lock(&self.replica)
    }

    /// Whether the HW of a replicated leader has not reached the start of its leadership yet
    /// (KIP-207: offsets may still move, ListOffsets answers OFFSET_NOT_AVAILABLE).
    pub fn high_watermark_behind_epoch_start(&self) -> bool {
        self.replica()
            .as_ref()
            .is_some_and(|led| led.core.high_watermark() < led.core.epoch_start_offset())
    }

    /// The HW this replica learned while following (0 if it never followed since it opened).
    pub fn follower_high_watermark(&self) -> i64 {
        self.follower_hw.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records an HW learned from the leader; never moves it backwards.
    pub fn follower_high_watermark_set(&self, high_watermark: i64) {
        self.follower_hw
            .fetch_max(high_watermark, std::sync::atomic::Ordering::AcqRel);
    }

    /// A follower truncated `log` (whose guard the caller holds), durably: the durable offset
    /// becomes its new end, so no wait for a re-appended offset returns before that offset is
    /// fsynced again. The only way the durable offset goes back; consumers never read a
    /// follower's log.
    pub fn durable_truncated(&self, log: &PartitionLog) {
        let offset_end = log.recovery_point();
        assert_eq!(offset_end, log.log_end_offset(), "a truncation is durable");
        self.durable_sender.send_if_modified(|durable| {
            let changed = offset_end != durable.offset_end;
            durable.offset_end = offset_end;
            changed
        });
    }

    /// Waits until `offset` is durable; `false` if the partition failed or was deleted first.
    pub async fn durable_wait(&self, offset: i64) -> bool {
        if Bug::active(self.planted, Bug::AckBeforeFsync) {
            return true;
        }
        let mut receiver = self.durable_watch();
        let result = receiver
            .wait_for(|durable| durable.failed || durable.offset_end > offset)
            .await;
        matches!(result, Ok(durable) if !durable.failed)
    }

    /// After a write that failed: if a sync of the log failed inside it (a roll syncs the closed
    /// segment), the partition goes offline as when the group commit's sync fails. Retrying
    /// would be fsyncgate: the failed sync may have marked pages clean that it never wrote, so
    /// a later sync that succeeds proves nothing (single-chaos seed 681 acknowledged records a
    /// roll's failed sync had left only in the page cache, and lost them to a power loss).
    pub fn offline_if_sync_failed(&self) {
        if self.log().sync_failed() && !self.durable().failed {
            self.offline_for_sync_failure("a segment roll's sync failed");
        }
    }

    /// Takes the partition offline until a restart recovers it from disk: a write of its log
    /// failed halfway (a follower's truncation), so its memory may no longer match its files.
    pub fn offline_until_restart(&self, why: &str) {
        if self.durable().failed {
            return;
        }
        tracing::error!(
            site = "partition-offline",
            topic = %self.topic, partition = self.index, why,
            "partition offline until restart"
        );
        self.durable_sender
            .send_modify(|durable| durable.failed = true);
        self.flush_wanted.notify_one();
    }

    fn offline_for_sync_failure(&self, error: &str) {
        tracing::error!(
            site = "fsync-failed",
            topic = %self.topic, partition = self.index, error,
            "fsync failed; partition offline until restart"
        );
        self.durable_sender
            .send_modify(|durable| durable.failed = true);
        self.flush_wanted.notify_one();
    }

    /// Stops the flusher and fails pending waits; the caller removes the files.
    pub fn delete(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.durable_sender
            .send_modify(|durable| durable.failed = true);
        self.flush_wanted.notify_one();
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The group-commit loop. Holds only a weak reference so a deleted partition's task ends.
async fn flusher_run(partition: std::sync::Weak<Partition>) {
    loop {
        let Some(strong) = partition.upgrade() else {
            return;
        };
        let flush_wanted = strong.flush_wanted.clone();
        let notified = flush_wanted.notified();
        runtime::pin!(notified);
        notified.as_mut().enable();
        if strong.is_deleted() || strong.durable().failed {
            return;
        }
        let pending = {
            let log = strong.log();
            log.log_end_offset() > log.recovery_point()
        };
        if !pending {
            tracing::trace!(topic = %strong.topic, partition = strong.index, "flusher idle");
            drop(strong);
            notified.await;
            continue;
        }
        if !flush_once(&strong).await {
            return;
        }
    }
}

/// One group commit: capture, sync without the lock, complete, publish.
async fn flush_once(partition: &Arc<Partition>) -> bool {
    let (ticket, disk) = {
        let mut log = partition.log();
        (log.flush_begin(), log.disk().clone())
    };
    tracing::trace!(topic = %partition.topic, partition = partition.index, offset_end = ticket.offset_end(), "flush begins");
    runtime::buggify::hit(&*disk, runtime::buggify::Site::FsyncInFlight);
    if Bug::active(partition.planted, Bug::AckAtFsyncStart) {
        return planted_ack_at_fsync_start(partition, ticket).await;
    }
    // A simulated disk's fsync latency, around the moment the sync takes effect
    // (`runtime::SyncDelay`); appends made meanwhile wait for the next sync, as on a real disk.
    let delay = ticket.delay();
    if !delay.before.is_zero() {
        runtime::time::sleep(delay.before).await;
    }
    let (ticket, result) = runtime::blocking(move || {
        let result = ticket.sync();
        (ticket, result)
    })
    .await;
    if !delay.after.is_zero() {
        runtime::time::sleep(delay.after).await;
    }
    if let Err(error) = result {
        partition.log().sync_failure_note();
        partition.offline_for_sync_failure(&error.to_string());
        return false;
    }
    tracing::trace!(topic = %partition.topic, partition = partition.index, offset_end = ticket.offset_end(), "flush synced");
    durable_publish(partition, ticket)
}

/// Completes a synced ticket and tells producers and fetchers the new durable offset; `false`
/// if a sync of the log failed meanwhile (a roll's), so the ticket's success proves nothing.
fn durable_publish(partition: &Partition, ticket: storage::FlushTicket) -> bool {
    let mut log = partition.log();
    log.flush_complete(ticket);
    if log.sync_failed() {
        drop(log);
        partition.offline_for_sync_failure("a sync of the log failed during the group commit");
        return false;
    }
    // Published under the log lock: a follower's truncation (`durable_truncated`) lowers the
    // durable offset under it too, so a recovery point read before a truncation is never
    // published after it.
    let offset_end = log.recovery_point();
    // The leader core counts its own end once it is fsynced (log, then core).
    let high_watermark_moved = partition.replica().as_mut().is_some_and(|led| {
        let mut outputs = Vec::new();
        led.log_end_feed(&mut outputs, log.log_end_offset());
        if !led.core.is_deposed() {
            led.core.durable(&mut outputs, offset_end);
        }
        led.outputs_apply(outputs)
    });
    partition.durable_sender.send_if_modified(|durable| {
        assert!(
            offset_end >= durable.offset_end,
            "the durable offset never goes back, but by a truncation"
        );
        let advanced = offset_end > durable.offset_end;
        durable.offset_end = offset_end;
        advanced
    });
    drop(log);
    if high_watermark_moved {
        partition.readers_wake();
    }
    true
}

/// The planted bug `AckAtFsyncStart`: the durable offset is published as the fsync is issued,
/// and the fsync (modelled as taking effect when its latency has passed) completes afterwards.
async fn planted_ack_at_fsync_start(
    partition: &Arc<Partition>,
    ticket: storage::FlushTicket,
) -> bool {
    let offset_end = ticket.offset_end();
    partition.durable_sender.send_if_modified(|durable| {
        let advanced = offset_end > durable.offset_end;
        durable.offset_end = durable.offset_end.max(offset_end);
        advanced
    });
    runtime::time::sleep(ticket.delay().total()).await;
    match ticket.sync() {
        Ok(()) => {
            partition.log().flush_complete(ticket);
            true
        }
        Err(_) => false,
    }
}
