//! What the transaction handlers share: checks of transactional ids and the partitions a
//! transaction may hold.

use crate::broker::Broker;
use crate::group::TopicPartition;
use crate::topics::is_internal;
use crate::txn::TRANSACTIONAL_ID_BYTES_MAX;
use kafka_protocol::ResponseError;

/// A transactional id must be non-empty (Kafka: INVALID_REQUEST) and bounded: it is a key in
/// memory and in `__transaction_state`.
pub fn transactional_id_check(transactional_id: &str) -> Result<String, ResponseError> {
    if transactional_id.is_empty() || transactional_id.len() > TRANSACTIONAL_ID_BYTES_MAX {
        return Err(ResponseError::InvalidRequest);
    }
    Ok(transactional_id.to_string())
}

/// Whether a transaction may write to `topic`-`partition`: it exists, and it is not internal
/// (internal topics take no produce, so no marker either).
pub fn partition_check(
    broker: &Broker,
    topic: &str,
    partition: i32,
) -> Result<TopicPartition, ResponseError> {
    if is_internal(topic) {
        return Err(ResponseError::InvalidTopicException);
    }
    // The image's count: the coordinator may host none of the topic's partitions.
    let partition_count = broker.partition_count(topic);
    if !(0..partition_count).contains(&partition) {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    Ok(TopicPartition {
        topic: topic.to_string(),
        partition,
    })
}
