//! The group coordinator's requests, as functions over a `Cluster`: finding the coordinator,
//! committing and fetching offsets, and the admin side (list, describe, delete groups). The
//! membership requests (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) live in `group_consumer`.
//!
//! Every function routes to the group's coordinator, found with FindCoordinator and cached by the
//! caller; a transport failure or a coordinator error (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS) forgets it, so the next attempt asks
//! again. Each attempt is bounded by the cluster's request timeout, and attempts by its retries.

use crate::assignor::assignment_decode;
use crate::cluster::{Cluster, Target};
use crate::error::ClientError;
use crate::metadata::{MetadataScope, TopicPartition};
use kafka_protocol::error::ResponseError;
use std::collections::BTreeMap;
use wire::protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use wire::protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use wire::protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use wire::protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, RequestKind, ResponseKind,
    TopicName,
};
use wire::protocol::protocol::StrBytes;

/// Kafka's `CoordinatorType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;

/// A member's identity in offset commits: a group member's, or a simple consumer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitIdentity {
    pub generation_id: i32,
    pub member_id: String,
}

impl CommitIdentity {
    /// A consumer outside any generation (assign()): accepted only while the group is empty.
    pub fn simple() -> CommitIdentity {
        CommitIdentity {
            generation_id: -1,
            member_id: String::new(),
        }
    }
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
}

/// A group as DescribeGroups reports it, with assignments decoded (consumer groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Empty unless the group is Stable (or the assignment is not the consumer protocol's).
    pub assignment: Vec<TopicPartition>,
}

/// Errors after which the coordinator must be looked up again.
pub fn error_is_coordinator_lost(error: &ClientError) -> bool {
    error.is_connection_fatal()
        || matches!(
            error.kafka_error(),
            Some(
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
            )
        )
}

/// The node coordinating `group_id`, made routable (its address in the cluster's metadata).
pub async fn coordinator_find(cluster: &mut Cluster, group_id: &str) -> Result<i32, ClientError> {
    coordinator_find_keyed(cluster, group_id, KEY_TYPE_GROUP).await
}

/// The node coordinating `key` of `key_type` (0: a group, 1: a transactional id), made routable.
pub async fn coordinator_find_keyed(
    cluster: &mut Cluster,
    key: &str,
    key_type: i8,
) -> Result<i32, ClientError> {
    let group_id = key;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.to_string()))
        .with_key_type(key_type);
    let response = cluster
        .request(Target::Any, RequestKind::FindCoordinator(request))
        .await?;
    let ResponseKind::FindCoordinator(response) = response else {
        unreachable!("a FindCoordinator request is answered by FindCoordinator");
    };
    ClientError::from_code(response.error_code, || {
        format!("find the coordinator of {group_id}")
    })?;
    let node_id = response.node_id.0;
    if !cluster.metadata().brokers.contains_key(&node_id) {
        cluster
            .metadata_refresh(MetadataScope::Topics(Vec::new()))
            .await?;
    }
    Ok(node_id)
}

/// Sends `body` to the group's coordinator (cached in `coordinator`), retrying after transport
/// failures and coordinator moves. `check` reads the response's error code for the group.
pub async fn coordinator_request(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    body: RequestKind,
    check: fn(&ResponseKind) -> i16,
) -> Result<ResponseKind, ClientError> {
    let retries = cluster.config().retries;
    let mut attempt = 0;
    loop {
        let result = coordinator_attempt(cluster, coordinator, group_id, body.clone(), check).await;
        match result {
            Err(error) if error_is_coordinator_lost(&error) && attempt < retries => {
                tracing::debug!(group_id, %error, "coordinator lost; looking it up again");
                *coordinator = None;
                attempt += 1;
                cluster.backoff().await;
            }
            result => return result,
        }
    }
}

async fn coordinator_attempt(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    body: RequestKind,
    check: fn(&ResponseKind) -> i16,
) -> Result<ResponseKind, ClientError> {
    let node_id = match *coordinator {
        Some(node_id) => node_id,
        None => {
            let node_id = coordinator_find(cluster, group_id).await?;
            *coordinator = Some(node_id);
            node_id
        }
    };
    let response = cluster.request(Target::Node(node_id), body).await?;
    let code = check(&response);
    let lost = matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    );
    if lost {
        ClientError::from_code(code, || format!("group {group_id}"))?;
    }
    Ok(response)
}

/// Commits `offsets` for `group_id`; the first partition error, if any, is the result.
pub async fn offsets_commit(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    identity: &CommitIdentity,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<(), ClientError> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (partition, offset) in offsets {
        topics.entry(&partition.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(partition.partition)
                .with_committed_offset(*offset),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_generation_id_or_member_epoch(identity.generation_id)
        .with_member_id(StrBytes::from_string(identity.member_id.clone()))
        .with_topics(topics);
    let check = |response: &ResponseKind| match response {
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .find(|code| *code != 0)
            .unwrap_or(0),
        _ => 0,
    };
    let response = coordinator_request(
        cluster,
        coordinator,
        group_id,
        RequestKind::OffsetCommit(request),
        check,
    )
    .await?;
    ClientError::from_code(check(&response), || format!("commit offsets of {group_id}"))
}

/// The committed offsets of `partitions` (`None`: every partition the group committed for);
/// a partition without a committed offset maps to `None`.
pub async fn offsets_fetch(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
    offsets_fetch_once(cluster, coordinator, group_id, partitions, false).await
}

/// `offsets_fetch` as a read_committed consumer does it (KIP-447, `require_stable`): a partition
/// whose offsets an open transaction holds answers UNSTABLE_OFFSET_COMMIT, and the fetch is
/// asked again until the transaction is decided, so a consumer taking over never starts from
/// an offset a committed transaction has already moved past. The caller bounds the wait.
pub async fn offsets_fetch_stable(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
    loop {
        match offsets_fetch_once(cluster, coordinator, group_id, partitions, true).await {
            Err(ClientError::Kafka {
                error: ResponseError::UnstableOffsetCommit,
                ..
            }) => runtime::time::sleep(UNSTABLE_BACKOFF).await,
            result => return result,
        }
    }
}

/// How long a stable fetch waits before asking again while a transaction is undecided.
const UNSTABLE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

async fn offsets_fetch_once(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
    let topics = partitions.map(|partitions| {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for partition in partitions {
            topics
                .entry(&partition.topic)
                .or_default()
                .push(partition.partition);
        }
        topics
            .into_iter()
            .map(|(topic, indexes)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_indexes(indexes)
            })
            .collect()
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_topics(topics)
        .with_require_stable(require_stable);
    let check = |response: &ResponseKind| match response {
        ResponseKind::OffsetFetch(r) => r.error_code,
        _ => 0,
    };
    let response = coordinator_request(
        cluster,
        coordinator,
        group_id,
        RequestKind::OffsetFetch(request),
        check,
    )
    .await?;
    let ResponseKind::OffsetFetch(response) = response else {
        unreachable!("an OffsetFetch request is answered by OffsetFetch");
    };
    ClientError::from_code(response.error_code, || {
        format!("fetch offsets of {group_id}")
    })?;
    let mut offsets = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            let key = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
            ClientError::from_code(partition.error_code, || format!("fetch offset of {key}"))?;
            let offset = Some(partition.committed_offset).filter(|offset| *offset >= 0);
            offsets.insert(key, offset);
        }
    }
    Ok(offsets)
}

/// Every group on every broker of the cluster (each broker lists the groups it coordinates).
pub async fn groups_list(cluster: &mut Cluster) -> Result<Vec<GroupListing>, ClientError> {
    cluster
        .metadata_refresh(MetadataScope::Topics(Vec::new()))
        .await?;
    let nodes: Vec<i32> = cluster.metadata().brokers.keys().copied().collect();
    let mut groups = Vec::new();
    for node_id in nodes {
        let response = cluster
            .request(
                Target::Node(node_id),
                RequestKind::ListGroups(ListGroupsRequest::default()),
            )
            .await?;
        let ResponseKind::ListGroups(response) = response else {
            unreachable!("a ListGroups request is answered by ListGroups");
        };
        ClientError::from_code(response.error_code, || format!("list groups on {node_id}"))?;
        groups.extend(response.groups.iter().map(|group| GroupListing {
            group_id: group.group_id.0.to_string(),
            protocol_type: group.protocol_type.to_string(),
        }));
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(groups)
}

pub async fn group_describe(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
) -> Result<GroupDescription, ClientError> {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
    let check = |response: &ResponseKind| match response {
        ResponseKind::DescribeGroups(r) => r.groups.first().map_or(0, |g| g.error_code),
        _ => 0,
    };
    let response = coordinator_request(
        cluster,
        coordinator,
        group_id,
        RequestKind::DescribeGroups(request),
        check,
    )
    .await?;
    let ResponseKind::DescribeGroups(response) = response else {
        unreachable!("a DescribeGroups request is answered by DescribeGroups");
    };
    let Some(group) = response.groups.into_iter().next() else {
        return Err(ClientError::protocol(
            "describe groups",
            "no group in the answer",
        ));
    };
    ClientError::from_code(group.error_code, || format!("describe group {group_id}"))?;
    let is_consumer = group.protocol_type.as_str() == "consumer";
    let members = group
        .members
        .iter()
        .map(|member| MemberDescription {
            member_id: member.member_id.to_string(),
            client_id: member.client_id.to_string(),
            client_host: member.client_host.to_string(),
            assignment: is_consumer
                .then(|| assignment_decode(&member.member_assignment))
                .flatten()
                .unwrap_or_default(),
        })
        .collect();
    Ok(GroupDescription {
        group_id: group_id.to_string(),
        state: group.group_state.to_string(),
        protocol_type: group.protocol_type.to_string(),
        protocol: group.protocol_data.to_string(),
        members,
    })
}

/// Deletes one group (it must be empty).
pub async fn group_delete(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
) -> Result<(), ClientError> {
    let request = DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
    let check = |response: &ResponseKind| match response {
        ResponseKind::DeleteGroups(r) => r.results.first().map_or(0, |g| g.error_code),
        _ => 0,
    };
    let response = coordinator_request(
        cluster,
        coordinator,
        group_id,
        RequestKind::DeleteGroups(request),
        check,
    )
    .await?;
    ClientError::from_code(check(&response), || format!("delete group {group_id}"))
}

/// Deletes a group's committed offsets of `partitions` (OffsetDelete). The outer `Err` is a
/// group-level refusal (unknown group, an active group of another protocol); each partition then
/// has its own outcome (GROUP_SUBSCRIBED_TO_TOPIC while a member still consumes the topic).
pub async fn offsets_delete(
    cluster: &mut Cluster,
    coordinator: &mut Option<i32>,
    group_id: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, Result<(), ClientError>>, ClientError> {
    let mut topics: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
    for partition in partitions {
        topics.entry(partition.topic.as_str()).or_default().push(
            OffsetDeleteRequestPartition::default().with_partition_index(partition.partition),
        );
    }
    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let check = |response: &ResponseKind| match response {
        ResponseKind::OffsetDelete(r) => r.error_code,
        _ => 0,
    };
    let response = coordinator_request(
        cluster,
        coordinator,
        group_id,
        RequestKind::OffsetDelete(request),
        check,
    )
    .await?;
    let ResponseKind::OffsetDelete(response) = response else {
        unreachable!("OffsetDelete answered by another API");
    };
    ClientError::from_code(response.error_code, || {
        format!("delete offsets of group {group_id}")
    })?;
    let mut answers = BTreeMap::new();
    for topic in &response.topics {
        for answer in &topic.partitions {
            let partition = TopicPartition::new(topic.name.to_string(), answer.partition_index);
            let result = ClientError::from_code(answer.error_code, || {
                format!("delete offset of group {group_id} for {partition}")
            });
            answers.insert(partition, result);
        }
    }
    Ok(partitions
        .iter()
        .map(|partition| {
            let result = answers.remove(partition).unwrap_or_else(|| {
                Err(ClientError::protocol(
                    "OffsetDelete",
                    format!("response does not mention {partition}"),
                ))
            });
            (partition.clone(), result)
        })
        .collect())
}
