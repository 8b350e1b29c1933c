//! IncrementalAlterConfigs (v0-1, KIP-339): changes named keys of a topic's overrides and keeps
//! the rest. SET overrides a key, DELETE reverts it to its default, APPEND and SUBTRACT add to or
//! remove from a list-valued key (`cleanup.policy`), starting from the default when it is not
//! set. Each resource succeeds or fails whole (the handler is in `admin`, through the
//! controller); broker resources are refused (static configs).

use crate::handlers::configs::Refusal;
use crate::topic_config::{
    topic_config_is_list, topic_config_value, TopicConfigError, TOPIC_CONFIG_KEYS_IGNORED,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, BTreeSet};

/// Kafka's `AlterConfigOp.OpType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOperation {
    Set,
    Delete,
    Append,
    Subtract,
}

impl ConfigOperation {
    pub fn from_code(code: i8) -> Option<ConfigOperation> {
        match code {
            0 => Some(ConfigOperation::Set),
            1 => Some(ConfigOperation::Delete),
            2 => Some(ConfigOperation::Append),
            3 => Some(ConfigOperation::Subtract),
            _ => None,
        }
    }

    /// The name Kafka's tools print.
    pub fn name(self) -> &'static str {
        match self {
            ConfigOperation::Set => "SET",
            ConfigOperation::Delete => "DELETE",
            ConfigOperation::Append => "APPEND",
            ConfigOperation::Subtract => "SUBTRACT",
        }
    }
}

/// The overrides after `resource`'s operations on `current`; a key named twice is refused.
pub fn overrides_changed(
    resource: &AlterConfigsResource,
    current: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut keys = BTreeSet::new();
    if let Some(config) = resource
        .configs
        .iter()
        .find(|config| !keys.insert(config.name.as_str()))
    {
        let key = config.name.as_str();
        let message = format!("config {key:?} is named twice; name each key once");
        return Err(Refusal::new(ResponseError::InvalidRequest, message));
    }
    let mut overrides = current.clone();
    for config in &resource.configs {
        operation_apply(&mut overrides, config)?;
    }
    Ok(overrides)
}

/// Applies one operation to the overrides. Values are validated afterwards, as a whole set.
pub fn operation_apply(
    overrides: &mut BTreeMap<String, String>,
    config: &AlterableConfig,
) -> Result<(), Refusal> {
    let key = config.name.as_str();
    let invalid = |message: String| Refusal::new(ResponseError::InvalidConfig, message);
    let Some(operation) = ConfigOperation::from_code(config.config_operation) else {
        let code = config.config_operation;
        return Err(invalid(format!(
            "config {key:?}: operation {code} is unknown; use SET (0), DELETE (1), APPEND (2) or SUBTRACT (3)"
        )));
    };
    if TOPIC_CONFIG_KEYS_IGNORED.contains(&key) {
        return Ok(());
    }
    let value = config.value.as_ref().map(|value| value.as_str());
    let needs_value = || match value {
        Some(value) => Ok(value),
        None => Err(invalid(format!(
            "config {key:?}: {} needs a value",
            operation.name()
        ))),
    };
    match operation {
        ConfigOperation::Set => {
            overrides.insert(key.to_string(), needs_value()?.to_string());
        }
        ConfigOperation::Delete => {
            // Reverting a key gregor does not know would silently do nothing: say so instead.
            if topic_config_value(overrides, key).is_none() {
                let error = TopicConfigError::UnknownKey {
                    key: key.to_string(),
                };
                return Err(invalid(error.to_string()));
            }
            overrides.remove(key);
        }
        ConfigOperation::Append | ConfigOperation::Subtract => {
            if !topic_config_is_list(key) {
                return Err(invalid(format!(
                    "config {key:?} is not a list; use SET to change it (APPEND and SUBTRACT are for cleanup.policy)"
                )));
            }
            let items = needs_value()?;
            let list = list_change(overrides, key, items, operation);
            overrides.insert(key.to_string(), list);
        }
    }
    Ok(())
}

/// The list value after APPEND or SUBTRACT of comma-separated `items`, from the override if set,
/// else the default. Kept in first-seen order without duplicates.
fn list_change(
    overrides: &BTreeMap<String, String>,
    key: &str,
    items: &str,
    operation: ConfigOperation,
) -> String {
    let (current, _) = topic_config_value(overrides, key).expect("list keys are known");
    let split = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut list = split(&current);
    let items = split(items);
    match operation {
        ConfigOperation::Append => {
            for item in items {
                if !list.contains(&item) {
                    list.push(item);
                }
            }
        }
        _ => list.retain(|item| !items.contains(item)),
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    /// Applies `operations` (`CODE:key[=value]`, space-separated) to `overrides` (`k=v;...`).
    fn check(overrides: &str, operations: &str) -> String {
        let mut overrides: BTreeMap<String, String> = overrides
            .split(';')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("k=v");
                (key.to_string(), value.to_string())
            })
            .collect();
        for operation in operations.split(' ') {
            let (code, rest) = operation.split_once(':').expect("OP:key[=value]");
            let (key, value) = match rest.split_once('=') {
                Some((key, value)) => (key, Some(StrBytes::from_string(value.to_string()))),
                None => (rest, None),
            };
            let config = AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(code.parse().expect("code"))
                .with_value(value);
            if let Err(refusal) = operation_apply(&mut overrides, &config) {
                return format!("{:?}: {}", refusal.error, refusal.message);
            }
        }
        format!("{overrides:?}")
    }

    #[test]
    fn operations_set_delete_append_and_subtract() {
        let rendered = [
            check("retention.ms=5", "0:segment.ms=10 1:retention.ms"),
            check("", "2:cleanup.policy=compact"),
            check("cleanup.policy=compact,delete", "3:cleanup.policy=delete"),
            check("cleanup.policy=compact", "2:cleanup.policy=compact"),
            check("", "0:message.format.version=2.8 1:message.format.version"),
            check("", "2:retention.ms=5"),
            check("", "0:retention.ms"),
            check("", "7:retention.ms=5"),
            check("", "1:flush.ms"),
        ]
        .join("\n");
        insta::assert_snapshot!(rendered, @r#"
        {"segment.ms": "10"}
        {"cleanup.policy": "delete,compact"}
        {"cleanup.policy": "compact"}
        {"cleanup.policy": "compact"}
        {}
        InvalidConfig: config "retention.ms" is not a list; use SET to change it (APPEND and SUBTRACT are for cleanup.policy)
        InvalidConfig: config "retention.ms": SET needs a value
        InvalidConfig: config "retention.ms": operation 7 is unknown; use SET (0), DELETE (1), APPEND (2) or SUBTRACT (3)
        InvalidConfig: unknown topic config "flush.ms"; gregor supports cleanup.policy, delete.retention.ms, index.interval.bytes, max.message.bytes, message.timestamp.type, min.insync.replicas, retention.bytes, retention.ms, segment.bytes, segment.ms, unclean.leader.election.enable
        "#);
    }
}
