//! Aimed faults (FoundationDB's BUGGIFY): named sites in the broker and the storage engine where a
//! fault matters most, such as the middle of a segment roll or the microseconds after a produce is
//! acknowledged. Random timing almost never lands in such a window; a hook at the site can.
//!
//! A site is reached through the node's `Disk`, the one object each simulated node owns: the
//! simulator's disk decides per seed which sites are on, how often they fire and what a firing
//! does (crash the node now, crash it a moment later, stretch an fsync), and counts the firings
//! for the run's summary. Outside the simulator `hit` is a constant `false` and compiles away.

use crate::Disk;

/// A place where an aimed fault may strike. Append new sites at the end: the simulator draws
/// per-site options in this order, so inserting one would change old seeds' worlds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Site {
    /// A group commit's fsync was issued and has not returned: the node crashes before it does.
    FsyncInFlight,
    /// A produce response is on its way to the client: the node crashes right after.
    ProduceReplied,
    /// An OffsetCommit response is on its way to the client: the node crashes right after.
    CommitReplied,
    /// A segment roll has created the next segment but not yet sealed the closed one.
    SegmentRoll,
    /// Compaction has synced its `.swap` file but not yet replaced the old segments.
    CompactionSwap,
    /// A checkpoint file is half replaced (its temporary written, not yet renamed).
    CheckpointWrite,
    /// Recovery has scanned a partition's segments but not yet synced what it kept.
    Recovery,
    /// The group coordinator is replaying `__consumer_offsets` at startup.
    OffsetsReplay,
    /// An fsync takes far longer than usual, so reads and appends pile up behind it.
    FsyncStretch,
    /// A Fetch response is on its way to the client: the node crashes right after, while what
    /// the client just read may still be only in the page cache if the broker served it early.
    FetchReplied,
    /// The transaction coordinator has had every partition's marker written: the node crashes
    /// a moment later, while the coordinator's completion record (or, with a planted bug, its
    /// decision) may not be durable yet. Not in `ALL`: only the transaction scenario aims it
    /// (`sim::options`), so other scenarios' draws stay where they were.
    MarkersWritten,
    /// The transaction coordinator has appended a commit decision (PrepareCommit) to
    /// `__transaction_state` and asked for its fsync: the node loses power somewhere within an
    /// fsync's latency, before or after that fsync and the markers' (which a correct coordinator
    /// sends only once the decision is durable). Not in `ALL`: only the transaction scenario
    /// aims it (`sim::options`).
    DecisionAppended,
    /// A Raft node has written a batch of entries and hard state to its metadata log and not yet
    /// synced it: the node loses power a moment later, after the messages that depend on the
    /// batch left if (planted bug send-before-persist) they left before the sync. Not in `ALL`:
    /// only the cluster scenario aims it (`sim::options`).
    RaftWritten,
}

impl Site {
    pub const ALL: &'static [Site] = &[
        Site::FsyncInFlight,
        Site::ProduceReplied,
        Site::CommitReplied,
        Site::SegmentRoll,
        Site::CompactionSwap,
        Site::CheckpointWrite,
        Site::Recovery,
        Site::OffsetsReplay,
        Site::FsyncStretch,
        Site::FetchReplied,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Site::FsyncInFlight => "fsync-in-flight",
            Site::ProduceReplied => "produce-replied",
            Site::CommitReplied => "commit-replied",
            Site::SegmentRoll => "segment-roll",
            Site::CompactionSwap => "compaction-swap",
            Site::CheckpointWrite => "checkpoint-write",
            Site::Recovery => "recovery",
            Site::OffsetsReplay => "offsets-replay",
            Site::FsyncStretch => "fsync-stretch",
            Site::FetchReplied => "fetch-replied",
            Site::MarkersWritten => "markers-written",
            Site::DecisionAppended => "decision-appended",
            Site::RaftWritten => "raft-written",
        }
    }
}

/// Reports that execution reached `site` on the node that owns `disk`; true if a fault fired.
/// Callers need not look at the answer: the simulator carries the fault out itself.
#[inline(always)]
pub fn hit(disk: &dyn Disk, site: Site) -> bool {
    #[cfg(madsim)]
    {
        disk.buggify(site)
    }
    #[cfg(not(madsim))]
    {
        let _ = (disk, site);
        false
    }
}
