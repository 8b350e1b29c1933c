//! The gregor broker: a Kafka-compatible log broker.
//!
//! Start at `server::serve`, the one startup path shared by the `gregor` binary and the simulator.
//! A connection (`connection`) decodes frames with `wire` and routes each request to its handler
//! (`handlers/`, one file per API); handlers work on `topics` and `partition`, which wrap the
//! `storage` crate's logs with group commit.

pub mod broker;
pub mod cluster_mode;
pub mod config;
pub mod connection;
mod coordinated;
pub mod group;
pub mod handlers;
pub mod leader_epoch;
pub mod limits;
pub mod maintenance;
pub mod partition;
pub mod planted;
pub mod producer_ids;
pub mod replica;
pub mod server;
pub mod topics;
pub mod txn;

pub use broker::{Broker, NodeContext};
/// Topic names and configs moved to `cluster` (the controller validates them too); the broker
/// keeps using them by this path.
pub use cluster::topic_config;
pub use config::BrokerConfig;
pub use server::{serve, serve_on, ServeError};
