//! Planted bugs: realistic mistakes, switched on one at a time by the simulator to prove that the
//! checker catches each (DESIGN.md, Planted bugs). The enum always exists, so configuration types
//! are the same in every build; the misbehaving code paths exist only with the `planted-bugs`
//! feature, which no release build enables.

use storage::PlantedBug;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// Produce is acknowledged once appended, before the fsync that makes it durable.
    AckBeforeFsync,
    /// Fetch serves up to the log end, past the durable high watermark.
    FetchBeyondDurable,
    /// Recovery accepts torn batches without checking their CRC.
    RecoverySkipsCrc,
    /// Recovery forgets the last offset, so the next append after a restart reuses it.
    OffsetReuseAfterRestart,
    /// A segment roll skips the closed segment's fsync: a crash loses its acknowledged tail.
    RollSkipsFsync,
    /// The group coordinator accepts an OffsetCommit from an older generation: a zombie member
    /// overwrites the new owner's committed offset. The `single-groups` scenario catches it.
    CommitStaleGeneration,
    /// Produce checks each batch's envelope and CRC but not its records, so a CRC-valid batch of
    /// garbage is stored and poisons the partition for every reader (issue 8).
    SkipsRecordValidation,
    /// Recovery trusts the bytes it reads as durable and skips syncing the tail it scanned: after
    /// a process crash they come from the page cache, so consumers see a tail that a power loss
    /// soon after the restart takes back.
    RecoveryTrustsPageCache,
    /// The flusher publishes the durable offset when it issues the fsync, not when the fsync
    /// returns: produces are acknowledged during the fsync's latency, a window of microseconds
    /// to milliseconds that a crash must land in.
    AckAtFsyncStart,
    /// The group coordinator counts an offset commit as persisted once it is appended, before
    /// its fsync: a commit is acknowledged, and served by OffsetFetch, that a crash takes back.
    CommitAckBeforeFsync,
    /// Replaying `__consumer_offsets` keeps a partition's first committed offset instead of the
    /// last (an `or_insert` where the later record must win): after a restart a group's committed
    /// offsets go back to old ones.
    OffsetsReplayKeepsFirst,
    /// Time retention ages a segment by its last modification, ignoring record timestamps:
    /// records stamped in the future are deleted `retention.ms` after their append.
    RetentionByModifiedTime,
    /// The cleaner keeps each key's first record instead of its last.
    CompactionKeepsFirst,
    /// Size retention deletes while the log is over `retention.bytes`, one segment too many.
    RetentionSizeOneTooMany,
    /// A retried idempotent batch is appended again at new offsets instead of being answered
    /// with the original's: duplicates despite idempotence.
    DedupAppendsAgain,
    /// Recovery does not restore the producer state (snapshots and log tail): after a crash a
    /// retry of an acknowledged batch is taken for new and appended again.
    ProducerStateNotRestored,
    /// A parked fetch, once woken, re-reads up to the log end instead of the high watermark: the
    /// wake means "something changed", not "it is durable", and appends that landed during the
    /// fsync that woke it are served before their own fsync. Tail readers in a long poll see it.
    LongPollServesLogEnd,
    /// Storage's `IndexLookupOvershoots`: reads from between two sparse index entries start at
    /// a later batch. Index-heavy seeds (small `index.interval.bytes`) see it.
    IndexLookupOvershoots,
    /// The last stable offset ignores open transactions (it is the high watermark): a
    /// read_committed consumer reads undecided, even aborted, transactions' records.
    LsoFromHighWatermark,
    /// A data batch whose epoch a marker fenced is appended: a zombie producer writes on.
    FencedProducerAccepted,
    /// The transaction coordinator sends COMMIT markers as soon as it appends PrepareCommit,
    /// before that decision is fsynced: a crash then finds partitions committed by a transaction
    /// the coordinator's log never decided, which replay aborts (a torn transaction).
    MarkersBeforeDurableDecision,
    // Issue 13, replication (`Bug::REPLICATION`): the first four live in the replica core
    // (`replica::ReplicaBug::of`), the last two in its shell.
    /// The HW is the minimum over every replica's durable end, not the ISR's.
    HwOverAllReplicas,
    /// A follower fetches (reports) offsets before it fsynced them.
    AckBeforeFollowerFsync,
    /// The leader shrinks its ISR locally, without the controller.
    IsrShrinkLocal,
    /// The follower never truncates a diverging tail.
    SkipTruncation,
    /// Consumers are served up to the leader's fsynced end, above the replicated HW.
    ReadAboveHw,
    /// A leader that loses leadership answers its parked acks=all produces OK.
    StaleLeaderAcks,
    /// A broker that becomes the leader of a replicated `__consumer_offsets` partition serves
    /// its groups without replaying the partition: a moved group starts over, without its
    /// committed offsets.
    OffsetsLoadSkipsReplay,
    /// A broker that loses the leadership of a replicated `__consumer_offsets` partition keeps
    /// serving its groups from memory: a zombie coordinator answers OffsetFetch, heartbeats
    /// and joins from a state the new coordinator has moved past.
    CoordinatorKeepsMovedGroups,
    /// A broker that takes over a replicated `__transaction_state` partition serves its
    /// transactional ids without replaying the partition: a decision the last coordinator made
    /// never gets its markers, and an ongoing transaction is never aborted.
    TxnLoadSkipsReplay,
    /// The transaction coordinator sends every marker to itself, as if it led every partition
    /// (gregor before cluster transactions): a partition led elsewhere never gets its marker.
    MarkersOnlyLocal,
}

impl Bug {
    pub const ALL: &'static [Bug] = &[
        Bug::AckBeforeFsync,
        Bug::FetchBeyondDurable,
        Bug::RecoverySkipsCrc,
        Bug::OffsetReuseAfterRestart,
        Bug::RollSkipsFsync,
        Bug::CommitStaleGeneration,
        Bug::SkipsRecordValidation,
        Bug::RecoveryTrustsPageCache,
        Bug::AckAtFsyncStart,
        Bug::CommitAckBeforeFsync,
        Bug::OffsetsReplayKeepsFirst,
        Bug::RetentionByModifiedTime,
        Bug::CompactionKeepsFirst,
        Bug::RetentionSizeOneTooMany,
        Bug::DedupAppendsAgain,
        Bug::ProducerStateNotRestored,
        Bug::LongPollServesLogEnd,
        Bug::IndexLookupOvershoots,
        Bug::LsoFromHighWatermark,
        Bug::FencedProducerAccepted,
        Bug::MarkersBeforeDurableDecision,
        Bug::OffsetsLoadSkipsReplay,
        Bug::CoordinatorKeepsMovedGroups,
        Bug::TxnLoadSkipsReplay,
        Bug::MarkersOnlyLocal,
    ];

    /// The replication bugs (issue 13), hunted in the cluster data scenarios.
    pub const REPLICATION: &'static [Bug] = &[
        Bug::HwOverAllReplicas,
        Bug::AckBeforeFollowerFsync,
        Bug::IsrShrinkLocal,
        Bug::SkipTruncation,
        Bug::ReadAboveHw,
        Bug::StaleLeaderAcks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::FetchBeyondDurable => "fetch-beyond-durable",
            Bug::RecoverySkipsCrc => "recovery-skips-crc",
            Bug::OffsetReuseAfterRestart => "offset-reuse-after-restart",
            Bug::RollSkipsFsync => "roll-skips-fsync",
            Bug::CommitStaleGeneration => "commit-stale-generation",
            Bug::SkipsRecordValidation => "skips-record-validation",
            Bug::RecoveryTrustsPageCache => "recovery-trusts-page-cache",
            Bug::AckAtFsyncStart => "ack-at-fsync-start",
            Bug::CommitAckBeforeFsync => "commit-ack-before-fsync",
            Bug::OffsetsReplayKeepsFirst => "offsets-replay-keeps-first",
            Bug::RetentionByModifiedTime => "retention-by-modified-time",
            Bug::CompactionKeepsFirst => "compaction-keeps-first",
            Bug::RetentionSizeOneTooMany => "retention-size-one-too-many",
            Bug::DedupAppendsAgain => "dedup-appends-again",
            Bug::ProducerStateNotRestored => "producer-state-not-restored",
            Bug::LongPollServesLogEnd => "long-poll-serves-log-end",
            Bug::IndexLookupOvershoots => "index-lookup-overshoots",
            Bug::LsoFromHighWatermark => "lso-from-high-watermark",
            Bug::FencedProducerAccepted => "fenced-producer-accepted",
            Bug::MarkersBeforeDurableDecision => "markers-before-durable-decision",
            Bug::HwOverAllReplicas => "hw-over-all-replicas",
            Bug::AckBeforeFollowerFsync => "ack-before-follower-fsync",
            Bug::IsrShrinkLocal => "isr-shrink-local",
            Bug::SkipTruncation => "skip-truncation",
            Bug::ReadAboveHw => "read-above-hw",
            Bug::StaleLeaderAcks => "stale-leader-acks",
            Bug::OffsetsLoadSkipsReplay => "offsets-load-skips-replay",
            Bug::CoordinatorKeepsMovedGroups => "coordinator-keeps-moved-groups",
            Bug::TxnLoadSkipsReplay => "txn-load-skips-replay",
            Bug::MarkersOnlyLocal => "markers-only-local",
        }
    }

    /// The storage bug this is, if it lives in the storage engine.
    pub fn storage(self) -> Option<PlantedBug> {
        match self {
            Bug::RecoverySkipsCrc => Some(PlantedBug::RecoverySkipsCrc),
            Bug::OffsetReuseAfterRestart => Some(PlantedBug::OffsetReuseAfterRestart),
            Bug::RollSkipsFsync => Some(PlantedBug::RollSkipsFsync),
            Bug::RecoveryTrustsPageCache => Some(PlantedBug::RecoveryTrustsPageCache),
            Bug::RetentionByModifiedTime => Some(PlantedBug::RetentionByModifiedTime),
            Bug::CompactionKeepsFirst => Some(PlantedBug::CompactionKeepsFirst),
            Bug::RetentionSizeOneTooMany => Some(PlantedBug::RetentionSizeOneTooMany),
            Bug::DedupAppendsAgain => Some(PlantedBug::DedupAppendsAgain),
            Bug::ProducerStateNotRestored => Some(PlantedBug::ProducerStateNotRestored),
            Bug::CommitStaleGeneration | Bug::SkipsRecordValidation | Bug::AckAtFsyncStart => None,
            Bug::CommitAckBeforeFsync | Bug::OffsetsReplayKeepsFirst => None,
            Bug::AckBeforeFsync | Bug::FetchBeyondDurable | Bug::LongPollServesLogEnd => None,
            Bug::IndexLookupOvershoots => Some(PlantedBug::IndexLookupOvershoots),
            Bug::LsoFromHighWatermark => Some(PlantedBug::LsoFromHighWatermark),
            Bug::FencedProducerAccepted => Some(PlantedBug::FencedProducerAccepted),
            Bug::MarkersBeforeDurableDecision => None,
            Bug::HwOverAllReplicas | Bug::AckBeforeFollowerFsync | Bug::IsrShrinkLocal => None,
            Bug::SkipTruncation | Bug::ReadAboveHw | Bug::StaleLeaderAcks => None,
            Bug::OffsetsLoadSkipsReplay | Bug::CoordinatorKeepsMovedGroups => None,
            Bug::TxnLoadSkipsReplay | Bug::MarkersOnlyLocal => None,
        }
    }

    /// Whether `bug` is switched on in `planted`. Always false without the feature.
    pub fn active(planted: Option<Bug>, bug: Bug) -> bool {
        cfg!(feature = "planted-bugs") && planted == Some(bug)
    }
}
