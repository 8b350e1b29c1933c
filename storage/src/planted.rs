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
    /// The offset index lookup takes the first entry above the target instead of the last at or
    /// below it (a `partition_point` without the `- 1`), so a read from the middle of a segment,
    /// between two sparse index entries, starts at a later batch and skips records.
    IndexLookupOvershoots,
}

impl PlantedBug {
    /// Whether `bug` is switched on in `planted`. Always false without the feature.
    pub fn active(planted: Option<PlantedBug>, bug: PlantedBug) -> bool {
        cfg!(feature = "planted-bugs") && planted == Some(bug)
    }
}
