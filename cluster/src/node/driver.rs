//! The node's one event loop: it owns the `RaftNode` (whose state machine is the image) and,
//! while this node leads, the `Controller`.
//!
//! Events are raft ticks, peers' raft messages, controller calls (from the RPC listener and
//! from this node's own handle) and the controller's session deadline. After each event the
//! loop handles the ready (its fsync on `runtime::blocking`), sends its messages, then:
//! - fails the waiting replies if leadership was lost (a Failed completion, another role or
//!   term): their callers get NOT_CONTROLLER and retry wherever the new leader is;
//! - builds the controller once this node leads and has applied its whole log (the new
//!   leader's empty entry included), from the applied image, as Kafka's controller replays the
//!   log before it becomes active; until then calls get NOT_CONTROLLER;
//! - publishes the image and the status;
//! - answers the calls whose `reply_after` is applied (after publishing: whoever reads the
//!   image after an answer sees what it answered).
//!
//! A call runs through the controller with `index = last index + 1` (one operation, one
//! entry); its records are proposed at once and must land at exactly that index, else the
//! controller, whose image already holds them, is rebuilt from the applied image.

use super::machine::ImageMachine;
use super::rpc::{Answer, Envelope, HeartbeatAnswer, Request, Response, WireError};
use super::ClusterStatus;
use crate::controller::errors::INVALID_REQUEST;
use crate::controller::{ApiError, Controller, ControllerConfig, Import, Proposal};
use crate::image::{MetadataImage, MetadataOffset};
use crate::planted::PlantedBug;
use crate::raft::transport::{self, Transport};
use crate::raft::{Outcome, ProposeError, RaftNode, Role, Status};
use crate::records::{batch_encode, BrokerId, MetadataRecord};
use raft::eraftpb::Message;
use raft::Storage;
use runtime::rng::{ChaCha8Rng, Rng};
use runtime::sync::{mpsc, oneshot, watch};
use runtime::time::Instant;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Calls queued for the loop before callers wait.
pub(crate) const CALL_QUEUE_MAX: usize = 1024;

/// One controller call and where its response goes.
#[derive(Debug)]
pub(crate) struct Call {
    pub envelope: Envelope,
    pub reply: oneshot::Sender<Response>,
}

pub(crate) struct Driver {
    /// Taken while `handle_ready` runs on the blocking pool.
    node: Option<RaftNode<ImageMachine>>,
    transport: Transport,
    controller_config: ControllerConfig,
    planted: Option<PlantedBug>,
    clock: runtime::Clock,
    /// The origin of the controller's `now_ms`.
    started: Instant,
    /// Seeds each controller this node builds (placements, topic ids).
    rng: ChaCha8Rng,
    active: Option<Controller>,
    /// The term this node leads in, once its controller was first active; kept while the
    /// controller is rebuilt within the term, cleared when leadership is lost.
    leading_term: Option<u64>,
    /// Calls whose answers wait for their `reply_after` to apply, all decided in
    /// `leading_term` (losing it drops them).
    waiting: Vec<Waiting>,
    image: watch::Sender<Arc<MetadataImage>>,
    status: Arc<watch::Sender<ClusterStatus>>,
}

struct Waiting {
    after: MetadataOffset,
    answer: Answer,
    reply: oneshot::Sender<Response>,
}

enum Event {
    Tick,
    Message(Message),
    Call(Call),
    Deadline,
    /// Controlled shutdown: hand Raft leadership to another voter.
    Handover,
}

/// What `Driver::new` needs besides the node.
pub(crate) struct DriverParts {
    pub transport: Transport,
    pub controller_config: ControllerConfig,
    pub planted: Option<PlantedBug>,
    pub clock: runtime::Clock,
    pub rng: ChaCha8Rng,
    pub image: watch::Sender<Arc<MetadataImage>>,
    pub status: Arc<watch::Sender<ClusterStatus>>,
}

impl Driver {
    pub(crate) fn new(node: RaftNode<ImageMachine>, parts: DriverParts) -> Driver {
        let started = parts.clock.now();
        let mut driver = Driver {
            node: Some(node),
            transport: parts.transport,
            controller_config: parts.controller_config,
            planted: parts.planted,
            clock: parts.clock,
            started,
            rng: parts.rng,
            active: None,
            leading_term: None,
            waiting: Vec::new(),
            image: parts.image,
            status: parts.status,
        };
        driver.publish();
        driver
    }

    /// Runs until the metadata log's disk fails. `handover` turning true asks for the Raft
    /// leadership to move to another voter (controlled shutdown).
    pub(crate) async fn run(
        mut self,
        tick: Duration,
        mut inbound: mpsc::Receiver<Message>,
        mut calls: mpsc::Receiver<Call>,
        mut handover: watch::Receiver<bool>,
    ) {
        let mut ticker = runtime::time::interval(tick);
        loop {
            let deadline = self.deadline();
            let event = runtime::select! {
                biased;
                _ = ticker.tick() => Event::Tick,
                Some(message) = inbound.recv() => Event::Message(message),
                Some(call) = calls.recv() => Event::Call(call),
                _ = deadline_wait(deadline) => Event::Deadline,
                Ok(()) = handover.changed() => Event::Handover,
            };
            self.event_handle(event);
            if let Err(error) = self.ready_handle().await {
                // The node's Raft state may be ahead of its disk: it must not go on. Waiting
                // callers learn it from their dropped replies.
                tracing::error!("cluster node stopped: metadata log disk failed: {error}");
                self.status.send_modify(|status| status.failed = true);
                return;
            }
            self.after_ready();
        }
    }

    fn node(&mut self) -> &mut RaftNode<ImageMachine> {
        self.node.as_mut().expect("node is home between readies")
    }

    fn now_ms(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.started);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    fn deadline(&self) -> Option<Instant> {
        let deadline_ms = self.active.as_ref()?.next_deadline()?;
        Some(self.started + Duration::from_millis(deadline_ms))
    }

    fn event_handle(&mut self, event: Event) {
        match event {
            Event::Tick => self.node().tick(),
            Event::Message(message) => self.node().step(message),
            Event::Call(call) => self.call_handle(call),
            Event::Deadline => self.controller_tick(),
            Event::Handover => {
                let node = self.node();
                if let Some(to) = node.leadership_transfer() {
                    let id = node.status().id;
                    tracing::info!("node {id}: handing Raft leadership to node {to}");
                }
            }
        }
    }

    /// The index the next entry gets. Between readies the log holds no unstable entries (each
    /// ready persists them), so the storage's last index is the log's.
    fn index_next(&mut self) -> MetadataOffset {
        let last = self
            .node()
            .storage()
            .last_index()
            .expect("the storage answers its last index");
        last + 1
    }

    fn call_handle(&mut self, call: Call) {
        if self.active.is_none() {
            let leader = self.node().status().leader.map(|id| id as i32);
            let _ = call.reply.send(Response::NotController { leader });
            return;
        }
        let index = self.index_next();
        let now_ms = self.now_ms();
        let controller = self.active.as_mut().expect("checked above");
        let (records, after, answer) = decide(controller, index, now_ms, call.envelope);
        match self.records_propose(index, records) {
            Ok(()) => self.waiting.push(Waiting {
                after,
                answer,
                reply: call.reply,
            }),
            Err(response) => {
                let _ = call.reply.send(response);
            }
        }
    }

    fn controller_tick(&mut self) {
        if self.active.is_none() {
            return;
        }
        let index = self.index_next();
        let now_ms = self.now_ms();
        let controller = self.active.as_mut().expect("checked above");
        let proposal = controller.tick(index, now_ms);
        let _ = self.records_propose(index, proposal.records);
    }

    /// Proposes one operation's records as the entry at `index`. On failure the controller,
    /// whose image already holds them, is dropped (rebuilt once the log is applied), and the
    /// caller gets the response to send.
    fn records_propose(
        &mut self,
        index: MetadataOffset,
        records: Vec<MetadataRecord>,
    ) -> Result<(), Response> {
        if records.is_empty() {
            return Ok(());
        }
        let data = batch_encode(&records);
        let proposed = self.node().propose(data, Vec::new());
        let refused = match proposed {
            Ok(at) if at == index => return Ok(()),
            Ok(at) => {
                tracing::warn!("controller decided for index {index}, proposed at {at}");
                Response::NotController { leader: None }
            }
            Err(ProposeError::TooLarge(bytes)) => Response::Failed(WireError {
                code: INVALID_REQUEST,
                message: format!("the request's records take {bytes} bytes, over the limit"),
            }),
            Err(ProposeError::NotLeader { leader }) => Response::NotController {
                leader: leader.map(|id| id as i32),
            },
            Err(ProposeError::Dropped) => Response::NotController { leader: None },
        };
        self.active = None;
        Err(refused)
    }

    async fn ready_handle(&mut self) -> io::Result<()> {
        let node = self.node.take().expect("node is home between readies");
        let (node, result) = transport::ready_round(node, &self.transport).await;
        self.node = Some(node);
        result
    }

    fn after_ready(&mut self) {
        let status = self.node().status();
        let failed = self
            .node()
            .completions_take()
            .iter()
            .any(|completion| completion.outcome == Outcome::Failed);
        let deposed = self
            .leading_term
            .is_some_and(|term| status.role != Role::Leader || term != status.term);
        if failed || deposed {
            self.deactivate(&status);
        }
        self.activate_maybe(&status);
        // Publish first: whoever gets an answer may read the image next.
        self.publish();
        self.answer_applied(status.applied);
    }

    /// Leadership is lost (or was never ours): the controller goes and so do the answers still
    /// waiting; their entries may or may not commit, and the callers retry with the new leader.
    fn deactivate(&mut self, status: &Status) {
        self.active = None;
        if self.leading_term.take().is_some() {
            tracing::info!(
                "node {}: controller inactive (term {}, role {:?})",
                status.id,
                status.term,
                status.role
            );
        }
        // Published before the answers go: a caller told NOT_CONTROLLER sees it in the status.
        self.publish();
        let leader = status.leader.map(|id| id as i32);
        for waiting in self.waiting.drain(..) {
            let _ = waiting.reply.send(Response::NotController { leader });
        }
    }

    fn activate_maybe(&mut self, status: &Status) {
        if self.active.is_some() || status.role != Role::Leader {
            return;
        }
        let last = self.index_next() - 1;
        if status.applied < last {
            return; // the log (and the leader's own empty entry) is not all applied yet
        }
        let image = self.node().machine().image().clone();
        let rng = ChaCha8Rng::from_seed_u64(self.rng.gen());
        let controller = Controller::new(self.controller_config.clone(), image, self.now_ms(), rng);
        #[cfg(feature = "planted-bugs")]
        let controller = match self.planted {
            Some(bug) => controller.with_planted_bug(bug),
            None => controller,
        };
        #[cfg(not(feature = "planted-bugs"))]
        let _ = self.planted;
        tracing::info!(
            "node {}: controller active in term {} at index {last}",
            status.id,
            status.term
        );
        self.active = Some(controller);
        self.leading_term = Some(status.term);
    }

    fn answer_applied(&mut self, applied: MetadataOffset) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiting| waiting.after <= applied);
        self.waiting = waiting;
        for waiting in ready {
            let _ = waiting.reply.send(Response::Answer {
                offset: waiting.after,
                answer: waiting.answer,
            });
        }
    }

    fn publish(&mut self) {
        let active = self.active.is_some();
        let node = self.node.as_ref().expect("node is home between readies");
        let status = node.status();
        let replicated = node
            .progress()
            .into_iter()
            .map(|(id, end)| (id as BrokerId, end))
            .collect();
        let image = node.machine().image();
        self.image.send_if_modified(|published| {
            let changed = published.offset() != image.offset();
            if changed {
                *published = Arc::new(image.clone());
            }
            changed
        });
        self.status.send_if_modified(|current| {
            let next = ClusterStatus {
                role: status.role,
                controller_leader: status.leader.map(|id| id as i32),
                controller_active: active,
                term: status.term,
                commit: status.commit,
                applied: status.applied,
                replicated,
                ..current.clone()
            };
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

async fn deadline_wait(deadline: Option<Instant>) {
    match deadline {
        Some(at) => runtime::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

trait SeedU64 {
    fn from_seed_u64(seed: u64) -> Self;
}

impl SeedU64 for ChaCha8Rng {
    fn from_seed_u64(seed: u64) -> ChaCha8Rng {
        rand::SeedableRng::seed_from_u64(seed)
    }
}

/// Runs one request through the controller, once per request id (a retry of a decided call
/// gets its recorded answer): its records, when its answer may be sent, and the answer.
fn decide(
    controller: &mut Controller,
    index: MetadataOffset,
    now_ms: u64,
    envelope: Envelope,
) -> (Vec<MetadataRecord>, MetadataOffset, Answer) {
    let Envelope { id, request } = envelope;
    let proposal = controller.decide_once(index, id, |controller| {
        decide_new(controller, index, now_ms, request)
    });
    (proposal.records, proposal.reply_after, proposal.reply)
}

/// Runs one request through the controller.
fn decide_new(
    controller: &mut Controller,
    index: MetadataOffset,
    now_ms: u64,
    request: Request,
) -> Proposal<Answer> {
    fn results<T, W: From<T>>(
        results: Vec<(String, Result<T, ApiError>)>,
    ) -> Vec<(String, Result<W, WireError>)> {
        results
            .into_iter()
            .map(|(name, result)| (name, result.map(W::from).map_err(WireError::from)))
            .collect()
    }
    fn split<R>(proposal: Proposal<R>, answer: impl FnOnce(R) -> Answer) -> Proposal<Answer> {
        proposal.map(answer)
    }
    if let Some(registration) = request.registration() {
        let proposal = controller.register_broker(index, now_ms, &registration);
        return split(proposal, |reply| {
            Answer::Registered(reply.map(|r| r.broker_epoch).map_err(WireError::from))
        });
    }
    if let Some(heartbeat) = request.heartbeat() {
        let proposal = controller.heartbeat(index, now_ms, &heartbeat);
        return split(proposal, |reply| {
            Answer::Heartbeat(
                reply
                    .map(|r| HeartbeatAnswer {
                        is_fenced: r.is_fenced,
                        should_shutdown: r.should_shutdown,
                    })
                    .map_err(WireError::from),
            )
        });
    }
    match request {
        Request::Register { .. } | Request::Heartbeat { .. } => unreachable!("handled above"),
        Request::CreateTopics {
            topics,
            validate_only,
        } => {
            let topics: Vec<_> = topics.into_iter().map(Into::into).collect();
            let proposal = controller.create_topics(index, &topics, validate_only);
            split(proposal, |reply| Answer::TopicsCreated(results(reply)))
        }
        Request::DeleteTopics { names } => {
            let proposal = controller.delete_topics(index, &names);
            split(proposal, |reply| Answer::TopicsDeleted(results(reply)))
        }
        Request::CreatePartitions {
            requests,
            validate_only,
        } => {
            let requests: Vec<_> = requests.into_iter().map(Into::into).collect();
            let proposal = controller.create_partitions(index, &requests, validate_only);
            split(proposal, |reply| Answer::PartitionsCreated(results(reply)))
        }
        Request::AlterConfigs {
            alters,
            validate_only,
        } => {
            let alters: Vec<_> = alters.into_iter().map(Into::into).collect();
            let proposal = controller.configs_alter(index, &alters, validate_only);
            split(proposal, |reply| Answer::ConfigsAltered(results(reply)))
        }
        Request::AllocateProducerIds {
            broker_id,
            broker_epoch,
        } => {
            let proposal = controller.producer_ids_allocate(index, broker_id, broker_epoch);
            split(proposal, |reply| {
                Answer::ProducerIds(reply.map(Into::into).map_err(WireError::from))
            })
        }
        Request::ImportTopics {
            broker_id,
            broker_epoch,
            topics,
            producer_id_floor,
        } => {
            let import = Import {
                broker_id,
                broker_epoch,
                topics: topics.into_iter().map(Into::into).collect(),
                producer_id_floor,
            };
            let proposal = controller.topics_import(index, &import);
            split(proposal, |reply| {
                Answer::TopicsImported(reply.map(results).map_err(WireError::from))
            })
        }
        Request::AlterPartition(alter) => {
            let proposal = controller.alter_partition(index, &alter);
            split(proposal, |reply| {
                Answer::PartitionAltered(reply.map_err(WireError::from))
            })
        }
    }
}
