//! Leader election and ISR changes when a broker leaves (fenced, shutting down, restarted) or
//! arrives (unfenced), when a topic starts allowing unclean election, and the periodic
//! preferred-leader election.
//!
//! The rules (Kafka's `PartitionChangeBuilder`): the leader is the first live ISR member in
//! replica order; with none, the partition has no leader (`LEADER_NONE`), unless the topic's
//! `unclean.leader.election.enable` is true, when the first live replica leads with an ISR of
//! itself. A leaving broker leaves every ISR unless it is the last member: the last member may
//! hold records no one else has, so it stays, and leads again when it comes back. A live
//! leader is never moved by these rules; only the preferred-leader election moves one: every
//! `leader_rebalance_interval_ms`, a partition whose first replica (the preferred leader) is
//! live and in the ISR gets it back as leader, at a new leader epoch, its ISR unchanged.

use super::Batch;
use crate::image::{MetadataImage, PartitionImage};
use crate::planted::PlantedBug;
use crate::records::{BrokerId, MetadataRecord, PartitionChange, TopicId, LEADER_NONE};
use crate::topic_config::topic_config_value;

/// Who may lead: live brokers, except one on its way out (still live in the image until its
/// FenceBroker record, which comes after the partition changes).
#[derive(Clone, Copy)]
pub(super) struct Electable<'a> {
    pub image: &'a MetadataImage,
    pub leaving: Option<BrokerId>,
    pub planted: Option<PlantedBug>,
}

impl Electable<'_> {
    fn may_lead(&self, broker_id: BrokerId) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(PlantedBug::FencedBrokerLeads) {
            return self.image.broker(broker_id).is_some();
        }
        let _ = self.planted;
        self.leaving != Some(broker_id) && self.image.broker_is_live(broker_id)
    }

    /// The leader and ISR for a partition whose leader must be (re)chosen, given its `isr`.
    fn choose(
        &self,
        partition: &PartitionImage,
        isr: Vec<BrokerId>,
        unclean: bool,
    ) -> (BrokerId, Vec<BrokerId>) {
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(PlantedBug::ElectOutsideIsr) {
            return self.choose_outside_isr(partition, isr);
        }
        let in_isr = |replica: &&BrokerId| isr.contains(replica);
        if let Some(&leader) = partition
            .replicas
            .iter()
            .filter(in_isr)
            .find(|replica| self.may_lead(**replica))
        {
            return (leader, isr);
        }
        if unclean {
            if let Some(&leader) = partition.replicas.iter().find(|r| self.may_lead(**r)) {
                return (leader, vec![leader]);
            }
        }
        (LEADER_NONE, isr)
    }

    /// Planted: the first live replica leads whether or not it is in the ISR, and joins the
    /// ISR (the leaving broker leaves it) so the image stays self-consistent.
    #[cfg(feature = "planted-bugs")]
    fn choose_outside_isr(
        &self,
        partition: &PartitionImage,
        isr: Vec<BrokerId>,
    ) -> (BrokerId, Vec<BrokerId>) {
        let Some(&leader) = partition.replicas.iter().find(|r| self.may_lead(**r)) else {
            return (LEADER_NONE, isr);
        };
        let isr = partition
            .replicas
            .iter()
            .copied()
            .filter(|r| *r == leader || (isr.contains(r) && Some(*r) != self.leaving))
            .collect();
        (leader, isr)
    }
}

pub(super) fn unclean_allowed(image: &MetadataImage, topic_id: TopicId) -> bool {
    let topic = image.topic(topic_id).expect("a known topic");
    let (value, _) =
        topic_config_value(&topic.configs, "unclean.leader.election.enable").expect("a known key");
    value == "true"
}

/// Every partition, in topic-name then partition order (deterministic).
fn partitions(image: &MetadataImage) -> Vec<(TopicId, i32, PartitionImage)> {
    image
        .topics()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .map(move |(index, partition)| (topic.topic_id, index as i32, partition.clone()))
        })
        .collect()
}

fn change_push(
    batch: &mut Batch<'_>,
    (topic_id, partition_index, partition): (TopicId, i32, &PartitionImage),
    (leader, isr): (BrokerId, Vec<BrokerId>),
) {
    let change = PartitionChange {
        topic_id,
        partition: partition_index,
        leader: (leader != partition.leader).then_some(leader),
        isr: (isr != partition.isr).then_some(isr),
    };
    if change.leader.is_some() || change.isr.is_some() {
        batch.push(MetadataRecord::PartitionChange(change));
    }
}

/// Moves leadership away from `leaving` and takes it out of every ISR it is not the last
/// member of. Called before the record that fences it (or re-registers it, fenced).
pub(super) fn broker_leave(batch: &mut Batch<'_>, leaving: BrokerId, planted: Option<PlantedBug>) {
    for (topic_id, index, partition) in partitions(batch.image()) {
        let leads = partition.leader == leaving;
        if !leads && !partition.isr.contains(&leaving) {
            continue;
        }
        let mut isr = partition.isr.clone();
        if isr.len() > 1 {
            isr.retain(|member| *member != leaving);
        }
        let decision = if leads {
            let electable = Electable {
                image: batch.image(),
                leaving: Some(leaving),
                planted,
            };
            electable.choose(&partition, isr, unclean_allowed(batch.image(), topic_id))
        } else {
            (partition.leader, isr)
        };
        change_push(batch, (topic_id, index, &partition), decision);
    }
}

/// Elects a leader for every partition without one that now can have one (after a broker is
/// unfenced, or a topic allows unclean election), of `only` if given, else of every topic.
pub(super) fn offline_elect(
    batch: &mut Batch<'_>,
    only: Option<TopicId>,
    planted: Option<PlantedBug>,
) {
    for (topic_id, index, partition) in partitions(batch.image()) {
        if partition.leader != LEADER_NONE || only.is_some_and(|only| only != topic_id) {
            continue;
        }
        let electable = Electable {
            image: batch.image(),
            leaving: None,
            planted,
        };
        let unclean = unclean_allowed(batch.image(), topic_id);
        let decision = electable.choose(&partition, partition.isr.clone(), unclean);
        change_push(batch, (topic_id, index, &partition), decision);
    }
}

/// The preferred leader of a partition that could lead it and does not: its first replica,
/// when live and in the ISR.
fn preferred_electable(image: &MetadataImage, partition: &PartitionImage) -> Option<BrokerId> {
    let preferred = *partition.replicas.first()?;
    let electable = partition.leader != preferred
        && partition.isr.contains(&preferred)
        && image.broker_is_live(preferred);
    electable.then_some(preferred)
}

/// Whether some partition's preferred leader could lead it and does not.
pub(super) fn preferred_pending(image: &MetadataImage) -> bool {
    image.topics().any(|topic| {
        topic
            .partitions
            .iter()
            .any(|partition| preferred_electable(image, partition).is_some())
    })
}

/// The preferred-leader election (Kafka's `auto.leader.rebalance.enable`): each partition whose
/// preferred leader is live and in the ISR, and does not lead, gets it as leader. The ISR is
/// kept; the leader epoch bumps (`image`), so the old leader's requests are fenced.
pub(super) fn preferred_elect(batch: &mut Batch<'_>) {
    for (topic_id, index, partition) in partitions(batch.image()) {
        if let Some(preferred) = preferred_electable(batch.image(), &partition) {
            let decision = (preferred, partition.isr.clone());
            change_push(batch, (topic_id, index, &partition), decision);
        }
    }
}
