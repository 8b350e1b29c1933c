//! The issue-13 bugs that live in the replica core, switched on one at a time by its tests to
//! prove the property test catches each. The simulator plants them as `crate::planted::Bug`s
//! (`Bug::REPLICATION`), which `ReplicaBug::of` maps here.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReplicaBug {
    /// The HW is the minimum over every replica's durable end, not the ISR's: a replica out of
    /// the ISR holds it back (and a partition never recovers from a dead replica).
    HwOverAllReplicas,
    /// The follower fetches from its log end before fsyncing it, so the leader counts bytes a
    /// power loss takes back on the follower.
    AckBeforeFollowerFsync,
    /// The leader applies an ISR shrink at once instead of waiting for the controller: the HW
    /// passes a follower the controller still counts (and may elect).
    IsrShrinkLocal,
    /// The follower never names its last fetched epoch, so a diverging tail is never truncated
    /// and the leader's records are appended after it.
    SkipTruncation,
}

impl ReplicaBug {
    pub const ALL: [ReplicaBug; 4] = [
        ReplicaBug::HwOverAllReplicas,
        ReplicaBug::AckBeforeFollowerFsync,
        ReplicaBug::IsrShrinkLocal,
        ReplicaBug::SkipTruncation,
    ];

    /// The core's bug among the broker's planted one, if it lives here.
    pub fn of(planted: Option<crate::planted::Bug>) -> Option<ReplicaBug> {
        use crate::planted::Bug;
        match planted? {
            Bug::HwOverAllReplicas => Some(ReplicaBug::HwOverAllReplicas),
            Bug::AckBeforeFollowerFsync => Some(ReplicaBug::AckBeforeFollowerFsync),
            Bug::IsrShrinkLocal => Some(ReplicaBug::IsrShrinkLocal),
            Bug::SkipTruncation => Some(ReplicaBug::SkipTruncation),
            _ => None,
        }
    }

    /// Whether `bug` is switched on in `planted`. Always false without the feature.
    pub fn active(planted: Option<ReplicaBug>, bug: ReplicaBug) -> bool {
        cfg!(feature = "planted-bugs") && planted == Some(bug)
    }
}
