//! Replica placement for new partitions (CreateTopics, CreatePartitions), after Kafka's
//! `AdminUtils.assignReplicasToBrokers`: leaders go round the brokers from a random start, and
//! each partition's followers follow its leader at a shift that changes every full round, so
//! leaders and replicas spread evenly and the followers of one broker's partitions are not all
//! on the same other broker.
//!
//! Rack-aware when every broker has a rack: the brokers are first arranged so that racks
//! alternate (r1, r2, r3, r1, ...), and a follower is skipped while its rack already holds a
//! replica of the partition and some rack does not. So a partition's replicas span
//! min(replication factor, racks) racks.

use crate::records::BrokerId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A broker placement may use: registered and unfenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    pub broker_id: BrokerId,
    pub rack: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("replication factor {replication_factor} is larger than the {brokers} live brokers")]
    ReplicationFactor {
        replication_factor: usize,
        brokers: usize,
    },
}

/// Replicas (leader first) for partitions `partition_first..partition_first + partition_count`
/// over `brokers`. Start and shift are drawn from `rng`.
pub fn replicas_assign(
    brokers: &[PlacementBroker],
    partition_first: usize,
    partition_count: usize,
    replication_factor: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    assert!(replication_factor >= 1, "validated by the caller");
    if replication_factor > brokers.len() {
        return Err(PlacementError::ReplicationFactor {
            replication_factor,
            brokers: brokers.len(),
        });
    }
    let (arranged, racks) = brokers_arrange(brokers);
    let rack_count = racks.iter().collect::<BTreeSet<_>>().len();
    let broker_count = arranged.len();
    let start = rng.gen_range(0..broker_count);
    let mut shift = rng.gen_range(0..broker_count);
    let mut assignment = Vec::with_capacity(partition_count);
    for partition in partition_first..partition_first + partition_count {
        // A new round of `broker_count` partitions (counted from this call's first, so that
        // the partitions it adds are balanced among themselves) gets a new follower pattern.
        if partition > partition_first && (partition - partition_first).is_multiple_of(broker_count)
        {
            shift += 1;
        }
        let first = (partition + start) % broker_count;
        let mut chosen = vec![first];
        let mut step = 0;
        while chosen.len() < replication_factor {
            // Every broker but `first` comes up once in each `broker_count - 1` steps, so one
            // pass finds an unused rack while one is left, and a second pass any broker.
            assert!(step < 2 * broker_count, "placement makes progress");
            let candidate = follower_index(first, shift, step, broker_count);
            step += 1;
            let racks_used: BTreeSet<&String> = chosen.iter().map(|&at| &racks[at]).collect();
            let rack_new = !racks_used.contains(&racks[candidate]);
            if chosen.contains(&candidate) || (racks_used.len() < rack_count && !rack_new) {
                continue;
            }
            chosen.push(candidate);
        }
        assignment.push(chosen.into_iter().map(|at| arranged[at]).collect());
    }
    Ok(assignment)
}

/// The position of a partition's follower number `step` (Kafka's `replicaIndex`): never the
/// leader's position, and a different pattern in each round of partitions.
fn follower_index(first: usize, shift: usize, step: usize, broker_count: usize) -> usize {
    assert!(broker_count > 1, "a follower needs a second broker");
    (first + 1 + (shift + step) % (broker_count - 1)) % broker_count
}

/// The brokers in placement order with their racks: by id without racks; with racks (all
/// brokers have one), alternating racks, each rack's brokers by id. Without racks every broker
/// counts as its own rack, which makes the rack rule a no-op.
fn brokers_arrange(brokers: &[PlacementBroker]) -> (Vec<BrokerId>, Vec<String>) {
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|broker| broker.broker_id);
    let rack_aware = sorted.iter().all(|broker| broker.rack.is_some());
    if !rack_aware {
        let ids = sorted.iter().map(|broker| broker.broker_id).collect();
        let racks = sorted
            .iter()
            .map(|broker| format!("broker-{}", broker.broker_id))
            .collect();
        return (ids, racks);
    }
    let mut by_rack: BTreeMap<&str, Vec<BrokerId>> = BTreeMap::new();
    for broker in &sorted {
        let rack = broker.rack.as_deref().expect("rack aware");
        by_rack.entry(rack).or_default().push(broker.broker_id);
    }
    let (mut ids, mut racks) = (Vec::new(), Vec::new());
    let round_count = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..round_count {
        for (rack, members) in &by_rack {
            if let Some(&broker_id) = members.get(round) {
                ids.push(broker_id);
                racks.push(rack.to_string());
            }
        }
    }
    (ids, racks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn brokers(count: usize, racks: usize) -> Vec<PlacementBroker> {
        (0..count)
            .map(|index| PlacementBroker {
                broker_id: index as BrokerId + 1,
                rack: (racks > 0).then(|| format!("r{}", index % racks)),
            })
            .collect()
    }

    fn counts(values: impl Iterator<Item = BrokerId>) -> BTreeMap<BrokerId, usize> {
        let mut counts = BTreeMap::new();
        for value in values {
            *counts.entry(value).or_insert(0) += 1;
        }
        counts
    }

    fn spread(counts: &BTreeMap<BrokerId, usize>, broker_count: usize) -> usize {
        let max = counts.values().copied().max().unwrap_or(0);
        let min = if counts.len() < broker_count {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        max - min
    }

    #[test]
    fn a_replication_factor_above_the_broker_count_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            replicas_assign(&brokers(2, 0), 0, 3, 3, &mut rng),
            Err(PlacementError::ReplicationFactor {
                replication_factor: 3,
                brokers: 2
            })
        );
    }

    #[test]
    fn the_start_comes_from_the_rng() {
        let firsts: BTreeSet<BrokerId> = (0..20)
            .map(|seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                replicas_assign(&brokers(5, 0), 0, 1, 1, &mut rng).unwrap()[0][0]
            })
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_and_spread_evenly(
            broker_count in 1usize..8,
            rounds in 1usize..5,
            replication_factor in 1usize..4,
            rack_count in 0usize..4,
            partition_first in 0usize..10,
            seed in any::<u64>(),
        ) {
            prop_assume!(replication_factor <= broker_count);
            let brokers = brokers(broker_count, rack_count);
            let partition_count = rounds * broker_count;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let assignment = replicas_assign(
                &brokers, partition_first, partition_count, replication_factor, &mut rng,
            ).unwrap();
            prop_assert_eq!(assignment.len(), partition_count);
            let racks_total = if rack_count == 0 { broker_count } else { rack_count.min(broker_count) };
            for replicas in &assignment {
                prop_assert_eq!(replicas.len(), replication_factor);
                prop_assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), replication_factor);
                let racks: BTreeSet<_> = replicas
                    .iter()
                    .map(|id| brokers.iter().find(|b| b.broker_id == *id).unwrap().rack.clone())
                    .collect();
                if rack_count > 0 {
                    prop_assert_eq!(racks.len(), replication_factor.min(racks_total));
                }
            }
            let leaders = counts(assignment.iter().map(|replicas| replicas[0]));
            prop_assert!(spread(&leaders, broker_count) <= 1, "leaders {:?}", leaders);
            // With racks of equal size (or none), every broker holds the same number of replicas.
            if rack_count == 0 || broker_count % rack_count == 0 {
                let replicas = counts(assignment.iter().flatten().copied());
                prop_assert!(spread(&replicas, broker_count) <= 1, "replicas {:?}", replicas);
            }
        }
    }
}
