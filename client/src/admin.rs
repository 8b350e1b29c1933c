//! `Admin`: topics, their configuration and their records, as `gregor topic
//! create|list|describe|alter|delete|delete-records` needs, and groups' offsets.
//!
//! Topic changes go to the controller (in KRaft any broker forwards them, so without a known
//! controller any broker will do); descriptions come from Metadata and DescribeConfigs on any
//! broker. Per-topic answers are returned per topic, so one bad name does not hide the others.
//!
//! Retrying a timed-out CreateTopics may report TOPIC_ALREADY_EXISTS for a topic the first
//! attempt did create: the outcome of a timed-out request is unknown, as everywhere in Kafka.

use crate::cluster::{Cluster, Target};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::group::{self, CommitIdentity, GroupDescription, GroupListing};
use crate::metadata::{group_by_leader, Metadata, MetadataScope, TopicMetadata, TopicPartition};
use std::collections::BTreeMap;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use wire::protocol::messages::create_partitions_request::CreatePartitionsTopic;
use wire::protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use wire::protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use wire::protocol::messages::describe_configs_request::DescribeConfigsResource;
use wire::protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig as IncrementalConfig,
};
use wire::protocol::messages::{
    AlterConfigsRequest, DeleteRecordsRequest, IncrementalAlterConfigsRequest,
};
use wire::protocol::messages::{CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest};
use wire::protocol::messages::{DescribeConfigsRequest, RequestKind, ResponseKind, TopicName};
use wire::protocol::protocol::StrBytes;

/// DescribeConfigs resource type for topics (Kafka's `ConfigResource.Type.TOPIC`).
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// DescribeConfigs config source meaning "not set anywhere; the built-in default".
const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level overrides such as `cleanup.policy=compact` or `retention.ms`.
    pub configs: BTreeMap<String, String>,
}

/// One configuration value of a topic, as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// `None` for sensitive values the broker will not disclose.
    pub value: Option<String>,
    pub read_only: bool,
    /// True when no override is set and the broker's default applies.
    pub is_default: bool,
    pub is_sensitive: bool,
}

/// One change of a topic's configuration (IncrementalAlterConfigs); other keys stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Override `key` with `value`.
    Set { key: String, value: String },
    /// Remove the override: the default applies again.
    Delete { key: String },
    /// Add items to a list-valued key (`cleanup.policy`).
    Append { key: String, value: String },
    /// Remove items from a list-valued key.
    Subtract { key: String, value: String },
}

impl ConfigChange {
    /// Kafka's `AlterConfigOp.OpType` code, key and value.
    fn wire(&self) -> (i8, &str, Option<&str>) {
        match self {
            ConfigChange::Set { key, value } => (0, key, Some(value)),
            ConfigChange::Delete { key } => (1, key, None),
            ConfigChange::Append { key, value } => (2, key, Some(value)),
            ConfigChange::Subtract { key, value } => (3, key, Some(value)),
        }
    }
}

/// Per-topic outcomes of a multi-topic operation.
pub type TopicResults = BTreeMap<String, Result<(), ClientError>>;

#[derive(Debug)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    pub fn new(client: ClientConfig) -> Admin {
        Admin {
            cluster: Cluster::new(client),
        }
    }

    /// Creates one topic; `Err` carries the broker's reason (e.g. TOPIC_ALREADY_EXISTS).
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let topic = NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs,
        };
        let mut results = self.create_topics(vec![topic]).await?;
        results
            .remove(name)
            .unwrap_or_else(|| Err(missing("CreateTopics", name)))
    }

    /// Creates topics; the outer `Err` means no answer was had at all.
    pub async fn create_topics(
        &mut self,
        topics: Vec<NewTopic>,
    ) -> Result<TopicResults, ClientError> {
        let timeout_ms = self.timeout_ms();
        let creatable = topics
            .iter()
            .map(|topic| {
                let configs = topic
                    .configs
                    .iter()
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect();
                CreatableTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_num_partitions(topic.partitions)
                    .with_replication_factor(topic.replication_factor)
                    .with_configs(configs)
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(creatable)
            .with_timeout_ms(timeout_ms);
        let response = match self
            .request_controller(RequestKind::CreateTopics(request))
            .await?
        {
            ResponseKind::CreateTopics(response) => response,
            other => unreachable!("CreateTopics answered by {other:?}"),
        };
        let answers = response.topics.iter().map(|topic| {
            let context = || {
                format!(
                    "create topic {}: {}",
                    topic.name.as_str(),
                    message(&topic.error_message)
                )
            };
            (
                topic.name.to_string(),
                ClientError::from_code(topic.error_code, context),
            )
        });
        Ok(self.results_collect(
            topics.iter().map(|topic| topic.name.as_str()),
            answers,
            "CreateTopics",
        ))
    }

    /// Deletes topics by name.
    pub async fn delete_topics(&mut self, names: &[String]) -> Result<TopicResults, ClientError> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(names.iter().map(|name| topic_name(name)).collect())
            .with_timeout_ms(self.timeout_ms());
        let response = match self
            .request_controller(RequestKind::DeleteTopics(request))
            .await?
        {
            ResponseKind::DeleteTopics(response) => response,
            other => unreachable!("DeleteTopics answered by {other:?}"),
        };
        let answers = response.responses.iter().filter_map(|topic| {
            let name = topic.name.as_ref()?.to_string();
            let context = || format!("delete topic {name}: {}", message(&topic.error_message));
            let result = ClientError::from_code(topic.error_code, context);
            Some((name, result))
        });
        Ok(self.results_collect(names.iter().map(String::as_str), answers, "DeleteTopics"))
    }

    /// Grows `topic` to `partition_count` partitions in total.
    pub async fn create_partitions(
        &mut self,
        topic: &str,
        partition_count: i32,
    ) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(partition_count)])
            .with_timeout_ms(self.timeout_ms());
        let response = match self
            .request_controller(RequestKind::CreatePartitions(request))
            .await?
        {
            ResponseKind::CreatePartitions(response) => response,
            other => unreachable!("CreatePartitions answered by {other:?}"),
        };
        let answers = response.results.iter().map(|result| {
            let context = || {
                format!(
                    "create partitions of {topic}: {}",
                    message(&result.error_message)
                )
            };
            (
                result.name.to_string(),
                ClientError::from_code(result.error_code, context),
            )
        });
        let mut results = self.results_collect([topic], answers, "CreatePartitions");
        results
            .remove(topic)
            .expect("results_collect answers every name")
    }

    /// Names of all non-internal topics, sorted.
    pub async fn list_topics(&mut self) -> Result<Vec<String>, ClientError> {
        let metadata = self.cluster.metadata_refresh(MetadataScope::All).await?;
        Ok(metadata
            .topics
            .values()
            .filter(|topic| !topic.is_internal)
            .map(|topic| topic.name.clone())
            .collect())
    }

    /// Partitions, leaders, replicas and ISR of each named topic; a missing topic is an error.
    pub async fn describe_topics(
        &mut self,
        names: &[String],
    ) -> Result<Vec<TopicMetadata>, ClientError> {
        let metadata = self
            .cluster
            .metadata_refresh(MetadataScope::Topics(names.to_vec()))
            .await?;
        names
            .iter()
            .map(|name| {
                let topic = metadata
                    .topics
                    .get(name)
                    .ok_or_else(|| missing("Metadata", name))?;
                let code = topic.error.map_or(0, |error| error.code());
                ClientError::from_code(code, || format!("describe topic {name}"))?;
                Ok(topic.clone())
            })
            .collect()
    }

    /// Brokers, controller and every topic, freshly fetched.
    pub async fn describe_cluster(&mut self) -> Result<Metadata, ClientError> {
        Ok(self
            .cluster
            .metadata_refresh(MetadataScope::All)
            .await?
            .clone())
    }

    /// Every configuration value of `topic`, overrides and defaults alike.
    pub async fn describe_configs(
        &mut self,
        topic: &str,
    ) -> Result<BTreeMap<String, ConfigEntry>, ClientError> {
        let resource = DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None);
        let request = DescribeConfigsRequest::default().with_resources(vec![resource]);
        let response = match self
            .request_retrying(Target::Any, RequestKind::DescribeConfigs(request))
            .await?
        {
            ResponseKind::DescribeConfigs(response) => response,
            other => unreachable!("DescribeConfigs answered by {other:?}"),
        };
        let result = response
            .results
            .iter()
            .find(|result| result.resource_name.as_str() == topic)
            .ok_or_else(|| missing("DescribeConfigs", topic))?;
        ClientError::from_code(result.error_code, || {
            format!(
                "describe configs of {topic}: {}",
                message(&result.error_message)
            )
        })?;
        let entries = result.configs.iter().map(|config| {
            let entry = ConfigEntry {
                value: config.value.as_ref().map(ToString::to_string),
                read_only: config.read_only,
                is_default: config.config_source == CONFIG_SOURCE_DEFAULT,
                is_sensitive: config.is_sensitive,
            };
            (config.name.to_string(), entry)
        });
        Ok(entries.collect())
    }

    /// Replaces every override of `topic` with `configs` (AlterConfigs): keys left out return
    /// to their defaults. Prefer `incremental_alter_configs` to change a few keys.
    pub async fn alter_configs(
        &mut self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(key.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = AlterConfigsRequest::default().with_resources(vec![resource]);
        let response = match self
            .request_controller(RequestKind::AlterConfigs(request))
            .await?
        {
            ResponseKind::AlterConfigs(response) => response,
            other => unreachable!("AlterConfigs answered by {other:?}"),
        };
        let result = response
            .responses
            .iter()
            .find(|result| result.resource_name.as_str() == topic)
            .ok_or_else(|| missing("AlterConfigs", topic))?;
        ClientError::from_code(result.error_code, || {
            format!(
                "alter configs of {topic}: {}",
                message(&result.error_message)
            )
        })
    }

    /// Applies `changes` to `topic`'s configuration (IncrementalAlterConfigs), all or none.
    pub async fn incremental_alter_configs(
        &mut self,
        topic: &str,
        changes: &[ConfigChange],
    ) -> Result<(), ClientError> {
        let configs = changes
            .iter()
            .map(|change| {
                let (operation, key, value) = change.wire();
                IncrementalConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(operation)
                    .with_value(value.map(|value| StrBytes::from_string(value.to_string())))
            })
            .collect();
        let resource = IncrementalResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(configs);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = match self
            .request_controller(RequestKind::IncrementalAlterConfigs(request))
            .await?
        {
            ResponseKind::IncrementalAlterConfigs(response) => response,
            other => unreachable!("IncrementalAlterConfigs answered by {other:?}"),
        };
        let result = response
            .responses
            .iter()
            .find(|result| result.resource_name.as_str() == topic)
            .ok_or_else(|| missing("IncrementalAlterConfigs", topic))?;
        ClientError::from_code(result.error_code, || {
            format!(
                "alter configs of {topic}: {}",
                message(&result.error_message)
            )
        })
    }

    /// Deletes the records of each partition below its offset (-1: the high watermark) by moving
    /// its log start offset up (DeleteRecords, sent to each partition's leader). Returns each
    /// partition's new log start offset (its low watermark), or why it was refused.
    pub async fn delete_records(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Result<i64, ClientError>>, ClientError> {
        let topics: Vec<String> = offsets.keys().map(|p| p.topic.clone()).collect();
        let metadata = self.cluster.metadata_for(&topics).await?;
        let items = offsets.iter().map(|(p, offset)| (p.clone(), *offset));
        let routed = group_by_leader(metadata, items.collect());
        let mut results: BTreeMap<TopicPartition, Result<i64, ClientError>> = routed
            .unroutable
            .into_iter()
            .map(|(partition, _, error)| (partition, Err(error)))
            .collect();
        for (node_id, partitions) in routed.by_node {
            let request = delete_records_request(&partitions, self.timeout_ms());
            let response = self
                .cluster
                .request(Target::Node(node_id), RequestKind::DeleteRecords(request))
                .await;
            let response = match response {
                Ok(ResponseKind::DeleteRecords(response)) => response,
                Ok(other) => unreachable!("DeleteRecords answered by {other:?}"),
                Err(error) => {
                    for (partition, _) in partitions {
                        results.insert(partition, Err(error.clone()));
                    }
                    continue;
                }
            };
            for topic in &response.topics {
                for answer in &topic.partitions {
                    let partition =
                        TopicPartition::new(topic.name.to_string(), answer.partition_index);
                    let result = ClientError::from_code(answer.error_code, || {
                        format!("delete records of {partition}")
                    })
                    .map(|()| answer.low_watermark);
                    results.insert(partition, result);
                }
            }
        }
        // Leaders answer for what they lead; anything still missing is a protocol error.
        Ok(offsets
            .keys()
            .map(|partition| {
                let result = results
                    .remove(partition)
                    .unwrap_or_else(|| Err(missing("DeleteRecords", &partition.to_string())));
                (partition.clone(), result)
            })
            .collect())
    }

    /// Deletes a group's committed offsets of `partitions`; see `group::offsets_delete`.
    pub async fn delete_group_offsets(
        &mut self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Result<(), ClientError>>, ClientError> {
        group::offsets_delete(&mut self.cluster, &mut None, group_id, partitions).await
    }

    /// Every consumer group in the cluster.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>, ClientError> {
        group::groups_list(&mut self.cluster).await
    }

    /// A group's state and members, with their assignments decoded.
    pub async fn describe_group(
        &mut self,
        group_id: &str,
    ) -> Result<GroupDescription, ClientError> {
        group::group_describe(&mut self.cluster, &mut None, group_id).await
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&mut self, group_id: &str) -> Result<(), ClientError> {
        group::group_delete(&mut self.cluster, &mut None, group_id).await
    }

    /// A group's committed offsets: of `partitions`, or (`None`) of every partition it has.
    pub async fn group_offsets(
        &mut self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
        group::offsets_fetch(&mut self.cluster, &mut None, group_id, partitions).await
    }

    /// Sets a group's committed offsets as a simple consumer would (generation -1): the
    /// coordinator accepts this only while the group has no members.
    pub async fn group_offsets_set(
        &mut self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let identity = CommitIdentity::simple();
        group::offsets_commit(&mut self.cluster, &mut None, group_id, &identity, offsets).await
    }

    /// Sends to the controller; NOT_CONTROLLER and transport failures refresh and retry.
    async fn request_controller(&mut self, body: RequestKind) -> Result<ResponseKind, ClientError> {
        self.request_retrying(Target::Controller, body).await
    }

    async fn request_retrying(
        &mut self,
        target: Target,
        body: RequestKind,
    ) -> Result<ResponseKind, ClientError> {
        let retries = self.cluster.config().retries;
        let mut attempt = 0;
        loop {
            if self.cluster.metadata_is_stale() {
                // Learning the controller is best effort: without it any broker will forward.
                let _ = self
                    .cluster
                    .metadata_refresh(MetadataScope::Topics(Vec::new()))
                    .await;
            }
            let result = self.cluster.request(target, body.clone()).await;
            let retry = match &result {
                Err(error) => error.is_retriable(),
                Ok(response) => response_is_not_controller(response),
            };
            if !retry || attempt == retries {
                return result;
            }
            attempt += 1;
            self.cluster.metadata_invalidate();
            self.cluster.backoff().await;
        }
    }

    /// One result per name asked about; a name the broker did not answer is a protocol error.
    fn results_collect<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        answers: impl Iterator<Item = (String, Result<(), ClientError>)>,
        api: &str,
    ) -> TopicResults {
        // Topics changed: the next lookup must not trust the cache.
        self.cluster.metadata_invalidate();
        let mut answers: TopicResults = answers.collect();
        names
            .into_iter()
            .map(|name| {
                let result = answers
                    .remove(name)
                    .unwrap_or_else(|| Err(missing(api, name)));
                (name.to_string(), result)
            })
            .collect()
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.cluster.config().request_timeout.as_millis()).unwrap_or(i32::MAX)
    }
}

/// Whether an admin response says "ask the controller", for every topic it names.
fn response_is_not_controller(response: &ResponseKind) -> bool {
    let not_controller = ResponseError::NotController.code();
    let codes: Vec<i16> = match response {
        ResponseKind::CreateTopics(response) => {
            response.topics.iter().map(|t| t.error_code).collect()
        }
        ResponseKind::DeleteTopics(response) => {
            response.responses.iter().map(|t| t.error_code).collect()
        }
        ResponseKind::CreatePartitions(response) => {
            response.results.iter().map(|t| t.error_code).collect()
        }
        _ => Vec::new(),
    };
    !codes.is_empty() && codes.iter().all(|code| *code == not_controller)
}

fn delete_records_request(
    partitions: &[(TopicPartition, i64)],
    timeout_ms: i32,
) -> DeleteRecordsRequest {
    let mut topics: BTreeMap<&str, Vec<DeleteRecordsPartition>> = BTreeMap::new();
    for (partition, offset) in partitions {
        topics.entry(partition.topic.as_str()).or_default().push(
            DeleteRecordsPartition::default()
                .with_partition_index(partition.partition)
                .with_offset(*offset),
        );
    }
    DeleteRecordsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    DeleteRecordsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn message(error_message: &Option<StrBytes>) -> &str {
    error_message
        .as_ref()
        .map_or("", |message| message.as_str())
}

fn missing(api: &str, name: &str) -> ClientError {
    ClientError::protocol(api, format!("response does not mention {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::messages::create_topics_response::CreatableTopicResult;
    use wire::protocol::messages::CreateTopicsResponse;

    fn create_response(codes: &[(&str, i16)]) -> ResponseKind {
        let topics = codes
            .iter()
            .map(|(name, code)| {
                CreatableTopicResult::default()
                    .with_name(topic_name(name))
                    .with_error_code(*code)
                    .with_error_message(Some(StrBytes::from_static_str("because")))
            })
            .collect();
        ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(topics))
    }

    #[test]
    fn delete_records_groups_partitions_by_topic_and_changes_carry_kafka_codes() {
        let partitions = [
            (TopicPartition::new("b", 1), 7),
            (TopicPartition::new("a", 0), -1),
            (TopicPartition::new("b", 0), 3),
        ];
        let request = delete_records_request(&partitions, 500);
        let rendered: Vec<String> = request
            .topics
            .iter()
            .map(|topic| {
                let partitions: Vec<String> = topic
                    .partitions
                    .iter()
                    .map(|p| format!("{}@{}", p.partition_index, p.offset))
                    .collect();
                format!("{} [{}]", topic.name.as_str(), partitions.join(" "))
            })
            .collect();
        assert_eq!(rendered, ["a [0@-1]", "b [1@7 0@3]"]);
        assert_eq!(request.timeout_ms, 500);
        let key = || "cleanup.policy".to_string();
        let value = || "compact".to_string();
        let codes: Vec<(i8, bool)> = [
            ConfigChange::Set {
                key: key(),
                value: value(),
            },
            ConfigChange::Delete { key: key() },
            ConfigChange::Append {
                key: key(),
                value: value(),
            },
            ConfigChange::Subtract {
                key: key(),
                value: value(),
            },
        ]
        .iter()
        .map(|change| {
            let (code, _, value) = change.wire();
            (code, value.is_some())
        })
        .collect();
        assert_eq!(codes, [(0, true), (1, false), (2, true), (3, true)]);
    }

    #[test]
    fn only_an_all_not_controller_answer_is_retried() {
        assert!(response_is_not_controller(&create_response(&[
            ("a", 41),
            ("b", 41)
        ])));
        assert!(!response_is_not_controller(&create_response(&[
            ("a", 41),
            ("b", 0)
        ])));
        assert!(!response_is_not_controller(&create_response(&[])));
    }

    #[test]
    fn per_topic_results_name_every_topic_asked_about() {
        let mut admin = Admin::new(ClientConfig::new(["127.0.0.1:1"]));
        let answers = vec![
            (
                "b".to_string(),
                ClientError::from_code(36, || "create topic b: because".to_string()),
            ),
            ("a".to_string(), Ok(())),
            ("stranger".to_string(), Ok(())),
        ];
        let results = admin.results_collect(["a", "b", "c"], answers.into_iter(), "CreateTopics");
        let rendered: Vec<String> = results
            .iter()
            .map(|(name, result)| match result {
                Ok(()) => format!("{name}: ok"),
                Err(error) => format!("{name}: {error}"),
            })
            .collect();
        assert_eq!(
            rendered,
            [
                "a: ok",
                "b: create topic b: because: TopicAlreadyExists (code 36)",
                "c: protocol violation by CreateTopics: response does not mention c",
            ]
        );
        assert!(admin.cluster.metadata_is_stale());
    }
}
