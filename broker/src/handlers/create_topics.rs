//! What CreateTopics answers besides the controller's outcome (the handler is in `admin`): the
//! topic's configs as Kafka describes them, shared with DescribeConfigs.

use crate::topic_config::topic_config_value;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

/// Kafka's `ConfigSource`: set on the topic, or the default.
pub const CONFIG_SOURCE_TOPIC: i8 = 1;
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// CreateTopics' `configs` (v5+): every topic config with its value and whether it is set.
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
