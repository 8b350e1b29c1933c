//! CreateTopics. A single node hosts every replica, so a replication factor above 1 (or a manual
//! assignment naming another broker) is refused with INVALID_REPLICATION_FACTOR /
//! INVALID_REPLICA_ASSIGNMENT rather than silently under-replicated.

use crate::broker::Broker;
use crate::handlers::errors::{topic_error_code, NONE};
use crate::topic_config::topic_config_value;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;
use wire::ResponseKind;

/// Kafka's `ConfigSource`: set on the topic, or the default.
pub const CONFIG_SOURCE_TOPIC: i8 = 1;
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

pub fn handle(broker: &Arc<Broker>, request: CreateTopicsRequest, version: i16) -> ResponseKind {
    let results = request
        .topics
        .into_iter()
        .map(|topic| topic_create(broker, topic, request.validate_only, version))
        .collect();
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}

fn topic_create(
    broker: &Arc<Broker>,
    topic: CreatableTopic,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
    let name = topic.name.0.as_str().to_string();
    let result = CreatableTopicResult::default().with_name(topic.name.clone());
    let fail = |error: ResponseError, message: String| {
        tracing::info!(topic = %name, %message, "create topic refused");
        result
            .clone()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    };
    let node_id = broker.config.node_id;
    if topic.replication_factor > 1 {
        return fail(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} exceeds the 1 available broker",
                topic.replication_factor
            ),
        );
    }
    if topic.replication_factor == 0 || topic.replication_factor < -1 {
        return fail(
            ResponseError::InvalidReplicationFactor,
            "replication factor must be -1 or >= 1".into(),
        );
    }
    let partition_count = if topic.assignments.is_empty() {
        topic.num_partitions
    } else {
        topic.assignments.len() as i32
    };
    let partition_count = if partition_count == -1 {
        broker.config.default_partitions
    } else {
        partition_count
    };
    if topic
        .assignments
        .iter()
        .any(|a| a.broker_ids.iter().any(|id| id.0 != node_id) || a.broker_ids.len() != 1)
    {
        return fail(
            ResponseError::InvalidReplicaAssignment,
            format!("assignments may only name broker {node_id}, once"),
        );
    }
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let Some(value) = &config.value else { continue };
        configs.insert(config.name.as_str().to_string(), value.as_str().to_string());
    }
    let outcome = if validate_only {
        broker
            .topics()
            .create_check(&name, partition_count, &configs)
            .map(|configs| (configs, [0u8; 16]))
    } else {
        let topic_id = broker.topic_id_new();
        let now_ms = broker.clock.wall_ms();
        broker
            .topics()
            .create(&name, partition_count, &configs, topic_id, now_ms)
            .map(|m| (m.configs, m.topic_id))
    };
    match outcome {
        Ok((configs, topic_id)) => {
            let mut result = result
                .with_error_code(NONE)
                .with_topic_id(Uuid::from_bytes(topic_id))
                .with_num_partitions(partition_count)
                .with_replication_factor(1);
            if version >= 5 {
                result = result.with_configs(Some(configs_describe(&configs)));
            }
            result
        }
        Err(error) => fail(topic_error_code(&error), error.to_string()),
    }
}

pub fn configs_describe(overrides: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    crate::topic_config::TOPIC_CONFIG_KEYS
        .iter()
        .map(|(key, _)| {
            let (value, is_default) = topic_config_value(overrides, key).expect("known key");
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(key))
                .with_value(Some(StrBytes::from_string(value)))
                .with_config_source(if is_default {
                    CONFIG_SOURCE_DEFAULT
                } else {
                    CONFIG_SOURCE_TOPIC
                })
        })
        .collect()
}
