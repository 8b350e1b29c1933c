//! Background log maintenance: retention (delete policy) and compaction (compact policy), every
//! `retention_check_interval`, one partition at a time so the work never competes with itself;
//! and the expiration of idle idempotent producers (`producer_id_expiration_ms`).

use crate::broker::Broker;
use std::sync::Arc;

pub async fn run(broker: Arc<Broker>) {
    loop {
        runtime::time::sleep(broker.config.retention_check_interval).await;
        pass(&broker).await;
    }
}

/// One pass over every partition.
pub async fn pass(broker: &Arc<Broker>) {
    let partitions = broker.topics().partitions_all();
    for partition in partitions {
        let now_ms = broker.clock.wall_ms();
        let log_start_moved = {
            let mut log = partition.log();
            let log_start_before = log.log_start_offset();
            match log.retention_enforce(now_ms) {
                Ok(outcome) => {
                    tracing::debug!(topic = %partition.topic, partition = partition.index, ?outcome, "retention")
                }
                Err(error) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "retention failed")
                }
            }
            match log.compact(now_ms) {
                Ok(outcome) => {
                    tracing::debug!(topic = %partition.topic, partition = partition.index, ?outcome, "compaction")
                }
                Err(error) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "compaction failed")
                }
            }
            let expired = log.producers_expire(now_ms, broker.config.producer_id_expiration_ms);
            if expired > 0 {
                tracing::debug!(topic = %partition.topic, partition = partition.index, expired, "producers expired");
            }
            log.log_start_offset() != log_start_before
        };
        if log_start_moved {
            partition.readers_wake();
        }
        // Let produce and fetch traffic in between partitions.
        runtime::yield_now().await;
    }
}
