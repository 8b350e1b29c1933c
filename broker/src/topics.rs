//! The topics this broker hosts: their metadata (persisted in one small file in the data dir) and
//! their partitions' logs.
//!
//! Crash safety by ordering. Create: open the partition logs first, then persist the metadata; a
//! crash between the two leaves orphan directories, which the next start removes. Delete: persist
//! the metadata without the topic first, then remove the directories; a crash between the two again
//! leaves only orphans. The metadata file is replaced atomically (`runtime::disk::write_atomic`).

use crate::partition::Partition;
use crate::topic_config::{
    log_config, topic_configs_validate, topic_name_validate, TopicConfigError,
};
use runtime::Disk;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{LogError, PartitionLog};

/// The metadata file, in the data dir's root.
pub const METADATA_FILE: &str = "gregor-topics.json";
/// Kafka's limit on partitions per topic is effectively none; ours bounds memory and open files.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partition_count: i32,
    pub configs: BTreeMap<String, String>,
    /// The partitions whose replicas include this broker, the only ones with a local log.
    /// `None` hosts every partition: internal topics, and the topics of a data dir written
    /// before the metadata log existed until their import (`cluster_mode::legacy_import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted: Option<BTreeSet<i32>>,
}

impl TopicMetadata {
    fn hosted_set(&self) -> BTreeSet<i32> {
        self.hosted_indices().into_iter().collect()
    }

    /// The partitions with a local log, ascending.
    pub fn hosted_indices(&self) -> Vec<i32> {
        match &self.hosted {
            None => (0..self.partition_count).collect(),
            Some(hosted) => hosted.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetadataFile {
    topics: Vec<TopicMetadata>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Config(#[from] TopicConfigError),
    #[error("topic {name:?} already exists")]
    Exists { name: String },
    #[error("topic {name:?} does not exist")]
    Unknown { name: String },
    #[error("partition count {count} is invalid: {reason}")]
    Partitions { count: i32, reason: &'static str },
    #[error("replication factor {factor} is invalid: this cluster has {brokers} broker(s)")]
    ReplicationFactor { factor: i16, brokers: usize },
    #[error("storage error in {path}: {source}")]
    Storage { path: PathBuf, source: LogError },
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("topic {name:?} is internal to the broker")]
    Internal { name: String },
    /// The broker does not start: serving the partition's groups would serve an older state.
    #[error(
        "replaying {topic}-{partition} failed at offset {offset} after {attempts} reads: {reason}"
    )]
    OffsetsReplay {
        /// `__consumer_offsets` or `__transaction_state`.
        topic: &'static str,
        partition: i32,
        offset: i64,
        attempts: u32,
        reason: String,
    },
}

#[derive(Debug)]
struct Topic {
    metadata: TopicMetadata,
    /// By partition index: the hosted ones.
    partitions: BTreeMap<i32, Arc<Partition>>,
}

#[derive(Debug)]
pub struct Topics {
    disk: Arc<dyn Disk>,
    data_dir: PathBuf,
    planted: Option<crate::planted::Bug>,
    topics: BTreeMap<String, Topic>,
}

/// Internal topics belong to the broker (`__consumer_offsets`): listed with `is_internal`, never
/// produced to, deleted or grown by users (growing would move groups and lose their offsets).
pub fn is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == crate::txn::TRANSACTION_STATE_TOPIC
}

/// A partition's directory: `<data_dir>/<topic>-<index>`, as Kafka names them.
pub fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl Topics {
    /// Loads the metadata, recovers every partition's log, and removes orphan directories.
    pub fn open(
        disk: Arc<dyn Disk>,
        data_dir: PathBuf,
        now_ms: i64,
        planted: Option<crate::planted::Bug>,
    ) -> Result<Topics, TopicError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TopicError::Io { path, source }
        };
        disk.create_dir_all(&data_dir).map_err(io(&data_dir))?;
        let metadata_path = data_dir.join(METADATA_FILE);
        let file: MetadataFile = if disk.exists(&metadata_path) {
            // The file has no checksum: a bit flipped in transit could rename a topic and make
            // its directories orphans, so only bytes that read the same twice are believed.
            let bytes = runtime::disk::read_all_stable(&*disk, &metadata_path)
                .map_err(io(&metadata_path))?;
            serde_json::from_slice(&bytes).map_err(|error| TopicError::Corrupt {
                path: metadata_path.clone(),
                message: error.to_string(),
            })?
        } else {
            MetadataFile::default()
        };
        let mut topics = Topics {
            disk,
            data_dir,
            planted,
            topics: BTreeMap::new(),
        };
        for metadata in file.topics {
            let partitions = metadata
                .hosted_indices()
                .into_iter()
                .map(|index| Ok((index, topics.partition_open(&metadata, index, now_ms)?)))
                .collect::<Result<BTreeMap<_, _>, TopicError>>()?;
            topics.topics.insert(
                metadata.name.clone(),
                Topic {
                    metadata,
                    partitions,
                },
            );
        }
        topics.orphans_remove()?;
        Ok(topics)
    }

    fn partition_open(
        &self,
        metadata: &TopicMetadata,
        index: i32,
        now_ms: i64,
    ) -> Result<Arc<Partition>, TopicError> {
        let dir = partition_dir(&self.data_dir, &metadata.name, index);
        let storage = |source| TopicError::Storage {
            path: dir.clone(),
            source,
        };
        let config = log_config(&metadata.configs);
        let mut log = self
            .log_open(dir.clone(), config, now_ms)
            .map_err(storage)?;
        // Whatever recovery found may still sit only in the page cache (a process crash, not a
        // power loss): make it durable before anyone can read it.
        log.flush().map_err(storage)?;
        Ok(Partition::start(
            metadata.name.clone(),
            index,
            log,
            self.planted,
        ))
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn log_open(
        &self,
        dir: PathBuf,
        config: storage::LogConfig,
        now_ms: i64,
    ) -> Result<PartitionLog, LogError> {
        PartitionLog::open(self.disk.clone(), dir, config, now_ms)
    }

    #[cfg(feature = "planted-bugs")]
    fn log_open(
        &self,
        dir: PathBuf,
        config: storage::LogConfig,
        now_ms: i64,
    ) -> Result<PartitionLog, LogError> {
        let planted = self.planted.and_then(crate::planted::Bug::storage);
        PartitionLog::open_planted(self.disk.clone(), dir, config, now_ms, planted)
    }

    fn orphans_remove(&self) -> Result<(), TopicError> {
        let entries = self
            .disk
            .list(&self.data_dir)
            .map_err(|source| TopicError::Io {
                path: self.data_dir.clone(),
                source,
            })?;
        for entry in entries {
            let Some(name) = entry.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if !self.disk.is_dir(&entry) {
                continue;
            }
            let known = self
                .topics
                .get(topic)
                .is_some_and(|t| t.partitions.contains_key(&index));
            if !known {
                tracing::warn!(dir = %entry.display(), "removing orphan partition directory");
                self.disk
                    .remove_dir_all(&entry)
                    .map_err(|source| TopicError::Io {
                        path: entry.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    fn metadata_persist(&self) -> Result<(), TopicError> {
        let file = MetadataFile {
            topics: self.topics.values().map(|t| t.metadata.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("metadata serializes");
        let path = self.data_dir.join(METADATA_FILE);
        runtime::disk::write_atomic(&*self.disk, &path, &bytes)
            .map_err(|source| TopicError::Io { path, source })
    }

    /// Validates a creation without performing it (CreateTopics `validate_only`, and the first
    /// step of `create`). Returns the normalised config overrides.
    pub fn create_check(
        &self,
        name: &str,
        partition_count: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        topic_name_validate(name)?;
        if self.topics.contains_key(name) {
            return Err(TopicError::Exists {
                name: name.to_string(),
            });
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partition_count) {
            let reason = "must be between 1 and 10000";
            return Err(TopicError::Partitions {
                count: partition_count,
                reason,
            });
        }
        Ok(topic_configs_validate(configs)?)
    }

    pub fn create(
        &mut self,
        name: &str,
        partition_count: i32,
        configs: &BTreeMap<String, String>,
        topic_id: [u8; 16],
        now_ms: i64,
    ) -> Result<TopicMetadata, TopicError> {
        self.create_hosted(name, partition_count, configs, topic_id, None, now_ms)
    }

    /// `create`, hosting only the partitions in `hosted` (`None` hosts all).
    pub fn create_hosted(
        &mut self,
        name: &str,
        partition_count: i32,
        configs: &BTreeMap<String, String>,
        topic_id: [u8; 16],
        hosted: Option<BTreeSet<i32>>,
        now_ms: i64,
    ) -> Result<TopicMetadata, TopicError> {
        let configs = self.create_check(name, partition_count, configs)?;
        let metadata = TopicMetadata {
            name: name.to_string(),
            topic_id,
            partition_count,
            configs,
            hosted,
        };
        let partitions = metadata
            .hosted_indices()
            .into_iter()
            .map(|index| Ok((index, self.partition_open(&metadata, index, now_ms)?)))
            .collect::<Result<BTreeMap<_, _>, TopicError>>()?;
        self.topics.insert(
            name.to_string(),
            Topic {
                metadata: metadata.clone(),
                partitions,
            },
        );
        if let Err(error) = self.metadata_persist() {
            if let Some(topic) = self.topics.remove(name) {
                topic
                    .partitions
                    .values()
                    .for_each(|partition| partition.delete());
            }
            return Err(error);
        }
        tracing::info!(topic = name, partitions = partition_count, "topic created");
        Ok(metadata)
    }

    pub fn delete(&mut self, name: &str) -> Result<TopicMetadata, TopicError> {
        if is_internal(name) {
            return Err(TopicError::Internal {
                name: name.to_string(),
            });
        }
        self.remove(name)
    }

    /// `delete` for the reconciler, which may also remove an internal topic the image holds
    /// (a replicated `__consumer_offsets`) or no longer lets the node keep as its own.
    pub fn remove(&mut self, name: &str) -> Result<TopicMetadata, TopicError> {
        let Some(topic) = self.topics.remove(name) else {
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        };
        if let Err(error) = self.metadata_persist() {
            self.topics.insert(name.to_string(), topic);
            return Err(error);
        }
        for partition in topic.partitions.values() {
            partition.delete();
            let dir = partition_dir(&self.data_dir, name, partition.index);
            if let Err(error) = self.disk.remove_dir_all(&dir) {
                // The metadata no longer names it: the next start removes it as an orphan.
                tracing::warn!(dir = %dir.display(), %error, "could not remove deleted partition");
            }
        }
        let _ = self.disk.sync_dir(&self.data_dir);
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.metadata)
    }

    /// Brings a topic's partition count and hosted set to the image's. Opens the
    /// logs of newly hosted partitions first, then persists (a crash between leaves orphans the
    /// next start removes, and the reconciler opens them again). Hosted partitions only grow:
    /// there is no reassignment yet.
    pub fn hosted_grow(
        &mut self,
        name: &str,
        partition_count: i32,
        hosted: BTreeSet<i32>,
        now_ms: i64,
    ) -> Result<(), TopicError> {
        let Some(topic) = self.topics.get(name) else {
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        };
        let mut metadata = topic.metadata.clone();
        metadata.partition_count = partition_count;
        metadata.hosted = Some(hosted.clone());
        let added = hosted
            .iter()
            .filter(|index| !topic.partitions.contains_key(index))
            .map(|index| Ok((*index, self.partition_open(&metadata, *index, now_ms)?)))
            .collect::<Result<Vec<_>, TopicError>>()?;
        let topic = self.topics.get_mut(name).expect("checked above");
        let previous = std::mem::replace(&mut topic.metadata, metadata);
        topic.partitions.extend(added);
        if let Err(error) = self.metadata_persist() {
            let topic = self.topics.get_mut(name).expect("present");
            for index in hosted.difference(&previous.hosted_set()) {
                if let Some(partition) = topic.partitions.remove(index) {
                    partition.delete();
                }
            }
            topic.metadata = previous;
            return Err(error);
        }
        Ok(())
    }

    /// Validates a topic's new overrides without applying them (AlterConfigs `validate_only`,
    /// and the first step of `configs_replace`). Returns them normalised.
    pub fn configs_check(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::Internal {
                name: name.to_string(),
            });
        }
        if !self.topics.contains_key(name) {
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        }
        Ok(topic_configs_validate(configs)?)
    }

    /// Replaces a topic's overrides (AlterConfigs): persisted first, then applied to every live
    /// partition, whose next append or maintenance pass obeys them. A failed persist changes
    /// nothing, so memory never holds a config a restart would not bring back.
    pub fn configs_replace(
        &mut self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicMetadata, TopicError> {
        let configs = self.configs_check(name, configs)?;
        let topic = self.topics.get_mut(name).expect("checked above");
        let previous = std::mem::replace(&mut topic.metadata.configs, configs.clone());
        if let Err(error) = self.metadata_persist() {
            self.topics.get_mut(name).expect("present").metadata.configs = previous;
            return Err(error);
        }
        let topic = &self.topics[name];
        let config = log_config(&configs);
        for partition in topic.partitions.values() {
            partition.log().config_update(config.clone());
        }
        tracing::info!(topic = name, ?configs, "topic configs replaced");
        Ok(topic.metadata.clone())
    }

    pub fn get(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name).map(|topic| &topic.metadata)
    }

    pub fn list(&self) -> impl Iterator<Item = &TopicMetadata> {
        self.topics.values().map(|topic| &topic.metadata)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topics.get(topic)?.partitions.get(&index).cloned()
    }

    /// Every partition, for background work (retention, compaction, shutdown flush).
    pub fn partitions_all(&self) -> Vec<Arc<Partition>> {
        self.topics
            .values()
            .flat_map(|topic| topic.partitions.values().cloned())
            .collect()
    }
}
