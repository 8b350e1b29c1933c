//! Swarm options: every knob of a run, drawn from the seed (TigerBeetle's `options_swarm`), so a
//! sweep covers quiet runs, storms and everything between. Each field documents its unit. The
//! whole struct is logged at the start of a run, so a failing seed says what world it lived in.

use crate::disk::DiskFaults;
use rand::Rng;
use runtime::buggify::Site;
use runtime::rng::ChaCha8Rng;
use std::time::Duration;

/// Which faults a scenario allows; the swarm then decides, per seed, which are on and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    /// Swarm testing: each allowed fault is on in about 60% of seeds. Off: every allowed fault
    /// is on in every seed (its rates are still drawn).
    pub swarm: bool,
    pub crash: bool,
    pub pause: bool,
    pub network_partition: bool,
    pub clock_skew: bool,
    pub disk: bool,
    pub network_delay: bool,
}

impl FaultMix {
    pub const NONE: FaultMix = FaultMix {
        swarm: false,
        crash: false,
        pause: false,
        network_partition: false,
        clock_skew: false,
        disk: false,
        network_delay: false,
    };
    pub const ALL: FaultMix = FaultMix {
        swarm: true,
        crash: true,
        pause: true,
        network_partition: true,
        clock_skew: true,
        disk: true,
        network_delay: true,
    };
}

/// What the consumers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Each consumer assigns itself every partition and reads from the start.
    Assigned,
    /// Consumers are members of one group: subscribe, rebalance, commit, crash, rejoin.
    Group,
    /// As `Assigned`, on a topic whose retention deletes segments during the run; records carry
    /// odd timestamps (none, 0, far past, far future) besides the current time.
    Retention,
    /// As `Assigned`, on a compacted topic: keys from a small key space, overwrites, tombstones.
    Compaction,
    /// Kafka transactions (`txn_workload`): transactional producers across two topics, some
    /// transactions aborted or abandoned on purpose; consume-transform-produce processors; every
    /// consumer reads committed.
    Transactions,
    /// The cluster control plane (`cluster_world`, scenario `cluster-metadata`): 3 or 5 nodes
    /// running `cluster::node::ClusterNode`, admin clients creating, deleting and growing topics
    /// at random nodes; the metadata-log checker judges it.
    ClusterMetadata,
    /// Replicated data in the cluster world (`cluster_data`, scenarios `cluster-crash`,
    /// `cluster-partition`, `cluster-chaos`): 3 or 5 nodes in cluster mode, one topic with
    /// `ReplicationPolicy::replication_factor` replicas, acks=all producers and consumers
    /// against every node; both checkers judge it.
    ClusterData,
    /// A consumer group in the replicated data world (`cluster_data`, scenario `cluster-groups`):
    /// `Group`'s members on the cluster, whose group coordinator is the leader of the group's
    /// partition of a replicated `__consumer_offsets` and moves with it.
    ClusterGroups,
    /// Kafka transactions in the replicated data world (`cluster_data`, scenario `cluster-txn`):
    /// `Transactions`' producers, processors and readers on the cluster, on topics replicated
    /// like `ClusterData`'s, whose transaction coordinator is the leader of the transactional
    /// id's partition of `__transaction_state` and whose markers go to partition leaders on other
    /// brokers.
    ClusterTxn,
}

/// The knobs of the `ClusterData` workload (`cluster_data`): the topic's replication and the
/// nemesis's aim at partition leaders.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationPolicy {
    /// The topic's replication factor: 3, or 5 in about 30% of 5-node seeds.
    pub replication_factor: usize,
    /// The topic's `min.insync.replicas` (2, or 1 with one replica).
    pub min_insync: usize,
    /// The brokers' `replica.lag.time.max.ms`.
    pub lag_time_max: Duration,
    /// The brokers' `replica.fetch.wait.max.ms`.
    pub fetch_wait_max: Duration,
    /// The chance that a fault aims at a partition's leader (from the images) rather than a
    /// random node.
    pub leader_aim_rate: f64,
    /// The chance that a crash is a power loss of every node at once (half of them aimed right
    /// after a produce was acknowledged).
    pub whole_cluster_power_loss_rate: f64,
    /// When (as a share of the safety phase) one node dies for good (never restarted), in about
    /// 30% of seeds with replicas to spare; `None`: every node lives to the end.
    pub dead_for_good_at: Option<f64>,
}

/// The knobs of the `ClusterMetadata` workload (`cluster_world`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicy {
    /// Voters, each also a broker: 3 or 5.
    pub node_count: usize,
    /// Admin clients, each one operation at a time at a random node.
    pub admin_count: usize,
    /// Pause between one admin client's operations.
    pub admin_interval: Duration,
    /// Nodes whose disks get the seed's disk faults: a minority (0 when disk faults are off).
    pub disk_faulty_nodes: usize,
    /// The chance that a crash, pause or isolation aims at the controller leader rather than
    /// a random node.
    pub leader_aim_rate: f64,
    /// The chance that a network fault is a majority/minority split or a one-way link rather
    /// than one node's isolation.
    pub split_rate: f64,
    /// Applied entries between two snapshots of the image: small in half the seeds, so that a
    /// run of a few hundred entries snapshots, compacts, and installs snapshots on followers.
    pub snapshot_interval_entries: u64,
}

/// The knobs of the `Transactions` workload (`txn_workload`).
#[derive(Debug, Clone, PartialEq)]
pub struct TxnPolicy {
    /// Transactional producers writing to both data topics.
    pub producer_count: usize,
    /// Consume-transform-produce processors, each owning a share of the input partitions.
    pub processor_count: usize,
    /// Partitions of each data topic, of the input and of the output topic.
    pub data_partitions: i32,
    pub input_partitions: i32,
    pub output_partitions: i32,
    /// A transaction sends 1..=this many records.
    pub sends_max: usize,
    /// The chance that a producer or processor aborts a transaction on purpose.
    pub abort_rate: f64,
    /// The chance that a producer abandons an open transaction (drops the producer without
    /// ending it), leaving the coordinator's timeout to abort it; a processor restarts instead.
    pub abandon_rate: f64,
    /// The producers' `transaction.timeout.ms`.
    pub timeout: Duration,
}

/// The topic's cleanup settings and the record mix of the `Retention` and `Compaction`
/// workloads (`log_workload`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPolicy {
    /// `cleanup.policy` contains `delete` / `compact`.
    pub delete: bool,
    pub compact: bool,
    /// `retention.ms` (`None`: Kafka's default, a week) and `retention.bytes` (`None`: no limit).
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    /// `delete.retention.ms`: how long compaction keeps a tombstone.
    pub delete_retention_ms: i64,
    /// How often the broker runs retention and compaction.
    pub check_interval: Duration,
    /// Keys are drawn from `0..key_count` (compaction); 0: records have no key.
    pub key_count: i64,
    /// The chance that a keyed record is a tombstone (null value).
    pub tombstone_rate: f64,
    /// The chances that a record's timestamp is -1 (none), 0, far in the past, far in the
    /// future, instead of the producer's current time.
    pub timestamp_none_rate: f64,
    pub timestamp_zero_rate: f64,
    pub timestamp_past_rate: f64,
    pub timestamp_future_rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seed: u64,
    pub workload: Workload,
    pub broker_count: usize,
    pub topic_partitions: i32,
    /// The topic's `segment.bytes`: small, so runs roll segments and exercise rolls under crashes.
    pub segment_bytes: u64,
    pub producer_count: usize,
    pub consumer_count: usize,
    /// Simulated time the workload runs with faults.
    pub safety_duration: Duration,
    /// Simulated time allowed, after healing, for every acknowledged write to become readable.
    pub liveness_duration: Duration,
    /// Pause between one producer's sends.
    pub send_interval: Duration,
    /// Mean time between nemesis actions; `None` for a quiet run.
    pub nemesis_interval_mean: Option<Duration>,
    pub crash: bool,
    pub pause: bool,
    pub network_partition: bool,
    /// Largest wall-clock offset given to a broker, in milliseconds (0: none).
    pub clock_skew_ms_max: i64,
    pub disk_faults: DiskFaults,
    /// One-way network latency range.
    pub network_latency: std::ops::Range<Duration>,
    /// Client request timeout: a clogged link stalls rather than errors.
    pub request_timeout: Duration,
    /// The chance that a producer's next send is a batch poisoned on purpose (garbage records,
    /// a wrong count, an unknown codec, ...; `wire::batch::build::Poison`), 0 in most seeds.
    /// The broker must refuse each one and no consumer may read one.
    pub malformed_send_rate: f64,
    /// The aimed-fault sites on in this seed, each with its chance of firing per visit.
    pub buggify: Vec<(Site, f64)>,
    /// Retention and compaction settings (the `Retention` and `Compaction` workloads only).
    pub log_policy: Option<LogPolicy>,
    /// Producers are idempotent and retry internally (half the seeds): retries resend the
    /// same batch, and the checker must still find no duplicate and no lost write.
    pub idempotent_producers: bool,
    /// Consumers that start at the log end and sit there in long polls (`seek_workload`); only
    /// with `Workload::Assigned`, 0 in a third of its seeds.
    pub tail_reader_count: usize,
    /// How long a tail reader's poll lets the broker wait for data (the client caps it at half
    /// the request timeout).
    pub tail_poll_wait: Duration,
    /// Consumers that seek between polls: earliest, latest, by timestamp, arbitrary offsets
    /// (`seek_workload`); only with `Workload::Assigned`. Producers give records explicit
    /// timestamps, recorded for the checker, in seeds that have any.
    pub seeker_count: usize,
    /// The topic's `index.interval.bytes`, set in index-heavy seeds (which also use large
    /// segments, overriding `segment_bytes`), so reads and timestamp lookups land between sparse
    /// index entries in the middle of segments; `None` keeps Kafka's 4096.
    pub index_interval_bytes: Option<u32>,
    /// Records carry a padding header of up to this many bytes (0: none), in some seeds of the
    /// workloads without a log policy (the retention check bounds record sizes): batches then
    /// span many disk sectors, so a torn write can cut through one, and reads cross more
    /// boundaries (fetch sizes, segment ends).
    pub record_padding_max: usize,
    /// The transactional workload's knobs (`Workload::Transactions` and `Workload::ClusterTxn`).
    pub txn: Option<TxnPolicy>,
    /// The cluster world's knobs (`Workload::ClusterMetadata` and the replicated data worlds).
    pub cluster: Option<ClusterPolicy>,
    /// The replicated data world's knobs (`Workload::ClusterData`, `ClusterGroups`, `ClusterTxn`).
    pub replication: Option<ReplicationPolicy>,
}

/// Draws the cluster world's knobs: in every seed, after every other draw (append-only), kept
/// only by the cluster workloads, whose broker count becomes the node count.
fn cluster_draw(rng: &mut ChaCha8Rng, options: &mut Options) {
    let node_count = match rng.gen_bool(0.6) {
        true => 3,
        false => 5,
    };
    let policy = ClusterPolicy {
        node_count,
        admin_count: rng.gen_range(1..=3),
        admin_interval: Duration::from_millis(rng.gen_range(20..400)),
        disk_faulty_nodes: rng.gen_range(1..=(node_count - 1) / 2),
        leader_aim_rate: rng.gen_range(0.2..0.8),
        split_rate: rng.gen_range(0.0..0.6),
        // Drawn below, after every other draw of every seed (append-only).
        snapshot_interval_entries: cluster::node::SNAPSHOT_INTERVAL_ENTRIES,
    };
    if !matches!(
        options.workload,
        Workload::ClusterMetadata
            | Workload::ClusterData
            | Workload::ClusterGroups
            | Workload::ClusterTxn
    ) {
        return;
    }
    options.broker_count = policy.node_count;
    let disk_faulty = options.disk_faults.read_error_rate > 0.0;
    options.cluster = Some(ClusterPolicy {
        disk_faulty_nodes: if disk_faulty {
            policy.disk_faulty_nodes
        } else {
            0
        },
        ..policy
    });
    // Cluster runs are short: the metadata world has no producers or consumers, and every node
    // of the data world costs as much as a single world.
    options.safety_duration = options.safety_duration.min(Duration::from_secs(20));
    options.malformed_send_rate = 0.0;
}

/// Draws record padding (appended after every earlier draw, both draws in every seed).
fn padding_draw(rng: &mut ChaCha8Rng, options: &mut Options) {
    let padded = rng.gen_bool(0.3);
    let padding_max = rng.gen_range(256..=3 * 1024);
    if padded && options.log_policy.is_none() {
        options.record_padding_max = padding_max;
    }
}

/// Draws the transactional workload's knobs: in every seed, after every other draw (append-only),
/// kept only by `Workload::Transactions` and `Workload::ClusterTxn`.
fn txn_draw(rng: &mut ChaCha8Rng, workload: Workload) -> Option<TxnPolicy> {
    let policy = TxnPolicy {
        producer_count: rng.gen_range(1..=3),
        processor_count: rng.gen_range(1..=2),
        data_partitions: rng.gen_range(1..=3),
        input_partitions: rng.gen_range(1..=3),
        output_partitions: rng.gen_range(1..=2),
        sends_max: rng.gen_range(1..=6),
        abort_rate: rng.gen_range(0.05..0.3),
        abandon_rate: match rng.gen_bool(0.5) {
            true => rng.gen_range(0.01..0.05),
            false => 0.0,
        },
        timeout: Duration::from_millis(rng.gen_range(2_000..10_000)),
    };
    matches!(workload, Workload::Transactions | Workload::ClusterTxn).then_some(policy)
}

/// Draws the seek workload's knobs (appended after every earlier draw; all drawn in every seed,
/// so each seed's later draws stay put): tail readers, seekers, index-heavy topics.
fn seek_draw(rng: &mut ChaCha8Rng, workload: Workload, options: &mut Options) {
    let tail_reader_count = rng.gen_range(0..=2);
    let tail_poll_wait = Duration::from_millis(rng.gen_range(1_000..=2_500));
    let seeker_count = rng.gen_range(0..=2);
    let index_heavy = rng.gen_bool(0.35);
    let index_interval_bytes = rng.gen_range(0..=512);
    let segment_bytes_large = rng.gen_range(32 * 1024..=256 * 1024);
    options.tail_poll_wait = tail_poll_wait;
    // The replicated data world reads at the tail and seeks too (issue 13), on its usual
    // segments.
    if !matches!(workload, Workload::Assigned | Workload::ClusterData) {
        return;
    }
    options.tail_reader_count = tail_reader_count;
    options.seeker_count = seeker_count;
    if index_heavy && workload == Workload::Assigned {
        options.index_interval_bytes = Some(index_interval_bytes);
        options.segment_bytes = segment_bytes_large;
    }
}

/// Each aimed-fault site is on in this share of seeds (of those whose scenario allows it):
/// often enough that a 100-seed sweep visits every site, rarely enough that most seeds still
/// test the unaimed paths.
const BUGGIFY_SITE_ON_RATE: f64 = 0.3;

/// A site's typical chance of firing per visit, chosen from how often a run visits it: sites on
/// every flush or produce are visited thousands of times, a restart's recovery a few times.
fn buggify_rate_base(site: Site) -> f64 {
    match site {
        Site::FsyncInFlight | Site::ProduceReplied | Site::FsyncStretch => 0.003,
        Site::FetchReplied => 0.003,
        Site::MarkersWritten => MARKERS_WINDOW_RATE,
        Site::DecisionAppended => DECISION_WINDOW_RATE,
        Site::RaftWritten => RAFT_WRITTEN_RATE,
        Site::CommitReplied | Site::SegmentRoll | Site::CheckpointWrite => 0.03,
        Site::CompactionSwap | Site::Recovery | Site::OffsetsReplay => 0.2,
    }
}

/// Whether the scenario's faults allow `site`: crashes for the crash sites, disk faults for
/// a stretched fsync.
fn buggify_allowed(site: Site, mix: FaultMix) -> bool {
    match site {
        Site::FsyncStretch => mix.disk,
        _ => mix.crash,
    }
}

/// Draws the aimed-fault table. Every site draws its on-switch and rate whether or not it is
/// allowed, so the draws do not shift between scenarios.
fn buggify_draw(rng: &mut ChaCha8Rng, mix: FaultMix) -> Vec<(Site, f64)> {
    Site::ALL
        .iter()
        .filter_map(|site| {
            let on = rng.gen_bool(BUGGIFY_SITE_ON_RATE);
            let rate = buggify_rate_base(*site) * rng.gen_range(0.5..2.0);
            (on && buggify_allowed(*site, mix)).then_some((*site, rate))
        })
        .collect()
}

/// The group scenario aims crashes at commit windows in every seed that may crash (issue 10:
/// a commit acknowledged before its fsync must be caught in at least 10% of seeds): the
/// commit-reply site is on, firing often enough that a run sees several aimed crashes.
/// Draws its rate after every other draw (append-only), so only group seeds move.
fn commit_windows_aim(buggify: &mut Vec<(Site, f64)>, rng: &mut ChaCha8Rng) {
    let rate = COMMIT_WINDOW_RATE * rng.gen_range(0.5..2.0);
    buggify.retain(|(site, _)| *site != Site::CommitReplied);
    buggify.push((Site::CommitReplied, rate));
    buggify.sort_by_key(|(site, _)| *site);
}

/// The transaction scenario aims crashes right after a transaction's markers are written, in
/// every seed that may crash: the window in which a coordinator that sent markers before its
/// decision was durable would lose the decision (the planted bug markers-before-durable-
/// decision was caught in 1 of 200 seeds without it), and in which a correct one must resend
/// markers after replay. Drawn after every other draw (append-only).
fn markers_window_aim(buggify: &mut Vec<(Site, f64)>, rng: &mut ChaCha8Rng) {
    let rate = MARKERS_WINDOW_RATE * rng.gen_range(0.5..2.0);
    buggify.push((Site::MarkersWritten, rate));
    buggify.sort_by_key(|(site, _)| *site);
}

/// The transaction scenario also aims power losses at the moment a commit decision is appended,
/// in every seed that may crash: anywhere within an fsync's latency, so some land after the
/// markers of a coordinator that sent them early (the planted bug markers-before-durable-
/// decision) were written and before the decision was durable, which the recovered coordinator
/// then aborts. Drawn after every other draw (append-only).
fn decision_window_aim(buggify: &mut Vec<(Site, f64)>, rng: &mut ChaCha8Rng) {
    let rate = DECISION_WINDOW_RATE * rng.gen_range(0.5..2.0);
    buggify.push((Site::DecisionAppended, rate));
    buggify.sort_by_key(|(site, _)| *site);
}

/// The cluster scenario aims power losses, in most seeds that may crash, at the moment a Raft
/// batch is written and not yet synced (`raft-written`): the window in which a node that sends
/// before it persists (planted bug send-before-persist) has promised a vote or entries its disk
/// then loses. Drawn after every other draw (append-only).
fn raft_written_aim(buggify: &mut Vec<(Site, f64)>, rng: &mut ChaCha8Rng) {
    let on = rng.gen_bool(0.75);
    let rate = RAFT_WRITTEN_RATE * rng.gen_range(0.5..2.0);
    if on {
        buggify.push((Site::RaftWritten, rate));
        buggify.sort_by_key(|(site, _)| *site);
    }
}

/// The raft-written site's typical chance per visit: every node writes a batch per Raft ready,
/// tens a second, and each firing quiets the node's sites for `buggify::CRASH_GAP`.
const RAFT_WRITTEN_RATE: f64 = 0.02;

/// The decision-appended site's typical chance per visit: a few commits a second.
const DECISION_WINDOW_RATE: f64 = 0.3;

/// The markers-written site's typical chance per visit: transactions end a few times a second.
const MARKERS_WINDOW_RATE: f64 = 0.1;

/// The commit-reply site's typical chance per visit in the group scenario: with a few commits a
/// second and an aimed crash's quiet gap of 2 s, about one aimed crash every few seconds.
const COMMIT_WINDOW_RATE: f64 = 0.1;

/// Failed fdatasyncs: on in a fifth of the seeds whose scenario allows disk faults, rare enough
/// per sync that a run takes a few partitions offline (each until its broker restarts), not all.
fn sync_errors_draw(rng: &mut ChaCha8Rng, mix: FaultMix) -> f64 {
    match (rng.gen_bool(0.2), rng.gen_range(0.0005..0.005)) {
        (true, rate) if mix.disk => rate,
        _ => 0.0,
    }
}

/// Whether an allowed fault is on in this seed. Draws even when the answer is forced, so the
/// rest of the options do not shift between swarm and forced mixes.
fn maybe(rng: &mut ChaCha8Rng, mix: FaultMix, allowed: bool) -> bool {
    let drawn = rng.gen_bool(0.6);
    allowed && (drawn || !mix.swarm)
}

impl Options {
    /// Draws a run's options from its seed's swarm stream, within what the scenario allows.
    /// New draws go after the last existing one (append only): moving or removing a draw shifts
    /// every later one and changes the world of every recorded regression seed.
    pub fn swarm(seed: u64, mix: FaultMix, workload: Workload, rng: &mut ChaCha8Rng) -> Options {
        let crash = maybe(rng, mix, mix.crash);
        let pause = maybe(rng, mix, mix.pause);
        let network_partition = maybe(rng, mix, mix.network_partition);
        let any_nemesis = crash || pause || network_partition;
        let nemesis_interval_mean =
            any_nemesis.then(|| Duration::from_millis(rng.gen_range(500..5_000)));
        let clock_skew_ms_max = if maybe(rng, mix, mix.clock_skew) {
            rng.gen_range(1..120_000)
        } else {
            0
        };
        // Every disk takes time to fsync (a crash can land in that window); a faulty one may be
        // slow about it.
        let sync_delay_max = Duration::from_micros(rng.gen_range(100..20_000));
        let disk_faults = if maybe(rng, mix, mix.disk) {
            let slow = rng.gen_bool(0.3);
            DiskFaults {
                read_error_rate: rng.gen_range(0.0..0.01),
                read_bitflip_rate: rng.gen_range(0.0..0.01),
                write_nospace_rate: rng.gen_range(0.0..0.01),
                sync_delay_max: if slow {
                    sync_delay_max * 20
                } else {
                    sync_delay_max
                },
                // Drawn after every other option (append-only), in `sync_errors_draw`.
                sync_error_rate: 0.0,
            }
        } else {
            DiskFaults {
                sync_delay_max,
                ..DiskFaults::default()
            }
        };
        let latency_max_ms = if maybe(rng, mix, mix.network_delay) {
            rng.gen_range(2..200)
        } else {
            2
        };
        let consumer_count = match workload {
            Workload::Assigned
            | Workload::Retention
            | Workload::Compaction
            | Workload::Transactions
            | Workload::ClusterMetadata
            | Workload::ClusterData
            | Workload::ClusterTxn => rng.gen_range(1..=2),
            Workload::Group | Workload::ClusterGroups => rng.gen_range(2..=4),
        };
        // Struct fields are evaluated in order: draws in the literal below stay where they were,
        // and new draws go after it (append-only, so old seeds keep their worlds).
        let mut options = Options {
            seed,
            workload,
            broker_count: 1,
            topic_partitions: rng.gen_range(1..=4),
            segment_bytes: rng.gen_range(1024..=8 * 1024),
            producer_count: rng.gen_range(1..=5),
            consumer_count,
            safety_duration: Duration::from_secs(rng.gen_range(10..40)),
            liveness_duration: Duration::from_secs(60),
            send_interval: Duration::from_millis(rng.gen_range(1..40)),
            nemesis_interval_mean,
            crash,
            pause,
            network_partition,
            clock_skew_ms_max,
            disk_faults,
            network_latency: Duration::from_millis(1)..Duration::from_millis(latency_max_ms),
            request_timeout: Duration::from_secs(5),
            // Drawn after the fields above and before the aimed faults (new draws go at the end,
            // so old seeds keep their worlds); both draws happen in every seed.
            malformed_send_rate: match (rng.gen_bool(0.25), rng.gen_range(0.01..0.05)) {
                (true, rate) => rate,
                (false, _) => 0.0,
            },
            buggify: Vec::new(),
            log_policy: None,
            idempotent_producers: false,
            tail_reader_count: 0,
            tail_poll_wait: Duration::ZERO,
            seeker_count: 0,
            index_interval_bytes: None,
            record_padding_max: 0,
            txn: None,
            cluster: None,
            replication: None,
        };
        options.buggify = buggify_draw(rng, mix);
        // Drawn last and only by the workloads that use it, so every other seed keeps its world.
        options.log_policy = log_policy_draw(rng, workload, options.segment_bytes);
        if options.log_policy.is_some() {
            // A poisoned batch's size is not bounded by the record mix the retention check
            // counts on (`offset_bytes_max`); the malformed sends have their own scenarios.
            options.malformed_send_rate = 0.0;
        }
        if workload == Workload::Group && mix.crash {
            commit_windows_aim(&mut options.buggify, rng);
        }
        options.disk_faults.sync_error_rate = sync_errors_draw(rng, mix);
        // Drawn last, after every older draw, so regression seeds keep their worlds.
        options.idempotent_producers = rng.gen_bool(0.5);
        // The seek workload's knobs: drawn in every seed, after every other draw.
        seek_draw(rng, workload, &mut options);
        padding_draw(rng, &mut options);
        // The transactional workload's knobs: drawn in every seed, after every other draw.
        options.txn = txn_draw(rng, workload);
        let transactions = matches!(workload, Workload::Transactions | Workload::ClusterTxn);
        if transactions && mix.crash {
            markers_window_aim(&mut options.buggify, rng);
        }
        // Drawn after every older draw (append-only): only transaction seeds move.
        if transactions && mix.crash {
            decision_window_aim(&mut options.buggify, rng);
        }
        if options.txn.is_some() {
            // Poisoned batches have their own scenarios; here every send is transactional or an
            // input record a processor must turn into exactly one output.
            options.malformed_send_rate = 0.0;
        }
        // The cluster world's knobs: drawn in every seed, after every other draw.
        cluster_draw(rng, &mut options);
        // Drawn after every older draw (append-only), only in cluster seeds.
        if let Some(cluster) = options.cluster.as_mut() {
            if rng.gen_bool(0.5) {
                cluster.snapshot_interval_entries = rng.gen_range(4..=64);
            }
        }
        // Drawn after every older draw (append-only), only in cluster seeds that crash.
        if options.cluster.is_some() && options.crash {
            raft_written_aim(&mut options.buggify, rng);
        }
        // The replicated data world's knobs: drawn in every seed, after every other draw.
        replication_draw(rng, &mut options);
        options
    }
}

/// Draws the replicated data world's knobs: in every seed, after every other draw
/// (append-only), kept only by the replicated data worlds (`ClusterData`, `ClusterGroups`,
/// `ClusterTxn`).
fn replication_draw(rng: &mut ChaCha8Rng, options: &mut Options) {
    let five = rng.gen_bool(0.3);
    let lag_time_max = Duration::from_millis(rng.gen_range(300..=3_000));
    let fetch_wait_max = Duration::from_millis(rng.gen_range(20..=500));
    let leader_aim_rate = rng.gen_range(0.3..0.9);
    let whole_cluster_power_loss_rate = rng.gen_range(0.05..0.3);
    let dead = rng.gen_bool(0.3);
    let dead_at = rng.gen_range(0.2..0.8);
    let (Workload::ClusterData | Workload::ClusterGroups | Workload::ClusterTxn, Some(cluster)) =
        (options.workload, &options.cluster)
    else {
        return;
    };
    let replication_factor = match (cluster.node_count, five) {
        (5, true) => 5,
        _ => 3,
    };
    options.replication = Some(ReplicationPolicy {
        replication_factor,
        min_insync: replication_factor.min(2),
        lag_time_max,
        fetch_wait_max,
        leader_aim_rate,
        whole_cluster_power_loss_rate: match options.crash {
            true => whole_cluster_power_loss_rate,
            false => 0.0,
        },
        // A node dead for good takes its replicas with it: only when the rest still make
        // min.insync.replicas (RF=1 would lose the node's partitions outright).
        dead_for_good_at: (dead && replication_factor > 2).then_some(dead_at),
    });
}

/// The cleanup settings of the `Retention` and `Compaction` workloads, small enough that the
/// broker deletes and compacts segments many times in a 10-40 s run.
fn log_policy_draw(
    rng: &mut ChaCha8Rng,
    workload: Workload,
    segment_bytes: u64,
) -> Option<LogPolicy> {
    match workload {
        Workload::Assigned
        | Workload::Group
        | Workload::Transactions
        | Workload::ClusterMetadata
        | Workload::ClusterData
        | Workload::ClusterGroups
        | Workload::ClusterTxn => None,
        Workload::Retention => {
            let check_interval = Duration::from_millis(rng.gen_range(300..3_000));
            // By time, by size, or both.
            let (by_time, by_size) = match rng.gen_range(0..3) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            let retention_ms = rng.gen_range(500..10_000);
            let retention_bytes = (segment_bytes as f64 * rng.gen_range(0.5..3.0)) as u64;
            Some(LogPolicy {
                delete: true,
                compact: false,
                retention_ms: by_time.then_some(retention_ms),
                retention_bytes: by_size.then_some(retention_bytes),
                delete_retention_ms: 0,
                check_interval,
                key_count: 0,
                tombstone_rate: 0.0,
                timestamp_none_rate: rng.gen_range(0.0..0.1),
                timestamp_zero_rate: rng.gen_range(0.0..0.05),
                timestamp_past_rate: rng.gen_range(0.0..0.05),
                // A segment with a far-future record outlives the run by time: rare, or time
                // retention would stall at the first one.
                timestamp_future_rate: rng.gen_range(0.0..0.01),
            })
        }
        Workload::Compaction => {
            let check_interval = Duration::from_millis(rng.gen_range(300..3_000));
            // `compact,delete` in some seeds, with a retention that deletes in longer runs.
            let delete = rng.gen_bool(0.3);
            let retention_ms = rng.gen_range(10_000..40_000);
            Some(LogPolicy {
                delete,
                compact: true,
                retention_ms: delete.then_some(retention_ms),
                retention_bytes: None,
                delete_retention_ms: match rng.gen_bool(0.5) {
                    true => rng.gen_range(0..2_000),
                    false => rng.gen_range(2_000..30_000),
                },
                check_interval,
                key_count: rng.gen_range(2..=24),
                tombstone_rate: rng.gen_range(0.0..0.3),
                timestamp_none_rate: 0.0,
                timestamp_zero_rate: 0.0,
                timestamp_past_rate: 0.0,
                timestamp_future_rate: 0.0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::rng::{stream_rng, Stream};

    fn swarm(seed: u64, mix: FaultMix) -> Options {
        Options::swarm(
            seed,
            mix,
            Workload::Assigned,
            &mut stream_rng(seed, Stream::Swarm, 0),
        )
    }

    /// Crash sites need the scenario to allow crashes, the stretch disk faults, a quiet scenario
    /// has none, and over 100 seeds every site is on somewhere.
    #[test]
    fn buggify_sites_are_drawn_only_where_allowed() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let all = swarm(seed, FaultMix::ALL);
            let no_crash = swarm(
                seed,
                FaultMix {
                    crash: false,
                    ..FaultMix::ALL
                },
            );
            assert!(no_crash
                .buggify
                .iter()
                .all(|(site, _)| *site == Site::FsyncStretch));
            assert_eq!(swarm(seed, FaultMix::NONE).buggify, Vec::new());
            seen.extend(all.buggify.iter().map(|(site, _)| *site));
        }
        assert_eq!(seen.len(), Site::ALL.len(), "{seen:?}");
    }

    /// The transactions on the cluster keep the transactional, cluster and replication knobs,
    /// with the transaction windows aimed as in `single-txn` (the scenario may crash); the single transactional
    /// world stays on one broker.
    #[test]
    fn cluster_txn_draws_transactions_and_replication() {
        for seed in 0..100 {
            let draw = |workload| {
                Options::swarm(
                    seed,
                    FaultMix::ALL,
                    workload,
                    &mut stream_rng(seed, Stream::Swarm, 0),
                )
            };
            let cluster = draw(Workload::ClusterTxn);
            assert!(cluster.txn.is_some(), "{seed}");
            let nodes = cluster.cluster.as_ref().expect("drawn").node_count;
            assert_eq!(cluster.broker_count, nodes);
            assert!(cluster.replication.is_some(), "{seed}");
            assert_eq!(cluster.malformed_send_rate, 0.0);
            assert_eq!((cluster.tail_reader_count, cluster.seeker_count), (0, 0));
            let aimed = |site| cluster.buggify.iter().any(|(aimed, _)| *aimed == site);
            assert!(
                aimed(Site::MarkersWritten) && aimed(Site::DecisionAppended),
                "{seed}"
            );
            let single = draw(Workload::Transactions);
            assert!(single.txn.is_some());
            assert_eq!((single.cluster, single.replication), (None, None));
            assert_eq!(single.broker_count, 1);
        }
    }

    /// Power losses at unsynced Raft batches are aimed only in cluster seeds that crash, and in
    /// most of those; no other scenario's world changes.
    #[test]
    fn raft_written_is_aimed_only_in_crashing_cluster_seeds() {
        let raft_written = |options: &Options| {
            options
                .buggify
                .iter()
                .any(|(site, _)| *site == Site::RaftWritten)
        };
        let mut aimed = 0;
        for seed in 0..100 {
            let draw = |workload| {
                Options::swarm(
                    seed,
                    FaultMix::ALL,
                    workload,
                    &mut stream_rng(seed, Stream::Swarm, 0),
                )
            };
            let cluster = draw(Workload::ClusterMetadata);
            assert!(!raft_written(&cluster) || cluster.crash, "{seed}");
            aimed += usize::from(raft_written(&cluster));
            assert!(!raft_written(&draw(Workload::Transactions)));
            assert!(!raft_written(&swarm(seed, FaultMix::ALL)));
        }
        assert!((20..100).contains(&aimed), "{aimed}");
    }

    /// Padding reaches some assigned and group seeds (both on and off somewhere) and never a
    /// seed with a log policy, whose retention check bounds record sizes.
    #[test]
    fn padding_only_without_log_policy() {
        let mut padded = 0;
        for seed in 0..100 {
            for workload in [Workload::Retention, Workload::Compaction] {
                let options = Options::swarm(
                    seed,
                    FaultMix::ALL,
                    workload,
                    &mut stream_rng(seed, Stream::Swarm, 0),
                );
                assert_eq!(options.record_padding_max, 0, "{seed} {workload:?}");
            }
            let assigned = swarm(seed, FaultMix::ALL);
            padded += usize::from(assigned.record_padding_max > 0);
            assert!(assigned.record_padding_max <= 3 * 1024);
        }
        assert!((10..60).contains(&padded), "{padded}");
    }

    /// Only the assigned and the replicated data workloads use the seek workload's knobs (a group seed's world is what it
    /// was), and over 100 assigned seeds each kind (tail readers, seekers, index-heavy topics)
    /// is both on and off somewhere.
    #[test]
    fn seek_draws_are_appended_and_assigned_only() {
        let (mut tails, mut seekers, mut heavy) = (0, 0, 0);
        for seed in 0..100 {
            let group = Options::swarm(
                seed,
                FaultMix::ALL,
                Workload::Group,
                &mut stream_rng(seed, Stream::Swarm, 0),
            );
            assert_eq!(
                (group.tail_reader_count, group.seeker_count),
                (0, 0),
                "{seed}"
            );
            assert_eq!(group.index_interval_bytes, None);
            let assigned = swarm(seed, FaultMix::ALL);
            tails += usize::from(assigned.tail_reader_count > 0);
            seekers += usize::from(assigned.seeker_count > 0);
            if let Some(interval) = assigned.index_interval_bytes {
                heavy += 1;
                assert!(interval <= 512 && assigned.segment_bytes >= 32 * 1024);
            } else {
                assert!(assigned.segment_bytes <= 8 * 1024);
            }
        }
        for (name, count) in [("tail", tails), ("seeker", seekers), ("heavy", heavy)] {
            assert!((10..90).contains(&count), "{name}: {count}");
        }
    }

    /// The replicated data world's draws come after every other (the metadata world's seeds
    /// keep their options, the policy aside), only `ClusterData` keeps them, RF=5 only on five
    /// nodes, a node dies for good only with replicas to spare, and until the data plane is
    /// wired the topic has one replica.
    #[test]
    fn replication_draws_are_appended_and_cluster_data_only() {
        let (mut five, mut five_nodes, mut dead, mut whole) = (0, 0, 0, 0);
        for seed in 0..200 {
            let draw = |workload| {
                Options::swarm(
                    seed,
                    FaultMix::ALL,
                    workload,
                    &mut stream_rng(seed, Stream::Swarm, 0),
                )
            };
            let metadata = draw(Workload::ClusterMetadata);
            let data = draw(Workload::ClusterData);
            assert_eq!(metadata.replication, None);
            assert_eq!(draw(Workload::Assigned).replication, None);
            assert_eq!(
                Options {
                    workload: Workload::ClusterMetadata,
                    replication: None,
                    tail_reader_count: 0,
                    seeker_count: 0,
                    ..data.clone()
                },
                metadata,
                "{seed}: the data world draws the metadata world's options first"
            );
            let policy = data.replication.expect("drawn");
            let nodes = data.cluster.as_ref().expect("drawn").node_count;
            let factor = policy.replication_factor;
            assert!(factor == 3 || (factor == 5 && nodes == 5));
            five_nodes += usize::from(nodes == 5);
            five += usize::from(factor == 5);
            assert_eq!(policy.min_insync, policy.replication_factor.min(2));
            if policy.dead_for_good_at.is_some() {
                assert!(policy.replication_factor >= 3, "{seed}");
                dead += 1;
            }
            assert!(data.crash || policy.whole_cluster_power_loss_rate == 0.0);
            whole += usize::from(policy.whole_cluster_power_loss_rate > 0.0);
        }
        assert!(
            (five_nodes / 5..five_nodes / 2).contains(&five),
            "{five} of {five_nodes}"
        );
        assert!(whole > 50, "{whole}");
        assert!((20..100).contains(&dead), "{dead}");
    }
}
