//! OffsetDelete (v0, KIP-496): drops a group's committed offsets of some partitions, answered
//! once their tombstones in `__consumer_offsets` are durable. An active consumer group keeps the
//! offsets of topics its members consume (GROUP_SUBSCRIBED_TO_TOPIC).

use crate::broker::Broker;
use crate::group::{Input, Output, TopicPartition};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, reply_when};
use crate::handlers::Reply;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: OffsetDeleteRequest, _version: i16) -> Reply {
    let group_id = match group_id_check(request.group_id.as_str()) {
        Ok(group_id) => group_id,
        Err(error) => return Reply::Now(Box::new(top_level(error))),
    };
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| TopicPartition {
                topic: topic.name.to_string(),
                partition: partition.partition_index,
            })
        })
        .collect();
    let receiver = broker.groups().submit(|request, now| Input::OffsetDelete {
        request,
        now,
        group_id,
        partitions,
    });
    reply_when(receiver, |output| match output {
        Some(Output::OffsetDelete {
            result: Ok(results),
            ..
        }) => {
            let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
            for (partition, result) in results {
                let code = result.map_or_else(|error| group_error_code(&error).code(), |()| NONE);
                let answer = OffsetDeleteResponsePartition::default()
                    .with_partition_index(partition.partition)
                    .with_error_code(code);
                match topics.last_mut() {
                    Some(last) if last.name.as_str() == partition.topic => {
                        last.partitions.push(answer)
                    }
                    _ => topics.push(
                        OffsetDeleteResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(partition.topic)))
                            .with_partitions(vec![answer]),
                    ),
                }
            }
            ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default()
                    .with_error_code(NONE)
                    .with_topics(topics),
            )
        }
        Some(Output::OffsetDelete {
            result: Err(error), ..
        }) => top_level(group_error_code(&error)),
        _ => top_level(ResponseError::CoordinatorNotAvailable),
    })
}

fn top_level(error: ResponseError) -> ResponseKind {
    ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(error.code()))
}
