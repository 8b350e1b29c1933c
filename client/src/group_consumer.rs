//! `GroupConsumer`: a consumer that joins a group, is assigned partitions by the group's leader
//! (range or roundrobin), heartbeats, commits, and leaves on close.
//!
//! No background task: membership is driven from `poll`, which rejoins when needed, heartbeats
//! when due, and never waits past the next heartbeat. The application must therefore poll at
//! least once per session timeout (Kafka's pre-KIP-62 model); in exchange the whole consumer is
//! one future, deterministic under madsim. Rebalances are eager: every partition is revoked before
//! rejoining. What happened is queued as `RebalanceEvent`s for `events()`.
//!
//! Coordinator requests use their own `Cluster` (own connections), whose request timeout covers a
//! JoinGroup parked for a whole rebalance, so a slow rebalance never times out a fetch and vice
//! versa.

use crate::assignor::{assignment_decode, assignment_encode, subscription_decode};
use crate::assignor::{subscription_encode, Assignor};
use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::consumer::{Consumer, ConsumerConfig, Offset, OffsetReset};
use crate::error::ClientError;
use crate::group::{coordinator_request, offsets_commit, offsets_fetch, CommitIdentity};
use crate::metadata::TopicPartition;
use crate::records::ConsumerRecord;
use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use wire::protocol::messages::join_group_request::JoinGroupRequestProtocol;
use wire::protocol::messages::leave_group_request::MemberIdentity;
use wire::protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use wire::protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, RequestKind,
    ResponseKind, SyncGroupRequest,
};
use wire::protocol::protocol::StrBytes;

/// JoinGroup/SyncGroup round trips per rebalance before `poll` gives up and reports the error
/// (the next `poll` starts again): MEMBER_ID_REQUIRED, a concurrent rebalance and a coordinator
/// move each cost one.
const JOIN_ATTEMPTS_MAX: u32 = 16;
/// Kafka's margin of the join request timeout over the rebalance timeout.
const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
const PROTOCOL_TYPE: &str = "consumer";

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group_id: String,
    /// Kafka's `session.timeout.ms`: the coordinator drops us after this long without a heartbeat.
    pub session_timeout: Duration,
    /// Kafka's `max.poll.interval.ms`: how long a rebalance waits for us to rejoin.
    pub rebalance_timeout: Duration,
    /// Kafka's `heartbeat.interval.ms`: well under the session timeout.
    pub heartbeat_interval: Duration,
    pub assignor: Assignor,
}

impl GroupConfig {
    /// Kafka's defaults: 45 s session, 5 min rebalance, 3 s heartbeats, range assignor.
    pub fn kafka_defaults(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            assignor: Assignor::Range,
        }
    }
}

/// What a rebalance did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions are no longer ours (before a rejoin).
    Revoked(Vec<TopicPartition>),
    /// This generation gave us these partitions.
    Assigned {
        generation_id: i32,
        partitions: Vec<TopicPartition>,
    },
}

#[derive(Debug)]
pub struct GroupConsumer {
    consumer: Consumer,
    coordinator_cluster: Cluster,
    coordinator: Option<i32>,
    config: GroupConfig,
    offset_reset: OffsetReset,
    topics: Vec<String>,
    member_id: String,
    generation_id: i32,
    rejoin_needed: bool,
    heartbeat_due: runtime::time::Instant,
    events: VecDeque<RebalanceEvent>,
}

impl GroupConsumer {
    pub fn new(client: ClientConfig, consumer: ConsumerConfig, config: GroupConfig) -> Self {
        assert!(config.heartbeat_interval < config.session_timeout);
        let mut coordinator_client = client.clone();
        coordinator_client.request_timeout = coordinator_client
            .request_timeout
            .max(config.rebalance_timeout + JOIN_TIMEOUT_MARGIN);
        let heartbeat_due = client.clock.now();
        GroupConsumer {
            offset_reset: consumer.offset_reset,
            consumer: Consumer::new(client, consumer),
            coordinator_cluster: Cluster::new(coordinator_client),
            coordinator: None,
            config,
            topics: Vec::new(),
            member_id: String::new(),
            generation_id: -1,
            rejoin_needed: true,
            heartbeat_due,
            events: VecDeque::new(),
        }
    }

    /// Replaces the subscription; the next `poll` rejoins with it.
    pub fn subscribe(&mut self, topics: &[String]) {
        self.topics = topics.to_vec();
        self.topics.sort();
        self.topics.dedup();
        self.rejoin_needed = true;
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    /// (member id, generation): the identity our commits carry.
    pub fn generation(&self) -> (&str, i32) {
        (&self.member_id, self.generation_id)
    }

    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.consumer.position(partition)
    }

    /// Rebalance events since the last call.
    pub fn events(&mut self) -> Vec<RebalanceEvent> {
        self.events.drain(..).collect()
    }

    /// Rejoins if needed, heartbeats if due, then fetches for at most `max_wait` (less if a
    /// heartbeat falls due sooner).
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.rejoin_needed {
            self.join().await?;
        }
        self.heartbeat_if_due().await?;
        let now = self.coordinator_cluster.config().clock.now();
        let until_heartbeat = self.heartbeat_due.saturating_duration_since(now);
        self.consumer.poll(max_wait.min(until_heartbeat)).await
    }

    /// Commits the current position of every assigned partition.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| self.consumer.position(&tp).map(|position| (tp, position)))
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits `offsets` (the next offset to read, per partition) under our generation. A
    /// rebalance-related refusal marks the consumer for rejoining.
    pub async fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let identity = CommitIdentity {
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
        };
        let result = offsets_commit(
            &mut self.coordinator_cluster,
            &mut self.coordinator,
            &self.config.group_id,
            &identity,
            offsets,
        )
        .await;
        if let Err(error) = &result {
            self.membership_error(error);
        }
        result
    }

    /// The group's committed offsets for `partitions`.
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
        offsets_fetch(
            &mut self.coordinator_cluster,
            &mut self.coordinator,
            &self.config.group_id,
            Some(partitions),
        )
        .await
    }

    /// Leaves the group so that the others rebalance at once, not after our session expires.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let request = LeaveGroupRequest::default()
            .with_group_id(self.group_id())
            .with_members(vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))]);
        let check = |response: &ResponseKind| match response {
            ResponseKind::LeaveGroup(r) => r.error_code,
            _ => 0,
        };
        let response = coordinator_request(
            &mut self.coordinator_cluster,
            &mut self.coordinator,
            &self.config.group_id,
            RequestKind::LeaveGroup(request),
            check,
        )
        .await?;
        ClientError::from_code(check(&response), || "leave group".to_string())
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.config.group_id.clone()))
    }

    /// After an error from the coordinator: whether and how to rejoin.
    fn membership_error(&mut self, error: &ClientError) {
        match error.kafka_error() {
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.generation_id = -1;
                self.rejoin_needed = true;
            }
            Some(
                ResponseError::IllegalGeneration
                | ResponseError::RebalanceInProgress
                | ResponseError::FencedInstanceId,
            ) => self.rejoin_needed = true,
            _ => {}
        }
    }

    async fn heartbeat_if_due(&mut self) -> Result<(), ClientError> {
        let clock = self.coordinator_cluster.config().clock;
        if clock.now() < self.heartbeat_due {
            return Ok(());
        }
        let request = HeartbeatRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation_id)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let check = |response: &ResponseKind| match response {
            ResponseKind::Heartbeat(r) => r.error_code,
            _ => 0,
        };
        let response = coordinator_request(
            &mut self.coordinator_cluster,
            &mut self.coordinator,
            &self.config.group_id,
            RequestKind::Heartbeat(request),
            check,
        )
        .await;
        self.heartbeat_due = clock.now() + self.config.heartbeat_interval;
        let outcome = response.and_then(|response| {
            ClientError::from_code(check(&response), || "heartbeat".to_string())
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::debug!(group = %self.config.group_id, %error, "heartbeat refused");
                self.membership_error(&error);
                // Membership errors are handled by rejoining; others go to the caller.
                if self.rejoin_needed || error.is_retriable() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// One rebalance from our side: revoke, JoinGroup (twice on a first join: KIP-394), assign if
    /// leader, SyncGroup, then start fetching from the committed offsets.
    async fn join(&mut self) -> Result<(), ClientError> {
        let revoked = self.consumer.assignment();
        if !revoked.is_empty() {
            self.consumer.assign(Vec::new()).await?;
            self.events.push_back(RebalanceEvent::Revoked(revoked));
        }
        let mut attempt = 0;
        let partitions = loop {
            attempt += 1;
            match self.join_once().await {
                Ok(partitions) => break partitions,
                Err(error) if attempt < JOIN_ATTEMPTS_MAX && error.is_retriable() => {
                    tracing::debug!(group = %self.config.group_id, %error, "rejoining");
                    self.coordinator_cluster.backoff().await;
                }
                Err(error) if attempt < JOIN_ATTEMPTS_MAX && self.rejoin_needed => {
                    tracing::debug!(group = %self.config.group_id, %error, "rejoining");
                }
                Err(error) => return Err(error),
            }
        };
        self.start_fetching(&partitions).await?;
        self.rejoin_needed = false;
        self.heartbeat_due =
            self.coordinator_cluster.config().clock.now() + self.config.heartbeat_interval;
        self.events.push_back(RebalanceEvent::Assigned {
            generation_id: self.generation_id,
            partitions,
        });
        Ok(())
    }

    async fn join_once(&mut self) -> Result<Vec<TopicPartition>, ClientError> {
        let joined = self.join_request().await?;
        let is_leader = joined.leader == joined.member_id;
        let assignments = if is_leader {
            self.leader_assign(&joined).await?
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation_id)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_assignments(assignments);
        let check = |response: &ResponseKind| match response {
            ResponseKind::SyncGroup(r) => r.error_code,
            _ => 0,
        };
        let response = coordinator_request(
            &mut self.coordinator_cluster,
            &mut self.coordinator,
            &self.config.group_id,
            RequestKind::SyncGroup(request),
            check,
        )
        .await?;
        if let Err(error) = ClientError::from_code(check(&response), || "sync group".into()) {
            self.membership_error(&error);
            return Err(error);
        }
        let ResponseKind::SyncGroup(synced) = response else {
            unreachable!("a SyncGroup request is answered by SyncGroup");
        };
        assignment_decode(&synced.assignment)
            .ok_or_else(|| ClientError::protocol("sync group", "undecodable assignment"))
    }

    /// JoinGroup until the coordinator accepts us (a first join learns its member id first).
    async fn join_request(&mut self) -> Result<JoinGroupResponse, ClientError> {
        let session_ms = millis(self.config.session_timeout);
        let rebalance_ms = millis(self.config.rebalance_timeout);
        for _ in 0..2 {
            let request = JoinGroupRequest::default()
                .with_group_id(self.group_id())
                .with_session_timeout_ms(session_ms)
                .with_rebalance_timeout_ms(rebalance_ms)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(self.config.assignor.name()))
                    .with_metadata(subscription_encode(&self.topics))]);
            let check = |response: &ResponseKind| match response {
                ResponseKind::JoinGroup(r) => r.error_code,
                _ => 0,
            };
            let response = coordinator_request(
                &mut self.coordinator_cluster,
                &mut self.coordinator,
                &self.config.group_id,
                RequestKind::JoinGroup(request),
                check,
            )
            .await?;
            let ResponseKind::JoinGroup(joined) = response else {
                unreachable!("a JoinGroup request is answered by JoinGroup");
            };
            if joined.error_code == ResponseError::MemberIdRequired.code() {
                self.member_id = joined.member_id.to_string();
                continue;
            }
            if let Err(error) = ClientError::from_code(joined.error_code, || "join group".into()) {
                self.membership_error(&error);
                return Err(error);
            }
            self.member_id = joined.member_id.to_string();
            self.generation_id = joined.generation_id;
            tracing::debug!(group = %self.config.group_id, generation = self.generation_id, member = %self.member_id, "joined");
            return Ok(joined);
        }
        Err(ClientError::protocol(
            "join group",
            "MEMBER_ID_REQUIRED twice for one member",
        ))
    }

    /// The leader's job: decode every member's subscription and assign the partitions.
    async fn leader_assign(
        &mut self,
        joined: &JoinGroupResponse,
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut subscriptions = BTreeMap::new();
        for member in &joined.members {
            let topics = subscription_decode(&member.metadata).unwrap_or_default();
            subscriptions.insert(member.member_id.to_string(), topics);
        }
        let mut topics: Vec<String> = subscriptions.values().flatten().cloned().collect();
        topics.sort();
        topics.dedup();
        let assignor = joined
            .protocol_name
            .as_ref()
            .and_then(|name| Assignor::from_name(name.as_str()))
            .unwrap_or(self.config.assignor);
        let partition_counts = self.consumer.partition_counts(&topics).await?;
        let assignment = assignor.assign(&subscriptions, &partition_counts);
        Ok(assignment
            .into_iter()
            .map(|(member_id, partitions)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(assignment_encode(&partitions))
            })
            .collect())
    }

    /// Assigns the fetcher: each partition at its committed offset, or as the reset policy says.
    async fn start_fetching(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        let committed = if partitions.is_empty() {
            BTreeMap::new()
        } else {
            self.committed(partitions).await?
        };
        let reset = match self.offset_reset {
            OffsetReset::Earliest | OffsetReset::Error => Offset::Earliest,
            OffsetReset::Latest => Offset::Latest,
        };
        let assignment = partitions
            .iter()
            .map(|tp| {
                let start = committed
                    .get(tp)
                    .copied()
                    .flatten()
                    .map_or(reset, Offset::At);
                (tp.clone(), start)
            })
            .collect();
        self.consumer.assign(assignment).await
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
