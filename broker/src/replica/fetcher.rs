//! The follower's shell (issue 13): fetcher tasks that copy leaders' logs into this node's
//! replicas, each partition driven by a `Follower` core.
//!
//! `run` watches the metadata image and keeps one task per source broker (as Kafka's
//! ReplicaFetcherThread): a partition is followed when this node hosts a replica of it and the
//! image names another live broker its leader. A task holds one connection to its leader's
//! registered endpoint and loops over rounds:
//!
//! 1. one sessionless Fetch (v12, `replica_id` = this node) for every partition whose core has
//!    a `fetch_position` (everything it appended is fsynced: the fetch offset is its durable
//!    end, the `replica` module's durability rule);
//! 2. each partition's answer, checked first because a leader's answer is untrusted input
//!    (CRC, offsets contiguous with the log end, epochs neither regressing nor past the
//!    leader's): records are appended with the leader's offsets and epochs, a diverging epoch
//!    truncates, OFFSET_OUT_OF_RANGE below the leader's log start empties the log there;
//! 3. one group commit for every partition that appended (`flush_request`), awaited where the
//!    core withholds the next fetch until it is durable.
//!
//! **Fence:** every append and truncation happens under the log lock after re-checking that
//! the image still names that leader at that epoch, so a node never writes a follower's bytes
//! into a log it leads (or a log of a topic recreated under the same name).
//!
//! A bad answer is logged and the round backs off; it is never appended and never panics. An
//! epoch or leadership error waits for the next image. A failed local write or fsync stops
//! following the partition until the process restarts (its log is no longer trusted, as on the
//! leader: `Partition::offline_if_sync_failed`).

use super::follower::{FetchAnswer, FetchPosition, Follower};
use super::planted::ReplicaBug;
use super::BrokerId;
use crate::broker::Broker;
use crate::partition::Partition;
use bytes::Bytes;
use client::{ClientConfig, Connection};
use cluster::image::MetadataImage;
use cluster::records::TopicId;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runtime::sync::watch;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use storage::PartitionLog;
use tracing::Instrument;
use wire::batch::ValidatedBatch;
use wire::{RequestKind, ResponseKind};

/// Pause after a connection error or a bad answer (Kafka's `replica.fetch.backoff.ms` is 1 s;
/// shorter, because a failover waits on it).
const BACKOFF: Duration = Duration::from_millis(200);
/// How often a task looks again for a log the reconciler has not opened yet.
const OPEN_RECHECK: Duration = Duration::from_millis(50);
/// Kafka's `replica.fetch.response.max.bytes`.
const RESPONSE_BYTES_MAX: i32 = 10 * 1024 * 1024;
/// A fetch may park at the leader for `fetch_wait_max`; the request times out this much later.
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

/// A followed partition: (topic name, index).
pub type PartitionKey = (String, i32);

/// What the image asks of one source broker's fetcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The leader's registered endpoint, `host:port`.
    pub address: String,
    pub partitions: BTreeMap<PartitionKey, Led>,
}

/// A partition as the image has it led by the source broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Led {
    pub topic_id: TopicId,
    pub leader_epoch: i32,
}

/// Per source broker, the partitions `node_id` follows by `image`: it hosts a replica, the
/// leader is another broker, and that broker is live. The image holds an internal topic only
/// when it replicates it (`cluster_mode::node_local`): node-local ones are never followed.
pub fn assignments(image: &MetadataImage, node_id: BrokerId) -> BTreeMap<BrokerId, Assignment> {
    let mut assignments: BTreeMap<BrokerId, Assignment> = BTreeMap::new();
    for topic in image.topics() {
        for (partition, index) in topic.partitions.iter().zip(0..) {
            let Some(leader) = partition.leader() else {
                continue;
            };
            let hosted = partition.replicas.contains(&node_id);
            if leader == node_id || !hosted || !image.broker_is_live(leader) {
                continue;
            }
            let Some(registration) = image.broker(leader) else {
                continue;
            };
            let address =
                client::config::broker_address(&registration.host, i32::from(registration.port));
            let assignment = assignments.entry(leader).or_insert_with(|| Assignment {
                address,
                partitions: BTreeMap::new(),
            });
            let led = Led {
                topic_id: topic.topic_id,
                leader_epoch: partition.leader_epoch,
            };
            assignment
                .partitions
                .insert((topic.name.to_string(), index), led);
        }
    }
    assignments
}

/// Keeps one fetcher task per source broker in line with the image, for as long as the broker
/// serves. Spawned only where some other broker may lead (`server::serve`), so a single node
/// runs no task for it.
pub async fn run(broker: Arc<Broker>) {
    let mut images = broker.cluster().image_watch();
    let mut fetchers = Fetchers(BTreeMap::new());
    loop {
        let image = images.borrow_and_update().clone();
        fetchers.update(&broker, assignments(&image, broker.config.node_id));
        if images.changed().await.is_err() {
            return;
        }
    }
}

struct FetcherTask {
    assignment: watch::Sender<Assignment>,
    task: runtime::JoinHandle<()>,
}

/// The running tasks by source broker; aborted when `run` ends or is aborted.
struct Fetchers(BTreeMap<BrokerId, FetcherTask>);

impl Fetchers {
    fn update(&mut self, broker: &Arc<Broker>, mut wanted: BTreeMap<BrokerId, Assignment>) {
        tracing::debug!(node = broker.config.node_id, ?wanted, "fetchers update");
        self.0.retain(|source, fetcher| {
            let keep = wanted.contains_key(source);
            if !keep {
                fetcher.task.abort();
            }
            keep
        });
        for (source, fetcher) in &self.0 {
            let assignment = wanted.remove(source).expect("kept above");
            fetcher.assignment.send_if_modified(|current| {
                let changed = *current != assignment;
                *current = assignment;
                changed
            });
        }
        for (source, assignment) in wanted {
            let (sender, receiver) = watch::channel(assignment);
            let source_fetcher = SourceFetcher::new(broker.clone(), source);
            // Every log line of the task names the follower and its source.
            let span = tracing::info_span!("fetcher", node = broker.config.node_id, source);
            let task = runtime::spawn(source_fetcher.run(receiver).instrument(span));
            let fetcher = FetcherTask {
                assignment: sender,
                task,
            };
            self.0.insert(source, fetcher);
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        for fetcher in self.0.values() {
            fetcher.task.abort();
        }
    }
}

/// One partition this task follows.
struct Followed {
    led: Led,
    partition: Arc<Partition>,
    core: Follower,
    /// After an epoch or leadership error: not fetched again before this instant or the next
    /// assignment (the leader may be a step behind the image, or ahead of it).
    stalled_until: Option<runtime::time::Instant>,
}

impl Followed {
    fn stalled(&self, now: runtime::time::Instant) -> bool {
        self.stalled_until.is_some_and(|until| now < until)
    }

    /// Starts the core over from `log` (this partition's, locked) when its end is not the one
    /// the core knows: someone else wrote it (a leader's append racing the image), or a
    /// truncation cut inside a batch. True if it did; the answer in hand is then dropped.
    fn core_resync(&mut self, log: &PartitionLog, planted: Option<ReplicaBug>) -> bool {
        if log.log_end_offset() == self.core.log_end() {
            return false;
        }
        self.core = follower_build(log, &self.partition, self.led.leader_epoch, planted);
        true
    }
}

/// How a round ended: what the task waits for before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Fetch again at once.
    Fetch,
    /// Nothing to fetch: wait for the assignment to change (or, `Some`, at most this long).
    Idle(Option<Duration>),
    /// A connection error or a bad answer.
    Backoff,
}

/// The fetcher of one source broker.
struct SourceFetcher {
    broker: Arc<Broker>,
    source: BrokerId,
    planted: Option<ReplicaBug>,
    followed: BTreeMap<PartitionKey, Followed>,
    /// Partitions whose log failed a write or fsync: never followed again by this process.
    failed: BTreeSet<(PartitionKey, TopicId)>,
    connection: Option<Connection>,
    address: String,
}

impl SourceFetcher {
    fn new(broker: Arc<Broker>, source: BrokerId) -> SourceFetcher {
        let planted = ReplicaBug::of(broker.config.planted);
        SourceFetcher {
            broker,
            source,
            planted,
            followed: BTreeMap::new(),
            failed: BTreeSet::new(),
            connection: None,
            address: String::new(),
        }
    }

    async fn run(mut self, mut assignment: watch::Receiver<Assignment>) {
        let mut current = assignment.borrow_and_update().clone();
        self.assignment_apply(&current, true);
        loop {
            let next = self.round(&current).await;
            let wait = match next {
                Next::Fetch => None,
                Next::Idle(recheck) => Some(recheck),
                Next::Backoff => Some(Some(BACKOFF)),
            };
            // `changed()` marks the new assignment seen: a wake by it must be remembered, as
            // `has_changed` no longer reports it (missing it kept a follower fetching at a
            // stale leader epoch for good: cluster-partition seed 4).
            let mut woken_by_assignment = false;
            if let Some(wait) = wait {
                let timer = async {
                    match wait {
                        Some(wait) => runtime::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                };
                runtime::select! {
                    biased;
                    changed = assignment.changed() => match changed {
                        Ok(()) => woken_by_assignment = true,
                        Err(_) => return,
                    },
                    () = timer => {}
                }
            }
            let changed = woken_by_assignment || assignment.has_changed().unwrap_or(false);
            if changed {
                current = assignment.borrow_and_update().clone();
            }
            self.assignment_apply(&current, changed);
        }
    }

    /// Follows what `assignment` names (opening cores for logs the reconciler has opened since),
    /// drops what it no longer names, and moves to a new leader epoch; a `changed` assignment
    /// clears stalls.
    fn assignment_apply(&mut self, assignment: &Assignment, changed: bool) {
        if changed {
            tracing::debug!(?assignment, "assignment changed");
        }
        if assignment.address != self.address {
            self.address = assignment.address.clone();
            self.connection = None;
        }
        self.followed.retain(|key, followed| {
            assignment.partitions.get(key).is_some_and(|led| {
                led.topic_id == followed.led.topic_id
                    && led.leader_epoch >= followed.led.leader_epoch
            })
        });
        for (key, led) in &assignment.partitions {
            if let Some(followed) = self.followed.get_mut(key) {
                if led.leader_epoch > followed.led.leader_epoch {
                    followed.core.leader_changed(led.leader_epoch);
                    followed.led = *led;
                }
                if changed {
                    followed.stalled_until = None;
                }
                continue;
            }
            if self.failed.contains(&(key.clone(), led.topic_id)) {
                continue;
            }
            let Some(partition) = self.broker.topics().partition(&key.0, key.1) else {
                continue;
            };
            if partition.durable().failed {
                // Offline (a failed sync) until a restart recovers it: not followed.
                self.failed.insert((key.clone(), led.topic_id));
                continue;
            }
            let core = follower_build(&partition.log(), &partition, led.leader_epoch, self.planted);
            let followed = Followed {
                led: *led,
                partition,
                core,
                stalled_until: None,
            };
            self.followed.insert(key.clone(), followed);
        }
    }

    async fn round(&mut self, assignment: &Assignment) -> Next {
        for followed in self.followed.values_mut() {
            let durable = followed.partition.durable().offset_end;
            followed.core.durable(durable.min(followed.core.log_end()));
        }
        let unopened = self.followed.len()
            + self
                .failed
                .iter()
                .filter(|(key, _)| assignment.partitions.contains_key(key))
                .count()
            < assignment.partitions.len();
        let now = self.broker.clock.now();
        let stalled = self.followed.values().any(|followed| followed.stalled(now));
        let recheck = match (unopened, stalled) {
            (true, _) => Some(OPEN_RECHECK),
            (false, true) => Some(BACKOFF),
            (false, false) => None,
        };
        let positions: BTreeMap<PartitionKey, FetchPosition> = self
            .followed
            .iter()
            .filter(|(_, followed)| !followed.stalled(now))
            .filter_map(|(key, followed)| Some((key.clone(), followed.core.fetch_position()?)))
            .collect();
        tracing::debug!(
            ?positions,
            followed = self.followed.len(),
            ?recheck,
            "follower round"
        );
        if positions.is_empty() {
            // A core built over an unsynced tail (a new source, mid group commit) withholds its
            // position until that fsync; once it is in, fetch at once: idling here would wait
            // for an assignment change that may never come (cluster-crash seed 5).
            self.durable_await().await;
            let now = self.broker.clock.now();
            return match self.followed.values().any(|followed| {
                followed.core.durable_end() < followed.core.log_end()
                    || (!followed.stalled(now) && followed.core.fetch_position().is_some())
            }) {
                true => Next::Fetch,
                false => Next::Idle(recheck),
            };
        }
        let request = self.request(&positions);
        let response = match self.exchange(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(source = self.source, address = %self.address, %error, "follower fetch failed; backing off");
                self.connection = None;
                return Next::Backoff;
            }
        };
        if response.error_code != 0 {
            tracing::warn!(
                source = self.source,
                error_code = response.error_code,
                "follower fetch refused"
            );
            return Next::Backoff;
        }
        let mut next = Next::Fetch;
        let mut answered = BTreeSet::new();
        for topic in response.responses {
            for data in topic.partitions {
                let key = (topic.topic.0.to_string(), data.partition_index);
                let Some(&position) = positions.get(&key) else {
                    continue;
                };
                if !answered.insert(key.clone()) {
                    continue;
                }
                if self.answer_apply(&key, position, &data) == Next::Backoff {
                    next = Next::Backoff;
                }
            }
        }
        for followed in self.followed.values() {
            if followed.core.durable_end() < followed.core.log_end() {
                followed.partition.flush_request();
            }
        }
        self.durable_await().await;
        next
    }

    /// Waits for the fsync of every partition whose core withholds its next fetch until then;
    /// stops following one whose fsync failed.
    async fn durable_await(&mut self) {
        let mut failed = Vec::new();
        for (key, followed) in &mut self.followed {
            if followed.core.fetch_position().is_some() {
                continue;
            }
            let log_end = followed.core.log_end();
            tracing::debug!(topic = %key.0, partition = key.1, log_end, durable = followed.partition.durable().offset_end, recovery_point = followed.partition.log().recovery_point(), "awaiting the follower's fsync");
            followed.partition.flush_request();
            if !followed.partition.durable_wait(log_end - 1).await {
                failed.push(key.clone());
                continue;
            }
            let durable = followed.partition.durable().offset_end;
            followed.core.durable(durable.min(log_end));
        }
        for key in failed {
            self.stop_following(&key, "the follower's fsync failed or the log was deleted");
        }
    }

    fn stop_following(&mut self, key: &PartitionKey, why: &str) {
        if let Some(followed) = self.followed.remove(key) {
            tracing::error!(
                site = "follower-offline",
                topic = %key.0, partition = key.1, why,
                "stopped following until restart"
            );
            // Offline for every fetcher, not only this one: after a leader change another
            // source's fetcher would append to a log whose truncation failed halfway (its
            // producer state ahead of its end: cluster-crash 2426267831).
            followed.partition.offline_if_sync_failed();
            followed.partition.offline_until_restart(why);
            self.failed.insert((key.clone(), followed.led.topic_id));
        }
    }

    fn request(&self, positions: &BTreeMap<PartitionKey, FetchPosition>) -> FetchRequest {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (key, position) in positions {
            let followed = &self.followed[key];
            let log_start = followed.partition.log().log_start_offset();
            let fetch = FetchPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(followed.led.leader_epoch)
                .with_fetch_offset(position.fetch_offset)
                .with_last_fetched_epoch(position.last_fetched_epoch.unwrap_or(-1))
                .with_log_start_offset(log_start)
                .with_partition_max_bytes(self.broker.config.replica.fetch_partition_bytes);
            topics.entry(key.0.as_str()).or_default().push(fetch);
        }
        let topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect();
        let wait = self.broker.config.replica.fetch_wait_max;
        FetchRequest::default()
            .with_replica_id(self.broker.config.node_id.into())
            .with_max_wait_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_BYTES_MAX)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    async fn exchange(
        &mut self,
        request: FetchRequest,
    ) -> Result<kafka_protocol::messages::FetchResponse, String> {
        if self.connection.as_ref().is_none_or(Connection::is_broken) {
            let config = self.client_config();
            let connection = Connection::connect(&self.address, &config).await;
            self.connection = Some(connection.map_err(|error| error.to_string())?);
        }
        let connection = self.connection.as_mut().expect("connected above");
        match connection.request(RequestKind::Fetch(request)).await {
            Ok(ResponseKind::Fetch(response)) => Ok(response),
            Ok(other) => Err(format!("a Fetch answered by {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new([self.address.clone()]);
        config.client_id = format!("gregor-replica-{}", self.broker.config.node_id);
        config.clock = self.broker.clock;
        config.request_timeout = self.broker.config.replica.fetch_wait_max + REQUEST_TIMEOUT_MARGIN;
        config
    }

    /// One partition's answer.
    fn answer_apply(
        &mut self,
        key: &PartitionKey,
        position: FetchPosition,
        data: &PartitionData,
    ) -> Next {
        let error = data.error_code;
        if error == 0 && data.diverging_epoch.epoch >= 0 {
            let (epoch, end_offset) = (data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
            return self.diverging_apply(key, epoch, end_offset);
        }
        if error == 0 {
            let records = data.records.clone().unwrap_or_default();
            return self.records_apply(key, records, data.high_watermark, data.log_start_offset);
        }
        let stall_until = self.broker.clock.now() + BACKOFF;
        let followed = self.followed.get_mut(key).expect("asked for it");
        match ResponseError::try_from_code(error) {
            Some(ResponseError::OffsetOutOfRange)
                if position.fetch_offset < data.log_start_offset =>
            {
                self.start_at(key, data.log_start_offset)
            }
            Some(
                ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch
                | ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable,
            ) => {
                tracing::info!(topic = %key.0, partition = key.1, error, leader_epoch = followed.led.leader_epoch, "the leader refused; waiting for the next image");
                followed.stalled_until = Some(stall_until);
                Next::Fetch
            }
            _ => {
                tracing::warn!(topic = %key.0, partition = key.1, error, fetch_offset = position.fetch_offset, "follower fetch error");
                Next::Backoff
            }
        }
    }

    /// Records (perhaps none) and the leader's HW and log start.
    fn records_apply(
        &mut self,
        key: &PartitionKey,
        records: Bytes,
        high_watermark: i64,
        leader_start: i64,
    ) -> Next {
        let batches = match ValidatedBatch::validate_prefix(records) {
            Ok((batches, _partial_tail)) => batches,
            Err(error) => {
                tracing::warn!(site = "follower-bad-batch", topic = %key.0, partition = key.1, %error, "the leader sent a corrupt batch; refetching");
                return Next::Backoff;
            }
        };
        let (source, node_id) = (self.source, self.broker.config.node_id);
        let image = self.broker.cluster().image();
        let followed = self.followed.get_mut(key).expect("asked for it");
        // The log is locked through its own handle, so the core can be rebuilt under it.
        let partition = followed.partition.clone();
        let mut log = partition.log();
        if !fence_holds(&image, key, followed.led, source, node_id) {
            return Next::Fetch;
        }
        if followed.core_resync(&log, self.planted) {
            return Next::Fetch;
        }
        let straddles = batches.first().is_some_and(|first| {
            let header = first.header();
            let next_offset = next_offset_checked(header).unwrap_or(i64::MIN);
            header.base_offset < log.log_end_offset() && log.log_end_offset() < next_offset
        });
        if straddles && log.log_start_offset() == log.log_end_offset() {
            // An empty log restarted at the leader's log start, which lies inside a batch (after
            // DeleteRecords): start again at that batch's base, as Kafka's follower does on
            // UnexpectedAppendOffsetException; the log start follows the leader's below.
            let base = batches[0].header().base_offset.max(0);
            if let Err(error) = log.truncate_fully_and_start_at(base) {
                drop(log);
                tracing::error!(topic = %key.0, partition = key.1, %error, "a follower's truncation failed");
                self.stop_following(key, "a truncation of the follower's log failed");
                return Next::Backoff;
            }
            followed.partition.durable_truncated(&log);
            let epoch = followed.led.leader_epoch;
            followed.core = follower_build(&log, &followed.partition, epoch, self.planted);
        }
        if let Err(error) = batches_check(&batches, &log, followed.led.leader_epoch) {
            tracing::warn!(site = "follower-bad-batch", topic = %key.0, partition = key.1, %error, "the leader sent batches that do not extend this log; refetching");
            return Next::Backoff;
        }
        let mut appended = Vec::with_capacity(batches.len());
        let mut failed = None;
        for batch in batches {
            let header = *batch.header();
            match log.append_replicated(batch) {
                Ok(_) => appended.push((header.partition_leader_epoch, header.next_offset())),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        followed.core.answered(FetchAnswer::Records {
            batches: appended,
            high_watermark,
        });
        followed
            .partition
            .follower_high_watermark_set(followed.core.high_watermark());
        // The log start follows the leader's, never past what this replica knows is committed.
        let start = leader_start.min(followed.core.high_watermark());
        let start_result = match failed {
            None if start > log.log_start_offset() => log.advance_log_start_offset(start),
            _ => Ok(()),
        };
        let sync_failed = log.sync_failed();
        drop(log);
        let Some(error) = failed.or(start_result.err()) else {
            return Next::Fetch;
        };
        tracing::error!(topic = %key.0, partition = key.1, %error, "a write of a follower's log failed");
        if sync_failed {
            // Fsyncgate: the log is not trusted until a restart recovers it (as on a leader).
            self.stop_following(key, "a sync of the follower's log failed");
        }
        Next::Backoff
    }

    /// Fetch v12's diverging epoch: truncate to where this log's history leaves the leader's.
    fn diverging_apply(&mut self, key: &PartitionKey, epoch: i32, end_offset: i64) -> Next {
        let (source, node_id) = (self.source, self.broker.config.node_id);
        let image = self.broker.cluster().image();
        let stall_until = self.broker.clock.now() + BACKOFF;
        let followed = self.followed.get_mut(key).expect("asked for it");
        let offset = followed.core.truncation_offset(epoch, end_offset);
        if offset < followed.core.high_watermark() {
            tracing::error!(
                site = "truncation-below-hw",
                topic = %key.0, partition = key.1, epoch, end_offset, offset,
                high_watermark = followed.core.high_watermark(),
                "the leader asks to truncate below the high watermark; refused"
            );
            followed.stalled_until = Some(stall_until);
            return Next::Fetch;
        }
        let partition = followed.partition.clone();
        let mut log = partition.log();
        if !fence_holds(&image, key, followed.led, source, node_id) {
            return Next::Fetch;
        }
        if followed.core_resync(&log, self.planted) {
            return Next::Fetch;
        }
        // An answer that asks for no cut (the offset at or past the end) leaves the log as it
        // is, unsynced bytes included (the planted `ack-before-follower-fsync` fetches early).
        let cut = offset < log.log_end_offset();
        if let Err(error) = log.truncate_to(offset) {
            drop(log);
            tracing::error!(topic = %key.0, partition = key.1, %error, "a follower's truncation failed");
            self.stop_following(key, "a truncation of the follower's log failed");
            return Next::Backoff;
        }
        if cut {
            followed.partition.durable_truncated(&log);
        }
        tracing::info!(site = "follower-truncated", topic = %key.0, partition = key.1, epoch, end_offset, offset, log_end = log.log_end_offset(), "truncated to the leader's history");
        let answered = followed
            .core
            .answered(FetchAnswer::Diverging { epoch, end_offset });
        assert_eq!(answered, Some(offset));
        // The cut may have fallen inside one of this log's batches, which went whole.
        followed.core_resync(&log, self.planted);
        Next::Fetch
    }

    /// OFFSET_OUT_OF_RANGE below the leader's log start: what this replica has was removed on
    /// the leader; it starts over empty at the leader's start.
    fn start_at(&mut self, key: &PartitionKey, leader_start: i64) -> Next {
        let (source, node_id) = (self.source, self.broker.config.node_id);
        let image = self.broker.cluster().image();
        let followed = self.followed.get_mut(key).expect("asked for it");
        let mut log = followed.partition.log();
        if !fence_holds(&image, key, followed.led, source, node_id) {
            return Next::Fetch;
        }
        if leader_start <= log.log_end_offset() {
            return Next::Backoff;
        }
        if let Err(error) = log.truncate_fully_and_start_at(leader_start) {
            drop(log);
            tracing::error!(topic = %key.0, partition = key.1, %error, "a follower's truncation failed");
            self.stop_following(key, "a truncation of the follower's log failed");
            return Next::Backoff;
        }
        followed.partition.durable_truncated(&log);
        tracing::info!(site = "follower-restarted-log", topic = %key.0, partition = key.1, leader_start, "the follower's log restarts at the leader's log start");
        followed.core = follower_build(
            &log,
            &followed.partition,
            followed.led.leader_epoch,
            self.planted,
        );
        Next::Fetch
    }
}

/// A core for `log` (the caller holds its lock) fetching at `leader_epoch`.
fn follower_build(
    log: &PartitionLog,
    partition: &Partition,
    leader_epoch: i32,
    planted: Option<ReplicaBug>,
) -> Follower {
    let log_end = log.log_end_offset();
    // A log start moved to the log end leaves the epoch in force starting there: no batch.
    let epochs = log
        .epochs()
        .into_iter()
        .filter(|(_, start)| *start < log_end)
        .collect();
    let state = (
        log_end,
        log.recovery_point(),
        partition.follower_high_watermark(),
    );
    Follower::new(leader_epoch, epochs, state, planted)
}

/// Whether `image` still names `source` the leader of `key` at `led`'s epoch and topic id, and
/// this node a replica: checked under the log lock before every write.
fn fence_holds(
    image: &MetadataImage,
    key: &PartitionKey,
    led: Led,
    source: BrokerId,
    node_id: BrokerId,
) -> bool {
    let Some(topic) = image
        .topic_by_name(&key.0)
        .filter(|topic| topic.topic_id == led.topic_id)
    else {
        return false;
    };
    let Some(partition) = usize::try_from(key.1)
        .ok()
        .and_then(|index| topic.partitions.get(index))
    else {
        return false;
    };
    partition.leader() == Some(source)
        && partition.leader_epoch == led.leader_epoch
        && partition.replicas.contains(&node_id)
}

/// The offset after a batch, if it is one (a leader's base offset is not covered by the CRC).
fn next_offset_checked(header: &wire::batch::BatchHeader) -> Option<i64> {
    let count = i64::from(header.last_offset_delta) + 1;
    header.base_offset.checked_add(count)
}

/// A leader's batches must extend `log` exactly: the first at its end, each at the previous
/// one's next offset, epochs never below the log's latest nor above the leader's own.
pub fn batches_check(
    batches: &[ValidatedBatch],
    log: &PartitionLog,
    leader_epoch: i32,
) -> Result<(), String> {
    let mut expected = log.log_end_offset();
    let mut latest = log.latest_epoch();
    for batch in batches {
        let header = batch.header();
        if header.base_offset != expected {
            return Err(format!(
                "a batch at offset {} where the log ends at {expected}",
                header.base_offset
            ));
        }
        let epoch = header.partition_leader_epoch;
        if epoch > leader_epoch {
            return Err(format!(
                "a batch of epoch {epoch} from a leader at epoch {leader_epoch}"
            ));
        }
        if latest.is_some_and(|latest| epoch < latest) {
            return Err(format!("a batch of epoch {epoch} after epoch {latest:?}"));
        }
        latest = latest.max(Some(epoch));
        let Some(next_offset) = next_offset_checked(header) else {
            return Err(format!(
                "a batch at offset {expected} runs past the largest offset"
            ));
        };
        expected = next_offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::records::LEADER_NONE;
    use cluster::records::{MetadataRecord, PartitionChange, PartitionRecord};
    use wire::batch::build::{batch_encode, RecordSpec};

    const A: TopicId = TopicId(0xa);

    fn partition(topic_id: TopicId, partition: i32, replicas: &[i32]) -> MetadataRecord {
        MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    fn leader_set(partition: i32, leader: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: A,
            partition,
            leader: Some(leader),
            isr: None,
        })
    }

    /// Brokers 1-3 live; topic `a`: a-0 on [1, 2], a-1 on [2, 1], a-2 on [3, 2], a-3 on [3].
    fn image() -> MetadataImage {
        let mut records = crate::cluster_mode::testing::brokers_live(3);
        records.extend([
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: A,
            },
            partition(A, 0, &[1, 2]),
            partition(A, 1, &[2, 1]),
            partition(A, 2, &[3, 2]),
            partition(A, 3, &[3]),
        ]);
        let mut image = MetadataImage::new();
        image.apply_batch(1, &records);
        image
    }

    fn led(leader_epoch: i32) -> Led {
        Led {
            topic_id: A,
            leader_epoch,
        }
    }

    #[test]
    fn a_node_follows_what_it_hosts_and_another_live_broker_leads() {
        let image = image();
        let of_2 = assignments(&image, 2);
        assert_eq!(of_2.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(of_2[&1].address, "127.0.0.1:9001");
        let followed_from_1: Vec<_> = of_2[&1].partitions.keys().cloned().collect();
        assert_eq!(followed_from_1, [("a".to_string(), 0)]);
        assert_eq!(of_2[&3].partitions.len(), 1, "a-2 only: a-3 is not hosted");
        let of_1 = assignments(&image, 1);
        assert_eq!(
            of_1.keys().copied().collect::<Vec<_>>(),
            [2],
            "not a-0: it leads"
        );
        // An offline partition is not fetched.
        let mut image = image;
        image.apply_batch(2, &[leader_set(0, LEADER_NONE)]);
        assert_eq!(
            assignments(&image, 2).keys().copied().collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn the_fence_holds_only_while_the_image_names_that_leader_at_that_epoch() {
        let mut image = image();
        let key = ("a".to_string(), 0);
        assert!(fence_holds(&image, &key, led(0), 1, 2));
        assert!(!fence_holds(&image, &key, led(0), 2, 2), "another leader");
        assert!(!fence_holds(&image, &key, led(1), 1, 2), "another epoch");
        assert!(!fence_holds(&image, &key, led(0), 1, 3), "not a replica");
        let other_id = Led {
            topic_id: TopicId(0xb),
            leader_epoch: 0,
        };
        assert!(
            !fence_holds(&image, &key, other_id, 1, 2),
            "a recreated topic"
        );
        assert!(!fence_holds(&image, &("a".into(), 9), led(0), 1, 2));
        // Leadership moves to this node: it must not append as a follower any more.
        image.apply_batch(2, &[leader_set(0, 2)]);
        assert!(!fence_holds(&image, &key, led(0), 1, 2));
        assert!(!fence_holds(&image, &key, led(1), 1, 2));
    }

    fn placed(base_offset: i64, epoch: i32, records: usize) -> ValidatedBatch {
        let specs = vec![RecordSpec::default(); records];
        batch_encode(&specs, kafka_protocol::records::Compression::None)
            .with_placement(base_offset, epoch)
    }

    #[test]
    fn a_leaders_batches_must_extend_the_log_exactly() {
        let disk: Arc<dyn runtime::Disk> = runtime::MemDisk::new();
        let config = storage::LogConfig::kafka_defaults();
        let mut log = PartitionLog::open(disk, "p".into(), config, 0).unwrap();
        log.append_replicated(placed(0, 2, 3)).unwrap();
        let check = |batches: &[ValidatedBatch]| batches_check(batches, &log, 4);
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&[placed(3, 2, 2), placed(5, 4, 1)]), Ok(()));
        assert!(check(&[placed(2, 2, 2)]).is_err(), "overlaps the log");
        assert!(check(&[placed(4, 2, 2)]).is_err(), "leaves a gap");
        assert!(check(&[placed(3, 2, 2), placed(6, 2, 1)]).is_err(), "a gap");
        assert!(check(&[placed(3, 1, 2)]).is_err(), "epoch regression");
        assert!(
            check(&[placed(3, 3, 2), placed(5, 2, 1)]).is_err(),
            "regression"
        );
        assert!(
            check(&[placed(3, 5, 2)]).is_err(),
            "past the leader's epoch"
        );
        let disk: Arc<dyn runtime::Disk> = runtime::MemDisk::new();
        let config = log.config().clone();
        let mut empty = PartitionLog::open(disk, "q".into(), config, 0).unwrap();
        empty.truncate_fully_and_start_at(i64::MAX - 1).unwrap();
        let last = [placed(i64::MAX - 1, 2, 3)];
        assert!(
            batches_check(&last, &empty, 4).is_err(),
            "past the largest offset"
        );
    }
}
