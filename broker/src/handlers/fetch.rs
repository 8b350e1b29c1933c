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

/// A client may ask to wait longer; we cap it so a connection's slot is not held for minutes.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

pub fn handle(broker: &Arc<Broker>, request: FetchRequest, _version: i16) -> Reply {
    let broker = broker.clone();
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let first = fetch_once(&broker, &request, false);
    if first.ready(&request) || wait.is_zero() {
        return Reply::Now(Box::new(first.into_response()));
    }
    Reply::Later(long_poll(broker, request, wait))
}

fn long_poll(broker: Arc<Broker>, request: FetchRequest, wait: Duration) -> ResponseFuture {
    Box::pin(async move {
        let deadline = broker.clock.now() + wait;
        let mut watches = partitions_watch(&broker, &request);
        let mut woken = false;
        loop {
            // Mark every watch seen before reading, so a change after the read wakes us.
            for watch in &mut watches {
                watch.borrow_and_update();
            }
            let result = fetch_once(&broker, &request, woken);
            if result.ready(&request) || broker.clock.now() >= deadline {
                return result.into_response();
            }
            woken = true;
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

/// One read of every requested partition; `woken` after a parked fetch's wake (a planted bug
/// reads differently then).
fn fetch_once(broker: &Arc<Broker>, request: &FetchRequest, woken: bool) -> FetchResult {
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
                woken,
                read_committed,
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
    woken: bool,
    read_committed: bool,
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
        woken,
        read_committed,
    } = *read;
    let data = PartitionData::default()
        .with_partition_index(fetch.partition)
        .with_preferred_read_replica((-1).into())
        .with_aborted_transactions(read_committed.then(Vec::new));
    let access = crate::cluster_mode::Access::Read;
    let current = leader_epoch::from_wire(fetch.current_leader_epoch);
    let served = broker.partition_serving_at(topic.0.as_str(), fetch.partition, access, current);
    let (partition, leader_epoch) = match served {
        Ok(served) => served,
        Err(error) => return data.with_error_code(error.code()).with_high_watermark(-1),
    };
    let mut high_watermark = partition.high_watermark();
    let log = partition.log();
    if woken && Bug::active(partition.planted(), Bug::LongPollServesLogEnd) {
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
    let limit = match read_committed {
        true => last_stable_offset,
        false => high_watermark,
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
