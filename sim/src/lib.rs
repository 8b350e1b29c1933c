//! The simulated world: gregor's real broker and client code on madsim, under faults.
//!
//! - `disk`: `SimDisk`, the true bytes (`MemDisk`) plus a fault overlay. Builds everywhere.
//! - `options`: swarm options drawn from the seed. `trace`: the hashed trace. `sites`: counts of
//!   the faults the broker met and handled, by site. All three build everywhere.
//! - `world` (madsim only): one run, top-down, to a `Verdict`.
//! - `workload`, `nemesis`, `recorder` (madsim only): who does what, and how it is written down.
//! - `log_workload` (madsim only): the retention and compaction workloads' topic configs,
//!   keyed and oddly timestamped records, and log start reports.
//!   `seek_workload` (madsim only): tail readers and seekers, with their lookups and seeks.
//! - `txn_workload` (madsim only): topics, input producers, read_committed readers and the final
//!   drain of the transactional workload; `txn_processes`: its transactional producers and
//!   consume-transform-produce processors.
//! - `cluster_world` (madsim only): 3 or 5 brokers in cluster mode (`broker::serve` with
//!   voters) under crashes, pauses, partitions (the leader isolated, splits, one-way links),
//!   skew, minority disk faults and power losses aimed at unsynced Raft batches, with admin
//!   clients speaking the Kafka protocol; judged by `checker::metadata_log`. `cluster_probe`:
//!   its raw DescribeCluster v2. `cluster_data` (madsim only): the same nodes serving a
//!   replicated topic to the data workload, a nemesis aimed at partition leaders (cut from
//!   followers, controller or clients, flapping links, whole-cluster power losses), a node dead
//!   for good in some seeds; judged by both checkers.
//! - `buggify` (madsim only): aimed faults at the broker's and storage's named sites.

pub mod disk;
pub mod options;
pub mod sites;
pub mod trace;

#[cfg(madsim)]
pub mod buggify;
#[cfg(madsim)]
pub mod cluster_data;
#[cfg(madsim)]
pub mod cluster_probe;
#[cfg(madsim)]
pub mod cluster_world;
#[cfg(madsim)]
pub mod group_workload;
#[cfg(madsim)]
pub mod log_workload;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod recorder;
#[cfg(madsim)]
pub mod seek_workload;
#[cfg(madsim)]
pub mod txn_processes;
#[cfg(madsim)]
pub mod txn_workload;
#[cfg(madsim)]
pub mod workload;
#[cfg(madsim)]
pub mod world;
