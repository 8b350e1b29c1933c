//! `PartitionLog`: one partition's log in one directory, the API the broker uses. It owns the
//! segment list (the last segment is the active one, the only one appended to), the log start
//! offset, the recovery point and the leader-epoch cache, and keeps their invariants; the work
//! is delegated to `segment`, `read`, `recovery`, `retention` and `compaction`.
//!
//! Durability: appends go to the page cache only. A byte is durable once a `FlushTicket`
//! covering it synced and `flush_complete` ran (the recovery point), or once a roll, a
//! truncation or recovery synced it. Metadata changes (new and removed files, checkpoints, the
//! epoch cache) are made durable before the call that made them returns.

use crate::checkpoint::LogCheckpoint;
use crate::config::{LogConfig, TimestampType, MESSAGE_BYTES_MAX};
use crate::epoch_cache::EpochCache;
use crate::error::{IoContext, LogError};
use crate::flush::FlushTicket;
use crate::layout::{segment_path, INDEX_SUFFIX};
use crate::producer_state::{AbortedTxn, Admission, ProducerStates, SequenceError};
use crate::read::{batches_read, ReadResult};
use crate::records::{batch_timestamp_max_settle, records_parse, records_section};
use crate::segment::{index_files_remove, segment_files_remove, Segment};
use runtime::Disk;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wire::{BatchHeader, ControlMarker, ValidatedBatch};

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics; -1 otherwise.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// What a produce request's batches came to in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// The first batch's offsets (for a duplicate: the original's).
    pub first: AppendInfo,
    /// The offset that must be durable before the produce is acknowledged: the last appended,
    /// or for a duplicate the original's last, which may still be waiting for its fsync.
    pub last_offset: i64,
    /// The batches were a retry of batches already in the log: nothing was appended.
    pub duplicate: bool,
}

#[derive(Debug)]
pub struct PartitionLog {
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// By base offset. Never empty; the last is the active segment.
    pub(crate) segments: BTreeMap<i64, Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) recovery_point: i64,
    pub(crate) epochs: EpochCache,
    /// Idempotent and transactional producers' state, always up to the log end
    /// (`producer_state`).
    pub(crate) producers: ProducerStates,
    /// Transactions whose marker is appended but not yet durable, as (first offset, marker
    /// offset): still unstable, since a crash would take the marker back and reopen them
    /// (Kafka's unreplicated transactions). Emptied as the recovery point passes the markers.
    pub(crate) unstable: Vec<(i64, i64)>,
    /// Bumped by every truncation, so flush tickets taken before it complete as no-ops.
    pub(crate) generation: u64,
    /// A sync of a segment failed: the page cache may now hold pages the kernel marked clean
    /// without writing them (fsyncgate), which no later sync persists, so a retried sync that
    /// "succeeds" proves nothing. The log refuses writes until it is reopened, and recovery
    /// rewrites the tail past the recovery point.
    pub(crate) sync_failed: bool,
    /// A group commit's ticket syncs files without the lock (`flush_begin` to `flush_complete`).
    /// Until it returns, a roll's sync of the segment it closes proves nothing: the ticket's
    /// sync may have failed already, marking pages clean that it never wrote, and the roll's
    /// sync then finds nothing dirty and succeeds (fsyncgate; on Linux one fd's writeback error
    /// is reported to one fsync only). How many such tickets (holding files) are out.
    pub(crate) flushes_in_flight: u32,
    /// What rolls and tickets synced while another ticket was in flight: the recovery point
    /// once none is.
    pub(crate) roll_point_deferred: Option<i64>,
    /// The latest wall time a caller passed in: the clock for follower appends, which carry none.
    pub(crate) clock_ms: i64,
    /// A planted bug (feature `planted-bugs` only; always `None` otherwise).
    pub(crate) planted: Option<crate::PlantedBug>,
}

impl PartitionLog {
    /// Opens (creating if missing) and recovers the log in `dir`. On return every byte of the
    /// log is synced: the recovery point equals the log end offset.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<PartitionLog, LogError> {
        config.validate()?;
        let log = crate::recovery::recover(disk, dir, config, now_ms, None)?;
        log.invariants_check();
        Ok(log)
    }

    /// `open`, with a planted bug switched on (DESIGN.md, Planted bugs).
    #[cfg(feature = "planted-bugs")]
    pub fn open_planted(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
        planted: Option<crate::PlantedBug>,
    ) -> Result<PartitionLog, LogError> {
        config.validate()?;
        crate::recovery::recover(disk, dir, config, now_ms, planted)
    }

    /// The leader path: the batch gets offsets from the log end and the leader's epoch, and the
    /// broker's timestamp on LogAppendTime topics.
    pub fn append(
        &mut self,
        batch: ValidatedBatch,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.clock_observe(now_ms);
        let limit = self.config.max_message_bytes;
        if batch.size() > limit as usize {
            return Err(LogError::RecordTooLarge {
                bytes: batch.size(),
                limit,
            });
        }
        if let Some(latest) = self
            .epochs
            .latest_epoch()
            .filter(|latest| leader_epoch < *latest)
        {
            return Err(LogError::EpochRegression {
                epoch: leader_epoch,
                latest,
            });
        }
        let (batch, log_append_time_ms) = match self.config.message_timestamp_type {
            TimestampType::CreateTime => (batch_timestamp_max_settle(batch), -1),
            TimestampType::LogAppendTime => (batch.with_log_append_time(now_ms), now_ms),
        };
        let batch = batch.with_placement(self.log_end_offset(), leader_epoch);
        let mut info = self.append_placed(batch, now_ms)?;
        info.log_append_time_ms = log_append_time_ms;
        Ok(info)
    }

    /// The leader path for a produce request's batches in one partition: idempotence first (a
    /// retry of batches already here is answered with their offsets and not appended; a gap or
    /// an old epoch refuses every batch), then each batch appended in order.
    pub fn produce(
        &mut self,
        batches: Vec<ValidatedBatch>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Produced, LogError> {
        assert!(!batches.is_empty(), "a produce carries at least one batch");
        let admission = self
            .producers
            .admit_all(batches.iter().map(ValidatedBatch::header));
        let admission = match admission {
            Err(SequenceError::EpochFenced { .. })
                if crate::PlantedBug::active(
                    self.planted,
                    crate::PlantedBug::FencedProducerAccepted,
                ) =>
            {
                Admission::Append
            }
            admission => admission?,
        };
        let appends_again =
            crate::PlantedBug::active(self.planted, crate::PlantedBug::DedupAppendsAgain);
        if let (Admission::Duplicate(original), false) = (admission, appends_again) {
            let log_append_time_ms = match self.config.message_timestamp_type {
                TimestampType::LogAppendTime => original.timestamp_ms,
                TimestampType::CreateTime => -1,
            };
            return Ok(Produced {
                first: AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    log_append_time_ms,
                    log_start_offset: self.log_start_offset,
                },
                last_offset: original.last_offset,
                duplicate: true,
            });
        }
        let mut first = None;
        let mut last_offset = -1;
        for batch in batches {
            let info = self.append(batch, leader_epoch, now_ms)?;
            first.get_or_insert(info);
            last_offset = info.last_offset;
        }
        Ok(Produced {
            first: first.expect("at least one batch"),
            last_offset,
            duplicate: false,
        })
    }

    /// Writes a transaction marker (a control batch: COMMIT if `commit`, else ABORT) for
    /// `producer_id`, ending its open transaction here, if any; WriteTxnMarkers. Refused if the
    /// epoch is older than the producer's (INVALID_PRODUCER_EPOCH) or the coordinator epoch
    /// older than the last marker's (TRANSACTION_COORDINATOR_FENCED). A marker for a producer
    /// with nothing open is still written: an abort so fences the producer's older epochs.
    /// The batch is stamped with `leader_epoch`, the epoch this replica leads at, as a produce.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if producer_id < 0 {
            return Err(SequenceError::EpochFenced {
                producer_id,
                epoch: producer_epoch,
                current: producer_epoch,
            }
            .into());
        }
        self.producers
            .admit_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let marker = ControlMarker {
            commit,
            coordinator_epoch,
        };
        let batch = wire::control_batch_encode(producer_id, producer_epoch, marker, now_ms);
        self.append(batch, leader_epoch, now_ms)
    }

    /// The last stable offset (LSO) given the high watermark: below it every transaction is
    /// decided, so read_committed readers stop there. It is the first offset of the oldest
    /// transaction still open or whose marker is not yet below the high watermark, else the
    /// high watermark; never below the log start.
    /// **Invariant:** `log_start_offset <= LSO <= min(high_watermark, log_end_offset)`.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        let high_watermark = high_watermark.min(self.log_end_offset());
        let ignores_transactions =
            crate::PlantedBug::active(self.planted, crate::PlantedBug::LsoFromHighWatermark);
        let open = self.producers.first_unstable_offset();
        let undecided = self
            .unstable
            .iter()
            .filter(|(_, marker)| *marker >= high_watermark)
            .map(|(first, _)| *first)
            .min();
        let lso = match ignores_transactions {
            true => high_watermark,
            false => [Some(high_watermark), open, undecided]
                .into_iter()
                .flatten()
                .min()
                .expect("the high watermark is there"),
        };
        let lso = lso.max(self.log_start_offset.min(high_watermark));
        assert!(lso <= high_watermark);
        lso
    }

    /// The aborted transactions that overlap `[from, upto)` (a read_committed fetch's range):
    /// last offset at or above `from`, first offset below `upto`. Searches the segments from
    /// the one holding `from` (earlier markers end below it) and stops at the first entry whose
    /// stable offset reaches `upto`: every later abort began at or above it.
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        let start = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(i64::MIN, |(base, _)| *base);
        let mut found = Vec::new();
        for segment in self.segments.range(start..).map(|(_, segment)| segment) {
            for entry in segment.aborted() {
                if entry.last_offset >= from && entry.first_offset < upto {
                    found.push(*entry);
                }
                if entry.last_stable_offset >= upto {
                    return found;
                }
            }
        }
        found
    }

    /// The follower path: the batch keeps the leader's offsets, epoch and timestamps. Its base
    /// offset must be the log end offset (the replica fetched from there).
    pub fn append_replicated(&mut self, batch: ValidatedBatch) -> Result<AppendInfo, LogError> {
        let header = *batch.header();
        if batch.size() > MESSAGE_BYTES_MAX as usize {
            return Err(LogError::RecordTooLarge {
                bytes: batch.size(),
                limit: MESSAGE_BYTES_MAX,
            });
        }
        if header.base_offset != self.log_end_offset() {
            let log_end_offset = self.log_end_offset();
            return Err(LogError::OffsetMismatch {
                base_offset: header.base_offset,
                log_end_offset,
            });
        }
        let epoch = header.partition_leader_epoch;
        if let Some(latest) = self.epochs.latest_epoch().filter(|latest| epoch < *latest) {
            return Err(LogError::EpochRegression { epoch, latest });
        }
        self.append_placed(batch, self.clock_ms)
    }

    fn append_placed(
        &mut self,
        batch: ValidatedBatch,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.writable()?;
        let header = *batch.header();
        let log_end_offset = self.log_end_offset();
        assert_eq!(
            header.base_offset, log_end_offset,
            "appended offsets are contiguous"
        );
        if self.roll_due(&batch, now_ms) {
            self.roll(now_ms)?;
        }
        if self
            .epochs
            .assign(header.partition_leader_epoch, header.base_offset)
        {
            self.epochs.write(&*self.disk, &self.dir)?;
        }
        self.active_mut().append(&batch, now_ms)?;
        assert_eq!(self.log_end_offset(), header.next_offset());
        if let Some(completed) = self.producers.apply_batch(&batch) {
            if let Some(first) = completed.first_offset {
                self.unstable.push((first, completed.last_offset));
            }
            if let Some(entry) = self.producers.aborted_entry(&completed) {
                self.active_mut().aborted_push(entry);
            }
        }
        Ok(AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
        })
    }

    fn roll_due(&self, batch: &ValidatedBatch, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let bytes_over = active.size_bytes() + batch.size() as u64 > self.config.segment_bytes;
        let relative_last = batch.header().last_offset() - active.base_offset();
        bytes_over || relative_last > i64::from(u32::MAX) || self.roll_due_by_time(now_ms)
    }

    pub(crate) fn roll_due_by_time(&self, now_ms: i64) -> bool {
        let active = self.active();
        let since_ms = active
            .rolling_ms()
            .map_or(0, |rolling_ms| now_ms.saturating_sub(rolling_ms));
        !active.is_empty() && since_ms > self.config.segment_ms
    }

    /// Closes the active segment and starts a new one at the log end. The closed segment is
    /// synced and the new file's entry made durable before anything moves, so a failure (EIO,
    /// ENOSPC) leaves the log as it was and a crash anywhere recovers by scanning. The closed
    /// segment's index files come last and are best effort: they only speed up recovery, which
    /// rebuilds missing or damaged ones, and the active segment must never have any on disk.
    pub(crate) fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let base_offset = self.log_end_offset();
        let interval = self.config.index_interval_bytes;
        let sync_skipped =
            crate::PlantedBug::active(self.planted, crate::PlantedBug::RollSkipsFsync);
        assert!(!self.active().is_empty(), "empty segments are not rolled");
        self.writable()?;
        if !sync_skipped {
            self.active()
                .sync()
                .inspect_err(|_| self.sync_failed = true)?;
        }
        let mut segment = Segment::create(&*self.disk, &self.dir, base_offset, interval, now_ms)?;
        if let Err(error) = self.disk.sync_dir(&self.dir) {
            let _ = self.disk.remove_file(segment.path());
            return Err(error).context("sync", &self.dir);
        }
        runtime::buggify::hit(&*self.disk, runtime::buggify::Site::SegmentRoll);
        self.active_mut().seal();
        if let Err(error) = self.active().index_files_write(&*self.disk, &self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "index files not written; recovery will rebuild them");
            let _ = index_files_remove(&*self.disk, &self.dir, self.active().base_offset());
        }
        segment.rolling_start(now_ms);
        self.segments.insert(base_offset, segment);
        if self.flushes_in_flight > 0 {
            // The checkpoint keeps the older recovery point, so a recovery rescans and
            // rewrites the closed segment if the ticket's sync turns out to have failed.
            tracing::trace!(dir = %self.dir.display(), base_offset, "a roll's sync counts once the group commit in flight returns");
            self.roll_point_deferred = Some(base_offset);
        } else {
            self.recovery_point_raise(base_offset);
        }
        self.checkpoint_write()?;
        self.producer_snapshot_write();
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled a new segment");
        Ok(())
    }

    /// Captures what a flush must sync: the active segment if it holds unsynced batches (closed
    /// segments were synced at roll). Until the ticket completes, rolls do not move the
    /// recovery point (`flushes_in_flight`).
    pub fn flush_begin(&mut self) -> FlushTicket {
        let offset_end = self.log_end_offset();
        let files = match offset_end > self.recovery_point {
            true => vec![self.active().file().clone()],
            false => Vec::new(),
        };
        let delay = match files.is_empty() {
            true => runtime::SyncDelay::default(),
            false => self.disk.sync_delay(),
        };
        self.flushes_in_flight += u32::from(!files.is_empty());
        FlushTicket {
            files,
            offset_end,
            generation: self.generation,
            delay,
        }
    }

    /// Records a ticket whose `sync` returned `Ok`. Not after a failed sync (`sync_failed`):
    /// the ticket's sync ran without the lock, perhaps after the failure, and then its success
    /// proves nothing (fsyncgate).
    pub fn flush_complete(&mut self, ticket: FlushTicket) {
        if !ticket.files.is_empty() {
            self.flushes_in_flight -= 1;
        }
        if ticket.generation != self.generation || self.sync_failed {
            return;
        }
        assert!(
            ticket.offset_end <= self.log_end_offset(),
            "the log only grew since the ticket"
        );
        // Another sync still in flight may yet fail (fsyncgate): this one counts with it.
        let reached = ticket.offset_end.max(self.roll_point_deferred.unwrap_or(0));
        if self.flushes_in_flight > 0 {
            self.roll_point_deferred = Some(reached);
            return;
        }
        // The tickets' syncs and the rolls' syncs made meanwhile all succeeded: they count.
        self.roll_point_deferred = None;
        self.recovery_point_raise(reached);
        self.invariants_check();
    }

    /// Moves the recovery point up to `offset`: transactions whose markers it passes are
    /// decided for good.
    fn recovery_point_raise(&mut self, offset: i64) {
        self.recovery_point = self.recovery_point.max(offset);
        let recovery_point = self.recovery_point;
        self.unstable
            .retain(|(_, marker)| *marker >= recovery_point);
    }

    /// Syncs everything appended so far.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.writable()?;
        let ticket = self.flush_begin();
        let synced = ticket.sync().context("sync", self.active().path());
        synced.inspect_err(|_| self.sync_failed = true)?;
        self.flush_complete(ticket);
        Ok(())
    }

    /// Whole batches from the one containing `offset`, below `max_offset` (exclusive: the high
    /// watermark), at least one, then while they fit `max_bytes`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, LogError> {
        self.offset_check(offset)?;
        batches_read(
            &self.segments,
            offset,
            max_bytes,
            max_offset.min(self.log_end_offset()),
            self.planted,
        )
    }

    /// The first record at or after the log start with a timestamp at or above `timestamp_ms`:
    /// its offset and timestamp (ListOffsets). `None` if there is none.
    ///
    /// The walk decides from batch headers read without their CRC (their max timestamp, length
    /// and base offset), so one misread bit could skip the batch that holds the answer or move
    /// it. The lookup therefore runs twice on fresh reads: a transient misread does not repeat,
    /// and two answers that differ are refused as corrupt (the client retries) rather than
    /// served, as reads refuse a batch located two ways.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let first = self.offset_for_timestamp_once(timestamp_ms)?;
        let again = self.offset_for_timestamp_once(timestamp_ms)?;
        if first != again {
            // `site`: the simulator counts these, so regression seeds can show they meet it.
            tracing::warn!(
                site = "timestamp-lookup-differs",
                timestamp_ms,
                "two timestamp lookups disagree"
            );
            return Err(LogError::Corrupt {
                path: self.dir.clone(),
                position: 0,
                reason: format!(
                    "timestamp {timestamp_ms} looked up twice gave {first:?} and {again:?}"
                ),
            });
        }
        Ok(first)
    }

    fn offset_for_timestamp_once(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.timestamp_max() < timestamp_ms
                || segment.next_offset() <= self.log_start_offset
            {
                continue;
            }
            let relative = segment.time_index().start_for(timestamp_ms);
            let start = (segment.base_offset() + i64::from(relative)).max(self.log_start_offset);
            let Some((mut position, mut header)) = segment.locate(start)? else {
                continue;
            };
            // Bounded: each step moves forward by a whole batch.
            loop {
                if header.max_timestamp >= timestamp_ms {
                    if let Some(found) =
                        self.record_for_timestamp(segment, position, &header, timestamp_ms)?
                    {
                        return Ok(Some(found));
                    }
                }
                position += header.size() as u64;
                if position >= segment.size_bytes() {
                    break;
                }
                header = segment.header_at(position)?;
            }
        }
        Ok(None)
    }

    /// The first record at or above `timestamp_ms` in the batch the walk found at `position`
    /// (`walked`, its header as the walk read it).
    fn record_for_timestamp(
        &self,
        segment: &Segment,
        position: u64,
        walked: &BatchHeader,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let mut bytes = vec![0; walked.size()];
        segment.read_exact(&mut bytes, position)?;
        let corrupt = |reason: String| LogError::Corrupt {
            path: segment.path().to_path_buf(),
            position,
            reason,
        };
        let batch =
            ValidatedBatch::validate(bytes.into()).map_err(|error| corrupt(error.to_string()))?;
        // The CRC does not cover baseOffset: a misread one would name the wrong records.
        let base_offset = batch.header().base_offset;
        if base_offset != walked.base_offset
            || base_offset < segment.base_offset()
            || base_offset >= segment.next_offset()
        {
            // `site`: the simulator counts these, so regression seeds can show they meet it.
            tracing::warn!(
                site = "timestamp-batch-misread",
                base_offset,
                "a timestamp lookup read a batch at another base offset than it walked"
            );
            return Err(corrupt(format!(
                "batch read with base offset {base_offset}, walked as {}",
                walked.base_offset
            )));
        }
        let section = records_section(&batch).map_err(corrupt)?;
        let records = records_parse(&section, batch.header()).map_err(corrupt)?;
        Ok(records
            .iter()
            .find(|record| {
                record.offset >= self.log_start_offset && record.timestamp >= timestamp_ms
            })
            .map(|record| (record.offset, record.timestamp)))
    }

    /// Removes every batch at or above `offset` (a follower truncating to its leader's history).
    /// Batches are indivisible: a batch containing `offset` goes too. Durable on return, so a
    /// crash never brings truncated batches back.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset.max(0));
        }
        let first_base = *self.segments.keys().next().expect("never empty");
        if offset < first_base {
            // Compaction emptied the head of the log: no batch below `offset` remains.
            self.segments_reset(offset)?;
            return self.truncation_finish(offset, i64::MAX);
        }
        self.generation += 1;
        self.roll_point_deferred = None;
        let base = *self
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset >= first base")
            .0;
        let position = match self.segments[&base].locate(offset)? {
            Some((position, _)) => position,
            None => self.segments[&base].size_bytes(),
        };
        let later: Vec<i64> = self
            .segments
            .range(base + 1..)
            .map(|(base, _)| *base)
            .collect();
        for later_base in later.into_iter().rev() {
            self.segments.remove(&later_base);
            segment_files_remove(&*self.disk, &self.dir, later_base)?;
        }
        // The segment becomes the active one: its index files on disk no longer describe it.
        index_files_remove(&*self.disk, &self.dir, base)?;
        self.disk.sync_dir(&self.dir).context("sync", &self.dir)?;
        let segment = self.segments.remove(&base).expect("located above");
        // What is left of a segment without aborts has none: only one with some is rebuilt.
        let txn_index_from = match segment.aborted().is_empty() {
            true => i64::MAX,
            false => base,
        };
        let segment = segment.truncate(
            &*self.disk,
            &self.dir,
            position,
            self.config.index_interval_bytes,
            self.clock_ms,
        )?;
        self.segments.insert(base, segment);
        self.truncation_finish(offset, txn_index_from)
    }

    /// The bookkeeping after a truncation: offsets, checkpoint, epoch cache, producer state and
    /// the transaction index of the segments from `txn_index_from` (the one cut, if it had any).
    fn truncation_finish(&mut self, offset: i64, txn_index_from: i64) -> Result<(), LogError> {
        let log_end_offset = self.log_end_offset();
        self.log_start_offset = self.log_start_offset.min(log_end_offset);
        // The truncated segment was synced whole by the cut and the ones before it at their
        // rolls: everything left is durable.
        self.recovery_point = log_end_offset;
        self.checkpoint_write()?;
        if self.epochs.truncate_from_end(log_end_offset) {
            self.epochs.write(&*self.disk, &self.dir)?;
        }
        self.unstable.clear();
        self.producers_rebuild(txn_index_from)?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset, "truncated");
        self.invariants_check();
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower far behind a leader whose log
    /// starts past this one's end). Durable on return.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.segments_reset(offset)?;
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.checkpoint_write()?;
        self.epochs.clear();
        self.epochs.write(&*self.disk, &self.dir)?;
        self.producer_snapshots_clear()?;
        self.producers = ProducerStates::new(offset);
        self.unstable.clear();
        tracing::info!(dir = %self.dir.display(), offset, "truncated fully");
        self.invariants_check();
        Ok(())
    }

    /// Replaces every segment by one empty segment at `offset`, durably.
    fn segments_reset(&mut self, offset: i64) -> Result<(), LogError> {
        assert!(offset >= 0);
        self.generation += 1;
        self.roll_point_deferred = None;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases.into_iter().rev() {
            self.segments.remove(&base);
            segment_files_remove(&*self.disk, &self.dir, base)?;
        }
        let interval = self.config.index_interval_bytes;
        let segment = Segment::create(&*self.disk, &self.dir, offset, interval, self.clock_ms)?;
        self.disk.sync_dir(&self.dir).context("sync", &self.dir)?;
        self.segments.insert(offset, segment);
        Ok(())
    }

    /// Moves the log start offset up (DeleteRecords); durable on return. Offsets below it are
    /// no longer readable; retention removes the segments wholly below it.
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<(), LogError> {
        if offset <= self.log_start_offset {
            return Ok(());
        }
        if offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        // The start must not pass the recovery point: a crash could then lose the bytes the
        // start points at. Deleting records the replicas have not synced is rare; sync them.
        if offset > self.recovery_point {
            self.flush()?;
        }
        // A group commit in flight holds the recovery point back until it returns
        // (`flushes_in_flight`): the start waits for it (a follower moves it again at its next
        // fetch; DeleteRecords asks for no more than the high watermark, which is durable).
        let offset = offset.min(self.recovery_point);
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.log_start_offset = offset;
        self.checkpoint_write()?;
        self.epochs_truncate_from_start()?;
        self.invariants_check();
        Ok(())
    }

    /// New settings take effect from the next operation (a smaller `segment_bytes` rolls at the
    /// next append). The broker validates topic configs on the way in.
    /// Whether a sync of this log failed since it was opened (`sync_failed`): its partition must
    /// go offline until a restart recovers it.
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    /// Records a sync of this log's files that failed outside it (the broker's group commit).
    pub fn sync_failure_note(&mut self) {
        self.sync_failed = true;
        if let Some(offset) = self.roll_point_deferred.take() {
            tracing::warn!(
                site = "roll-sync-voided", dir = %self.dir.display(), offset,
                recovery_point = self.recovery_point,
                "a group commit's sync failed while rolls synced its files: their syncs prove nothing, the recovery point stays"
            );
        }
    }

    fn writable(&self) -> Result<(), LogError> {
        match self.sync_failed {
            true => Err(LogError::SyncFailed {
                dir: self.dir.clone(),
            }),
            false => Ok(()),
        }
    }

    pub fn config_update(&mut self, config: LogConfig) {
        assert_eq!(
            config.validate(),
            Ok(()),
            "configs are validated before they reach the log"
        );
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size_bytes).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// OffsetForLeaderEpoch (KIP-101): the largest epoch at or below `leader_epoch` and the
    /// start offset of the next higher epoch, or the log end offset if it is the latest. Asked
    /// for an epoch older than all, answers that epoch and the first known epoch's start.
    pub fn epoch_end_offset(&self, leader_epoch: i32) -> Option<(i32, i64)> {
        self.epochs
            .end_offset_for(leader_epoch, self.log_end_offset())
    }

    /// The leader epoch of the batch holding `offset`, by the epoch cache (Kafka's
    /// `epochForOffset`); `None` below the first known epoch.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.epochs.epoch_at(offset)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The leader-epoch cache as (epoch, start offset) pairs, both strictly increasing: what a
    /// follower's replica core starts from.
    pub fn epochs(&self) -> Vec<(i32, i64)> {
        let entries = self.epochs.entries().iter();
        entries
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    /// The producers' state (read-only: it changes only with the log).
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`); returns how
    /// many. Their next batch is accepted at any sequence, as an unknown producer's.
    pub fn producers_expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(crate) fn clock_observe(&mut self, now_ms: i64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    fn offset_check(&self, offset: i64) -> Result<(), LogError> {
        match offset < self.log_start_offset || offset > self.log_end_offset() {
            true => Err(self.out_of_range(offset)),
            false => Ok(()),
        }
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// The disk this log lives on (the broker reaches aimed-fault sites through it).
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    pub(crate) fn checkpoint_write(&self) -> Result<(), LogError> {
        let checkpoint = LogCheckpoint {
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
        };
        checkpoint.write(&*self.disk, &self.dir)
    }

    pub(crate) fn epochs_truncate_from_start(&mut self) -> Result<(), LogError> {
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs.write(&*self.disk, &self.dir)?;
        }
        Ok(())
    }

    /// Cheap invariants, checked after every state change (assertions are on in release).
    pub(crate) fn invariants_check(&self) {
        assert!(self.log_start_offset <= self.recovery_point);
        assert!(self.recovery_point <= self.log_end_offset());
        assert_eq!(
            self.producers.end_offset(),
            self.log_end_offset(),
            "producer state covers the whole log of {}",
            self.dir.display()
        );
        if let Some(entry) = self.epochs.entries().last() {
            assert!(entry.start_offset <= self.log_end_offset());
        }
        if let Some(first) = self.producers.first_unstable_offset() {
            assert!(
                first < self.log_end_offset(),
                "open transactions lie in the log"
            );
        }
        assert!(
            self.unstable
                .iter()
                .all(|(first, marker)| first < marker && *marker >= self.recovery_point),
            "undecided transactions are exactly those whose marker is not durable"
        );
        // The index path of the active segment never exists on disk: it would be stale.
        debug_assert!(!self.disk.exists(&segment_path(
            &self.dir,
            self.active().base_offset(),
            INDEX_SUFFIX
        )));
    }
}
