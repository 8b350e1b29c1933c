//! Planted bugs in the Raft glue: realistic mistakes the multi-node harness must catch
//! (DESIGN.md, Planted bugs). The enum always exists so configuration types stay the same; the
//! code paths that misbehave are compiled only with the `planted-bugs` feature.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftBug {
    /// The hard state and entries of a ready are written but synced one ready late, so the
    /// messages that must wait for them (votes, append acknowledgements) go out while a power
    /// loss can still take back what they promise: a node votes twice in one term, a leader
    /// counts an acknowledgement for an entry its follower then loses.
    SendBeforePersist,
    /// Entries are applied to the state machine as soon as they are appended (from the ready's
    /// unstable entries), before they are committed; an entry a new leader overwrites has
    /// already been applied.
    ApplyUncommitted,
    /// At restart the state machine is restored from the snapshot, but Raft is not told that
    /// the snapshot's index is applied: the entries the log keeps below the snapshot (the tail
    /// retained for slow followers) are applied a second time.
    SnapshotWithoutIndex,
}

impl RaftBug {
    /// All of them, for the harness's self-test.
    pub const ALL: [RaftBug; 3] = [
        RaftBug::SendBeforePersist,
        RaftBug::ApplyUncommitted,
        RaftBug::SnapshotWithoutIndex,
    ];

    /// Whether `bug` is switched on in `planted`. Always false without the feature.
    pub fn active(planted: Option<RaftBug>, bug: RaftBug) -> bool {
        cfg!(feature = "planted-bugs") && planted == Some(bug)
    }
}
