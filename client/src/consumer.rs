//! `Consumer`: manually assigned partitions read with Fetch, one request per leader per poll.
//!
//! The consumer keeps a position per assigned partition, the next offset it will return. `poll`
//! fetches from each partition's leader, decodes the batches (`records::records_decode`) and
//! advances positions past what it returns. A fetch error is handled per partition: stale
//! leadership refreshes the metadata for the next poll; OFFSET_OUT_OF_RANGE resets the position
//! as `ConsumerConfig::offset_reset` says. Group membership is `GroupConsumer`'s, built on this.
//!
//! `poll` is cancel-safe in the sense that matters: positions advance only after a response has
//! been decoded, in the same synchronous step that returns the records, so a dropped `poll` loses
//! nothing (the connection it used is discarded and the next poll fetches the same offsets).

use crate::cluster::{Cluster, Target};
use crate::config::{ClientConfig, RESPONSE_BYTES_MAX};
use crate::error::ClientError;
use crate::metadata::{group_by_leader, TopicPartition};
use crate::offsets::{
    list_offsets, IsolationLevel, ListedOffset, TIMESTAMP_EARLIEST, TIMESTAMP_LATEST,
};
use crate::records::{records_decode, AbortedTransaction, ConsumerRecord, FetchedData};
use std::collections::BTreeMap;
use std::time::Duration;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use wire::protocol::messages::fetch_response::PartitionData;
use wire::protocol::messages::{FetchRequest, FetchResponse, RequestKind, ResponseKind, TopicName};
use wire::protocol::protocol::StrBytes;

const MIB: i32 = 1024 * 1024;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start offset: the oldest record still retained.
    Earliest,
    /// The end: only records produced from now on.
    Latest,
    At(i64),
}

/// What to do when the position is outside the log (deleted by retention, or truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail the poll with `ClientError::OffsetOutOfRange`: a checker wants to see the gap.
    Error,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub isolation_level: IsolationLevel,
    pub offset_reset: OffsetReset,
    /// The broker waits (up to `max_wait`) until this much is available. Kafka's `fetch.min.bytes`.
    pub fetch_bytes_min: i32,
    /// Bound on one Fetch response's records. Kafka's `fetch.max.bytes`.
    pub fetch_bytes_max: i32,
    /// Bound on one partition's records in a Fetch response. Kafka's `max.partition.fetch.bytes`.
    pub partition_fetch_bytes_max: i32,
}

impl ConsumerConfig {
    /// Kafka's defaults: read_uncommitted, reset to latest, 1 byte min, 50 MiB / 1 MiB max.
    pub fn kafka_defaults() -> ConsumerConfig {
        ConsumerConfig {
            isolation_level: IsolationLevel::ReadUncommitted,
            offset_reset: OffsetReset::Latest,
            fetch_bytes_min: 1,
            fetch_bytes_max: FETCH_BYTES_MAX_DEFAULT,
            partition_fetch_bytes_max: MIB,
        }
    }
}

const FETCH_BYTES_MAX_DEFAULT: i32 = 50 * MIB;
const _: () = assert!(
    (FETCH_BYTES_MAX_DEFAULT as u32) < RESPONSE_BYTES_MAX,
    "a default-sized fetch response fits the response frame limit"
);

/// What the consumer knows of one assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionState {
    /// The offset of the next record `poll` returns.
    position: i64,
    /// From the last fetch; -1 until then.
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Leaders are fetched from in turn starting here, so none is always last to get wait time.
    leader_rotation: usize,
}

impl Consumer {
    pub fn new(client: ClientConfig, config: ConsumerConfig) -> Consumer {
        assert!(config.fetch_bytes_min >= 0);
        assert!(config.partition_fetch_bytes_max > 0);
        assert!(config.fetch_bytes_max >= config.partition_fetch_bytes_max);
        Consumer {
            cluster: Cluster::new(client),
            config,
            partitions: BTreeMap::new(),
            leader_rotation: 0,
        }
    }

    /// Replaces the assignment, resolving `Earliest`/`Latest` with ListOffsets.
    pub async fn assign(
        &mut self,
        assignments: Vec<(TopicPartition, Offset)>,
    ) -> Result<(), ClientError> {
        let positions = self.offsets_resolve(&assignments).await?;
        self.partitions = positions
            .into_iter()
            .map(|(partition, position)| {
                let state = PartitionState {
                    position,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                };
                (partition, state)
            })
            .collect();
        Ok(())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The offset of the next record `poll` will return for `partition`.
    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions.get(partition).map(|state| state.position)
    }

    /// The high watermark the last fetch of `partition` reported (-1 before any).
    pub fn high_watermark(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(partition)
            .map(|state| state.high_watermark)
    }

    /// Moves an assigned partition's position.
    pub async fn seek(
        &mut self,
        partition: &TopicPartition,
        offset: Offset,
    ) -> Result<(), ClientError> {
        if !self.partitions.contains_key(partition) {
            return Err(ClientError::NotAssigned {
                topic: partition.topic.clone(),
                partition: partition.partition,
            });
        }
        let positions = self.offsets_resolve(&[(partition.clone(), offset)]).await?;
        for (partition, position) in positions {
            self.partitions
                .get_mut(&partition)
                .expect("checked assigned")
                .position = position;
        }
        Ok(())
    }

    /// Partition counts of `topics`, freshly asked (partitions may have been added); unknown
    /// topics are left out. A group leader's assignor needs them.
    pub async fn partition_counts(
        &mut self,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>, ClientError> {
        self.cluster.metadata_invalidate();
        let metadata = self.cluster.metadata_for(topics).await?;
        Ok(topics
            .iter()
            .filter_map(|topic| Some((topic.clone(), metadata.partition_count(topic)?)))
            .collect())
    }

    /// The first offset whose timestamp is at or after `timestamp`; or with `TIMESTAMP_EARLIEST`
    /// (-2) / `TIMESTAMP_LATEST` (-1), the partition's start or end.
    pub async fn list_offsets(
        &mut self,
        partition: &TopicPartition,
        timestamp: i64,
    ) -> Result<ListedOffset, ClientError> {
        let queries = [(partition.clone(), timestamp)];
        let mut answers =
            list_offsets(&mut self.cluster, &queries, self.config.isolation_level).await?;
        Ok(answers
            .remove(partition)
            .expect("list_offsets answers every query or fails"))
    }

    async fn offsets_resolve(
        &mut self,
        assignments: &[(TopicPartition, Offset)],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let mut positions = BTreeMap::new();
        let mut queries = Vec::new();
        for (partition, offset) in assignments {
            match offset {
                Offset::At(offset) => {
                    positions.insert(partition.clone(), *offset);
                }
                Offset::Earliest => queries.push((partition.clone(), TIMESTAMP_EARLIEST)),
                Offset::Latest => queries.push((partition.clone(), TIMESTAMP_LATEST)),
            }
        }
        if !queries.is_empty() {
            let answers =
                list_offsets(&mut self.cluster, &queries, self.config.isolation_level).await?;
            positions.extend(
                answers
                    .into_iter()
                    .map(|(partition, listed)| (partition, listed.offset)),
            );
        }
        Ok(positions)
    }

    /// Returns the records available now, waiting up to `max_wait` (clamped to half the request
    /// timeout, so the broker's long poll always ends before our timeout does) for some to arrive.
    #[tracing::instrument(name = "poll", skip_all)]
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let max_wait = max_wait.min(self.cluster.config().request_timeout / 2);
        if self.partitions.is_empty() {
            runtime::time::sleep(max_wait).await;
            return Ok(Vec::new());
        }
        let mut topics: Vec<String> = self.partitions.keys().map(|tp| tp.topic.clone()).collect();
        topics.dedup();
        let metadata = self.cluster.metadata_for(&topics).await?;
        let items = self.partitions.keys().map(|tp| (tp.clone(), ())).collect();
        let routed = group_by_leader(metadata, items);
        if !routed.unroutable.is_empty() {
            self.cluster.metadata_invalidate();
        }
        let mut leaders: Vec<(i32, Vec<TopicPartition>)> = routed
            .by_node
            .into_iter()
            .map(|(node_id, items)| (node_id, items.into_iter().map(|(tp, ())| tp).collect()))
            .collect();
        if leaders.is_empty() {
            // Every leader is unknown (an election): wait a little rather than spin.
            runtime::time::sleep(max_wait.min(self.cluster.config().retry_backoff)).await;
            return Ok(Vec::new());
        }
        self.leader_rotation = self.leader_rotation.wrapping_add(1);
        let rotation = self.leader_rotation % leaders.len();
        leaders.rotate_left(rotation);
        self.fetch_leaders(leaders, max_wait).await
    }

    /// Fetches from each leader in turn: the first ones share the wait, and once records have
    /// arrived the rest are asked not to wait at all.
    async fn fetch_leaders(
        &mut self,
        leaders: Vec<(i32, Vec<TopicPartition>)>,
        max_wait: Duration,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        let started = self.cluster.config().clock.now();
        let leader_count = leaders.len() as u32;
        let mut records = Vec::new();
        let mut resets = Vec::new();
        let mut error_first = None;
        for (node_id, partitions) in leaders {
            let elapsed = self
                .cluster
                .config()
                .clock
                .now()
                .saturating_duration_since(started);
            let wait = if records.is_empty() {
                max_wait.saturating_sub(elapsed) / leader_count
            } else {
                Duration::ZERO
            };
            let fetched = self
                .fetch(node_id, &partitions, wait, &mut records, &mut resets)
                .await;
            if let Err(error) = fetched {
                tracing::debug!(node_id, %error, "fetch failed");
                error_first.get_or_insert(error);
            }
        }
        if !resets.is_empty() {
            self.offsets_reset(resets).await?;
        }
        let Some(error) = error_first.filter(|_| records.is_empty()) else {
            return Ok(records);
        };
        if error.is_connection_fatal() || !error.is_retriable() {
            return Err(error);
        }
        // Leadership moved: the metadata is marked stale and the next poll asks the new leader.
        // Pause first so a caller polling in a loop does not hammer the cluster mid-election.
        let elapsed = self
            .cluster
            .config()
            .clock
            .now()
            .saturating_duration_since(started);
        runtime::time::sleep(
            max_wait
                .saturating_sub(elapsed)
                .min(self.cluster.config().retry_backoff),
        )
        .await;
        Ok(records)
    }

    async fn fetch(
        &mut self,
        node_id: i32,
        partitions: &[TopicPartition],
        wait: Duration,
        records: &mut Vec<ConsumerRecord>,
        resets: &mut Vec<TopicPartition>,
    ) -> Result<(), ClientError> {
        let request = self.fetch_request(partitions, wait);
        let response = match self
            .cluster
            .request(Target::Node(node_id), RequestKind::Fetch(request))
            .await?
        {
            ResponseKind::Fetch(response) => response,
            other => unreachable!("a Fetch request is answered by {other:?}"),
        };
        ClientError::from_code(response.error_code, || format!("fetch from node {node_id}"))?;
        let mut error_first = None;
        for partition in partitions {
            let outcome = self.fetch_partition_apply(&response, partition, records);
            match outcome {
                Ok(()) => {}
                Err(error) if error.kafka_error() == Some(ResponseError::OffsetOutOfRange) => {
                    resets.push(partition.clone());
                }
                Err(error) => {
                    if error.is_metadata_stale() {
                        self.cluster.metadata_invalidate();
                    }
                    error_first.get_or_insert(error);
                }
            }
        }
        error_first.map_or(Ok(()), Err)
    }

    fn fetch_request(&self, partitions: &[TopicPartition], wait: Duration) -> FetchRequest {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for partition in partitions {
            let state = &self.partitions[partition];
            // The leader epoch we believe in lets a newer leader fence us (FENCED_LEADER_EPOCH)
            // instead of serving from a log we have not seen truncated.
            let leader_epoch = self
                .cluster
                .metadata()
                .partition(partition)
                .map_or(-1, |p| p.leader_epoch);
            let fetch = FetchPartition::default()
                .with_partition(partition.partition)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(state.position)
                .with_partition_max_bytes(self.config.partition_fetch_bytes_max);
            topics
                .entry(partition.topic.as_str())
                .or_default()
                .push(fetch);
        }
        let topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect();
        FetchRequest::default()
            .with_max_wait_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(self.config.fetch_bytes_min)
            .with_max_bytes(self.config.fetch_bytes_max)
            .with_isolation_level(self.config.isolation_level.code())
            .with_topics(topics)
    }

    /// Decodes one partition's answer and advances its position past the records returned.
    fn fetch_partition_apply(
        &mut self,
        response: &FetchResponse,
        partition: &TopicPartition,
        records: &mut Vec<ConsumerRecord>,
    ) -> Result<(), ClientError> {
        let Some(answer) = fetch_answer(response, partition) else {
            // A broker may omit partitions it has nothing for (incremental sessions); we use
            // full fetches, but an omission is harmless: fetch again next poll.
            return Ok(());
        };
        ClientError::from_code(answer.error_code, || format!("fetch {partition}"))?;
        let state = self
            .partitions
            .get_mut(partition)
            .expect("fetched partitions are assigned");
        state.high_watermark = answer.high_watermark;
        state.last_stable_offset = answer.last_stable_offset;
        state.log_start_offset = answer.log_start_offset;
        let Some(data) = answer.records.clone().filter(|data| !data.is_empty()) else {
            return Ok(());
        };
        let data_bytes = data.len();
        let aborted = (self.config.isolation_level == IsolationLevel::ReadCommitted).then(|| {
            let list = answer.aborted_transactions.as_deref().unwrap_or_default();
            list.iter()
                .map(|aborted| AbortedTransaction {
                    producer_id: aborted.producer_id.0,
                    first_offset: aborted.first_offset,
                })
                .collect()
        });
        let fetched = FetchedData {
            topic: &partition.topic,
            partition: partition.partition,
            fetch_offset: state.position,
            records: data,
            aborted,
        };
        match records_decode(fetched, records)? {
            Some(next_offset) => state.position = state.position.max(next_offset),
            // KIP-74: a broker returns the first batch whole even past the byte limits, so data
            // without a whole batch means the broker broke that promise.
            None => {
                let reason = format!(
                    "{data_bytes} bytes for {partition} hold no whole batch at {}",
                    state.position
                );
                return Err(ClientError::protocol("fetch", reason));
            }
        }
        Ok(())
    }

    /// Applies `offset_reset` to partitions whose position fell outside the log.
    async fn offsets_reset(&mut self, partitions: Vec<TopicPartition>) -> Result<(), ClientError> {
        let offset = self.offset_reset_target(&partitions)?;
        let assignments: Vec<(TopicPartition, Offset)> =
            partitions.into_iter().map(|tp| (tp, offset)).collect();
        for (partition, position) in self.offsets_resolve(&assignments).await? {
            let state = self
                .partitions
                .get_mut(&partition)
                .expect("reset partitions are assigned");
            tracing::debug!(%partition, old = state.position, new = position, "position reset");
            state.position = position;
        }
        Ok(())
    }

    /// Where `offset_reset` sends out-of-range partitions, or the error it asks for.
    fn offset_reset_target(&self, partitions: &[TopicPartition]) -> Result<Offset, ClientError> {
        match self.config.offset_reset {
            OffsetReset::Earliest => Ok(Offset::Earliest),
            OffsetReset::Latest => Ok(Offset::Latest),
            OffsetReset::Error => {
                let partition = &partitions[0];
                Err(ClientError::OffsetOutOfRange {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: self.partitions[partition].position,
                })
            }
        }
    }
}

fn fetch_answer<'a>(
    response: &'a FetchResponse,
    partition: &TopicPartition,
) -> Option<&'a PartitionData> {
    response
        .responses
        .iter()
        .filter(|topic| topic.topic.as_str() == partition.topic)
        .flat_map(|topic| topic.partitions.iter())
        .find(|answer| answer.partition_index == partition.partition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{batch_encode, ProducerRecord};
    use bytes::{Bytes, BytesMut};
    use wire::batch::ValidatedBatch;
    use wire::protocol::messages::fetch_response::FetchableTopicResponse;
    use wire::protocol::records::Compression;

    fn consumer(offset_reset: OffsetReset, positions: &[(i32, i64)]) -> Consumer {
        let config = ConsumerConfig {
            offset_reset,
            ..ConsumerConfig::kafka_defaults()
        };
        let mut consumer = Consumer::new(ClientConfig::new(["127.0.0.1:1"]), config);
        for (partition, position) in positions {
            let state = PartitionState {
                position: *position,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
            };
            consumer
                .partitions
                .insert(TopicPartition::new("t", *partition), state);
        }
        consumer
    }

    /// Records `base..base + count` as one batch placed at `base`.
    fn batch(base: i64, count: i64) -> Bytes {
        let records: Vec<ProducerRecord> = (base..base + count)
            .map(|offset| ProducerRecord::new("t", None, Some(Bytes::from(offset.to_string()))))
            .collect();
        let timestamps = vec![0; records.len()];
        let bytes = batch_encode(&records, &timestamps, Compression::None);
        ValidatedBatch::validate(bytes)
            .unwrap()
            .with_placement(base, 0)
            .into_bytes()
    }

    fn response(partitions: Vec<PartitionData>) -> FetchResponse {
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        FetchResponse::default().with_responses(vec![topic])
    }

    fn data(partition: i32, error_code: i16, records: Option<Bytes>) -> PartitionData {
        PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(error_code)
            .with_high_watermark(9)
            .with_records(records)
    }

    #[test]
    fn fetch_requests_ask_from_each_position_with_the_configured_limits() {
        let consumer = consumer(OffsetReset::Latest, &[(0, 5), (3, 0)]);
        let partitions = consumer.assignment();
        let request = consumer.fetch_request(&partitions, Duration::from_millis(250));
        assert_eq!(
            (request.max_wait_ms, request.min_bytes, request.max_bytes),
            (250, 1, 50 * MIB)
        );
        assert_eq!((request.isolation_level, request.session_epoch), (0, -1));
        let rendered: Vec<String> = request.topics[0]
            .partitions
            .iter()
            .map(|p| {
                format!(
                    "{}@{} epoch {} max {}",
                    p.partition, p.fetch_offset, p.current_leader_epoch, p.partition_max_bytes
                )
            })
            .collect();
        assert_eq!(
            rendered,
            ["0@5 epoch -1 max 1048576", "3@0 epoch -1 max 1048576"]
        );
    }

    #[test]
    fn fetched_records_advance_the_position_from_mid_batch() {
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 2)]);
        let mut both = BytesMut::from(&batch(0, 3)[..]);
        both.extend_from_slice(&batch(3, 2));
        let response = response(vec![data(0, 0, Some(both.freeze()))]);
        let mut records = Vec::new();
        let partition = TopicPartition::new("t", 0);
        consumer
            .fetch_partition_apply(&response, &partition, &mut records)
            .unwrap();
        let offsets: Vec<i64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [2, 3, 4]);
        assert_eq!(consumer.position(&partition), Some(5));
        assert_eq!(consumer.high_watermark(&partition), Some(9));
    }

    /// A batch compaction emptied (a producer's last batch keeps its header and offsets, as
    /// Kafka's cleaner does) returns no record and still moves the position past its offsets.
    #[test]
    fn an_emptied_batch_moves_the_position_past_it() {
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 3)]);
        let mut emptied = BytesMut::from(&batch(3, 2)[..]);
        emptied.truncate(61);
        emptied[8..12].copy_from_slice(&(61i32 - 12).to_be_bytes());
        emptied[57..61].copy_from_slice(&0i32.to_be_bytes());
        let crc = wire::batch::crc_compute(&emptied);
        emptied[17..21].copy_from_slice(&crc.to_be_bytes());
        let emptied = ValidatedBatch::validate(emptied.freeze()).unwrap();
        assert_eq!(
            (
                emptied.header().record_count,
                emptied.header().last_offset()
            ),
            (0, 4)
        );
        let response = response(vec![data(0, 0, Some(emptied.into_bytes()))]);
        let mut records = Vec::new();
        let partition = TopicPartition::new("t", 0);
        consumer
            .fetch_partition_apply(&response, &partition, &mut records)
            .unwrap();
        assert!(records.is_empty());
        assert_eq!(consumer.position(&partition), Some(5));
    }

    /// Under read_committed the Fetch asks for isolation level 1 and the partition's
    /// aborted-transaction list reaches the record filter: an aborted transaction's records and
    /// every marker are dropped, and the position still moves past them.
    #[test]
    fn read_committed_fetches_drop_aborted_transactions() {
        use wire::protocol::messages::fetch_response::AbortedTransaction as WireAborted;
        use wire::protocol::messages::ProducerId;
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 0)]);
        consumer.config.isolation_level = IsolationLevel::ReadCommitted;
        let partitions = consumer.assignment();
        assert_eq!(
            consumer
                .fetch_request(&partitions, Duration::ZERO)
                .isolation_level,
            1
        );
        let txn = |base: i64, producer_id: i64, marker: Option<i16>| {
            let spec = match marker {
                None => wire::batch::build::RecordSpec {
                    value: Some(Bytes::from(format!("v{base}"))),
                    ..Default::default()
                },
                Some(kind) => wire::batch::build::RecordSpec {
                    key: Some(Bytes::copy_from_slice(&[0, 0, 0, kind as u8])),
                    ..Default::default()
                },
            };
            let built = wire::batch::build::batch_encode_with(
                &[spec],
                Compression::None,
                producer_id,
                0,
                0,
                true,
            );
            let mut bytes = BytesMut::from(&built.into_bytes()[..]);
            if marker.is_some() {
                bytes[22] |= 0x20;
                let crc = wire::batch::crc_compute(&bytes);
                bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            ValidatedBatch::validate(bytes.freeze())
                .unwrap()
                .with_placement(base, 0)
                .into_bytes()
        };
        let mut all = BytesMut::new();
        for part in [
            txn(0, 3, None),
            txn(1, 4, None),
            txn(2, 3, Some(0)),
            txn(3, 4, Some(1)),
        ] {
            all.extend_from_slice(&part);
        }
        let answer = data(0, 0, Some(all.freeze()))
            .with_last_stable_offset(4)
            .with_aborted_transactions(Some(vec![WireAborted::default()
                .with_producer_id(ProducerId(3))
                .with_first_offset(0)]));
        let mut records = Vec::new();
        let partition = TopicPartition::new("t", 0);
        consumer
            .fetch_partition_apply(&response(vec![answer]), &partition, &mut records)
            .unwrap();
        let values: Vec<(i64, Option<Bytes>)> = records
            .iter()
            .map(|record| (record.offset, record.value.clone()))
            .collect();
        assert_eq!(values, [(1, Some(Bytes::from("v1")))]);
        assert_eq!(consumer.position(&partition), Some(4));
    }

    #[test]
    fn partition_errors_leave_the_position_and_say_why() {
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 7), (1, 7)]);
        let response = response(vec![data(0, 1, None), data(1, 6, None)]);
        let mut records = Vec::new();
        let out_of_range =
            consumer.fetch_partition_apply(&response, &TopicPartition::new("t", 0), &mut records);
        assert_eq!(
            out_of_range.unwrap_err().kafka_error(),
            Some(ResponseError::OffsetOutOfRange)
        );
        let not_leader =
            consumer.fetch_partition_apply(&response, &TopicPartition::new("t", 1), &mut records);
        assert!(not_leader.unwrap_err().is_metadata_stale());
        assert_eq!(consumer.position(&TopicPartition::new("t", 0)), Some(7));
        assert!(records.is_empty());
    }

    /// Issue 8, section 4: the records before a corrupt batch were re-delivered on every poll.
    /// Now they are delivered once, the position stops at the bad batch, and the next fetch
    /// reports it with its offset until the caller seeks past it.
    #[test]
    fn a_corrupt_batch_stops_the_position_and_is_reported() {
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 0)]);
        let partition = TopicPartition::new("t", 0);
        // Codec 7 with a fixed-up CRC: the envelope is valid, the records cannot be read.
        let mut poisoned = BytesMut::from(&batch(3, 2)[..]);
        poisoned[22] |= 0x07;
        let crc = wire::batch::crc_compute(&poisoned);
        poisoned[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut data_all = BytesMut::from(&batch(0, 3)[..]);
        data_all.extend_from_slice(&poisoned);
        let apply = |consumer: &mut Consumer, records: Bytes| {
            let response = response(vec![data(0, 0, Some(records))]);
            let mut out = Vec::new();
            let outcome = consumer.fetch_partition_apply(&response, &partition, &mut out);
            let offsets: Vec<i64> = out.iter().map(|record| record.offset).collect();
            (outcome, offsets)
        };
        let (outcome, offsets) = apply(&mut consumer, data_all.freeze());
        assert!(outcome.is_ok());
        assert_eq!(offsets, [0, 1, 2]);
        assert_eq!(consumer.position(&partition), Some(3));
        let (outcome, offsets) = apply(&mut consumer, poisoned.freeze());
        assert!(offsets.is_empty());
        assert_eq!(consumer.position(&partition), Some(3));
        let error = outcome.unwrap_err();
        assert!(!error.is_retriable(), "a consumer must not spin on it");
        assert!(
            matches!(
                error,
                ClientError::CorruptBatch {
                    offset: 3,
                    skip_to: 5,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("corrupt record batch at offset 3 of t-0: "));
    }

    #[test]
    fn a_response_with_only_part_of_a_batch_is_a_protocol_error() {
        let mut consumer = consumer(OffsetReset::Latest, &[(0, 0)]);
        let response = response(vec![data(0, 0, Some(batch(0, 3).slice(..40)))]);
        let error = consumer.fetch_partition_apply(
            &response,
            &TopicPartition::new("t", 0),
            &mut Vec::new(),
        );
        assert!(
            matches!(error, Err(ClientError::Protocol { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn the_reset_policy_picks_the_new_position_or_reports_the_old_one() {
        let partitions = [TopicPartition::new("t", 0)];
        let earliest = consumer(OffsetReset::Earliest, &[(0, 42)]);
        assert_eq!(
            earliest.offset_reset_target(&partitions).unwrap(),
            Offset::Earliest
        );
        let latest = consumer(OffsetReset::Latest, &[(0, 42)]);
        assert_eq!(
            latest.offset_reset_target(&partitions).unwrap(),
            Offset::Latest
        );
        let strict = consumer(OffsetReset::Error, &[(0, 42)]);
        let error = strict.offset_reset_target(&partitions).unwrap_err();
        assert!(
            matches!(error, ClientError::OffsetOutOfRange { offset: 42, .. }),
            "{error:?}"
        );
    }
}
