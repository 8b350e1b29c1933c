//! FindCoordinator: a group's (key type 0) coordinator is the leader of its partition of
//! `__consumer_offsets`, a transactional id's (key type 1) the leader of its partition of
//! `__transaction_state`: this broker while the topic is node-local (the first transactional
//! lookup creates it), else whichever broker the image names; the first lookup creates a
//! replicated topic (RF `internal_replication_factor`, once that many brokers are live),
//! answering COORDINATOR_NOT_AVAILABLE until its leaders are known, as Kafka does. v0-3 ask for
//! one key; v4+ batch them (`coordinator_keys`, KIP-699). Other key types are invalid, and so
//! is an empty transactional id.

use crate::broker::Broker;
use crate::cluster_mode::internal_replication_factor;
use crate::group::coordinator::partition_for;
use crate::group::shell::internal_topic_configs;
use crate::group::OFFSETS_TOPIC;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use crate::handlers::txns::transactional_id_check;
use crate::txn::TRANSACTION_STATE_TOPIC;
use cluster::controller::TopicCreate;
use cluster::image::MetadataImage;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

/// Kafka's `CoordinatorType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;
/// Kafka's `CoordinatorType.TRANSACTION`.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// This broker, or why it does not coordinate `key` of `key_type`.
fn lookup(
    broker: &Arc<Broker>,
    key: &str,
    key_type: i8,
) -> Result<(BrokerId, String, i32), ResponseError> {
    match key_type {
        KEY_TYPE_GROUP if broker.node_local(OFFSETS_TOPIC) => {}
        KEY_TYPE_GROUP => return coordinator_replicated(broker, &OFFSETS, key),
        KEY_TYPE_TRANSACTION if !broker.node_local(TRANSACTION_STATE_TOPIC) => {
            transactional_id_check(key)?;
            return coordinator_replicated(broker, &TRANSACTION_STATE, key);
        }
        KEY_TYPE_TRANSACTION => {
            transactional_id_check(key)?;
            broker
                .txn()
                .topic_ensure(&mut broker.topics())
                .map_err(|error| {
                    tracing::warn!(%error, "cannot create the transaction state topic");
                    ResponseError::CoordinatorNotAvailable
                })?;
        }
        _ => return Err(ResponseError::InvalidRequest),
    }
    let (host, port) = broker.config.advertised();
    Ok((BrokerId(broker.config.node_id), host, port))
}

/// A replicated internal topic whose partitions' leaders are coordinators.
struct Internal {
    name: &'static str,
    /// Its partition count when this broker asks for it.
    partitions: fn(&Broker) -> i32,
    /// Claims, and releases, the one creation request under way.
    create_begin: fn(&Broker) -> bool,
    create_end: fn(&Broker),
}

const OFFSETS: Internal = Internal {
    name: OFFSETS_TOPIC,
    partitions: |broker| broker.config.groups.offsets_topic_partitions,
    create_begin: |broker| broker.groups().create_begin(),
    create_end: |broker| broker.groups().create_end(),
};

const TRANSACTION_STATE: Internal = Internal {
    name: TRANSACTION_STATE_TOPIC,
    partitions: |broker| broker.config.transactions.state_partitions,
    create_begin: |broker| broker.txn().create_begin(),
    create_end: |broker| broker.txn().create_end(),
};

/// The leader of `key`'s partition of a replicated internal topic, by the image.
fn coordinator_replicated(
    broker: &Arc<Broker>,
    internal: &'static Internal,
    key: &str,
) -> Result<(BrokerId, String, i32), ResponseError> {
    let image = broker.cluster().image();
    let Some(topic) = image.topic_by_name(internal.name) else {
        internal_topic_create(broker, &image, internal);
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    let count = i32::try_from(topic.partitions.len()).expect("partition count fits i32");
    let index = partition_for(key, count);
    let leader = image
        .partition(topic.topic_id, index)
        .and_then(|partition| partition.leader())
        .and_then(|leader| image.broker(leader))
        .filter(|leader| !leader.fenced)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((
        BrokerId(leader.broker_id),
        leader.host.clone(),
        i32::from(leader.port),
    ))
}

/// Asks the controller, in the background, to create a replicated internal topic (one
/// request at a time; another lookup retries it if it failed). Not before
/// `internal_replication_factor` brokers are live: Kafka waits for
/// `offsets.topic.replication.factor` (`transaction.state.log.replication.factor`) brokers too
/// rather than create a weaker topic.
fn internal_topic_create(broker: &Arc<Broker>, image: &MetadataImage, internal: &'static Internal) {
    let replication_factor = internal_replication_factor(image);
    if image.brokers_live().count() < replication_factor as usize {
        return;
    }
    if !(internal.create_begin)(broker) {
        return;
    }
    let create = TopicCreate {
        name: internal.name.to_string(),
        partition_count: (internal.partitions)(broker),
        replication_factor,
        configs: internal_topic_configs(),
    };
    let broker = broker.clone();
    runtime::spawn(async move {
        match broker.cluster().create_topics(vec![create], false).await {
            Ok(results) => {
                for (name, result) in results {
                    match result {
                        Ok(_) => tracing::info!(topic = name, "internal topic created"),
                        Err(error) => {
                            tracing::info!(topic = name, %error, "internal topic not created")
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(topic = internal.name, %error, "cannot create the topic yet")
            }
        }
        (internal.create_end)(&broker);
    });
}

pub fn handle(broker: &Arc<Broker>, request: FindCoordinatorRequest, version: i16) -> ResponseKind {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| coordinator(broker, key, request.key_type))
            .collect();
        return ResponseKind::FindCoordinator(
            FindCoordinatorResponse::default().with_coordinators(coordinators),
        );
    }
    let response = match lookup(broker, request.key.as_str(), request.key_type) {
        Ok((node_id, host, port)) => FindCoordinatorResponse::default()
            .with_error_code(NONE)
            .with_node_id(node_id)
            .with_host(str_bytes(host))
            .with_port(port),
        Err(error) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(error.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(error.to_string())))
            } else {
                response
            }
        }
    };
    ResponseKind::FindCoordinator(response)
}

fn coordinator(broker: &Arc<Broker>, key: StrBytes, key_type: i8) -> Coordinator {
    let found = lookup(broker, key.as_str(), key_type);
    let coordinator = Coordinator::default().with_key(key);
    match found {
        Ok((node_id, host, port)) => coordinator
            .with_error_code(NONE)
            .with_node_id(node_id)
            .with_host(str_bytes(host))
            .with_port(port),
        Err(error) => coordinator
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(error.to_string())))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
