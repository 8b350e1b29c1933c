//! The node on tokio over loopback: registration and unfencing, admin calls forwarded from a
//! follower, a controller leader's crash, its restart from its directory, and a lone voter.

use super::*;
use crate::controller::errors::TOPIC_ALREADY_EXISTS;
use rpc::{Envelope, Request, Response, RPC_MAGIC};
use runtime::sync::oneshot;
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
        controller_listen: Some(voters[&node_id].clone()),
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

fn disks(count: i32) -> BTreeMap<BrokerId, Arc<dyn runtime::Disk>> {
    (1..=count)
        .map(|id| (id, MemDisk::new() as Arc<dyn runtime::Disk>))
        .collect()
}

/// Starts every voter's node on its disk (node `id` with seed `seed + id`) and waits until
/// every broker is registered and unfenced.
async fn cluster_start(
    voters: &BTreeMap<BrokerId, String>,
    disks: &BTreeMap<BrokerId, Arc<dyn runtime::Disk>>,
    seed: u64,
) -> BTreeMap<BrokerId, ClusterHandle> {
    let mut handles = BTreeMap::new();
    for id in voters.keys().copied() {
        let handle = start(config(id, voters, disks[&id].clone(), seed + id as u64)).await;
        handles.insert(id, handle);
    }
    until("every broker registered and unfenced", 20, || {
        all_unfenced(&handles)
    })
    .await;
    handles
}

/// A raw controller RPC connection (the magic sent) to `address`.
async fn rpc_connect(address: &str) -> runtime::net::TcpStream {
    let mut stream = runtime::net::TcpStream::connect(address).await.unwrap();
    runtime::io::AsyncWriteExt::write_all(&mut stream, &RPC_MAGIC)
        .await
        .unwrap();
    stream
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
    let disks = disks(3);
    let mut handles = cluster_start(&voters, &disks, 0).await;
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
    // Straight to the leader's listener, without the caller's wait: the leader answers only
    // once the entry is applied there.
    let mut stream = rpc_connect(&voters[&leader]).await;
    let request = Request::CreateTopics {
        topics: vec![topic("raw", 1, 3).into()],
        validate_only: false,
    };
    let envelope = Envelope { id: None, request };
    rpc::frame_write(&mut stream, &envelope).await.unwrap();
    let response: Response = rpc::frame_read(&mut stream).await.unwrap().unwrap();
    assert!(matches!(response, Response::Answer { .. }), "{response:?}");
    assert!(
        handles[&leader].image().topic_id("raw").is_some(),
        "answered before applied on the leader"
    );
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

    // Controlled shutdown of a follower: once it returns, the controller has fenced it and it
    // leads nothing (not later, by its session running out).
    let leaving = *handles.keys().find(|id| **id != second).unwrap();
    let handle = handles.remove(&leaving).unwrap();
    let clock = runtime::Clock::system();
    let asked_at = clock.now();
    handle.shutdown().await;
    let took = clock.now() - asked_at;
    assert!(
        took < ClusterTiming::fast().broker_session_timeout,
        "{took:?}"
    );
    assert!(!handles[&second].image().broker_is_live(leaving));
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

    // A full disk stops the node (fail-stop): it says so and answers Stopped.
    let memory = MemDisk::new();
    let lone = self::voters(1).await;
    let full = start(config(1, &lone, memory.clone(), 10)).await;
    until("registered", 10, || full.status().broker_epoch.is_some()).await;
    memory.full_set(true);
    let refused = full.create_topics(vec![topic("full", 1, 1)], false).await;
    assert!(matches!(refused, Err(ClusterError::Stopped)), "{refused:?}");
    assert!(full.status().failed);
    full.kill();

    // A restart from the same directory keeps the log and registers anew.
    handle.kill();
    runtime::time::sleep(Duration::from_millis(50)).await;
    let refused = handle.create_topics(vec![topic("late", 1, 1)], false).await;
    assert!(matches!(refused, Err(ClusterError::Stopped)), "{refused:?}");
    drop(handles);
    drop(handle);
    let restarted = start(config(1, &voters, disk, 8)).await;
    let handles = BTreeMap::from([(1, restarted.clone())]);
    until("re-registered and unfenced", 10, || all_unfenced(&handles)).await;
    assert!(restarted.image().topic_id("wide").is_none());
    assert_eq!(restarted.status().broker_epoch, Some(2));
}

/// Garbage on the controller listener, as a raft peer or as an RPC client, closes that
/// connection only; a well-formed RPC on a raw connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_bad_frames() {
    use runtime::io::{AsyncReadExt, AsyncWriteExt};
    use runtime::net::TcpStream;
    let voters = voters(1).await;
    let handle = start(config(1, &voters, MemDisk::new(), 9)).await;
    let handles = BTreeMap::from([(1, handle.clone())]);
    until("registered and unfenced", 10, || all_unfenced(&handles)).await;
    let address = voters[&1].as_str();
    let valid = rpc::frame_encode(&Envelope {
        id: None,
        request: Request::Heartbeat {
            broker_id: 1,
            broker_epoch: 999,
            metadata_offset: 0,
            want_shutdown: false,
        },
    })
    .unwrap();
    let mut huge = RPC_MAGIC.to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 4]);
    let mut crc_bad = RPC_MAGIC.to_vec();
    crc_bad.extend_from_slice(&valid);
    *crc_bad.last_mut().unwrap() ^= 1;
    let body = b"{\"Register\":17}";
    let mut json_bad = RPC_MAGIC.to_vec();
    json_bad.extend_from_slice(&(body.len() as u32).to_be_bytes());
    json_bad.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    json_bad.extend_from_slice(body);
    // As raft frames: a length over the limit, and a CRC that does not match.
    let raft_huge = vec![0x05, 0x00, 0x00, 0x00, 1, 2, 3, 4];
    let raft_crc_bad = vec![0, 0, 0, 4, 1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff];
    for (at, bytes) in [
        huge,
        crc_bad,
        json_bad,
        raft_huge,
        raft_crc_bad,
        vec![0xff; 64],
    ]
    .into_iter()
    .enumerate()
    {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        let mut rest = Vec::new();
        let read = runtime::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest));
        assert!(
            read.await.is_ok(),
            "bad frame {at}: the node closes the connection"
        );
        assert!(rest.is_empty(), "bad frame {at}: no answer");
    }
    let mut stream = rpc_connect(address).await;
    stream.write_all(&valid).await.unwrap();
    stream.flush().await.unwrap();
    let response: Response = rpc::frame_read(&mut stream).await.unwrap().unwrap();
    let Response::Answer {
        answer: rpc::Answer::Heartbeat(Err(error)),
        ..
    } = response
    else {
        panic!("a heartbeat's answer: {response:?}");
    };
    assert_eq!(error.code, crate::controller::errors::STALE_BROKER_EPOCH);
    let created = handle
        .create_topics(vec![topic("still", 1, 1)], false)
        .await;
    assert!(created.unwrap()[0].1.is_ok());
}

/// A leader cut off from its quorum steps down (check_quorum); a call waiting for its entry
/// to commit is answered NOT_CONTROLLER then, not left hanging, and the caller goes elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_its_quorum_answers_not_controller() {
    let voters = voters(3).await;
    let mut handles = cluster_start(&voters, &disks(3), 20).await;
    let leader = leader_of(&handles).unwrap();
    let survivor = handles.remove(&leader).unwrap();
    for (_, handle) in std::mem::take(&mut handles) {
        handle.kill();
    }
    let mut stream = rpc_connect(&voters[&leader]).await;
    let request = Request::CreateTopics {
        topics: vec![topic("stranded", 1, 1).into()],
        validate_only: false,
    };
    let envelope = Envelope { id: None, request };
    rpc::frame_write(&mut stream, &envelope).await.unwrap();
    let answered = runtime::time::timeout(
        Duration::from_secs(5),
        rpc::frame_read::<Response>(&mut stream),
    )
    .await;
    let response = answered
        .expect("answered, not left waiting")
        .unwrap()
        .unwrap();
    assert!(
        matches!(response, Response::NotController { .. }),
        "{response:?}"
    );
    assert!(!survivor.status().controller_active);
}

/// Producer id blocks asked for without pause from the followers while the controller leader
/// is killed: the new controller starts only once it has applied its whole log (the old
/// leader's last blocks included), so no block is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_id_blocks_stay_unique_across_a_controller_crash() {
    let voters = voters(3).await;
    let mut handles = cluster_start(&voters, &disks(3), 40).await;
    let leader = leader_of(&handles).unwrap();
    let blocks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut askers = Vec::new();
    for (id, handle) in &handles {
        if *id == leader {
            continue;
        }
        for _ in 0..4 {
            let handle = handle.clone();
            let blocks = blocks.clone();
            askers.push(runtime::spawn(async move {
                loop {
                    if let Ok(block) = handle.allocate_producer_ids().await {
                        blocks.lock().unwrap().push(block);
                    }
                }
            }));
        }
    }
    runtime::time::sleep(Duration::from_millis(300)).await;
    let killed = handles.remove(&leader).unwrap();
    killed.kill();
    until("a new controller", 10, || leader_of(&handles).is_some()).await;
    runtime::time::sleep(Duration::from_millis(300)).await;
    for asker in &askers {
        asker.abort();
    }
    let mut blocks = blocks.lock().unwrap().clone();
    blocks.sort_by_key(|block| block.first);
    assert!(blocks.len() > 20, "only {} blocks", blocks.len());
    for pair in blocks.windows(2) {
        assert!(
            pair[0].first + pair[0].size <= pair[1].first,
            "a producer id block handed out twice: {pair:?}"
        );
    }
}

/// A call whose first try committed while its answer was lost (the controller leader died
/// after the commit, before its answer arrived): the retry carries the same request id, and
/// the new controller answers what the first try decided, not a refusal of its own effect
/// (TOPIC_ALREADY_EXISTS). A proxy stands in for the controller between the forwarder and the
/// nodes: it passes each request on, and holds the first answer until the leader is dead, then
/// drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_gets_the_first_answer() {
    let voters = voters(3).await;
    let mut handles = cluster_start(&voters, &disks(3), 60).await;
    let leader = leader_of(&handles).unwrap();
    let target = Arc::new(std::sync::Mutex::new(voters[&leader].clone()));
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = proxy.local_addr().unwrap().to_string();
    let (answered, first_answer) = oneshot::channel::<Response>();
    let (go, dropped) = oneshot::channel::<()>();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Envelope>::new()));
    let proxied = {
        let (target, seen) = (target.clone(), seen.clone());
        runtime::spawn(async move {
            let mut hold = Some((answered, dropped));
            loop {
                let (mut client, _) = proxy.accept().await.unwrap();
                let mut magic = [0u8; 4];
                runtime::io::AsyncReadExt::read_exact(&mut client, &mut magic)
                    .await
                    .unwrap();
                while let Ok(Some(envelope)) = rpc::frame_read::<Envelope>(&mut client).await {
                    seen.lock().unwrap().push(envelope.clone());
                    let address = target.lock().unwrap().clone();
                    let mut server = rpc_connect(&address).await;
                    rpc::frame_write(&mut server, &envelope).await.unwrap();
                    let response: Response = rpc::frame_read(&mut server).await.unwrap().unwrap();
                    if let Some((answered, dropped)) = hold.take() {
                        answered.send(response).unwrap();
                        dropped.await.unwrap();
                        break; // the answer is lost with the connection
                    }
                    rpc::frame_write(&mut client, &response).await.unwrap();
                }
            }
        })
    };
    // The forwarder of a node that knows only the proxy, as its controller.
    let follower = *handles.keys().find(|id| **id != leader).unwrap();
    let (local, _calls) = mpsc::channel(1);
    let mut status = handles[&follower].status();
    status.controller_leader = Some(99);
    let (_status_sender, status) = watch::channel(status);
    let forwarder = Forwarder::new(
        follower,
        IncarnationId(7),
        BTreeMap::from([(99, proxy_address)]),
        local,
        status,
        ClusterTiming::fast().request_timeout,
        runtime::Clock::system(),
    );
    let request = Request::CreateTopics {
        topics: vec![topic("once", 2, 3).into()],
        validate_only: false,
    };
    let call = runtime::spawn(async move { forwarder.call(&request).await });

    // The first try committed and was answered; then the leader dies with the answer.
    let first = first_answer.await.unwrap();
    let Response::Answer { offset, .. } = &first else {
        panic!("the first try is answered: {first:?}");
    };
    let topic_id = handles[&leader].image().topic_id("once").expect("applied");
    assert!(handles[&leader].status().commit >= *offset);
    handles.remove(&leader).unwrap().kill();
    until("a new controller", 10, || leader_of(&handles).is_some()).await;
    let second = leader_of(&handles).unwrap();
    *target.lock().unwrap() = voters[&second].clone();
    go.send(()).unwrap();

    let (offset_retried, answer) = call.await.unwrap().expect("the retry is answered");
    assert_eq!(
        Response::Answer {
            offset: offset_retried,
            answer: answer.clone(),
        },
        first,
        "the retry answers what the first try decided"
    );
    let rpc::Answer::TopicsCreated(results) = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(results[0].1.as_ref().unwrap().topic_id, Some(topic_id));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "retried: {seen:?}");
    assert!(seen[0].id.is_some());
    assert!(seen.iter().all(|envelope| *envelope == seen[0]), "{seen:?}");
    proxied.abort();
}

/// Polls every millisecond until `condition`; how long that took from `since`.
async fn until_fine(
    since: runtime::time::Instant,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let deadline = since + Duration::from_secs(10);
    while !condition() {
        assert!(runtime::Clock::system().now() < deadline, "not within 10 s");
        runtime::time::sleep(Duration::from_millis(1)).await;
    }
    runtime::Clock::system().now() - since
}

/// Controlled shutdown of the controller leader hands Raft leadership to another voter before
/// the node stops: the quorum is leaderless (no active controller) for far less than an
/// election timeout. A leader that just stops, as a crash (and shutdown before the handover),
/// leaves it leaderless for an election timeout or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_over_leadership_on_shutdown() {
    let voters = voters(3).await;
    let disks = disks(3);
    let mut handles = cluster_start(&voters, &disks, 80).await;
    let clock = runtime::Clock::system();
    let timing = ClusterTiming::fast();
    let election_timeout = timing.tick * timing.election_ticks as u32;

    let leader = leader_of(&handles).unwrap();
    let leaving = handles.remove(&leader).unwrap();
    let term = leaving.status().term;
    let (old, others) = (leaving.clone(), handles.clone());
    let gap = runtime::spawn(async move {
        until_fine(clock.now(), || !old.status().controller_active).await;
        let stepped_down = runtime::Clock::system().now();
        until_fine(stepped_down, || leader_of(&others).is_some()).await
    });
    leaving.shutdown().await;
    let handed_over = gap.await.unwrap();
    let second = leader_of(&handles).expect("a controller when shutdown returns");
    assert!(handles[&second].status().term > term);

    let restarted = start(config(leader, &voters, disks[&leader].clone(), 90)).await;
    handles.insert(leader, restarted);
    until("every broker unfenced", 20, || all_unfenced(&handles)).await;
    let leader = leader_of(&handles).unwrap();
    handles.remove(&leader).unwrap().kill();
    let crashed = until_fine(clock.now(), || leader_of(&handles).is_some()).await;
    println!(
        "leaderless gap: {handed_over:?} with the handover on shutdown, {crashed:?} when the \
         leader just stops (election timeout {election_timeout:?})"
    );
    assert!(handed_over < election_timeout / 2, "{handed_over:?}");
    assert!(crashed >= election_timeout, "{crashed:?}");
}

/// Zero config: a lone voter at production timing binds no listener, elects itself without an
/// election timeout (1-2 s at production ticks) and is unfenced within a few fsyncs.
#[tokio::test]
async fn a_lone_voter_without_a_listener_serves_at_once() {
    let voters = BTreeMap::from([(1, String::new())]);
    let mut config = config(1, &voters, MemDisk::new(), 3);
    config.controller_listen = None;
    config.timing = ClusterTiming::production();
    let started = runtime::Clock::system().now();
    let handle = ClusterNode::start(config.clone()).await.expect("starts");
    let handles = BTreeMap::from([(1, handle.clone())]);
    until("registered and unfenced", 10, || all_unfenced(&handles)).await;
    let elapsed = runtime::Clock::system().now() - started;
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    let created = handle
        .create_topics(vec![topic("solo", 1, -1)], false)
        .await
        .unwrap();
    assert!(created[0].1.is_ok(), "{created:?}");
    handle.kill();
    // Peers must reach a node: without a listener only a lone voter may start.
    let mut shared = config;
    shared.voters.insert(2, "127.0.0.1:1".to_string());
    assert!(ClusterNode::start(shared).await.is_err());
}

/// A pre-Raft data dir's import: topics under their ids on this broker alone, producer ids
/// above the old floor; a second import of the same topics writes nothing; a clash is refused.
#[tokio::test]
async fn an_import_keeps_topic_ids_and_is_idempotent() {
    let voters = voters(1).await;
    let handle = start(config(1, &voters, MemDisk::new(), 4)).await;
    let handles = BTreeMap::from([(1, handle.clone())]);
    until("registered and unfenced", 10, || all_unfenced(&handles)).await;
    let import = |name: &str, id: u128, count: i32| TopicImport {
        name: name.to_string(),
        topic_id: TopicId(id),
        partition_count: count,
        configs: BTreeMap::from([("retention.ms".to_string(), "5000".to_string())]),
    };
    let topics = vec![import("old", 0xa1, 3), import("older", 0xa2, 1)];
    let imported = handle.import_topics(topics.clone(), 2_500).await.unwrap();
    assert!(
        imported.iter().all(|(_, result)| result.is_ok()),
        "{imported:?}"
    );
    let image = handle.image();
    let old = image.topic_by_name("old").unwrap();
    assert_eq!(old.topic_id, TopicId(0xa1));
    assert_eq!(old.partitions.len(), 3);
    assert!(old
        .partitions
        .iter()
        .all(|p| p.replicas == [1] && p.leader == 1));
    assert_eq!(old.configs.get("retention.ms").unwrap(), "5000");
    assert_eq!(image.producer_id_next(), 3_000, "blocks up to the floor");
    let block = handle.allocate_producer_ids().await.unwrap();
    assert!(block.first >= 2_500, "{block:?}");
    // Again (a start that crashed before recording the import): nothing new is written.
    let offset = handle.image().offset();
    let again = handle.import_topics(topics, 0).await.unwrap();
    assert!(again.iter().all(|(_, result)| result.is_ok()), "{again:?}");
    assert_eq!(handle.image().offset(), offset);
    // The same name under another id, or another name under a taken id, is refused.
    let clash = handle
        .import_topics(vec![import("old", 0xb1, 1), import("new", 0xa2, 1)], 0)
        .await
        .unwrap();
    assert!(clash.iter().all(|(_, result)| result.is_err()), "{clash:?}");
    handle.kill();
}

/// AlterPartition from a partition leader that is not the controller travels over the RPC
/// listener; the answer is the partition's new state, applied on the caller's node when it
/// returns; refusals come back as their Kafka codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_partition_is_forwarded_to_the_controller_and_refusals_keep_their_codes() {
    use crate::controller::errors::{INVALID_UPDATE_VERSION, NOT_LEADER_OR_FOLLOWER};
    let voters = voters(3).await;
    let handles = cluster_start(&voters, &disks(3), 80).await;
    let controller = leader_of(&handles).unwrap();
    let results = handles[&controller]
        .create_topics(vec![topic("t", 3, 3)], false)
        .await
        .unwrap();
    assert!(results[0].1.is_ok(), "{results:?}");
    let image = handles[&controller].image();
    let topic_id = image.topic_id("t").unwrap();
    // Three partitions: their leaders are the three brokers, one of them not the controller.
    let (partition, state) = (0..3)
        .map(|p| (p, image.partition(topic_id, p).unwrap().clone()))
        .find(|(_, state)| state.leader != controller)
        .unwrap();
    let leader = &handles[&state.leader];
    let follower = *state.replicas.iter().find(|r| **r != state.leader).unwrap();
    let code = |result: Result<PartitionImage, ClusterError>| match result {
        Err(ClusterError::Refused(error)) => error.code,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let shrunk = leader
        .alter_partition(
            topic_id,
            partition,
            state.leader_epoch,
            state.partition_epoch,
            vec![state.leader, follower],
        )
        .await
        .unwrap();
    assert_eq!(shrunk.isr.len(), 2);
    assert_eq!(shrunk.partition_epoch, state.partition_epoch + 1);
    assert_eq!(shrunk.leader_epoch, state.leader_epoch);
    assert_eq!(leader.image().partition(topic_id, partition), Some(&shrunk));
    until("every node applied the change", 10, || {
        handles
            .values()
            .all(|h| h.image().partition(topic_id, partition) == Some(&shrunk))
    })
    .await;

    let again = leader
        .alter_partition(
            topic_id,
            partition,
            state.leader_epoch,
            state.partition_epoch,
            state.isr.clone(),
        )
        .await;
    assert_eq!(code(again), INVALID_UPDATE_VERSION);
    let other = &handles[&follower];
    let not_leader = other
        .alter_partition(
            topic_id,
            partition,
            shrunk.leader_epoch,
            shrunk.partition_epoch,
            state.isr.clone(),
        )
        .await;
    assert_eq!(code(not_leader), NOT_LEADER_OR_FOLLOWER);
    let grown = leader
        .alter_partition(
            topic_id,
            partition,
            shrunk.leader_epoch,
            shrunk.partition_epoch,
            state.isr.clone(),
        )
        .await
        .unwrap();
    assert_eq!(grown.isr, state.isr);
    assert_eq!(grown.partition_epoch, state.partition_epoch + 2);
}
