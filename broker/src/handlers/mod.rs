//! One file per Kafka API. `handle` routes a decoded request; each handler validates its input,
//! does its synchronous part at once (in request order), and either answers now or returns the
//! future that will answer (a produce waiting for durability, a fetch long-polling).

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_configs;
pub mod errors;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use crate::broker::Broker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wire::{RequestFrame, RequestKind, ResponseKind};

pub type ResponseFuture = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// What a handler produced.
pub enum Reply {
    /// acks=0 produce: the client expects no response at all.
    None,
    Now(Box<ResponseKind>),
    Later(ResponseFuture),
}

pub fn handle(broker: &Arc<Broker>, request: RequestFrame) -> Reply {
    let version = request.api_version;
    match request.body {
        RequestKind::ApiVersions(body) => {
            Reply::Now(Box::new(api_versions::handle(&body, version)))
        }
        RequestKind::Metadata(body) => {
            Reply::Now(Box::new(metadata::handle(broker, body, version)))
        }
        RequestKind::Produce(body) => produce::handle(broker, body, version),
        RequestKind::Fetch(body) => fetch::handle(broker, body, version),
        RequestKind::ListOffsets(body) => {
            Reply::Now(Box::new(list_offsets::handle(broker, body, version)))
        }
        RequestKind::CreateTopics(body) => {
            Reply::Now(Box::new(create_topics::handle(broker, body, version)))
        }
        RequestKind::DeleteTopics(body) => {
            Reply::Now(Box::new(delete_topics::handle(broker, body, version)))
        }
        RequestKind::CreatePartitions(body) => {
            Reply::Now(Box::new(create_partitions::handle(broker, body)))
        }
        RequestKind::DescribeConfigs(body) => {
            Reply::Now(Box::new(describe_configs::handle(broker, body, version)))
        }
        other => {
            unreachable!("api_versions::is_supported admitted an unhandled request: {other:?}")
        }
    }
}
