//! Topic names and per-topic configuration: which keys a topic may set, how each value is
//! validated, and how the overrides combine with defaults into a `storage::LogConfig`.

use std::collections::BTreeMap;
use storage::{CleanupPolicy, LogConfig, TimestampType};

/// Kafka's limit: a topic directory `<topic>-<partition>` must fit a file name.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TopicConfigError {
    #[error("invalid topic name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error(
        "unknown topic config {key:?}; gregor supports {}",
        topic_config_keys_listed()
    )]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    /// Each value passed on its own, but the log refuses the combination or a limit it keeps.
    #[error("topic configs refused by the log: {0}")]
    Log(#[from] storage::ConfigError),
}

/// The supported keys, comma-separated, for error messages that tell the user what to use.
fn topic_config_keys_listed() -> String {
    let keys: Vec<&str> = TOPIC_CONFIG_KEYS.iter().map(|(key, _)| *key).collect();
    keys.join(", ")
}

pub fn topic_name_validate(name: &str) -> Result<(), TopicConfigError> {
    let error = |reason| {
        Err(TopicConfigError::Name {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return error("empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return error("longer than 249 bytes");
    }
    if name == "." || name == ".." {
        return error("'.' and '..' are reserved");
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(legal) {
        return error("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The topic configs gregor understands, with Kafka's defaults.
pub const TOPIC_CONFIG_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("delete.retention.ms", "86400000"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.insync.replicas", "1"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    // The controller's: whether a replica outside the ISR may be elected when no ISR member is
    // live (it may lack acknowledged records). Kafka's default since 0.11.
    ("unclean.leader.election.enable", "false"),
];

/// Keys Kafka 3.x accepts and ignores; so does gregor (batches are always stored as v2).
pub const TOPIC_CONFIG_KEYS_IGNORED: &[&str] = &["message.format.version"];

/// Whether `key` is a list-valued config (IncrementalAlterConfigs may APPEND and SUBTRACT).
pub fn topic_config_is_list(key: &str) -> bool {
    key == "cleanup.policy"
}

/// The smallest segment a topic may ask for: a segment must hold a whole maximal batch header.
pub const SEGMENT_BYTES_MIN: u64 = 1024;

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64, TopicConfigError> {
    let invalid = |reason: String| TopicConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid("expected an integer".to_string()))?;
    if parsed < min {
        return Err(invalid(format!("must be at least {min}")));
    }
    Ok(parsed)
}

/// Checks one override; returns the normalised value to store.
pub fn topic_config_validate(key: &str, value: &str) -> Result<String, TopicConfigError> {
    let invalid = |reason: &str| TopicConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    match key {
        "cleanup.policy" => {
            let mut policies: Vec<&str> = value.split(',').map(str::trim).collect();
            policies.sort_unstable();
            match policies.as_slice() {
                ["delete"] | ["compact"] | ["compact", "delete"] => Ok(policies.join(",")),
                _ => Err(invalid("expected delete, compact or compact,delete")),
            }
        }
        "unclean.leader.election.enable" => match value.trim().to_ascii_lowercase().as_str() {
            normalised @ ("true" | "false") => Ok(normalised.to_string()),
            _ => Err(invalid("expected true or false")),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(value.to_string()),
            _ => Err(invalid("expected CreateTime or LogAppendTime")),
        },
        "retention.ms" | "retention.bytes" => Ok(parse_i64(key, value, -1)?.to_string()),
        "segment.bytes" => {
            let parsed = parse_i64(key, value, SEGMENT_BYTES_MIN as i64)?;
            if parsed > i64::from(i32::MAX) {
                return Err(invalid("must be at most 2147483647 (Kafka's limit)"));
            }
            Ok(parsed.to_string())
        }
        "segment.ms" | "delete.retention.ms" | "min.insync.replicas" => {
            let min = if key == "min.insync.replicas" { 1 } else { 0 };
            Ok(parse_i64(key, value, min)?.to_string())
        }
        "index.interval.bytes" => {
            // Kafka: an int, at least 0 (0 indexes every batch, as 1 does).
            let parsed = parse_i64(key, value, 0)?;
            if parsed > i64::from(i32::MAX) {
                return Err(invalid("must be at most 2147483647"));
            }
            Ok(parsed.to_string())
        }
        "max.message.bytes" => {
            // 0 would refuse every batch, and the log refuses to run with it.
            let parsed = parse_i64(key, value, 1)?;
            if parsed > i64::from(i32::MAX) {
                return Err(invalid("must be at most 2147483647"));
            }
            Ok(parsed.to_string())
        }
        _ => Err(TopicConfigError::UnknownKey {
            key: key.to_string(),
        }),
    }
}

/// The effective value of `key` for a topic with `overrides`, and whether it is a default.
pub fn topic_config_value(
    overrides: &BTreeMap<String, String>,
    key: &str,
) -> Option<(String, bool)> {
    let default = TOPIC_CONFIG_KEYS.iter().find(|(name, _)| *name == key)?.1;
    Some(match overrides.get(key) {
        Some(value) => (value.clone(), false),
        None => (default.to_string(), true),
    })
}

fn effective_i64(overrides: &BTreeMap<String, String>, key: &str) -> i64 {
    let (value, _) = topic_config_value(overrides, key).expect("known key");
    value.parse().expect("validated on the way in")
}

/// Checks a whole set of overrides (each key, then the log's own limits on the result) and
/// returns it normalised. Keys Kafka ignores are dropped, so they are never stored.
pub fn topic_configs_validate(
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TopicConfigError> {
    let normalised = overrides
        .iter()
        .filter(|(key, _)| !TOPIC_CONFIG_KEYS_IGNORED.contains(&key.as_str()))
        .map(|(key, value)| Ok((key.clone(), topic_config_validate(key, value)?)))
        .collect::<Result<BTreeMap<_, _>, TopicConfigError>>()?;
    log_config(&normalised).validate()?;
    Ok(normalised)
}

/// The storage configuration for a topic: Kafka's defaults overlaid with its validated overrides.
pub fn log_config(overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = LogConfig::kafka_defaults();
    let (policy, _) = topic_config_value(overrides, "cleanup.policy").expect("known key");
    config.cleanup_policy = match policy.as_str() {
        "compact" => CleanupPolicy::Compact,
        "compact,delete" => CleanupPolicy::CompactAndDelete,
        _ => CleanupPolicy::Delete,
    };
    let retention_ms = effective_i64(overrides, "retention.ms");
    config.retention_ms = (retention_ms >= 0).then_some(retention_ms);
    let retention_bytes = effective_i64(overrides, "retention.bytes");
    config.retention_bytes = u64::try_from(retention_bytes).ok();
    config.segment_bytes = effective_i64(overrides, "segment.bytes") as u64;
    config.segment_ms = effective_i64(overrides, "segment.ms");
    config.delete_retention_ms = effective_i64(overrides, "delete.retention.ms");
    config.max_message_bytes = effective_i64(overrides, "max.message.bytes") as u32;
    // Kafka indexes every batch for 0; the log asks for at least 1 byte, which means the same.
    config.index_interval_bytes = effective_i64(overrides, "index.interval.bytes").max(1) as u32;
    let (timestamp_type, _) =
        topic_config_value(overrides, "message.timestamp.type").expect("known");
    config.message_timestamp_type = match timestamp_type.as_str() {
        "LogAppendTime" => TimestampType::LogAppendTime,
        _ => TimestampType::CreateTime,
    };
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        assert!(topic_name_validate("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(topic_name_validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overrides_are_validated_and_applied() {
        assert_eq!(
            topic_config_validate("cleanup.policy", "delete,compact").unwrap(),
            "compact,delete"
        );
        assert!(topic_config_validate("cleanup.policy", "forever").is_err());
        assert!(topic_config_validate("segment.bytes", "10").is_err());
        assert!(topic_config_validate("retention.ms", "-2").is_err());
        assert!(topic_config_validate("no.such.key", "1").is_err());
        assert_eq!(
            topic_config_validate("unclean.leader.election.enable", "TRUE").unwrap(),
            "true"
        );
        assert!(topic_config_validate("unclean.leader.election.enable", "yes").is_err());
        let overrides = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "4096".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
        ]);
        let config = log_config(&overrides);
        assert_eq!(topic_configs_validate(&overrides), Ok(overrides.clone()));
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 4096);
        assert!(matches!(config.cleanup_policy, CleanupPolicy::Compact));
    }

    /// `index.interval.bytes` is an int >= 0 as in Kafka, reaches the log, and 0 (index every
    /// batch) becomes the log's 1, which means the same.
    #[test]
    fn index_interval_bytes_is_validated_and_passed_to_the_log() {
        assert_eq!(log_config(&BTreeMap::new()).index_interval_bytes, 4096);
        for bad in ["-1", "x", "2147483648"] {
            assert!(
                topic_config_validate("index.interval.bytes", bad).is_err(),
                "{bad}"
            );
        }
        for (value, interval) in [
            ("0", 1),
            ("1", 1),
            ("128", 128),
            ("2147483647", i32::MAX as u32),
        ] {
            let normalised = topic_config_validate("index.interval.bytes", value).unwrap();
            let overrides = BTreeMap::from([("index.interval.bytes".to_string(), normalised)]);
            assert!(topic_configs_validate(&overrides).is_ok(), "{value}");
            assert_eq!(
                log_config(&overrides).index_interval_bytes,
                interval,
                "{value}"
            );
        }
    }

    /// What AlterConfigs answers with: every refusal names the key and what would be accepted,
    /// and a value the log itself would refuse never gets past validation (it would trip the
    /// log's assertion when applied to a live partition).
    #[test]
    fn whole_sets_are_validated_with_messages_that_say_what_to_use() {
        let check = |pairs: &[(&str, &str)]| {
            let overrides = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            match topic_configs_validate(&overrides) {
                Ok(normalised) => format!("ok {normalised:?}"),
                Err(error) => error.to_string(),
            }
        };
        let rendered = [
            check(&[("message.format.version", "2.8"), ("retention.ms", "5")]),
            check(&[("segment.bytes", "2147483648")]),
            check(&[("max.message.bytes", "0")]),
            check(&[("retention.ms", "soon")]),
            check(&[("compression.type", "gzip")]),
        ]
        .join("\n");
        insta::assert_snapshot!(rendered, @r#"
        ok {"retention.ms": "5"}
        invalid value "2147483648" for segment.bytes: must be at most 2147483647 (Kafka's limit)
        invalid value "0" for max.message.bytes: must be at least 1
        invalid value "soon" for retention.ms: expected an integer
        unknown topic config "compression.type"; gregor supports cleanup.policy, delete.retention.ms, index.interval.bytes, max.message.bytes, message.timestamp.type, min.insync.replicas, retention.bytes, retention.ms, segment.bytes, segment.ms, unclean.leader.election.enable
        "#);
    }
}
