//! One test per operation and rule. Every proposal goes through the encoding into a follower
//! image that must equal the controller's (`Cluster::commit`).

use super::errors::*;
use super::testing::Cluster;
use super::*;
use crate::image::MetadataImage;
use crate::records::{IncarnationId, PartitionChange, LEADER_NONE};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn codes<T>(results: &[(String, Result<T, ApiError>)]) -> Vec<(String, i16)> {
    results
        .iter()
        .map(|(name, result)| (name.clone(), result.as_ref().err().map_or(0, |e| e.code)))
        .collect()
}

#[test]
fn a_new_incarnation_gets_a_new_epoch_and_starts_fenced_a_retry_the_same() {
    let mut cluster = Cluster::new(1);
    assert_eq!(cluster.register(1, 100, None), 1);
    assert_eq!(cluster.register(2, 200, None), 2);
    assert!(cluster.committed.broker(1).unwrap().fenced);
    let offset = cluster.committed.offset();
    // A retry: same epoch, nothing written.
    assert_eq!(cluster.register(1, 100, None), 1);
    assert_eq!(cluster.committed.offset(), offset);
    // A restart: a new epoch, above every epoch handed out so far.
    assert_eq!(cluster.register(1, 101, None), 3);
    let moved = BrokerRegistrationRequest {
        broker_id: 1,
        incarnation_id: IncarnationId(101),
        host: "elsewhere".into(),
        port: 1,
        rack: None,
    };
    let error = cluster
        .controller
        .register_broker(9, 0, &moved)
        .reply
        .unwrap_err();
    assert_eq!(error.code, DUPLICATE_BROKER_REGISTRATION);
    let negative = BrokerRegistrationRequest {
        broker_id: -1,
        ..moved
    };
    let error = cluster
        .controller
        .register_broker(9, 0, &negative)
        .reply
        .unwrap_err();
    assert_eq!(error.code, INVALID_REQUEST);
}

#[test]
fn a_broker_is_unfenced_once_it_has_applied_its_registration() {
    let mut cluster = Cluster::new(1);
    cluster.register(1, 1, None);
    let registered_offset = cluster.committed.broker(1).unwrap().registered_offset;
    let behind = BrokerHeartbeat {
        broker_id: 1,
        broker_epoch: 1,
        metadata_offset: registered_offset - 1,
        want_shutdown: false,
    };
    let proposal = cluster
        .controller
        .heartbeat(cluster.index(), 0, &behind)
        .map(Result::unwrap);
    assert!(proposal.records.is_empty());
    assert!(cluster.commit(proposal).is_fenced);
    let caught_up = BrokerHeartbeat {
        metadata_offset: registered_offset,
        ..behind.clone()
    };
    let proposal = cluster
        .controller
        .heartbeat(cluster.index(), 0, &caught_up)
        .map(Result::unwrap);
    assert!(!cluster.commit(proposal).is_fenced);
    assert!(cluster.committed.broker_is_live(1));
    let stale = BrokerHeartbeat {
        broker_epoch: 0,
        ..caught_up.clone()
    };
    let error = cluster
        .controller
        .heartbeat(cluster.index(), 0, &stale)
        .reply
        .unwrap_err();
    assert_eq!(error.code, STALE_BROKER_EPOCH);
    let unknown = BrokerHeartbeat {
        broker_id: 7,
        ..caught_up
    };
    let error = cluster
        .controller
        .heartbeat(cluster.index(), 0, &unknown)
        .reply
        .unwrap_err();
    assert_eq!(error.code, BROKER_ID_NOT_REGISTERED);
}

/// Session expiry: leadership goes to the next live ISR member in replica order, the broker
/// leaves every ISR but one where it is the last member, and is fenced.
#[test]
fn an_expired_session_fences_the_broker_and_moves_its_leadership() {
    let mut cluster = Cluster::new(3);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 3, 2, &[]).unwrap();
    cluster.create("solo", 1, 1, &[]).unwrap();
    insta::assert_snapshot!(cluster.render(), @r#"
        broker 1 epoch 1 live rack - registered at 1
        broker 2 epoch 2 live rack - registered at 3
        broker 3 epoch 3 live rack - registered at 5
        solo-0 leader 1 epochs 0/0 replicas [1] isr [1]
        t-0 leader 1 epochs 0/0 replicas [1, 2] isr [1, 2]
        t-1 leader 2 epochs 0/0 replicas [2, 3] isr [2, 3]
        t-2 leader 3 epochs 0/0 replicas [3, 1] isr [3, 1]
    "#);
    let timeout = cluster.controller.config().session_timeout_ms;
    assert_eq!(cluster.controller.next_deadline(), Some(timeout));
    cluster.now_ms = timeout - 1;
    for broker_id in [1, 3] {
        cluster.heartbeat(broker_id, false);
    }
    // Broker 2 did not heartbeat: its session ends first.
    assert_eq!(cluster.controller.next_deadline(), Some(timeout));
    cluster.tick(0);
    assert!(cluster.committed.broker_is_live(2));
    cluster.tick(1);
    insta::assert_snapshot!(cluster.render(), @r#"
        broker 1 epoch 1 live rack - registered at 1
        broker 2 epoch 2 fenced rack - registered at 3
        broker 3 epoch 3 live rack - registered at 5
        solo-0 leader 1 epochs 0/0 replicas [1] isr [1]
        t-0 leader 1 epochs 0/1 replicas [1, 2] isr [1]
        t-1 leader 3 epochs 1/1 replicas [2, 3] isr [3]
        t-2 leader 3 epochs 0/0 replicas [3, 1] isr [3, 1]
    "#);
    assert_eq!(cluster.controller.next_deadline(), Some(2 * timeout - 1));
}

#[test]
fn an_unfenced_broker_leads_the_offline_partitions_whose_isr_it_is_in() {
    let mut cluster = Cluster::new(4);
    cluster.brokers_up(&[1, 2]);
    cluster.create("t", 2, 1, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let timeout = cluster.controller.config().session_timeout_ms;
    cluster.tick(timeout);
    for partition in 0..2 {
        let image = cluster.committed.partition(topic_id, partition).unwrap();
        assert_eq!(image.leader, LEADER_NONE);
        assert_eq!(image.isr.len(), 1, "the last ISR member stays");
    }
    // Broker 1 comes back (same incarnation): it leads its partitions again, at a new epoch.
    cluster.heartbeat(1, false);
    let led: Vec<_> = (0..2)
        .map(|p| cluster.committed.partition(topic_id, p).unwrap().clone())
        .filter(|partition| partition.isr == [1])
        .collect();
    assert!(!led.is_empty());
    for partition in led {
        assert_eq!(partition.leader, 1);
        assert_eq!(partition.leader_epoch, 2);
    }
}

#[test]
fn unclean_election_happens_only_when_the_topic_allows_it() {
    for unclean in ["false", "true"] {
        let mut cluster = Cluster::new(5);
        cluster.brokers_up(&[1, 2]);
        let configs = [("unclean.leader.election.enable", unclean)];
        cluster.create("t", 1, 2, &configs).unwrap();
        let topic_id = cluster.topic_id("t");
        let replicas = cluster
            .committed
            .partition(topic_id, 0)
            .unwrap()
            .replicas
            .clone();
        let (first, second) = (replicas[0], replicas[1]);
        // The second replica goes first, leaving the first as the ISR's last member; then the
        // first goes, and the second comes back.
        cluster.heartbeat(second, true);
        cluster.heartbeat(first, true);
        cluster.heartbeat(second, false);
        let partition = cluster.committed.partition(topic_id, 0).unwrap();
        match unclean {
            "true" => {
                assert_eq!(partition.leader, second);
                assert_eq!(partition.isr, [second]);
            }
            _ => {
                assert_eq!(partition.leader, LEADER_NONE);
                assert_eq!(partition.isr, [first]);
                // Allowing it later elects at once.
                let alter = ConfigAlter {
                    topic: "t".into(),
                    changes: vec![ConfigChange::Set {
                        key: "unclean.leader.election.enable".into(),
                        value: "TRUE".into(),
                    }],
                };
                let proposal = cluster
                    .controller
                    .configs_alter(cluster.index(), &[alter], false);
                assert_eq!(codes(&cluster.commit(proposal)), [("t".into(), 0)]);
                let partition = cluster.committed.partition(topic_id, 0).unwrap();
                assert_eq!(partition.leader, second);
            }
        }
    }
}

#[test]
fn controlled_shutdown_hands_leadership_over_and_fences() {
    let mut cluster = Cluster::new(6);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 6, 3, &[]).unwrap();
    let reply = cluster.heartbeat(2, true);
    assert_eq!(
        reply,
        HeartbeatReply {
            is_fenced: true,
            should_shutdown: true
        }
    );
    assert!(!cluster.committed.broker_is_live(2));
    for topic in cluster.committed.topics() {
        for partition in topic.partitions {
            assert_ne!(partition.leader, 2);
            assert!(!partition.isr.contains(&2));
            assert_ne!(partition.leader, LEADER_NONE);
        }
    }
    // Asking again changes nothing.
    let offset = cluster.committed.offset();
    assert!(cluster.heartbeat(2, true).should_shutdown);
    assert_eq!(cluster.committed.offset(), offset);
}

#[test]
fn a_restarted_broker_loses_its_leadership_until_it_catches_up() {
    let mut cluster = Cluster::new(7);
    cluster.brokers_up(&[1, 2]);
    cluster.create("t", 2, 2, &[]).unwrap();
    cluster.register(1, 1001, None);
    for topic in cluster.committed.topics() {
        for partition in topic.partitions {
            assert_eq!(partition.leader, 2);
            assert_eq!(partition.isr, [2]);
        }
    }
    assert!(!cluster.heartbeat(1, false).is_fenced);
}

#[test]
fn create_topics_validates_each_topic_on_its_own() {
    let mut cluster = Cluster::new(8);
    cluster.brokers_up(&[1, 2]);
    cluster.create("exists", 1, 1, &[]).unwrap();
    let topic =
        |name: &str, partition_count: i32, replication_factor: i16, config: &[(&str, &str)]| {
            TopicCreate {
                name: name.into(),
                partition_count,
                replication_factor,
                configs: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        };
    let topics = [
        topic("ok", -1, -1, &[("retention.ms", "5")]),
        topic("bad/name", 1, 1, &[]),
        topic("exists", 1, 1, &[]),
        topic("zero", 0, 1, &[]),
        topic("huge", 10_001, 1, &[]),
        topic("rf", 1, 3, &[]),
        topic("rf0", 1, 0, &[]),
        topic("config", 1, 1, &[("retention.ms", "soon")]),
        topic("twice", 1, 1, &[]),
        topic("twice", 1, 1, &[]),
    ];
    let proposal = cluster
        .controller
        .create_topics(cluster.index(), &topics, true);
    assert!(proposal.records.is_empty(), "validate_only writes nothing");
    let results = cluster.commit(proposal);
    let rendered: Vec<String> = results
        .iter()
        .map(|(name, result)| match result {
            Ok(created) => format!("{name}: ok {created:?}"),
            Err(error) => format!("{name}: {error}"),
        })
        .collect();
    insta::assert_snapshot!(rendered.join("\n"), @r#"
        ok: ok TopicCreated { topic_id: None, partition_count: 1, replication_factor: 1, configs: {"retention.ms": "5"} }
        bad/name: error 17: invalid topic name "bad/name": only ASCII letters, digits, '.', '_' and '-' are allowed
        exists: error 36: topic "exists" already exists
        zero: error 37: partition count 0 must be between 1 and 10000
        huge: error 37: partition count 10001 must be between 1 and 10000
        rf: error 38: replication factor 3 must be between 1 and the 2 live brokers
        rf0: error 38: replication factor 0 must be between 1 and the 2 live brokers
        config: error 40: invalid value "soon" for retention.ms: expected an integer
        twice: error 42: topic "twice" appears more than once in the request
        twice: error 42: topic "twice" appears more than once in the request
    "#);
    let proposal = cluster
        .controller
        .create_topics(cluster.index(), &topics[..2], false);
    let results = cluster.commit(proposal);
    assert_eq!(codes(&results), [("ok".into(), 0), ("bad/name".into(), 17)]);
    let created = results[0].1.as_ref().unwrap();
    assert_eq!(cluster.committed.topic_id("ok"), created.topic_id);
    let topic = cluster.committed.topic_by_name("ok").unwrap();
    assert_eq!(topic.configs, created.configs);
    assert_eq!(topic.partitions.len(), 1);
}

#[test]
fn delete_topics_removes_and_a_recreated_topic_gets_a_new_id() {
    let mut cluster = Cluster::new(9);
    cluster.brokers_up(&[1]);
    cluster.create("t", 2, 1, &[("retention.ms", "5")]).unwrap();
    let old = cluster.topic_id("t");
    let names = ["t".to_string(), "nope".to_string()];
    let proposal = cluster.controller.delete_topics(cluster.index(), &names);
    let results = cluster.commit(proposal);
    assert_eq!(codes(&results), [("t".into(), 0), ("nope".into(), 3)]);
    assert!(cluster.committed.topic(old).is_none());
    cluster.create("t", 1, 1, &[]).unwrap();
    assert_ne!(cluster.topic_id("t"), old);
    assert!(cluster
        .committed
        .topic_by_name("t")
        .unwrap()
        .configs
        .is_empty());
}

#[test]
fn create_partitions_adds_partitions_at_the_topics_replication_factor() {
    let mut cluster = Cluster::new(10);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 1, 2, &[]).unwrap();
    let request = |name: &str, partition_count| PartitionsCreate {
        name: name.into(),
        partition_count,
    };
    let requests = [
        request("t", 1),
        request("nope", 3),
        request("u", 2),
        request("u", 2),
    ];
    let proposal = cluster
        .controller
        .create_partitions(cluster.index(), &requests, false);
    assert_eq!(
        codes(&cluster.commit(proposal)),
        [
            ("t".into(), 37),
            ("nope".into(), 3),
            ("u".into(), 42),
            ("u".into(), 42)
        ]
    );
    let proposal =
        cluster
            .controller
            .create_partitions(cluster.index(), &[request("t", 10_001)], false);
    assert_eq!(codes(&cluster.commit(proposal)), [("t".into(), 37)]);
    let proposal = cluster
        .controller
        .create_partitions(cluster.index(), &[request("t", 4)], true);
    assert!(proposal.records.is_empty());
    cluster.commit(proposal);
    let proposal = cluster
        .controller
        .create_partitions(cluster.index(), &[request("t", 4)], false);
    assert_eq!(codes(&cluster.commit(proposal)), [("t".into(), 0)]);
    let topic = cluster.committed.topic_by_name("t").unwrap();
    assert_eq!(topic.partitions.len(), 4);
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 2));
    // Two brokers go away: two replicas no longer fit.
    cluster.heartbeat(2, true);
    cluster.heartbeat(3, true);
    let proposal = cluster
        .controller
        .create_partitions(cluster.index(), &[request("t", 5)], false);
    assert_eq!(codes(&cluster.commit(proposal)), [("t".into(), 38)]);
}

#[test]
fn config_changes_are_validated_as_a_set_and_written_as_a_diff() {
    let mut cluster = Cluster::new(11);
    cluster.brokers_up(&[1]);
    cluster
        .create("t", 1, 1, &[("retention.ms", "5"), ("segment.ms", "7")])
        .unwrap();
    let set = |key: &str, value: &str| ConfigChange::Set {
        key: key.into(),
        value: value.into(),
    };
    let delete = |key: &str| ConfigChange::Delete { key: key.into() };
    let alter = |topic: &str, changes| ConfigAlter {
        topic: topic.into(),
        changes,
    };
    let alters = [
        alter("nope", vec![set("retention.ms", "1")]),
        alter(
            "t",
            vec![
                set("retention.ms", "5"),
                delete("segment.ms"),
                set("cleanup.policy", "delete,compact"),
            ],
        ),
    ];
    let proposal = cluster
        .controller
        .configs_alter(cluster.index(), &alters, false);
    let records = proposal.records.clone();
    assert_eq!(
        codes(&cluster.commit(proposal)),
        [("nope".into(), 3), ("t".into(), 0)]
    );
    insta::assert_snapshot!(format!("{records:?}"), @r#"[Config { topic_id: TopicId(8daf3354e42de59a65351b9e86a54f4a), key: "segment.ms", value: None }, Config { topic_id: TopicId(8daf3354e42de59a65351b9e86a54f4a), key: "cleanup.policy", value: Some("compact,delete") }]"#);
    for bad in [
        vec![set("retention.ms", "soon")],
        vec![delete("no.such.key")],
        vec![set("compression.type", "gzip")],
    ] {
        let proposal = cluster
            .controller
            .configs_alter(cluster.index(), &[alter("t", bad)], false);
        assert_eq!(
            codes(&cluster.commit(proposal)),
            [("t".into(), INVALID_CONFIG)]
        );
    }
    let proposal = cluster.controller.configs_alter(
        cluster.index(),
        &[alter("t", vec![set("retention.ms", "9")])],
        true,
    );
    assert!(proposal.records.is_empty());
}

#[test]
fn producer_id_blocks_are_handed_out_in_order_across_controllers() {
    let mut cluster = Cluster::new(12);
    cluster.brokers_up(&[1, 2]);
    let mut firsts = Vec::new();
    for broker_id in [1, 2, 1] {
        let epoch = cluster.committed.broker(broker_id).unwrap().broker_epoch;
        let proposal = cluster
            .controller
            .producer_ids_allocate(cluster.index(), broker_id, epoch);
        let block = cluster.commit(proposal).unwrap();
        assert_eq!(block.size, 1000);
        firsts.push(block.first);
        cluster.leader_change();
    }
    assert_eq!(firsts, [0, 1000, 2000]);
    let error = cluster
        .controller
        .producer_ids_allocate(cluster.index(), 1, 0)
        .reply
        .unwrap_err();
    assert_eq!(error.code, STALE_BROKER_EPOCH);
    let error = cluster
        .controller
        .producer_ids_allocate(cluster.index(), 9, 0)
        .reply
        .unwrap_err();
    assert_eq!(error.code, BROKER_ID_NOT_REGISTERED);
}

/// A new controller does not know when brokers last heartbeated: each gets a full session.
#[test]
fn a_new_controller_gives_every_broker_a_fresh_session() {
    let mut cluster = Cluster::new(13);
    cluster.brokers_up(&[1, 2]);
    let timeout = cluster.controller.config().session_timeout_ms;
    cluster.now_ms = timeout - 1;
    cluster.leader_change();
    assert_eq!(cluster.controller.next_deadline(), Some(2 * timeout - 1));
    cluster.tick(1);
    assert!(cluster.committed.broker_is_live(1));
    cluster.tick(timeout);
    assert!(!cluster.committed.broker_is_live(1));
    assert_eq!(cluster.controller.next_deadline(), None);
}

/// A reply that writes nothing may still describe state the controller proposed but the log
/// has not committed yet: it waits for that.
#[test]
fn a_reply_without_records_waits_for_the_last_proposal() {
    let mut cluster = Cluster::new(14);
    cluster.register(1, 1, None);
    let request = BrokerRegistrationRequest {
        broker_id: 2,
        incarnation_id: IncarnationId(2),
        host: "h".into(),
        port: 1,
        rack: None,
    };
    let first = cluster
        .controller
        .register_broker(cluster.index(), 0, &request)
        .map(Result::unwrap);
    let retry = cluster
        .controller
        .register_broker(cluster.index(), 0, &request)
        .map(Result::unwrap);
    assert!(retry.records.is_empty());
    assert_eq!(retry.reply_after, first.reply_after);
    assert_eq!(retry.reply, first.reply);
}

#[test]
fn the_controller_refuses_an_index_it_has_already_used() {
    let mut cluster = Cluster::new(15);
    cluster.register(1, 1, None);
    let used = cluster.committed.offset();
    let result = catch_unwind(AssertUnwindSafe(|| cluster.controller.tick(used, 0)));
    assert!(result.is_err());
}

#[test]
fn snapshots_round_trip_and_bad_ones_are_refused() {
    let mut cluster = Cluster::new(16);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.register(4, 4, Some("r"));
    cluster.create("t", 3, 3, &[("retention.ms", "5")]).unwrap();
    cluster.heartbeat(3, true);
    let bytes = cluster.committed.snapshot_encode();
    let decoded = MetadataImage::snapshot_decode(&bytes).unwrap();
    assert_eq!(decoded, cluster.committed);
    assert_eq!(decoded.snapshot_encode(), bytes);
    // A snapshot whose leader is a fenced broker is refused, not served.
    let text = String::from_utf8(bytes).unwrap();
    let broken = text
        .replace("\"leader\":1,", "\"leader\":3,")
        .replace("\"leader\":2,", "\"leader\":3,");
    let error = MetadataImage::snapshot_decode(broken.as_bytes()).unwrap_err();
    insta::assert_snapshot!(error.to_string(), @r#"metadata bytes are not a valid encoding: partition t-0: leader 3 is not in ISR [1, 2]"#);
    assert!(MetadataImage::snapshot_decode(b"{\"version\":1}").is_err());
    let offset = cluster.committed.offset();
    let restored = MetadataImage::snapshot_restore(offset, text.as_bytes()).unwrap();
    assert_eq!(restored, cluster.committed);
    assert!(MetadataImage::snapshot_restore(offset + 1, text.as_bytes()).is_err());
    assert!(MetadataImage::snapshot_decode(&text.as_bytes()[..text.len() / 2]).is_err());
}

/// The image refuses records that would break an invariant, loudly.
#[test]
fn the_image_panics_on_a_record_that_breaks_an_invariant() {
    let mut cluster = Cluster::new(17);
    cluster.brokers_up(&[1, 2]);
    cluster.create("t", 1, 2, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let partition = cluster.committed.partition(topic_id, 0).unwrap().clone();
    let follower = partition.replicas[1];
    cluster.heartbeat(follower, true);
    let index = cluster.committed.offset() + 1;
    let change = |leader: Option<i32>, isr: Option<Vec<i32>>| {
        vec![MetadataRecord::PartitionChange(PartitionChange {
            topic_id,
            partition: 0,
            leader,
            isr,
        })]
    };
    let broken = [
        ("fenced leader", change(Some(follower), Some(vec![1, 2]))),
        ("leader outside the ISR", change(Some(follower), None)),
        (
            "ISR outside the replicas",
            change(None, Some(vec![1, 2, 3])),
        ),
        ("empty ISR", change(None, Some(vec![]))),
        ("no change", change(None, None)),
        (
            "fencing a leader",
            vec![MetadataRecord::FenceBroker {
                broker_id: partition.leader,
                broker_epoch: cluster
                    .committed
                    .broker(partition.leader)
                    .unwrap()
                    .broker_epoch,
            }],
        ),
    ];
    for (what, records) in broken {
        let mut image = cluster.committed.clone();
        let result = catch_unwind(AssertUnwindSafe(|| image.apply_batch(index, &records)));
        assert!(result.is_err(), "{what} was applied");
    }
    let mut image = cluster.committed.clone();
    let stale = cluster.committed.offset();
    let result = catch_unwind(AssertUnwindSafe(|| image.apply_batch(stale, &[])));
    assert!(result.is_err(), "an index applied twice");
}

/// What Metadata and DescribeCluster read: live brokers only, topics by name, partitions with
/// their leader, replicas, ISR and leader epoch.
#[test]
fn the_read_side_lists_live_brokers_and_topics_by_name() {
    let mut cluster = Cluster::new(18);
    cluster.brokers_up(&[3, 1, 2]);
    cluster.create("zeta", 2, 3, &[]).unwrap();
    cluster.create("alpha", 1, 1, &[]).unwrap();
    cluster.heartbeat(2, true);
    let image = &cluster.committed;
    let live: Vec<i32> = image.brokers_live().map(|b| b.broker_id).collect();
    assert_eq!(live, [1, 3]);
    let names: Vec<&str> = image.topics().map(|topic| topic.name).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    let zeta = image.topics().find(|topic| topic.name == "zeta").unwrap();
    assert_eq!(Some(zeta.topic_id), image.topic_id("zeta"));
    for (index, partition) in zeta.partitions.iter().enumerate() {
        assert_eq!(
            image.partition(zeta.topic_id, index as i32),
            Some(partition)
        );
        assert!(partition.isr.iter().all(|member| *member != 2));
        let leader = partition.leader().unwrap();
        assert!(image.broker_is_live(leader));
    }
    assert_eq!(image.partition(zeta.topic_id, 2), None);
    assert_eq!(image.partition(zeta.topic_id, -1), None);
}

proptest::proptest! {
    /// Snapshot bytes from elsewhere: noise, and mutations of a real snapshot, give an image
    /// that keeps its invariants or an error, never a panic.
    #[test]
    fn decoding_bad_snapshots_never_panics(
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        flips in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
            1..6,
        ),
    ) {
        let _ = MetadataImage::snapshot_decode(&noise);
        let mut cluster = Cluster::new(19);
        cluster.brokers_up(&[1, 2, 3]);
        cluster.create("t", 3, 2, &[("retention.ms", "5")]).unwrap();
        cluster.heartbeat(2, true);
        let mut bytes = cluster.committed.snapshot_encode();
        for (index, byte) in flips {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(image) = MetadataImage::snapshot_decode(&bytes) {
            image.check_invariants();
        }
    }
}

/// Raft's own entries (a new leader's empty entry) move the applied offset and change nothing
/// else; a committed entry that does not decode is an error for the node to stop on.
#[test]
fn empty_entries_move_the_offset_and_bad_entries_are_errors() {
    let mut cluster = Cluster::new(20);
    cluster.brokers_up(&[1]);
    let mut image = cluster.committed.clone();
    let offset = image.offset();
    image.entry_apply(offset + 1, &[]).unwrap();
    assert_eq!(image.offset(), offset + 1);
    assert!(image.entry_apply(offset + 2, b"{").is_err());
    assert_eq!(image.offset(), offset + 1);
    // The controller built on it proposes after the empty entry.
    let controller = Controller::new(
        ControllerConfig::kafka_defaults(),
        image,
        0,
        super::testing::rng(1),
    );
    assert_eq!(controller.image().offset(), offset + 1);
}

/// With racks on every broker, each partition's replicas span as many racks as they can.
#[test]
fn topics_are_placed_across_racks() {
    let mut cluster = Cluster::new(21);
    for (broker_id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b")] {
        cluster.register(broker_id, broker_id as u128, Some(rack));
        cluster.heartbeat(broker_id, false);
    }
    cluster.create("t", 8, 2, &[]).unwrap();
    let topic = cluster.committed.topic_by_name("t").unwrap();
    for partition in &topic.partitions {
        let racks: std::collections::BTreeSet<_> = partition
            .replicas
            .iter()
            .map(|b| cluster.committed.broker(*b).unwrap().rack.clone())
            .collect();
        assert_eq!(racks.len(), 2, "{:?}", partition.replicas);
    }
}

/// The leader's AlterPartition for partition `partition` of `t`, from the committed state.
fn alter_from(cluster: &Cluster, partition: i32, isr: &[BrokerId]) -> AlterPartition {
    let topic_id = cluster.topic_id("t");
    let state = cluster.committed.partition(topic_id, partition).unwrap();
    let broker_id = state.leader;
    AlterPartition {
        broker_id,
        broker_epoch: cluster.committed.broker(broker_id).unwrap().broker_epoch,
        topic_id,
        partition,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        isr: isr.to_vec(),
    }
}

fn alter(
    cluster: &mut Cluster,
    request: &AlterPartition,
) -> Result<crate::image::PartitionImage, ApiError> {
    let proposal = cluster.controller.alter_partition(cluster.index(), request);
    if proposal.reply.is_err() {
        assert!(proposal.records.is_empty(), "a refusal writes nothing");
    }
    cluster.commit(proposal)
}

fn alter_code(cluster: &mut Cluster, request: &AlterPartition) -> i16 {
    alter(cluster, request).map_or_else(|error| error.code, |_| 0)
}

/// Each refusal of AlterPartition, in the order they are checked: a request wrong in several
/// ways gets the first one's code.
#[test]
fn alter_partition_refuses_stale_leaders_and_bad_isrs_each_with_its_code() {
    let mut cluster = Cluster::new(20);
    cluster.brokers_up(&[1, 2, 3, 4]);
    cluster.create("t", 1, 3, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let state = cluster.committed.partition(topic_id, 0).unwrap().clone();
    let [leader, second, third] = state.replicas[..] else {
        panic!("three replicas");
    };
    let outsider = (1..=4).find(|b| !state.replicas.contains(b)).unwrap();
    let good = alter_from(&cluster, 0, &[leader, second]);
    let offset = cluster.committed.offset();
    let refusals = [
        (
            AlterPartition {
                broker_epoch: good.broker_epoch - 1,
                leader_epoch: good.leader_epoch + 1,
                ..good.clone()
            },
            STALE_BROKER_EPOCH,
        ),
        (
            AlterPartition {
                broker_id: 9,
                ..good.clone()
            },
            STALE_BROKER_EPOCH,
        ),
        (
            AlterPartition {
                partition: 1,
                ..good.clone()
            },
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            AlterPartition {
                topic_id: crate::records::TopicId(7),
                ..good.clone()
            },
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            AlterPartition {
                broker_id: second,
                broker_epoch: cluster.committed.broker(second).unwrap().broker_epoch,
                leader_epoch: good.leader_epoch - 1,
                ..good.clone()
            },
            NOT_LEADER_OR_FOLLOWER,
        ),
        (
            AlterPartition {
                leader_epoch: good.leader_epoch - 1,
                partition_epoch: good.partition_epoch - 1,
                ..good.clone()
            },
            FENCED_LEADER_EPOCH,
        ),
        (
            AlterPartition {
                leader_epoch: good.leader_epoch + 1,
                ..good.clone()
            },
            FENCED_LEADER_EPOCH,
        ),
        (
            AlterPartition {
                partition_epoch: good.partition_epoch + 1,
                isr: vec![leader, leader],
                ..good.clone()
            },
            INVALID_UPDATE_VERSION,
        ),
        (
            AlterPartition {
                isr: vec![leader, second, leader],
                ..good.clone()
            },
            INVALID_REQUEST,
        ),
        (
            AlterPartition {
                isr: vec![leader, outsider],
                ..good.clone()
            },
            INVALID_REQUEST,
        ),
        (
            AlterPartition {
                isr: vec![second, third],
                ..good.clone()
            },
            INVALID_REQUEST,
        ),
        (
            AlterPartition {
                isr: vec![],
                ..good.clone()
            },
            INVALID_REQUEST,
        ),
    ];
    for (request, code) in &refusals {
        assert_eq!(alter_code(&mut cluster, request), *code, "{request:?}");
    }
    assert_eq!(cluster.committed.offset(), offset, "refusals write nothing");

    // Accepted: the ISR shrinks (given in any order, kept in replica order); the partition
    // epoch bumps, the leader epoch does not.
    let shrunk = alter(
        &mut cluster,
        &AlterPartition {
            isr: vec![second, leader],
            ..good.clone()
        },
    )
    .unwrap();
    assert_eq!(shrunk.isr, [leader, second]);
    assert_eq!(
        (shrunk.leader, shrunk.leader_epoch, shrunk.partition_epoch),
        (leader, state.leader_epoch, state.partition_epoch + 1)
    );
    assert_eq!(cluster.committed.partition(topic_id, 0), Some(&shrunk));
    // The same request again is based on an outdated ISR.
    assert_eq!(alter_code(&mut cluster, &good), INVALID_UPDATE_VERSION);
    // An unchanged ISR writes nothing and answers the state.
    let offset = cluster.committed.offset();
    let unchanged = alter_from(&cluster, 0, &[leader, second]);
    let same = alter(&mut cluster, &unchanged).unwrap();
    assert_eq!((same, cluster.committed.offset()), (shrunk, offset));

    // A fenced broker cannot join (KIP-841); once back, it can.
    cluster.heartbeat(third, true);
    assert!(!cluster.committed.broker_is_live(third));
    let grow = alter_from(&cluster, 0, &[leader, second, third]);
    assert_eq!(alter_code(&mut cluster, &grow), INELIGIBLE_REPLICA);
    cluster.register(third, 300, None);
    assert!(!cluster.heartbeat(third, false).is_fenced);
    let grow = alter_from(&cluster, 0, &[leader, second, third]);
    let grown = alter(&mut cluster, &grow).unwrap();
    assert_eq!(grown.isr, state.replicas);
    assert_eq!(grown.leader_epoch, state.leader_epoch);
}

/// A leader whose leadership moved is fenced: by NOT_LEADER_OR_FOLLOWER while another broker
/// leads, by FENCED_LEADER_EPOCH once it leads again (a new leader epoch), even re-based on the
/// current partition epoch; a restarted leader's old process by STALE_BROKER_EPOCH.
#[test]
fn a_replaced_leader_cannot_change_the_isr() {
    let config = ControllerConfig {
        leader_rebalance_interval_ms: 1_000,
        ..ControllerConfig::kafka_defaults()
    };
    let mut cluster = Cluster::with_config(21, config);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 1, 3, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let replicas = cluster
        .committed
        .partition(topic_id, 0)
        .unwrap()
        .replicas
        .clone();
    let [first, second, third] = replicas[..] else {
        panic!("three replicas");
    };
    let first_old = alter_from(&cluster, 0, &[first, second]);
    cluster.heartbeat(first, true);
    // `second` leads at epoch 1; this request of its stays behind.
    let second_stale = alter_from(&cluster, 0, &[second]);
    assert_eq!(second_stale.broker_id, second);
    // `first` comes back, is re-added and leads again (preferred), then leaves.
    cluster.register(first, 100, None);
    assert!(!cluster.heartbeat(first, false).is_fenced);
    let grow = alter_from(&cluster, 0, &replicas);
    alter(&mut cluster, &grow).unwrap();
    assert_eq!(
        alter_code(&mut cluster, &second_stale),
        INVALID_UPDATE_VERSION
    );
    cluster.tick(1_000);
    assert_eq!(
        alter_code(&mut cluster, &second_stale),
        NOT_LEADER_OR_FOLLOWER
    );
    cluster.heartbeat(first, true);
    let now = cluster.committed.partition(topic_id, 0).unwrap().clone();
    assert_eq!((now.leader, now.leader_epoch), (second, 3));
    assert_eq!(alter_code(&mut cluster, &second_stale), FENCED_LEADER_EPOCH);
    let rebased = AlterPartition {
        partition_epoch: now.partition_epoch,
        isr: vec![second, third],
        ..second_stale
    };
    assert_eq!(alter_code(&mut cluster, &rebased), FENCED_LEADER_EPOCH);
    // The first process of `first`, as if still leading at epoch 0.
    assert_eq!(alter_code(&mut cluster, &first_old), STALE_BROKER_EPOCH);
    let current = AlterPartition {
        leader_epoch: now.leader_epoch,
        ..rebased
    };
    assert_eq!(alter(&mut cluster, &current).unwrap().isr, [second, third]);
}

/// A call retried with its id after a lost answer gets the first try's answer and writes
/// nothing; a new call with the same content is based on an outdated ISR.
#[test]
fn a_retried_alter_partition_gets_the_first_answer() {
    let mut cluster = Cluster::new(22);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 1, 3, &[]).unwrap();
    let state = cluster
        .committed
        .partition(cluster.topic_id("t"), 0)
        .unwrap()
        .clone();
    let request = alter_from(&cluster, 0, &state.replicas[..2]);
    let id = |sequence| crate::records::RequestId {
        broker_id: request.broker_id,
        incarnation_id: IncarnationId(request.broker_id as u128),
        sequence,
    };
    let call = |cluster: &mut Cluster, sequence| {
        let index = cluster.index();
        let proposal = cluster
            .controller
            .decide_once(index, Some(id(sequence)), |controller| {
                controller.alter_partition(index, &request)
            });
        let wrote = !proposal.records.is_empty();
        (cluster.commit(proposal), wrote)
    };
    let (first, wrote) = call(&mut cluster, 1);
    assert!(wrote);
    let first = first.unwrap();
    assert_eq!(first.isr, &state.replicas[..2]);
    let (retry, wrote) = call(&mut cluster, 1);
    assert_eq!((retry.unwrap(), wrote), (first.clone(), false));
    cluster.leader_change();
    let (retry, wrote) = call(&mut cluster, 1);
    assert_eq!((retry.unwrap(), wrote), (first, false));
    let (another, _) = call(&mut cluster, 2);
    assert_eq!(another.unwrap_err().code, INVALID_UPDATE_VERSION);
}

/// Preferred-leader election: the first replica leads again once it is live and back in the
/// ISR, at the next rebalance check, at a new leader epoch; not before it is in the ISR.
#[test]
fn the_preferred_replica_leads_again_only_once_in_the_isr() {
    let config = ControllerConfig {
        leader_rebalance_interval_ms: 1_000,
        ..ControllerConfig::kafka_defaults()
    };
    let mut cluster = Cluster::with_config(23, config);
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 1, 3, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let replicas = cluster
        .committed
        .partition(topic_id, 0)
        .unwrap()
        .replicas
        .clone();
    let preferred = replicas[0];
    let interval = cluster.controller.config().leader_rebalance_interval_ms;
    let sessions = |cluster: &Cluster| cluster.controller.session_deadline_next();
    // Balanced: no rebalance timer.
    assert_eq!(cluster.controller.next_deadline(), sessions(&cluster));
    cluster.heartbeat(preferred, true);
    cluster.register(preferred, 100, None);
    assert!(!cluster.heartbeat(preferred, false).is_fenced);
    let moved = cluster.committed.partition(topic_id, 0).unwrap().clone();
    assert_eq!(moved.leader, replicas[1]);
    assert!(!moved.isr.contains(&preferred));
    // Live but out of the ISR: nothing to rebalance.
    assert_eq!(cluster.controller.next_deadline(), sessions(&cluster));
    cluster.now_ms = interval;
    for broker_id in &replicas {
        cluster.heartbeat(*broker_id, false);
    }
    cluster.tick(0);
    assert_eq!(cluster.committed.partition(topic_id, 0), Some(&moved));
    // The leader adds it back: the election is due at the next check.
    let grow = alter_from(&cluster, 0, &replicas);
    let grown = alter(&mut cluster, &grow).unwrap();
    assert_eq!(grown.leader, replicas[1]);
    assert_eq!(cluster.controller.next_deadline(), Some(2 * interval));
    cluster.tick(interval - 1);
    assert_eq!(cluster.committed.partition(topic_id, 0), Some(&grown));
    cluster.tick(1);
    let back = cluster.committed.partition(topic_id, 0).unwrap().clone();
    assert_eq!(back.leader, preferred);
    assert_eq!(back.isr, grown.isr);
    assert_eq!(back.leader_epoch, grown.leader_epoch + 1);
    assert_eq!(cluster.controller.next_deadline(), sessions(&cluster));
    // The deposed leader's ISR change is refused.
    assert_eq!(alter_code(&mut cluster, &grow), NOT_LEADER_OR_FOLLOWER);
}

/// Controlled shutdown of an RF=3 leader hands leadership to a member of the ISR (not the
/// next replica in order when that one was shrunk out), at a new leader epoch.
#[test]
fn controlled_shutdown_hands_leadership_to_an_isr_member_at_a_new_epoch() {
    let (outside, after, shrunk) = shutdown_after_shrink(None);
    assert_ne!(after.leader, outside, "an ISR member leads");
    assert_eq!(after.isr, [after.leader]);
    assert_eq!(after.leader_epoch, shrunk.leader_epoch + 1);
}

#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_election_outside_the_isr_elects_the_shrunk_replica() {
    let (outside, after, _) =
        shutdown_after_shrink(Some(crate::planted::PlantedBug::ElectOutsideIsr));
    assert_eq!(after.leader, outside);
}

/// RF=3, the second replica shrunk out of the ISR, then the leader shuts down: the second
/// replica (live, outside the ISR), and the partition before and after.
fn shutdown_after_shrink(
    planted: Option<crate::planted::PlantedBug>,
) -> (
    BrokerId,
    crate::image::PartitionImage,
    crate::image::PartitionImage,
) {
    let mut cluster = Cluster::new(24);
    cluster.controller.planted = planted;
    cluster.brokers_up(&[1, 2, 3]);
    cluster.create("t", 1, 3, &[]).unwrap();
    let topic_id = cluster.topic_id("t");
    let state = cluster.committed.partition(topic_id, 0).unwrap().clone();
    let [leader, second, third] = state.replicas[..] else {
        panic!("three replicas");
    };
    let shrink = alter_from(&cluster, 0, &[leader, third]);
    let shrunk = alter(&mut cluster, &shrink).unwrap();
    cluster.heartbeat(leader, true);
    assert!(cluster.committed.broker_is_live(second));
    let after = cluster.committed.partition(topic_id, 0).unwrap().clone();
    (second, after, shrunk)
}
