//! Internal topics (`__consumer_offsets`, `__transaction_state`) belong to the broker: a Produce to one is refused per
//! partition with INVALID_TOPIC_EXCEPTION, as Kafka does, and the rest of the request proceeds.
//! Reading them is allowed (Kafka's tools do).

use crate::broker::Broker;
use crate::handlers::{produce, Reply};
use crate::topics::is_internal;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn produce_guarded(broker: &Arc<Broker>, mut request: ProduceRequest, version: i16) -> Reply {
    let (internal, user): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topic_data)
        .into_iter()
        .partition(|topic| is_internal(topic.name.0.as_str()));
    request.topic_data = user;
    if internal.is_empty() {
        return produce::handle(broker, request, version);
    }
    let refused: Vec<TopicProduceResponse> = internal
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|data| {
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(ResponseError::InvalidTopicException.code())
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions)
        })
        .collect();
    match produce::handle(broker, request, version) {
        Reply::None => Reply::None,
        Reply::Now(response) => Reply::Now(Box::new(merged(*response, refused))),
        Reply::Later(future) => {
            Reply::Later(Box::pin(async move { merged(future.await, refused) }))
        }
    }
}

fn merged(response: ResponseKind, refused: Vec<TopicProduceResponse>) -> ResponseKind {
    match response {
        ResponseKind::Produce(mut produced) => {
            produced.responses.extend(refused);
            ResponseKind::Produce(produced)
        }
        other => unreachable!("produce answers with a Produce response, not {other:?}"),
    }
}
