//! Fetch: read whole batches below the high watermark, long-polling until `min_bytes` are
//! available or `max_wait_ms` passes.
//!
//! isolation_level 1 (read_committed) reads only below the last stable offset (LSO: below it
//! every transaction is decided) and lists the aborted transactions overlapping the batches
//! returned, whose records the client drops. **Invariant:** no read_committed fetch returns a
//! record at or above the LSO. Markers are appends, so the LSO only moves when the durable
//! offset does (or the log start moves): the same watch wakes parked read_committed fetches.
//!
//! A parked fetch waits on the durable-offset watch of each partition it asked for, so it wakes
//! only when one of them may have become readable (its high watermark advanced, its log start
//! moved, or it went offline), never for traffic on other partitions. Each wake re-reads every
//! requested partition, so `min_bytes` accumulates across partitions until it is met or the
//! wait ends.
//!
//! Leader epochs: `current_leader_epoch` (v9+) is checked as Kafka does (FENCED_LEADER_EPOCH
//! when the fetcher's is older than the leader's, UNKNOWN_LEADER_EPOCH when newer); and when a
//! fetcher names the epoch of the last batch it holds (`last_fetched_epoch`, v12+), its history
//! must agree with ours up to its fetch offset: if our end offset for that epoch
//! (`leader_epoch::end_offset_for`) is below the fetch offset, or our epoch at or below it is
//! older, the answer is `diverging_epoch` {epoch, end offset} and no records, and the follower
//! truncates there (Kafka's `Partition.readRecords`, KIP-279). Such an answer, like an error,
//! is sent at once.
//!
//! Followers (`replica_id >= 0`) of a replicated partition led here (`replica::shell`): after
//! the divergence check (so a diverging follower never meets the core's refusal of an offset
//! past the log end), the leader core hears the fetch once, on arrival (`Leader::fetched`: the
//! fetch offset is the follower's fsynced end), and the follower reads up to the log end, not
//! the HW (its fsync then overlaps the leader's); its answer's `high_watermark` is the core's.
//! Appends wake parked follower fetches. Consumers read below the core's HW, woken when it
//! moves. A fetch naming a replica id on a partition with one replica is served as a
//! consumer's, as before replication. `replica_id` -2 (Kafka's debugging consumer) is served by
//! any replica of the partition, leader or not, up to its own HW (`Partition::
//! high_watermark_own`): how the simulator compares replicas.
//!
//! Limits follow KIP-74: `partition_max_bytes` per partition and `max_bytes` per response, except
//! that the first batch of the first non-empty partition is always returned whole, so a batch
//! larger than the limits can never wedge a consumer. Stored bytes go out as read (one copy, from
//! the page cache into the response), CRC-checked by the log on the way.

use crate::broker::Broker;
use crate::handlers::errors::{log_error_code, NONE};
use crate::handlers::{Reply, ResponseFuture};
use crate::leader_epoch;
use crate::partition::Durable;
use crate::planted::Bug;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use runtime::sync::watch;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use wire::ResponseKind;

/// Kafka's debugging consumer: served by any replica, up to that replica's own HW.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// A client may ask to wait longer; we cap it so a connection's slot is not held for minutes.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

pub fn handle(broker: &Arc<Broker>, request: FetchRequest, _version: i16) -> Reply {
    let broker = broker.clone();
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let first = fetch_once(&broker, &request, Pass::Arrival);
    if first.ready(&request) || wait.is_zero() {
        return Reply::Now(Box::new(first.into_response()));
    }
    Reply::Later(long_poll(broker, request, wait))
}

fn long_poll(broker: Arc<Broker>, request: FetchRequest, wait: Duration) -> ResponseFuture {
    Box::pin(async move {
        let deadline = broker.clock.now() + wait;
        let mut watches = partitions_watch(&broker, &request);
        let mut pass = Pass::Parked;
        loop {
            // Mark every watch seen before reading, so a change after the read wakes us.
            for watch in &mut watches {
                watch.borrow_and_update();
            }
            let result = fetch_once(&broker, &request, pass);
            if result.ready(&request) || broker.clock.now() >= deadline {
                return result.into_response();
            }
            pass = Pass::Woken;
            runtime::select! {
                biased;
                () = changed_any(&mut watches) => {}
                () = runtime::time::sleep_until(deadline) => {}
            }
        }
    })
}

/// The durable-offset watches of the requested partitions this broker hosts. Unknown partitions
/// answer with an error at once, so they never reach a long poll.
fn partitions_watch(broker: &Arc<Broker>, request: &FetchRequest) -> Vec<watch::Receiver<Durable>> {
    let topics = broker.topics();
    request
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(move |fetch| (topic.topic.0.as_str(), fetch.partition))
        })
        .filter_map(|(topic, index)| topics.partition(topic, index))
        .map(|partition| partition.durable_watch())
        .collect()
}

/// Resolves when any watch sees a change. A watch whose partition is gone (sender dropped) is
/// removed, so it cannot wake us in a loop; with no watches left this waits for the deadline.
async fn changed_any(watches: &mut Vec<watch::Receiver<Durable>>) {
    if watches.is_empty() {
        return std::future::pending().await;
    }
    let (index, closed) = {
        let mut changes: Vec<_> = watches
            .iter_mut()
            .map(|watch| Box::pin(watch.changed()))
            .collect();
        std::future::poll_fn(|context| {
            for (index, change) in changes.iter_mut().enumerate() {
                if let Poll::Ready(result) = change.as_mut().poll(context) {
                    return Poll::Ready((index, result.is_err()));
                }
            }
            Poll::Pending
        })
        .await
    };
    if closed {
        watches.swap_remove(index);
    }
}

struct FetchResult {
    topics: Vec<FetchableTopicResponse>,
    bytes: usize,
    /// Some partition answered with an error or a diverging epoch: answer now.
    urgent: bool,
}

impl FetchResult {
    fn ready(&self, request: &FetchRequest) -> bool {
        self.urgent || self.bytes >= usize::try_from(request.min_bytes).unwrap_or(0).max(1)
    }

    fn into_response(self) -> ResponseKind {
        ResponseKind::Fetch(
            FetchResponse::default()
                .with_error_code(NONE)
                .with_responses(self.topics),
        )
    }
}

/// Which read of a request this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// The first, as the request arrives: a follower's fetch offset reaches the leader core.
    Arrival,
    /// The first read of a long poll, before any wake.
    Parked,
    /// After a parked fetch's wake (a planted bug reads differently then).
    Woken,
}

/// One read of every requested partition.
fn fetch_once(broker: &Arc<Broker>, request: &FetchRequest, pass: Pass) -> FetchResult {
    let mut result = FetchResult {
        topics: Vec::with_capacity(request.topics.len()),
        bytes: 0,
        urgent: false,
    };
    let response_bytes_max = usize::try_from(request.max_bytes).unwrap_or(0);
    let read_committed = request.isolation_level == 1;
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for fetch in &topic.partitions {
            let remaining = response_bytes_max.saturating_sub(result.bytes);
            let read = PartitionRead {
                response_bytes_remaining: remaining,
                response_empty: result.bytes == 0,
                pass,
                read_committed,
                replica_id: request.replica_id.0,
            };
            let data = partition_read(broker, &topic.topic, fetch, &read);
            result.urgent |= data.error_code != NONE || data.diverging_epoch.epoch >= 0;
            result.bytes += data.records.as_ref().map_or(0, Bytes::len);
            partitions.push(data);
        }
        result.topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    result
}

/// How one partition is to be read within a response.
struct PartitionRead {
    response_bytes_remaining: usize,
    response_empty: bool,
    pass: Pass,
    read_committed: bool,
    /// A follower's broker id, or -1 for a consumer.
    replica_id: i32,
}

fn partition_read(
    broker: &Arc<Broker>,
    topic: &TopicName,
    fetch: &FetchPartition,
    read: &PartitionRead,
) -> PartitionData {
    let PartitionRead {
        response_bytes_remaining,
        response_empty,
        pass,
        read_committed,
        replica_id,
    } = *read;
    let data = PartitionData::default()
        .with_partition_index(fetch.partition)
        .with_preferred_read_replica((-1).into())
        .with_aborted_transactions(read_committed.then(Vec::new));
    let access = crate::cluster_mode::Access::Read;
    let current = leader_epoch::from_wire(fetch.current_leader_epoch);
    let debugging = replica_id == DEBUGGING_REPLICA_ID;
    let served = match debugging {
        true => broker.partition_local(topic.0.as_str(), fetch.partition, current),
        false => broker.partition_served(topic.0.as_str(), fetch.partition, access, current),
    };
    let (partition, leader_epoch, replicated) = match served {
        Ok(served) => (served.partition, served.leader_epoch, served.replicated),
        Err(error) => return data.with_error_code(error.code()).with_high_watermark(-1),
    };
    let follower = (replicated && replica_id >= 0).then_some(replica_id);
    let mut high_watermark = match debugging {
        true => partition.high_watermark_own(replicated),
        false => partition.high_watermark(),
    };
    let log = partition.log();
    if pass == Pass::Woken && Bug::active(partition.planted(), Bug::LongPollServesLogEnd) {
        high_watermark = log.log_end_offset();
    }
    let last_stable_offset = log.last_stable_offset(high_watermark);
    let data = data
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(last_stable_offset)
        .with_log_start_offset(log.log_start_offset());
    if let Some(last_fetched_epoch) = leader_epoch::from_wire(fetch.last_fetched_epoch) {
        match divergence(&log, fetch, last_fetched_epoch, leader_epoch) {
            Ok(None) => {}
            Ok(Some(diverging)) => {
                return data
                    .with_error_code(NONE)
                    .with_records(Some(Bytes::new()))
                    .with_diverging_epoch(diverging)
            }
            Err(error) => {
                return data
                    .with_error_code(error.code())
                    .with_records(Some(Bytes::new()))
            }
        }
    }
    let (data, limit) = match follower {
        Some(follower) => {
            let arrival = (pass == Pass::Arrival).then(|| broker.replicas().now());
            let fetched = follower_fetched(&partition, &log, follower, fetch.fetch_offset, arrival);
            match fetched {
                Ok(high_watermark) => {
                    let data = data
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(log.last_stable_offset(high_watermark));
                    (data, log.log_end_offset())
                }
                Err(error) => {
                    return data
                        .with_error_code(error.code())
                        .with_records(Some(Bytes::new()))
                }
            }
        }
        None if read_committed => (data, last_stable_offset),
        None => (data, high_watermark),
    };
    let partition_bytes_max = usize::try_from(fetch.partition_max_bytes).unwrap_or(0);
    let bytes_max = partition_bytes_max.min(response_bytes_remaining);
    if bytes_max == 0 && !response_empty {
        return data.with_error_code(NONE).with_records(Some(Bytes::new()));
    }
    match log.read(fetch.fetch_offset, bytes_max, limit) {
        // Only the response's first partition may exceed the limits (KIP-74).
        Ok(read) if read.bytes.len() > bytes_max && !response_empty => {
            data.with_error_code(NONE).with_records(Some(Bytes::new()))
        }
        Ok(read) if read_committed => {
            assert!(
                read.batch_count == 0 || read.next_offset <= last_stable_offset,
                "a read_committed fetch never returns a record at or above the LSO"
            );
            let aborted = log
                .aborted_transactions(fetch.fetch_offset, read.next_offset)
                .into_iter()
                .map(|txn| {
                    AbortedTransaction::default()
                        .with_producer_id(txn.producer_id.into())
                        .with_first_offset(txn.first_offset)
                })
                .collect();
            data.with_error_code(NONE)
                .with_records(Some(read.bytes))
                .with_aborted_transactions(Some(aborted))
        }
        Ok(read) => data.with_error_code(NONE).with_records(Some(read.bytes)),
        Err(error) => {
            if !matches!(error, storage::LogError::OffsetOutOfRange { .. }) {
                tracing::error!(topic = topic.0.as_str(), partition = fetch.partition, %error, "fetch read failed");
            }
            data.with_error_code(log_error_code(&error).code())
                .with_records(Some(Bytes::new()))
        }
    }
}

/// A follower's fetch reaches the leader core (on arrival only: its offset is its fsynced end
/// then, not after a wait). Returns the HW to answer with.
fn follower_fetched(
    partition: &crate::partition::Partition,
    log: &storage::PartitionLog,
    follower: i32,
    fetch_offset: i64,
    arrival: Option<Duration>,
) -> Result<i64, ResponseError> {
    // Offline after a failed fsync: nothing past the last good sync is trustworthy, and this
    // leader's HW no longer moves; the follower waits for the image to elect another.
    if partition.durable().failed {
        return Err(ResponseError::KafkaStorageError);
    }
    let (result, moved) = {
        let mut replica = partition.replica();
        // The image names this broker leader, the reconciler has not caught up yet.
        let Some(led) = replica.as_mut() else {
            return Err(ResponseError::NotLeaderOrFollower);
        };
        let mut outputs = Vec::new();
        led.log_end_feed(&mut outputs, log.log_end_offset());
        let mut refused = None;
        if let Some(now) = arrival {
            if let Err(why) = led.core.fetched(&mut outputs, follower, fetch_offset, now) {
                refused = Some(why);
            }
        } else if led.core.is_deposed() {
            refused = Some(crate::replica::FetchRefused::NotLeader);
        }
        let moved = led.outputs_apply(outputs);
        let result = match refused {
            None => Ok(led.core.high_watermark()),
            Some(crate::replica::FetchRefused::OffsetOutOfRange) => {
                Err(ResponseError::OffsetOutOfRange)
            }
            Some(_) => Err(ResponseError::NotLeaderOrFollower),
        };
        (result, moved)
    };
    if moved {
        partition.readers_wake();
    }
    result
}

/// `leader_epoch::divergence` on this log, as the Fetch response's `diverging_epoch`.
fn divergence(
    log: &storage::PartitionLog,
    fetch: &FetchPartition,
    last_fetched_epoch: i32,
    leader_epoch: i32,
) -> Result<Option<EpochEndOffset>, ResponseError> {
    let end = leader_epoch::end_offset_for(log, last_fetched_epoch, leader_epoch);
    let diverging = leader_epoch::divergence(
        end,
        last_fetched_epoch,
        fetch.fetch_offset,
        log.log_start_offset(),
    )?;
    Ok(diverging.map(|(epoch, end_offset)| {
        EpochEndOffset::default()
            .with_epoch(epoch)
            .with_end_offset(end_offset)
    }))
}
