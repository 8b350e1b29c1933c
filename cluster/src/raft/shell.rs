//! The async shell around a `RaftNode`: one task owns the node and loops over the tick timer,
//! inbound messages and proposals; after each event it handles the ready (the fsync runs
//! through `runtime::blocking`), sends what it returns and settles proposals. Callers hold a
//! `RaftHandle`.

use super::node::{NodeConfig, Outcome, ProposeError, RaftNode, StateMachine, Status};
use super::transport::{self, Transport, INBOUND_QUEUE_MAX};
use raft::eraftpb::Message;
use runtime::net::TcpListener;
use runtime::rng::ChaCha8Rng;
use runtime::sync::{mpsc, oneshot, watch};
use runtime::Disk;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Proposals waiting for the Raft loop before `propose` reports it busy.
pub const PROPOSAL_QUEUE_MAX: usize = 1024;

#[derive(Clone, Debug)]
pub struct ShellConfig {
    pub node: NodeConfig,
    /// The length of one Raft tick.
    pub tick: Duration,
    /// Every other voter's controller address (`id -> host:port`).
    pub peers: BTreeMap<u64, String>,
    /// The node's Raft directory.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error(transparent)]
    Refused(#[from] ProposeError),
    /// Accepted, but not known to commit (see `Outcome::Failed`).
    #[error("proposal at {index} failed: leadership lost or index taken")]
    Failed { index: u64 },
    /// The Raft loop is gone (stopped, or its disk failed).
    #[error("raft loop stopped")]
    Stopped,
}

struct Proposal {
    data: Vec<u8>,
    reply: oneshot::Sender<Result<u64, ProposalError>>,
}

/// What callers hold: proposals in, status out.
#[derive(Clone, Debug)]
pub struct RaftHandle {
    proposals: mpsc::Sender<Proposal>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Proposal({} bytes)", self.data.len())
    }
}

impl RaftHandle {
    /// Proposes `data`; resolves with its index once this node applied it.
    pub async fn propose(&self, data: Vec<u8>) -> Result<u64, ProposalError> {
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send(Proposal { data, reply })
            .await
            .map_err(|_| ProposalError::Stopped)?;
        answer.await.unwrap_or(Err(ProposalError::Stopped))
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the status changes (a new leader, term, commit or applied index): how the
    /// controller learns it gained or lost leadership. Err once the loop stopped.
    pub async fn status_changed(&mut self) -> Result<Status, ProposalError> {
        self.status
            .changed()
            .await
            .map_err(|_| ProposalError::Stopped)?;
        Ok(self.status.borrow_and_update().clone())
    }
}

/// A running shell: its tasks stop when it is dropped (or `stop`ped).
#[derive(Debug)]
pub struct Shell {
    tasks: Vec<runtime::JoinHandle<()>>,
    handle: RaftHandle,
}

impl Shell {
    /// Opens the node from `disk` and starts its loop, its listener on `listener` and its
    /// connections to the peers.
    pub fn start<M: StateMachine + Send + 'static>(
        config: ShellConfig,
        disk: Arc<dyn Disk>,
        machine: M,
        rng: ChaCha8Rng,
        listener: TcpListener,
    ) -> io::Result<Shell> {
        let node = RaftNode::open(config.node.clone(), disk, &config.dir, machine, rng)?;
        let (inbound_sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let (proposal_sender, proposals) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        let (status_sender, status) = watch::channel(node.status());
        let transport = Transport::start(&config.peers);
        let event_loop = EventLoop {
            node: Some(node),
            transport,
            status: status_sender,
            waiting: BTreeMap::new(),
            proposal_next: 0,
        };
        let tasks = vec![
            runtime::spawn(transport::listen(listener, inbound_sender)),
            runtime::spawn(event_loop.run(config.tick, inbound, proposals)),
        ];
        Ok(Shell {
            tasks,
            handle: RaftHandle {
                proposals: proposal_sender,
                status,
            },
        })
    }

    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.stop();
    }
}

struct EventLoop<M: StateMachine> {
    /// Taken while `handle_ready` runs on the blocking pool.
    node: Option<RaftNode<M>>,
    transport: Transport,
    status: watch::Sender<Status>,
    /// Accepted proposals by the id in their context.
    waiting: BTreeMap<u64, oneshot::Sender<Result<u64, ProposalError>>>,
    proposal_next: u64,
}

enum Event {
    Tick,
    Message(Message),
    Proposal(Proposal),
}

impl<M: StateMachine + Send + 'static> EventLoop<M> {
    async fn run(
        mut self,
        tick: Duration,
        mut inbound: mpsc::Receiver<Message>,
        mut proposals: mpsc::Receiver<Proposal>,
    ) {
        let mut ticker = runtime::time::interval(tick);
        loop {
            let event = runtime::select! {
                _ = ticker.tick() => Event::Tick,
                Some(message) = inbound.recv() => Event::Message(message),
                Some(proposal) = proposals.recv() => Event::Proposal(proposal),
            };
            self.event_handle(event);
            if let Err(error) = self.ready_handle().await {
                // The node's Raft state may be ahead of its disk: it must not go on. Waiting
                // proposals learn it from their dropped replies.
                tracing::error!("raft loop stopped: disk failed: {error}");
                return;
            }
        }
    }

    fn event_handle(&mut self, event: Event) {
        let node = self.node.as_mut().expect("node is home between readies");
        match event {
            Event::Tick => node.tick(),
            Event::Message(message) => node.step(message),
            Event::Proposal(proposal) => {
                let id = self.proposal_next;
                self.proposal_next += 1;
                match node.propose(proposal.data, id.to_le_bytes().to_vec()) {
                    Ok(_) => {
                        self.waiting.insert(id, proposal.reply);
                    }
                    Err(error) => {
                        let _ = proposal.reply.send(Err(error.into()));
                    }
                }
            }
        }
    }

    async fn ready_handle(&mut self) -> io::Result<()> {
        let node = self.node.take().expect("node is home between readies");
        let (node, result) = transport::ready_round(node, &self.transport).await;
        let node = self.node.insert(node);
        result?;
        for completion in node.completions_take() {
            let Ok(id) = <[u8; 8]>::try_from(completion.context.as_slice()) else {
                continue;
            };
            let Some(reply) = self.waiting.remove(&u64::from_le_bytes(id)) else {
                continue;
            };
            let answer = match completion.outcome {
                Outcome::Committed => Ok(completion.index),
                Outcome::Failed => Err(ProposalError::Failed {
                    index: completion.index,
                }),
            };
            let _ = reply.send(answer);
        }
        let status = node.status();
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
        Ok(())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::raft::node::Role;
    use rand::SeedableRng;
    use runtime::MemDisk;
    use std::sync::Mutex;

    /// Records what it applies where the test can read it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Applied>>);

    type Applied = Vec<(u64, Vec<u8>)>;

    impl StateMachine for Shared {
        fn apply(&mut self, index: u64, data: &[u8]) {
            self.0.lock().unwrap().push((index, data.to_vec()));
        }
        fn snapshot(&self) -> Vec<u8> {
            Vec::new()
        }
        fn restore(&mut self, _index: u64, _data: &[u8]) {}
    }

    async fn leader_wait(handles: &[(u64, RaftHandle)], above_term: u64) -> (u64, u64) {
        for _ in 0..500 {
            for (id, handle) in handles {
                let status = handle.status();
                if status.role == Role::Leader && status.term > above_term {
                    return (*id, status.term);
                }
            }
            runtime::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected in 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_shells_elect_propose_and_survive_a_leader_kill() {
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let mut shells = BTreeMap::new();
        let mut machines = BTreeMap::new();
        for (id, listener) in listeners {
            let peers = addresses
                .iter()
                .filter(|(peer, _)| **peer != id)
                .map(|(peer, address)| (*peer, address.clone()))
                .collect();
            let config = ShellConfig {
                node: NodeConfig::new(id, vec![1, 2, 3]),
                tick: Duration::from_millis(10),
                peers,
                dir: PathBuf::from("/raft"),
            };
            let machine = Shared::default();
            machines.insert(id, machine.clone());
            let rng = ChaCha8Rng::seed_from_u64(id);
            let shell = Shell::start(config, MemDisk::new(), machine, rng, listener).unwrap();
            shells.insert(id, shell);
        }
        let handles: Vec<(u64, RaftHandle)> = shells
            .iter()
            .map(|(id, shell)| (*id, shell.handle()))
            .collect();
        let mut watcher = handles[0].1.clone();
        let (leader, term) = leader_wait(&handles, 0).await;
        let seen = runtime::time::timeout(Duration::from_secs(1), watcher.status_changed()).await;
        assert!(seen.unwrap().is_ok(), "status changes are announced");
        let follower = handles.iter().find(|(id, _)| *id != leader).unwrap();
        assert!(matches!(
            follower.1.propose(b"nope".to_vec()).await,
            Err(ProposalError::Refused(ProposeError::NotLeader { .. }))
        ));
        let leader_handle = &handles.iter().find(|(id, _)| *id == leader).unwrap().1;
        let index = leader_handle.propose(b"one".to_vec()).await.unwrap();
        for _ in 0..500 {
            let everywhere = machines.values().all(|machine| {
                machine
                    .0
                    .lock()
                    .unwrap()
                    .contains(&(index, b"one".to_vec()))
            });
            if everywhere {
                break;
            }
            runtime::time::sleep(Duration::from_millis(10)).await;
        }
        for machine in machines.values() {
            assert!(machine
                .0
                .lock()
                .unwrap()
                .contains(&(index, b"one".to_vec())));
        }

        // Kill the leader: the other two elect a new one in a later term, which commits.
        let killed_at = runtime::time::Instant::now();
        shells.remove(&leader);
        let survivors: Vec<(u64, RaftHandle)> = handles
            .into_iter()
            .filter(|(id, _)| *id != leader)
            .collect();
        let (second, second_term) = leader_wait(&survivors, term).await;
        println!(
            "new leader {second} in {:?} after the kill",
            killed_at.elapsed()
        );
        assert_ne!(second, leader);
        assert!(second_term > term);
        let second_handle = &survivors.iter().find(|(id, _)| *id == second).unwrap().1;
        let index_two = second_handle.propose(b"two".to_vec()).await.unwrap();
        assert!(index_two > index);
    }
}
