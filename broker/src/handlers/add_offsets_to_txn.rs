//! AddOffsetsToTxn (API 25): adds the group's `__consumer_offsets` partition to the
//! transaction, so that its marker reaches the offsets the transaction commits there
//! (TxnOffsetCommit). v2+ knows PRODUCER_FENCED.

use crate::broker::Broker;
use crate::handlers::errors::{txn_error_code, NONE};
use crate::handlers::groups::{group_id_check, reply_when};
use crate::handlers::txns::transactional_id_check;
use crate::handlers::Reply;
use crate::txn::{Input, Output};
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

fn response(code: i16) -> ResponseKind {
    ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
}

pub fn handle(broker: &Arc<Broker>, request: AddOffsetsToTxnRequest, version: i16) -> Reply {
    let checked = transactional_id_check(request.transactional_id.as_str())
        .and_then(|id| Ok((id, group_id_check(request.group_id.as_str())?)));
    let (transactional_id, group_id) = match checked {
        Ok(checked) => checked,
        Err(error) => return Reply::Now(Box::new(response(error.code()))),
    };
    // The image's partition count once a replicated `__consumer_offsets` exists: the group's
    // coordinator writes the offsets to that partition, which must get the marker.
    let partition = match broker.partition_count(crate::group::OFFSETS_TOPIC) {
        0 => broker.txn().read(|core| core.offsets_partition(&group_id)),
        count => crate::group::TopicPartition {
            topic: crate::group::OFFSETS_TOPIC.to_string(),
            partition: crate::group::coordinator::partition_for(&group_id, count),
        },
    };
    let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
    let receiver = broker
        .txn()
        .submit(|request, now, wall_ms| Input::AddPartitions {
            request,
            now,
            wall_ms,
            transactional_id,
            producer_id,
            epoch,
            partitions: vec![partition],
        });
    let fenced_known = version >= 2;
    reply_when(receiver, move |output| match output {
        Some(Output::AddPartitions { result: Ok(()), .. }) => response(NONE),
        Some(Output::AddPartitions {
            result: Err(error), ..
        }) => response(txn_error_code(error, fenced_known).code()),
        _ => response(ResponseError::CoordinatorNotAvailable.code()),
    })
}
