//! Planted bugs: realistic storage mistakes the simulator must catch (DESIGN.md, Planted bugs).
//! The enum always exists so configuration types stay the same; the code paths that misbehave
//! are compiled only with the `planted-bugs` feature, and only `PartitionLog::open_planted` (also
//! feature-gated) can switch one on.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Recovery accepts tail batches whose CRC does not match (torn writes become "valid").
    RecoverySkipsCrc,
    /// A roll does not fsync the closed segment, yet moves the recovery point past it, so its
    /// unsynced tail is acknowledged and a crash loses it.
    RollSkipsFsync,
    /// Recovery forgets the last offset of the log (an off-by-one), so the next append reuses it.
    OffsetReuseAfterRestart,
    /// Recovery takes the bytes it reads for durable and skips syncing the tail it scanned. After
    /// a process crash those bytes come from the page cache, not the disk, so the log serves an
    /// unsynced tail as committed, and a power loss before the next fsync takes it back.
    RecoveryTrustsPageCache,
    /// Time retention ages a segment by its file's last modification, ignoring its records'
    /// timestamps (Kafka before 0.10.1): a segment of records stamped in the future is deleted
    /// `retention.ms` after its last append.
    RetentionByModifiedTime,
    /// Size retention deletes the oldest segment while the log is over `retention.bytes`,
    /// rather than while it would stay at or over it without the segment: one segment too many.
    RetentionSizeOneTooMany,
    /// The cleaner keeps the first record of each key instead of the last: compaction throws
    /// away every key's latest value.
    CompactionKeepsFirst,
    /// A produce that retries batches already in the log appends them again at new offsets
    /// instead of answering with the originals: idempotence without deduplication.
    DedupAppendsAgain,
    /// Recovery neither loads the producer snapshots nor replays the log into the producer
    /// state: after a restart every producer is unknown, so a retry of an acknowledged batch
    /// is appended again.
    ProducerStateNotRestored,
    /// The offset index lookup takes the first entry above the target instead of the last at or
    /// below it (a `partition_point` without the `- 1`), so a read from the middle of a segment,
    /// between two sparse index entries, starts at a later batch and skips records.
    IndexLookupOvershoots,
    /// The last stable offset ignores open transactions: it is the high watermark, so a
    /// read_committed reader gets records of transactions not yet decided, aborted ones too.
    LsoFromHighWatermark,
    /// A data batch whose epoch is older than the producer's (a marker bumped it: the producer
    /// was fenced) is appended instead of refused: a zombie writes into the log.
    FencedProducerAccepted,
}

impl PlantedBug {
    /// Whether `bug` is switched on in `planted`. Always false without the feature.
    pub fn active(planted: Option<PlantedBug>, bug: PlantedBug) -> bool {
        cfg!(feature = "planted-bugs") && planted == Some(bug)
    }
}
