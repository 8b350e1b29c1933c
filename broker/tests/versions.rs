//! Every version this broker advertises, of every API, answers a typical request with a response
//! that encodes at that version. The protocol crate refuses to encode a field set to a non-default
//! value at a version that lacks it, so this catches version-gated fields set unconditionally.

use broker::handlers::{self, api_versions::SUPPORTED, Reply};
use broker::{Broker, BrokerConfig, NodeContext};
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::sync::Arc;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::codec::{request_decode, request_encode, response_encode};
use wire::frame::frame_split;
use wire::{ApiKey, RequestKind};

fn broker() -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 7,
    };
    Broker::open(config, context).expect("opens an empty data dir")
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn sample_requests(api_key: ApiKey, version: i16) -> Vec<RequestKind> {
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
        other => panic!("no sample request for {other:?}"),
    }
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
    let broker = broker();
    let create = |name: &str, partitions| {
        let topic_id = broker.topic_id_new();
        broker
            .topics()
            .create(name, partitions, &Default::default(), topic_id, 0)
            .unwrap();
    };
    create("t", 1);
    create("grow", 1);
    for (api_key, min, max) in SUPPORTED {
        let codec_min = api_key.valid_versions().min;
        for version in (*min).max(codec_min)..=*max {
            for request in sample_requests(*api_key, version) {
                answer(&broker, *api_key, version, request).await;
            }
        }
    }
}
