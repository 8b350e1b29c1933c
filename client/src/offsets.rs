//! ListOffsets: the offset at a timestamp, or a partition's start or end (`EARLIEST`, `LATEST`).
//!
//! Used by the consumer to resolve `Offset::Earliest`/`Latest` and to reset after
//! OFFSET_OUT_OF_RANGE, and by tools to measure lag. Requests are routed to each partition's
//! leader (only the leader knows its high watermark) and retried after a metadata refresh when
//! leadership moved.

use crate::cluster::{Cluster, Target};
use crate::error::ClientError;
use crate::metadata::{group_by_leader, TopicPartition};
use std::collections::BTreeMap;
use wire::protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use wire::protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, RequestKind};
use wire::protocol::messages::{ResponseKind, TopicName};
use wire::protocol::protocol::StrBytes;

/// The special timestamp asking for a partition's log start offset.
pub const TIMESTAMP_EARLIEST: i64 = -2;
/// The special timestamp asking for a partition's end: the high watermark under read_uncommitted,
/// the last stable offset under read_committed.
pub const TIMESTAMP_LATEST: i64 = -1;

/// Which records a reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything below the high watermark, aborted transactions included.
    ReadUncommitted,
    /// Only below the last stable offset, aborted transactions filtered out.
    ReadCommitted,
}

impl IsolationLevel {
    pub fn code(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// A ListOffsets answer for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// -1 if no record has a timestamp at or after the one asked for.
    pub offset: i64,
    /// The found record's timestamp; -1 for EARLIEST and LATEST.
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// Looks up `(partition, timestamp)` pairs, retrying per `ClientConfig::retries`. Returns every
/// answer or the error that retries could not cure.
pub async fn list_offsets(
    cluster: &mut Cluster,
    queries: &[(TopicPartition, i64)],
    isolation_level: IsolationLevel,
) -> Result<BTreeMap<TopicPartition, ListedOffset>, ClientError> {
    let mut lookup = Lookup {
        answers: BTreeMap::new(),
        pending: queries.to_vec(),
        error_last: None,
    };
    let mut topics: Vec<String> = queries.iter().map(|(tp, _)| tp.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    for attempt in 0..=cluster.config().retries {
        if lookup.pending.is_empty() {
            break;
        }
        if attempt > 0 {
            cluster.metadata_invalidate();
            cluster.backoff().await;
        }
        let routed = group_by_leader(
            cluster.metadata_for(&topics).await?,
            std::mem::take(&mut lookup.pending),
        );
        for (partition, timestamp, error) in routed.unroutable {
            lookup.retry(partition, timestamp, error);
        }
        for (node_id, items) in routed.by_node {
            let request = RequestKind::ListOffsets(list_offsets_request(&items, isolation_level));
            match cluster.request(Target::Node(node_id), request).await {
                Ok(ResponseKind::ListOffsets(response)) => lookup.answers_take(&response, items)?,
                Ok(other) => unreachable!("a ListOffsets request is answered by {other:?}"),
                Err(error) if error.is_retriable() => {
                    for (partition, timestamp) in items {
                        lookup.retry(partition, timestamp, error.clone());
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
    match lookup.error_last {
        Some(error) if !lookup.pending.is_empty() => Err(error),
        _ => Ok(lookup.answers),
    }
}

/// The progress of one `list_offsets` call across attempts.
struct Lookup {
    answers: BTreeMap<TopicPartition, ListedOffset>,
    pending: Vec<(TopicPartition, i64)>,
    error_last: Option<ClientError>,
}

impl Lookup {
    fn retry(&mut self, partition: TopicPartition, timestamp: i64, error: ClientError) {
        self.pending.push((partition, timestamp));
        self.error_last = Some(error);
    }

    fn answers_take(
        &mut self,
        response: &ListOffsetsResponse,
        items: Vec<(TopicPartition, i64)>,
    ) -> Result<(), ClientError> {
        for (partition, timestamp) in items {
            match list_offsets_answer(response, &partition) {
                Ok(listed) => {
                    self.answers.insert(partition, listed);
                }
                Err(error) if error.is_retriable() => self.retry(partition, timestamp, error),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn list_offsets_request(
    items: &[(TopicPartition, i64)],
    isolation_level: IsolationLevel,
) -> ListOffsetsRequest {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (partition, timestamp) in items {
        let query = ListOffsetsPartition::default()
            .with_partition_index(partition.partition)
            .with_timestamp(*timestamp);
        topics
            .entry(partition.topic.as_str())
            .or_default()
            .push(query);
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    // replica_id -1: a consumer, not a follower (the crate's default is 0, a broker id).
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level.code())
        .with_topics(topics)
}

/// The answer for `partition`, its Kafka error, or a protocol error if the broker left it out.
pub fn list_offsets_answer(
    response: &ListOffsetsResponse,
    partition: &TopicPartition,
) -> Result<ListedOffset, ClientError> {
    let answer = response
        .topics
        .iter()
        .filter(|topic| topic.name.as_str() == partition.topic)
        .flat_map(|topic| topic.partitions.iter())
        .find(|answer| answer.partition_index == partition.partition);
    let Some(answer) = answer else {
        return Err(ClientError::protocol(
            "ListOffsets",
            format!("response lacks {partition}"),
        ));
    };
    ClientError::from_code(answer.error_code, || format!("list offsets of {partition}"))?;
    Ok(ListedOffset {
        offset: answer.offset,
        timestamp: answer.timestamp,
        leader_epoch: answer.leader_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    #[test]
    fn requests_group_partitions_by_topic_as_a_consumer() {
        let items = [
            (TopicPartition::new("u", 0), TIMESTAMP_LATEST),
            (TopicPartition::new("t", 1), TIMESTAMP_EARLIEST),
            (TopicPartition::new("t", 0), 1_700_000_000_000),
        ];
        let request = list_offsets_request(&items, IsolationLevel::ReadCommitted);
        assert_eq!(request.replica_id, BrokerId(-1));
        assert_eq!(request.isolation_level, 1);
        let rendered: Vec<String> = request
            .topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(move |p| {
                    format!(
                        "{}-{}@{}",
                        topic.name.as_str(),
                        p.partition_index,
                        p.timestamp
                    )
                })
            })
            .collect();
        assert_eq!(rendered, ["t-1@-2", "t-0@1700000000000", "u-0@-1"]);
    }

    #[test]
    fn answers_map_errors_and_missing_partitions() {
        let partitions = vec![
            ListOffsetsPartitionResponse::default()
                .with_partition_index(0)
                .with_offset(42)
                .with_timestamp(-1),
            ListOffsetsPartitionResponse::default()
                .with_partition_index(1)
                .with_error_code(6),
        ];
        let topic = ListOffsetsTopicResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        let response = ListOffsetsResponse::default().with_topics(vec![topic]);
        let listed = list_offsets_answer(&response, &TopicPartition::new("t", 0)).unwrap();
        assert_eq!((listed.offset, listed.timestamp), (42, -1));
        let error = list_offsets_answer(&response, &TopicPartition::new("t", 1)).unwrap_err();
        assert!(error.is_metadata_stale() && error.is_retriable(), "{error}");
        let error = list_offsets_answer(&response, &TopicPartition::new("t", 2)).unwrap_err();
        assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
    }
}
