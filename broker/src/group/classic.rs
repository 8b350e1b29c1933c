//! One consumer group: Kafka's classic membership state machine and its committed offsets.
//!
//! ```text
//!            join                  all joined / rebalance timeout        leader's SyncGroup
//!   Empty ──────────► Preparing ──────────────────────────────► Completing ──────────────► Stable
//!     ▲               Rebalance ◄────────────────────────────── Rebalance  ◄────────────── │
//!     └─ last member leaves ─┘     member joins, leaves or expires; leader rejoins ────────┘
//! ```
//! Dead is terminal: the group was deleted, and the coordinator drops it at once.
//!
//! A rebalance is a barrier: PreparingRebalance collects a JoinGroup from every member (members
//! that do not rejoin within the rebalance timeout are dropped), then a new generation begins
//! with a leader that receives everyone's subscriptions; CompletingRebalance waits for the
//! leader's SyncGroup carrying the assignment, which every member then receives. Replies to
//! JoinGroup and SyncGroup are deferred: the group stores the request id and answers through
//! `Output` when the barrier falls.
//!
//! Kafka's rules followed here, and where to find them: `GroupCoordinator.scala` (handleJoinGroup,
//! handleSyncGroup, handleHeartbeat, handleLeaveGroup, doCommitOffsets) and `GroupMetadata.scala`.

use super::coordinator::Output;
use super::{
    Committed, GroupConfig, GroupDescription, GroupError, JoinRequest, JoinResponse, JoinedMember,
    Leaving, MemberDescription, MemberRef, Protocol, RequestId, SyncRequest, SyncResponse,
    TopicPartition,
};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report, as Kafka spells it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// A JoinGroup awaiting the end of PreparingRebalance.
    join_pending: Option<RequestId>,
    /// A SyncGroup awaiting the leader's assignment.
    sync_pending: Option<RequestId>,
    /// The member is dropped if no request arrives by then (while not parked in a barrier).
    heartbeat_deadline: Duration,
}

impl Member {
    /// A member as `__consumer_offsets` recorded it: only the chosen protocol's subscription.
    #[allow(clippy::too_many_arguments)]
    pub fn restored(
        member_id: String,
        group_instance_id: Option<String>,
        client_id: String,
        client_host: String,
        session_timeout: Duration,
        rebalance_timeout: Duration,
        protocol_type: String,
        protocols: Vec<Protocol>,
        assignment: Bytes,
    ) -> Member {
        Member {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            session_timeout,
            rebalance_timeout,
            protocol_type,
            protocols,
            assignment,
            join_pending: None,
            sync_pending: None,
            heartbeat_deadline: Duration::ZERO,
        }
    }

    fn protocol(&self, name: &str) -> Option<&Protocol> {
        self.protocols.iter().find(|protocol| protocol.name == name)
    }
}

/// What a group persists (`records::GroupMetadataValue`) and recovers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, expiring at the session deadline.
    members_pending: BTreeMap<String, Duration>,
    /// group.instance.id -> the member id currently holding it (static membership, KIP-345).
    instances: BTreeMap<String, String>,
    /// PreparingRebalance: when joining ends regardless. CompletingRebalance: when members that
    /// did not send SyncGroup are dropped.
    rebalance_deadline: Option<Duration>,
    /// PreparingRebalance from Empty: joining ends no earlier than this (initial delay).
    join_earliest: Option<Duration>,
    offsets: BTreeMap<TopicPartition, Committed>,
    /// Set when the membership changed in a way `__consumer_offsets` must record.
    dirty: bool,
    /// Distinguishes this group object from a later one with the same id (after a delete).
    pub incarnation: u64,
    /// Commits written but not yet durable: the group must outlive them to receive them.
    writes_pending: u32,
}

/// What every request handler needs besides the group: where replies go, the time, the limits.
struct Ctx<'a> {
    outputs: &'a mut Vec<Output>,
    now: Duration,
    config: &'a GroupConfig,
}

impl Group {
    pub fn new(group_id: String, incarnation: u64) -> Group {
        Group {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            members_pending: BTreeMap::new(),
            instances: BTreeMap::new(),
            rebalance_deadline: None,
            join_earliest: None,
            offsets: BTreeMap::new(),
            dirty: false,
            incarnation,
            writes_pending: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn offsets(&self) -> &BTreeMap<TopicPartition, Committed> {
        &self.offsets
    }

    /// The group leaves this coordinator (its partition's leadership moved): every JoinGroup
    /// and SyncGroup parked in a barrier is answered with `error`, so its member looks for the
    /// new coordinator instead of waiting out its request timeout.
    pub fn requests_abandon(&mut self, outputs: &mut Vec<Output>, error: &GroupError) {
        for member in self.members.values_mut() {
            if let Some(request) = member.join_pending.take() {
                let result = Err(error.clone());
                outputs.push(Output::Join { request, result });
            }
            if let Some(request) = member.sync_pending.take() {
                let result = Err(error.clone());
                outputs.push(Output::Sync { request, result });
            }
        }
    }

    /// True once, after a change `__consumer_offsets` must record.
    pub fn dirty_take(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self.members.values().cloned().collect(),
        }
    }

    /// Recovery: the group as last persisted. Members get a fresh session from `now`: those whose
    /// consumer is gone expire, the others keep their generation and need not rebalance.
    pub fn restore(&mut self, snapshot: GroupSnapshot, now: Duration) {
        self.generation_id = snapshot.generation_id;
        self.protocol_type = Some(snapshot.protocol_type).filter(|t| !t.is_empty());
        self.protocol_name = snapshot.protocol_name;
        self.leader = snapshot.leader;
        self.members.clear();
        self.instances.clear();
        for mut member in snapshot.members {
            member.join_pending = None;
            member.sync_pending = None;
            member.heartbeat_deadline = now + member.session_timeout;
            if let Some(instance) = &member.group_instance_id {
                self.instances
                    .insert(instance.clone(), member.member_id.clone());
            }
            self.members.insert(member.member_id.clone(), member);
        }
        let complete = self.protocol_name.is_some()
            && self
                .leader
                .as_ref()
                .is_some_and(|leader| self.members.contains_key(leader));
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else if complete {
            GroupState::Stable
        } else {
            // Persisted mid-rebalance by an older format: make everyone rejoin.
            GroupState::PreparingRebalance
        };
        if self.members.is_empty() || !complete {
            self.leader = None;
            self.protocol_name = None;
        }
        self.rebalance_deadline =
            (self.state == GroupState::PreparingRebalance).then(|| now + self.rebalance_timeout());
        self.join_earliest = None;
    }

    /// Recovery of a tombstoned group: forget the membership, keep nothing pending.
    pub fn reset(&mut self) {
        let offsets = std::mem::take(&mut self.offsets);
        let writes_pending = self.writes_pending;
        *self = Group::new(self.group_id.clone(), self.incarnation);
        self.offsets = offsets;
        self.writes_pending = writes_pending;
    }

    pub fn offset_put(&mut self, partition: TopicPartition, committed: Committed) {
        self.offsets.insert(partition, committed);
    }

    pub fn offset_remove(&mut self, partition: &TopicPartition) {
        self.offsets.remove(partition);
    }

    /// A group that never had a generation, holds no offsets and hands out no member ids leaves
    /// no trace; the coordinator forgets it (a failed first JoinGroup must not leak memory).
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.generation_id == 0
            && self.members_pending.is_empty()
            && self.writes_pending == 0
    }

    pub fn write_pending_add(&mut self) {
        self.writes_pending += 1;
    }

    pub fn write_pending_done(&mut self) {
        assert!(self.writes_pending > 0, "every completion follows an add");
        self.writes_pending -= 1;
    }

    pub fn describe(&self) -> GroupDescription {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        let members = self
            .members
            .values()
            .map(|member| MemberDescription {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: member
                    .protocol(&protocol_name)
                    .map(|protocol| protocol.metadata.clone())
                    .unwrap_or_default(),
                // Kafka reports assignments only once they are final.
                assignment: if self.state == GroupState::Stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name,
            generation_id: self.generation_id,
            members,
        }
    }

    /// Deletion (DeleteGroups): only an empty group may go, and it goes at once.
    pub fn delete(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Empty => {
                self.state = GroupState::Dead;
                Ok(())
            }
            GroupState::Dead => Err(GroupError::GroupIdNotFound {
                group_id: self.group_id.clone(),
            }),
            _ => Err(GroupError::NonEmptyGroup {
                group_id: self.group_id.clone(),
            }),
        }
    }

    /// The topics its members consume, for OffsetDelete (Kafka's `subscribedTopics`): `None`
    /// unless it is a consumer group (protocol type "consumer"). Read from each member's
    /// metadata for the chosen protocol, or for every protocol it offers while none is chosen
    /// (mid-rebalance), so a topic is never reported unsubscribed too early. Metadata that does
    /// not decode contributes no topics, as in Kafka.
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let chosen = self.protocol_name.as_deref();
        let topics = self
            .members
            .values()
            .flat_map(|member| &member.protocols)
            .filter(|protocol| chosen.is_none_or(|name| protocol.name == name))
            .filter_map(|protocol| super::records::subscription_topics(&protocol.metadata).ok())
            .flatten()
            .collect();
        Some(topics)
    }

    /// The longest rebalance timeout among members: how long a rebalance may take.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

// Requests. Each `pub fn` takes the outputs, the time and the config, answers through `outputs`
// (now or later), and leaves the group satisfying `invariants_check`.
impl Group {
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        outputs: &mut Vec<Output>,
        now: Duration,
        config: &GroupConfig,
        request: RequestId,
        join: JoinRequest,
        member_id_fresh: String,
    ) {
        let mut ctx = Ctx {
            outputs,
            now,
            config,
        };
        if let Err(error) = self.join_check(&join, config) {
            return ctx.join_reply(request, Err(error));
        }
        if let Some(instance) = &join.group_instance_id {
            if !join.member_id.is_empty()
                && self
                    .instances
                    .get(instance)
                    .is_some_and(|holder| *holder != join.member_id)
            {
                let error = GroupError::FencedInstanceId {
                    group_instance_id: instance.clone(),
                };
                return ctx.join_reply(request, Err(error));
            }
        }
        if join.member_id.is_empty() {
            self.join_unknown(&mut ctx, request, join, member_id_fresh);
        } else {
            self.join_known(&mut ctx, request, join);
        }
    }

    /// Checks that need no member: timeouts, protocol type, protocols in common, group size.
    fn join_check(&self, join: &JoinRequest, config: &GroupConfig) -> Result<(), GroupError> {
        let range = config.session_timeout_min..=config.session_timeout_max;
        if !range.contains(&join.session_timeout) {
            return Err(GroupError::InvalidSessionTimeout {
                timeout_ms: join.session_timeout.as_millis(),
                min_ms: config.session_timeout_min.as_millis(),
                max_ms: config.session_timeout_max.as_millis(),
            });
        }
        if join.protocol_type.is_empty() || join.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable {
                reason: "the group is being deleted",
            });
        }
        if self.members.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(join.protocol_type.as_str()) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let others = self
            .members
            .values()
            .filter(|member| member.member_id != join.member_id);
        let common = join.protocols.iter().any(|offered| {
            others
                .clone()
                .all(|member| member.protocol(&offered.name).is_some())
        });
        if !common {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn join_unknown(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: RequestId,
        join: JoinRequest,
        member_id: String,
    ) {
        let is_static_rejoin = join
            .group_instance_id
            .as_ref()
            .is_some_and(|instance| self.instances.contains_key(instance));
        if is_static_rejoin {
            return self.join_static_rejoin(ctx, request, join, member_id);
        }
        let members = self.members.len() + self.members_pending.len();
        if members >= ctx.config.group_size_max {
            return ctx.join_reply(request, Err(GroupError::GroupMaxSizeReached { members }));
        }
        // KIP-394: a dynamic member first learns its id, so that a retried first join does not
        // leave an orphan member behind for a whole session timeout.
        if join.member_id_required && join.group_instance_id.is_none() {
            self.members_pending
                .insert(member_id.clone(), ctx.now + join.session_timeout);
            return ctx.join_reply(request, Err(GroupError::MemberIdRequired { member_id }));
        }
        self.member_add(ctx, request, join, member_id);
    }

    fn join_known(&mut self, ctx: &mut Ctx<'_>, request: RequestId, join: JoinRequest) {
        if self.members_pending.remove(&join.member_id).is_some() {
            let member_id = join.member_id.clone();
            return self.member_add(ctx, request, join, member_id);
        }
        let Some(member) = self.members.get(&join.member_id) else {
            let error = GroupError::UnknownMemberId {
                member_id: join.member_id.clone(),
            };
            return ctx.join_reply(request, Err(error));
        };
        let unchanged = member.protocols == join.protocols;
        let is_leader = self.leader.as_deref() == Some(join.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.member_update(ctx, request, join),
            GroupState::CompletingRebalance if unchanged => {
                // A retried JoinGroup of this generation: answer again.
                let response = self.join_response(&join.member_id);
                ctx.join_reply(request, Ok(response));
            }
            GroupState::Stable if unchanged && !is_leader => {
                // A follower with nothing new may simply sync again (Kafka does the same).
                let response = self.join_response(&join.member_id);
                self.heartbeat_refresh(ctx.now, &join.member_id);
                ctx.join_reply(request, Ok(response));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.member_update(ctx, request, join);
            }
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with members is neither Empty nor Dead")
            }
        }
    }

    /// A static member restarted: it takes over its instance's old member (and assignment) under
    /// a new id; the old id is fenced. No rebalance if nothing changed (KIP-345).
    fn join_static_rejoin(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: RequestId,
        join: JoinRequest,
        member_id: String,
    ) {
        let instance = join.group_instance_id.clone().expect("static");
        let old_id = self.instances[&instance].clone();
        let mut member = self
            .members
            .remove(&old_id)
            .expect("instances map to members");
        let fenced = GroupError::FencedInstanceId {
            group_instance_id: instance.clone(),
        };
        if let Some(pending) = member.join_pending.take() {
            ctx.join_reply(pending, Err(fenced.clone()));
        }
        if let Some(pending) = member.sync_pending.take() {
            ctx.sync_reply(pending, Err(fenced));
        }
        let unchanged = member.protocols == join.protocols;
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        member.member_id = member_id.clone();
        self.members.insert(member_id.clone(), member);
        self.instances.insert(instance, member_id.clone());
        self.dirty = true;
        if self.state == GroupState::Stable && unchanged && !was_leader {
            let response = self.join_response(&member_id);
            self.heartbeat_refresh(ctx.now, &member_id);
            return ctx.join_reply(request, Ok(response));
        }
        if was_leader {
            self.leader = Some(member_id.clone());
        }
        let join = JoinRequest { member_id, ..join };
        self.member_update(ctx, request, join);
    }

    fn member_add(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: RequestId,
        join: JoinRequest,
        member_id: String,
    ) {
        assert!(
            !self.members.contains_key(&member_id),
            "member ids are fresh"
        );
        if self.members.is_empty() {
            self.protocol_type = Some(join.protocol_type.clone());
        }
        if let Some(instance) = &join.group_instance_id {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: join.group_instance_id.clone(),
            client_id: join.client_id.clone(),
            client_host: join.client_host.clone(),
            session_timeout: join.session_timeout,
            rebalance_timeout: join.rebalance_timeout,
            protocol_type: join.protocol_type.clone(),
            protocols: join.protocols.clone(),
            assignment: Bytes::new(),
            join_pending: None,
            sync_pending: None,
            heartbeat_deadline: ctx.now + join.session_timeout,
        };
        self.members.insert(member_id.clone(), member);
        let join = JoinRequest { member_id, ..join };
        self.member_update(ctx, request, join);
    }

    /// Records the member's (new) protocols and parks its JoinGroup in the rebalance.
    fn member_update(&mut self, ctx: &mut Ctx<'_>, request: RequestId, join: JoinRequest) {
        let member = self.members.get_mut(&join.member_id).expect("a member");
        member.protocols = join.protocols;
        member.session_timeout = join.session_timeout;
        member.rebalance_timeout = join.rebalance_timeout;
        member.heartbeat_deadline = ctx.now + join.session_timeout;
        if let Some(replaced) = member.join_pending.replace(request) {
            // The client retried its JoinGroup: the older request gets no useful answer.
            ctx.join_reply(replaced, Err(GroupError::RebalanceInProgress));
        }
        if self.state != GroupState::PreparingRebalance {
            self.rebalance_prepare(ctx);
        }
        self.join_try_complete(ctx);
    }

    fn rebalance_prepare(&mut self, ctx: &mut Ctx<'_>) {
        assert!(self.state != GroupState::Dead);
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is for members that are about to change.
            for member in self.members.values_mut() {
                if let Some(pending) = member.sync_pending.take() {
                    ctx.sync_reply(pending, Err(GroupError::RebalanceInProgress));
                }
            }
        }
        self.join_earliest =
            (self.state == GroupState::Empty).then(|| ctx.now + ctx.config.initial_rebalance_delay);
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(ctx.now + self.rebalance_timeout());
        tracing::debug!(group = %self.group_id, generation = self.generation_id, "rebalance started");
    }

    /// Ends PreparingRebalance if every member rejoined (and any initial delay passed), or if the
    /// rebalance timeout passed: members that did not rejoin are dropped.
    fn join_try_complete(&mut self, ctx: &mut Ctx<'_>) {
        assert_eq!(self.state, GroupState::PreparingRebalance);
        // Ids handed out with MEMBER_ID_REQUIRED are about to join: wait for them too (KIP-394).
        let all_joined = self.members.values().all(|m| m.join_pending.is_some())
            && self.members_pending.is_empty();
        let delayed = self.join_earliest.is_some_and(|at| ctx.now < at);
        if !delayed {
            // The initial delay is over; it must not stay a deadline, or a join that still
            // waits (for a member id handed out with MEMBER_ID_REQUIRED) would have the timer
            // tick at the same instant forever (single-groups seed 779 hung).
            self.join_earliest = None;
        }
        let timed_out = self.rebalance_deadline.is_some_and(|at| ctx.now >= at);
        if !(self.members.is_empty() || (all_joined && !delayed) || timed_out) {
            return;
        }
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|member| member.join_pending.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in absent {
            tracing::info!(group = %self.group_id, %member_id, "member did not rejoin in time");
            self.member_remove(&member_id);
        }
        self.generation_next(ctx);
    }

    fn generation_next(&mut self, ctx: &mut Ctx<'_>) {
        self.generation_id += 1;
        self.join_earliest = None;
        self.dirty = true;
        if self.members.is_empty() {
            // The protocol type stays: ListGroups still reports an empty group as "consumer".
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            self.rebalance_deadline = None;
            tracing::info!(group = %self.group_id, generation = self.generation_id, "group empty");
            return;
        }
        let leader = match &self.leader {
            Some(leader) if self.members.contains_key(leader) => leader.clone(),
            _ => self.members.keys().next().expect("members").clone(),
        };
        self.leader = Some(leader);
        self.protocol_name = Some(self.protocol_select());
        self.state = GroupState::CompletingRebalance;
        self.rebalance_deadline = Some(ctx.now + self.rebalance_timeout());
        tracing::info!(
            group = %self.group_id, generation = self.generation_id,
            members = self.members.len(), protocol = ?self.protocol_name, "generation started"
        );
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let response = self.join_response(&member_id);
            let member = self.members.get_mut(&member_id).expect("listed");
            member.assignment = Bytes::new();
            member.heartbeat_deadline = ctx.now + member.session_timeout;
            let request = member.join_pending.take().expect("all rejoined");
            ctx.join_reply(request, Ok(response));
        }
    }

    /// Kafka's vote: among the protocols every member supports, each member votes for the first
    /// it lists; most votes wins, ties going to the leader's order of preference.
    fn protocol_select(&self) -> String {
        let leader = &self.members[self.leader.as_ref().expect("leader chosen first")];
        let candidates: Vec<&str> = leader
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .filter(|name| self.members.values().all(|m| m.protocol(name).is_some()))
            .collect();
        assert!(
            !candidates.is_empty(),
            "join_check admits common protocols only"
        );
        let votes = |candidate: &str| {
            self.members
                .values()
                .filter(|member| {
                    member
                        .protocols
                        .iter()
                        .find(|p| candidates.contains(&p.name.as_str()))
                        .is_some_and(|p| p.name == candidate)
                })
                .count()
        };
        let mut best = candidates[0];
        for candidate in &candidates[1..] {
            if votes(candidate) > votes(best) {
                best = candidate;
            }
        }
        best.to_string()
    }

    fn join_response(&self, member_id: &str) -> JoinResponse {
        let protocol_name = self.protocol_name.clone().expect("a generation is running");
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            self.members
                .values()
                .map(|member| JoinedMember {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    metadata: member
                        .protocol(&protocol_name)
                        .expect("chosen among common protocols")
                        .metadata
                        .clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: Some(protocol_name),
            leader: self.leader.clone().expect("a generation has a leader"),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Drops a member and its instance mapping; the caller decides what that does to the state.
    fn member_remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                self.instances.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        self.dirty = true;
        Some(member)
    }

    /// After a member left or expired: the rest must rebalance without it.
    fn member_gone(&mut self, ctx: &mut Ctx<'_>, member: Member) {
        let unknown = GroupError::UnknownMemberId {
            member_id: member.member_id.clone(),
        };
        if let Some(pending) = member.join_pending {
            ctx.join_reply(pending, Err(unknown.clone()));
        }
        if let Some(pending) = member.sync_pending {
            ctx.sync_reply(pending, Err(unknown));
        }
        self.membership_changed(ctx);
    }

    /// After members were removed: the rest must rebalance without them.
    fn membership_changed(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.rebalance_prepare(ctx);
                self.join_try_complete(ctx);
            }
            GroupState::PreparingRebalance => self.join_try_complete(ctx),
            GroupState::Empty | GroupState::Dead => unreachable!("had a member"),
        }
    }

    fn heartbeat_refresh(&mut self, now: Duration, member_id: &str) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.heartbeat_deadline = now + member.session_timeout;
        }
    }

    /// The checks SyncGroup, Heartbeat and OffsetCommit share: the member exists, holds its
    /// instance, and speaks of the current generation.
    fn member_check(&self, member: &MemberRef) -> Result<(), GroupError> {
        if let Some(instance) = &member.group_instance_id {
            if self
                .instances
                .get(instance)
                .is_some_and(|holder| *holder != member.member_id)
            {
                return Err(GroupError::FencedInstanceId {
                    group_instance_id: instance.clone(),
                });
            }
        }
        if !self.members.contains_key(&member.member_id) {
            return Err(GroupError::UnknownMemberId {
                member_id: member.member_id.clone(),
            });
        }
        if member.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration {
                generation_id: member.generation_id,
                current: self.generation_id,
            });
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        outputs: &mut Vec<Output>,
        now: Duration,
        config: &GroupConfig,
        request: RequestId,
        sync: SyncRequest,
    ) {
        let mut ctx = Ctx {
            outputs,
            now,
            config,
        };
        let member = MemberRef {
            group_id: sync.group_id.clone(),
            generation_id: sync.generation_id,
            member_id: sync.member_id.clone(),
            group_instance_id: sync.group_instance_id.clone(),
        };
        if let Err(error) = self.member_check(&member) {
            return ctx.sync_reply(request, Err(error));
        }
        let type_differs = sync
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = sync
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_differs || name_differs {
            return ctx.sync_reply(request, Err(GroupError::InconsistentGroupProtocol));
        }
        self.heartbeat_refresh(now, &sync.member_id);
        match self.state {
            GroupState::PreparingRebalance => {
                ctx.sync_reply(request, Err(GroupError::RebalanceInProgress))
            }
            GroupState::CompletingRebalance => self.sync_completing(&mut ctx, request, sync),
            GroupState::Stable => {
                let assignment = self.members[&sync.member_id].assignment.clone();
                let response = self.sync_response(assignment);
                ctx.sync_reply(request, Ok(response));
            }
            GroupState::Empty | GroupState::Dead => unreachable!("member_check found a member"),
        }
    }

    fn sync_completing(&mut self, ctx: &mut Ctx<'_>, request: RequestId, sync: SyncRequest) {
        let member = self.members.get_mut(&sync.member_id).expect("checked");
        if let Some(replaced) = member.sync_pending.replace(request) {
            ctx.sync_reply(replaced, Err(GroupError::RebalanceInProgress));
        }
        if self.leader.as_deref() != Some(sync.member_id.as_str()) {
            return;
        }
        let mut assignments: BTreeMap<String, Bytes> = sync.assignments.into_iter().collect();
        for member in self.members.values_mut() {
            // Members the leader left out get an empty assignment, as in Kafka.
            member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        self.rebalance_deadline = None;
        self.dirty = true;
        tracing::info!(group = %self.group_id, generation = self.generation_id, "group stable");
        let pending: Vec<(RequestId, Bytes)> = self
            .members
            .values_mut()
            .filter_map(|m| m.sync_pending.take().map(|r| (r, m.assignment.clone())))
            .collect();
        for (request, assignment) in pending {
            let response = self.sync_response(assignment);
            ctx.sync_reply(request, Ok(response));
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    pub fn heartbeat(&mut self, now: Duration, member: &MemberRef) -> Result<(), GroupError> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(GroupError::UnknownMemberId {
                member_id: member.member_id.clone(),
            });
        }
        self.member_check(member)?;
        self.heartbeat_refresh(now, &member.member_id);
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    pub fn leave(
        &mut self,
        outputs: &mut Vec<Output>,
        now: Duration,
        config: &GroupConfig,
        leaving: &Leaving,
    ) -> Result<(), GroupError> {
        let mut ctx = Ctx {
            outputs,
            now,
            config,
        };
        let member_id = match (&leaving.group_instance_id, leaving.member_id.as_str()) {
            (Some(instance), member_id) => {
                let Some(holder) = self.instances.get(instance) else {
                    return Err(GroupError::UnknownMemberId {
                        member_id: member_id.to_string(),
                    });
                };
                if !member_id.is_empty() && holder != member_id {
                    return Err(GroupError::FencedInstanceId {
                        group_instance_id: instance.clone(),
                    });
                }
                holder.clone()
            }
            (None, member_id) => member_id.to_string(),
        };
        if self.members_pending.remove(&member_id).is_some() {
            return Ok(());
        }
        let Some(member) = self.member_remove(&member_id) else {
            return Err(GroupError::UnknownMemberId { member_id });
        };
        tracing::info!(group = %self.group_id, %member_id, "member left");
        self.member_gone(&mut ctx, member);
        Ok(())
    }

    /// OffsetCommit's membership check (Kafka 3's `ClassicGroup.validateOffsetCommit`). Simple
    /// consumers (assign(): generation -1, no member id) may commit only while the group has no
    /// members. `planted_stale` is the planted bug: commits from older generations get through.
    pub fn commit_check(&self, member: &MemberRef, planted_stale: bool) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable {
                reason: "the group is being deleted",
            });
        }
        if planted_stale && member.generation_id >= 0 && member.generation_id < self.generation_id {
            return Ok(());
        }
        let is_simple = member.generation_id < 0
            && member.member_id.is_empty()
            && member.group_instance_id.is_none();
        if !is_simple {
            self.member_check(member)?;
        } else if self.state != GroupState::Empty {
            return Err(GroupError::UnknownMemberId {
                member_id: String::new(),
            });
        }
        if self.state == GroupState::CompletingRebalance {
            // The member's partitions are about to move: its offsets would race the new owner.
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expires sessions and ends timed-out rebalance phases.
    pub fn tick(&mut self, outputs: &mut Vec<Output>, now: Duration, config: &GroupConfig) {
        let mut ctx = Ctx {
            outputs,
            now,
            config,
        };
        self.members_pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_pending.is_none() && m.sync_pending.is_none())
            .filter(|m| m.heartbeat_deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            // An earlier expiry in this loop may have ended a rebalance that removed it.
            let Some(member) = self.member_remove(&member_id) else {
                continue;
            };
            tracing::info!(group = %self.group_id, %member_id, "member session expired");
            self.member_gone(&mut ctx, member);
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|at| at <= now);
        match self.state {
            GroupState::PreparingRebalance => self.join_try_complete(&mut ctx),
            GroupState::CompletingRebalance if deadline_passed => {
                // Those that never sent SyncGroup (the leader at least) are gone; the rest
                // rebalance without them.
                let unsynced: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.sync_pending.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                assert!(
                    !unsynced.is_empty(),
                    "the leader's sync would have ended the phase"
                );
                for member_id in &unsynced {
                    tracing::info!(group = %self.group_id, %member_id, "member did not sync in time");
                    self.member_remove(member_id);
                }
                self.membership_changed(&mut ctx);
            }
            _ => {}
        }
    }

    /// The next time `tick` has something to do, if any.
    pub fn deadline_next(&self) -> Option<Duration> {
        let members = self
            .members
            .values()
            .filter(|m| m.join_pending.is_none() && m.sync_pending.is_none())
            .map(|m| m.heartbeat_deadline);
        let pending = self.members_pending.values().copied();
        members
            .chain(pending)
            .chain(self.rebalance_deadline)
            .chain(self.join_earliest)
            .min()
    }

    /// O(members): the simulator and the tests call it after every step.
    pub fn invariants_check(&self) {
        assert!(self.generation_id >= 0);
        for (instance, member_id) in &self.instances {
            let member = &self.members[member_id];
            assert_eq!(member.group_instance_id.as_ref(), Some(instance));
        }
        let pending_joins = self.members.values().filter(|m| m.join_pending.is_some());
        let pending_syncs = self.members.values().filter(|m| m.sync_pending.is_some());
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                assert!(self.members.is_empty(), "{:?} with members", self.state);
                assert!(self.leader.is_none());
            }
            GroupState::PreparingRebalance => {
                assert!(!self.members.is_empty(), "an empty rebalance ends at once");
                assert_eq!(pending_syncs.count(), 0);
                assert!(self.rebalance_deadline.is_some());
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let leader = self.leader.as_ref().expect("a generation has a leader");
                assert!(self.members.contains_key(leader), "the leader is a member");
                let protocol = self.protocol_name.as_ref().expect("a protocol is chosen");
                assert!(self
                    .members
                    .values()
                    .all(|m| m.protocol(protocol).is_some()));
                assert_eq!(pending_joins.count(), 0, "joins end with the generation");
                assert!(self.generation_id > 0);
                if self.state == GroupState::Stable {
                    assert_eq!(
                        pending_syncs.count(),
                        0,
                        "a Stable group's members all synced"
                    );
                }
            }
        }
    }
}

impl Ctx<'_> {
    fn join_reply(&mut self, request: RequestId, result: Result<JoinResponse, GroupError>) {
        self.outputs.push(Output::Join { request, result });
    }

    fn sync_reply(&mut self, request: RequestId, result: Result<SyncResponse, GroupError>) {
        self.outputs.push(Output::Sync { request, result });
    }
}
