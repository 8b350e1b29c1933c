//! Broker membership (Kafka's `ClusterControlManager` and `BrokerHeartbeatManager`):
//! registration, heartbeats, session expiry, controlled shutdown.
//!
//! A broker registers with an incarnation id (fresh at each process start). A new incarnation
//! gets a new broker epoch and starts fenced; the same incarnation (a retried request) gets the
//! same epoch and changes nothing. Heartbeats renew the session and carry the broker's metadata
//! offset: once it reaches the offset its registration was applied at, the broker has seen
//! every partition assigned to it and is unfenced. A session that expires fences the broker; a
//! heartbeat asking for controlled shutdown moves its leadership away and fences it at once.

use super::election::{broker_leave, offline_elect, preferred_elect};
use super::errors::{
    ApiError, BROKER_ID_NOT_REGISTERED, DUPLICATE_BROKER_REGISTRATION, INVALID_REQUEST,
    STALE_BROKER_EPOCH,
};
use super::{Batch, Controller, Proposal};
use crate::image::{MetadataImage, MetadataOffset};
use crate::records::{BrokerId, IncarnationId, MetadataRecord, RegisterBroker};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationReply {
    pub broker_epoch: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The last index the broker's own image has applied.
    pub metadata_offset: MetadataOffset,
    /// The broker is shutting down and asks to hand its leadership over first.
    pub want_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub is_fenced: bool,
    /// Controlled shutdown is done: the broker leads nothing and may stop.
    pub should_shutdown: bool,
}

impl Controller {
    pub fn register_broker(
        &mut self,
        index: MetadataOffset,
        now_ms: u64,
        request: &BrokerRegistrationRequest,
    ) -> Proposal<Result<RegistrationReply, ApiError>> {
        let decided = self.register_decide(index, now_ms, request);
        self.answer(index, decided)
    }

    pub fn heartbeat(
        &mut self,
        index: MetadataOffset,
        now_ms: u64,
        request: &BrokerHeartbeat,
    ) -> Proposal<Result<HeartbeatReply, ApiError>> {
        let decided = self.heartbeat_decide(index, now_ms, request);
        self.answer(index, decided)
    }

    fn register_decide(
        &mut self,
        index: MetadataOffset,
        now_ms: u64,
        request: &BrokerRegistrationRequest,
    ) -> Result<Proposal<RegistrationReply>, ApiError> {
        if request.broker_id < 0 {
            let message = format!("broker id {} is negative", request.broker_id);
            return Err(ApiError::new(INVALID_REQUEST, message));
        }
        let existing = self.image.broker(request.broker_id).cloned();
        if let Some(existing) = existing.filter(|e| e.incarnation_id == request.incarnation_id) {
            let same = existing.host == request.host
                && existing.port == request.port
                && existing.rack == request.rack;
            if !same {
                let message = format!(
                    "broker {} re-registered its incarnation with another endpoint or rack; \
                     a restarted broker needs a new incarnation id",
                    request.broker_id
                );
                return Err(ApiError::new(DUPLICATE_BROKER_REGISTRATION, message));
            }
            self.session_renew(request.broker_id, now_ms);
            let reply = RegistrationReply {
                broker_epoch: existing.broker_epoch,
            };
            return Ok(self.batch(index).finish(reply));
        }
        let broker_epoch = self.image.broker_epoch_max() + 1;
        let planted = self.planted;
        let mut batch = self.batch(index);
        if batch.image().broker_is_live(request.broker_id) {
            // The old incarnation is gone: it leads nothing from here on.
            broker_leave(&mut batch, request.broker_id, planted);
        }
        batch.push(MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id: request.broker_id,
            incarnation_id: request.incarnation_id,
            broker_epoch,
            host: request.host.clone(),
            port: request.port,
            rack: request.rack.clone(),
        }));
        let proposal = batch.finish(RegistrationReply { broker_epoch });
        self.session_renew(request.broker_id, now_ms);
        Ok(proposal)
    }

    fn heartbeat_decide(
        &mut self,
        index: MetadataOffset,
        now_ms: u64,
        request: &BrokerHeartbeat,
    ) -> Result<Proposal<HeartbeatReply>, ApiError> {
        let broker_id = request.broker_id;
        let Some(broker) = self.image.broker(broker_id).cloned() else {
            let message = format!("broker {broker_id} is not registered; register first");
            return Err(ApiError::new(BROKER_ID_NOT_REGISTERED, message));
        };
        if broker.broker_epoch != request.broker_epoch {
            let message = format!(
                "broker {broker_id} heartbeat with epoch {}, but its registration has epoch {}",
                request.broker_epoch, broker.broker_epoch
            );
            return Err(ApiError::new(STALE_BROKER_EPOCH, message));
        }
        self.session_renew(broker_id, now_ms);
        let planted = self.planted;
        let mut batch = self.batch(index);
        if request.want_shutdown {
            if !broker.fenced {
                broker_fence(&mut batch, broker_id, planted);
            }
            let reply = HeartbeatReply {
                is_fenced: true,
                should_shutdown: true,
            };
            return Ok(batch.finish(reply));
        }
        let caught_up = request.metadata_offset >= broker.registered_offset;
        if broker.fenced && caught_up {
            batch.push(MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch: broker.broker_epoch,
            });
            offline_elect(&mut batch, None, planted);
        }
        let reply = HeartbeatReply {
            is_fenced: !batch.image().broker_is_live(broker_id),
            should_shutdown: false,
        };
        Ok(batch.finish(reply))
    }

    /// Fences every live broker whose session ended at or before `now_ms`; then, if the
    /// rebalance interval has passed, runs the preferred-leader election.
    pub fn tick(&mut self, index: MetadataOffset, now_ms: u64) -> Proposal<()> {
        let expired: Vec<BrokerId> = self
            .session_deadlines
            .iter()
            .filter(|(broker_id, deadline)| {
                **deadline <= now_ms && self.image.broker_is_live(**broker_id)
            })
            .map(|(broker_id, _)| *broker_id)
            .collect();
        let rebalance = now_ms >= self.rebalance_at;
        if rebalance {
            self.rebalance_at = now_ms.saturating_add(self.config.leader_rebalance_interval_ms);
        }
        let planted = self.planted;
        let mut batch = self.batch(index);
        for broker_id in expired {
            broker_fence(&mut batch, broker_id, planted);
        }
        if rebalance {
            preferred_elect(&mut batch);
        }
        batch.finish(())
    }

    fn session_renew(&mut self, broker_id: BrokerId, now_ms: u64) {
        let deadline = now_ms.saturating_add(self.config.session_timeout_ms);
        self.session_deadlines.insert(broker_id, deadline);
    }
}

/// Leadership moves away, the broker leaves the ISRs it is not the last member of, then it is
/// fenced (in that order, so no record leaves a fenced broker leading).
fn broker_fence(
    batch: &mut Batch<'_>,
    broker_id: BrokerId,
    planted: Option<crate::planted::PlantedBug>,
) {
    broker_leave(batch, broker_id, planted);
    let broker_epoch = broker_epoch(batch.image(), broker_id);
    batch.push(MetadataRecord::FenceBroker {
        broker_id,
        broker_epoch,
    });
}

fn broker_epoch(image: &MetadataImage, broker_id: BrokerId) -> i64 {
    image
        .broker(broker_id)
        .expect("a registered broker")
        .broker_epoch
}
