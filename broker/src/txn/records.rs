//! The records of `__transaction_state`: Kafka's `TransactionLogKey` and `TransactionLogValue`
//! v0, so that Kafka's tools understand them. Integers big-endian; a string is an i16 length then
//! UTF-8; an array an i32 count (-1: null).
//!
//! ```text
//! key    v0:  i16 version=0, string transactional_id
//! value  v0:  i16 version=0, i64 producer_id, i16 producer_epoch, i32 timeout_ms, i8 state,
//!             array partitions of (string topic, array of i32 partition),
//!             i64 last_update_timestamp_ms, i64 start_timestamp_ms
//! ```
//! A null value is a tombstone (the transactional id expired). v0 has no previous producer id
//! and epoch (v1's tagged fields): they live in memory only, so after a restart a KIP-360 retry
//! of an InitProducerId that already bumped the epoch is answered PRODUCER_FENCED instead of with
//! the bumped epoch, and the client starts over.

use super::{TxnMetadata, TxnState};
use crate::group::TopicPartition;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// One record of `__transaction_state`, decoded. `None`: a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub metadata: Option<TxnMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown {what} version {version}")]
    Version { what: &'static str, version: i16 },
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("record has no key")]
    NoKey,
    #[error("bad {what}: {value}")]
    Field { what: &'static str, value: i64 },
}

pub fn record_encode(record: &TxnRecord) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::new();
    key.put_i16(KEY_VERSION);
    string_put(&mut key, &record.transactional_id);
    (key.freeze(), record.metadata.as_ref().map(value_encode))
}

fn value_encode(metadata: &TxnMetadata) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_VERSION);
    value.put_i64(metadata.producer_id);
    value.put_i16(metadata.epoch);
    value.put_i32(i32::try_from(metadata.timeout.as_millis()).unwrap_or(i32::MAX));
    value.put_i8(metadata.state.id());
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in &metadata.partitions {
        topics
            .entry(partition.topic.as_str())
            .or_default()
            .push(partition.partition);
    }
    value.put_i32(i32::try_from(topics.len()).expect("partitions are bounded"));
    for (topic, partitions) in topics {
        string_put(&mut value, topic);
        value.put_i32(i32::try_from(partitions.len()).expect("partitions are bounded"));
        for partition in partitions {
            value.put_i32(partition);
        }
    }
    value.put_i64(metadata.last_update_ms);
    value.put_i64(metadata.start_ms);
    value.freeze()
}

pub fn record_decode(key: Option<&Bytes>, value: Option<&Bytes>) -> Result<TxnRecord, RecordError> {
    let mut key = key.ok_or(RecordError::NoKey)?.clone();
    let version = i16_get(&mut key)?;
    if version != KEY_VERSION {
        return Err(RecordError::Version {
            what: "key",
            version,
        });
    }
    let transactional_id = string_get(&mut key)?;
    let metadata = value.map(|value| value_decode(value.clone())).transpose()?;
    Ok(TxnRecord {
        transactional_id,
        metadata,
    })
}

fn value_decode(mut value: Bytes) -> Result<TxnMetadata, RecordError> {
    let version = i16_get(&mut value)?;
    if version != VALUE_VERSION {
        return Err(RecordError::Version {
            what: "value",
            version,
        });
    }
    let producer_id = i64_get(&mut value)?;
    let epoch = i16_get(&mut value)?;
    let timeout_ms = i32_get(&mut value)?;
    let state_id = value.try_get_i8().map_err(|_| RecordError::Truncated)?;
    let state = TxnState::from_id(state_id).ok_or(RecordError::Field {
        what: "state",
        value: i64::from(state_id),
    })?;
    let mut partitions = BTreeSet::new();
    let topic_count = i32_get(&mut value)?;
    for _ in 0..topic_count.max(0) {
        let topic = string_get(&mut value)?;
        let count = i32_get(&mut value)?;
        // Each partition takes 4 bytes: a count beyond what remains is a corrupt record.
        if count < 0 || count as usize > value.remaining() / 4 {
            return Err(RecordError::Truncated);
        }
        for _ in 0..count {
            partitions.insert(TopicPartition {
                topic: topic.clone(),
                partition: i32_get(&mut value)?,
            });
        }
    }
    let last_update_ms = i64_get(&mut value)?;
    let start_ms = i64_get(&mut value)?;
    if producer_id < 0 || epoch < 0 {
        return Err(RecordError::Field {
            what: "producer id or epoch",
            value: producer_id.min(i64::from(epoch)),
        });
    }
    let open_ok = match state {
        TxnState::Ongoing => !partitions.is_empty(),
        TxnState::PrepareCommit | TxnState::PrepareAbort => true,
        _ => partitions.is_empty(),
    };
    if !open_ok {
        return Err(RecordError::Field {
            what: "partition count for its state",
            value: partitions.len() as i64,
        });
    }
    if timeout_ms <= 0 {
        return Err(RecordError::Field {
            what: "timeout",
            value: i64::from(timeout_ms),
        });
    }
    Ok(TxnMetadata {
        producer_id,
        last_producer_id: -1,
        epoch,
        last_epoch: -1,
        timeout: Duration::from_millis(timeout_ms as u64),
        state,
        partitions,
        last_update_ms,
        start_ms,
    })
}

fn string_put(buffer: &mut BytesMut, text: &str) {
    // Transactional ids and topic names are bounded at arrival.
    let length = i16::try_from(text.len()).expect("strings are bounded at arrival");
    buffer.put_i16(length);
    buffer.put_slice(text.as_bytes());
}

fn i16_get(buffer: &mut Bytes) -> Result<i16, RecordError> {
    buffer.try_get_i16().map_err(|_| RecordError::Truncated)
}

fn i32_get(buffer: &mut Bytes) -> Result<i32, RecordError> {
    buffer.try_get_i32().map_err(|_| RecordError::Truncated)
}

fn i64_get(buffer: &mut Bytes) -> Result<i64, RecordError> {
    buffer.try_get_i64().map_err(|_| RecordError::Truncated)
}

fn string_get(buffer: &mut Bytes) -> Result<String, RecordError> {
    let length = i16_get(buffer)?;
    if length < 0 {
        return Ok(String::new());
    }
    if buffer.remaining() < length as usize {
        return Err(RecordError::Truncated);
    }
    let bytes = buffer.split_to(length as usize);
    String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Utf8)
}
