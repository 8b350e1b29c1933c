//! Producer id blocks (Kafka's `ProducerIdControlManager`, KIP-730): a broker asks for a block
//! of 1000 ids when its current one runs out; the controller hands out blocks in order, so no
//! id is ever issued twice, even across controller failovers (the next block start is in the
//! log).

use super::errors::{ApiError, BROKER_ID_NOT_REGISTERED, STALE_BROKER_EPOCH, UNKNOWN_SERVER_ERROR};
use super::{Controller, Proposal};
use crate::image::MetadataOffset;
use crate::records::{BrokerId, MetadataRecord, PRODUCER_ID_BLOCK_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i64,
}

impl Controller {
    pub fn producer_ids_allocate(
        &mut self,
        index: MetadataOffset,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> Proposal<Result<ProducerIdBlock, ApiError>> {
        let decided = self.producer_ids_decide(index, broker_id, broker_epoch);
        self.answer(index, decided)
    }

    fn producer_ids_decide(
        &mut self,
        index: MetadataOffset,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> Result<Proposal<ProducerIdBlock>, ApiError> {
        let Some(broker) = self.image.broker(broker_id) else {
            let message = format!("broker {broker_id} is not registered; register first");
            return Err(ApiError::new(BROKER_ID_NOT_REGISTERED, message));
        };
        if broker.broker_epoch != broker_epoch {
            let message = format!(
                "broker {broker_id} asked with epoch {broker_epoch}, but its registration has \
                 epoch {}",
                broker.broker_epoch
            );
            return Err(ApiError::new(STALE_BROKER_EPOCH, message));
        }
        let first = self.image.producer_id_next();
        let Some(next_block_start) = first.checked_add(PRODUCER_ID_BLOCK_SIZE) else {
            let message = "every producer id has been handed out";
            return Err(ApiError::new(UNKNOWN_SERVER_ERROR, message));
        };
        let mut batch = self.batch(index);
        batch.push(MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_block_start,
        });
        let block = ProducerIdBlock {
            first,
            size: PRODUCER_ID_BLOCK_SIZE,
        };
        Ok(batch.finish(block))
    }
}
