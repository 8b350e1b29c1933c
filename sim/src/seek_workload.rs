//! Consumers that move: tail readers and seekers (issue 10 §3). Both read every partition of the
//! topic with a manually assigned `client::Consumer`, and record every lookup and seek so the
//! checker can hold the broker to its answers (`checker` `lookups` and `polls` checks).
//!
//! - A tail reader looks up each partition's end (ListOffsets latest), seeks there and polls with
//!   a long max wait, so the broker parks its fetch and must wake it when a produce becomes
//!   readable: it reads every record the moment the broker lets it. After a failed poll it seeks
//!   to the end again.
//! - A seeker polls a little, then moves one partition: to the earliest or latest offset, to the
//!   first offset at or after a timestamp (one it read, one near it, or any in the run), or to an
//!   arbitrary offset (one it read, any up to a little past the end, or past the end on purpose,
//!   which the next poll must refuse with OFFSET_OUT_OF_RANGE).
//!
//! Every lookup is an `Op::ListOffsets` with its answer and every move an `Op::Seek` with the
//! offset, so the first record read after each is checked against what was acknowledged.

use crate::options::Options;
use crate::recorder::Recorder;
use crate::workload::{
    client_config, consumer_config, partitions_all, poll_complete, positions_earliest,
    process_index,
};
use checker::{EventKind, OffsetQuery, Op, Partition};
use client::ClientConfig;
use rand::Rng;
use runtime::rng::{stream_rng, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Process ids: tail readers 200.., seekers 300.. (producers 1.., consumers 100..).
const TAIL_PROCESS_BASE: u64 = 200;
const SEEKER_PROCESS_BASE: u64 = 300;
/// How long a seeker's poll waits for data.
const SEEKER_POLL_WAIT: Duration = Duration::from_millis(100);
/// Pause after a failed operation, so a down broker is not hammered.
const BACKOFF: Duration = Duration::from_millis(100);

/// Starts the tail readers and seekers `options` asks for, each on its own client node (added
/// to `clients`, which the cluster world's nemesis cuts off from a leader).
pub fn start(
    options: &Options,
    bootstrap: &[String],
    recorder: &Recorder,
    stop: &Arc<AtomicBool>,
    (workers, clients): (
        &mut Vec<runtime::JoinHandle<()>>,
        &mut Vec<madsim::task::NodeId>,
    ),
) {
    let handle = madsim::runtime::Handle::current();
    // The cluster world's admin clients and probes use 10.0.4-7.
    let (tail_subnet, seeker_subnet) = match options.cluster {
        Some(_) => (10, 11),
        None => (5, 6),
    };
    let kinds = [
        (
            options.tail_reader_count,
            TAIL_PROCESS_BASE,
            "tail",
            tail_subnet,
        ),
        (
            options.seeker_count,
            SEEKER_PROCESS_BASE,
            "seeker",
            seeker_subnet,
        ),
    ];
    for (count, base, name, subnet) in kinds {
        for index in 0..count {
            let process = base + index as u64;
            let node = handle
                .create_node()
                .name(format!("{name}-{process}"))
                .ip(format!("10.0.{subnet}.{}", index + 1).parse().expect("ip"))
                .build();
            clients.push(node.id());
            let mover = Mover::new(process, options, bootstrap, recorder);
            let stop = stop.clone();
            let worker = if base == TAIL_PROCESS_BASE {
                node.spawn(async move { mover.tail_run(stop).await })
            } else {
                node.spawn(async move { mover.seeker_run(stop).await })
            };
            workers.push(worker);
        }
    }
}

/// One moving consumer: its client, what it has read, and its recorder.
struct Mover {
    process: u64,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    partitions: Vec<Partition>,
    /// Per partition, offsets and timestamps of records this consumer has read (targets).
    read: BTreeMap<Partition, Vec<(i64, i64)>>,
    /// Per partition, the largest end offset a lookup answered.
    ends: BTreeMap<Partition, i64>,
}

impl Mover {
    fn new(process: u64, options: &Options, bootstrap: &[String], recorder: &Recorder) -> Mover {
        Mover {
            process,
            options: options.clone(),
            config: client_config(options, bootstrap),
            recorder: recorder.clone(),
            partitions: partitions_all(options),
            read: BTreeMap::new(),
            ends: BTreeMap::new(),
        }
    }

    fn deadline(&self) -> Duration {
        self.options.request_timeout * 2
    }

    /// Assigns every partition from its start (recorded); `None` if the broker never answers
    /// before `stop`.
    async fn assign(&self, stop: &AtomicBool) -> Option<client::Consumer> {
        let mut consumer = client::Consumer::new(self.config.clone(), consumer_config());
        let assign = Op::Assign {
            partitions: self.partitions.clone(),
            seek_to_beginning: true,
        };
        let positions = positions_earliest(&self.partitions);
        while !stop.load(Ordering::SeqCst) {
            self.recorder
                .event(self.process, EventKind::Invoke, assign.clone());
            let outcome =
                runtime::time::timeout(self.deadline(), consumer.assign(positions.clone()));
            match outcome.await {
                Ok(Ok(())) => {
                    self.recorder.event(self.process, EventKind::Ok, assign);
                    return Some(consumer);
                }
                Ok(Err(_)) => self
                    .recorder
                    .event(self.process, EventKind::Fail, assign.clone()),
                Err(_) => self
                    .recorder
                    .event(self.process, EventKind::Info, assign.clone()),
            }
            runtime::time::sleep(BACKOFF).await;
        }
        None
    }

    /// One recorded poll; remembers what it read. `true` if it returned normally.
    async fn poll(&mut self, consumer: &mut client::Consumer, wait: Duration) -> bool {
        self.recorder
            .event(self.process, EventKind::Invoke, Op::poll(false));
        let outcome = runtime::time::timeout(self.deadline() + wait, consumer.poll(wait)).await;
        if let Ok(Ok(records)) = &outcome {
            for record in records {
                let partition = Partition::new(&record.topic, record.partition);
                self.read
                    .entry(partition)
                    .or_default()
                    .push((record.offset, record.timestamp));
            }
        }
        let kind = poll_complete(self.process, &self.recorder, false, outcome);
        if kind != EventKind::Ok {
            runtime::time::sleep(BACKOFF).await;
        }
        kind == EventKind::Ok
    }

    /// A recorded ListOffsets: the offset answered (-1: none found), or `None` on an error.
    async fn lookup(
        &mut self,
        consumer: &mut client::Consumer,
        partition: &Partition,
        query: OffsetQuery,
    ) -> Option<i64> {
        let op = |offset, timestamp, leader_epoch| Op::ListOffsets {
            partition: partition.clone(),
            query,
            offset,
            timestamp,
            leader_epoch,
        };
        self.recorder
            .event(self.process, EventKind::Invoke, op(None, None, None));
        let asked = client::TopicPartition::new(&partition.topic, partition.partition);
        let timestamp = match query {
            OffsetQuery::Earliest => -2,
            OffsetQuery::Latest => -1,
            OffsetQuery::Timestamp(timestamp) => timestamp,
        };
        let outcome =
            runtime::time::timeout(self.deadline(), consumer.list_offsets(&asked, timestamp)).await;
        match outcome {
            Ok(Ok(listed)) => {
                let answer = op(
                    Some(listed.offset),
                    Some(listed.timestamp),
                    Some(listed.leader_epoch),
                );
                self.recorder.event(self.process, EventKind::Ok, answer);
                if query == OffsetQuery::Latest {
                    let end = self.ends.entry(partition.clone()).or_default();
                    *end = (*end).max(listed.offset);
                }
                Some(listed.offset)
            }
            Ok(Err(_)) => {
                self.recorder
                    .event(self.process, EventKind::Fail, op(None, None, None));
                None
            }
            Err(_) => {
                self.recorder
                    .event(self.process, EventKind::Info, op(None, None, None));
                None
            }
        }
    }

    /// A recorded seek of one partition to `offset` (local to the client: it cannot fail).
    async fn seek(&self, consumer: &mut client::Consumer, partition: &Partition, offset: i64) {
        let op = Op::Seek {
            offsets: BTreeMap::from([(partition.clone(), offset)]),
        };
        self.recorder
            .event(self.process, EventKind::Invoke, op.clone());
        let asked = client::TopicPartition::new(&partition.topic, partition.partition);
        let kind = match consumer.seek(&asked, client::Offset::At(offset)).await {
            Ok(()) => EventKind::Ok,
            Err(_) => EventKind::Fail,
        };
        self.recorder.event(self.process, kind, op);
    }

    /// Looks a partition up and seeks to the answer, if there is one.
    async fn lookup_and_seek(
        &mut self,
        consumer: &mut client::Consumer,
        partition: &Partition,
        query: OffsetQuery,
    ) -> bool {
        match self.lookup(consumer, partition, query).await {
            Some(offset) if offset >= 0 => {
                self.seek(consumer, partition, offset).await;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    async fn tail_run(mut self, stop: Arc<AtomicBool>) {
        let Some(mut consumer) = self.assign(&stop).await else {
            return;
        };
        let wait = self.options.tail_poll_wait;
        let mut at_end = false;
        while !stop.load(Ordering::SeqCst) {
            if !at_end {
                at_end = true;
                for partition in self.partitions.clone() {
                    let query = OffsetQuery::Latest;
                    at_end &= self.lookup_and_seek(&mut consumer, &partition, query).await;
                }
                if !at_end {
                    runtime::time::sleep(BACKOFF).await;
                    continue;
                }
            }
            at_end = self.poll(&mut consumer, wait).await;
        }
    }

    async fn seeker_run(mut self, stop: Arc<AtomicBool>) {
        let mut rng = stream_rng(
            self.options.seed,
            Stream::Workload,
            process_index(self.process),
        );
        let Some(mut consumer) = self.assign(&stop).await else {
            return;
        };
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..rng.gen_range(1..=4) {
                if !self.poll(&mut consumer, SEEKER_POLL_WAIT).await {
                    break;
                }
            }
            let partition = self.partitions[rng.gen_range(0..self.partitions.len())].clone();
            match rng.gen_range(0..4) {
                0 => {
                    let query = OffsetQuery::Earliest;
                    self.lookup_and_seek(&mut consumer, &partition, query).await;
                }
                1 => {
                    let query = OffsetQuery::Latest;
                    self.lookup_and_seek(&mut consumer, &partition, query).await;
                }
                2 => {
                    let query = OffsetQuery::Timestamp(self.timestamp_pick(&mut rng, &partition));
                    self.lookup_and_seek(&mut consumer, &partition, query).await;
                }
                _ => {
                    let offset = self.offset_pick(&mut rng, &partition);
                    self.seek(&mut consumer, &partition, offset).await;
                }
            }
        }
    }

    /// A timestamp to look up: one read here (exactly, or a millisecond either side), a time in
    /// the run so far, or one in the future (no record has it).
    fn timestamp_pick(&self, rng: &mut impl Rng, partition: &Partition) -> i64 {
        let now = self.config.clock.wall_ms();
        let read = self.read.get(partition).filter(|read| !read.is_empty());
        match (rng.gen_range(0..4), read) {
            (0 | 1, Some(read)) => read[rng.gen_range(0..read.len())].1 + rng.gen_range(-1..=1),
            (2, _) => now + rng.gen_range(1_000..10_000),
            _ => {
                let run_ms = self.recorder.elapsed().as_millis() as i64;
                now - rng.gen_range(0..=run_ms.max(1))
            }
        }
    }

    /// An offset to seek to: one read here, any up to a little past the known end, or past it
    /// on purpose.
    fn offset_pick(&self, rng: &mut impl Rng, partition: &Partition) -> i64 {
        let read = self.read.get(partition).filter(|read| !read.is_empty());
        let read_max = read.map_or(0, |read| read.iter().map(|r| r.0).max().unwrap_or(0));
        let end = self.ends.get(partition).copied().unwrap_or(0).max(read_max);
        match (rng.gen_range(0..4), read) {
            (0 | 1, Some(read)) => read[rng.gen_range(0..read.len())].0,
            (3, _) => end + rng.gen_range(5..50),
            _ => rng.gen_range(0..=end + 2),
        }
    }
}
