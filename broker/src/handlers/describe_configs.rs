//! DescribeConfigs for topics (every key gregor understands, with its source) and for this broker.

use crate::broker::Broker;
use crate::handlers::create_topics::{CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use crate::handlers::errors::NONE;
use crate::topic_config::{topic_config_value, TOPIC_CONFIG_KEYS};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `ConfigResource.Type`.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's `ConfigSource.STATIC_BROKER_CONFIG`.
const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's `ConfigDef.Type` codes (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => TYPE_LIST,
        "message.timestamp.type" => TYPE_STRING,
        "max.message.bytes" | "min.insync.replicas" | "num.partitions" | "broker.id" => TYPE_INT,
        "auto.create.topics.enable" | "unclean.leader.election.enable" => TYPE_BOOLEAN,
        "log.dirs" => TYPE_STRING,
        _ => TYPE_LONG,
    }
}

fn entry(key: &str, value: String, source: i8) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(key.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(source == CONFIG_SOURCE_STATIC_BROKER)
        .with_config_source(source)
        .with_config_type(config_type(key))
}

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    _version: i16,
) -> ResponseKind {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(metadata) = broker
                        .topics()
                        .get(resource.resource_name.as_str())
                        .cloned()
                    else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let configs = TOPIC_CONFIG_KEYS
                        .iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, _)| {
                            let (value, is_default) =
                                topic_config_value(&metadata.configs, key).expect("known");
                            entry(
                                key,
                                value,
                                if is_default {
                                    CONFIG_SOURCE_DEFAULT
                                } else {
                                    CONFIG_SOURCE_TOPIC
                                },
                            )
                        })
                        .collect();
                    result.with_error_code(NONE).with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let config = &broker.config;
                    let configs = [
                        ("broker.id", config.node_id.to_string()),
                        ("log.dirs", config.data_dir.display().to_string()),
                        (
                            "auto.create.topics.enable",
                            config.auto_create_topics.to_string(),
                        ),
                        ("num.partitions", config.default_partitions.to_string()),
                    ]
                    .into_iter()
                    .filter(|(key, _)| wanted(key))
                    .map(|(key, value)| entry(key, value, CONFIG_SOURCE_STATIC_BROKER))
                    .collect();
                    result.with_error_code(NONE).with_configs(configs)
                }
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only topic and broker resources are supported",
                    ))),
            }
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}
