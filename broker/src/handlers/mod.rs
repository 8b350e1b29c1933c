//! One file per Kafka API. `handle` routes a decoded request; each handler validates its input,
//! does its synchronous part at once (in request order), and either answers now or returns the
//! future that will answer (a produce waiting for durability, a fetch long-polling).

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod admin;
pub mod alter_configs;
pub mod api_versions;
pub mod configs;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod end_txn;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod internal_topics;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod txns;
pub mod write_txn_markers;

use crate::broker::Broker;
use runtime::buggify::Site;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wire::{RequestFrame, RequestKind, ResponseKind};

pub type ResponseFuture = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// What a handler produced.
pub enum Reply {
    /// acks=0 produce: the client expects no response at all.
    None,
    Now(Box<ResponseKind>),
    Later(ResponseFuture),
}

/// Reports the aimed-fault site `site` once `reply` is ready to go out: the simulator may crash
/// the node a moment later, after the client has its answer. Only the simulator's build wraps.
#[cfg(madsim)]
fn replied(broker: &Arc<Broker>, site: Site, reply: Reply) -> Reply {
    let disk = broker.disk.clone();
    match reply {
        Reply::Later(future) => Reply::Later(Box::pin(async move {
            let response = future.await;
            runtime::buggify::hit(&*disk, site);
            response
        })),
        reply => {
            runtime::buggify::hit(&*disk, site);
            reply
        }
    }
}

#[cfg(not(madsim))]
fn replied(_broker: &Arc<Broker>, _site: Site, reply: Reply) -> Reply {
    reply
}

pub fn handle(broker: &Arc<Broker>, request: RequestFrame) -> Reply {
    let version = request.api_version;
    match request.body {
        RequestKind::ApiVersions(body) => {
            Reply::Now(Box::new(api_versions::handle(&body, version)))
        }
        RequestKind::Metadata(body) => metadata::handle(broker, body, version),
        RequestKind::DescribeCluster(body) => {
            Reply::Now(Box::new(describe_cluster::handle(broker, body, version)))
        }
        RequestKind::DescribeQuorum(body) => {
            Reply::Now(Box::new(describe_quorum::handle(broker, body, version)))
        }
        RequestKind::Produce(body) => replied(
            broker,
            Site::ProduceReplied,
            internal_topics::produce_guarded(broker, body, version),
        ),
        RequestKind::Fetch(body) => replied(
            broker,
            Site::FetchReplied,
            fetch::handle(broker, body, version),
        ),
        RequestKind::ListOffsets(body) => {
            Reply::Now(Box::new(list_offsets::handle(broker, body, version)))
        }
        RequestKind::OffsetForLeaderEpoch(body) => Reply::Now(Box::new(
            offset_for_leader_epoch::handle(broker, body, version),
        )),
        RequestKind::CreateTopics(body) => {
            Reply::Later(admin::create_topics(broker, body, version))
        }
        RequestKind::DeleteTopics(body) => {
            Reply::Later(admin::delete_topics(broker, body, version))
        }
        RequestKind::CreatePartitions(body) => Reply::Later(admin::create_partitions(broker, body)),
        RequestKind::AlterConfigs(body) => Reply::Later(admin::alter_configs(broker, body)),
        RequestKind::IncrementalAlterConfigs(body) => {
            Reply::Later(admin::incremental_alter_configs(broker, body))
        }
        RequestKind::DescribeConfigs(body) => {
            Reply::Now(Box::new(describe_configs::handle(broker, body, version)))
        }
        RequestKind::FindCoordinator(body) => {
            Reply::Now(Box::new(find_coordinator::handle(broker, body, version)))
        }
        RequestKind::JoinGroup(body) => {
            let client_id = request.header.client_id.as_deref().unwrap_or_default();
            join_group::handle(broker, body, version, client_id)
        }
        RequestKind::SyncGroup(body) => sync_group::handle(broker, body, version),
        RequestKind::Heartbeat(body) => heartbeat::handle(broker, body, version),
        RequestKind::LeaveGroup(body) => leave_group::handle(broker, body, version),
        RequestKind::OffsetCommit(body) => replied(
            broker,
            Site::CommitReplied,
            offset_commit::handle(broker, body, version),
        ),
        RequestKind::OffsetFetch(body) => {
            Reply::Now(Box::new(offset_fetch::handle(broker, body, version)))
        }
        RequestKind::DescribeGroups(body) => {
            Reply::Now(Box::new(describe_groups::handle(broker, body, version)))
        }
        RequestKind::ListGroups(body) => {
            Reply::Now(Box::new(list_groups::handle(broker, body, version)))
        }
        RequestKind::DeleteGroups(body) => delete_groups::handle(broker, body, version),
        RequestKind::DeleteRecords(body) => {
            Reply::Now(Box::new(delete_records::handle(broker, body, version)))
        }
        RequestKind::OffsetDelete(body) => offset_delete::handle(broker, body, version),
        RequestKind::InitProducerId(body) => init_producer_id::handle(broker, body, version),
        RequestKind::AddPartitionsToTxn(body) => {
            add_partitions_to_txn::handle(broker, body, version)
        }
        RequestKind::AddOffsetsToTxn(body) => add_offsets_to_txn::handle(broker, body, version),
        RequestKind::EndTxn(body) => end_txn::handle(broker, body, version),
        RequestKind::TxnOffsetCommit(body) => txn_offset_commit::handle(broker, body, version),
        RequestKind::DescribeTransactions(body) => {
            Reply::Now(Box::new(describe_transactions::handle(broker, body)))
        }
        RequestKind::ListTransactions(body) => {
            Reply::Now(Box::new(list_transactions::handle(broker, body, version)))
        }
        RequestKind::WriteTxnMarkers(body) => write_txn_markers::handle(broker, body, version),
        other => {
            unreachable!("api_versions::is_supported admitted an unhandled request: {other:?}")
        }
    }
}
