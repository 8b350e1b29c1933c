//! OffsetFetch: one group (v1-7) or several (v8-9, KIP-709). A null topic list (v2+) asks for
//! every committed offset of the group. Partitions without a committed offset answer -1 with no
//! error, as in Kafka; so does an unknown group. Only durable commits are ever visible here, and
//! transactional ones only once their transaction committed. With `require_stable` (v7+,
//! KIP-447) a partition whose offsets an open transaction holds answers UNSTABLE_OFFSET_COMMIT,
//! so a consumer taking over waits for the transaction instead of reading from an older offset.

use crate::broker::Broker;
use crate::group::{Committed, Coordinator, TopicPartition};
use crate::handlers::errors::NONE;
use crate::handlers::groups::{group_id_check, str_bytes};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::handlers::errors::group_error_code;
use std::collections::BTreeMap;
use std::sync::Arc;
use wire::ResponseKind;

/// One group's answer: per topic, per partition, the committed offset if any, or the error.
type Answer = BTreeMap<String, Vec<(i32, Result<Option<Committed>, ResponseError>)>>;

pub fn handle(broker: &Arc<Broker>, request: OffsetFetchRequest, version: i16) -> ResponseKind {
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|group| {
                let topics = group.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                group_response(broker, &group.group_id, topics, request.require_stable)
            })
            .collect();
        return ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups));
    }
    let topics: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (answer, error) = match group_served(broker, request.group_id.as_str()) {
        Ok(group_id) => (
            lookup(
                broker,
                &group_id,
                topics,
                version >= 7 && request.require_stable,
            ),
            NONE,
        ),
        // v0-1 have no top-level error: each partition asked for carries it.
        Err(error) => {
            let answer = topics
                .into_iter()
                .flatten()
                .map(|(topic, indexes)| {
                    let partitions = indexes.into_iter().map(|index| (index, Err(error)));
                    (topic, partitions.collect())
                })
                .collect();
            (answer, error.code())
        }
    };
    let topics = answer
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata, code) = fields(committed);
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(code);
                    if version >= 5 {
                        partition.with_committed_leader_epoch(epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect();
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_error_code(error);
    }
    ResponseKind::OffsetFetch(response)
}

fn group_response(
    broker: &Broker,
    group_id: &GroupId,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> OffsetFetchResponseGroup {
    let response = OffsetFetchResponseGroup::default().with_group_id(group_id.clone());
    let group_id = match group_served(broker, group_id.as_str()) {
        Ok(group_id) => group_id,
        Err(error) => return response.with_error_code(error.code()),
    };
    let topics = lookup(broker, &group_id, topics, require_stable)
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata, code) = fields(committed);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect();
    response.with_error_code(NONE).with_topics(topics)
}

/// The group id, if valid and coordinated here (its partition of `__consumer_offsets` is
/// loaded: NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS otherwise).
fn group_served(broker: &Broker, group_id: &str) -> Result<String, ResponseError> {
    let group_id = group_id_check(group_id)?;
    broker
        .groups()
        .read(|core| core.serves(&group_id))
        .map_err(|error| group_error_code(&error))?;
    Ok(group_id)
}

/// The committed offsets asked for (`None`: all the group has).
fn lookup(
    broker: &Broker,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Answer {
    broker.groups().read(|core: &Coordinator| {
        let offsets = core.group(group_id).map(|group| group.offsets());
        let unstable = |partition: &TopicPartition| {
            require_stable && core.txn_offsets_pending(group_id, partition)
        };
        let mut answer = Answer::new();
        match topics {
            None => {
                let mut partitions: BTreeMap<TopicPartition, Option<Committed>> = offsets
                    .into_iter()
                    .flatten()
                    .map(|(partition, committed)| (partition.clone(), Some(committed.clone())))
                    .collect();
                if require_stable {
                    for partition in core.txn_pending_partitions(group_id) {
                        partitions.entry(partition).or_insert(None);
                    }
                }
                for (partition, committed) in partitions {
                    let result = match unstable(&partition) {
                        true => Err(ResponseError::UnstableOffsetCommit),
                        false => Ok(committed),
                    };
                    answer
                        .entry(partition.topic.clone())
                        .or_default()
                        .push((partition.partition, result));
                }
            }
            Some(topics) => {
                for (topic, indexes) in topics {
                    let entry = answer.entry(topic.clone()).or_default();
                    for index in indexes {
                        let key = TopicPartition {
                            topic: topic.clone(),
                            partition: index,
                        };
                        let result = match unstable(&key) {
                            true => Err(ResponseError::UnstableOffsetCommit),
                            false => Ok(offsets.and_then(|o| o.get(&key)).cloned()),
                        };
                        entry.push((index, result));
                    }
                }
            }
        }
        answer
    })
}

/// (offset, leader epoch, metadata, error code); -1, -1, "" when nothing is committed.
fn fields(committed: Result<Option<Committed>, ResponseError>) -> (i64, i32, String, i16) {
    match committed {
        Ok(Some(c)) => (c.offset, c.leader_epoch, c.metadata, NONE),
        Ok(None) => (-1, -1, String::new(), NONE),
        Err(error) => (-1, -1, String::new(), error.code()),
    }
}
