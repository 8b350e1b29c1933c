//! The metadata log's records, modelled on Kafka's KRaft records (`RegisterBrokerRecord`,
//! `FenceBrokerRecord`, `TopicRecord`, `PartitionRecord`, `PartitionChangeRecord`, ...).
//!
//! One Raft entry holds one `MetadataBatch`: the records of one controller decision, applied
//! together at the entry's index. Kafka's controller writes each operation's records as one
//! atomic batch for the same reason: a CreateTopics is a Topic, its Partitions and its Configs,
//! and a crash must never leave half of them in the log.
//!
//! Encoding: JSON with a version tag (`{"version":1,"records":[...]}`). serde_json writes struct
//! fields in declaration order and maps in key order (BTreeMap only), so the same batch always
//! gives the same bytes; metadata is small and rare, so compactness does not matter, and a text
//! form makes a log dump readable. Decoding never panics: bad bytes, an unknown version or an
//! unknown record type are a `DecodeError`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A broker's id (`--node-id`). Kafka's int32.
pub type BrokerId = i32;

/// The leader of a partition that has none (Kafka's `-1`, `LeaderConstants.NO_LEADER`).
pub const LEADER_NONE: BrokerId = -1;

/// How many producer ids one `ProducerIds` record hands out (Kafka's `ProducerIdsBlock`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The encoding version this code writes and reads.
pub const ENCODING_VERSION: u16 = 1;

/// Kafka's topic id: a UUID, kept as its 128 bits and written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub u128);

impl fmt::Display for TopicId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

impl fmt::Debug for TopicId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "TopicId({self})")
    }
}

impl Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(serde::de::Error::custom("a topic id is 32 hex digits"));
        }
        u128::from_str_radix(&text, 16)
            .map(TopicId)
            .map_err(serde::de::Error::custom)
    }
}

/// A broker process's identity across restarts: a fresh random id each time it starts, so the
/// controller can tell a retried registration (same incarnation) from a restart (a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IncarnationId(pub u128);

impl Serialize for IncarnationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TopicId(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IncarnationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(IncarnationId(TopicId::deserialize(deserializer)?.0))
    }
}

/// One controller call, the same across its retries (Raft's client sessions, Ongaro's thesis
/// §6.3): the node that asks, its process incarnation, and a number that node never reuses
/// within the incarnation. The controller writes it with the call's records and outcome
/// (`RequestDone`), so a retry whose first try committed gets that outcome, not a new decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestId {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub sequence: u64,
}

/// A broker's (new) registration. It starts fenced: the broker is unfenced only once it has
/// caught up with the metadata log up to this record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBroker {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    /// Grows with every registration of any broker (Kafka uses the record's offset).
    pub broker_epoch: i64,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// A new partition, complete: Kafka's `PartitionRecord`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRecord {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A change of a partition's leader and/or ISR: Kafka's `PartitionChangeRecord`. Applying it
/// bumps the partition epoch always and the leader epoch when the leader changes, so epochs are
/// derived, never carried, and every node derives the same ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionChange {
    pub topic_id: TopicId,
    pub partition: i32,
    /// The new leader (`LEADER_NONE` for none), or `None` if unchanged.
    pub leader: Option<BrokerId>,
    /// The new ISR, or `None` if unchanged.
    pub isr: Option<Vec<BrokerId>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum MetadataRecord {
    RegisterBroker(RegisterBroker),
    /// The broker's session expired or it shut down: it leads nothing from here on.
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// The broker caught up with the log after registering: it may lead again.
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    Topic {
        name: String,
        topic_id: TopicId,
    },
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    /// A topic config override set (`Some`) or removed (`None`, back to the default).
    Config {
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
    /// The topic, its partitions and its configs are gone.
    RemoveTopic {
        topic_id: TopicId,
    },
    /// A block of producer ids handed to a broker: `[next_block_start - 1000, next_block_start)`.
    ProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
        next_block_start: i64,
    },
    /// The call `request` was decided by the records before this one in the same entry, and
    /// answered `outcome` (the controller's reply as JSON; the image keeps it without reading
    /// it). Always the last record of its batch.
    RequestDone {
        request: RequestId,
        outcome: serde_json::Value,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("metadata bytes are not a valid encoding: {0}")]
    Malformed(String),
    #[error(
        "metadata encoding version {version} is not supported (this node reads {ENCODING_VERSION})"
    )]
    Version { version: u16 },
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u16,
}

/// Reads the version tag alone, so a future version's body never reaches this version's types.
pub(crate) fn version_check(bytes: &[u8]) -> Result<(), DecodeError> {
    let version: VersionOnly = json_decode(bytes)?;
    if version.version != ENCODING_VERSION {
        return Err(DecodeError::Version {
            version: version.version,
        });
    }
    Ok(())
}

pub(crate) fn json_decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|error| DecodeError::Malformed(error.to_string()))
}

/// The bytes of one Raft entry: one controller decision's records.
pub fn batch_encode(records: &[MetadataRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    struct BatchOut<'a> {
        version: u16,
        records: &'a [MetadataRecord],
    }
    let batch = BatchOut {
        version: ENCODING_VERSION,
        records,
    };
    serde_json::to_vec(&batch).expect("records always serialize")
}

pub fn batch_decode(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BatchIn {
        /// Checked first by `version_check`; named so that `deny_unknown_fields` accepts it.
        #[serde(rename = "version")]
        _version: u16,
        records: Vec<MetadataRecord>,
    }
    version_check(bytes)?;
    let batch: BatchIn = json_decode(bytes)?;
    Ok(batch.records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<MetadataRecord> {
        let topic_id = TopicId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        vec![
            MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: 1,
                incarnation_id: IncarnationId(7),
                broker_epoch: 3,
                host: "10.0.0.1".into(),
                port: 9092,
                rack: Some("r1".into()),
            }),
            MetadataRecord::FenceBroker {
                broker_id: 1,
                broker_epoch: 3,
            },
            MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 3,
            },
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id,
            },
            MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition: 0,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }),
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition: 0,
                leader: Some(LEADER_NONE),
                isr: None,
            }),
            MetadataRecord::Config {
                topic_id,
                key: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::RemoveTopic { topic_id },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 3,
                next_block_start: 2000,
            },
            MetadataRecord::RequestDone {
                request: RequestId {
                    broker_id: 1,
                    incarnation_id: IncarnationId(7),
                    sequence: 4,
                },
                outcome: serde_json::json!({"ProducerIds": {"Ok": [1000, 1000]}}),
            },
        ]
    }

    #[test]
    fn batches_round_trip_and_encode_deterministically() {
        let records = samples();
        let bytes = batch_encode(&records);
        assert_eq!(batch_decode(&bytes).unwrap(), records);
        assert_eq!(batch_encode(&batch_decode(&bytes).unwrap()), bytes);
    }

    #[test]
    fn the_encoding_is_readable_and_versioned() {
        let records = &samples()[3..4];
        insta::assert_snapshot!(
            String::from_utf8(batch_encode(records)).unwrap(),
            @r#"{"version":1,"records":[{"type":"Topic","name":"orders","topic_id":"0123456789abcdef0011223344556677"}]}"#
        );
    }

    #[test]
    fn unknown_versions_types_and_fields_are_refused() {
        let check = |text: &str| match batch_decode(text.as_bytes()) {
            Ok(records) => format!("ok {records:?}"),
            Err(error) => error.to_string(),
        };
        let rendered = [
            check(r#"{"version":2,"records":[]}"#),
            check(r#"{"version":1,"records":[{"type":"Nope"}]}"#),
            check(r#"{"version":1,"records":[{"type":"RemoveTopic","topic_id":"12"}]}"#),
            check(r#"{"version":1,"records":[],"extra":1}"#),
            check(r#"{"records":[]}"#),
            check(r#"{"version":1,"records":[]}"#),
        ]
        .join("\n");
        insta::assert_snapshot!(rendered, @r#"
        metadata encoding version 2 is not supported (this node reads 1)
        metadata bytes are not a valid encoding: unknown variant `Nope`, expected one of `RegisterBroker`, `FenceBroker`, `UnfenceBroker`, `Topic`, `Partition`, `PartitionChange`, `Config`, `RemoveTopic`, `ProducerIds`, `RequestDone` at line 1 column 38
        metadata bytes are not a valid encoding: a topic id is 32 hex digits at line 1 column 63
        metadata bytes are not a valid encoding: unknown field `extra`, expected `version` or `records` at line 1 column 33
        metadata bytes are not a valid encoding: missing field `version` at line 1 column 14
        ok []
        "#);
    }

    proptest! {
        /// Arbitrary bytes, and mutations of a valid batch, decode to an error or to records,
        /// never to a panic.
        #[test]
        fn decoding_bad_bytes_never_panics(
            noise in proptest::collection::vec(any::<u8>(), 0..200),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let _ = batch_decode(&noise);
            let mut bytes = batch_encode(&samples());
            for (index, byte) in flips {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(records) = batch_decode(&bytes) {
                // What decodes re-encodes to a batch that decodes to the same records.
                prop_assert_eq!(batch_decode(&batch_encode(&records)).unwrap(), records);
            }
            bytes.truncate(bytes.len() / 2);
            prop_assert!(batch_decode(&bytes).is_err());
        }
    }
}
