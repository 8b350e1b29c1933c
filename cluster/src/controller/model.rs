//! The controller's model test: random sequences of registrations, heartbeats, time passing,
//! controlled shutdowns, topic and partition creation and deletion, config changes, producer-id
//! allocations, commits and controller failovers (proposals in flight are lost and a new
//! controller is built from the committed image).
//!
//! Every proposal is encoded, and committed entries are decoded and applied to a follower's
//! image. After every step:
//! - the controller's image equals the committed image plus its proposals in flight;
//! - both images keep their invariants (`check_invariants`; the image asserts as it applies);
//! - committed epochs only grow (broker, leader and partition epochs);
//! - no partition is without a leader while it could have one (a live ISR member, or a live
//!   replica when the topic allows unclean election);
//! - every reply, delivered when its `reply_after` commits, agrees with the committed image
//!   at that point, and no producer id block is ever delivered twice;
//! - an ISR change (AlterPartition, from the current leader or from a zombie: a broker acting
//!   on an older image, maybe an older incarnation) is accepted exactly when it comes from the
//!   current leader at the current leader and partition epochs with a valid ISR adding no
//!   fenced broker, and each refusal has the code of the first rule broken;
//! - a new leader comes from the previous ISR, unless the topic allows unclean election (then
//!   it leads alone); an ISR member added without a leader change is live;
//! - after a due rebalance check, no preferred replica that could lead is left out;
//! - every state-changing call carries a request id, and a retry of it (a duplicate, or a try
//!   after its answer was lost, on the same controller or after a failover) answers what the
//!   try that wrote its records answered, and writes nothing, as long as those records are
//!   committed or in flight (`Controller::decide_once`).
//!
//! At the end, liveness: once everything commits and every broker heartbeats with its image
//! caught up, every broker is unfenced and every partition has a leader; once sessions expire,
//! every broker is fenced and no partition has a leader.

use super::testing::{entry_apply, rng};
use super::*;
use crate::image::MetadataImage;
use crate::records::{batch_encode, IncarnationId, RequestId, TopicId, LEADER_NONE};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

const BROKER_COUNT: i32 = 4;
const TOPIC_NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    /// `restart`: a new incarnation; else a retry of the current one (or a first registration).
    Register {
        broker_id: i32,
        restart: bool,
        rack: bool,
    },
    /// `caught_up`: the broker reports the committed offset; else one below its registration.
    Heartbeat {
        broker_id: i32,
        caught_up: bool,
    },
    Shutdown {
        broker_id: i32,
    },
    /// Time passes, then the controller ticks.
    Advance {
        ms: u64,
    },
    Create {
        topic: usize,
        partition_count: i32,
        replication_factor: i16,
        unclean: bool,
    },
    Delete {
        topic: usize,
    },
    AddPartitions {
        topic: usize,
        added: i32,
    },
    Unclean {
        topic: usize,
        allowed: bool,
    },
    ProducerIds {
        broker_id: i32,
    },
    /// The oldest `count` entries in flight commit.
    Commit {
        count: usize,
    },
    /// The first `count` entries in flight commit, the rest are lost with the leader.
    LeaderChange {
        count: usize,
    },
    /// One of the last few state-changing calls is sent again with its id.
    Retry {
        back: usize,
    },
    /// A broker asks for an ISR change, acting on the image of `age` commits ago (0: the
    /// controller's own), as the partition's leader there (`from: None`) or as broker `from`;
    /// it toggles one broker in the ISR it sees (`Toggle`).
    AlterPartition {
        topic: usize,
        partition: usize,
        from: Option<i32>,
        age: usize,
        toggle: Toggle,
    },
}

/// Which broker an `Op::AlterPartition` adds to or removes from the ISR it sees.
#[derive(Clone, Copy, Debug)]
enum Toggle {
    /// None: the same ISR again.
    Nothing,
    /// The n-th replica other than the leader it sees (the leader itself at RF=1).
    Follower(usize),
    /// The leader it sees (taking it out is invalid).
    Leader,
    /// A broker that is not a replica (if any; invalid).
    Outsider,
}

/// How many committed images back a zombie's view may be.
const VIEW_AGE_MAX: usize = 6;

/// How far back `Op::Retry` reaches: a requester retries only its recent calls.
const RETRY_BACK_MAX: usize = 8;
/// The node that sends the admin calls (not a broker of the model, so never re-registered).
const ADMIN_REQUESTER: i32 = 0;

/// A state-changing call, as its requester retries it.
#[derive(Clone, Debug)]
enum Call {
    Create(TopicCreate),
    Delete(String),
    AddPartitions(PartitionsCreate),
    Alter(ConfigAlter),
    ProducerIds { broker_id: i32, broker_epoch: i64 },
    AlterPartition(AlterPartition),
}

/// A call sent with its id, and the reply of the try that wrote its records while they are
/// committed or in flight (None while no try wrote any, or once they were lost).
#[derive(Debug)]
struct Sent {
    id: RequestId,
    call: Call,
    decided: Option<(MetadataOffset, serde_json::Value)>,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let broker = 1..=BROKER_COUNT;
    let topic = 0..TOPIC_NAMES.len();
    prop_oneof![
        3 => (broker.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(broker_id, restart, rack)| Op::Register { broker_id, restart, rack }),
        6 => (broker.clone(), prop::bool::weighted(0.8))
            .prop_map(|(broker_id, caught_up)| Op::Heartbeat { broker_id, caught_up }),
        1 => broker.clone().prop_map(|broker_id| Op::Shutdown { broker_id }),
        3 => (0u64..6_000).prop_map(|ms| Op::Advance { ms }),
        4 => (topic.clone(), 1..5i32, 1..4i16, prop::bool::weighted(0.3)).prop_map(
            |(topic, partition_count, replication_factor, unclean)| Op::Create {
                topic, partition_count, replication_factor, unclean,
            }
        ),
        1 => topic.clone().prop_map(|topic| Op::Delete { topic }),
        1 => (topic.clone(), 1..3i32).prop_map(|(topic, added)| Op::AddPartitions { topic, added }),
        1 => (topic.clone(), any::<bool>()).prop_map(|(topic, allowed)| Op::Unclean { topic, allowed }),
        1 => broker.prop_map(|broker_id| Op::ProducerIds { broker_id }),
        4 => (0usize..4).prop_map(|count| Op::Commit { count }),
        1 => (0usize..3).prop_map(|count| Op::LeaderChange { count }),
        2 => (0..RETRY_BACK_MAX).prop_map(|back| Op::Retry { back }),
        6 => (
            topic,
            0..4usize,
            prop::option::weighted(0.2, 1..=BROKER_COUNT),
            prop_oneof![Just(0), 1..=VIEW_AGE_MAX],
            prop_oneof![
                1 => Just(Toggle::Nothing),
                6 => (0..3usize).prop_map(Toggle::Follower),
                1 => Just(Toggle::Leader),
                1 => Just(Toggle::Outsider),
            ],
        )
            .prop_map(|(topic, partition, from, age, toggle)| Op::AlterPartition {
                topic, partition, from, age, toggle,
            }),
    ]
}

/// How many brokers are live before the random operations start.
fn bootstrap_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![1 => Just(0), 9 => 1..=BROKER_COUNT]
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 10..120)
}

/// A reply waiting for its `reply_after` to commit.
#[derive(Debug)]
enum Reply {
    Registered {
        broker_id: i32,
        broker_epoch: i64,
    },
    Heartbeat {
        broker_id: i32,
        reply: HeartbeatReply,
    },
    Created {
        name: String,
        topic_id: TopicId,
        partition_count: i32,
    },
    ProducerIds {
        block: ProducerIdBlock,
    },
    /// A heartbeat refused for its epoch: when the refusal is sent, the log has a newer one.
    Stale {
        broker_id: i32,
        broker_epoch: i64,
    },
    Other,
}

struct Model {
    controller: Controller,
    committed: MetadataImage,
    /// Entries proposed and not yet committed: (index, bytes).
    entries: VecDeque<(MetadataOffset, Vec<u8>)>,
    replies: Vec<(MetadataOffset, Reply)>,
    now_ms: u64,
    seed: u64,
    incarnations: [u128; BROKER_COUNT as usize + 1],
    /// Producer id blocks whose replies were delivered.
    blocks: BTreeSet<i64>,
    /// When each broker's session last started, as the controller should know it: its last
    /// accepted registration or heartbeat, or the controller's start.
    session_starts: BTreeMap<i32, u64>,
    planted: Option<PlantedBug>,
    /// State-changing calls in the order sent, for `Op::Retry`.
    sent: Vec<Sent>,
    /// The last request sequence number used.
    sequence: u64,
    /// The last committed images, newest last: what zombies act on.
    views: VecDeque<MetadataImage>,
}

impl Model {
    fn new(seed: u64, planted: Option<PlantedBug>) -> Model {
        // Rebalance checks within a sequence's few minutes (Kafka's 300 s would rarely come).
        let config = ControllerConfig {
            leader_rebalance_interval_ms: 4_000,
            ..ControllerConfig::kafka_defaults()
        };
        let mut controller = Controller::new(config, MetadataImage::new(), 0, rng(seed));
        controller.planted = planted;
        Model {
            controller,
            committed: MetadataImage::new(),
            entries: VecDeque::new(),
            replies: Vec::new(),
            now_ms: 0,
            seed,
            incarnations: [0; BROKER_COUNT as usize + 1],
            blocks: BTreeSet::new(),
            session_starts: BTreeMap::new(),
            planted,
            sent: Vec::new(),
            sequence: 0,
            views: VecDeque::new(),
        }
    }

    /// The index the next proposal gets (the shell's `last_index + 1`).
    fn index(&self) -> MetadataOffset {
        let last = self
            .entries
            .back()
            .map_or(self.committed.offset(), |(index, _)| *index);
        last.max(self.controller.image().offset()) + 1
    }

    fn propose<R>(&mut self, proposal: Proposal<R>, reply: impl FnOnce(R) -> Reply) {
        if !proposal.records.is_empty() {
            let bytes = batch_encode(&proposal.records);
            self.entries.push_back((proposal.reply_after, bytes));
        }
        self.replies
            .push((proposal.reply_after, reply(proposal.reply)));
    }

    fn commit(&mut self, count: usize) {
        for _ in 0..count {
            let Some((index, bytes)) = self.entries.pop_front() else {
                break;
            };
            let before = self.committed.clone();
            entry_apply(&mut self.committed, index, &bytes);
            epochs_check(&before, &self.committed);
            elections_check(&before, &self.committed);
            self.views.push_back(self.committed.clone());
            if self.views.len() > VIEW_AGE_MAX {
                self.views.pop_front();
            }
            self.replies_deliver();
        }
    }

    /// Delivers each reply as soon as its `reply_after` has committed (not in request order:
    /// the shell answers each request on its own), checking it against the committed image,
    /// which is the image at its `reply_after` (this runs after every single entry commits).
    fn replies_deliver(&mut self) {
        let committed = self.committed.offset();
        let (due, waiting) = std::mem::take(&mut self.replies)
            .into_iter()
            .partition(|(after, _)| *after <= committed);
        self.replies = waiting;
        let due: Vec<(MetadataOffset, Reply)> = due;
        for (_, reply) in due {
            match reply {
                Reply::Registered {
                    broker_id,
                    broker_epoch,
                } => {
                    let broker = self.committed.broker(broker_id).expect("registered");
                    assert_eq!(broker.broker_epoch, broker_epoch);
                }
                Reply::Heartbeat { broker_id, reply } => {
                    assert_eq!(reply.is_fenced, !self.committed.broker_is_live(broker_id));
                }
                Reply::Created {
                    name,
                    topic_id,
                    partition_count,
                } => {
                    let topic = self.committed.topic_by_name(&name).expect("created");
                    assert_eq!(topic.topic_id, topic_id);
                    assert_eq!(topic.partitions.len(), partition_count as usize);
                }
                Reply::ProducerIds { block } => {
                    assert!(
                        self.blocks.insert(block.first),
                        "block {block:?} issued twice"
                    );
                    assert!(self.committed.producer_id_next() >= block.first + block.size);
                }
                Reply::Stale {
                    broker_id,
                    broker_epoch,
                } => {
                    let broker = self.committed.broker(broker_id).expect("registered");
                    assert_ne!(
                        broker.broker_epoch, broker_epoch,
                        "a refusal before its cause"
                    );
                }
                Reply::Other => {}
            }
        }
    }

    fn leader_change(&mut self, count: usize) {
        self.commit(count);
        // What was in flight is lost, and with it every reply not yet sent.
        let committed = self.committed.offset();
        for sent in &mut self.sent {
            if sent
                .decided
                .as_ref()
                .is_some_and(|(index, _)| *index > committed)
            {
                sent.decided = None;
            }
        }
        self.entries.clear();
        self.replies.clear();
        // raft-rs's new leader commits an empty entry of its term first.
        let empty = self.committed.offset() + 1;
        self.committed
            .entry_apply(empty, &[])
            .expect("an empty entry");
        self.seed += 1;
        let config = self.controller.config().clone();
        self.controller =
            Controller::new(config, self.committed.clone(), self.now_ms, rng(self.seed));
        self.controller.planted = self.planted;
        for broker in self.committed.brokers() {
            self.session_starts.insert(broker.broker_id, self.now_ms);
        }
    }

    fn step(&mut self, op: &Op) {
        let index = self.index();
        match *op {
            Op::Register {
                broker_id,
                restart,
                rack,
            } => self.register(broker_id, restart, rack),
            Op::Heartbeat {
                broker_id,
                caught_up,
            } => self.heartbeat(broker_id, caught_up, false),
            Op::Shutdown { broker_id } => self.heartbeat(broker_id, true, true),
            Op::Advance { ms } => {
                self.now_ms += ms;
                let rebalance = self.now_ms >= self.controller.rebalance_at;
                let proposal = self.controller.tick(index, self.now_ms);
                self.propose(proposal, |()| Reply::Other);
                self.sessions_check();
                if rebalance {
                    let image = self.controller.image();
                    assert!(
                        !super::election::preferred_pending(image),
                        "a preferred replica could lead after the rebalance check"
                    );
                }
            }
            Op::Create {
                topic,
                partition_count,
                replication_factor,
                unclean,
            } => self.create(topic, partition_count, replication_factor, unclean),
            Op::Delete { topic } => {
                let name = TOPIC_NAMES[topic].to_string();
                let id = self.request_id(ADMIN_REQUESTER);
                self.call_first(id, Call::Delete(name.clone()));
                assert!(self.controller.image().topic_id(&name).is_none());
            }
            Op::AddPartitions { topic, added } => {
                let name = TOPIC_NAMES[topic];
                let current = self
                    .controller
                    .image()
                    .topic_by_name(name)
                    .map_or(0, |topic| topic.partitions.len() as i32);
                let request = PartitionsCreate {
                    name: name.to_string(),
                    partition_count: current + added,
                };
                let id = self.request_id(ADMIN_REQUESTER);
                self.call_first(id, Call::AddPartitions(request));
            }
            Op::Unclean { topic, allowed } => {
                let alter = ConfigAlter {
                    topic: TOPIC_NAMES[topic].to_string(),
                    changes: vec![ConfigChange::Set {
                        key: "unclean.leader.election.enable".to_string(),
                        value: allowed.to_string(),
                    }],
                };
                let id = self.request_id(ADMIN_REQUESTER);
                self.call_first(id, Call::Alter(alter));
            }
            Op::ProducerIds { broker_id } => {
                let Some(broker) = self.controller.image().broker(broker_id) else {
                    return;
                };
                let call = Call::ProducerIds {
                    broker_id,
                    broker_epoch: broker.broker_epoch,
                };
                let id = self.request_id(broker_id);
                let reply = self.call_first(id, call);
                let block: Result<ProducerIdBlock, ApiError> = decode(reply);
                block.expect("a registered broker");
            }
            Op::Commit { count } => self.commit(count),
            Op::LeaderChange { count } => self.leader_change(count),
            Op::Retry { back } => self.retry(back),
            Op::AlterPartition {
                topic,
                partition,
                from,
                age,
                toggle,
            } => self.alter_partition(topic, partition, from, age, toggle),
        }
        self.replies_deliver();
        self.check();
    }

    /// A new id for a call of `broker_id`'s current incarnation.
    fn request_id(&mut self, broker_id: i32) -> RequestId {
        self.sequence += 1;
        RequestId {
            broker_id,
            incarnation_id: IncarnationId(self.incarnations[broker_id as usize]),
            sequence: self.sequence,
        }
    }

    /// Runs `call` through the controller as request `id`, and proposes it; its reply as JSON.
    fn call_run(&mut self, id: RequestId, call: &Call) -> Proposal<serde_json::Value> {
        fn json<R: serde::Serialize>(proposal: Proposal<R>) -> Proposal<serde_json::Value> {
            proposal.map(|reply| serde_json::to_value(reply).expect("replies serialize"))
        }
        let index = self.index();
        let controller = &mut self.controller;
        let request = Some(id);
        match call {
            Call::Create(topic) => json(controller.decide_once(index, request, |c| {
                c.create_topics(index, std::slice::from_ref(topic), false)
            })),
            Call::Delete(name) => json(controller.decide_once(index, request, |c| {
                c.delete_topics(index, std::slice::from_ref(name))
            })),
            Call::AddPartitions(partitions) => json(controller.decide_once(index, request, |c| {
                c.create_partitions(index, std::slice::from_ref(partitions), false)
            })),
            Call::Alter(alter) => json(controller.decide_once(index, request, |c| {
                c.configs_alter(index, std::slice::from_ref(alter), false)
            })),
            Call::ProducerIds {
                broker_id,
                broker_epoch,
            } => json(controller.decide_once(index, request, |c| {
                c.producer_ids_allocate(index, *broker_id, *broker_epoch)
            })),
            Call::AlterPartition(alter) => {
                json(controller.decide_once(index, request, |c| c.alter_partition(index, alter)))
            }
        }
    }

    /// A call's first try: decided anew (its id is new), remembered for retries.
    fn call_first(&mut self, id: RequestId, call: Call) -> serde_json::Value {
        assert!(self.controller.image().request_outcome(&id).is_none());
        let proposal = self.call_run(id, &call);
        let decided =
            (!proposal.records.is_empty()).then(|| (proposal.reply_after, proposal.reply.clone()));
        let reply = proposal.reply.clone();
        self.sent.push(Sent { id, call, decided });
        self.propose_call(proposal);
        reply
    }

    /// A retry of one of the last calls sent: if a try wrote its records and they are committed
    /// or in flight, it answers what that try answered and writes nothing; else it is decided as
    /// a new call would be.
    fn retry(&mut self, back: usize) {
        let Some(at) = self.sent.len().checked_sub(1 + back) else {
            return;
        };
        let (id, call) = (self.sent[at].id, self.sent[at].call.clone());
        let proposal = self.call_run(id, &call);
        match &self.sent[at].decided {
            Some((index, reply)) => {
                assert_eq!(
                    &proposal.reply, reply,
                    "a retry of {call:?} answers as the try that decided it"
                );
                assert!(
                    proposal.records.is_empty(),
                    "a retry of {call:?} wrote again"
                );
                assert_eq!(proposal.reply_after, *index);
                self.replies.push((proposal.reply_after, Reply::Other));
            }
            None => {
                if !proposal.records.is_empty() {
                    let decided = (proposal.reply_after, proposal.reply.clone());
                    self.sent[at].decided = Some(decided);
                }
                self.propose_call(proposal);
            }
        }
    }

    /// Proposes a call's decision; its reply is checked when delivered.
    fn propose_call(&mut self, proposal: Proposal<serde_json::Value>) {
        let reply = match serde_json::from_value::<Result<ProducerIdBlock, ApiError>>(
            proposal.reply.clone(),
        ) {
            Ok(Ok(block)) => Reply::ProducerIds { block },
            _ => Reply::Other,
        };
        self.propose(proposal, |_| reply);
    }

    /// An ISR change as a broker acting on an image of `age` commits ago asks for it; its
    /// outcome is checked against `alter_expected`, and an accepted one against the image.
    fn alter_partition(
        &mut self,
        topic: usize,
        partition: usize,
        from: Option<i32>,
        age: usize,
        toggle: Toggle,
    ) {
        let view = match age.checked_sub(1) {
            None => self.controller.image(),
            Some(back) => match self.views.len().checked_sub(1 + back) {
                Some(at) => &self.views[at],
                None => &self.committed,
            },
        };
        let Some(seen) = view.topic_by_name(TOPIC_NAMES[topic]) else {
            return;
        };
        let partition = (partition % seen.partitions.len()) as i32;
        let state = &seen.partitions[partition as usize];
        let broker_id = from.unwrap_or(state.leader);
        if broker_id == LEADER_NONE {
            return;
        }
        let followers: Vec<i32> = state
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != state.leader)
            .collect();
        let member = match toggle {
            Toggle::Nothing => None,
            Toggle::Follower(n) if !followers.is_empty() => Some(followers[n % followers.len()]),
            Toggle::Follower(_) | Toggle::Leader => Some(state.leader),
            Toggle::Outsider => (1..=BROKER_COUNT).find(|b| !state.replicas.contains(b)),
        };
        let mut isr = state.isr.clone();
        if let Some(member) = member {
            match isr.iter().position(|m| *m == member) {
                Some(at) => {
                    isr.remove(at);
                }
                None => isr.push(member),
            }
        }
        let request = AlterPartition {
            broker_id,
            broker_epoch: view.broker(broker_id).map_or(0, |b| b.broker_epoch),
            topic_id: seen.topic_id,
            partition,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr,
        };
        let before = self.controller.image().clone();
        let expected = alter_expected(&before, &request);
        let id = self.request_id(broker_id.max(ADMIN_REQUESTER));
        let reply = self.call_first(id, Call::AlterPartition(request.clone()));
        let reply: Result<crate::image::PartitionImage, ApiError> = decode(reply);
        match reply {
            Ok(after) => {
                assert_eq!(expected, 0, "{request:?} accepted");
                let current = before
                    .partition(request.topic_id, request.partition)
                    .expect("accepted");
                let wanted: BTreeSet<_> = request.isr.iter().collect();
                assert_eq!(after.isr.iter().collect::<BTreeSet<_>>(), wanted);
                assert_eq!(
                    (after.leader, after.leader_epoch),
                    (current.leader, current.leader_epoch)
                );
                let bump = i32::from(after.isr != current.isr);
                assert_eq!(after.partition_epoch, current.partition_epoch + bump);
                let now = self.controller.image();
                assert_eq!(
                    now.partition(request.topic_id, request.partition),
                    Some(&after)
                );
            }
            Err(error) => assert_eq!(error.code, expected, "{request:?}: {error}"),
        }
    }

    fn register(&mut self, broker_id: i32, restart: bool, rack: bool) {
        let slot = &mut self.incarnations[broker_id as usize];
        if restart || *slot == 0 {
            *slot = u128::from(self.seed as u32) << 64 | (*slot + 1);
            // A new process never retries the calls of the one before.
            self.sent.retain(|sent| sent.id.broker_id != broker_id);
        }
        let request = BrokerRegistrationRequest {
            broker_id,
            incarnation_id: IncarnationId(*slot),
            host: format!("h{broker_id}"),
            port: 9092,
            rack: rack.then(|| format!("r{}", broker_id % 2)),
        };
        let (index, now_ms) = (self.index(), self.now_ms);
        let proposal = self.controller.register_broker(index, now_ms, &request);
        match &proposal.reply {
            Ok(_) => {
                self.session_starts.insert(broker_id, now_ms);
            }
            // A retry of the same incarnation with another rack.
            Err(error) => assert_eq!(error.code, errors::DUPLICATE_BROKER_REGISTRATION),
        }
        self.propose(proposal, |reply| match reply {
            Ok(reply) => Reply::Registered {
                broker_id,
                broker_epoch: reply.broker_epoch,
            },
            Err(_) => Reply::Other,
        });
    }

    fn create(
        &mut self,
        topic: usize,
        partition_count: i32,
        replication_factor: i16,
        unclean: bool,
    ) {
        let name = TOPIC_NAMES[topic].to_string();
        let value = if unclean { "true" } else { "false" };
        let request = TopicCreate {
            name: name.clone(),
            partition_count,
            replication_factor,
            configs: [(
                "unclean.leader.election.enable".to_string(),
                value.to_string(),
            )]
            .into(),
        };
        let live = self.controller.image().brokers_live().count();
        let existed = self.controller.image().topic_id(&name).is_some();
        let id = self.request_id(ADMIN_REQUESTER);
        let proposal = self.call_run(id, &Call::Create(request.clone()));
        let decided =
            (!proposal.records.is_empty()).then(|| (proposal.reply_after, proposal.reply.clone()));
        self.sent.push(Sent {
            id,
            call: Call::Create(request),
            decided,
        });
        let reply: Vec<(String, Result<TopicCreated, ApiError>)> = decode(proposal.reply.clone());
        match reply[0].1.clone() {
            Ok(created) => {
                assert!(replication_factor as usize <= live);
                let topic_id = created.topic_id.expect("created");
                self.propose(proposal, |_| Reply::Created {
                    name,
                    topic_id,
                    partition_count,
                });
            }
            Err(error) => {
                let expected = if existed {
                    errors::TOPIC_ALREADY_EXISTS
                } else {
                    errors::INVALID_REPLICATION_FACTOR
                };
                assert_eq!(error.code, expected, "{error}");
                self.propose(proposal, |_| Reply::Other);
            }
        }
    }

    fn heartbeat(&mut self, broker_id: i32, caught_up: bool, want_shutdown: bool) {
        // The broker knows the epoch the committed log gave it (it may lag the controller's).
        let Some(broker) = self.committed.broker(broker_id).cloned() else {
            return;
        };
        let request = BrokerHeartbeat {
            broker_id,
            broker_epoch: broker.broker_epoch,
            metadata_offset: if caught_up {
                self.committed.offset()
            } else {
                broker.registered_offset - 1
            },
            want_shutdown,
        };
        let index = self.index();
        let fenced_before = !self.controller.image().broker_is_live(broker_id);
        let proposal = self.controller.heartbeat(index, self.now_ms, &request);
        match &proposal.reply {
            Ok(reply) => {
                self.session_starts.insert(broker_id, self.now_ms);
                // Shutting down fences; a caught-up broker is unfenced, one behind its own
                // registration stays fenced (it may not know every partition it hosts yet).
                if want_shutdown {
                    assert!(reply.should_shutdown && reply.is_fenced);
                } else if caught_up {
                    assert!(
                        !reply.is_fenced,
                        "broker {broker_id} caught up, still fenced"
                    );
                } else if fenced_before {
                    assert!(
                        reply.is_fenced,
                        "broker {broker_id} unfenced before catching up"
                    );
                }
            }
            Err(error) => assert_eq!(error.code, errors::STALE_BROKER_EPOCH, "{error}"),
        }
        self.propose(proposal, |reply| match reply {
            Ok(reply) => Reply::Heartbeat { broker_id, reply },
            Err(_) => Reply::Stale {
                broker_id,
                broker_epoch: broker.broker_epoch,
            },
        });
    }

    /// After a tick, no broker whose session ended is still live, and none whose session goes
    /// on was fenced by the tick.
    fn sessions_check(&self) {
        let timeout_ms = self.controller.config().session_timeout_ms;
        let image = self.controller.image();
        for (broker_id, start) in &self.session_starts {
            if image.broker_is_live(*broker_id) {
                assert!(
                    self.now_ms < start + timeout_ms,
                    "broker {broker_id} outlived its session"
                );
            }
        }
        if let Some(deadline) = self.controller.next_deadline() {
            assert!(deadline > self.now_ms);
        }
    }

    fn check(&self) {
        let mut shadow = self.committed.clone();
        for (index, bytes) in &self.entries {
            entry_apply(&mut shadow, *index, bytes);
        }
        assert_eq!(
            &shadow,
            self.controller.image(),
            "a follower applies what the controller decided"
        );
        self.controller.image().check_invariants();
        self.committed.check_invariants();
        let snapshot = self.committed.snapshot_encode();
        let restored = MetadataImage::snapshot_decode(&snapshot).expect("a valid snapshot");
        assert_eq!(
            restored, self.committed,
            "a snapshot restores the image exactly"
        );
        electable_have_leaders(self.controller.image());
        fenced_leave_isrs(self.controller.image());
    }

    /// Liveness: everything commits, every broker heartbeats caught up, then every broker is
    /// live and every partition led; then every session expires, and nothing is led.
    fn liveness(&mut self) {
        self.commit(usize::MAX);
        self.check();
        let registered: Vec<i32> = self.committed.brokers().map(|b| b.broker_id).collect();
        for _ in 0..2 {
            for &broker_id in &registered {
                self.heartbeat(broker_id, true, false);
                self.commit(usize::MAX);
            }
        }
        self.check();
        for broker_id in registered {
            assert!(
                self.committed.broker_is_live(broker_id),
                "broker {broker_id} still fenced"
            );
        }
        for topic in self.committed.topics() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                assert_ne!(
                    partition.leader, LEADER_NONE,
                    "{}-{index} has no leader",
                    topic.name
                );
            }
        }
        self.step(&Op::Advance {
            ms: self.controller.config().session_timeout_ms,
        });
        self.commit(usize::MAX);
        assert_eq!(self.controller.next_deadline(), None);
        assert_eq!(self.committed.brokers_live().count(), 0);
        for topic in self.committed.topics() {
            assert!(topic.partitions.iter().all(|p| p.leader == LEADER_NONE));
        }
    }
}

fn decode<R: serde::de::DeserializeOwned>(reply: serde_json::Value) -> R {
    serde_json::from_value(reply).expect("a reply decodes as its type")
}

/// Committed epochs never go back.
fn epochs_check(before: &MetadataImage, after: &MetadataImage) {
    for broker in before.brokers() {
        let now = after
            .broker(broker.broker_id)
            .expect("brokers stay registered");
        assert!(now.broker_epoch >= broker.broker_epoch);
    }
    for topic in before.topics() {
        let Some(now) = after.topic(topic.topic_id) else {
            continue; // Deleted.
        };
        for (old, new) in topic.partitions.iter().zip(&now.partitions) {
            assert!(new.leader_epoch >= old.leader_epoch);
            assert!(new.partition_epoch >= old.partition_epoch);
            if new.leader != old.leader {
                assert!(
                    new.leader_epoch > old.leader_epoch,
                    "a new leader, a new epoch"
                );
            }
        }
    }
}

/// A fenced broker is in no ISR but one it is the last member of (KIP-841): it left the others
/// when it was fenced, and an ISR grows only with live brokers.
fn fenced_leave_isrs(image: &MetadataImage) {
    for topic in image.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.isr.len() > 1 {
                let fenced = partition.isr.iter().find(|b| !image.broker_is_live(**b));
                assert_eq!(fenced, None, "{}-{index}: fenced ISR member", topic.name);
            }
        }
    }
}

/// AlterPartition's rules, written out on their own: the Kafka code `request` must get from a
/// controller whose image is `image` (0: accepted).
fn alter_expected(image: &MetadataImage, request: &AlterPartition) -> i16 {
    let registered = image.broker(request.broker_id);
    if registered.map(|b| b.broker_epoch) != Some(request.broker_epoch) {
        return errors::STALE_BROKER_EPOCH;
    }
    let Some(current) = image.partition(request.topic_id, request.partition) else {
        return errors::UNKNOWN_TOPIC_OR_PARTITION;
    };
    if current.leader != request.broker_id {
        return errors::NOT_LEADER_OR_FOLLOWER;
    }
    if current.leader_epoch != request.leader_epoch {
        return errors::FENCED_LEADER_EPOCH;
    }
    if current.partition_epoch != request.partition_epoch {
        return errors::INVALID_UPDATE_VERSION;
    }
    let isr = &request.isr;
    let repeats = isr.iter().enumerate().any(|(i, m)| isr[..i].contains(m));
    let outside = isr.iter().any(|m| !current.replicas.contains(m));
    if repeats || outside || !isr.contains(&current.leader) {
        return errors::INVALID_REQUEST;
    }
    if isr
        .iter()
        .any(|m| !current.isr.contains(m) && !image.broker_is_live(*m))
    {
        return errors::INELIGIBLE_REPLICA;
    }
    0
}

/// A new leader was in the previous ISR, unless the topic allows unclean election and it leads
/// an ISR of itself; an ISR member added under the same leader is live.
fn elections_check(before: &MetadataImage, after: &MetadataImage) {
    for topic in before.topics() {
        let Some(now) = after.topic(topic.topic_id) else {
            continue;
        };
        for (index, (old, new)) in topic.partitions.iter().zip(&now.partitions).enumerate() {
            let name = format!("{}-{index}", topic.name);
            if new.leader != old.leader && new.leader != LEADER_NONE {
                let unclean = super::election::unclean_allowed(after, topic.topic_id)
                    && new.isr == [new.leader];
                assert!(
                    old.isr.contains(&new.leader) || unclean,
                    "{name}: leader {} elected from outside the ISR {:?}",
                    new.leader,
                    old.isr
                );
            }
            if new.leader_epoch == old.leader_epoch {
                for added in new.isr.iter().filter(|m| !old.isr.contains(m)) {
                    assert!(
                        after.broker_is_live(*added),
                        "{name}: fenced broker {added} joined the ISR"
                    );
                }
            }
        }
    }
}

/// No partition lacks a leader while a broker could lead it.
fn electable_have_leaders(image: &MetadataImage) {
    for topic in image.topics() {
        let unclean = super::election::unclean_allowed(image, topic.topic_id);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader != LEADER_NONE {
                continue;
            }
            let candidates = if unclean {
                &partition.replicas
            } else {
                &partition.isr
            };
            let electable = candidates.iter().find(|b| image.broker_is_live(**b));
            assert_eq!(electable, None, "{}-{index} has no leader", topic.name);
        }
    }
}

fn run(seed: u64, bootstrap: i32, ops: &[Op], planted: Option<PlantedBug>) {
    let mut model = Model::new(seed, planted);
    // Most sequences start from a few live brokers: a random sequence rarely assembles
    // register, commit, heartbeat and commit for the same broker on its own.
    for broker_id in 1..=bootstrap {
        model.step(&Op::Register {
            broker_id,
            restart: false,
            rack: false,
        });
        model.commit(usize::MAX);
        model.step(&Op::Heartbeat {
            broker_id,
            caught_up: true,
        });
        model.commit(usize::MAX);
    }
    for op in ops {
        model.step(op);
    }
    model.liveness();
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]
    #[test]
    fn the_controller_keeps_its_invariants_and_followers_agree(
        seed in any::<u64>(),
        bootstrap in bootstrap_strategy(),
        ops in ops_strategy(),
    ) {
        run(seed, bootstrap, &ops, None);
    }
}

/// How many of `cases` random sequences fail with `planted` switched on.
#[allow(dead_code)] // Used by the planted-bug test and by hand when planting mistakes.
pub(super) fn catch_count(planted: Option<PlantedBug>, cases: u32) -> u32 {
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let strategy = (any::<u64>(), bootstrap_strategy(), ops_strategy());
    let mut caught = 0;
    // Each caught case panics; keep the output to the count. (A concurrent test's failure is
    // still reported: the test harness and proptest report the panic's payload themselves.)
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for _ in 0..cases {
        let (seed, bootstrap, ops) = strategy.new_tree(&mut runner).expect("a case").current();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed, bootstrap, &ops, planted)));
        caught += u32::from(outcome.is_err());
    }
    std::panic::set_hook(hook);
    caught
}

#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_bug_is_caught() {
    let cases = 200;
    let caught = catch_count(Some(PlantedBug::FencedBrokerLeads), cases);
    eprintln!("FencedBrokerLeads caught in {caught} of {cases} random sequences");
    assert!(caught >= cases / 2, "caught in only {caught} of {cases}");
    assert_eq!(catch_count(None, cases), 0);
}

#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_election_outside_the_isr_is_caught() {
    let cases = 200;
    let caught = catch_count(Some(PlantedBug::ElectOutsideIsr), cases);
    eprintln!("ElectOutsideIsr caught in {caught} of {cases} random sequences");
    // It needs a live replica outside the ISR ahead of every ISR member in replica order when
    // the leader goes: one shrunk out, or back from a restart and not yet re-added (33 of 200).
    assert!(caught >= cases / 10, "caught in only {caught} of {cases}");
}
