//! The Raft glue: raft-rs (`RawNode`) decides, this module persists, sends and applies.
//!
//! - `storage`: `DurableStorage`, raft-rs's `Storage` on a `runtime::Disk` (CRC-framed append-only
//!   log, atomically replaced snapshot file, torn-tail recovery).
//! - `planted`: the glue's planted bugs (`RaftBug`), compiled in only with `planted-bugs`.

pub mod planted;
pub mod storage;

pub use planted::RaftBug;
pub use storage::DurableStorage;
