//! The broker's membership, as Kafka's `BrokerLifecycleManager`: register with a fresh
//! incarnation id (one per process start), then heartbeat every `broker_heartbeat` with the
//! applied offset; the controller unfences the broker once that offset reaches its
//! registration's. A heartbeat refused for a stale epoch or an unknown broker (the controller
//! lost or replaced the registration) registers again. On shutdown the heartbeats ask for
//! controlled shutdown until the controller says the broker leads nothing.

use super::client::Forwarder;
use super::rpc::{Answer, Request};
use super::{BrokerEndpoint, ClusterError, ClusterStatus};
use crate::controller::errors::{BROKER_ID_NOT_REGISTERED, STALE_BROKER_EPOCH};
use crate::records::{BrokerId, IncarnationId};
use runtime::sync::watch;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Lifecycle {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub endpoint: BrokerEndpoint,
    pub rack: Option<String>,
    pub interval: Duration,
    pub forwarder: Arc<Forwarder>,
    pub status: Arc<watch::Sender<ClusterStatus>>,
    /// Becomes true when controlled shutdown is asked for.
    pub shutdown: watch::Receiver<bool>,
}

enum Heartbeats {
    /// The registration is gone: register again.
    Reregister,
    /// Controlled shutdown is done (or the node stopped).
    Done,
}

impl Lifecycle {
    pub(crate) async fn run(mut self) {
        loop {
            let Some(broker_epoch) = self.register().await else {
                return;
            };
            tracing::info!(
                "broker {} registered with epoch {broker_epoch}",
                self.broker_id
            );
            self.status.send_modify(|status| {
                status.broker_epoch = Some(broker_epoch);
                status.fenced = true;
            });
            match self.heartbeats(broker_epoch).await {
                Heartbeats::Reregister => self.status.send_modify(|status| {
                    status.broker_epoch = None;
                    status.fenced = true;
                }),
                Heartbeats::Done => return,
            }
        }
    }

    /// Registers until the controller accepts; None if the node stopped.
    async fn register(&mut self) -> Option<i64> {
        let request = Request::Register {
            broker_id: self.broker_id,
            incarnation_id: self.incarnation_id,
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            rack: self.rack.clone(),
        };
        loop {
            match self.forwarder.call_applied(&request).await {
                Ok(Answer::Registered(Ok(broker_epoch))) => return Some(broker_epoch),
                Ok(Answer::Registered(Err(error))) => {
                    tracing::warn!("broker {} registration refused: {error:?}", self.broker_id);
                }
                Ok(other) => tracing::warn!("registration answered with {other:?}"),
                Err(ClusterError::Stopped) => return None,
                Err(error) => tracing::debug!("broker {} registration: {error}", self.broker_id),
            }
            runtime::time::sleep(self.interval).await;
        }
    }

    async fn heartbeats(&mut self, broker_epoch: i64) -> Heartbeats {
        loop {
            let want_shutdown = *self.shutdown.borrow_and_update();
            let request = Request::Heartbeat {
                broker_id: self.broker_id,
                broker_epoch,
                metadata_offset: self.status.borrow().applied,
                want_shutdown,
            };
            match self.forwarder.call(&request).await {
                Ok((_, Answer::Heartbeat(Ok(reply)))) => {
                    self.status.send_if_modified(|status| {
                        let changed = status.fenced != reply.is_fenced;
                        status.fenced = reply.is_fenced;
                        changed
                    });
                    if want_shutdown && reply.should_shutdown {
                        return Heartbeats::Done;
                    }
                }
                Ok((_, Answer::Heartbeat(Err(error))))
                    if error.code == STALE_BROKER_EPOCH
                        || error.code == BROKER_ID_NOT_REGISTERED =>
                {
                    tracing::warn!("broker {} heartbeat refused: {error:?}", self.broker_id);
                    return Heartbeats::Reregister;
                }
                Ok((_, other)) => tracing::warn!("heartbeat answered with {other:?}"),
                Err(ClusterError::Stopped) => return Heartbeats::Done,
                Err(error) => tracing::debug!("broker {} heartbeat: {error}", self.broker_id),
            }
            // The next heartbeat after the interval, or at once when shutdown is asked for.
            let shutdown_asked = want_shutdown;
            runtime::select! {
                biased;
                _ = self.shutdown.wait_for(|asked| *asked && !shutdown_asked) => {}
                _ = runtime::time::sleep(self.interval) => {}
            }
        }
    }
}
