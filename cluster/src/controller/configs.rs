//! Topic config changes (IncrementalAlterConfigs' SET and DELETE; the broker turns
//! AlterConfigs, which replaces the whole set, into SETs and DELETEs). The result is validated
//! as a whole set, as the single-node broker does, and written as one Config record per key
//! that changed. A topic that starts allowing unclean election gets its offline partitions
//! elected at once.

use super::election::{offline_elect, unclean_allowed};
use super::errors::{ApiError, INVALID_CONFIG, INVALID_REQUEST, UNKNOWN_TOPIC_OR_PARTITION};
use super::topics::TopicResults;
use super::{Batch, Controller, Proposal};
use crate::image::MetadataOffset;
use crate::planted::PlantedBug;
use crate::records::MetadataRecord;
use crate::topic_config::{topic_config_value, topic_configs_validate, TOPIC_CONFIG_KEYS_IGNORED};
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Set {
        key: String,
        value: String,
    },
    /// Back to the default.
    Delete {
        key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigAlter {
    pub topic: String,
    pub changes: Vec<ConfigChange>,
}

impl Controller {
    pub fn configs_alter(
        &mut self,
        index: MetadataOffset,
        alters: &[ConfigAlter],
        validate_only: bool,
    ) -> Proposal<TopicResults<()>> {
        let mut seen = BTreeSet::new();
        let planted = self.planted;
        let mut batch = self.batch(index);
        let mut results = Vec::with_capacity(alters.len());
        for alter in alters {
            let result = if seen.insert(alter.topic.as_str()) {
                config_alter(&mut batch, alter, validate_only, planted)
            } else {
                let message = format!("topic {:?} appears more than once", alter.topic);
                Err(ApiError::new(INVALID_REQUEST, message))
            };
            results.push((alter.topic.clone(), result));
        }
        batch.finish(results)
    }
}

fn config_alter(
    batch: &mut Batch<'_>,
    alter: &ConfigAlter,
    validate_only: bool,
    planted: Option<PlantedBug>,
) -> Result<(), ApiError> {
    let Some(topic) = batch.image().topic_by_name(&alter.topic) else {
        let message = format!("topic {:?} does not exist", alter.topic);
        return Err(ApiError::new(UNKNOWN_TOPIC_OR_PARTITION, message));
    };
    let (topic_id, current) = (topic.topic_id, topic.configs.clone());
    let mut overrides = current.clone();
    for change in &alter.changes {
        match change {
            ConfigChange::Set { key, value } => {
                overrides.insert(key.clone(), value.clone());
            }
            ConfigChange::Delete { key } => {
                let known = TOPIC_CONFIG_KEYS_IGNORED.contains(&key.as_str())
                    || topic_config_value(&overrides, key).is_some();
                if !known {
                    let message = format!("unknown topic config {key:?}; it cannot be deleted");
                    return Err(ApiError::new(INVALID_CONFIG, message));
                }
                overrides.remove(key);
            }
        }
    }
    let overrides = topic_configs_validate(&overrides)?;
    if validate_only {
        return Ok(());
    }
    let unclean_before = unclean_allowed(batch.image(), topic_id);
    for key in current.keys().filter(|key| !overrides.contains_key(*key)) {
        let key = key.clone();
        batch.push(MetadataRecord::Config {
            topic_id,
            key,
            value: None,
        });
    }
    for (key, value) in &overrides {
        if current.get(key) != Some(value) {
            let (key, value) = (key.clone(), Some(value.clone()));
            batch.push(MetadataRecord::Config {
                topic_id,
                key,
                value,
            });
        }
    }
    if !unclean_before && unclean_allowed(batch.image(), topic_id) {
        offline_elect(batch, Some(topic_id), planted);
    }
    Ok(())
}
