//! DeleteTopics, by name (v1-5) or by name or id (v6).

use crate::broker::Broker;
use crate::handlers::errors::{topic_error_code, NONE};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use uuid::Uuid;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: DeleteTopicsRequest, version: i16) -> ResponseKind {
    let targets: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|topic| (topic.name, topic.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name), Uuid::nil()))
            .collect()
    };
    let responses = targets
        .into_iter()
        .map(|(name, topic_id)| topic_delete(broker, name, topic_id))
        .collect();
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}

fn topic_delete(
    broker: &Arc<Broker>,
    name: Option<TopicName>,
    topic_id: Uuid,
) -> DeletableTopicResult {
    let resolved = match &name {
        Some(name) => Some(name.0.as_str().to_string()),
        None => broker
            .topics()
            .by_id(*topic_id.as_bytes())
            .map(|metadata| metadata.name.clone()),
    };
    let result = DeletableTopicResult::default()
        .with_name(name.clone())
        .with_topic_id(topic_id);
    let Some(resolved) = resolved else {
        return result.with_error_code(ResponseError::UnknownTopicId.code());
    };
    let deleted = broker.topics().delete(&resolved);
    match deleted {
        Ok(metadata) => result
            .with_name(Some(TopicName(StrBytes::from_string(resolved))))
            .with_topic_id(Uuid::from_bytes(metadata.topic_id))
            .with_error_code(NONE),
        Err(error) => result
            .with_error_code(topic_error_code(&error).code())
            .with_error_message(Some(StrBytes::from_string(error.to_string()))),
    }
}
