//! ApiVersions: what this broker speaks. The table below is the single source of truth; the
//! connection refuses anything outside it before a handler runs.
//!
//! Produce is advertised from v0 because librdkafka < 2.11 disables compression unless the broker
//! lists Produce v0..; v0-2 carry the old message formats, which the codec cannot decode, so a
//! client that actually uses them gets its connection closed. Fetch stops at 12: v13+ address
//! topics by id only. ListOffsets stops at 6: v7's MAX_TIMESTAMP lookup is not implemented.
//!
//! Groups: OffsetCommit starts at 2 and OffsetFetch at 1 because the protocol crate decodes
//! nothing older (v0-1 stored offsets in ZooKeeper); OffsetCommit stops at 9 and OffsetFetch at 9
//! because v10 names topics by id only. JoinGroup starts at 0 for old librdkafka. Every other
//! group API spans all the crate's versions.
//!
//! InitProducerId stops at 4: v5 and v6 belong to transactions (KIP-890, KIP-939).
//! WriteTxnMarkers is v1 only: the protocol crate decodes nothing older (Kafka 4 removed v0,
//! KIP-896), and v1 differs from v0 only by the flexible encoding.
//!
//! Transactions (KIP-98): AddPartitionsToTxn spans v0-5 (v4+ is the brokers' batched form, v5
//! only adds an error code we never send); AddOffsetsToTxn and TxnOffsetCommit stop at 3 and
//! EndTxn at 4, because the next versions belong to KIP-890's second phase (an epoch bump at every
//! EndTxn, partitions added implicitly), which gregor's coordinator does not implement.
//! ListTransactions stops at 1: v2's regular-expression filter is not served.
//!
//! DescribeCluster spans all the crate's versions (0-2). So does DescribeQuorum;
//! a zero-config node answers as its own lone voter. OffsetForLeaderEpoch spans the crate's 2-4 (it
//! decodes nothing older; v2 is where `current_leader_epoch` begins).
//!
//! Admin: AlterConfigs, IncrementalAlterConfigs, DeleteRecords and OffsetDelete span all the
//! crate's versions.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use wire::{ApiKey, ResponseKind};

/// (API, min version, max version) this broker handles.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
];

pub fn is_supported(api_key: ApiKey, api_version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(key, min, max)| *key == api_key && (*min..=*max).contains(&api_version))
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(_request: &ApiVersionsRequest, _version: i16) -> ResponseKind {
    ResponseKind::ApiVersions(ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The answer to an ApiVersions request of a version we do not speak: v0, with our ranges.
pub fn unsupported() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(api_keys()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_codec_can_decode_or_documented() {
        for (key, min, max) in SUPPORTED {
            let codec = key.valid_versions();
            assert!(
                *max <= codec.max,
                "{key:?} advertises v{max} beyond the codec's v{}",
                codec.max
            );
            if *key != ApiKey::Produce {
                assert!(
                    *min >= codec.min,
                    "{key:?} advertises v{min} below the codec's v{}",
                    codec.min
                );
            }
        }
    }
}
