//! CreateTopics, DeleteTopics and CreatePartitions (Kafka's `ReplicationControlManager`).
//! Each topic of a request succeeds or fails on its own; the records of all that succeed are
//! one batch. New partitions are placed over the live brokers by `placement`; their ISR is all
//! their replicas and their leader the first replica.

use super::errors::{
    ApiError, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_REQUEST,
    TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION,
};
use super::{Batch, Controller, Proposal};
use crate::image::{MetadataImage, MetadataOffset};
use crate::placement::{replicas_assign, PlacementBroker, PlacementError};
use crate::records::{MetadataRecord, PartitionRecord, TopicId};
use crate::topic_config::{topic_configs_validate, topic_name_validate};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// The most partitions a topic may have. Kafka sets no limit; every partition costs memory on
/// every node and a record in the log, so a request for a million is refused, not obeyed.
pub const PARTITION_COUNT_MAX: i32 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicCreate {
    pub name: String,
    /// -1 for the default.
    pub partition_count: i32,
    /// -1 for the default.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicCreated {
    /// `None` when only validated.
    pub topic_id: Option<TopicId>,
    pub partition_count: i32,
    pub replication_factor: i16,
    /// The overrides as stored (normalised).
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionsCreate {
    pub name: String,
    /// The topic's new total partition count.
    pub partition_count: i32,
}

pub type TopicResults<T> = Vec<(String, Result<T, ApiError>)>;

/// Names that appear more than once in one request: Kafka refuses them all (INVALID_REQUEST).
pub(super) fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    names
        .filter(|name| !seen.insert(*name))
        .map(str::to_string)
        .collect()
}

pub(super) fn duplicate_error(name: &str) -> ApiError {
    let message = format!("topic {name:?} appears more than once in the request");
    ApiError::new(INVALID_REQUEST, message)
}

fn brokers_placeable(image: &MetadataImage) -> Vec<PlacementBroker> {
    image
        .brokers_live()
        .map(|broker| PlacementBroker {
            broker_id: broker.broker_id,
            rack: broker.rack.clone(),
        })
        .collect()
}

fn replication_factor_check(
    image: &MetadataImage,
    replication_factor: i16,
) -> Result<(), ApiError> {
    let live = image.brokers_live().count();
    if replication_factor < 1 || replication_factor as usize > live {
        let message = format!(
            "replication factor {replication_factor} must be between 1 and the {live} live brokers"
        );
        return Err(ApiError::new(INVALID_REPLICATION_FACTOR, message));
    }
    Ok(())
}

pub(super) fn partition_count_check(partition_count: i32) -> Result<(), ApiError> {
    if !(1..=PARTITION_COUNT_MAX).contains(&partition_count) {
        let message = format!(
            "partition count {partition_count} must be between 1 and {PARTITION_COUNT_MAX}"
        );
        return Err(ApiError::new(INVALID_PARTITIONS, message));
    }
    Ok(())
}

impl Controller {
    pub fn create_topics(
        &mut self,
        index: MetadataOffset,
        topics: &[TopicCreate],
        validate_only: bool,
    ) -> Proposal<TopicResults<TopicCreated>> {
        let repeated = duplicates(topics.iter().map(|topic| topic.name.as_str()));
        let mut results = Vec::with_capacity(topics.len());
        let config = self.config.clone();
        let mut batch = self.batch(index);
        for topic in topics {
            let result = if repeated.contains(&topic.name) {
                Err(duplicate_error(&topic.name))
            } else {
                topic_create(&mut batch, &config, topic, validate_only)
            };
            results.push((topic.name.clone(), result));
        }
        batch.finish(results)
    }

    pub fn delete_topics(
        &mut self,
        index: MetadataOffset,
        names: &[String],
    ) -> Proposal<TopicResults<TopicId>> {
        let repeated = duplicates(names.iter().map(String::as_str));
        let mut batch = self.batch(index);
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let result = if repeated.contains(name) {
                Err(duplicate_error(name))
            } else if let Some(topic_id) = batch.image().topic_id(name) {
                batch.push(MetadataRecord::RemoveTopic { topic_id });
                Ok(topic_id)
            } else {
                Err(unknown_topic(name))
            };
            results.push((name.clone(), result));
        }
        batch.finish(results)
    }

    pub fn create_partitions(
        &mut self,
        index: MetadataOffset,
        requests: &[PartitionsCreate],
        validate_only: bool,
    ) -> Proposal<TopicResults<()>> {
        let repeated = duplicates(requests.iter().map(|request| request.name.as_str()));
        let mut results = Vec::with_capacity(requests.len());
        let mut batch = self.batch(index);
        for request in requests {
            let result = if repeated.contains(&request.name) {
                Err(duplicate_error(&request.name))
            } else {
                partitions_create(&mut batch, request, validate_only)
            };
            results.push((request.name.clone(), result));
        }
        batch.finish(results)
    }
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::new(
        UNKNOWN_TOPIC_OR_PARTITION,
        format!("topic {name:?} does not exist"),
    )
}

fn topic_create(
    batch: &mut Batch<'_>,
    config: &super::ControllerConfig,
    topic: &TopicCreate,
    validate_only: bool,
) -> Result<TopicCreated, ApiError> {
    topic_name_validate(&topic.name)?;
    if batch.image().topic_id(&topic.name).is_some() {
        let message = format!("topic {:?} already exists", topic.name);
        return Err(ApiError::new(TOPIC_ALREADY_EXISTS, message));
    }
    let partition_count = match topic.partition_count {
        -1 => config.partitions_default,
        count => count,
    };
    partition_count_check(partition_count)?;
    let replication_factor = match topic.replication_factor {
        -1 => config.replication_factor_default,
        factor => factor,
    };
    replication_factor_check(batch.image(), replication_factor)?;
    let configs = topic_configs_validate(&topic.configs)?;
    let mut created = TopicCreated {
        topic_id: None,
        partition_count,
        replication_factor,
        configs: configs.clone(),
    };
    if validate_only {
        return Ok(created);
    }
    let assignment = replicas_place(batch, 0, partition_count, replication_factor as usize)?;
    let topic_id = topic_id_new(batch);
    batch.push(MetadataRecord::Topic {
        name: topic.name.clone(),
        topic_id,
    });
    for (key, value) in configs {
        let value = Some(value);
        batch.push(MetadataRecord::Config {
            topic_id,
            key,
            value,
        });
    }
    partitions_push(batch, topic_id, 0, assignment);
    created.topic_id = Some(topic_id);
    Ok(created)
}

fn partitions_create(
    batch: &mut Batch<'_>,
    request: &PartitionsCreate,
    validate_only: bool,
) -> Result<(), ApiError> {
    let Some(topic) = batch.image().topic_by_name(&request.name) else {
        return Err(unknown_topic(&request.name));
    };
    let (topic_id, current) = (topic.topic_id, topic.partitions.len() as i32);
    let replication_factor = topic.partitions[0].replicas.len();
    if request.partition_count <= current {
        let message = format!(
            "topic {:?} has {current} partitions; ask for more than that",
            request.name
        );
        return Err(ApiError::new(INVALID_PARTITIONS, message));
    }
    partition_count_check(request.partition_count)?;
    replication_factor_check(batch.image(), replication_factor as i16)?;
    if validate_only {
        return Ok(());
    }
    let added = request.partition_count - current;
    let assignment = replicas_place(batch, current, added, replication_factor)?;
    partitions_push(batch, topic_id, current, assignment);
    Ok(())
}

fn replicas_place(
    batch: &mut Batch<'_>,
    partition_first: i32,
    partition_count: i32,
    replication_factor: usize,
) -> Result<Vec<Vec<i32>>, ApiError> {
    let brokers = brokers_placeable(batch.image());
    replicas_assign(
        &brokers,
        partition_first as usize,
        partition_count as usize,
        replication_factor,
        batch.rng(),
    )
    .map_err(|error| match error {
        PlacementError::ReplicationFactor { .. } => {
            ApiError::new(INVALID_REPLICATION_FACTOR, error.to_string())
        }
    })
}

pub(super) fn partitions_push(
    batch: &mut Batch<'_>,
    topic_id: TopicId,
    partition_first: i32,
    assignment: Vec<Vec<i32>>,
) {
    for (offset, replicas) in assignment.into_iter().enumerate() {
        batch.push(MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition: partition_first + offset as i32,
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        }));
    }
}

/// A random id no topic has (Kafka's `Uuid.randomUuid`, never the zero id).
fn topic_id_new(batch: &mut Batch<'_>) -> TopicId {
    for _ in 0..8 {
        let topic_id = TopicId(batch.rng().gen());
        if topic_id.0 != 0 && batch.image().topic(topic_id).is_none() {
            return topic_id;
        }
    }
    panic!("eight random 128-bit topic ids collided: the rng is broken");
}
