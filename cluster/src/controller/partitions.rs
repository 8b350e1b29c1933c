//! ISR changes a partition leader asks for (Kafka's AlterPartition, KIP-497, with KIP-841's
//! eligibility rule; `ReplicationControlManager.alterPartition`).
//!
//! The leader tracks which followers keep up and proposes the ISR it wants: smaller when one
//! falls behind, larger when one catches up. Only the controller changes the ISR, so a leader
//! that lost its leadership (a zombie: cut off, or restarted) cannot change it: its request
//! names the leader and partition epochs it saw, and a stale one is refused. The refusals, in
//! the order they are checked:
//! - STALE_BROKER_EPOCH: the caller's registration is not the one it names (an older process);
//! - UNKNOWN_TOPIC_OR_PARTITION;
//! - NOT_LEADER_OR_FOLLOWER: the caller does not lead the partition;
//! - FENCED_LEADER_EPOCH: the leader epoch is not the current one (Kafka answers
//!   FENCED_LEADER_EPOCH for an older one; a newer one cannot come from a leader);
//! - INVALID_UPDATE_VERSION: the partition epoch is not the current one (the ISR changed since
//!   the leader saw it; it re-proposes from the new state);
//! - INVALID_REQUEST: an ISR with repeats, a non-replica, or without its leader;
//! - INELIGIBLE_REPLICA: a member not in the ISR now is added while fenced (KIP-841: a fenced
//!   broker is not caught up with anything).
//!
//! An accepted change writes a `PartitionChange` with the new ISR only: the partition epoch
//! bumps, the leader epoch does not. An unchanged ISR writes nothing. The reply is the
//! partition's state after the change, which the leader adopts.

use super::errors::{
    ApiError, FENCED_LEADER_EPOCH, INELIGIBLE_REPLICA, INVALID_REQUEST, INVALID_UPDATE_VERSION,
    NOT_LEADER_OR_FOLLOWER, STALE_BROKER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION,
};
use super::{Controller, Proposal};
use crate::image::{MetadataImage, MetadataOffset, PartitionImage};
use crate::records::{BrokerId, MetadataRecord, PartitionChange, TopicId};
use std::collections::BTreeSet;

/// One partition's ISR change, as its leader asks for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterPartition {
    /// The caller: the partition's leader, as its own image says.
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topic_id: TopicId,
    pub partition: i32,
    /// The epochs of the state the leader based its proposal on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The ISR it wants, the leader included, in any order.
    pub isr: Vec<BrokerId>,
}

impl Controller {
    pub fn alter_partition(
        &mut self,
        index: MetadataOffset,
        request: &AlterPartition,
    ) -> Proposal<Result<PartitionImage, ApiError>> {
        let decided = alter_check(&self.image, request).map(|(current, isr)| {
            let mut batch = self.batch(index);
            if isr != current.isr {
                batch.push(MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: request.topic_id,
                    partition: request.partition,
                    leader: None,
                    isr: Some(isr),
                }));
            }
            let after = batch
                .image()
                .partition(request.topic_id, request.partition)
                .expect("checked above")
                .clone();
            batch.finish(after)
        });
        self.answer(index, decided)
    }
}

/// The partition as it is and its new ISR (in replica order), or the refusal.
fn alter_check(
    image: &MetadataImage,
    request: &AlterPartition,
) -> Result<(PartitionImage, Vec<BrokerId>), ApiError> {
    let broker_id = request.broker_id;
    let registered = image.broker(broker_id).map(|broker| broker.broker_epoch);
    if registered != Some(request.broker_epoch) {
        let message = format!(
            "broker {broker_id} asked with epoch {}, but its registration has epoch {registered:?}",
            request.broker_epoch
        );
        return Err(ApiError::new(STALE_BROKER_EPOCH, message));
    }
    let name = format!("{}-{}", request.topic_id, request.partition);
    let Some(current) = image.partition(request.topic_id, request.partition) else {
        let message = format!("partition {name} does not exist");
        return Err(ApiError::new(UNKNOWN_TOPIC_OR_PARTITION, message));
    };
    if current.leader != broker_id {
        let message = format!(
            "broker {broker_id} does not lead {name}; its leader is {}",
            current.leader
        );
        return Err(ApiError::new(NOT_LEADER_OR_FOLLOWER, message));
    }
    if request.leader_epoch != current.leader_epoch {
        let message = format!(
            "leader epoch {} of {name} is not the current {}",
            request.leader_epoch, current.leader_epoch
        );
        return Err(ApiError::new(FENCED_LEADER_EPOCH, message));
    }
    if request.partition_epoch != current.partition_epoch {
        let message = format!(
            "partition epoch {} of {name} is not the current {}; propose from the new state",
            request.partition_epoch, current.partition_epoch
        );
        return Err(ApiError::new(INVALID_UPDATE_VERSION, message));
    }
    let proposed: BTreeSet<BrokerId> = request.isr.iter().copied().collect();
    let invalid = if proposed.len() != request.isr.len() {
        Some("repeats a member")
    } else if !proposed
        .iter()
        .all(|member| current.replicas.contains(member))
    {
        Some("names a broker that is not a replica")
    } else if !proposed.contains(&broker_id) {
        Some("leaves out its leader")
    } else {
        None
    };
    if let Some(invalid) = invalid {
        let message = format!("ISR {:?} for {name} {invalid}", request.isr);
        return Err(ApiError::new(INVALID_REQUEST, message));
    }
    let ineligible = proposed
        .iter()
        .find(|member| !current.isr.contains(member) && !image.broker_is_live(**member));
    if let Some(ineligible) = ineligible {
        let message = format!("broker {ineligible} is fenced and cannot join the ISR of {name}");
        return Err(ApiError::new(INELIGIBLE_REPLICA, message));
    }
    let isr = current
        .replicas
        .iter()
        .copied()
        .filter(|replica| proposed.contains(replica))
        .collect();
    Ok((current.clone(), isr))
}
