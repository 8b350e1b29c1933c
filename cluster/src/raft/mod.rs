//! The Raft glue: raft-rs (`RawNode`) decides, this module persists, sends and applies.
//!
//! - `storage`: `DurableStorage`, raft-rs's `Storage` on a `runtime::Disk` (CRC-framed append-only
//!   log, atomically replaced snapshot file, torn-tail recovery).
//! - `node`: `RaftNode`, one `RawNode` driving one `StateMachine` under the Ready contract.
//! - `planted`: the glue's planted bugs (`RaftBug`), compiled in only with `planted-bugs`.
//! - `transport`: raft messages framed for TCP, and the per-peer outbound connections.
//! - `shell`: the async loop (ticks, inbound messages, proposals) and its `RaftHandle`.
//! - `harness` (tests): a seeded in-memory cluster with message loss, partitions and crashes.

pub mod node;
pub mod planted;
pub mod shell;
pub mod storage;
pub mod transport;

#[cfg(test)]
mod harness;

pub use node::{
    Completion, NodeConfig, Outcome, ProposeError, RaftNode, Role, StateMachine, Status,
    PROPOSAL_BYTES_MAX,
};
pub use planted::RaftBug;
pub use shell::{ProposalError, RaftHandle, Shell, ShellConfig};
pub use storage::DurableStorage;
