//! The leader side of replication in serving: the I/O around the sans-IO `Leader` core.
//!
//! Every partition with more than one replica that this broker leads by the image runs a
//! `Leader`, kept in the `Partition` beside its log (`Partition::replica`, lock order: log, then
//! core). The core is fed by the handlers and the flusher:
//! - Produce (`handlers::produce`): `append_admit` before an acks=all append, `appended` after
//!   every append, then `wait` parks the acks=all produce on a oneshot answered by an
//!   `Output::Ack`;
//! - the flusher (`partition::durable_publish`): `durable` after each group commit;
//! - a follower's Fetch (`handlers::fetch`, `replica_id >= 0`): `fetched` once, on arrival;
//! - the image (`Replicas::roles_apply`, after every reconcile): `Leader::new` when leadership
//!   begins, `partition_state` for ISR changes, `depose` when it ends (the core is then removed);
//! - a tick task (`tick_run`), alive while some such partition is led here: `tick` (ISR shrink
//!   by lag) and sending the AlterPartition proposals the core makes.
//!
//! Partitions with one replica run no core and no task: their HW is the local fsynced end and
//! acks wait for the local fsync, exactly as before replication existed (single-node worlds keep
//! their traces).
//!
//! AlterPartition: `alter_partition_call` sends the core's proposals through
//! `ClusterHandle::alter_partition` (an exactly-once controller RPC); until an answer is applied
//! the core keeps the proposal pending and the HW counts the larger of the two ISRs (KIP-497).

use super::{AckError, Leader, Output, PartitionState, ReplicaBug, ReplicaConfig, RequestId};
use crate::broker::Broker;
use crate::config::ReplicaSettings;
use crate::partition::Partition;
use crate::planted::Bug;
use cluster::image::{MetadataImage, PartitionImage};
use cluster::records::TopicId;
use runtime::sync::{oneshot, Notify};
use runtime::Clock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// The answer an acks=all produce waits for.
pub type AckReceiver = oneshot::Receiver<Result<(), AckError>>;

/// A led partition's core and what the shell keeps beside it.
pub struct Led {
    pub core: Leader,
    topic_id: TopicId,
    index: i32,
    /// The acks=all produces parked on the core, by request id.
    acks: BTreeMap<RequestId, oneshot::Sender<Result<(), AckError>>>,
    /// The next request id: ids are the core's own, so that every writer of the partition
    /// (produces, transaction markers, the coordinators of internal topics) parks under a
    /// distinct one.
    ack_next: RequestId,
    /// The AlterPartition the core asked for, not yet sent (the tick task sends it).
    proposal: Option<Proposal>,
    /// Wakes the tick task when a proposal is made (an ISR expansion at a fetch goes out at
    /// once, as Kafka's, not at the next tick).
    proposal_made: Arc<Notify>,
    planted: Option<Bug>,
}

/// An AlterPartition to send: `ClusterHandle::alter_partition`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

impl std::fmt::Debug for Led {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Led")
            .field("leader_epoch", &self.core.leader_epoch())
            .field("high_watermark", &self.core.high_watermark())
            .field("isr", self.core.isr())
            .field("acks", &self.acks.len())
            .finish()
    }
}

impl Led {
    /// Applies the core's outputs: answers acks, keeps the proposal for the tick task. Returns
    /// whether the HW moved, so the caller wakes parked fetches once its locks are released.
    pub fn outputs_apply(&mut self, outputs: Vec<Output>) -> bool {
        let mut moved = false;
        for output in outputs {
            match output {
                Output::Ack { request, result } => {
                    let result = match result {
                        // Planted: a deposed leader tells its waiters their writes are stored.
                        Err(AckError::NotLeaderOrFollower)
                            if Bug::active(self.planted, Bug::StaleLeaderAcks) =>
                        {
                            Ok(())
                        }
                        result => result,
                    };
                    if let Some(sender) = self.acks.remove(&request) {
                        // The produce may have timed out and gone: nobody to tell.
                        let _ = sender.send(result);
                    }
                }
                Output::AlterPartition {
                    leader_epoch,
                    partition_epoch,
                    isr,
                } => {
                    self.proposal = Some(Proposal {
                        topic_id: self.topic_id,
                        partition: self.index,
                        leader_epoch,
                        partition_epoch,
                        isr: isr.into_iter().collect(),
                    });
                    self.proposal_made.notify_one();
                }
                Output::HighWatermark { .. } => moved = true,
            }
        }
        moved
    }

    /// Tells the core the log's end (read under the log lock). Appends other than produces
    /// (transaction markers) reach the core here. A log end that went back means this replica
    /// truncated as a follower (the image moved on before the shell did): the core is deposed.
    pub fn log_end_feed(&mut self, outputs: &mut Vec<Output>, log_end: i64) {
        if log_end < self.core.log_end() {
            self.core.depose(outputs);
            return;
        }
        if !self.core.is_deposed() {
            self.core.appended(outputs, log_end, None);
        }
    }

    /// Parks a write (an acks=all produce, a marker, a coordinator's record) until the HW
    /// reaches `end`; the request id names it to `ack_cancel`.
    pub fn ack_wait(&mut self, end: i64) -> (AckReceiver, RequestId) {
        let request = self.ack_next;
        self.ack_next += 1;
        let (sender, receiver) = oneshot::channel();
        let previous = self.acks.insert(request, sender);
        assert!(previous.is_none(), "request ids are unique per core");
        let mut outputs = Vec::new();
        self.core.wait(&mut outputs, request, end);
        self.outputs_apply(outputs);
        (receiver, request)
    }

    /// The parked acks=all produces (the shell's count and the core's).
    pub fn waiting(&self) -> (usize, usize) {
        (self.acks.len(), self.core.waiter_count())
    }

    /// A parked produce timed out: its waiter goes, so a stalled HW does not collect them.
    pub fn ack_cancel(&mut self, request: RequestId) {
        self.acks.remove(&request);
        self.core.wait_cancel(request);
    }

    /// Whether a produce may write here now: the core leads at the image's `leader_epoch`.
    /// Planted `stale-leader-acks`: the core is trusted over the image.
    pub fn writable(&self, leader_epoch: i32) -> bool {
        if Bug::active(self.planted, Bug::StaleLeaderAcks) {
            return true;
        }
        !self.core.is_deposed() && self.core.leader_epoch() == leader_epoch
    }
}

/// The broker's replicated partitions: which it leads, the tick task, request ids.
pub struct Replicas {
    node_id: i32,
    settings: ReplicaSettings,
    planted: Option<Bug>,
    clock: Clock,
    /// The core's time origin: it takes time as a `Duration`.
    start: runtime::time::Instant,
    state: Mutex<State>,
    /// Shared with every core's `Led`: a proposal was made.
    proposal_made: Arc<Notify>,
    /// Set once the broker is built: the tick task reaches the cluster handle through it.
    broker: OnceLock<Weak<Broker>>,
}

#[derive(Default)]
struct State {
    /// The partitions running a core, by (topic, index).
    led: BTreeMap<(String, i32), Arc<Partition>>,
    ticking: bool,
    /// The offset of the newest image applied: two reconciles racing (the loop and an admin
    /// call) must not apply an older image after a newer one.
    image_offset: u64,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Replicas")
            .field("led", &state.led.keys().collect::<Vec<_>>())
            .field("ticking", &state.ticking)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Replicas {
    pub fn new(
        node_id: i32,
        settings: ReplicaSettings,
        planted: Option<Bug>,
        clock: Clock,
    ) -> Self {
        Replicas {
            node_id,
            settings,
            planted,
            clock,
            start: clock.now(),
            state: Mutex::new(State::default()),
            proposal_made: Arc::new(Notify::new()),
            broker: OnceLock::new(),
        }
    }

    /// Gives the tick task its way to the broker (and the cluster handle).
    pub fn broker_set(&self, broker: Weak<Broker>) {
        let _ = self.broker.set(broker);
    }

    /// The core's clock.
    pub fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.start)
    }

    /// The number of partitions running a core here.
    pub fn led_count(&self) -> usize {
        lock(&self.state).led.len()
    }

    /// Brings the cores in line with `image` (after each reconcile, which opened the logs):
    /// a partition with several replicas led here gets a core (a new one at a new leader
    /// epoch), an existing one learns the committed ISR, and one no longer led here is
    /// deposed (its waiters fail) and dropped.
    ///
    /// `partition_of(name, index, topic_id)` is the local partition, if this node hosts it
    /// under that topic id (a reconcile that failed may have left an older topic's logs).
    pub fn roles_apply(
        &self,
        image: &MetadataImage,
        partition_of: impl Fn(&str, i32, TopicId) -> Option<Arc<Partition>>,
    ) {
        let mut state = lock(&self.state);
        if image.offset() < state.image_offset {
            return;
        }
        state.image_offset = image.offset();
        let mut still: BTreeMap<(String, i32), Arc<Partition>> = BTreeMap::new();
        // The image holds an internal topic only when it replicates it (a `__consumer_offsets`
        // of several voters: `cluster_mode::node_local`); its partitions get cores too.
        for topic in image.topics() {
            let configs = image
                .topic(topic.topic_id)
                .map(|topic| topic.configs.clone())
                .unwrap_or_default();
            let config = self.config(&configs);
            for (partition_image, index) in topic.partitions.iter().zip(0..) {
                let replicated = partition_image.replicas.len() > 1;
                if !replicated || partition_image.leader() != Some(self.node_id) {
                    continue;
                }
                let Some(partition) = partition_of(topic.name, index, topic.topic_id) else {
                    continue;
                };
                let key = (topic.name.to_string(), index);
                if let Some(previous) = state.led.get(&key) {
                    if !Arc::ptr_eq(previous, &partition) {
                        // The topic was deleted and created again under the same name.
                        depose(previous);
                    }
                }
                self.lead(&partition, topic.topic_id, partition_image, config);
                still.insert(key, partition);
            }
        }
        for (key, partition) in std::mem::take(&mut state.led) {
            if !still.contains_key(&key) {
                depose(&partition);
            }
        }
        state.led = still;
        if !state.led.is_empty() && !state.ticking {
            if let Some(broker) = self.broker.get() {
                state.ticking = true;
                let wake = self.proposal_made.clone();
                let timing = (self.clock, self.tick_interval());
                runtime::spawn(tick_run(broker.clone(), wake, timing));
            }
        }
    }

    fn config(&self, configs: &BTreeMap<String, String>) -> ReplicaConfig {
        let min_insync = cluster::topic_config::topic_config_value(configs, "min.insync.replicas")
            .and_then(|(value, _)| value.parse::<usize>().ok())
            .unwrap_or(1);
        ReplicaConfig {
            lag_time_max: self.settings.lag_time_max,
            min_insync,
        }
    }

    /// Kafka checks for lagging followers every half `replica.lag.time.max.ms`; a quarter here,
    /// since the tick also sends ISR expansions.
    fn tick_interval(&self) -> Duration {
        (self.settings.lag_time_max / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// This node leads `partition` at the image's state.
    fn lead(
        &self,
        partition: &Arc<Partition>,
        topic_id: TopicId,
        image: &PartitionImage,
        config: ReplicaConfig,
    ) {
        let state = PartitionState {
            leader: image.leader,
            leader_epoch: image.leader_epoch,
            replicas: image.replicas.clone(),
            isr: image.isr.iter().copied().collect::<BTreeSet<_>>(),
            partition_epoch: image.partition_epoch,
        };
        let mut outputs = Vec::new();
        let moved = {
            let log = partition.log();
            let mut replica = partition.replica();
            let newer = replica
                .as_ref()
                .is_some_and(|led| led.core.leader_epoch() > state.leader_epoch);
            assert!(
                !newer,
                "images apply in order, so leader epochs never go back"
            );
            let same = replica.as_ref().is_some_and(|led| {
                led.core.leader_epoch() == state.leader_epoch && !led.core.is_deposed()
            });
            if same {
                let led = replica.as_mut().expect("checked");
                led.core.config_set(config);
                led.core.partition_state(&mut outputs, state);
                led.outputs_apply(outputs)
            } else {
                if let Some(mut old) = replica.take() {
                    old.core.depose(&mut outputs);
                    old.outputs_apply(std::mem::take(&mut outputs));
                }
                // The published durable offset, never past what the log holds now.
                let durable_end = partition
                    .durable()
                    .offset_end
                    .min(log.recovery_point())
                    .min(log.log_end_offset());
                let ends = (
                    log.log_end_offset(),
                    durable_end,
                    partition.follower_high_watermark(),
                );
                tracing::info!(
                    node = self.node_id, topic = %partition.topic, partition = partition.index,
                    leader_epoch = state.leader_epoch, log_end = ends.0, durable_end,
                    high_watermark = ends.2, "leading a replicated partition"
                );
                let core = Leader::new(
                    self.node_id,
                    state,
                    ends,
                    self.now(),
                    config,
                    ReplicaBug::of(self.planted),
                );
                *replica = Some(Led {
                    core,
                    topic_id,
                    index: partition.index,
                    acks: BTreeMap::new(),
                    ack_next: 0,
                    proposal: None,
                    proposal_made: self.proposal_made.clone(),
                    planted: self.planted,
                });
                false
            }
        };
        if moved {
            partition.readers_wake();
        }
    }
}

/// The local partition `name`-`index` if this node hosts it under `topic_id` (a reconcile
/// that failed to remove an older topic of the same name leaves that topic's logs; they must
/// not be led as the new topic's). `roles_apply`'s lookup, under the topics lock.
pub fn partition_hosted(
    topics: &crate::topics::Topics,
    name: &str,
    index: i32,
    topic_id: TopicId,
) -> Option<Arc<Partition>> {
    let id = crate::cluster_mode::topic_id_bytes(topic_id);
    topics.get(name).filter(|local| local.topic_id == id)?;
    topics.partition(name, index)
}

/// Leadership of `partition` ended: its waiters fail and the core goes.
fn depose(partition: &Partition) {
    let old = partition.replica().take();
    if let Some(mut old) = old {
        tracing::info!(
            topic = %partition.topic, partition = partition.index,
            leader_epoch = old.core.leader_epoch(), "no longer leading"
        );
        let mut outputs = Vec::new();
        old.core.depose(&mut outputs);
        old.outputs_apply(outputs);
    }
}

/// While some replicated partition is led here: ticks every core (lagging followers) and sends
/// the proposals the cores made, every `interval` or at once when a proposal is made. Ends when
/// none is led, or the broker is gone.
async fn tick_run(
    broker: Weak<Broker>,
    proposal_made: Arc<Notify>,
    (clock, interval): (Clock, Duration),
) {
    let mut tick_at = clock.now() + interval;
    loop {
        // Only the timed pass ticks the cores: a proposal the controller refused is made again
        // at the next tick, not in a loop of refusals.
        let timed = runtime::select! {
            biased;
            () = proposal_made.notified() => false,
            () = runtime::time::sleep_until(tick_at) => true,
        };
        if timed {
            tick_at = clock.now() + interval;
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let replicas = broker.replicas();
        let partitions: Vec<Arc<Partition>> = {
            let mut state = lock(&replicas.state);
            if state.led.is_empty() {
                state.ticking = false;
                return;
            }
            state.led.values().cloned().collect()
        };
        let now = replicas.now();
        for partition in partitions {
            let (moved, proposal) = {
                let mut replica = partition.replica();
                let Some(led) = replica.as_mut() else {
                    continue;
                };
                let mut outputs = Vec::new();
                if timed {
                    led.core.tick(&mut outputs, now);
                }
                (led.outputs_apply(outputs), led.proposal.take())
            };
            if moved {
                partition.readers_wake();
            }
            if let Some(proposal) = proposal {
                alter_partition_send(&broker, &partition, proposal).await;
            }
        }
    }
}

/// Sends one proposal and feeds the answer to the core that made it (if it still leads at
/// that epoch). A refusal or a timeout lets the core propose again at its next tick.
async fn alter_partition_send(broker: &Arc<Broker>, partition: &Partition, proposal: Proposal) {
    let Some(answer) = alter_partition_call(broker, &proposal).await else {
        return;
    };
    let moved = {
        let mut replica = partition.replica();
        let Some(led) = replica.as_mut() else {
            return;
        };
        if led.core.leader_epoch() != proposal.leader_epoch {
            return;
        }
        let answer = answer.map(|image| PartitionState {
            leader: image.leader,
            leader_epoch: image.leader_epoch,
            replicas: image.replicas,
            isr: image.isr.into_iter().collect(),
            partition_epoch: image.partition_epoch,
        });
        let mut outputs = Vec::new();
        led.core.alter_partition_answered(&mut outputs, answer);
        led.outputs_apply(outputs)
    };
    if moved {
        partition.readers_wake();
    }
}

/// The controller call: `None` only when there is no answer to apply (the core keeps the
/// proposal pending and the next tick re-proposes). A refusal (a stale leader or partition
/// epoch, a fenced member) or a timeout answers `Err`; the image then brings the state, and a
/// call that timed out but committed is met by INVALID_UPDATE_VERSION on its re-proposal.
async fn alter_partition_call(
    broker: &Arc<Broker>,
    proposal: &Proposal,
) -> Option<Result<PartitionImage, ()>> {
    let answer = broker
        .cluster()
        .alter_partition(
            proposal.topic_id,
            proposal.partition,
            proposal.leader_epoch,
            proposal.partition_epoch,
            proposal.isr.clone(),
        )
        .await;
    Some(answer.map_err(|error| {
        tracing::info!(
            site = "alter-partition-refused",
            topic_id = ?proposal.topic_id, partition = proposal.partition,
            leader_epoch = proposal.leader_epoch, partition_epoch = proposal.partition_epoch,
            isr = ?proposal.isr, %error, "AlterPartition not applied"
        );
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::Topics;
    use cluster::records::{MetadataRecord, PartitionChange, PartitionRecord};
    use runtime::Disk;

    const A: TopicId = TopicId(0xa);
    const A_NEW: TopicId = TopicId(0xa2);

    fn settings() -> ReplicaSettings {
        ReplicaSettings::kafka_defaults()
    }

    /// Brokers 1-3; topic `a` (id `topic_id`): a-0 on [1, 2, 3] led by 1, a-1 on [1] alone.
    fn image_with(topic_id: TopicId) -> MetadataImage {
        let mut records = crate::cluster_mode::testing::brokers_live(3);
        records.push(MetadataRecord::Topic {
            name: "a".into(),
            topic_id,
        });
        for (partition, replicas) in [(0, vec![1, 2, 3]), (1, vec![1])] {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }));
        }
        let mut image = MetadataImage::new();
        image.apply_batch(1, &records);
        image
    }

    fn change(image: &mut MetadataImage, offset: u64, record: PartitionChange) {
        image.apply_batch(offset, &[MetadataRecord::PartitionChange(record)]);
    }

    fn lookup(topics: &Topics) -> impl Fn(&str, i32, TopicId) -> Option<Arc<Partition>> + '_ {
        move |name, index, topic_id| partition_hosted(topics, name, index, topic_id)
    }

    fn led(topics: &Topics, index: i32) -> Option<(i32, Vec<i32>)> {
        let partition = topics.partition("a", index)?;
        let replica = partition.replica();
        let led = replica.as_ref()?;
        Some((
            led.core.leader_epoch(),
            led.core.isr().iter().copied().collect(),
        ))
    }

    #[tokio::test]
    async fn roles_follow_the_image_and_a_lost_leadership_fails_its_waiters() {
        let disk: Arc<dyn Disk> = runtime::MemDisk::new();
        let mut topics = Topics::open(disk, "data".into(), 0, None).unwrap();
        let mut image = image_with(A);
        crate::cluster_mode::reconcile(
            &mut topics,
            &image,
            1,
            0,
            crate::cluster_mode::Placement::Local,
        )
        .unwrap();
        let replicas = Replicas::new(1, settings(), None, Clock::system());
        replicas.roles_apply(&image, lookup(&topics));
        assert_eq!(
            led(&topics, 0),
            Some((0, vec![1, 2, 3])),
            "RF 3 led here: a core"
        );
        assert_eq!(led(&topics, 1), None, "RF 1: no core, today's path");
        assert_eq!(replicas.led_count(), 1);

        // The controller drops 3 from the ISR: the same core learns it.
        let shrink = PartitionChange {
            topic_id: A,
            partition: 0,
            leader: None,
            isr: Some(vec![1, 2]),
        };
        change(&mut image, 2, shrink);
        replicas.roles_apply(&image, lookup(&topics));
        assert_eq!(led(&topics, 0), Some((0, vec![1, 2])));

        // A produce parks; then leadership moves to 2: the waiter fails, the core goes.
        let partition = topics.partition("a", 0).unwrap();
        let mut receiver = {
            let mut replica = partition.replica();
            let led = replica.as_mut().unwrap();
            let mut outputs = Vec::new();
            led.log_end_feed(&mut outputs, 0);
            let (receiver, _) = led.ack_wait(0);
            receiver
        };
        assert!(
            receiver.try_recv().is_ok_and(|ack| ack.is_ok()),
            "end 0 is covered at once"
        );
        let batch = wire::batch::build::batch_encode(
            &[wire::batch::build::RecordSpec::default()],
            kafka_protocol::records::Compression::None,
        );
        let receiver = {
            let mut log = partition.log();
            log.produce(vec![batch], 0, 0).unwrap();
            let end = log.log_end_offset();
            let mut replica = partition.replica();
            let led = replica.as_mut().unwrap();
            let mut outputs = Vec::new();
            led.log_end_feed(&mut outputs, end);
            led.ack_wait(end).0
        };
        let moved = PartitionChange {
            topic_id: A,
            partition: 0,
            leader: Some(2),
            isr: None,
        };
        change(&mut image, 3, moved);
        replicas.roles_apply(&image, lookup(&topics));
        assert_eq!(led(&topics, 0), None, "no core on a follower");
        assert_eq!(replicas.led_count(), 0);
        let answer = receiver.await.unwrap();
        assert_eq!(answer, Err(AckError::NotLeaderOrFollower));

        // Back to 1 at a new leader epoch: a new core.
        let back = PartitionChange {
            topic_id: A,
            partition: 0,
            leader: Some(1),
            isr: None,
        };
        change(&mut image, 4, back);
        replicas.roles_apply(&image, lookup(&topics));
        assert_eq!(led(&topics, 0), Some((2, vec![1, 2])));

        // An older image (a racing reconcile) changes nothing.
        replicas.roles_apply(&image_with(A), lookup(&topics));
        assert_eq!(led(&topics, 0), Some((2, vec![1, 2])));
    }

    #[tokio::test]
    async fn an_older_topics_logs_are_never_led_as_the_new_topics() {
        let disk: Arc<dyn Disk> = runtime::MemDisk::new();
        let mut topics = Topics::open(disk, "data".into(), 0, None).unwrap();
        let image = image_with(A);
        crate::cluster_mode::reconcile(
            &mut topics,
            &image,
            1,
            0,
            crate::cluster_mode::Placement::Local,
        )
        .unwrap();
        let replicas = Replicas::new(1, settings(), None, Clock::system());
        replicas.roles_apply(&image, lookup(&topics));
        assert!(led(&topics, 0).is_some());
        // `a` deleted and created again under a new id, but the reconcile that would have
        // removed the old logs failed: they are still there, under the old id.
        replicas.roles_apply(&image_with(A_NEW), lookup(&topics));
        assert_eq!(led(&topics, 0), None, "the old topic's log is not led");
        assert_eq!(replicas.led_count(), 0);
    }
}
