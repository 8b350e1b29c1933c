//! The node on tokio over loopback: registration and unfencing, admin calls forwarded from a
//! follower, a controller leader's crash, its restart from its directory, and a lone voter.

use super::*;
use crate::controller::errors::TOPIC_ALREADY_EXISTS;
use runtime::MemDisk;

/// A free loopback port: bound, read, released.
async fn port_free() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn voters(count: i32) -> BTreeMap<BrokerId, String> {
    let mut voters = BTreeMap::new();
    for id in 1..=count {
        voters.insert(id, format!("127.0.0.1:{}", port_free().await));
    }
    voters
}

fn config(
    node_id: BrokerId,
    voters: &BTreeMap<BrokerId, String>,
    disk: Arc<dyn runtime::Disk>,
    seed: u64,
) -> ClusterConfig {
    ClusterConfig {
        node_id,
        voters: voters.clone(),
        controller_listen: voters[&node_id].clone(),
        dir: PathBuf::from("/cluster_metadata"),
        disk,
        clock: runtime::Clock::system(),
        seed,
        broker: BrokerEndpoint {
            host: "127.0.0.1".to_string(),
            port: 9000 + node_id as u16,
        },
        rack: None,
        timing: ClusterTiming::fast(),
        partitions_default: 1,
        replication_factor_default: 1,
        planted: None,
        raft_planted: None,
    }
}

/// Starts a node, retrying while its port is still held by the node it replaces.
async fn start(config: ClusterConfig) -> ClusterHandle {
    for _ in 0..200 {
        match ClusterNode::start(config.clone()).await {
            Ok(handle) => return handle,
            Err(ClusterError::Io(error)) if error.kind() == std::io::ErrorKind::AddrInUse => {
                runtime::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("node {} did not start: {error}", config.node_id),
        }
    }
    panic!("node {}: its port stayed in use", config.node_id);
}

/// Polls `condition` every 10 ms for up to `seconds`.
async fn until(what: &str, seconds: u64, mut condition: impl FnMut() -> bool) {
    let deadline = runtime::Clock::system().now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(
            runtime::Clock::system().now() < deadline,
            "not within {seconds} s: {what}"
        );
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
}

fn topic(name: &str, partition_count: i32, replication_factor: i16) -> TopicCreate {
    TopicCreate {
        name: name.to_string(),
        partition_count,
        replication_factor,
        configs: BTreeMap::new(),
    }
}

fn all_unfenced(handles: &BTreeMap<BrokerId, ClusterHandle>) -> bool {
    handles.values().all(|handle| {
        let status = handle.status();
        status.broker_epoch.is_some() && !status.fenced
    })
}

fn leader_of(handles: &BTreeMap<BrokerId, ClusterHandle>) -> Option<BrokerId> {
    handles
        .values()
        .map(ClusterHandle::status)
        .find(|status| status.controller_active)
        .map(|status| status.node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_register_create_through_a_follower_and_survive_the_leader_crash() {
    let voters = voters(3).await;
    let disks: BTreeMap<BrokerId, Arc<dyn runtime::Disk>> = (1..=3)
        .map(|id| (id, MemDisk::new() as Arc<dyn runtime::Disk>))
        .collect();
    let mut handles = BTreeMap::new();
    for id in 1..=3 {
        let handle = start(config(id, &voters, disks[&id].clone(), id as u64)).await;
        handles.insert(id, handle);
    }
    until("every broker registered and unfenced", 20, || {
        all_unfenced(&handles)
    })
    .await;
    let leader = leader_of(&handles).expect("a controller is active");
    let image = handles[&leader].image();
    assert_eq!(image.brokers_live().count(), 3, "{image:?}");

    // A topic with RF=3 through a follower: forwarded, answered once applied there.
    let follower = *handles.keys().find(|id| **id != leader).unwrap();
    let created = handles[&follower]
        .create_topics(vec![topic("orders", 3, 3)], false)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    let topic_id = created[0].1.as_ref().unwrap().topic_id.unwrap();
    let seen = handles[&follower].image();
    let orders = seen
        .topic_by_name("orders")
        .expect("applied on the follower");
    assert_eq!(orders.topic_id, topic_id);
    assert!(orders
        .partitions
        .iter()
        .all(|partition| partition.replicas.len() == 3 && partition.isr.len() == 3));
    until("the topic in every node's image", 10, || {
        handles
            .values()
            .all(|handle| handle.image().topic_id("orders") == Some(topic_id))
    })
    .await;
    let again = handles[&follower]
        .create_topics(vec![topic("orders", 3, 3)], false)
        .await
        .unwrap();
    assert_eq!(again[0].1.as_ref().unwrap_err().code, TOPIC_ALREADY_EXISTS);
    let block = handles[&follower].allocate_producer_ids().await.unwrap();
    let other = handles[&leader].allocate_producer_ids().await.unwrap();
    assert!(block.first + block.size <= other.first || other.first + other.size <= block.first);

    // The controller leader's process stops: the others elect a new leader, which serves.
    let old_term = handles[&leader].status().term;
    let killed = handles.remove(&leader).unwrap();
    killed.kill();
    drop(killed);
    let killed_at = runtime::Clock::system().now();
    until("a new controller", 10, || leader_of(&handles).is_some()).await;
    let election = killed_at.elapsed();
    let second = leader_of(&handles).unwrap();
    println!("controller {leader} killed: node {second} active after {election:?}");
    assert_ne!(second, leader);
    assert!(handles[&second].status().term > old_term);
    let created = handles[&follower]
        .create_topics(vec![topic("after", 2, 2)], false)
        .await
        .unwrap();
    assert!(created[0].1.is_ok(), "{created:?}");
    until("the dead broker fenced by its session", 10, || {
        let image = handles[&second].image();
        !image.broker_is_live(leader)
    })
    .await;

    // It restarts from its directory (a new process: a new seed, a new incarnation), catches
    // up and is unfenced with a new epoch.
    let epoch_before = handles[&second]
        .image()
        .broker(leader)
        .unwrap()
        .broker_epoch;
    let restarted = start(config(leader, &voters, disks[&leader].clone(), 100)).await;
    handles.insert(leader, restarted);
    until("the restarted broker unfenced", 20, || {
        all_unfenced(&handles)
    })
    .await;
    let image = handles[&leader].image();
    assert!(image.topic_id("after").is_some(), "caught up: {image:?}");
    assert!(image.topic_id("orders") == Some(topic_id));
    assert!(handles[&leader].status().broker_epoch.unwrap() > epoch_before);

    // Controlled shutdown of a follower: it is fenced and leads nothing.
    let leaving = *handles.keys().find(|id| **id != second).unwrap();
    let handle = handles.remove(&leaving).unwrap();
    handle.shutdown().await;
    until("the leaving broker fenced", 10, || {
        !handles[&second].image().broker_is_live(leaving)
    })
    .await;
    let image = handles[&second].image();
    for view in image.topics() {
        for partition in view.partitions {
            assert_ne!(partition.leader, leaving, "{view:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_is_its_own_controller() {
    let voters = voters(1).await;
    let disk: Arc<dyn runtime::Disk> = MemDisk::new();
    let handle = start(config(1, &voters, disk.clone(), 7)).await;
    let handles = BTreeMap::from([(1, handle.clone())]);
    until("registered and unfenced", 10, || all_unfenced(&handles)).await;
    let created = handle
        .create_topics(vec![topic("solo", 2, -1)], false)
        .await
        .unwrap();
    assert!(created[0].1.is_ok(), "{created:?}");
    let too_many = handle
        .create_topics(vec![topic("wide", 1, 2)], false)
        .await
        .unwrap();
    assert!(too_many[0].1.is_err(), "RF 2 on one broker: {too_many:?}");
    let altered = handle
        .alter_configs(
            vec![ConfigAlter {
                topic: "solo".to_string(),
                changes: vec![crate::controller::ConfigChange::Set {
                    key: "retention.ms".to_string(),
                    value: "1000".to_string(),
                }],
            }],
            false,
        )
        .await
        .unwrap();
    assert!(altered[0].1.is_ok(), "{altered:?}");
    let grown = handle
        .create_partitions(
            vec![PartitionsCreate {
                name: "solo".to_string(),
                partition_count: 4,
            }],
            false,
        )
        .await
        .unwrap();
    assert!(grown[0].1.is_ok(), "{grown:?}");
    let image = handle.image();
    let solo = image.topic_by_name("solo").unwrap();
    assert_eq!(solo.partitions.len(), 4);
    assert_eq!(
        solo.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    let deleted = handle
        .delete_topics(vec!["solo".to_string()])
        .await
        .unwrap();
    assert!(deleted[0].1.is_ok());
    assert!(handle.image().topic_id("solo").is_none());

    // A restart from the same directory keeps the log and registers anew.
    handle.kill();
    drop(handles);
    drop(handle);
    let restarted = start(config(1, &voters, disk, 8)).await;
    let handles = BTreeMap::from([(1, restarted.clone())]);
    until("re-registered and unfenced", 10, || all_unfenced(&handles)).await;
    assert!(restarted.image().topic_id("wide").is_none());
    assert_eq!(restarted.status().broker_epoch, Some(2));
}
