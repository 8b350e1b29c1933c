//! CreatePartitions: grow a topic. Keyed records may map to other partitions afterwards, as in Kafka.

use crate::broker::Broker;
use crate::handlers::errors::{topic_error_code, NONE};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> ResponseKind {
    let node_id = broker.config.node_id;
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            let foreign = topic
                .assignments
                .iter()
                .flatten()
                .any(|a| a.broker_ids.iter().any(|id| id.0 != node_id));
            if foreign {
                let message = format!("assignments may only name broker {node_id}");
                return result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
            let name = topic.name.0.as_str();
            let outcome = if request.validate_only {
                match broker.topics().get(name) {
                    Some(metadata) if topic.count > metadata.partition_count => Ok(()),
                    Some(_) => Err(crate::topics::TopicError::Partitions {
                        count: topic.count,
                        reason: "must exceed the current count",
                    }),
                    None => Err(crate::topics::TopicError::Unknown {
                        name: name.to_string(),
                    }),
                }
            } else {
                let now_ms = broker.clock.wall_ms();
                broker.topics().partitions_add(name, topic.count, now_ms)
            };
            match outcome {
                Ok(()) => result.with_error_code(NONE),
                Err(error) => result
                    .with_error_code(topic_error_code(&error).code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}
