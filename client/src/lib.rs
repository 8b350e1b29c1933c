//! A Kafka client (admin, producer, consumer) speaking the Kafka wire protocol over
//! `runtime::net::TcpStream`, so the same code runs on tokio and, seeded, inside madsim.
//!
//! Module map, bottom up:
//! - `error`: `ClientError`, and which errors are retriable or mean stale metadata.
//! - `config`: `ClientConfig` and the named limits on every buffer.
//! - `versions`: API version negotiation as pure functions.
//! - `connection`: one TCP connection: framing, correlation ids, timeouts.
//! - `metadata`: brokers, topics, partition leaders; routing by leader (pure data).
//! - `cluster`: `Cluster`, the metadata cache plus a connection pool per node id.
//! - `partitioner`: Kafka's murmur2 key partitioning and the sticky keyless one.
//! - `records`: record types; RecordBatch encoding and Fetch data decoding.
//! - `producer`: `Producer`, a batching background task behind a cheap handle; idempotent and
//!   transactional modes.
//! - `transaction`: a transactional producer's requests to its coordinators, with retries.
//! - `offsets`: ListOffsets (earliest, latest, by timestamp).
//! - `consumer`: `Consumer`, manual assignment and Fetch.
//! - `admin`: `Admin`: create, delete, list and describe topics; topic configs; groups.
//! - `assignor`: the range and roundrobin assignors; consumer-protocol metadata (pure).
//! - `group`: the coordinator's requests: find it, commit and fetch offsets, list, describe and
//!   delete groups.
//! - `group_consumer`: `GroupConsumer`, subscribe/poll/commit as a member of a consumer group.
//!
//! Every network wait has an application-level timeout (a partitioned link in madsim stalls
//! rather than failing), every frame is flushed (madsim delivers bytes only on flush), and no state
//! is global: each client object owns its metadata cache and connections.

pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod group_consumer;
pub mod metadata;
pub mod offsets;
pub mod partitioner;
pub mod producer;
pub mod records;
pub mod transaction;
pub mod versions;

pub use admin::{Admin, ConfigChange, ConfigEntry, NewTopic};
pub use assignor::Assignor;
pub use cluster::{Cluster, Target};
pub use config::ClientConfig;
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, Offset, OffsetReset};
pub use error::ClientError;
pub use group::{CommitIdentity, GroupDescription, GroupListing, MemberDescription};
pub use group_consumer::{GroupConfig, GroupConsumer, RebalanceEvent};
pub use metadata::{Metadata, TopicPartition};
pub use offsets::{IsolationLevel, ListedOffset};
pub use producer::{Acks, Producer, ProducerConfig};
pub use records::{ConsumerRecord, ProducerRecord, RecordMetadata};
