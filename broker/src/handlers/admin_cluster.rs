//! CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs in
//! cluster mode: the controller decides (`ClusterHandle`, forwarded to the Raft leader wherever
//! it is) and its error codes go on the wire as they are. Each call returns once the records are
//! applied on this node; the local logs are reconciled before the answer, so a produce right
//! after a CreateTopics finds its partition here.
//!
//! Config changes are computed here from the image's current overrides (the same operations as
//! on a single node) and sent as SETs and DELETEs of the keys that differ. Two concurrent
//! APPEND/SUBTRACT on the same list key from different brokers can lose one of them: the
//! controller applies each key's last SET. Internal topics are local to each node and never go
//! through the controller.

use crate::broker::Broker;
use crate::cluster_mode::topic_id_bytes;
use crate::handlers::configs::{Refusal, RESOURCE_TOPIC};
use crate::handlers::create_topics::configs_describe;
use crate::handlers::errors::NONE;
use crate::handlers::ResponseFuture;
use crate::topics::is_internal;
use cluster::controller::{ApiError, ConfigAlter, ConfigChange, PartitionsCreate, TopicCreate};
use cluster::node::{ClusterError, ClusterHandle};
use cluster::records::TopicId;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;
use wire::ResponseKind;

/// The code and message for a whole call that did not get a controller's answer.
fn call_error(error: &ClusterError) -> (i16, String) {
    let code = match error {
        ClusterError::Timeout | ClusterError::Io(_) => ResponseError::RequestTimedOut.code(),
        ClusterError::Refused(refusal) => refusal.code,
        // Retriable: the client asks again (a broker re-registering, or one stopping).
        ClusterError::NotRegistered | ClusterError::Stopped => ResponseError::NotController.code(),
    };
    (code, error.to_string())
}

fn text(message: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(message))
}

fn internal_refusal(name: &str) -> ApiError {
    let message = format!("topic {name:?} is internal to the broker");
    ApiError::new(ResponseError::InvalidTopicException.code(), message)
}

fn cluster(broker: &Arc<Broker>) -> ClusterHandle {
    broker.cluster().expect("cluster mode").clone()
}

/// A refusal: the wire code and its message.
type Refused = (i16, String);

/// Outcomes by topic name.
type Outcomes<T> = BTreeMap<String, Result<T, Refused>>;

/// What a whole call to the controller came back with.
type Called<T> = Result<cluster::node::TopicResults<T>, ClusterError>;

fn outcomes<T>(called: Called<T>, sent: &[String]) -> Outcomes<T> {
    match called {
        Ok(results) => results
            .into_iter()
            .map(|(name, result)| (name, result.map_err(|error| (error.code, error.message))))
            .collect(),
        Err(error) => {
            let (code, message) = call_error(&error);
            sent.iter()
                .map(|name| (name.clone(), Err((code, message.clone()))))
                .collect()
        }
    }
}

pub fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> ResponseFuture {
    let (broker, cluster) = (broker.clone(), cluster(broker));
    Box::pin(async move {
        let mut refused: BTreeMap<String, ApiError> = BTreeMap::new();
        let mut creates = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            if is_internal(&name) {
                refused.insert(name, internal_refusal(&topic.name.0));
                continue;
            }
            if !topic.assignments.is_empty() {
                let message = "manual replica assignments are not supported in cluster mode; \
                               give a replication factor";
                let code = ResponseError::InvalidReplicaAssignment.code();
                refused.insert(name, ApiError::new(code, message));
                continue;
            }
            let configs = topic
                .configs
                .iter()
                .filter_map(|config| {
                    let value = config.value.as_ref()?;
                    Some((config.name.to_string(), value.to_string()))
                })
                .collect();
            creates.push(TopicCreate {
                name,
                partition_count: topic.num_partitions,
                replication_factor: topic.replication_factor,
                configs,
            });
        }
        let sent: Vec<String> = creates.iter().map(|create| create.name.clone()).collect();
        let called = match creates.is_empty() {
            true => Ok(Vec::new()),
            false => cluster.create_topics(creates, request.validate_only).await,
        };
        let mut outcomes = outcomes(called, &sent);
        let _ = broker.reconcile();
        let results = request
            .topics
            .into_iter()
            .map(|topic| {
                let result = CreatableTopicResult::default().with_name(topic.name.clone());
                let name = topic.name.0.to_string();
                let outcome = match refused.remove(&name) {
                    Some(error) => Err((error.code, error.message)),
                    None => outcomes.remove(&name).unwrap_or_else(|| {
                        let code = ResponseError::InvalidRequest.code();
                        Err((code, format!("topic {name:?} appears more than once")))
                    }),
                };
                match outcome {
                    Ok(created) => {
                        let topic_id = created
                            .topic_id
                            .map_or(Uuid::nil(), |id| Uuid::from_bytes(topic_id_bytes(id)));
                        let result = result
                            .with_error_code(NONE)
                            .with_topic_id(topic_id)
                            .with_num_partitions(created.partition_count)
                            .with_replication_factor(created.replication_factor);
                        match version {
                            0..=4 => result,
                            _ => result.with_configs(Some(configs_describe(&created.configs))),
                        }
                    }
                    Err((code, message)) => {
                        tracing::info!(topic = %name, %message, "create topic refused");
                        result
                            .with_error_code(code)
                            .with_error_message(text(message))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    }
                }
            })
            .collect();
        ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
    })
}

pub fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> ResponseFuture {
    let (broker, cluster) = (broker.clone(), cluster(broker));
    Box::pin(async move {
        let targets: Vec<(Option<TopicName>, Uuid)> = match version {
            6.. => request
                .topics
                .into_iter()
                .map(|topic| (topic.name, topic.topic_id))
                .collect(),
            _ => request
                .topic_names
                .into_iter()
                .map(|name| (Some(name), Uuid::nil()))
                .collect(),
        };
        let image = cluster.image();
        // By id (v6): resolved to its name in the image; unknown ids answer on their own.
        let resolved: Vec<Option<String>> = targets
            .iter()
            .map(|(name, topic_id)| match name {
                Some(name) => Some(name.0.to_string()),
                None => image
                    .topic(TopicId(u128::from_be_bytes(*topic_id.as_bytes())))
                    .map(|topic| topic.name.clone()),
            })
            .collect();
        let names: Vec<String> = resolved
            .iter()
            .flatten()
            .filter(|name| !is_internal(name))
            .cloned()
            .collect();
        let called = match names.is_empty() {
            true => Ok(Vec::new()),
            false => cluster.delete_topics(names.clone()).await,
        };
        let mut outcomes = outcomes(called, &names);
        let _ = broker.reconcile();
        let responses = targets
            .into_iter()
            .zip(resolved)
            .map(|((name, topic_id), resolved)| {
                let result = DeletableTopicResult::default()
                    .with_name(name)
                    .with_topic_id(topic_id);
                let Some(resolved) = resolved else {
                    return result.with_error_code(ResponseError::UnknownTopicId.code());
                };
                let outcome = match is_internal(&resolved) {
                    true => {
                        let error = internal_refusal(&resolved);
                        Err((error.code, error.message))
                    }
                    false => outcomes.remove(&resolved).unwrap_or_else(|| {
                        let code = ResponseError::InvalidRequest.code();
                        Err((code, format!("topic {resolved:?} appears more than once")))
                    }),
                };
                match outcome {
                    Ok(topic_id) => result
                        .with_name(Some(TopicName(StrBytes::from_string(resolved))))
                        .with_topic_id(Uuid::from_bytes(topic_id_bytes(topic_id)))
                        .with_error_code(NONE),
                    Err((code, message)) => result
                        .with_error_code(code)
                        .with_error_message(text(message)),
                }
            })
            .collect();
        ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
    })
}

pub fn create_partitions(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> ResponseFuture {
    let (broker, cluster) = (broker.clone(), cluster(broker));
    Box::pin(async move {
        let mut refused: BTreeMap<String, ApiError> = BTreeMap::new();
        let mut creates = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            if is_internal(&name) {
                refused.insert(name, internal_refusal(&topic.name.0));
            } else if topic.assignments.is_some() {
                let message = "manual replica assignments are not supported in cluster mode";
                let code = ResponseError::InvalidReplicaAssignment.code();
                refused.insert(name, ApiError::new(code, message));
            } else {
                creates.push(PartitionsCreate {
                    name,
                    partition_count: topic.count,
                });
            }
        }
        let sent: Vec<String> = creates.iter().map(|create| create.name.clone()).collect();
        let called = match creates.is_empty() {
            true => Ok(Vec::new()),
            false => {
                cluster
                    .create_partitions(creates, request.validate_only)
                    .await
            }
        };
        let mut outcomes = outcomes(called, &sent);
        let _ = broker.reconcile();
        let results = request
            .topics
            .into_iter()
            .map(|topic| {
                let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
                let name = topic.name.0.to_string();
                let outcome = match refused.remove(&name) {
                    Some(error) => Err((error.code, error.message)),
                    None => outcomes.remove(&name).unwrap_or_else(|| {
                        let code = ResponseError::InvalidRequest.code();
                        Err((code, format!("topic {name:?} appears more than once")))
                    }),
                };
                match outcome {
                    Ok(()) => result.with_error_code(NONE),
                    Err((code, message)) => result
                        .with_error_code(code)
                        .with_error_message(text(message)),
                }
            })
            .collect();
        ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
    })
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs: its type and name, and how to
/// compute the new overrides from the current ones.
pub struct ConfigResource<F> {
    pub resource_type: i8,
    pub name: String,
    pub change: F,
}

/// Computes every topic resource's new overrides against the image, sends the differences to
/// the controller, and answers per resource (type, name, code, message), in request order.
async fn configs_change<F>(
    broker: &Arc<Broker>,
    resources: Vec<ConfigResource<F>>,
    validate_only: bool,
) -> Vec<(i8, String, Result<(), (i16, String)>)>
where
    F: FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Refusal>,
{
    let cluster = cluster(broker);
    let image = cluster.image();
    type Planned = (i8, String, Result<Option<ConfigAlter>, Refused>);
    let mut planned: Vec<Planned> = Vec::new();
    for resource in resources {
        let ConfigResource {
            resource_type,
            name,
            change,
        } = resource;
        let plan = if resource_type != RESOURCE_TOPIC {
            let refusal = crate::handlers::configs::resource_refusal(resource_type);
            Err((refusal.error.code(), refusal.message))
        } else if is_internal(&name) {
            let message =
                format!("topic {name:?} is internal to the broker; its configs are fixed");
            Err((ResponseError::InvalidTopicException.code(), message))
        } else {
            match image.topic_by_name(&name) {
                None => {
                    let message =
                        format!("topic {name:?} does not exist; create it first or check the name");
                    Err((ResponseError::UnknownTopicOrPartition.code(), message))
                }
                Some(topic) => match change(&topic.configs) {
                    Err(refusal) => Err((refusal.error.code(), refusal.message)),
                    Ok(overrides) => Ok(Some(ConfigAlter {
                        topic: name.clone(),
                        changes: config_diff(&topic.configs, &overrides),
                    })),
                },
            }
        };
        planned.push((resource_type, name, plan));
    }
    let alters: Vec<ConfigAlter> = planned
        .iter()
        .filter_map(|(_, _, plan)| plan.as_ref().ok().cloned().flatten())
        .collect();
    let sent: Vec<String> = alters.iter().map(|alter| alter.topic.clone()).collect();
    let called = match alters.is_empty() {
        true => Ok(Vec::new()),
        false => cluster.alter_configs(alters, validate_only).await,
    };
    let mut outcomes = outcomes(called, &sent);
    let _ = broker.reconcile();
    planned
        .into_iter()
        .map(|(resource_type, name, plan)| {
            let outcome = match plan {
                Err(refusal) => Err(refusal),
                Ok(_) => outcomes.remove(&name).unwrap_or_else(|| {
                    let code = ResponseError::InvalidRequest.code();
                    Err((code, format!("topic {name:?} appears more than once")))
                }),
            };
            (resource_type, name, outcome)
        })
        .collect()
}

/// The SETs and DELETEs that turn `current` overrides into `wanted`.
fn config_diff(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Vec<ConfigChange> {
    let deletes = current
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .map(|key| ConfigChange::Delete { key: key.clone() });
    let sets = wanted
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(*value))
        .map(|(key, value)| ConfigChange::Set {
            key: key.clone(),
            value: value.clone(),
        });
    deletes.chain(sets).collect()
}

pub fn alter_configs(broker: &Arc<Broker>, request: AlterConfigsRequest) -> ResponseFuture {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let broker = broker.clone();
    Box::pin(async move {
        let resources = request
            .resources
            .iter()
            .map(|resource| {
                let requested = crate::handlers::alter_configs::overrides_requested(resource);
                ConfigResource {
                    resource_type: resource.resource_type,
                    name: resource.resource_name.to_string(),
                    change: move |_current: &BTreeMap<String, String>| requested,
                }
            })
            .collect();
        let results = configs_change(&broker, resources, request.validate_only).await;
        let responses = results
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                let response = AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name));
                match outcome {
                    Ok(()) => response.with_error_code(NONE),
                    Err((code, message)) => response
                        .with_error_code(code)
                        .with_error_message(text(message)),
                }
            })
            .collect();
        ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
    })
}

pub fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> ResponseFuture {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let broker = broker.clone();
    Box::pin(async move {
        let resources = request
            .resources
            .iter()
            .map(|resource| {
                let resource = resource.clone();
                ConfigResource {
                    resource_type: resource.resource_type,
                    name: resource.resource_name.to_string(),
                    change: move |current: &BTreeMap<String, String>| {
                        crate::handlers::incremental_alter_configs::overrides_changed(
                            &resource, current,
                        )
                    },
                }
            })
            .collect();
        let results = configs_change(&broker, resources, request.validate_only).await;
        let responses = results
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                let response = AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name));
                match outcome {
                    Ok(()) => response.with_error_code(NONE),
                    Err((code, message)) => response
                        .with_error_code(code)
                        .with_error_message(text(message)),
                }
            })
            .collect();
        ResponseKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
        )
    })
}
