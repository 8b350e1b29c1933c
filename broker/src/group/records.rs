//! The records of `__consumer_offsets`: Kafka's own key and value formats, so that Kafka's tools
//! (and anyone reading the topic) understand them. All integers big-endian; a string is an i16
//! length then UTF-8 (-1: null); bytes are an i32 length then the bytes.
//!
//! ```text
//! offset key     v1:  i16 version=1, string group, string topic, i32 partition
//! offset value   v3:  i16 version=3, i64 offset, i32 leader_epoch, string metadata,
//!                     i64 commit_timestamp                       (v0-v2 are also read)
//! group key      v2:  i16 version=2, string group
//! group value    v3:  i16 version=3, string protocol_type, i32 generation,
//!                     nullable string protocol, nullable string leader, i64 state_timestamp,
//!                     i32 count, then per member: string member_id,
//!                     nullable string group_instance_id, string client_id, string client_host,
//!                     i32 rebalance_timeout_ms, i32 session_timeout_ms,
//!                     bytes subscription, bytes assignment       (v0-v2 are also read)
//! ```
//! A null value is a tombstone: the offset was deleted, or the group was. The topic is compacted
//! (`cleanup.policy=compact`), so the latest record per key is what survives.

use super::classic::{GroupSnapshot, Member};
use super::{Committed, Protocol, TopicPartition};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;

const KEY_OFFSET_V0: i16 = 0;
const KEY_OFFSET_V1: i16 = 1;
const KEY_GROUP: i16 = 2;
const VALUE_OFFSET_WRITTEN: i16 = 3;
const VALUE_GROUP_WRITTEN: i16 = 3;

/// One record of `__consumer_offsets`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group_id: String,
        partition: TopicPartition,
        /// `None`: a tombstone.
        committed: Option<Committed>,
    },
    Group {
        group_id: String,
        snapshot: Option<GroupSnapshot>,
    },
}

impl OffsetsRecord {
    pub fn group_id(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group_id, .. } | OffsetsRecord::Group { group_id, .. } => {
                group_id
            }
        }
    }
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
    #[error("negative length {length}")]
    Length { length: i64 },
}

/// Encodes a record as (key, value); a tombstone has no value.
pub fn record_encode(record: &OffsetsRecord) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::new();
    match record {
        OffsetsRecord::Offset {
            group_id,
            partition,
            committed,
        } => {
            key.put_i16(KEY_OFFSET_V1);
            string_put(&mut key, group_id);
            string_put(&mut key, &partition.topic);
            key.put_i32(partition.partition);
            let value = committed.as_ref().map(offset_value_encode);
            (key.freeze(), value)
        }
        OffsetsRecord::Group { group_id, snapshot } => {
            key.put_i16(KEY_GROUP);
            string_put(&mut key, group_id);
            let value = snapshot.as_ref().map(group_value_encode);
            (key.freeze(), value)
        }
    }
}

fn offset_value_encode(committed: &Committed) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_OFFSET_WRITTEN);
    value.put_i64(committed.offset);
    value.put_i32(committed.leader_epoch);
    string_put(&mut value, &committed.metadata);
    value.put_i64(committed.commit_timestamp_ms);
    value.freeze()
}

fn group_value_encode(snapshot: &GroupSnapshot) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_GROUP_WRITTEN);
    string_put(&mut value, &snapshot.protocol_type);
    value.put_i32(snapshot.generation_id);
    string_nullable_put(&mut value, snapshot.protocol_name.as_deref());
    string_nullable_put(&mut value, snapshot.leader.as_deref());
    value.put_i64(-1); // current_state_timestamp: unused here.
    value.put_i32(snapshot.members.len() as i32);
    let protocol = snapshot.protocol_name.as_deref().unwrap_or_default();
    for member in &snapshot.members {
        string_put(&mut value, &member.member_id);
        string_nullable_put(&mut value, member.group_instance_id.as_deref());
        string_put(&mut value, &member.client_id);
        string_put(&mut value, &member.client_host);
        value.put_i32(millis(member.rebalance_timeout));
        value.put_i32(millis(member.session_timeout));
        let subscription = member
            .protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default();
        bytes_put(&mut value, &subscription);
        bytes_put(&mut value, &member.assignment);
    }
    value.freeze()
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// Decodes a record read back from the log.
pub fn record_decode(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
) -> Result<OffsetsRecord, RecordError> {
    let mut key = key.ok_or(RecordError::NoKey)?.clone();
    let version = i16_get(&mut key)?;
    match version {
        KEY_OFFSET_V0 | KEY_OFFSET_V1 => {
            let group_id = string_get(&mut key)?;
            let topic = string_get(&mut key)?;
            let partition = i32_get(&mut key)?;
            let committed = value.map(|v| offset_value_decode(v.clone())).transpose()?;
            Ok(OffsetsRecord::Offset {
                group_id,
                partition: TopicPartition { topic, partition },
                committed,
            })
        }
        KEY_GROUP => {
            let group_id = string_get(&mut key)?;
            let snapshot = value.map(|v| group_value_decode(v.clone())).transpose()?;
            Ok(OffsetsRecord::Group { group_id, snapshot })
        }
        version => Err(RecordError::Version {
            what: "key",
            version,
        }),
    }
}

fn offset_value_decode(mut value: Bytes) -> Result<Committed, RecordError> {
    let version = i16_get(&mut value)?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::Version {
            what: "offset value",
            version,
        });
    }
    let offset = i64_get(&mut value)?;
    let leader_epoch = if version >= 3 {
        i32_get(&mut value)?
    } else {
        -1
    };
    let metadata = string_get(&mut value)?;
    let commit_timestamp_ms = i64_get(&mut value)?;
    Ok(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn group_value_decode(mut value: Bytes) -> Result<GroupSnapshot, RecordError> {
    let version = i16_get(&mut value)?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::Version {
            what: "group value",
            version,
        });
    }
    let protocol_type = string_get(&mut value)?;
    let generation_id = i32_get(&mut value)?;
    let protocol_name = string_nullable_get(&mut value)?;
    let leader = string_nullable_get(&mut value)?;
    if version >= 2 {
        i64_get(&mut value)?; // current_state_timestamp
    }
    let count = length_get(&mut value)?;
    let mut members = Vec::with_capacity(count.min(value.remaining()));
    for _ in 0..count {
        members.push(member_decode(
            &mut value,
            version,
            &protocol_type,
            &protocol_name,
        )?);
    }
    Ok(GroupSnapshot {
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        members,
    })
}

fn member_decode(
    value: &mut Bytes,
    version: i16,
    protocol_type: &str,
    protocol_name: &Option<String>,
) -> Result<Member, RecordError> {
    let member_id = string_get(value)?;
    let group_instance_id = if version >= 3 {
        string_nullable_get(value)?
    } else {
        None
    };
    let client_id = string_get(value)?;
    let client_host = string_get(value)?;
    let rebalance_timeout_ms = if version >= 1 { i32_get(value)? } else { -1 };
    let session_timeout_ms = i32_get(value)?;
    let rebalance_timeout_ms = if version >= 1 {
        rebalance_timeout_ms
    } else {
        session_timeout_ms
    };
    let subscription = bytes_get(value)?;
    let assignment = bytes_get(value)?;
    let duration = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let protocols = protocol_name
        .iter()
        .map(|name| Protocol {
            name: name.clone(),
            metadata: subscription.clone(),
        })
        .collect();
    Ok(Member::restored(
        member_id,
        group_instance_id,
        client_id,
        client_host,
        duration(session_timeout_ms),
        duration(rebalance_timeout_ms),
        protocol_type.to_string(),
        protocols,
        assignment,
    ))
}

fn string_put(buffer: &mut BytesMut, text: &str) {
    // Every string is bounded by GROUP_NAME_BYTES_MAX or OFFSET_METADATA_BYTES_MAX at arrival.
    let length = i16::try_from(text.len()).expect("strings are bounded at arrival");
    buffer.put_i16(length);
    buffer.put_slice(text.as_bytes());
}

fn string_nullable_put(buffer: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => string_put(buffer, text),
        None => buffer.put_i16(-1),
    }
}

fn bytes_put(buffer: &mut BytesMut, bytes: &[u8]) {
    let length = i32::try_from(bytes.len()).expect("member metadata is bounded at arrival");
    buffer.put_i32(length);
    buffer.put_slice(bytes);
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

fn length_get(buffer: &mut Bytes) -> Result<usize, RecordError> {
    let length = i32_get(buffer)?;
    usize::try_from(length).map_err(|_| RecordError::Length {
        length: i64::from(length),
    })
}

fn slice_get(buffer: &mut Bytes, length: usize) -> Result<Bytes, RecordError> {
    if buffer.remaining() < length {
        return Err(RecordError::Truncated);
    }
    Ok(buffer.split_to(length))
}

fn string_nullable_get(buffer: &mut Bytes) -> Result<Option<String>, RecordError> {
    let length = i16_get(buffer)?;
    if length < 0 {
        return Ok(None);
    }
    let bytes = slice_get(buffer, length as usize)?;
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| RecordError::Utf8)
}

fn string_get(buffer: &mut Bytes) -> Result<String, RecordError> {
    Ok(string_nullable_get(buffer)?.unwrap_or_default())
}

fn bytes_get(buffer: &mut Bytes) -> Result<Bytes, RecordError> {
    let length = length_get(buffer)?;
    slice_get(buffer, length)
}

/// The topics of a consumer member's subscription (Kafka's `ConsumerProtocolSubscription`, any
/// version: each starts with i16 version, then an i32 count of strings). The bytes come from a
/// client, so the count is bounded by the bytes that remain before anything is allocated.
pub fn subscription_topics(metadata: &Bytes) -> Result<Vec<String>, RecordError> {
    let mut buffer = metadata.clone();
    let _version = i16_get(&mut buffer)?;
    let count = length_get(&mut buffer)?;
    // Each topic takes at least its two length bytes.
    if count > buffer.remaining() / 2 {
        return Err(RecordError::Truncated);
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(string_get(&mut buffer)?);
    }
    Ok(topics)
}
