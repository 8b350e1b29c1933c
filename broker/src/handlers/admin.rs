//! CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs: the
//! controller decides (`ClusterHandle`, forwarded to the Raft leader wherever it is, this node
//! itself when it is a lone voter) and its error codes go on the wire as they are. Each call
//! returns once the records are applied on this node; the local logs are reconciled before the
//! answer, so a produce right after a CreateTopics finds its partition here.
//!
//! Every handler runs the same pass (`Pass`): refuse here what the controller must not see
//! (internal topics, manual assignments it cannot honour), send the rest as one call, then
//! answer each topic in request order from the refusals, the controller's outcomes, or
//! INVALID_REQUEST for a name the request repeats.
//!
//! Config changes are computed here from the image's current overrides and sent as SETs and
//! DELETEs of the keys that differ. Two concurrent APPEND/SUBTRACT on the same list key from
//! different brokers can lose one of them: the controller applies each key's last SET.
//! Internal topics are local to each node and never go through the controller.

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
use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
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
    broker.cluster().clone()
}

/// A refusal: the wire code and its message.
type Refused = (i16, String);

/// Outcomes by topic name.
type Outcomes<T> = BTreeMap<String, Result<T, Refused>>;

/// What a whole call to the controller came back with.
type Called<T> = Result<cluster::node::TopicResults<T>, ClusterError>;

/// One handler's pass over its topics: refusals decided here, then the controller's outcomes.
struct Pass<T> {
    refused: BTreeMap<String, Refused>,
    outcomes: Outcomes<T>,
}

impl<T> Pass<T> {
    fn new() -> Pass<T> {
        Pass {
            refused: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        }
    }

    fn refuse(&mut self, name: &str, error: ApiError) {
        self.refused
            .insert(name.to_string(), (error.code, error.message));
    }

    /// Runs `call` on the names sent (none: no call), then reconciles the local logs, so the
    /// answers describe partitions this node already has.
    async fn decide<F>(&mut self, broker: &Arc<Broker>, sent: Vec<String>, call: F)
    where
        F: std::future::Future<Output = Called<T>>,
    {
        let called = match sent.is_empty() {
            true => Ok(Vec::new()),
            false => call.await,
        };
        self.outcomes = outcomes(called, &sent);
        let _ = broker.reconcile();
    }

    /// `name`'s answer: its refusal, else the controller's outcome; a name already answered
    /// appears more than once in the request.
    fn take(&mut self, name: &str) -> Result<T, Refused> {
        if let Some(refused) = self.refused.remove(name) {
            return Err(refused);
        }
        self.outcomes.remove(name).unwrap_or_else(|| {
            let code = ResponseError::InvalidRequest.code();
            Err((code, format!("topic {name:?} appears more than once")))
        })
    }
}

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
        let mut pass = Pass::new();
        let mut creates = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            if is_internal(&name) {
                pass.refuse(&name, internal_refusal(&name));
                continue;
            }
            let partition_count = match assignments_alone(&broker, &topic.assignments) {
                Ok(count) => count.unwrap_or(topic.num_partitions),
                Err(error) => {
                    pass.refuse(&name, error);
                    continue;
                }
            };
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
                partition_count,
                replication_factor: topic.replication_factor,
                configs,
            });
        }
        let sent = creates.iter().map(|create| create.name.clone()).collect();
        let call = cluster.create_topics(creates, request.validate_only);
        pass.decide(&broker, sent, call).await;
        let results = request
            .topics
            .into_iter()
            .map(|topic| {
                let result = CreatableTopicResult::default().with_name(topic.name.clone());
                let name = topic.name.0.to_string();
                match pass.take(&name) {
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

/// Manual replica assignments: the controller places replicas itself, so the only assignment
/// honoured is the one it would make anyway: every partition on this broker alone, while it is
/// the only live broker (a zero-config node). Answers the partition count it implies (`None`
/// without assignments), or the refusal.
fn assignments_alone(
    broker: &Arc<Broker>,
    assignments: &[CreatableReplicaAssignment],
) -> Result<Option<i32>, ApiError> {
    if assignments.is_empty() {
        return Ok(None);
    }
    let node_id = broker.config.node_id;
    let alone = broker
        .cluster()
        .image()
        .brokers_live()
        .map(|b| b.broker_id)
        .eq([node_id]);
    let own = assignments
        .iter()
        .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node_id);
    match (alone && own, i32::try_from(assignments.len())) {
        (true, Ok(count)) => Ok(Some(count)),
        _ => {
            let message = format!(
                "manual replica assignments are honoured only when each partition names \
                 broker {node_id} alone and it is the only live broker; give a replication \
                 factor instead"
            );
            Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment.code(),
                message,
            ))
        }
    }
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
        let mut pass = Pass::new();
        let mut names = Vec::new();
        for name in resolved.iter().flatten() {
            match is_internal(name) {
                true => pass.refuse(name, internal_refusal(name)),
                false => names.push(name.clone()),
            }
        }
        let call = cluster.delete_topics(names.clone());
        pass.decide(&broker, names, call).await;
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
                match pass.take(&resolved) {
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
        let mut pass = Pass::new();
        let mut creates = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            if is_internal(&name) {
                pass.refuse(&name, internal_refusal(&name));
                continue;
            }
            let assignments: Vec<CreatableReplicaAssignment> = topic
                .assignments
                .iter()
                .flatten()
                .map(|a| {
                    CreatableReplicaAssignment::default().with_broker_ids(a.broker_ids.clone())
                })
                .collect();
            if let Err(error) = assignments_alone(&broker, &assignments) {
                pass.refuse(&name, error);
                continue;
            }
            creates.push(PartitionsCreate {
                name,
                partition_count: topic.count,
            });
        }
        let sent = creates.iter().map(|create| create.name.clone()).collect();
        let call = cluster.create_partitions(creates, request.validate_only);
        pass.decide(&broker, sent, call).await;
        let results = request
            .topics
            .into_iter()
            .map(|topic| {
                let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
                match pass.take(topic.name.0.as_str()) {
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
    let sent = alters.iter().map(|alter| alter.topic.clone()).collect();
    let mut pass = Pass::new();
    let call = cluster.alter_configs(alters, validate_only);
    pass.decide(broker, sent, call).await;
    planned
        .into_iter()
        .map(|(resource_type, name, plan)| {
            // Refusals are per resource (a broker resource may share a topic's name).
            let outcome = plan.and_then(|_| pass.take(&name));
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
