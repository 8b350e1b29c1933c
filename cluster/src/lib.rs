//! The cluster's control plane (DESIGN.md, Cluster): a KRaft-style metadata log replicated by
//! raft-rs, the controller state machine that decides what goes into it, and the metadata image
//! every node builds by applying its committed records.
//!
//! Sans-IO cores (the controller, the image, the Raft glue's decisions) with a thin async shell.

pub mod raft;
