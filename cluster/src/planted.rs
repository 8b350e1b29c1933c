//! Planted bugs: realistic control-plane mistakes the tests and the simulator must catch
//! (DESIGN.md, Planted bugs). The enum always exists so configuration types stay the same; the
//! code paths that misbehave are compiled only with the `planted-bugs` feature, and only a
//! feature-gated constructor (`Controller::with_planted_bug`) can switch one on.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Leader election takes the first ISR member in replica order without skipping fenced
    /// brokers (or the broker being fenced): a fenced broker is still given leadership.
    /// Caught by `controller::model::the_planted_bug_is_caught`.
    FencedBrokerLeads,
    /// Leader election takes the first live replica whether or not it is in the ISR (and adds it
    /// to the ISR so the image stays self-consistent): a stale replica leads and acknowledged
    /// writes are truncated away. Caught by `controller::model` (a new leader from outside the
    /// previous ISR) and `controller::tests`; the cluster data scenarios must catch it too.
    ElectOutsideIsr,
}
