//! The cluster's control plane (DESIGN.md, Cluster): a KRaft-style metadata log replicated by
//! raft-rs, the controller state machine that decides what goes into it, and the metadata image
//! every node builds by applying its committed records.
//!
//! Sans-IO cores (the controller, the image, the Raft glue's decisions) with a thin async shell.
//!
//! - `records`: the metadata log's records, one batch per Raft entry, and their encoding.
//! - `image`: `MetadataImage`, what a node has applied; its invariants are asserted as it applies.
//! - `placement`: replica assignment for new partitions.
//! - `controller`: the active controller's decisions (start at `controller/mod.rs`).
//! - `topic_config`: topic names and configs (shared with the broker).
//! - `frame`: the `len | crc | body` framing of raft messages and controller RPCs.
//! - `raft`: the raft-rs glue: durable Raft storage, the Ready contract, transport and shell.
//! - `node`: the running node: `ClusterNode::start` -> `ClusterHandle` (start at `node/mod.rs`).
//! - `planted`: bugs the tests must catch (feature `planted-bugs`).

pub mod controller;
pub mod frame;
pub mod image;
pub mod node;
pub mod placement;
pub mod planted;
pub mod raft;
pub mod records;
pub mod topic_config;

pub use planted::PlantedBug;
