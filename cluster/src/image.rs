//! The metadata image: what the committed metadata log says, as every node holds it (Kafka's
//! `MetadataImage`). Brokers serve Metadata and DescribeCluster from it; the controller keeps
//! its own copy, ahead of the committed one by its proposals in flight.
//!
//! `apply_batch(index, records)` is the only way the image changes. Each record is checked
//! against what it changes, with assertions: a record that breaks an invariant means the
//! controller decided wrongly, and a node must stop rather than serve a broken cluster (the
//! simulator turns the panic into a verdict). The invariants:
//! - leader ∈ ISR ⊆ replicas, replicas distinct registered brokers, the ISR never empty;
//! - a fenced broker leads nothing (a leader is a registered, unfenced broker);
//! - broker epochs, leader epochs and partition epochs only grow; log indices strictly increase;
//! - topics by name and by id agree; a topic's partitions are numbered 0..n;
//! - the producer-id allocator only moves forward, a block at a time;
//! - a controller call is decided once: its `RequestDone` is recorded once per request id, and
//!   the table of recent outcomes stays within its bounds (`REQUEST_OUTCOMES_MAX` per requester,
//!   `REQUESTERS_MAX` requesters).
//!
//! Bytes from elsewhere (a snapshot) are never asserted on: `snapshot_decode` checks the same
//! invariants and returns an error.

use crate::records::{
    self, BrokerId, DecodeError, IncarnationId, MetadataRecord, PartitionChange, PartitionRecord,
    RegisterBroker, RequestId, TopicId, LEADER_NONE, PRODUCER_ID_BLOCK_SIZE,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A Raft log index (the metadata offset). 0 is "nothing applied".
pub type MetadataOffset = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub broker_epoch: i64,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
    /// The index the registration was applied at: the broker is unfenced once its own image has
    /// applied this far (it then knows every partition assigned to it).
    pub registered_offset: MetadataOffset,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionImage {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// `LEADER_NONE` when the partition is offline.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl PartitionImage {
    pub fn leader(&self) -> Option<BrokerId> {
        (self.leader != LEADER_NONE).then_some(self.leader)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    /// Indexed by partition number: 0..n, never a gap.
    pub partitions: Vec<PartitionImage>,
    /// Overrides only; `topic_config::topic_config_value` adds the defaults.
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataImage {
    offset: MetadataOffset,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// The highest broker epoch any registration used: the next one must be higher.
    broker_epoch_max: i64,
    topics: BTreeMap<TopicId, TopicImage>,
    topic_ids: BTreeMap<String, TopicId>,
    /// The first producer id of the next block to hand out.
    producer_id_next: i64,
    /// Recent controller calls' outcomes, by requesting node (absent in older snapshots).
    #[serde(default)]
    requests: BTreeMap<BrokerId, RequesterOutcomes>,
}

/// The outcomes kept per requester (a node and its incarnation). A retry finds its first try's
/// outcome as long as its node has made fewer than this many later calls that wrote records
/// (calls are retried for `request_timeout` at most, and a node has a handful in flight); past
/// that it is decided anew, as every retry was before the table existed.
pub const REQUEST_OUTCOMES_MAX: usize = 64;
/// Requesters kept. Every requester is a voter (each node is broker and controller) and a
/// restart replaces its entries, so this is a guard against a peer inventing ids: past it, the
/// requester whose last outcome is oldest is dropped.
pub const REQUESTERS_MAX: usize = 256;

/// A requester's recent outcomes: Raft's client session (Ongaro's thesis §6.3), kept in the
/// applied state so that it survives controller failover and snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequesterOutcomes {
    pub incarnation_id: IncarnationId,
    /// By sequence number: the last `REQUEST_OUTCOMES_MAX` decided calls.
    pub outcomes: BTreeMap<u64, RequestOutcome>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutcome {
    /// The entry that decided the call: its answer holds once this index is applied.
    pub index: MetadataOffset,
    /// The controller's reply, as the controller encoded it.
    pub outcome: serde_json::Value,
}

impl RequesterOutcomes {
    fn index_last(&self) -> MetadataOffset {
        self.outcomes.values().map(|o| o.index).max().unwrap_or(0)
    }
}

/// A topic as Metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView<'a> {
    pub name: &'a str,
    pub topic_id: TopicId,
    pub partitions: &'a [PartitionImage],
}

impl MetadataImage {
    pub fn new() -> MetadataImage {
        MetadataImage::default()
    }

    /// The index of the last applied entry.
    pub fn offset(&self) -> MetadataOffset {
        self.offset
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// The brokers Metadata and DescribeCluster list: registered and unfenced, by id.
    pub fn brokers_live(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    pub fn broker_is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers
            .get(&broker_id)
            .is_some_and(|broker| !broker.fenced)
    }

    pub fn broker_epoch_max(&self) -> i64 {
        self.broker_epoch_max
    }

    pub fn topic_id(&self, name: &str) -> Option<TopicId> {
        self.topic_ids.get(name).copied()
    }

    pub fn topic(&self, topic_id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(&self.topic_id(name)?)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = TopicView<'_>> {
        self.topic_ids.values().map(|topic_id| {
            let topic = &self.topics[topic_id];
            TopicView {
                name: &topic.name,
                topic_id: topic.topic_id,
                partitions: &topic.partitions,
            }
        })
    }

    pub fn partition(&self, topic_id: TopicId, partition: i32) -> Option<&PartitionImage> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(&topic_id)?.partitions.get(index)
    }

    pub fn producer_id_next(&self) -> i64 {
        self.producer_id_next
    }

    /// The outcome of call `request` if it was decided and is still in the table.
    pub fn request_outcome(&self, request: &RequestId) -> Option<&RequestOutcome> {
        let requester = self.requests.get(&request.broker_id)?;
        if requester.incarnation_id != request.incarnation_id {
            return None;
        }
        requester.outcomes.get(&request.sequence)
    }

    /// Every requester's table, by node id.
    pub fn requesters(&self) -> impl Iterator<Item = (&BrokerId, &RequesterOutcomes)> {
        self.requests.iter()
    }

    /// Applies a committed Raft entry's bytes (the `StateMachine` side of the Raft glue). An
    /// empty entry (raft-rs writes one when a leader is elected) holds no records but still
    /// moves `offset`, so `offset` is always the last applied Raft index. Bytes that do not
    /// decode are an error: a committed entry cannot be skipped, so the node must stop.
    pub fn entry_apply(&mut self, index: MetadataOffset, bytes: &[u8]) -> Result<(), DecodeError> {
        let records = if bytes.is_empty() {
            Vec::new()
        } else {
            records::batch_decode(bytes)?
        };
        self.apply_batch(index, &records);
        Ok(())
    }

    /// Applies one Raft entry's records at `index`. Panics on a record that breaks an invariant.
    pub fn apply_batch(&mut self, index: MetadataOffset, records: &[MetadataRecord]) {
        assert!(
            index > self.offset,
            "metadata index {index} applied after {}",
            self.offset
        );
        for record in records {
            self.apply_record(index, record);
        }
        self.batch_end(index);
    }

    /// Ends the entry at `index` once all its records are applied.
    pub(crate) fn batch_end(&mut self, index: MetadataOffset) {
        assert!(
            index > self.offset,
            "metadata index {index} applied after {}",
            self.offset
        );
        self.offset = index;
        // O(image): on in tests and in the simulator's profile (STYLE.md 6).
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Applies one record as part of the entry at `index` (the caller moves `offset` after the
    /// whole entry). Each record keeps the invariants on its own, so a batch never passes
    /// through a broken state.
    pub(crate) fn apply_record(&mut self, index: MetadataOffset, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker(register) => self.broker_register(index, register),
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_fence(*broker_id, *broker_epoch, true),
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_fence(*broker_id, *broker_epoch, false),
            MetadataRecord::Topic { name, topic_id } => {
                assert!(!self.topic_ids.contains_key(name), "topic {name} exists");
                assert!(
                    !self.topics.contains_key(topic_id),
                    "topic id {topic_id} exists"
                );
                self.topic_ids.insert(name.clone(), *topic_id);
                let topic = TopicImage {
                    name: name.clone(),
                    topic_id: *topic_id,
                    partitions: Vec::new(),
                    configs: BTreeMap::new(),
                };
                self.topics.insert(*topic_id, topic);
            }
            MetadataRecord::Partition(partition) => self.partition_add(partition),
            MetadataRecord::PartitionChange(change) => self.partition_change(change),
            MetadataRecord::Config {
                topic_id,
                key,
                value,
            } => {
                let topic = self
                    .topics
                    .get_mut(topic_id)
                    .expect("config of a known topic");
                match value {
                    Some(value) => topic.configs.insert(key.clone(), value.clone()),
                    None => topic.configs.remove(key),
                };
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .expect("removal of a known topic");
                let removed = self.topic_ids.remove(&topic.name);
                assert_eq!(removed, Some(*topic_id));
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_block_start,
            } => {
                let broker = self.brokers.get(broker_id).expect("a registered broker");
                assert_eq!(broker.broker_epoch, *broker_epoch, "broker {broker_id}");
                assert_eq!(
                    *next_block_start,
                    self.producer_id_next + PRODUCER_ID_BLOCK_SIZE,
                    "producer id blocks are handed out in order"
                );
                self.producer_id_next = *next_block_start;
            }
            MetadataRecord::RequestDone { request, outcome } => {
                self.request_done(index, request, outcome);
            }
        }
    }

    fn request_done(
        &mut self,
        index: MetadataOffset,
        request: &RequestId,
        outcome: &serde_json::Value,
    ) {
        let requester =
            self.requests
                .entry(request.broker_id)
                .or_insert_with(|| RequesterOutcomes {
                    incarnation_id: request.incarnation_id,
                    outcomes: BTreeMap::new(),
                });
        if requester.incarnation_id != request.incarnation_id {
            // A new process of that node: its predecessor's calls are never retried.
            requester.incarnation_id = request.incarnation_id;
            requester.outcomes.clear();
        }
        let outcome = RequestOutcome {
            index,
            outcome: outcome.clone(),
        };
        let previous = requester.outcomes.insert(request.sequence, outcome);
        assert!(previous.is_none(), "request {request:?} decided twice");
        while requester.outcomes.len() > REQUEST_OUTCOMES_MAX {
            requester.outcomes.pop_first();
        }
        if self.requests.len() > REQUESTERS_MAX {
            let oldest = self
                .requests
                .iter()
                .filter(|(broker_id, _)| **broker_id != request.broker_id)
                .min_by_key(|(broker_id, requester)| (requester.index_last(), **broker_id))
                .map(|(broker_id, _)| *broker_id)
                .expect("more than one requester");
            self.requests.remove(&oldest);
        }
    }

    fn broker_register(&mut self, index: MetadataOffset, register: &RegisterBroker) {
        assert!(
            register.broker_epoch > self.broker_epoch_max,
            "broker {} registered at epoch {} after epoch {}",
            register.broker_id,
            register.broker_epoch,
            self.broker_epoch_max
        );
        // The new registration starts fenced, so the old one must lead nothing by now.
        self.assert_leads_nothing(register.broker_id);
        self.broker_epoch_max = register.broker_epoch;
        // A new process: the calls of the one before are never retried.
        if self
            .requests
            .get(&register.broker_id)
            .is_some_and(|requester| requester.incarnation_id != register.incarnation_id)
        {
            self.requests.remove(&register.broker_id);
        }
        let registration = BrokerRegistration {
            broker_id: register.broker_id,
            incarnation_id: register.incarnation_id,
            broker_epoch: register.broker_epoch,
            host: register.host.clone(),
            port: register.port,
            rack: register.rack.clone(),
            fenced: true,
            registered_offset: index,
        };
        self.brokers.insert(register.broker_id, registration);
    }

    fn broker_fence(&mut self, broker_id: BrokerId, broker_epoch: i64, fenced: bool) {
        if fenced {
            self.assert_leads_nothing(broker_id);
        }
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .expect("a registered broker");
        assert_eq!(broker.broker_epoch, broker_epoch, "broker {broker_id}");
        assert_ne!(
            broker.fenced, fenced,
            "broker {broker_id} fenced twice or unfenced twice"
        );
        broker.fenced = fenced;
    }

    fn assert_leads_nothing(&self, broker_id: BrokerId) {
        for topic in self.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                assert_ne!(
                    partition.leader, broker_id,
                    "broker {broker_id} is fenced while leading {}-{index}",
                    topic.name
                );
            }
        }
    }

    fn partition_add(&mut self, record: &PartitionRecord) {
        let partition = PartitionImage {
            replicas: record.replicas.clone(),
            isr: record.isr.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
        };
        if let Err(violation) = self.partition_violation(&partition) {
            panic!(
                "partition {}-{}: {violation}",
                record.topic_id, record.partition
            );
        }
        let topic = self
            .topics
            .get_mut(&record.topic_id)
            .expect("partition of a known topic");
        assert_eq!(
            usize::try_from(record.partition).ok(),
            Some(topic.partitions.len()),
            "partitions of {} are added in order",
            topic.name
        );
        topic.partitions.push(partition);
    }

    fn partition_change(&mut self, change: &PartitionChange) {
        assert!(
            change.leader.is_some() || change.isr.is_some(),
            "a partition change changes something"
        );
        let current = self
            .partition(change.topic_id, change.partition)
            .expect("change of a known partition");
        let mut next = current.clone();
        if let Some(isr) = &change.isr {
            next.isr = isr.clone();
        }
        if let Some(leader) = change.leader {
            if leader != current.leader {
                next.leader = leader;
                next.leader_epoch = current.leader_epoch.checked_add(1).expect("epoch overflow");
            }
        }
        next.partition_epoch = current
            .partition_epoch
            .checked_add(1)
            .expect("epoch overflow");
        if let Err(violation) = self.partition_violation(&next) {
            panic!(
                "partition {}-{}: {violation}",
                change.topic_id, change.partition
            );
        }
        let index = usize::try_from(change.partition).expect("checked above");
        let topic = self
            .topics
            .get_mut(&change.topic_id)
            .expect("checked above");
        topic.partitions[index] = next;
    }

    /// What is wrong with a partition in this image, if anything.
    fn partition_violation(&self, partition: &PartitionImage) -> Result<(), String> {
        let distinct =
            |brokers: &[BrokerId]| brokers.iter().collect::<BTreeSet<_>>().len() == brokers.len();
        if partition.replicas.is_empty() || !distinct(&partition.replicas) {
            return Err(format!(
                "replicas {:?} are not distinct",
                partition.replicas
            ));
        }
        if let Some(unknown) = partition
            .replicas
            .iter()
            .find(|replica| !self.brokers.contains_key(replica))
        {
            return Err(format!("replica {unknown} is not a registered broker"));
        }
        if partition.isr.is_empty() || !distinct(&partition.isr) {
            return Err(format!("ISR {:?} is empty or repeats", partition.isr));
        }
        if !partition
            .isr
            .iter()
            .all(|member| partition.replicas.contains(member))
        {
            return Err(format!(
                "ISR {:?} is not within replicas {:?}",
                partition.isr, partition.replicas
            ));
        }
        if let Some(leader) = partition.leader() {
            if !partition.isr.contains(&leader) {
                return Err(format!("leader {leader} is not in ISR {:?}", partition.isr));
            }
            if !self.broker_is_live(leader) {
                return Err(format!("leader {leader} is fenced"));
            }
        }
        if partition.leader_epoch < 0 || partition.partition_epoch < 0 {
            return Err("negative epoch".to_string());
        }
        Ok(())
    }

    /// Every invariant of the module doc that a single image can show; `Err` names the first
    /// broken one. (That epochs only grow is a relation between images: `apply_batch` keeps it.)
    pub fn invariants_violation(&self) -> Result<(), String> {
        if self.topics.len() != self.topic_ids.len() {
            return Err("topics by name and by id differ".to_string());
        }
        for (name, topic_id) in &self.topic_ids {
            let Some(topic) = self.topics.get(topic_id) else {
                return Err(format!("topic {name} has no image"));
            };
            if topic.name != *name || topic.topic_id != *topic_id {
                return Err(format!("topic {name} is filed under {topic_id}"));
            }
            if crate::topic_config::topic_name_validate(name).is_err() {
                return Err(format!("topic name {name:?} is invalid"));
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                self.partition_violation(partition)
                    .map_err(|violation| format!("partition {name}-{index}: {violation}"))?;
            }
        }
        for (broker_id, broker) in &self.brokers {
            if broker.broker_id != *broker_id || broker.broker_epoch > self.broker_epoch_max {
                return Err(format!("broker {broker_id} is filed wrongly"));
            }
            if broker.registered_offset > self.offset {
                return Err(format!("broker {broker_id} registered in the future"));
            }
        }
        if self.requests.len() > REQUESTERS_MAX {
            return Err(format!("{} requesters kept", self.requests.len()));
        }
        for (broker_id, requester) in &self.requests {
            if requester.outcomes.len() > REQUEST_OUTCOMES_MAX {
                return Err(format!("requester {broker_id} keeps too many outcomes"));
            }
            if requester.index_last() > self.offset {
                return Err(format!(
                    "requester {broker_id} has an outcome from the future"
                ));
            }
        }
        if self.producer_id_next < 0 || self.producer_id_next % PRODUCER_ID_BLOCK_SIZE != 0 {
            return Err(format!(
                "producer id allocator at {}",
                self.producer_id_next
            ));
        }
        Ok(())
    }

    /// Panics if an invariant is broken (the simulator and tests call it after every step).
    pub fn check_invariants(&self) {
        if let Err(violation) = self.invariants_violation() {
            panic!("metadata image at {}: {violation}", self.offset);
        }
    }

    /// The image as Raft snapshot bytes: versioned JSON, deterministic (BTreeMaps only).
    pub fn snapshot_encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct SnapshotOut<'a> {
            version: u16,
            image: &'a MetadataImage,
        }
        let snapshot = SnapshotOut {
            version: records::ENCODING_VERSION,
            image: self,
        };
        serde_json::to_vec(&snapshot).expect("images always serialize")
    }

    /// Reads the snapshot Raft installs at `index`: it must be the image at exactly that index.
    pub fn snapshot_restore(
        index: MetadataOffset,
        bytes: &[u8],
    ) -> Result<MetadataImage, DecodeError> {
        let image = MetadataImage::snapshot_decode(bytes)?;
        if image.offset != index {
            let message = format!(
                "snapshot of offset {} installed at index {index}",
                image.offset
            );
            return Err(DecodeError::Malformed(message));
        }
        Ok(image)
    }

    /// Reads a snapshot; bytes that do not make a valid image are an error, never a panic.
    pub fn snapshot_decode(bytes: &[u8]) -> Result<MetadataImage, DecodeError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SnapshotIn {
            #[serde(rename = "version")]
            _version: u16,
            image: MetadataImage,
        }
        records::version_check(bytes)?;
        let snapshot: SnapshotIn = records::json_decode(bytes)?;
        snapshot
            .image
            .invariants_violation()
            .map_err(DecodeError::Malformed)?;
        Ok(snapshot.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(broker_id: BrokerId, incarnation: u128, sequence: u64) -> MetadataRecord {
        MetadataRecord::RequestDone {
            request: RequestId {
                broker_id,
                incarnation_id: IncarnationId(incarnation),
                sequence,
            },
            outcome: serde_json::json!(sequence),
        }
    }

    fn id(broker_id: BrokerId, incarnation: u128, sequence: u64) -> RequestId {
        RequestId {
            broker_id,
            incarnation_id: IncarnationId(incarnation),
            sequence,
        }
    }

    /// The outcome table keeps the last `REQUEST_OUTCOMES_MAX` calls per requester, forgets a
    /// requester's calls when it restarts (a new incarnation, by a call or a registration),
    /// keeps at most `REQUESTERS_MAX` requesters, and survives a snapshot.
    #[test]
    fn the_request_table_is_bounded_and_survives_snapshots() {
        let mut image = MetadataImage::new();
        let mut index = 0;
        let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
            index += 1;
            image.apply_batch(index, &[record]);
        };
        let calls = REQUEST_OUTCOMES_MAX as u64 + 10;
        for sequence in 1..=calls {
            apply(&mut image, done(1, 7, sequence));
        }
        assert!(image.request_outcome(&id(1, 7, 10)).is_none(), "dropped");
        let kept = image.request_outcome(&id(1, 7, 11)).expect("kept");
        assert_eq!((kept.index, &kept.outcome), (11, &serde_json::json!(11)));
        assert!(
            image.request_outcome(&id(1, 8, 11)).is_none(),
            "another incarnation"
        );
        let restored = MetadataImage::snapshot_decode(&image.snapshot_encode()).unwrap();
        assert_eq!(restored, image);

        apply(&mut image, done(1, 8, 1));
        assert!(image.request_outcome(&id(1, 7, calls)).is_none());
        assert!(image.request_outcome(&id(1, 8, 1)).is_some());
        apply(&mut image, done(2, 5, 1));
        let register = |incarnation| {
            MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: 2,
                incarnation_id: IncarnationId(incarnation),
                broker_epoch: incarnation as i64,
                host: "h".to_string(),
                port: 1,
                rack: None,
            })
        };
        apply(&mut image, register(5));
        assert!(
            image.request_outcome(&id(2, 5, 1)).is_some(),
            "same process"
        );
        apply(&mut image, register(6));
        assert!(image.request_outcome(&id(2, 5, 1)).is_none(), "restarted");

        for broker_id in 10..10 + REQUESTERS_MAX as BrokerId {
            apply(&mut image, done(broker_id, 1, 1));
        }
        assert_eq!(image.requesters().count(), REQUESTERS_MAX);
        assert!(
            image.request_outcome(&id(1, 8, 1)).is_none(),
            "the oldest went"
        );
        image.check_invariants();
    }
}
