//! One test per rule: a clean history passes, and each planted violation is named.

use super::*;

fn event(node: NodeId, kind: MetaEventKind) -> MetaEvent {
    MetaEvent {
        time_ns: 0,
        node,
        kind,
    }
}

fn status(node: NodeId, term: u64, leader: NodeId) -> MetaEvent {
    event(
        node,
        MetaEventKind::Status {
            term,
            leader: Some(leader),
        },
    )
}

fn applied(node: NodeId, index: u64, digest: u64) -> MetaEvent {
    event(node, MetaEventKind::Applied { index, digest })
}

fn topics(items: &[(&str, u32)]) -> BTreeMap<String, TopicShape> {
    items
        .iter()
        .map(|&(name, partitions)| (name.to_string(), TopicShape { partitions }))
        .collect()
}

fn final_node(applied: u64, leader: NodeId, items: &[(&str, u32)]) -> FinalNode {
    FinalNode {
        term: 2,
        leader: Some(leader),
        applied,
        image_digest: applied * 7,
        topics: topics(items),
        brokers: [(1, false), (2, false), (3, false)].into_iter().collect(),
        partitions: BTreeMap::new(),
    }
}

/// Three nodes, leader 1 in term 2; `a` created (2 partitions) then grown to 3, `b` created
/// then deleted; every node applied 1..=4 and ends at 4.
fn clean() -> MetadataHistory {
    let mut events = vec![status(1, 2, 1), status(2, 2, 1), status(3, 2, 1)];
    for node in 1..=3 {
        events.push(event(node, MetaEventKind::Started));
    }
    events.push(event(
        1,
        MetaEventKind::Invoke {
            op: 1,
            admin: AdminOp::CreateTopics(vec![("a".into(), 2), ("b".into(), 1)]),
        },
    ));
    for node in 1..=3 {
        events.push(applied(node, 1, 11));
        events.push(applied(node, 2, 22));
    }
    events.push(event(
        1,
        MetaEventKind::Ok {
            op: 1,
            done: vec![true, true],
        },
    ));
    events.push(event(
        1,
        MetaEventKind::Image {
            applied: 2,
            topics: topics(&[("a", 2), ("b", 1)]),
        },
    ));
    events.push(event(
        2,
        MetaEventKind::Invoke {
            op: 2,
            admin: AdminOp::CreatePartitions(vec![("a".into(), 3)]),
        },
    ));
    for node in 1..=3 {
        events.push(applied(node, 3, 33));
    }
    events.push(event(
        2,
        MetaEventKind::Ok {
            op: 2,
            done: vec![true],
        },
    ));
    events.push(event(
        3,
        MetaEventKind::Invoke {
            op: 3,
            admin: AdminOp::DeleteTopics(vec!["b".into()]),
        },
    ));
    for node in 1..=3 {
        events.push(applied(node, 4, 44));
    }
    events.push(event(
        3,
        MetaEventKind::Ok {
            op: 3,
            done: vec![true],
        },
    ));
    // A create that failed for sure asks nothing of the image.
    events.push(event(
        3,
        MetaEventKind::Invoke {
            op: 4,
            admin: AdminOp::CreateTopics(vec![("c".into(), 1)]),
        },
    ));
    events.push(event(3, MetaEventKind::Fail { op: 4 }));
    let finals = (1..=3)
        .map(|node| (node, final_node(4, 1, &[("a", 3)])))
        .collect();
    let served = (1..=3)
        .map(|node| {
            let served = Served {
                topics: topics(&[("a", 3)]),
                brokers: [(1, false), (2, false), (3, false)].into_iter().collect(),
            };
            (node, Some(served))
        })
        .collect();
    MetadataHistory {
        events,
        finals,
        served,
        partitions_checked: false,
        replica_reads: Vec::new(),
    }
}

/// `clean` as a run that did not probe the brokers: only the image rules run.
fn unprobed() -> MetadataHistory {
    MetadataHistory {
        served: BTreeMap::new(),
        ..clean()
    }
}

fn kinds(history: &MetadataHistory) -> Vec<&'static str> {
    check(history).iter().map(MetadataAnomaly::kind).collect()
}

#[test]
fn clean_history_passes() {
    assert_eq!(check(&clean()), vec![]);
}

#[test]
fn two_leaders_in_one_term() {
    let mut history = clean();
    history.events.push(status(3, 2, 3));
    assert_eq!(kinds(&history), vec!["two-leaders"]);
    // A later term may have another leader.
    let mut history = clean();
    history.events.push(status(3, 3, 3));
    history.events.push(status(1, 3, 3));
    assert_eq!(kinds(&history), Vec::<&str>::new());
}

#[test]
fn diverged_entry_is_caught() {
    let mut history = clean();
    history.events.push(event(2, MetaEventKind::Started));
    history.events.push(applied(2, 1, 11));
    history.events.push(applied(2, 2, 99));
    assert_eq!(kinds(&history), vec!["log-diverged"]);
}

#[test]
fn going_back_is_caught_but_skips_repeats_and_restarts_are_not() {
    let mut history = clean();
    history.events.push(applied(2, 3, 33));
    assert_eq!(kinds(&history), vec!["apply-out-of-order"]);

    let mut history = clean();
    history.events.push(applied(2, 4, 44));
    history.events.push(applied(2, 6, 66));
    history.finals.values_mut().for_each(|node| {
        node.applied = 6;
        node.image_digest = 42;
    });
    assert_eq!(kinds(&history), Vec::<&str>::new());

    // A restart replays from its snapshot or the start.
    let mut history = clean();
    history.events.push(event(2, MetaEventKind::Started));
    history.events.push(applied(2, 1, 11));
    history.events.push(applied(2, 4, 44));
    assert_eq!(kinds(&history), Vec::<&str>::new());
}

#[test]
fn committed_entry_lost_at_the_end() {
    let mut history = clean();
    history.finals.get_mut(&3).unwrap().applied = 3;
    history.finals.get_mut(&3).unwrap().image_digest = 28;
    assert_eq!(kinds(&history), vec!["committed-lost"]);
}

#[test]
fn final_images_differ() {
    let mut history = clean();
    history.finals.get_mut(&2).unwrap().image_digest = 1;
    assert_eq!(kinds(&history), vec!["final-images-differ"]);
}

#[test]
fn acknowledged_operations_must_show_in_final_images() {
    // Created topic missing.
    let mut history = unprobed();
    history.finals.get_mut(&2).unwrap().topics.remove("a");
    assert_eq!(kinds(&history), vec!["acked-missing", "acked-missing"]);
    // Grown partitions shrunk.
    let mut history = unprobed();
    history.finals.get_mut(&2).unwrap().topics = topics(&[("a", 2)]);
    assert_eq!(kinds(&history), vec!["acked-missing"]);
    // Deleted topic back.
    let mut history = unprobed();
    history.finals.get_mut(&1).unwrap().topics = topics(&[("a", 3), ("b", 1)]);
    assert_eq!(kinds(&history), vec!["acked-missing"]);
}

#[test]
fn later_operation_excuses_and_refused_items_do_not() {
    // An indeterminate delete of `a` after its creation excuses its absence.
    let mut history = unprobed();
    history.events.push(event(
        2,
        MetaEventKind::Invoke {
            op: 9,
            admin: AdminOp::DeleteTopics(vec!["a".into()]),
        },
    ));
    history.events.push(event(2, MetaEventKind::Info { op: 9 }));
    for final_node in history.finals.values_mut() {
        final_node.topics.clear();
    }
    assert_eq!(kinds(&history), Vec::<&str>::new());
    // The same delete refused by the controller (Ok, item not done) excuses nothing.
    let mut history = unprobed();
    history.events.push(event(
        2,
        MetaEventKind::Invoke {
            op: 9,
            admin: AdminOp::DeleteTopics(vec!["a".into()]),
        },
    ));
    history.events.push(event(
        2,
        MetaEventKind::Ok {
            op: 9,
            done: vec![false],
        },
    ));
    history.finals.get_mut(&1).unwrap().topics.clear();
    assert_eq!(kinds(&history), vec!["acked-missing", "acked-missing"]);
}

#[test]
fn a_refused_create_whose_topic_exists_is_caught() {
    // `d` refused, and nobody else creates it: it must not exist.
    let mut history = unprobed();
    history.events.push(event(
        2,
        MetaEventKind::Invoke {
            op: 9,
            admin: AdminOp::CreateTopics(vec![("d".into(), 1)]),
        },
    ));
    history.events.push(event(
        2,
        MetaEventKind::Ok {
            op: 9,
            done: vec![false],
        },
    ));
    assert_eq!(kinds(&history), Vec::<&str>::new());
    for final_node in history.finals.values_mut() {
        final_node
            .topics
            .insert("d".into(), TopicShape { partitions: 1 });
    }
    assert_eq!(kinds(&history), vec!["refused-but-done"]);
    // A second create of the same name may have made it: no witness.
    history.events.push(event(
        3,
        MetaEventKind::Invoke {
            op: 10,
            admin: AdminOp::CreateTopics(vec![("d".into(), 1)]),
        },
    ));
    history
        .events
        .push(event(3, MetaEventKind::Info { op: 10 }));
    assert_eq!(kinds(&history), Vec::<&str>::new());
}

#[test]
fn acknowledging_node_must_keep_showing_it() {
    let mut history = clean();
    history.events.push(event(
        1,
        MetaEventKind::Image {
            applied: 4,
            topics: topics(&[]),
        },
    ));
    assert_eq!(kinds(&history), vec!["acked-undone"]);
    // After a restart the node replays; an image mid-replay is not an undo.
    let mut history = clean();
    history.events.push(event(1, MetaEventKind::Started));
    history.events.push(event(
        1,
        MetaEventKind::Image {
            applied: 0,
            topics: topics(&[]),
        },
    ));
    assert_eq!(kinds(&history), Vec::<&str>::new());
}

#[test]
fn liveness_after_heal() {
    let mut history = clean();
    for final_node in history.finals.values_mut() {
        final_node.leader = None;
    }
    assert_eq!(kinds(&history), vec!["no-leader"]);
    // Disagreeing leaders in different terms are no leader either.
    let mut history = clean();
    let node = history.finals.get_mut(&3).unwrap();
    node.term = 5;
    node.leader = Some(3);
    assert_eq!(kinds(&history), vec!["no-leader"]);

    let mut history = clean();
    history.finals.get_mut(&2).unwrap().brokers.remove(&3);
    assert_eq!(kinds(&history), vec!["broker-unregistered"]);
    let mut history = clean();
    history.finals.get_mut(&2).unwrap().brokers.insert(1, true);
    assert_eq!(kinds(&history), vec!["broker-fenced"]);
}

#[test]
fn malformed_histories_are_named() {
    let mut history = clean();
    history.events.push(event(
        1,
        MetaEventKind::Ok {
            op: 42,
            done: vec![],
        },
    ));
    history.events.push(event(1, MetaEventKind::Fail { op: 1 }));
    assert_eq!(
        kinds(&history),
        vec!["malformed-history", "malformed-history"]
    );
}

#[test]
fn every_live_broker_serves_its_final_image_through_the_kafka_protocol() {
    // No answer, or no entry at all for a live node.
    let mut history = clean();
    history.served.insert(2, None);
    assert_eq!(kinds(&history), vec!["not-serving"]);
    let mut history = clean();
    history.served.remove(&3);
    assert_eq!(kinds(&history), vec!["not-serving"]);
    // Metadata lists a topic the image does not have, or a different partition count.
    let mut history = clean();
    let served = history.served.get_mut(&1).unwrap().as_mut().unwrap();
    served
        .topics
        .insert("z".into(), TopicShape { partitions: 1 });
    assert_eq!(kinds(&history), vec!["served-differs"]);
    // Fewer partitions than an acknowledged CreatePartitions made: also not served.
    let mut history = clean();
    let served = history.served.get_mut(&1).unwrap().as_mut().unwrap();
    served.topics = topics(&[("a", 2)]);
    assert_eq!(kinds(&history), vec!["acked-not-served", "served-differs"]);
    // DescribeCluster leaves a live broker out, or shows it fenced.
    let mut history = clean();
    let served = history.served.get_mut(&2).unwrap().as_mut().unwrap();
    served.brokers.remove(&3);
    served.brokers.insert(1, true);
    assert_eq!(
        kinds(&history),
        vec!["served-broker-fenced", "served-broker-missing"]
    );
    // Not probed at all: the rules do not run.
    let mut history = clean();
    history.served.clear();
    assert!(kinds(&history).is_empty());
}

#[test]
fn an_acknowledged_operation_must_be_visible_in_every_brokers_metadata() {
    // Every broker's Metadata misses the created topic while the images have it.
    let mut history = clean();
    for served in history.served.values_mut() {
        served.as_mut().unwrap().topics.clear();
    }
    let found = kinds(&history);
    // `a` created, then grown: two acknowledged operations, three brokers.
    assert_eq!(
        found
            .iter()
            .filter(|&&kind| kind == "acked-not-served")
            .count(),
        6
    );
    assert_eq!(
        found
            .iter()
            .filter(|&&kind| kind == "served-differs")
            .count(),
        3
    );
    assert_eq!(found.len(), 9);
    // An indeterminate delete of `a` excuses its absence from Metadata, not from the image.
    history.events.push(event(
        2,
        MetaEventKind::Invoke {
            op: 9,
            admin: AdminOp::DeleteTopics(vec!["a".into()]),
        },
    ));
    history.events.push(event(2, MetaEventKind::Info { op: 9 }));
    assert_eq!(kinds(&history), vec!["served-differs"; 3]);
    // The deleted topic served again by one broker.
    let mut history = clean();
    let served = history.served.get_mut(&3).unwrap().as_mut().unwrap();
    served
        .topics
        .insert("b".into(), TopicShape { partitions: 1 });
    assert_eq!(kinds(&history), vec!["acked-not-served", "served-differs"]);
}

fn partition(replicas: &[NodeId], isr: &[NodeId], leader: Option<NodeId>) -> FinalPartition {
    FinalPartition {
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        leader,
    }
}

/// The clean history with topic `a`'s two partitions replicated on all three nodes, checked.
fn replicated(partitions: Vec<FinalPartition>) -> MetadataHistory {
    let mut history = clean();
    history.partitions_checked = true;
    for final_node in history.finals.values_mut() {
        final_node
            .partitions
            .insert("a".to_string(), partitions.clone());
    }
    history
}

#[test]
fn after_heal_every_partition_has_a_live_leader_and_a_full_isr() {
    let whole = partition(&[1, 2, 3], &[1, 2, 3], Some(2));
    assert!(check(&replicated(vec![whole.clone(), whole.clone()])).is_empty());
    // Unchecked (the metadata world, whose ISRs no data plane expands), nothing is judged.
    let mut unchecked = replicated(vec![whole.clone(), partition(&[1, 2, 3], &[1], None)]);
    unchecked.partitions_checked = false;
    assert!(check(&unchecked).is_empty());

    let offline = replicated(vec![whole.clone(), partition(&[1, 2, 3], &[1, 2, 3], None)]);
    assert_eq!(kinds(&offline), vec!["partition-offline"; 3]);
    let shrunk = replicated(vec![partition(&[1, 2, 3], &[2], Some(2)), whole.clone()]);
    assert_eq!(kinds(&shrunk), vec!["isr-not-full"; 3]);
    let anomaly = check(&shrunk).remove(0);
    assert!(
        matches!(&anomaly, MetadataAnomaly::IsrNotFull { missing, partition: 0, .. } if missing == &[1, 3]),
        "{anomaly}"
    );
}

/// A node dead for good (not among the finals) is excused from the ISR, and may not lead; a
/// partition whose replicas all died is not judged at all.
#[test]
fn a_dead_node_is_excused_but_may_not_lead() {
    let without_3 = |partitions: Vec<FinalPartition>| {
        let mut history = replicated(partitions);
        history.finals.remove(&3);
        for final_node in history.finals.values_mut() {
            final_node.brokers.insert(3, true);
        }
        history
    };
    let history = without_3(vec![
        partition(&[1, 2, 3], &[1, 2], Some(1)),
        partition(&[3], &[3], Some(3)),
    ]);
    assert!(check(&history).is_empty(), "{:?}", kinds(&history));
    let led_by_dead = without_3(vec![
        partition(&[1, 2, 3], &[3], Some(3)),
        partition(&[1, 2, 3], &[1, 2], Some(1)),
    ]);
    assert_eq!(
        kinds(&led_by_dead),
        vec![
            "partition-offline",
            "isr-not-full",
            "partition-offline",
            "isr-not-full"
        ]
    );
}

fn replica_read(node: NodeId, partition: i32, records: &[(i64, i64)]) -> ReplicaRead {
    ReplicaRead {
        node,
        topic: "a".to_string(),
        partition,
        high_watermark: records.len() as i64,
        records: records.to_vec(),
    }
}

/// Replicas may hold more or less of a partition (a lagging follower's high watermark is lower)
/// but never different records at one offset.
#[test]
fn replicas_must_serve_the_same_records_below_their_high_watermarks() {
    let mut history = clean();
    history.replica_reads = vec![
        replica_read(1, 0, &[(0, 10), (1, 11), (2, 12)]),
        replica_read(2, 0, &[(0, 10), (1, 11)]),
        replica_read(3, 1, &[(0, 20)]),
        replica_read(1, 1, &[(0, 20), (1, 21)]),
    ];
    assert!(check(&history).is_empty(), "{:?}", kinds(&history));
    history
        .replica_reads
        .push(replica_read(3, 0, &[(0, 10), (1, 13), (2, 14)]));
    let anomalies = check(&history);
    assert_eq!(anomalies.len(), 1, "one per partition: {anomalies:?}");
    assert!(
        matches!(&anomalies[0], MetadataAnomaly::ReplicasDiffer { partition: 0, offset: 1, values, .. }
            if values == &BTreeMap::from([(1, 11), (2, 11), (3, 13)])),
        "{}",
        anomalies[0]
    );
}
