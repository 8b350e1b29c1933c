//! Every version this broker advertises, of every API, answers a typical request with a response
//! that encodes at that version. The protocol crate refuses to encode a field set to a non-default
//! value at a version that lacks it, so this catches version-gated fields set unconditionally.

mod common;

use broker::handlers::{self, api_versions::SUPPORTED, Reply};
use broker::{Broker, BrokerConfig};
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::sync::Arc;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::codec::{request_decode, request_encode, response_encode};
use wire::frame::frame_split;
use wire::{ApiKey, RequestKind, ResponseKind};

async fn broker() -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    // A lone member's JoinGroup then completes at once instead of after Kafka's 3 s delay.
    config.groups.initial_rebalance_delay = std::time::Duration::ZERO;
    common::broker_open(config, runtime::MemDisk::new(), 7).await
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

/// A member of group "synced" (joined at setup, leader, not yet synced), for the group APIs.
struct Member {
    member_id: StrBytes,
    generation_id: i32,
}

fn sample_requests(api_key: ApiKey, version: i16, member: &Member) -> Vec<RequestKind> {
    if let Some(requests) = group_sample_requests(api_key, version, member) {
        return requests;
    }
    if let Some(requests) = admin_sample_requests(api_key) {
        return requests;
    }
    if let Some(requests) = txn_sample_requests(api_key, version) {
        return requests;
    }
    let records = batch_encode(
        &[RecordSpec {
            value: Some("v".into()),
            timestamp: 1_000,
            ..Default::default()
        }],
        Compression::None,
    );
    match api_key {
        ApiKey::Produce => vec![RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(name("t"))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records.into_bytes())),
                        produce_request::PartitionProduceData::default().with_index(9),
                    ])]),
        )],
        ApiKey::Fetch => vec![RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20),
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(99)
                            .with_partition_max_bytes(1),
                    ])]),
        )],
        ApiKey::ListOffsets => vec![RequestKind::ListOffsets(
            ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(
                        [-2, -1, 0, 500]
                            .map(|timestamp| {
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_timestamp(timestamp)
                            })
                            .to_vec(),
                    ),
            ]),
        )],
        ApiKey::OffsetForLeaderEpoch => {
            let asked = |partition, current, epoch| {
                offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)
            };
            vec![RequestKind::OffsetForLeaderEpoch(
                OffsetForLeaderEpochRequest::default().with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(name("t"))
                        .with_partitions(vec![
                            asked(0, -1, 0),
                            asked(0, 0, -1),
                            asked(0, 5, 0),
                            asked(9, -1, 0),
                        ]),
                ]),
            )]
        }
        ApiKey::Metadata => {
            let some =
                vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("t")))];
            let unknown = vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("nope")))
            ];
            let mut requests = vec![
                RequestKind::Metadata(MetadataRequest::default().with_topics(Some(some))),
                RequestKind::Metadata(MetadataRequest::default().with_topics(Some(unknown))),
            ];
            if version >= 1 {
                requests.push(RequestKind::Metadata(
                    MetadataRequest::default().with_topics(None),
                ));
            }
            requests
        }
        ApiKey::ApiVersions => vec![RequestKind::ApiVersions(ApiVersionsRequest::default())],
        ApiKey::CreateTopics => vec![RequestKind::CreateTopics(
            CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(name(&format!("c{version}")))
                    .with_num_partitions(2)
                    .with_replication_factor(1),
                create_topics_request::CreatableTopic::default()
                    .with_name(name("t"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
        )],
        ApiKey::DeleteTopics => {
            let topic = format!("c{}", version + 1); // Created by CreateTopics above.
            let request = if version >= 6 {
                DeleteTopicsRequest::default()
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(name(&topic)))])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name(&topic), name("nope")])
            };
            vec![RequestKind::DeleteTopics(request)]
        }
        ApiKey::CreatePartitions => vec![RequestKind::CreatePartitions(
            CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name("grow"))
                    .with_count(2 + version as i32),
            ]),
        )],
        ApiKey::DescribeConfigs => vec![RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t")),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("1")),
            ]),
        )],
        ApiKey::DescribeCluster => {
            let request = DescribeClusterRequest::default();
            let request = match version {
                0 => request,
                1 => request.with_endpoint_type(1),
                _ => request
                    .with_endpoint_type(1)
                    .with_include_fenced_brokers(true),
            };
            // Controller endpoints are refused, with an error the version can carry.
            let controllers = DescribeClusterRequest::default().with_endpoint_type(2);
            match version {
                0 => vec![RequestKind::DescribeCluster(request)],
                _ => vec![
                    RequestKind::DescribeCluster(request),
                    RequestKind::DescribeCluster(controllers),
                ],
            }
        }
        ApiKey::DescribeQuorum => {
            let partition = |index| {
                describe_quorum_request::PartitionData::default().with_partition_index(index)
            };
            let topic = describe_quorum_request::TopicData::default()
                .with_topic_name(name("__cluster_metadata"))
                .with_partitions(vec![partition(0), partition(1)]);
            vec![RequestKind::DescribeQuorum(
                DescribeQuorumRequest::default().with_topics(vec![topic]),
            )]
        }
        other => panic!("no sample request for {other:?}"),
    }
}

/// Config changes, record deletion and offset deletion: one success and one refusal each.
fn admin_sample_requests(api_key: ApiKey) -> Option<Vec<RequestKind>> {
    let text = StrBytes::from_static_str;
    let requests = match api_key {
        ApiKey::AlterConfigs => vec![RequestKind::AlterConfigs(
            AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("t"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text("60000")))]),
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(text("1")),
            ]),
        )],
        ApiKey::IncrementalAlterConfigs => vec![RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(text("cleanup.policy"))
                            .with_config_operation(2)
                            .with_value(Some(text("compact"))),
                    ]),
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("nope")),
            ]),
        )],
        ApiKey::DeleteRecords => vec![RequestKind::DeleteRecords(
            DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(-1),
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(9)
                            .with_offset(0),
                    ]),
            ]),
        )],
        ApiKey::OffsetDelete => vec![
            RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(group("nope"))),
            RequestKind::OffsetDelete(
                OffsetDeleteRequest::default()
                    .with_group_id(group("synced"))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default(),
                            ]),
                    ]),
            ),
        ],
        ApiKey::InitProducerId => vec![
            RequestKind::InitProducerId(
                InitProducerIdRequest::default().with_transactional_id(None),
            ),
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
            ),
        ],
        ApiKey::WriteTxnMarkers => vec![RequestKind::WriteTxnMarkers(
            WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(5))
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(name("t"))
                            .with_partition_indexes(vec![0, 9]),
                    ]),
            ]),
        )],
        _ => return None,
    };
    Some(requests)
}

/// The transaction APIs: requests the coordinator refuses (unknown producer, unknown topic) and
/// ones it answers (describe, list), which together set every response field.
fn txn_sample_requests(api_key: ApiKey, version: i16) -> Option<Vec<RequestKind>> {
    let id = || TransactionalId(StrBytes::from_static_str("tx"));
    let topics = || {
        vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![0]),
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name("nope"))
                .with_partitions(vec![1]),
        ]
    };
    let requests = match api_key {
        ApiKey::AddPartitionsToTxn if version >= 4 => {
            let transaction = |verify_only| {
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(id())
                    .with_producer_id(ProducerId(5))
                    .with_verify_only(verify_only)
                    .with_topics(topics())
            };
            vec![RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default()
                    .with_transactions(vec![transaction(false), transaction(true)]),
            )]
        }
        ApiKey::AddPartitionsToTxn => vec![RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id())
                .with_v3_and_below_producer_id(ProducerId(5))
                .with_v3_and_below_topics(topics()),
        )],
        ApiKey::AddOffsetsToTxn => vec![RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(id())
                .with_group_id(group("g")),
        )],
        ApiKey::EndTxn => vec![RequestKind::EndTxn(
            EndTxnRequest::default().with_transactional_id(id()),
        )],
        ApiKey::TxnOffsetCommit => vec![RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(id())
                .with_group_id(group("g"))
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(name("t"))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                        ]),
                ]),
        )],
        ApiKey::DescribeTransactions => vec![RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default().with_transactional_ids(vec![
                id(),
                TransactionalId(StrBytes::from_static_str("nope")),
            ]),
        )],
        ApiKey::ListTransactions => vec![
            RequestKind::ListTransactions(
                ListTransactionsRequest::default()
                    .with_state_filters(vec![StrBytes::from_static_str("Bogus")]),
            ),
            RequestKind::ListTransactions(ListTransactionsRequest::default()),
        ],
        _ => return None,
    };
    Some(requests)
}

fn group(text: &str) -> GroupId {
    GroupId(StrBytes::from_string(text.to_string()))
}

fn join_request(group_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.to_string())))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(bytes::Bytes::from_static(b"subscription"))])
}

/// Success and error paths of every group API; `None` for other APIs.
fn group_sample_requests(
    api_key: ApiKey,
    version: i16,
    member: &Member,
) -> Option<Vec<RequestKind>> {
    let instance = |id: &str| (version >= 3).then(|| StrBytes::from_string(id.to_string()));
    let requests = match api_key {
        ApiKey::FindCoordinator => {
            let request = if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
            } else {
                FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
            };
            let mut requests = vec![RequestKind::FindCoordinator(request.clone())];
            if version >= 1 {
                requests.push(RequestKind::FindCoordinator(request.with_key_type(1)));
            }
            requests
        }
        ApiKey::JoinGroup => {
            let dynamic = join_request(&format!("j{version}"), None);
            let mut requests = vec![
                RequestKind::JoinGroup(dynamic.clone()),
                RequestKind::JoinGroup(dynamic.with_session_timeout_ms(1)),
            ];
            if version >= 5 {
                requests.push(RequestKind::JoinGroup(join_request(
                    &format!("s{version}"),
                    Some("instance"),
                )));
            }
            requests
        }
        ApiKey::SyncGroup => {
            let sync = SyncGroupRequest::default()
                .with_group_id(group("synced"))
                .with_generation_id(member.generation_id)
                .with_member_id(member.member_id.clone())
                .with_group_instance_id(instance("synced-instance"))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(member.member_id.clone())
                        .with_assignment(bytes::Bytes::from_static(b"assignment")),
                ]);
            vec![
                RequestKind::SyncGroup(sync.clone()),
                RequestKind::SyncGroup(sync.with_group_id(group("nope"))),
            ]
        }
        ApiKey::Heartbeat => {
            let heartbeat = HeartbeatRequest::default()
                .with_group_id(group("synced"))
                .with_generation_id(member.generation_id)
                .with_member_id(member.member_id.clone())
                .with_group_instance_id(instance("synced-instance"));
            vec![
                RequestKind::Heartbeat(heartbeat.clone()),
                RequestKind::Heartbeat(heartbeat.with_generation_id(99)),
            ]
        }
        ApiKey::LeaveGroup => {
            let request = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group("synced"))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_static_str("stranger")),
                        leave_group_request::MemberIdentity::default()
                            .with_group_instance_id(Some(StrBytes::from_static_str("nobody"))),
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group("synced"))
                    .with_member_id(StrBytes::from_static_str("stranger"))
            };
            vec![RequestKind::LeaveGroup(request)]
        }
        ApiKey::OffsetCommit => {
            let topics = vec![offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(1),
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(7),
                ])];
            let member_commit = OffsetCommitRequest::default()
                .with_group_id(group("synced"))
                .with_generation_id_or_member_epoch(member.generation_id)
                .with_member_id(member.member_id.clone())
                .with_topics(topics.clone());
            let simple = OffsetCommitRequest::default()
                .with_group_id(group("simple"))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(topics);
            vec![
                RequestKind::OffsetCommit(member_commit),
                RequestKind::OffsetCommit(simple),
            ]
        }
        ApiKey::OffsetFetch => {
            if version >= 8 {
                let groups = vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(group("simple"))
                        .with_topics(None),
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(group("nope"))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(name("t"))
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                ];
                vec![RequestKind::OffsetFetch(
                    OffsetFetchRequest::default().with_groups(groups),
                )]
            } else {
                let topics = vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("t"))
                    .with_partition_indexes(vec![0, 1])];
                let some = OffsetFetchRequest::default()
                    .with_group_id(group("simple"))
                    .with_topics(Some(topics));
                let mut requests = vec![RequestKind::OffsetFetch(some.clone())];
                if version >= 2 {
                    requests.push(RequestKind::OffsetFetch(some.with_topics(None)));
                }
                requests
            }
        }
        ApiKey::DescribeGroups => vec![RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![
                group("synced"),
                group("nope"),
                group(""),
            ]),
        )],
        ApiKey::ListGroups => vec![RequestKind::ListGroups(ListGroupsRequest::default())],
        ApiKey::DeleteGroups => vec![RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![
                group("simple"),
                group("synced"),
                group("nope"),
            ]),
        )],
        ApiKey::InitProducerId => vec![
            RequestKind::InitProducerId(
                InitProducerIdRequest::default().with_transactional_id(None),
            ),
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
            ),
        ],
        _ => return None,
    };
    Some(requests)
}

async fn answer(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    request: RequestKind,
) -> Option<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(3);
    let mut buffer = BytesMut::new();
    request_encode(&mut buffer, &header, &request)
        .unwrap_or_else(|error| panic!("request {api_key:?} v{version}: {error}"));
    let frame = frame_split(&mut buffer, 1 << 24).unwrap().unwrap();
    let decoded = request_decode(frame).unwrap();
    let response = match handlers::handle(broker, decoded) {
        Reply::None => return None,
        Reply::Now(response) => *response,
        Reply::Later(future) => future.await,
    };
    let mut out = BytesMut::new();
    response_encode(&mut out, api_key, version, 3, &response)
        .unwrap_or_else(|error| panic!("response {api_key:?} v{version}: {error}"));
    Some(out)
}

#[tokio::test]
async fn every_advertised_version_answers_with_an_encodable_response() {
    let broker = broker().await;
    common::topic_create(&broker, "t", 1, &[]).await;
    common::topic_create(&broker, "grow", 1, &[]).await;
    let member = member_join(&broker).await;
    for (api_key, min, max) in SUPPORTED {
        let codec_min = api_key.valid_versions().min;
        for version in (*min).max(codec_min)..=*max {
            for request in sample_requests(*api_key, version, &member) {
                answer(&broker, *api_key, version, request).await;
            }
        }
    }
}

/// Joins group "synced" as a static member (no MEMBER_ID_REQUIRED round trip).
async fn member_join(broker: &Arc<Broker>) -> Member {
    let request = join_request("synced", Some("synced-instance"));
    let out = answer(
        broker,
        ApiKey::JoinGroup,
        5,
        RequestKind::JoinGroup(request),
    )
    .await
    .expect("JoinGroup answers");
    let mut frame = out.freeze();
    let _length = bytes::Buf::get_i32(&mut frame);
    let (_, response) = wire::codec::response_decode(frame, ApiKey::JoinGroup, 5).expect("decodes");
    let ResponseKind::JoinGroup(joined) = response else {
        panic!("a JoinGroup response");
    };
    assert_eq!(joined.error_code, 0, "{joined:?}");
    Member {
        member_id: joined.member_id,
        generation_id: joined.generation_id,
    }
}
