//! DeleteRecords (v0-2): moves a partition's log start offset up to the requested offset (-1:
//! the high watermark). The new start is in the log-start checkpoint, fsynced, before the reply,
//! so a crash never brings the deleted records back; retention's next pass removes the segments
//! wholly below it. Offsets above the high watermark are refused: a consumer must never be told
//! that records it could not yet read are gone.

use crate::broker::Broker;
use crate::handlers::errors::{log_error_code, NONE};
use crate::topics::is_internal;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`: delete everything consumers can read.
const OFFSET_HIGH_WATERMARK: i64 = -1;

pub fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest, _version: i16) -> ResponseKind {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let outcome = partition_delete(
                        broker,
                        &topic.name.0,
                        asked.partition_index,
                        asked.offset,
                    );
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(asked.partition_index);
                    match outcome {
                        Ok(low_watermark) => result
                            .with_error_code(NONE)
                            .with_low_watermark(low_watermark),
                        Err(error) => result.with_error_code(error.code()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics))
}

/// Advances one partition's log start offset; returns the new one (the low watermark).
fn partition_delete(
    broker: &Broker,
    topic: &str,
    index: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    // Kafka refuses too: the broker's own records (committed offsets) are not the user's to drop.
    if is_internal(topic) {
        return Err(ResponseError::InvalidTopicException);
    }
    let partition = broker
        .topics()
        .partition(topic, index)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let high_watermark = partition.high_watermark();
    let offset = match offset {
        OFFSET_HIGH_WATERMARK => high_watermark,
        offset if offset < 0 || offset > high_watermark => {
            tracing::info!(
                topic,
                partition = index,
                offset,
                high_watermark,
                "delete records refused: offset out of range"
            );
            return Err(ResponseError::OffsetOutOfRange);
        }
        offset => offset,
    };
    let mut log = partition.log();
    if let Err(error) = log.advance_log_start_offset(offset) {
        tracing::error!(topic, partition = index, offset, %error, "delete records failed");
        return Err(log_error_code(&error));
    }
    tracing::info!(
        topic,
        partition = index,
        log_start_offset = log.log_start_offset(),
        "records deleted"
    );
    Ok(log.log_start_offset())
}
