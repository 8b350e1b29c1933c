//! Named scenarios (a workload crossed with the faults it may meet) and seed sweeps over them.
//!
//! A scenario fixes what may happen; each seed's swarm options (`sim::options`) decide what does.
//! Sweeps are what `cargo test` runs (in the madsim build) and what `ci/sim sweep` prints.

use sim::options::{FaultMix, Workload};

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub faults: FaultMix,
    pub workload: Workload,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "single-quiet",
        description: "one broker, producers and consumers, no faults: the baseline every run must pass",
        faults: FaultMix::NONE,
        workload: Workload::Assigned,
    },
    Scenario {
        name: "single-crash",
        description: "one broker crashing and restarting (unsynced writes lost or torn) under disk faults",
        faults: FaultMix { crash: true, disk: true, ..FaultMix::NONE },
        workload: Workload::Assigned,
    },
    Scenario {
        name: "single-chaos",
        description: "one broker under every fault: crashes, pauses, partitions, clock skew, disk faults, latency",
        faults: FaultMix::ALL,
        workload: Workload::Assigned,
    },
    Scenario {
        name: "single-groups",
        description: "a consumer group whose members crash, rejoin and stall past their session \
                      while one broker crashes and pauses: committed offsets, rebalances, fencing",
        faults: FaultMix { swarm: true, crash: true, pause: true, disk: true, ..FaultMix::NONE },
        workload: Workload::Group,
    },
    Scenario {
        name: "single-retention",
        description: "one broker deleting segments by retention.ms and retention.bytes while it \
                      crashes, pauses and meets disk faults; records carry odd timestamps",
        faults: FaultMix { swarm: true, crash: true, pause: true, disk: true, ..FaultMix::NONE },
        workload: Workload::Retention,
    },
    Scenario {
        name: "single-compaction",
        description: "one broker compacting a keyed topic with overwrites and tombstones (some \
                      seeds compact,delete) while it crashes, pauses and meets disk faults",
        faults: FaultMix { swarm: true, crash: true, pause: true, disk: true, ..FaultMix::NONE },
        workload: Workload::Compaction,
    },
    Scenario {
        name: "single-txn",
        description: "transactions across topics (some aborted, some abandoned to time out) and \
                      consume-transform-produce processors, read committed, while one broker \
                      crashes in every way, pauses, skews its clock and meets disk faults",
        faults: FaultMix { swarm: true, crash: true, pause: true, clock_skew: true, disk: true, ..FaultMix::NONE },
        workload: Workload::Transactions,
    },
    Scenario {
        name: "cluster-metadata",
        description: "3 or 5 brokers in cluster mode (broker::serve with voters) taking Kafka \
                      admin requests at random brokers while they crash in every way (power \
                      losses aimed at unsynced Raft batches), pause, lose their leader to \
                      isolation, split majority/minority, lose one-way links, skew clocks and \
                      meet disk faults on a minority; the metadata-log checker, and every \
                      broker's Metadata and DescribeCluster after heal",
        faults: FaultMix { swarm: true, crash: true, pause: true, network_partition: true, clock_skew: true, disk: true, network_delay: false },
        workload: Workload::ClusterMetadata,
    },
    Scenario {
        name: "cluster-crash",
        description: "3 or 5 brokers in cluster mode serving a replicated topic (RF 3, or 5; \
                      min.insync.replicas 2) to acks=all producers and consumers while they \
                      crash in every way, partition leaders first, whole-cluster power losses \
                      (some right after a produce is acknowledged), a node dead for good in \
                      some seeds, disk faults on a minority; both checkers, a full ISR and an \
                      acks=all write to every partition after heal",
        faults: FaultMix { swarm: true, crash: true, disk: true, ..FaultMix::NONE },
        workload: Workload::ClusterData,
    },
    Scenario {
        name: "cluster-partition",
        description: "the replicated topic while partition leaders are cut off from their \
                      followers, the controller or the clients, links go one-way or flap every \
                      100-300 ms, nodes pause or are isolated, and messages are delayed",
        faults: FaultMix { swarm: true, pause: true, network_partition: true, network_delay: true, ..FaultMix::NONE },
        workload: Workload::ClusterData,
    },
    Scenario {
        name: "cluster-chaos",
        description: "the replicated topic under every fault: crashes and whole-cluster power \
                      losses, pauses, leaders cut off, flapping and one-way links, clock skew, \
                      latency, and disk faults on a minority",
        faults: FaultMix::ALL,
        workload: Workload::ClusterData,
    },
    Scenario {
        name: "cluster-groups",
        description: "a consumer group on 3 or 5 brokers whose coordinator is the leader of a \
                      replicated __consumer_offsets partition (RF 3): members crash, rejoin and \
                      stall while brokers crash (partition leaders first), pause and are cut \
                      off, so the coordinator moves and rebuilds the group from the log; \
                      committed offsets, rebalances, fencing, and the data checks",
        faults: FaultMix { swarm: true, crash: true, pause: true, network_partition: true, disk: true, ..FaultMix::NONE },
        workload: Workload::ClusterGroups,
    },
    Scenario {
        name: "cluster-txn",
        description: "transactions on 3 or 5 brokers: the transaction coordinator is the leader \
                      of a replicated __transaction_state partition; brokers crash, pause and \
                      are cut off, coordinator first, so it moves and rebuilds from the log; \
                      markers to partition leaders on other brokers; read_committed, aborted \
                      reads, and the data checks",
        faults: FaultMix { swarm: true, crash: true, pause: true, network_partition: true, disk: true, ..FaultMix::NONE },
        workload: Workload::ClusterTxn,
    },
];

pub fn scenario_find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|scenario| scenario.name == name)
}

/// The command that replays one seed.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("ci/sim run --scenario {scenario} --seed {seed}")
}

pub mod sweep;
pub use sweep::{run_seed, sweep, SeedOutcome, SweepSummary};

#[cfg(madsim)]
pub mod planted;

/// Runs one seed in this process (the `gregor-sim run` path).
#[cfg(madsim)]
pub fn run(scenario: &Scenario, seed: u64, trace_lines: bool) -> sim::world::RunResult {
    sim::world::run(
        scenario.name,
        scenario.faults,
        scenario.workload,
        seed,
        trace_lines,
        None,
    )
}
