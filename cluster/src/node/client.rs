//! Calls to the controller leader, wherever it is: this node's own driver when it leads,
//! else the leader's controller listener (a small pool of RPC connections per voter). A call is
//! retried, with backoff, on NOT_CONTROLLER, a broken connection or no known leader, until
//! `timing.request_timeout`.
//!
//! A call that changes state carries one `RequestId` (this node, its incarnation, a sequence
//! number) on every try, so a retry whose first try committed while its answer was lost gets
//! that first answer from the controller instead of meeting its own effect
//! (`controller::requests`).

use super::driver::Call;
use super::rpc::{self, Answer, Envelope, Request, Response, RPC_MAGIC};
use super::{ClusterError, ClusterStatus};
use crate::image::MetadataOffset;
use crate::records::{BrokerId, IncarnationId, RequestId};
use runtime::io::AsyncWriteExt;
use runtime::net::TcpStream;
use runtime::sync::{mpsc, oneshot, watch};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections kept per voter.
const IDLE_CONNECTIONS_MAX: usize = 4;
/// One attempt at a remote leader gets at most this share of the timeout, so a leader cut
/// off mid-call (its connection silent, not closed) still leaves time to ask its successor.
/// A leader without its quorum steps down within two election timeouts and answers
/// NOT_CONTROLLER, far within one attempt.
const ATTEMPTS_MIN: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct Forwarder {
    node_id: BrokerId,
    incarnation_id: IncarnationId,
    /// The last sequence number given to a call (never reused in this incarnation).
    sequence: AtomicU64,
    voters: BTreeMap<BrokerId, String>,
    local: mpsc::Sender<Call>,
    status: watch::Receiver<ClusterStatus>,
    idle: Mutex<BTreeMap<BrokerId, Vec<TcpStream>>>,
    timeout: Duration,
    clock: runtime::Clock,
}

impl Forwarder {
    pub(crate) fn new(
        node_id: BrokerId,
        incarnation_id: IncarnationId,
        voters: BTreeMap<BrokerId, String>,
        local: mpsc::Sender<Call>,
        status: watch::Receiver<ClusterStatus>,
        timeout: Duration,
        clock: runtime::Clock,
    ) -> Forwarder {
        Forwarder {
            node_id,
            incarnation_id,
            sequence: AtomicU64::new(0),
            voters,
            local,
            status,
            idle: Mutex::new(BTreeMap::new()),
            timeout,
            clock,
        }
    }

    pub(crate) fn voters(&self) -> &BTreeMap<BrokerId, String> {
        &self.voters
    }

    /// The controller's answer and the offset it holds from; Timeout if no leader answered.
    pub(crate) async fn call(
        &self,
        request: &Request,
    ) -> Result<(MetadataOffset, Answer), ClusterError> {
        let request_id = request.is_once().then(|| RequestId {
            broker_id: self.node_id,
            incarnation_id: self.incarnation_id,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
        });
        // The same envelope, id included, on every try.
        let envelope = Envelope {
            id: request_id,
            request: request.clone(),
        };
        let deadline = self.clock.now() + self.timeout;
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.local.is_closed() {
                return Err(ClusterError::Stopped); // killed, or the loop's disk failed
            }
            let leader = self.status.borrow().controller_leader;
            let response = match leader {
                None => None,
                Some(id) if id == self.node_id => Some(self.local_call(&envelope).await?),
                Some(id) => {
                    let remaining = deadline.saturating_duration_since(self.clock.now());
                    let attempt = remaining.min(self.timeout / ATTEMPTS_MIN);
                    let call = runtime::time::timeout(attempt, self.remote_call(id, &envelope));
                    // A new leader ends the attempt at once: a heartbeat stuck on a silent old
                    // leader for longer than a session would get every broker fenced by the
                    // new one (cluster-partition seed 25).
                    let mut status = self.status.clone();
                    let moved = status.wait_for(|status| status.controller_leader != Some(id));
                    runtime::select! {
                        biased;
                        answer = call => answer.ok().flatten(),
                        _ = moved => None,
                    }
                }
            };
            match response {
                Some(Response::Answer { offset, answer }) => return Ok((offset, answer)),
                Some(Response::Failed(error)) => return Err(ClusterError::Refused(error.into())),
                Some(Response::NotController { .. }) | None => {}
            }
            let now = self.clock.now();
            if now >= deadline {
                return Err(ClusterError::Timeout);
            }
            runtime::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Like `call`, and returns only once this node has applied the answer's offset, so what
    /// the caller reads next (a Metadata request) sees it.
    pub(crate) async fn call_applied(&self, request: &Request) -> Result<Answer, ClusterError> {
        let (offset, answer) = self.call(request).await?;
        let mut status = self.status.clone();
        let applied = async move {
            status
                .wait_for(|status| status.applied >= offset)
                .await
                .is_ok()
        };
        match runtime::time::timeout(self.timeout, applied).await {
            Ok(true) => Ok(answer),
            Ok(false) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    async fn local_call(&self, envelope: &Envelope) -> Result<Response, ClusterError> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            envelope: envelope.clone(),
            reply,
        };
        self.local
            .send(call)
            .await
            .map_err(|_| ClusterError::Stopped)?;
        // A dropped reply: the loop stopped.
        answer.await.map_err(|_| ClusterError::Stopped)
    }

    /// One request to voter `id`; None if the connection failed (the caller retries).
    async fn remote_call(&self, id: BrokerId, envelope: &Envelope) -> Option<Response> {
        let mut stream = match self.idle_take(id) {
            Some(stream) => stream,
            None => self.connect(id).await?,
        };
        let exchanged = async {
            rpc::frame_write(&mut stream, envelope).await?;
            rpc::frame_read::<Response>(&mut stream).await
        };
        match exchanged.await {
            Ok(Some(response)) => {
                self.idle_put(id, stream);
                Some(response)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::debug!("controller rpc to node {id}: {error}");
                None
            }
        }
    }

    async fn connect(&self, id: BrokerId) -> Option<TcpStream> {
        let address = self.voters.get(&id)?;
        let connected = async {
            let mut stream = TcpStream::connect(address.as_str()).await?;
            let _ = stream.set_nodelay(true);
            stream.write_all(&RPC_MAGIC).await?;
            Ok::<_, std::io::Error>(stream)
        };
        match connected.await {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::debug!("controller rpc to node {id} at {address}: {error}");
                None
            }
        }
    }

    fn idle_take(&self, id: BrokerId) -> Option<TcpStream> {
        let mut idle = self.idle.lock().expect("the pool lock is never poisoned");
        idle.get_mut(&id)?.pop()
    }

    fn idle_put(&self, id: BrokerId, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("the pool lock is never poisoned");
        let streams = idle.entry(id).or_default();
        if streams.len() < IDLE_CONNECTIONS_MAX {
            streams.push(stream);
        }
    }
}
