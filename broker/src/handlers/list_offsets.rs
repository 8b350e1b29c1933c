//! ListOffsets: earliest (-2), latest (-1: the high watermark, or with isolation_level 1,
//! read_committed, the last stable offset), or the first offset whose timestamp is at or after
//! a time (the same for both isolation levels, as in Kafka).
//!
//! A replicated partition's leader answers OFFSET_NOT_AVAILABLE while its HW is below the start
//! of its leadership (KIP-207), as Kafka's.
//!
//! v4+: `current_leader_epoch` is checked as Fetch checks it (`leader_epoch::check`), and each
//! answer carries a leader epoch as Kafka's: for latest the leader's current epoch, for earliest
//! and a timestamp the epoch of the batch at the offset found (-1 if none is known).

use crate::broker::Broker;
use crate::handlers::errors::{log_error_code, NONE};
use crate::leader_epoch;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

pub fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ResponseKind {
    let read_committed = request.isolation_level == 1;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let lookup = Lookup {
                        index: asked.partition_index,
                        timestamp: asked.timestamp,
                        current_leader_epoch: leader_epoch::from_wire(asked.current_leader_epoch),
                        version,
                        read_committed,
                    };
                    partition_lookup(broker, topic.name.0.as_str(), &lookup)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}

/// One partition's question.
struct Lookup {
    index: i32,
    timestamp: i64,
    current_leader_epoch: Option<i32>,
    version: i16,
    read_committed: bool,
}

fn partition_lookup(
    broker: &Arc<Broker>,
    topic: &str,
    lookup: &Lookup,
) -> ListOffsetsPartitionResponse {
    let Lookup {
        index,
        timestamp,
        current_leader_epoch,
        version,
        read_committed,
    } = *lookup;
    let response = ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_leader_epoch(-1);
    let access = crate::cluster_mode::Access::Read;
    let served = broker.partition_serving_at(topic, index, access, current_leader_epoch);
    let (partition, leader_epoch) = match served {
        Ok(served) => served,
        Err(error) => {
            return response
                .with_error_code(error.code())
                .with_offset(-1)
                .with_timestamp(-1)
        }
    };
    // A new leader of a replicated partition whose HW has not reached the start of its
    // leadership may still hold offsets of an earlier epoch that are not committed: its answers
    // could go backwards, so it answers none yet (KIP-207), and the client retries.
    if partition.high_watermark_behind_epoch_start() {
        return response
            .with_error_code(ResponseError::OffsetNotAvailable.code())
            .with_offset(-1)
            .with_timestamp(-1);
    }
    let high_watermark = partition.high_watermark();
    tracing::debug!(
        node = broker.config.node_id,
        topic,
        index,
        timestamp,
        high_watermark,
        leader_epoch,
        "list offsets"
    );
    let log = partition.log();
    // leader_epoch exists from v4; the protocol crate refuses to encode it set at older versions.
    let epoch_of = |offset: i64, latest: bool| match (version >= 4, latest) {
        (false, _) => -1,
        (true, true) => leader_epoch,
        (true, false) => log.epoch_at(offset).unwrap_or(-1),
    };
    let found = match timestamp {
        EARLIEST => Ok(Some((log.log_start_offset(), -1))),
        LATEST if read_committed => Ok(Some((log.last_stable_offset(high_watermark), -1))),
        LATEST => Ok(Some((high_watermark, -1))),
        timestamp if timestamp < 0 => {
            return response
                .with_error_code(ResponseError::UnsupportedVersion.code())
                .with_offset(-1)
                .with_timestamp(-1);
        }
        // Only offsets consumers may read count: a match at or above the high watermark is "none".
        timestamp => log
            .offset_for_timestamp(timestamp)
            .map(|found| found.filter(|(offset, _)| *offset < high_watermark)),
    };
    match found {
        Ok(Some((offset, found_timestamp))) => response
            .with_leader_epoch(epoch_of(offset, timestamp == LATEST))
            .with_error_code(NONE)
            .with_offset(offset)
            .with_timestamp(found_timestamp),
        Ok(None) => response
            .with_error_code(NONE)
            .with_offset(-1)
            .with_timestamp(-1),
        Err(error) => response
            .with_error_code(log_error_code(&error).code())
            .with_offset(-1)
            .with_timestamp(-1),
    }
}
