//! The metadata-log checker: a cluster world's control plane judged from what its nodes reported
//! and what its admin clients saw (issue 12). Its own small history ([`MetadataHistory`]), apart
//! from the Kafka-workload [`crate::History`]: events are Raft observations and admin
//! operations, not records.
//!
//! Rules (each an [`MetadataAnomaly`] kind):
//! - `two-leaders`: at most one leader per term, over every (term, leader) any node observed.
//! - `log-diverged`: every applied entry is committed, so all nodes' applied sequences are
//!   prefixes of one sequence, and the image is a function of the prefix: one applied index, one
//!   image digest, whoever applied it, whenever. (Images are observed, not every entry: a watch
//!   coalesces, so an observation may skip indices.)
//! - `apply-out-of-order`: within one incarnation of a node, the applied index never goes back
//!   (the same index may be observed twice).
//! - `committed-lost`: after heal, every live node has applied at least every index any node ever
//!   applied (and `final-images-differ` if two live nodes at the same index disagree).
//! - `acked-missing` / `acked-undone`: an acknowledged CreateTopics, DeleteTopics or
//!   CreatePartitions is in every live node's final image, unless a later operation that may
//!   have happened (not a definite failure) on the same topic excuses it; and the node that
//!   acknowledged it shows it in every image it reported afterwards in the same incarnation
//!   (admin calls answer once applied locally).
//! - liveness after heal (`no-leader`, `broker-unregistered`, `broker-fenced`): some node leads
//!   and every live node agrees on it, and every live broker is registered and unfenced.
//! - what each live broker serves through the Kafka protocol after heal ([`Served`], when the
//!   run probed it): `not-serving` (no answer to Metadata or DescribeCluster),
//!   `served-differs` (its Metadata topics and partition counts are not its final image's),
//!   `served-broker-missing` / `served-broker-fenced` (DescribeCluster, fenced brokers included,
//!   must list every live broker unfenced), and `acked-not-served` (an acknowledged operation
//!   not visible in its Metadata, with the same excuses as `acked-missing`).
//! - replication after heal (only when the run asks, `MetadataHistory::partitions_checked`: the
//!   replicated data world): `partition-offline` (a partition in a live node's final image whose
//!   leader is none or not a live node, unless every replica is dead: a node dead for good is
//!   not in `finals`) and `isr-not-full` (a live replica missing from the ISR: once healed, every
//!   live follower catches up and is added back), and `replicas-differ` (two live replicas
//!   serve different records at one offset below their high watermarks, read with Kafka's
//!   debugging consumer id -2 after heal: everything below a replica's high watermark is
//!   committed, and committed records are the same everywhere).
//!
//! **Invariant:** pure; the same history always yields the same anomalies in the same order.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A node id (`ClusterConfig::node_id`).
pub type NodeId = i32;

/// One cluster run, recorded. `events` are in real-time order; their position is their order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataHistory {
    pub events: Vec<MetaEvent>,
    /// Each live node's state once the world healed and settled; empty when the run never got
    /// there (then only the safety rules run).
    pub finals: BTreeMap<NodeId, FinalNode>,
    /// What each live node's broker answered through the Kafka protocol after heal (`None`: no
    /// answer). Empty when the run did not probe (then the `served-*` rules do not run).
    #[serde(default)]
    pub served: BTreeMap<NodeId, Option<Served>>,
    /// Whether the replication rules (`partition-offline`, `isr-not-full`) judge the finals:
    /// set by the replicated data world, whose topics must be whole again after heal.
    #[serde(default)]
    pub partitions_checked: bool,
    /// What each live replica served of its partitions after heal (`replicas-differ`).
    #[serde(default)]
    pub replica_reads: Vec<ReplicaRead>,
}

/// One replica's records of one partition below its high watermark, as it served them to a
/// Fetch with replica id -2 (Kafka's debugging consumer, which any replica serves).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRead {
    pub node: NodeId,
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    /// (offset, workload value) in offset order.
    pub records: Vec<(i64, i64)>,
}

/// A broker's Metadata and DescribeCluster answers after heal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Non-internal topics in its Metadata response.
    pub topics: BTreeMap<String, TopicShape>,
    /// DescribeCluster with fenced brokers included: id -> fenced.
    pub brokers: BTreeMap<NodeId, bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaEvent {
    /// Simulated time; only displayed.
    pub time_ns: u64,
    pub node: NodeId,
    pub kind: MetaEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaEventKind {
    /// The node's Raft status: in `term` it knows `leader` (None: no leader known).
    Status {
        term: u64,
        leader: Option<NodeId>,
    },
    /// The node's image has applied up to `index` and hashes to `digest`.
    Applied {
        index: u64,
        digest: u64,
    },
    /// The node (re)started: a new incarnation, which replays from its snapshot or the start.
    Started,
    /// The node's image as an admin client read it after an operation, with its applied index.
    Image {
        applied: u64,
        topics: BTreeMap<String, TopicShape>,
    },
    /// An admin client on this node began an operation.
    Invoke {
        op: u64,
        admin: AdminOp,
    },
    /// The operation's outcome. `Ok` carries per-item success (same order as the invocation's
    /// items); `Fail` definitely did nothing; `Info` may have happened, now or later.
    Ok {
        op: u64,
        done: Vec<bool>,
    },
    Fail {
        op: u64,
    },
    Info {
        op: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Topics by name with their partition count.
    CreateTopics(Vec<(String, u32)>),
    DeleteTopics(Vec<String>),
    /// A topic grown to this total partition count.
    CreatePartitions(Vec<(String, u32)>),
}

impl AdminOp {
    fn names(&self) -> Vec<&str> {
        match self {
            AdminOp::CreateTopics(items) | AdminOp::CreatePartitions(items) => {
                items.iter().map(|(name, _)| name.as_str()).collect()
            }
            AdminOp::DeleteTopics(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicShape {
    pub partitions: u32,
}

/// A live node after heal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalNode {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub applied: u64,
    /// Digest of the whole image, comparable between nodes at the same applied index.
    pub image_digest: u64,
    pub topics: BTreeMap<String, TopicShape>,
    /// Registered brokers: id -> fenced.
    pub brokers: BTreeMap<NodeId, bool>,
    /// Every topic's partitions, by index, as the image assigns them.
    #[serde(default)]
    pub partitions: BTreeMap<String, Vec<FinalPartition>>,
}

/// One partition in a final image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalPartition {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// None: offline.
    pub leader: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MetadataAnomaly {
    MalformedHistory {
        event: usize,
        reason: String,
    },
    TwoLeaders {
        term: u64,
        leaders: Vec<NodeId>,
        events: Vec<usize>,
    },
    LogDiverged {
        index: u64,
        digests: Vec<u64>,
        events: Vec<usize>,
    },
    ApplyOutOfOrder {
        node: NodeId,
        before: u64,
        index: u64,
        event: usize,
    },
    CommittedLost {
        node: NodeId,
        applied: u64,
        committed: u64,
    },
    FinalImagesDiffer {
        applied: u64,
        nodes: Vec<NodeId>,
    },
    AckedMissing {
        op: u64,
        node: NodeId,
        topic: String,
        want: String,
    },
    AckedUndone {
        op: u64,
        node: NodeId,
        topic: String,
        event: usize,
    },
    NoLeader {
        leaders: BTreeMap<NodeId, Option<NodeId>>,
    },
    BrokerUnregistered {
        node: NodeId,
        seen_by: NodeId,
    },
    BrokerFenced {
        node: NodeId,
        seen_by: NodeId,
    },
    NotServing {
        node: NodeId,
    },
    ServedDiffers {
        node: NodeId,
        /// Topic -> (served, in the final image); `None` where absent.
        differences: BTreeMap<String, (Option<u32>, Option<u32>)>,
    },
    ServedBrokerMissing {
        node: NodeId,
        seen_by: NodeId,
    },
    ServedBrokerFenced {
        node: NodeId,
        seen_by: NodeId,
    },
    AckedNotServed {
        op: u64,
        node: NodeId,
        topic: String,
        want: String,
    },
    /// A CreateTopics item answered "not done" (a refusal: the call did nothing), yet its topic,
    /// which no other operation ever tried to create, is in a final image: the call did create
    /// it, and the answer lied (a retried call meeting its own first, committed, try).
    RefusedButDone {
        op: u64,
        node: NodeId,
        topic: String,
    },
    /// After heal, a partition with a live replica has no live leader in a node's final image.
    PartitionOffline {
        node: NodeId,
        topic: String,
        partition: usize,
        leader: Option<NodeId>,
    },
    /// After heal, two replicas serve different records at one offset below their high
    /// watermarks (the first such offset of the partition).
    ReplicasDiffer {
        topic: String,
        partition: i32,
        offset: i64,
        /// Node -> the value it serves there.
        values: BTreeMap<NodeId, i64>,
    },
    /// After heal, a live replica is missing from a partition's ISR in a node's final image.
    IsrNotFull {
        node: NodeId,
        topic: String,
        partition: usize,
        isr: Vec<NodeId>,
        missing: Vec<NodeId>,
    },
}

impl MetadataAnomaly {
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataAnomaly::MalformedHistory { .. } => "malformed-history",
            MetadataAnomaly::TwoLeaders { .. } => "two-leaders",
            MetadataAnomaly::LogDiverged { .. } => "log-diverged",
            MetadataAnomaly::ApplyOutOfOrder { .. } => "apply-out-of-order",
            MetadataAnomaly::CommittedLost { .. } => "committed-lost",
            MetadataAnomaly::FinalImagesDiffer { .. } => "final-images-differ",
            MetadataAnomaly::AckedMissing { .. } => "acked-missing",
            MetadataAnomaly::AckedUndone { .. } => "acked-undone",
            MetadataAnomaly::NoLeader { .. } => "no-leader",
            MetadataAnomaly::BrokerUnregistered { .. } => "broker-unregistered",
            MetadataAnomaly::BrokerFenced { .. } => "broker-fenced",
            MetadataAnomaly::NotServing { .. } => "not-serving",
            MetadataAnomaly::ServedDiffers { .. } => "served-differs",
            MetadataAnomaly::ServedBrokerMissing { .. } => "served-broker-missing",
            MetadataAnomaly::ServedBrokerFenced { .. } => "served-broker-fenced",
            MetadataAnomaly::AckedNotServed { .. } => "acked-not-served",
            MetadataAnomaly::RefusedButDone { .. } => "refused-but-done",
            MetadataAnomaly::PartitionOffline { .. } => "partition-offline",
            MetadataAnomaly::IsrNotFull { .. } => "isr-not-full",
            MetadataAnomaly::ReplicasDiffer { .. } => "replicas-differ",
        }
    }
}

impl fmt::Display for MetadataAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            MetadataAnomaly::MalformedHistory { event, reason } => {
                write!(f, "event {event}: {reason}")
            }
            MetadataAnomaly::TwoLeaders {
                term,
                leaders,
                events,
            } => write!(f, "term {term} led by {leaders:?} (events {events:?})"),
            MetadataAnomaly::LogDiverged {
                index,
                digests,
                events,
            } => write!(
                f,
                "index {index} applied as {digests:x?} (events {events:?})"
            ),
            MetadataAnomaly::ApplyOutOfOrder {
                node,
                before,
                index,
                event,
            } => write!(f, "node {node} back at {index} after {before} (event {event})"),
            MetadataAnomaly::CommittedLost {
                node,
                applied,
                committed,
            } => write!(
                f,
                "node {node} ends at {applied}, but {committed} was applied somewhere"
            ),
            MetadataAnomaly::FinalImagesDiffer { applied, nodes } => {
                write!(f, "nodes {nodes:?} at {applied} hold different images")
            }
            MetadataAnomaly::AckedMissing {
                op,
                node,
                topic,
                want,
            } => write!(
                f,
                "op {op} acknowledged; node {node}'s final image: {topic} {want}"
            ),
            MetadataAnomaly::AckedUndone {
                op,
                node,
                topic,
                event,
            } => write!(
                f,
                "op {op} on {topic} acknowledged by node {node}, undone in its image (event {event})"
            ),
            MetadataAnomaly::NoLeader { leaders } => {
                write!(f, "after heal, leaders seen: {leaders:?}")
            }
            MetadataAnomaly::BrokerUnregistered { node, seen_by } => {
                write!(f, "broker {node} not registered in node {seen_by}'s image")
            }
            MetadataAnomaly::BrokerFenced { node, seen_by } => {
                write!(f, "broker {node} fenced in node {seen_by}'s image")
            }
            MetadataAnomaly::NotServing { node } => {
                write!(f, "after heal, broker {node} answered no Metadata or DescribeCluster")
            }
            MetadataAnomaly::ServedDiffers { node, differences } => write!(
                f,
                "broker {node}'s Metadata vs its final image (served, image): {differences:?}"
            ),
            MetadataAnomaly::ServedBrokerMissing { node, seen_by } => {
                write!(f, "broker {node} missing from broker {seen_by}'s DescribeCluster")
            }
            MetadataAnomaly::ServedBrokerFenced { node, seen_by } => {
                write!(f, "broker {node} fenced in broker {seen_by}'s DescribeCluster")
            }
            MetadataAnomaly::AckedNotServed {
                op,
                node,
                topic,
                want,
            } => write!(
                f,
                "op {op} acknowledged; broker {node}'s Metadata: {topic} {want}"
            ),
            MetadataAnomaly::RefusedButDone { op, node, topic } => write!(
                f,
                "op {op} refused to create {topic}, the only op that creates it, yet node {node}'s final image holds it"
            ),
            MetadataAnomaly::PartitionOffline {
                node,
                topic,
                partition,
                leader,
            } => write!(
                f,
                "after heal, node {node}'s final image: {topic}-{partition} led by {leader:?}, no live leader"
            ),
            MetadataAnomaly::ReplicasDiffer {
                topic,
                partition,
                offset,
                values,
            } => write!(
                f,
                "after heal, replicas of {topic}-{partition} serve different values at offset {offset} (node: value): {values:?}"
            ),
            MetadataAnomaly::IsrNotFull {
                node,
                topic,
                partition,
                isr,
                missing,
            } => write!(
                f,
                "after heal, node {node}'s final image: {topic}-{partition} ISR {isr:?} lacks live replicas {missing:?}"
            ),
        }
    }
}

/// Checks a cluster history; anomalies in rule order, then event order.
pub fn check(history: &MetadataHistory) -> Vec<MetadataAnomaly> {
    let mut anomalies = Vec::new();
    check_leaders(&mut anomalies, history);
    let committed = check_log(&mut anomalies, history);
    check_finals_log(&mut anomalies, history, committed);
    let ops = pair(&mut anomalies, history);
    check_acked(&mut anomalies, history, &ops);
    check_refused(&mut anomalies, history, &ops);
    check_liveness(&mut anomalies, history);
    check_served(&mut anomalies, history);
    check_partitions(&mut anomalies, history);
    check_replica_reads(&mut anomalies, history);
    anomalies
}

/// Committed records are the same on every replica: the first offset of each partition at which
/// two replicas' reads below their high watermarks disagree.
fn check_replica_reads(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) {
    // (topic, partition) -> offset -> node -> value.
    type Served<'h> = BTreeMap<(&'h str, i32), BTreeMap<i64, BTreeMap<NodeId, i64>>>;
    let mut served: Served = BTreeMap::new();
    for read in &history.replica_reads {
        let offsets = served
            .entry((read.topic.as_str(), read.partition))
            .or_default();
        for &(offset, value) in &read.records {
            offsets.entry(offset).or_default().insert(read.node, value);
        }
    }
    for ((topic, partition), offsets) in served {
        let differing = offsets.into_iter().find(|(_, values)| {
            let distinct: BTreeSet<i64> = values.values().copied().collect();
            distinct.len() > 1
        });
        if let Some((offset, values)) = differing {
            anomalies.push(MetadataAnomaly::ReplicasDiffer {
                topic: topic.to_string(),
                partition,
                offset,
                values,
            });
        }
    }
}

fn check_leaders(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) {
    // term -> leader -> first event that named it.
    let mut by_term: BTreeMap<u64, BTreeMap<NodeId, usize>> = BTreeMap::new();
    for (i, event) in history.events.iter().enumerate() {
        if let MetaEventKind::Status {
            term,
            leader: Some(leader),
        } = event.kind
        {
            by_term.entry(term).or_default().entry(leader).or_insert(i);
        }
    }
    for final_node in history.finals.values() {
        if let Some(leader) = final_node.leader {
            by_term
                .entry(final_node.term)
                .or_default()
                .entry(leader)
                .or_insert(usize::MAX);
        }
    }
    for (term, leaders) in by_term {
        if leaders.len() > 1 {
            anomalies.push(MetadataAnomaly::TwoLeaders {
                term,
                leaders: leaders.keys().copied().collect(),
                events: leaders.values().copied().collect(),
            });
        }
    }
}

/// Log matching and apply order; answers the highest index applied anywhere.
fn check_log(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) -> u64 {
    // index -> digest -> first event.
    let mut by_index: BTreeMap<u64, BTreeMap<u64, usize>> = BTreeMap::new();
    // node -> the last index it showed in this incarnation.
    let mut last: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut committed = 0;
    for (i, event) in history.events.iter().enumerate() {
        match event.kind {
            MetaEventKind::Started => {
                last.remove(&event.node);
            }
            MetaEventKind::Applied { index, digest } => {
                by_index
                    .entry(index)
                    .or_default()
                    .entry(digest)
                    .or_insert(i);
                committed = committed.max(index);
                if let Some(&before) = last.get(&event.node) {
                    if index < before {
                        anomalies.push(MetadataAnomaly::ApplyOutOfOrder {
                            node: event.node,
                            before,
                            index,
                            event: i,
                        });
                    }
                }
                last.insert(event.node, index);
            }
            _ => {}
        }
    }
    for (index, digests) in by_index {
        if digests.len() > 1 {
            anomalies.push(MetadataAnomaly::LogDiverged {
                index,
                digests: digests.keys().copied().collect(),
                events: digests.values().copied().collect(),
            });
        }
    }
    committed
}

fn check_finals_log(
    anomalies: &mut Vec<MetadataAnomaly>,
    history: &MetadataHistory,
    committed: u64,
) {
    let mut by_applied: BTreeMap<u64, BTreeMap<u64, Vec<NodeId>>> = BTreeMap::new();
    for (&node, final_node) in &history.finals {
        if final_node.applied < committed {
            anomalies.push(MetadataAnomaly::CommittedLost {
                node,
                applied: final_node.applied,
                committed,
            });
        }
        by_applied
            .entry(final_node.applied)
            .or_default()
            .entry(final_node.image_digest)
            .or_default()
            .push(node);
    }
    for (applied, digests) in by_applied {
        if digests.len() > 1 {
            anomalies.push(MetadataAnomaly::FinalImagesDiffer {
                applied,
                nodes: digests.values().flatten().copied().collect(),
            });
        }
    }
}

/// One admin operation: its invocation and completion positions.
struct AdminRecord<'h> {
    node: NodeId,
    admin: &'h AdminOp,
    invoke: usize,
    /// Position and outcome; None: never completed (as good as `Info`).
    completion: Option<(usize, Outcome<'h>)>,
}

#[derive(Clone, Copy)]
enum Outcome<'h> {
    Ok(&'h [bool]),
    Fail,
    Info,
}

fn pair<'h>(
    anomalies: &mut Vec<MetadataAnomaly>,
    history: &'h MetadataHistory,
) -> BTreeMap<u64, AdminRecord<'h>> {
    let mut ops: BTreeMap<u64, AdminRecord<'h>> = BTreeMap::new();
    for (i, event) in history.events.iter().enumerate() {
        let (op, outcome) = match &event.kind {
            MetaEventKind::Invoke { op, admin } => {
                if ops.contains_key(op) {
                    anomalies.push(MetadataAnomaly::MalformedHistory {
                        event: i,
                        reason: format!("op {op} invoked twice"),
                    });
                    continue;
                }
                let record = AdminRecord {
                    node: event.node,
                    admin,
                    invoke: i,
                    completion: None,
                };
                ops.insert(*op, record);
                continue;
            }
            MetaEventKind::Ok { op, done } => (op, Outcome::Ok(done)),
            MetaEventKind::Fail { op } => (op, Outcome::Fail),
            MetaEventKind::Info { op } => (op, Outcome::Info),
            _ => continue,
        };
        let reason = match ops.get_mut(op) {
            None => format!("op {op} completed but never invoked"),
            Some(record) if record.completion.is_some() => format!("op {op} completed twice"),
            Some(record) => match outcome {
                Outcome::Ok(done) if done.len() != record.admin.names().len() => {
                    format!("op {op} answered {} items", done.len())
                }
                _ => {
                    record.completion = Some((i, outcome));
                    continue;
                }
            },
        };
        anomalies.push(MetadataAnomaly::MalformedHistory { event: i, reason });
    }
    ops
}

/// What an acknowledged item requires of the image.
#[derive(Clone, Copy)]
enum Want {
    Exists { partitions_min: u32 },
    Absent,
}

fn want_text(want: Want) -> String {
    match want {
        Want::Exists { partitions_min } => format!("missing or under {partitions_min} partitions"),
        Want::Absent => "still present".to_string(),
    }
}

fn want_met(want: Want, shape: Option<&TopicShape>) -> bool {
    match (want, shape) {
        (Want::Exists { partitions_min }, Some(shape)) => shape.partitions >= partitions_min,
        (Want::Exists { .. }, None) => false,
        (Want::Absent, shape) => shape.is_none(),
    }
}

fn check_acked(
    anomalies: &mut Vec<MetadataAnomaly>,
    history: &MetadataHistory,
    ops: &BTreeMap<u64, AdminRecord>,
) {
    // topic -> operations that may have touched it: (op, deletes, invoke, end or MAX when
    // unknown).
    let mut touching: BTreeMap<&str, Vec<(u64, bool, usize, usize)>> = BTreeMap::new();
    for (&op, record) in ops {
        let (end, done) = match record.completion {
            Some((_, Outcome::Fail)) => continue,
            Some((i, Outcome::Ok(done))) => (i, Some(done)),
            Some((_, Outcome::Info)) | None => (usize::MAX, None),
        };
        let deletes = matches!(record.admin, AdminOp::DeleteTopics(_));
        for (item, name) in record.admin.names().into_iter().enumerate() {
            // An item the controller refused did nothing.
            if done.is_some_and(|done| !done[item]) {
                continue;
            }
            touching
                .entry(name)
                .or_default()
                .push((op, deletes, record.invoke, end));
        }
    }
    for (&op, record) in ops {
        let Some((ok_at, Outcome::Ok(done))) = record.completion else {
            continue;
        };
        for (item, &done) in done.iter().enumerate() {
            if !done {
                continue;
            }
            let (topic, want) = match record.admin {
                AdminOp::CreateTopics(items) => (
                    items[item].0.as_str(),
                    Want::Exists {
                        partitions_min: items[item].1,
                    },
                ),
                AdminOp::CreatePartitions(items) => (
                    items[item].0.as_str(),
                    Want::Exists {
                        partitions_min: items[item].1,
                    },
                ),
                AdminOp::DeleteTopics(names) => (names[item].as_str(), Want::Absent),
            };
            // An opposing operation on the topic (a delete against a create or growth, a create
            // against a delete) that may have taken effect after this one did (it did not end
            // before this one began, and began before the image was read) excuses the image.
            let opposing_deletes = !matches!(want, Want::Absent);
            let excused_after = |position: usize| {
                touching[topic]
                    .iter()
                    .any(|&(other, deletes, invoke, end)| {
                        other != op
                            && deletes == opposing_deletes
                            && end > record.invoke
                            && invoke < position
                    })
            };
            for (&node, final_node) in &history.finals {
                if !want_met(want, final_node.topics.get(topic)) && !excused_after(usize::MAX) {
                    anomalies.push(MetadataAnomaly::AckedMissing {
                        op,
                        node,
                        topic: topic.to_string(),
                        want: want_text(want),
                    });
                }
            }
            for (&node, served) in &history.served {
                let Some(served) = served else { continue };
                if !want_met(want, served.topics.get(topic)) && !excused_after(usize::MAX) {
                    anomalies.push(MetadataAnomaly::AckedNotServed {
                        op,
                        node,
                        topic: topic.to_string(),
                        want: want_text(want),
                    });
                }
            }
            // The acknowledging node, same incarnation, every image it reported afterwards.
            for (i, event) in history.events.iter().enumerate().skip(ok_at + 1) {
                if event.node != record.node {
                    continue;
                }
                match &event.kind {
                    MetaEventKind::Started => break,
                    MetaEventKind::Image { topics, .. }
                        if !want_met(want, topics.get(topic)) && !excused_after(i) =>
                    {
                        anomalies.push(MetadataAnomaly::AckedUndone {
                            op,
                            node: record.node,
                            topic: topic.to_string(),
                            event: i,
                        });
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A refusal promises the call did nothing. Only creates of names no other operation creates
/// can prove it false from the final images (the workload names each create afresh): a delete's
/// or a growth's refusal has no such witness.
fn check_refused(
    anomalies: &mut Vec<MetadataAnomaly>,
    history: &MetadataHistory,
    ops: &BTreeMap<u64, AdminRecord>,
) {
    let mut creators: BTreeMap<&str, usize> = BTreeMap::new();
    for record in ops.values() {
        if let AdminOp::CreateTopics(items) = record.admin {
            for (name, _) in items {
                *creators.entry(name.as_str()).or_default() += 1;
            }
        }
    }
    for (&op, record) in ops {
        let (AdminOp::CreateTopics(items), Some((_, Outcome::Ok(done)))) =
            (record.admin, record.completion)
        else {
            continue;
        };
        for ((name, _), &done) in items.iter().zip(done) {
            if done || creators[name.as_str()] != 1 {
                continue;
            }
            let holder = history
                .finals
                .iter()
                .find(|(_, final_node)| final_node.topics.contains_key(name));
            if let Some((&node, _)) = holder {
                anomalies.push(MetadataAnomaly::RefusedButDone {
                    op,
                    node,
                    topic: name.clone(),
                });
            }
        }
    }
}

fn check_liveness(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) {
    if history.finals.is_empty() {
        return;
    }
    let leaders: BTreeMap<NodeId, Option<NodeId>> = history
        .finals
        .iter()
        .map(|(&node, final_node)| (node, final_node.leader))
        .collect();
    let distinct: BTreeSet<Option<NodeId>> = leaders.values().copied().collect();
    let agreed = match distinct.iter().next() {
        Some(&Some(leader)) if distinct.len() == 1 => history.finals.contains_key(&leader),
        _ => false,
    };
    if !agreed {
        anomalies.push(MetadataAnomaly::NoLeader { leaders });
    }
    for (&seen_by, final_node) in &history.finals {
        for &node in history.finals.keys() {
            match final_node.brokers.get(&node) {
                None => anomalies.push(MetadataAnomaly::BrokerUnregistered { node, seen_by }),
                Some(true) => anomalies.push(MetadataAnomaly::BrokerFenced { node, seen_by }),
                Some(false) => {}
            }
        }
    }
}

/// The Kafka protocol's view after heal: every live node answers, with its final image's
/// topics, and lists every live broker unfenced.
fn check_served(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) {
    if history.served.is_empty() {
        return;
    }
    for (&node, final_node) in &history.finals {
        let Some(Some(served)) = history.served.get(&node) else {
            anomalies.push(MetadataAnomaly::NotServing { node });
            continue;
        };
        let names: BTreeSet<&String> = served
            .topics
            .keys()
            .chain(final_node.topics.keys())
            .collect();
        let differences: BTreeMap<String, (Option<u32>, Option<u32>)> = names
            .into_iter()
            .filter_map(|name| {
                let pair = (
                    served.topics.get(name).map(|shape| shape.partitions),
                    final_node.topics.get(name).map(|shape| shape.partitions),
                );
                (pair.0 != pair.1).then(|| (name.clone(), pair))
            })
            .collect();
        if !differences.is_empty() {
            anomalies.push(MetadataAnomaly::ServedDiffers { node, differences });
        }
        for &live in history.finals.keys() {
            match served.brokers.get(&live) {
                None => anomalies.push(MetadataAnomaly::ServedBrokerMissing {
                    node: live,
                    seen_by: node,
                }),
                Some(true) => anomalies.push(MetadataAnomaly::ServedBrokerFenced {
                    node: live,
                    seen_by: node,
                }),
                Some(false) => {}
            }
        }
    }
}

/// Replication after heal: every partition with a live replica is led by a live node, and
/// every live replica is back in the ISR. A node dead for good is not in `finals`: its replicas
/// are excused, and a partition all of whose replicas died may stay offline.
fn check_partitions(anomalies: &mut Vec<MetadataAnomaly>, history: &MetadataHistory) {
    if !history.partitions_checked {
        return;
    }
    let live = |node: &NodeId| history.finals.contains_key(node);
    for (&node, final_node) in &history.finals {
        for (topic, partitions) in &final_node.partitions {
            for (partition, state) in partitions.iter().enumerate() {
                if !state.replicas.iter().any(live) {
                    continue;
                }
                if !state.leader.as_ref().is_some_and(live) {
                    anomalies.push(MetadataAnomaly::PartitionOffline {
                        node,
                        topic: topic.clone(),
                        partition,
                        leader: state.leader,
                    });
                }
                let missing: Vec<NodeId> = state
                    .replicas
                    .iter()
                    .filter(|replica| live(replica) && !state.isr.contains(replica))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    anomalies.push(MetadataAnomaly::IsrNotFull {
                        node,
                        topic: topic.clone(),
                        partition,
                        isr: state.isr.clone(),
                        missing,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
