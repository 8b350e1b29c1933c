//! Test support: a controller with the committed image a follower would build from its
//! proposals, which go through the real encoding (encode, decode, apply).

use super::*;
use crate::image::MetadataImage;
use crate::records::{batch_decode, batch_encode, IncarnationId, TopicId};
use rand::SeedableRng;
use std::fmt::Write;

pub(super) struct Cluster {
    pub controller: Controller,
    /// What every node has applied: the controller's proposals, committed at once.
    pub committed: MetadataImage,
    pub now_ms: u64,
    pub seed: u64,
}

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Decodes an entry's bytes and applies them, as a follower does.
pub(super) fn entry_apply(image: &mut MetadataImage, index: MetadataOffset, bytes: &[u8]) {
    assert!(!batch_decode(bytes)
        .expect("the controller's bytes decode")
        .is_empty());
    image
        .entry_apply(index, bytes)
        .expect("the controller's bytes decode");
}

impl Cluster {
    pub fn new(seed: u64) -> Cluster {
        Cluster::with_config(seed, ControllerConfig::kafka_defaults())
    }

    pub fn with_config(seed: u64, config: ControllerConfig) -> Cluster {
        Cluster {
            controller: Controller::new(config, MetadataImage::new(), 0, rng(seed)),
            committed: MetadataImage::new(),
            now_ms: 0,
            seed,
        }
    }

    /// The index the next proposal gets.
    pub fn index(&self) -> MetadataOffset {
        self.controller.image().offset() + 1
    }

    /// Commits a proposal through the encoding and checks that the follower's image is the
    /// controller's.
    pub fn commit<R>(&mut self, proposal: Proposal<R>) -> R {
        if !proposal.records.is_empty() {
            let bytes = batch_encode(&proposal.records);
            entry_apply(&mut self.committed, proposal.reply_after, &bytes);
        }
        assert_eq!(&self.committed, self.controller.image());
        assert_eq!(proposal.reply_after, self.committed.offset());
        proposal.reply
    }

    /// A new controller (a new Raft leader) from the committed image.
    pub fn leader_change(&mut self) {
        self.seed += 1;
        let config = self.controller.config().clone();
        let planted = self.controller.planted;
        self.controller =
            Controller::new(config, self.committed.clone(), self.now_ms, rng(self.seed));
        self.controller.planted = planted;
    }

    pub fn register(&mut self, broker_id: BrokerId, incarnation: u128, rack: Option<&str>) -> i64 {
        let request = BrokerRegistrationRequest {
            broker_id,
            incarnation_id: IncarnationId(incarnation),
            host: format!("10.0.0.{broker_id}"),
            port: 9092,
            rack: rack.map(str::to_string),
        };
        let proposal = self
            .controller
            .register_broker(self.index(), self.now_ms, &request);
        self.commit(proposal)
            .expect("registration accepted")
            .broker_epoch
    }

    pub fn heartbeat(&mut self, broker_id: BrokerId, want_shutdown: bool) -> HeartbeatReply {
        let broker_epoch = self
            .committed
            .broker(broker_id)
            .expect("registered")
            .broker_epoch;
        let request = BrokerHeartbeat {
            broker_id,
            broker_epoch,
            metadata_offset: self.committed.offset(),
            want_shutdown,
        };
        let proposal = self
            .controller
            .heartbeat(self.index(), self.now_ms, &request);
        self.commit(proposal).expect("heartbeat accepted")
    }

    /// Registers and unfences brokers `ids`, each with incarnation = its id.
    pub fn brokers_up(&mut self, ids: &[BrokerId]) {
        for &broker_id in ids {
            self.register(broker_id, broker_id as u128, None);
            assert!(!self.heartbeat(broker_id, false).is_fenced);
        }
    }

    pub fn tick(&mut self, advance_ms: u64) {
        self.now_ms += advance_ms;
        let proposal = self.controller.tick(self.index(), self.now_ms);
        self.commit(proposal);
    }

    pub fn create(
        &mut self,
        name: &str,
        partition_count: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<TopicCreated, ApiError> {
        let topic = TopicCreate {
            name: name.to_string(),
            partition_count,
            replication_factor,
            configs: configs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        let proposal = self.controller.create_topics(self.index(), &[topic], false);
        let mut results = self.commit(proposal);
        assert_eq!(results.len(), 1);
        results.pop().expect("one result").1
    }

    pub fn topic_id(&self, name: &str) -> TopicId {
        self.committed.topic_id(name).expect("a topic")
    }

    /// Brokers and partitions, one line each, for snapshots.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for broker in self.committed.brokers() {
            let state = if broker.fenced { "fenced" } else { "live" };
            let rack = broker.rack.as_deref().unwrap_or("-");
            let _ = writeln!(
                text,
                "broker {} epoch {} {state} rack {rack} registered at {}",
                broker.broker_id, broker.broker_epoch, broker.registered_offset
            );
        }
        for topic in self.committed.topics() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let leader = match partition.leader() {
                    Some(leader) => leader.to_string(),
                    None => "none".to_string(),
                };
                let _ = writeln!(
                    text,
                    "{}-{index} leader {leader} epochs {}/{} replicas {:?} isr {:?}",
                    topic.name,
                    partition.leader_epoch,
                    partition.partition_epoch,
                    partition.replicas,
                    partition.isr
                );
            }
        }
        text
    }
}
