//! The follower side of replication (issue 13) over real brokers: two or three `broker::serve`
//! quorum members on loopback, each on its own `MemDisk`, with fast cluster timing. Until the
//! leader side lands, Produce on RF>1 is refused, so the tests write the leader's data through
//! its partition log plus a flush: the leader serves Fetch up to its fsynced end.
//!
//! - Durable fetch offsets: every `fetch_offset` a follower sends (recorded by a TCP proxy in
//!   front of the leader) survives the follower's power loss. The planted
//!   `ack-before-follower-fsync` fails it.
//! - Truncation: a leader's epoch-0 tail that the epoch-1 leader never had is cut when the old
//!   leader comes back as a follower, which ends byte-identical to the new leader (batches,
//!   epoch cache, producer state, durable offset). The planted `skip-truncation` keeps the tail.
//! - Untrusted answers: batches a proxy corrupted (CRC), moved (a gap) or stamped with an epoch
//!   past the leader's are never appended, and the follower catches up once answers are sound.
//! - Log start: a follower behind the leader's log start starts over there (inside a batch:
//!   at that batch's base) and ends with the leader's batches and log start.

mod common;

use broker::partition::Partition;
use broker::planted::Bug;
use broker::{Broker, BrokerConfig, NodeContext};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rand::SeedableRng;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use runtime::net::{TcpListener, TcpStream};
use runtime::{Disk, DiskFile, MemDisk, OpenMode, SyncDelay};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::batch::build::{batch_encode_with, RecordSpec};
use wire::batch::ValidatedBatch;
use wire::RequestKind;

/// A `MemDisk` whose fsyncs take `delay` (the flusher waits it out before the sync takes
/// effect): the window in which a follower holds appended but unsynced bytes.
#[derive(Debug)]
struct SlowSync {
    inner: Arc<MemDisk>,
    delay: Duration,
}

impl Disk for SlowSync {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn sync_delay(&self) -> SyncDelay {
        SyncDelay {
            before: self.delay,
            after: Duration::ZERO,
        }
    }
}

fn port_free() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct Node {
    config: BrokerConfig,
    disk: Arc<MemDisk>,
    broker: Option<Arc<Broker>>,
    serving: Option<runtime::JoinHandle<()>>,
}

impl Node {
    fn broker(&self) -> &Arc<Broker> {
        self.broker.as_ref().expect("running")
    }

    fn partition(&self) -> Arc<Partition> {
        self.broker().topics().partition("t", 0).expect("hosted")
    }
}

/// `count` quorum members, with `planted` (feature `planted-bugs` only).
fn configs(count: i32, fetch_wait_max: Duration, planted: Option<Bug>) -> Vec<BrokerConfig> {
    let voters: BTreeMap<i32, String> = (1..=count)
        .map(|id| (id, format!("127.0.0.1:{}", port_free())))
        .collect();
    (1..=count)
        .map(|id| {
            let mut config = BrokerConfig::zero_config();
            config.node_id = id;
            config.listen = format!("127.0.0.1:{}", port_free());
            config.data_dir = "data".into();
            config.voters = voters.clone();
            config.replica.fetch_wait_max = fetch_wait_max;
            config.planted = planted;
            config
        })
        .collect()
}

fn context(disk: Arc<dyn Disk>, seed: u64) -> NodeContext {
    NodeContext {
        clock: runtime::Clock::system(),
        disk,
        seed,
        cluster_hooks: broker::cluster_mode::ClusterHooks {
            timing: Some(cluster::node::ClusterTiming::fast()),
            ..Default::default()
        },
    }
}

/// Opens every node at once (each waits for the quorum to unfence it), then serves them.
async fn nodes_start(configs: Vec<BrokerConfig>, slow_sync: Option<Duration>) -> Vec<Node> {
    let mut nodes: Vec<Node> = configs
        .into_iter()
        .map(|config| Node {
            config,
            disk: MemDisk::new(),
            broker: None,
            serving: None,
        })
        .collect();
    let opens: Vec<_> = nodes
        .iter()
        .map(|node| {
            broker::config::validate(&node.config).expect("a valid config");
            let disk: Arc<dyn Disk> = match slow_sync {
                Some(delay) => Arc::new(SlowSync {
                    inner: node.disk.clone(),
                    delay,
                }),
                None => node.disk.clone(),
            };
            let context = context(disk, node.config.node_id as u64);
            runtime::spawn(Broker::open(node.config.clone(), context))
        })
        .collect();
    for (node, open) in nodes.iter_mut().zip(opens) {
        let broker = open.await.unwrap().expect("opens");
        node.serving = Some(serve(&broker));
        node.broker = Some(broker);
    }
    nodes
}

/// `nodes_start`, each node registered at a proxy's address (followers fetch through it).
async fn nodes_start_proxied(
    mut configs: Vec<BrokerConfig>,
    slow_sync: Option<Duration>,
) -> (Vec<Node>, Vec<Proxy>) {
    let mut proxies = Vec::new();
    for config in &mut configs {
        let proxy = proxy_start(config.listen.clone()).await;
        config.advertise = Some(proxy.address.clone());
        proxies.push(proxy);
    }
    (nodes_start(configs, slow_sync).await, proxies)
}

fn serve(broker: &Arc<Broker>) -> runtime::JoinHandle<()> {
    let broker = broker.clone();
    runtime::spawn(async move {
        // A node whose disk the test crashed may stop with an error: that is the test's doing.
        let _ = broker::serve_on(broker, std::future::pending()).await;
    })
}

/// Polls `done` every 10 ms for up to 15 s.
async fn until(what: &str, done: impl FnMut() -> bool) {
    if !within(Duration::from_secs(15), done).await {
        panic!("timed out waiting until {what}");
    }
}

/// Polls `done` every 10 ms for up to `limit`; whether it came true.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit.as_millis() / 10 {
        if done() {
            return true;
        }
        runtime::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// Creates topic `t` (one partition, RF = every node) and waits until every node hosts it;
/// returns the index of its leader's node.
async fn topic_create(nodes: &[Node]) -> usize {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(nodes.len() as i16);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000);
    let response = broker::handlers::admin::create_topics(nodes[0].broker(), request, 5).await;
    let wire::ResponseKind::CreateTopics(response) = response else {
        panic!("CreateTopics answered {response:?}");
    };
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
    until("every node hosts t-0", || {
        nodes
            .iter()
            .all(|node| node.broker().topics().partition("t", 0).is_some())
    })
    .await;
    let leader = leader_of(nodes[0].broker()).0;
    nodes
        .iter()
        .position(|node| node.config.node_id == leader)
        .unwrap()
}

/// The image's (leader, leader epoch) of t-0.
fn leader_of(broker: &Arc<Broker>) -> (i32, i32) {
    let image = broker.cluster().image();
    let topic = image.topic_by_name("t").expect("created");
    let partition = &topic.partitions[0];
    (partition.leader, partition.leader_epoch)
}

/// An idempotent batch of `records` records.
fn batch(producer_id: i64, sequence: i32, records: usize) -> ValidatedBatch {
    let specs: Vec<RecordSpec> = (0..records)
        .map(|index| RecordSpec {
            value: Some(Bytes::from(format!("p{producer_id}-s{sequence}-{index}"))),
            timestamp: 1,
            ..Default::default()
        })
        .collect();
    batch_encode_with(&specs, Compression::None, producer_id, 0, sequence, false)
}

/// Appends `batches` as the leader at `epoch`; returns the log end.
fn leader_append(partition: &Partition, epoch: i32, batches: Vec<ValidatedBatch>) -> i64 {
    let mut log = partition.log();
    log.produce(batches, epoch, 1).expect("appends");
    log.log_end_offset()
}

/// Makes everything appended durable, as the leader's group commit does for a produce.
async fn leader_flush(partition: &Partition) {
    let end = partition.log().log_end_offset();
    partition.flush_request();
    assert!(partition.durable_wait(end - 1).await);
}

/// Every batch of a log, as bytes.
fn log_bytes(partition: &Partition) -> Bytes {
    let log = partition.log();
    let end = log.log_end_offset();
    match end > log.log_start_offset() {
        true => {
            log.read(log.log_start_offset(), usize::MAX, end)
                .unwrap()
                .bytes
        }
        false => Bytes::new(),
    }
}

/// A TCP proxy in front of a broker that records each Fetch's `fetch_offset`s from replicas
/// before forwarding it, and can tamper with the records of Fetch responses (`tamper`).
struct Proxy {
    address: String,
    fetch_offsets: Arc<Mutex<Vec<i64>>>,
    tamper: Arc<Mutex<Option<Tamper>>>,
    /// Fetch responses whose records were tampered with.
    tampered: Arc<Mutex<usize>>,
}

/// What a tampering proxy does to every batch of a Fetch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Flips a bit of the last byte, which the CRC covers.
    Crc,
    /// Moves the base offset (outside the CRC) one up: a gap after the follower's log end.
    Offset,
    /// Stamps a leader epoch (outside the CRC) past the leader's own.
    Epoch,
    /// Removes every batch (the follower learns only the HW and log start).
    Empty,
}

fn tamper_batches(records: &Bytes, tamper: Tamper) -> Bytes {
    if tamper == Tamper::Empty {
        return Bytes::new();
    }
    let mut bytes = BytesMut::from(&records[..]);
    let mut position = 0;
    while let Some(Ok(size)) = wire::batch::batch_size_peek(&bytes[position..]) {
        if bytes.len() < position + size {
            break;
        }
        let batch = &mut bytes[position..position + size];
        match tamper {
            Tamper::Crc => batch[size - 1] ^= 1,
            Tamper::Offset => {
                let base = i64::from_be_bytes(batch[..8].try_into().unwrap());
                batch[..8].copy_from_slice(&(base + 1).to_be_bytes());
            }
            Tamper::Epoch => batch[12..16].copy_from_slice(&99i32.to_be_bytes()),
            Tamper::Empty => unreachable!("handled above"),
        }
        position += size;
    }
    bytes.freeze()
}

async fn proxy_start(target: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let proxy = Proxy {
        address,
        fetch_offsets: Arc::new(Mutex::new(Vec::new())),
        tamper: Arc::new(Mutex::new(None)),
        tampered: Arc::new(Mutex::new(0)),
    };
    let (recorded, tamper, tampered) = (
        proxy.fetch_offsets.clone(),
        proxy.tamper.clone(),
        proxy.tampered.clone(),
    );
    runtime::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let (mut client_read, mut client_write) = inbound.into_split();
            let (mut server_read, mut server_write) = outbound.into_split();
            // The (api key, version) of each request in flight, answered in order.
            let requests = Arc::new(Mutex::new(std::collections::VecDeque::new()));
            let (recorded, sent) = (recorded.clone(), requests.clone());
            runtime::spawn(async move {
                let mut buffer = BytesMut::new();
                while let Some(frame) = frame_next(&mut client_read, &mut buffer).await {
                    fetch_offsets_record(&frame[4..], &recorded);
                    if let Ok(prefix) = wire::codec::request_prefix(&frame[4..]) {
                        let request = (prefix.api_key, prefix.api_version);
                        sent.lock().unwrap().push_back(request);
                    }
                    if server_write.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
            let (tamper, tampered) = (tamper.clone(), tampered.clone());
            runtime::spawn(async move {
                let mut buffer = BytesMut::new();
                while let Some(mut frame) = frame_next(&mut server_read, &mut buffer).await {
                    let request = requests.lock().unwrap().pop_front();
                    let tamper = *tamper.lock().unwrap();
                    if let (Some((1, version)), Some(tamper)) = (request, tamper) {
                        if let Some(changed) = fetch_response_tamper(&frame, version, tamper) {
                            frame = changed;
                            *tampered.lock().unwrap() += 1;
                        }
                    }
                    if client_write.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    proxy
}

/// The next length-prefixed frame (prefix included) from `stream`; `None` at its end.
async fn frame_next(
    stream: &mut (impl runtime::io::AsyncRead + Unpin),
    buffer: &mut BytesMut,
) -> Option<Bytes> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if buffer.len() >= 4 {
            let length = i32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize;
            if buffer.len() >= 4 + length {
                return Some(buffer.split_to(4 + length).freeze());
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

/// A Fetch response frame with every batch tampered with; `None` if it carries no records.
fn fetch_response_tamper(frame: &Bytes, version: i16, tamper: Tamper) -> Option<Bytes> {
    let api_key = wire::ApiKey::Fetch;
    let decoded = wire::codec::response_decode(frame.slice(4..), api_key, version);
    let (correlation_id, wire::ResponseKind::Fetch(mut response)) = decoded.ok()? else {
        return None;
    };
    let mut changed = false;
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            if let Some(records) = partition.records.as_mut().filter(|r| !r.is_empty()) {
                *records = tamper_batches(records, tamper);
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let mut buffer = BytesMut::new();
    let response = wire::ResponseKind::Fetch(response);
    wire::codec::response_encode(&mut buffer, api_key, version, correlation_id, &response).ok()?;
    Some(buffer.freeze())
}

fn fetch_offsets_record(frame: &[u8], recorded: &Mutex<Vec<i64>>) {
    let Ok(request) = wire::codec::request_decode(Bytes::copy_from_slice(frame)) else {
        return;
    };
    if let RequestKind::Fetch(fetch) = request.body {
        if fetch.replica_id.0 >= 0 {
            let offsets = fetch.topics.iter().flat_map(|topic| &topic.partitions);
            recorded
                .lock()
                .unwrap()
                .extend(offsets.map(|partition| partition.fetch_offset));
        }
    }
}

/// The replica durability rule: a follower's fetch offset tells the leader that everything
/// below it is fsynced, so a power loss of the follower right after any fetch keeps at least
/// that much. The follower's fsyncs take 300 ms here, and the disk is crashed as soon as the
/// proxy sees a fetch at the leader's end: a follower that fetches before its fsync completes
/// (planted `ack-before-follower-fsync`) recovers a shorter log.
#[tokio::test]
async fn a_followers_fetch_offset_survives_its_power_loss() {
    let (reported, recovered) = power_loss_after_fetch(None).await;
    assert!(
        recovered >= reported,
        "the follower reported offset {reported} as its fetch offset, but a power loss left \
         its log ending at {recovered}"
    );
}

#[cfg(feature = "planted-bugs")]
#[tokio::test]
async fn planted_ack_before_follower_fsync_loses_a_reported_offset() {
    let (reported, recovered) = power_loss_after_fetch(Some(Bug::AckBeforeFollowerFsync)).await;
    assert!(
        recovered < reported,
        "{recovered} >= {reported}: not caught"
    );
}

/// Replicates three batches, crashes the follower's disk right after it fetches at the
/// leader's end; returns (the largest fetch offset it sent, its log end after recovery).
async fn power_loss_after_fetch(planted: Option<Bug>) -> (i64, i64) {
    let configs = configs(2, Duration::from_secs(3), planted);
    let (nodes, proxies) = nodes_start_proxied(configs, Some(Duration::from_millis(300))).await;
    let leader = topic_create(&nodes).await;
    let follower = 1 - leader;
    let epoch = leader_of(nodes[0].broker()).1;
    let (leader_partition, follower_partition) =
        (nodes[leader].partition(), nodes[follower].partition());
    let fetch_offsets = &proxies[leader].fetch_offsets;
    let mut end = 0;
    for sequence in 0..3 {
        end = leader_append(&leader_partition, epoch, vec![batch(7, sequence * 4, 4)]);
        leader_flush(&leader_partition).await;
        let fetched_to_end = || fetch_offsets.lock().unwrap().iter().any(|o| *o >= end);
        until("the follower fetches at the leader's end", fetched_to_end).await;
    }
    // Power loss right after the fetch that named the end: only fsynced bytes survive.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    nodes[follower]
        .disk
        .crash(runtime::disk::CrashOptions::LoseUnsynced, &mut rng);
    let reported = *fetch_offsets.lock().unwrap().iter().max().unwrap();
    assert_eq!(reported, end, "the follower fetched up to the leader's end");
    let disk: Arc<dyn Disk> = nodes[follower].disk.clone();
    let config = storage::LogConfig::kafka_defaults();
    let recovered = storage::PartitionLog::open(disk, "data/t-0".into(), config, 1).unwrap();
    drop(follower_partition);
    (reported, recovered.log_end_offset())
}

/// Truncation on a leader change: the epoch-0 leader holds a tail no follower fetched (a proxy
/// strips the batches from its answers meanwhile); a controlled shutdown moves
/// leadership to a follower at epoch 1, which appends; the old leader restarts as a follower,
/// learns from the diverging epoch where its history leaves the new leader's, truncates the
/// tail and copies epoch 1. Every replica ends byte-identical to the new leader, with the same
/// epoch cache and producer state (the tail's producer is forgotten). With the planted
/// `skip-truncation` the follower never names its last epoch and keeps the tail.
#[tokio::test]
async fn an_old_leaders_tail_is_truncated_to_the_new_leaders_history() {
    let (nodes, new) = old_leader_returns(None).await;
    let new_partition = nodes[new].partition();
    let expected = log_bytes(&new_partition);
    until("every replica holds the new leader's log", || {
        nodes
            .iter()
            .all(|node| log_bytes(&node.partition()) == expected)
    })
    .await;
    // The truncation lowered the durable offset with the log: it never claims a re-appended
    // offset before its fsync.
    until("every replica's durable offset is its log end", || {
        nodes.iter().all(|node| {
            let partition = node.partition();
            let durable = partition.durable();
            !durable.failed && durable.offset_end == partition.log().log_end_offset()
        })
    })
    .await;
    let epochs = new_partition.log().epochs();
    assert_eq!(
        epochs,
        [(0, 0), (1, 5)],
        "the new leader's epoch 1 starts at 5"
    );
    let producers = new_partition.log().producers().clone();
    assert!(producers.entry(3).is_none(), "the tail's producer is gone");
    for node in &nodes {
        let partition = node.partition();
        let log = partition.log();
        assert_eq!(log.epochs(), epochs, "node {}", node.config.node_id);
        assert_eq!(*log.producers(), producers, "node {}", node.config.node_id);
    }
}

#[cfg(feature = "planted-bugs")]
#[tokio::test]
async fn planted_skip_truncation_keeps_the_old_tail() {
    let (nodes, new) = old_leader_returns(Some(Bug::SkipTruncation)).await;
    let expected = log_bytes(&nodes[new].partition());
    let converged = within(Duration::from_secs(3), || {
        nodes
            .iter()
            .all(|node| log_bytes(&node.partition()) == expected)
    })
    .await;
    assert!(!converged, "the old leader dropped its tail: not caught");
}

/// The scenario of the truncation test up to the old leader's restart as a follower; returns
/// the nodes and the new leader's index.
async fn old_leader_returns(planted: Option<Bug>) -> (Vec<Node>, usize) {
    let configs = configs(3, Duration::from_millis(100), planted);
    let (mut nodes, proxies) = nodes_start_proxied(configs, None).await;
    let old = topic_create(&nodes).await;
    let partition = nodes[old].partition();
    let end = leader_append(&partition, 0, vec![batch(1, 0, 3), batch(2, 0, 2)]);
    leader_flush(&partition).await;
    until("the followers copy the leader", || {
        nodes
            .iter()
            .all(|node| node.partition().log().log_end_offset() == end)
    })
    .await;
    // The tail: appended and flushed on the leader, but its answers reach the followers
    // without batches.
    *proxies[old].tamper.lock().unwrap() = Some(Tamper::Empty);
    let tail_end = leader_append(&partition, 0, vec![batch(3, 0, 4), batch(1, 3, 3)]);
    leader_flush(&partition).await;
    let tampered = *proxies[old].tampered.lock().unwrap();
    until("the followers see answers without the tail", || {
        *proxies[old].tampered.lock().unwrap() >= tampered + 2
    })
    .await;
    for (index, node) in nodes.iter().enumerate() {
        let node_end = node.partition().log().log_end_offset();
        let expected = if index == old { tail_end } else { end };
        assert_eq!(node_end, expected, "only the leader holds the tail");
    }
    drop(partition);

    // Controlled shutdown moves leadership; the process then stops and restarts on its disk.
    let old_id = nodes[old].config.node_id;
    nodes[old].broker().cluster().clone().shutdown().await;
    let survivor = (old + 1) % 3;
    until("leadership moves", || {
        let (leader, epoch) = leader_of(nodes[survivor].broker());
        leader != old_id && leader >= 0 && epoch == 1
    })
    .await;
    nodes[old].serving.take().unwrap().abort();
    nodes[old].broker = None;
    runtime::time::sleep(Duration::from_millis(200)).await;
    nodes[old].disk.crash_process();

    let new_id = leader_of(nodes[survivor].broker()).0;
    let new = nodes
        .iter()
        .position(|node| node.config.node_id == new_id)
        .unwrap();
    let new_partition = nodes[new].partition();
    let new_end = leader_append(&new_partition, 1, vec![batch(4, 0, 2), batch(2, 2, 1)]);
    leader_flush(&new_partition).await;
    assert!(
        new_end < tail_end,
        "the test wants the old tail past the new end"
    );

    let disk: Arc<dyn Disk> = nodes[old].disk.clone();
    let restarted = Broker::open(nodes[old].config.clone(), context(disk, 100))
        .await
        .expect("reopens");
    nodes[old].serving = Some(serve(&restarted));
    nodes[old].broker = Some(restarted);
    until("the old leader hosts t-0 again", || {
        nodes[old].broker().topics().partition("t", 0).is_some()
    })
    .await;
    drop(new_partition);
    (nodes, new)
}

/// A leader's answer is untrusted input: a batch whose CRC fails, one that leaves a gap after
/// the follower's log end, and one stamped with an epoch past the leader's are each refused
/// (never appended, no panic), and the follower catches up once the answers are sound again.
#[tokio::test]
async fn a_follower_never_appends_a_bad_answer() {
    let configs = configs(2, Duration::from_millis(100), None);
    let (nodes, proxies) = nodes_start_proxied(configs, None).await;
    let leader = topic_create(&nodes).await;
    let follower = 1 - leader;
    let epoch = leader_of(nodes[0].broker()).1;
    let (leader_partition, follower_partition) =
        (nodes[leader].partition(), nodes[follower].partition());
    let proxy = &proxies[leader];
    let mut sequence = 0;
    for tamper in [Tamper::Crc, Tamper::Offset, Tamper::Epoch] {
        let before = follower_partition.log().log_end_offset();
        *proxy.tamper.lock().unwrap() = Some(tamper);
        let tampered_before = *proxy.tampered.lock().unwrap();
        leader_append(&leader_partition, epoch, vec![batch(9, sequence, 2)]);
        sequence += 2;
        leader_flush(&leader_partition).await;
        until(
            "the proxy tampers with a few answers (or one was appended)",
            || {
                *proxy.tampered.lock().unwrap() >= tampered_before + 3
                    || follower_partition.log().log_end_offset() != before
            },
        )
        .await;
        assert_eq!(
            follower_partition.log().log_end_offset(),
            before,
            "{tamper:?}: a bad answer was appended"
        );
        assert!(!follower_partition.durable().failed);
        *proxy.tamper.lock().unwrap() = None;
        let expected = log_bytes(&leader_partition);
        until("the follower catches up with sound answers", || {
            log_bytes(&follower_partition) == expected
        })
        .await;
    }
}

/// A follower behind the leader's log start (DeleteRecords moved it while the follower saw no
/// batches) is answered OFFSET_OUT_OF_RANGE, empties its log at the leader's start, and, since
/// that start lies inside a batch, starts again at the batch's base; it ends with the leader's
/// batches from there and the leader's log start.
#[tokio::test]
async fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let configs = configs(2, Duration::from_millis(100), None);
    let (nodes, proxies) = nodes_start_proxied(configs, None).await;
    let leader = topic_create(&nodes).await;
    let follower = 1 - leader;
    let epoch = leader_of(nodes[0].broker()).1;
    let (leader_partition, follower_partition) =
        (nodes[leader].partition(), nodes[follower].partition());
    let proxy = &proxies[leader];
    *proxy.tamper.lock().unwrap() = Some(Tamper::Empty);
    let batches = vec![batch(5, 0, 4), batch(5, 4, 4), batch(5, 8, 4)];
    let end = leader_append(&leader_partition, epoch, batches);
    leader_flush(&leader_partition).await;
    until("the follower sees answers without batches", || {
        *proxy.tampered.lock().unwrap() >= 2
    })
    .await;
    assert_eq!(follower_partition.log().log_end_offset(), 0);
    leader_partition.log().advance_log_start_offset(6).unwrap();
    *proxy.tamper.lock().unwrap() = None;
    until(
        "the follower holds the leader's batches from its start",
        || {
            let log = follower_partition.log();
            log.log_end_offset() == end && log.log_start_offset() == 6
        },
    )
    .await;
    assert_eq!(log_bytes(&follower_partition), log_bytes(&leader_partition));
    let leader_epochs = leader_partition.log().epochs();
    assert_eq!(follower_partition.log().epochs(), leader_epochs);
}
