//! API version negotiation, as pure functions over tables.
//!
//! On connect the client sends ApiVersions and keeps the broker's answer (`BrokerVersions`). Each
//! request then uses the highest version both sides implement: `min(broker max, our max)`, provided
//! that is not below either side's minimum. "Our" range is what this client's request builders and
//! response readers handle (`versions_ours`), which is deliberately narrower than what the
//! `kafka-protocol` crate can encode: for example Fetch stops at 12 because 13+ identifies topics by
//! id, and Metadata starts at 4 because earlier versions cannot turn off auto-creation.

use crate::error::ClientError;
use std::collections::BTreeMap;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::{ApiKey, ApiVersionsResponse, RequestKind};

/// The ApiVersions version we try first: v3 is the first flexible one and carries our name.
pub const API_VERSIONS_VERSION_FIRST: i16 = 3;

/// An inclusive range of versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

/// What this client implements, per API; `None` for APIs it never sends.
pub fn versions_ours(api_key: ApiKey) -> Option<VersionRange> {
    let (min, max) = match api_key {
        ApiKey::ApiVersions => (0, 3),
        // v4 is the first with `allow_auto_topic_creation`; v13 only adds a top-level error code.
        ApiKey::Metadata => (4, 12),
        // v3 is the first with RecordBatch v2; v10+ adds fields we do not use, v13 topic ids.
        ApiKey::Produce => (3, 9),
        // v4 is the first with isolation level; v13+ identifies topics by id.
        ApiKey::Fetch => (4, 12),
        // v2 is the first with isolation level; v8+ adds tiered-storage lookups we do not use.
        ApiKey::ListOffsets => (2, 7),
        ApiKey::CreateTopics => (2, 7),
        // v6 names topics by id or name in a new structure; v5 is enough for names.
        ApiKey::DeleteTopics => (1, 5),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::CreatePartitions => (0, 3),
        // Groups. The request builders set only fields present across each whole range, so the
        // negotiated version never meets a field it lacks. FindCoordinator stops at 3: v4 batches
        // keys in another shape. JoinGroup starts at 4 (MEMBER_ID_REQUIRED, KIP-394). LeaveGroup
        // starts at 3 (the batched `members` shape). OffsetFetch stops at 7: v8 batches groups.
        ApiKey::FindCoordinator => (1, 3),
        ApiKey::JoinGroup => (4, 9),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (3, 5),
        ApiKey::OffsetCommit => (2, 9),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DeleteGroups => (0, 2),
        // Admin: config changes, record deletion and offset deletion, every version the
        // protocol crate knows (the request builders set no version-gated field).
        ApiKey::AlterConfigs => (0, 2),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::OffsetDelete => (0, 0),
        // Idempotence: v0 carries everything an idempotent producer needs; v3+ only adds the
        // re-initialisation fields of a known producer (KIP-360), which we do not send.
        ApiKey::InitProducerId => (0, 4),
        // Transactions (KIP-98). AddPartitionsToTxn stops at 3: v4+ is the brokers' batched
        // form. EndTxn stops at 4 and TxnOffsetCommit, AddOffsetsToTxn at 3: later versions
        // belong to KIP-890's second phase (the broker bumps the epoch at every commit).
        ApiKey::AddPartitionsToTxn => (0, 3),
        ApiKey::AddOffsetsToTxn => (0, 3),
        ApiKey::EndTxn => (0, 4),
        ApiKey::TxnOffsetCommit => (0, 3),
        ApiKey::DescribeTransactions => (0, 0),
        ApiKey::ListTransactions => (0, 1),
        // Broker to broker: the transaction coordinator's markers to partition leaders. v1 is
        // the flexible encoding of v0's fields (the protocol crate decodes v1 only).
        ApiKey::WriteTxnMarkers => (1, 1),
        _ => return None,
    };
    Some(VersionRange { min, max })
}

/// The API key of a request body, for the APIs this client sends.
pub fn request_api_key(body: &RequestKind) -> Result<ApiKey, ClientError> {
    let api_key = match body {
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::OffsetDelete(_) => ApiKey::OffsetDelete,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::AddPartitionsToTxn(_) => ApiKey::AddPartitionsToTxn,
        RequestKind::AddOffsetsToTxn(_) => ApiKey::AddOffsetsToTxn,
        RequestKind::EndTxn(_) => ApiKey::EndTxn,
        RequestKind::TxnOffsetCommit(_) => ApiKey::TxnOffsetCommit,
        RequestKind::DescribeTransactions(_) => ApiKey::DescribeTransactions,
        RequestKind::WriteTxnMarkers(_) => ApiKey::WriteTxnMarkers,
        RequestKind::ListTransactions(_) => ApiKey::ListTransactions,
        other => {
            // The variant's name, e.g. "JoinGroup", from its Debug form: only on this error path.
            let rendered = format!("{other:?}");
            let request = rendered.split('(').next().unwrap_or("request").to_string();
            return Err(ClientError::UnsupportedRequest { request });
        }
    };
    Ok(api_key)
}

/// The broker's supported ranges, from its ApiVersions response, keyed by raw API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerVersions {
    ranges: BTreeMap<i16, VersionRange>,
}

impl BrokerVersions {
    pub fn from_response(response: &ApiVersionsResponse) -> BrokerVersions {
        let ranges = response
            .api_keys
            .iter()
            .map(|api| {
                (
                    api.api_key,
                    VersionRange {
                        min: api.min_version,
                        max: api.max_version,
                    },
                )
            })
            .collect();
        BrokerVersions { ranges }
    }

    pub fn range(&self, api_key: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&(api_key as i16)).copied()
    }

    /// The version to send `api_key` at, or why there is none.
    pub fn version_choose(&self, api_key: ApiKey) -> Result<i16, ClientError> {
        let Some(ours) = versions_ours(api_key) else {
            return Err(ClientError::UnsupportedRequest {
                request: format!("{api_key:?}"),
            });
        };
        let broker = self
            .range(api_key)
            .unwrap_or(VersionRange { min: 0, max: -1 });
        version_choose(api_key, ours, broker)
    }
}

/// The highest version in both ranges. A broker that lacks the API reports an empty range.
pub fn version_choose(
    api_key: ApiKey,
    ours: VersionRange,
    broker: VersionRange,
) -> Result<i16, ClientError> {
    let version = ours.max.min(broker.max);
    if version < ours.min || version < broker.min {
        return Err(ClientError::UnsupportedVersion {
            api_key,
            broker_min: broker.min,
            broker_max: broker.max,
            ours_min: ours.min,
            ours_max: ours.max,
        });
    }
    Ok(version)
}

/// What to do after an ApiVersions attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersionsNext {
    /// The answer lists the broker's ranges.
    Use,
    /// Ask again at this lower version.
    Retry(i16),
    /// The broker refused with this error code; give up on this broker.
    Fail(i16),
}

/// After an ApiVersions attempt at `version_sent`: use the answer, retry lower, or give up. A broker
/// that does not know `version_sent` answers UNSUPPORTED_VERSION in the v0 format, listing (at
/// least) its own ApiVersions range, so we retry at the highest version it has (Kafka's rule).
pub fn api_versions_next(version_sent: i16, response: &ApiVersionsResponse) -> ApiVersionsNext {
    if response.error_code == 0 {
        return ApiVersionsNext::Use;
    }
    if response.error_code != ResponseError::UnsupportedVersion.code() || version_sent == 0 {
        return ApiVersionsNext::Fail(response.error_code);
    }
    let advertised = response
        .api_keys
        .iter()
        .find(|api| api.api_key == ApiKey::ApiVersions as i16)
        .map_or(0, |api| api.max_version);
    ApiVersionsNext::Retry(advertised.clamp(0, version_sent - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::messages::api_versions_response::ApiVersion;

    fn broker(entries: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
        let api_keys = entries
            .iter()
            .map(|(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(*key as i16)
                    .with_min_version(*min)
                    .with_max_version(*max)
            })
            .collect();
        ApiVersionsResponse::default().with_api_keys(api_keys)
    }

    fn check(entries: &[(ApiKey, i16, i16)], api_key: ApiKey) -> String {
        match BrokerVersions::from_response(&broker(entries)).version_choose(api_key) {
            Ok(version) => format!("v{version}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let kafka_4 = [
            (ApiKey::Fetch, 4, 17),
            (ApiKey::Produce, 3, 12),
            (ApiKey::Metadata, 0, 13),
        ];
        assert_eq!(check(&kafka_4, ApiKey::Fetch), "v12");
        assert_eq!(check(&kafka_4, ApiKey::Produce), "v9");
        assert_eq!(check(&kafka_4, ApiKey::Metadata), "v12");
        let old = [(ApiKey::Fetch, 0, 6), (ApiKey::Produce, 0, 2)];
        assert_eq!(check(&old, ApiKey::Fetch), "v6");
        assert_eq!(
            check(&old, ApiKey::Produce),
            "Produce: broker supports v0..=v2, this client v3..=v9"
        );
        assert_eq!(
            check(&old, ApiKey::Metadata),
            "Metadata: broker supports v0..=v-1, this client v4..=v12"
        );
        assert_eq!(
            check(&old, ApiKey::DescribeCluster),
            "DescribeCluster is not implemented by this client"
        );
        assert_eq!(
            check(&old, ApiKey::JoinGroup),
            "JoinGroup: broker supports v0..=v-1, this client v4..=v9"
        );
    }

    #[test]
    fn requests_outside_our_set_are_refused_by_name() {
        let cluster = RequestKind::DescribeCluster(Default::default());
        let error = request_api_key(&cluster).unwrap_err();
        assert_eq!(
            error.to_string(),
            "DescribeCluster is not implemented by this client"
        );
        let fetch = RequestKind::Fetch(Default::default());
        assert_eq!(request_api_key(&fetch).unwrap(), ApiKey::Fetch);
    }

    /// An API with a range of ours must also be sendable: `request_api_key` knows its body.
    #[test]
    fn the_admin_requests_are_sendable() {
        let bodies = [
            RequestKind::AlterConfigs(Default::default()),
            RequestKind::IncrementalAlterConfigs(Default::default()),
            RequestKind::DeleteRecords(Default::default()),
            RequestKind::OffsetDelete(Default::default()),
        ];
        for body in bodies {
            let api_key = request_api_key(&body).expect("sendable");
            assert!(versions_ours(api_key).is_some(), "{api_key:?}");
        }
    }

    #[test]
    fn a_broker_whose_minimum_is_above_our_maximum_is_refused() {
        let future = [(ApiKey::Fetch, 13, 20)];
        assert!(matches!(
            BrokerVersions::from_response(&broker(&future)).version_choose(ApiKey::Fetch),
            Err(ClientError::UnsupportedVersion {
                broker_min: 13,
                ours_max: 12,
                ..
            })
        ));
    }

    #[test]
    fn our_ranges_lie_inside_what_the_protocol_crate_can_encode() {
        for api_key in ApiKey::iter() {
            if let Some(ours) = versions_ours(api_key) {
                let crate_range = api_key.valid_versions();
                assert!(ours.min <= ours.max, "{api_key:?}");
                assert!(crate_range.min <= ours.min, "{api_key:?}");
                assert!(ours.max <= crate_range.max, "{api_key:?}");
            }
        }
    }

    #[test]
    fn unsupported_api_versions_falls_back_to_the_advertised_version() {
        let ok = broker(&[(ApiKey::ApiVersions, 0, 3)]);
        assert_eq!(api_versions_next(3, &ok), ApiVersionsNext::Use);
        let mut old = broker(&[(ApiKey::ApiVersions, 0, 2)]);
        old.error_code = ResponseError::UnsupportedVersion.code();
        assert_eq!(api_versions_next(3, &old), ApiVersionsNext::Retry(2));
        let mut bare = ApiVersionsResponse::default();
        bare.error_code = ResponseError::UnsupportedVersion.code();
        assert_eq!(api_versions_next(3, &bare), ApiVersionsNext::Retry(0));
        assert_eq!(
            api_versions_next(0, &bare),
            ApiVersionsNext::Fail(35),
            "v0 is the floor"
        );
        let mut newer = broker(&[(ApiKey::ApiVersions, 0, 9)]);
        newer.error_code = ResponseError::UnsupportedVersion.code();
        assert_eq!(
            api_versions_next(3, &newer),
            ApiVersionsNext::Retry(2),
            "always lower"
        );
        let mut broken = ApiVersionsResponse::default();
        broken.error_code = ResponseError::UnknownServerError.code();
        assert_eq!(api_versions_next(3, &broken), ApiVersionsNext::Fail(-1));
    }
}
