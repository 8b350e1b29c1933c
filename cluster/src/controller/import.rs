//! The one-time import of a data dir written before the metadata log existed (a single-node
//! gregor kept its topics in `gregor-topics.json` alone). The broker sends what its disk holds;
//! the controller writes it as one batch: each topic under its old id, every partition on the
//! importing broker alone (leader and only ISR member), its configs, and enough producer-id
//! blocks that no id the old broker issued is handed out again.
//!
//! One batch is one Raft entry, so an import is in the log whole or not at all. It is
//! idempotent: a topic already in the image under the same id is skipped, so a start that
//! crashed after the import committed (but before the broker recorded it locally) imports
//! nothing twice.

use super::errors::{
    ApiError, BROKER_ID_NOT_REGISTERED, INVALID_REQUEST, STALE_BROKER_EPOCH, TOPIC_ALREADY_EXISTS,
    UNKNOWN_SERVER_ERROR,
};
use super::topics::{
    duplicate_error, duplicates, partition_count_check, partitions_push, TopicResults,
};
use super::{Controller, Proposal};
use crate::image::MetadataOffset;
use crate::records::{BrokerId, MetadataRecord, TopicId, PRODUCER_ID_BLOCK_SIZE};
use crate::topic_config::{topic_configs_validate, topic_name_validate};
use std::collections::BTreeMap;

/// A topic as the importing broker's disk holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImport {
    pub name: String,
    pub topic_id: TopicId,
    pub partition_count: i32,
    pub configs: BTreeMap<String, String>,
}

/// What a broker imports: its topics, and the first producer id its old data dir never issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topics: Vec<TopicImport>,
    pub producer_id_floor: i64,
}

/// An import whose producer-id floor needs more blocks than this is refused: one record per
/// block, and the batch must fit in one proposal.
const IMPORT_BLOCKS_MAX: i64 = 10_000;

impl Controller {
    /// Imports `import` as one batch; per-topic results, or a refusal of the whole import (the
    /// broker is not registered at that epoch, or not live: a fenced broker may lead nothing).
    pub fn topics_import(
        &mut self,
        index: MetadataOffset,
        import: &Import,
    ) -> Proposal<Result<TopicResults<()>, ApiError>> {
        let decided = self.import_decide(index, import);
        self.answer(index, decided)
    }

    fn import_decide(
        &mut self,
        index: MetadataOffset,
        import: &Import,
    ) -> Result<Proposal<TopicResults<()>>, ApiError> {
        let broker_id = import.broker_id;
        let Some(broker) = self.image.broker(broker_id) else {
            let message = format!("broker {broker_id} is not registered; register first");
            return Err(ApiError::new(BROKER_ID_NOT_REGISTERED, message));
        };
        if broker.broker_epoch != import.broker_epoch {
            let message = format!(
                "broker {broker_id} imports with epoch {}, but its registration has epoch {}",
                import.broker_epoch, broker.broker_epoch
            );
            return Err(ApiError::new(STALE_BROKER_EPOCH, message));
        }
        if !self.image.broker_is_live(broker_id) {
            let message = format!("broker {broker_id} is fenced; it may import once unfenced");
            return Err(ApiError::new(BROKER_ID_NOT_REGISTERED, message));
        }
        let missing = import
            .producer_id_floor
            .saturating_sub(self.image.producer_id_next())
            .max(0);
        let blocks_missing =
            missing / PRODUCER_ID_BLOCK_SIZE + i64::from(missing % PRODUCER_ID_BLOCK_SIZE != 0);
        if blocks_missing > IMPORT_BLOCKS_MAX {
            let message = format!(
                "producer id floor {} is too far above the allocator's {}",
                import.producer_id_floor,
                self.image.producer_id_next()
            );
            return Err(ApiError::new(UNKNOWN_SERVER_ERROR, message));
        }
        let repeated = duplicates(import.topics.iter().map(|topic| topic.name.as_str()));
        let mut batch = self.batch(index);
        let mut results = Vec::with_capacity(import.topics.len());
        for topic in &import.topics {
            let result = if repeated.contains(&topic.name) {
                Err(duplicate_error(&topic.name))
            } else {
                topic_import(&mut batch, broker_id, topic)
            };
            results.push((topic.name.clone(), result));
        }
        for _ in 0..blocks_missing {
            let next_block_start = batch.image().producer_id_next() + PRODUCER_ID_BLOCK_SIZE;
            batch.push(MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch: import.broker_epoch,
                next_block_start,
            });
        }
        Ok(batch.finish(results))
    }
}

fn topic_import(
    batch: &mut super::Batch<'_>,
    broker_id: BrokerId,
    topic: &TopicImport,
) -> Result<(), ApiError> {
    topic_name_validate(&topic.name)?;
    match batch.image().topic_id(&topic.name) {
        Some(topic_id) if topic_id == topic.topic_id => return Ok(()), // imported before
        Some(_) => {
            let message = format!("topic {:?} exists under another id", topic.name);
            return Err(ApiError::new(TOPIC_ALREADY_EXISTS, message));
        }
        None => {}
    }
    if topic.topic_id.0 == 0 || batch.image().topic(topic.topic_id).is_some() {
        let message = format!(
            "topic {:?}: id {:032x} is zero or another topic's",
            topic.name, topic.topic_id.0
        );
        return Err(ApiError::new(INVALID_REQUEST, message));
    }
    partition_count_check(topic.partition_count)?;
    let configs = topic_configs_validate(&topic.configs)?;
    batch.push(MetadataRecord::Topic {
        name: topic.name.clone(),
        topic_id: topic.topic_id,
    });
    for (key, value) in configs {
        batch.push(MetadataRecord::Config {
            topic_id: topic.topic_id,
            key,
            value: Some(value),
        });
    }
    let assignment = vec![vec![broker_id]; topic.partition_count as usize];
    partitions_push(batch, topic.topic_id, 0, assignment);
    Ok(())
}
