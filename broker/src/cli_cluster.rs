//! `gregor cluster describe`: the brokers (fenced ones marked), the controller, the metadata
//! quorum (its leader, the Raft term, the high watermark, each voter's log end where the leader
//! knows it), and the partitions that are offline (no leader) or under-replicated (ISR smaller
//! than the replicas). Brokers and controller come from DescribeCluster v2 with fenced brokers
//! included, the quorum from DescribeQuorum v2 (the `client` crate speaks neither, so they are
//! raw requests here); partitions from Metadata.

use crate::cli::{config, text, Bootstrap};
use bytes::BytesMut;
use client::Admin;
use kafka_protocol::messages::{
    describe_quorum_request, ApiKey, DescribeClusterRequest, DescribeClusterResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, RequestHeader, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use std::time::Duration;

/// DescribeCluster v2 adds `include_fenced_brokers` and `is_fenced`.
const DESCRIBE_CLUSTER_VERSION: i16 = 2;
/// DescribeQuorum v2 adds error messages and the voters' controller listeners.
const DESCRIBE_QUORUM_VERSION: i16 = 2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A DescribeCluster or DescribeQuorum response lists brokers or voters only: far below this.
const RESPONSE_BYTES_MAX: u32 = 16 << 20;

pub async fn describe(bootstrap: Bootstrap) -> Result<(), String> {
    let cluster = describe_cluster(&bootstrap.bootstrap).await?;
    if cluster.error_code != 0 {
        let message = cluster
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_string();
        return Err(format!(
            "DescribeCluster failed: error {} {message}",
            cluster.error_code
        ));
    }
    let controller = match cluster.controller_id.0 {
        -1 => "none (election in progress)".to_string(),
        id => id.to_string(),
    };
    println!(
        "cluster {} controller {controller}",
        cluster.cluster_id.as_str()
    );
    quorum_print(&bootstrap.bootstrap).await?;
    println!("brokers:");
    for broker in &cluster.brokers {
        let rack = broker
            .rack
            .as_ref()
            .map_or(String::new(), |rack| format!(" rack {}", rack.as_str()));
        let fenced = if broker.is_fenced { " FENCED" } else { "" };
        println!(
            "  {} {}:{}{rack}{fenced}",
            broker.broker_id.0,
            broker.host.as_str(),
            broker.port
        );
    }
    let metadata = Admin::new(config(&bootstrap))
        .describe_cluster()
        .await
        .map_err(text)?;
    let (mut offline, mut under) = (Vec::new(), Vec::new());
    for topic in metadata.topics.values().filter(|topic| !topic.is_internal) {
        for partition in &topic.partitions {
            let name = format!("{}-{}", topic.name, partition.partition);
            if partition.leader.is_none() {
                offline.push(format!("{name} replicas {:?}", partition.replicas));
            } else if partition.isr.len() < partition.replicas.len() {
                under.push(format!(
                    "{name} isr {:?} of replicas {:?}",
                    partition.isr, partition.replicas
                ));
            }
        }
    }
    println!("offline partitions (no leader): {}", offline.len());
    offline.iter().for_each(|line| println!("  {line}"));
    println!("under-replicated partitions: {}", under.len());
    under.iter().for_each(|line| println!("  {line}"));
    Ok(())
}

async fn quorum_print(address: &str) -> Result<(), String> {
    let quorum = describe_quorum(address).await?;
    let partition = quorum
        .topics
        .first()
        .and_then(|topic| topic.partitions.first())
        .ok_or("DescribeQuorum answered no partition")?;
    if partition.error_code != 0 {
        let message = partition.error_message.as_deref().unwrap_or_default();
        println!("quorum: none ({message})");
        return Ok(());
    }
    let leader = match partition.leader_id.0 {
        -1 => "none (election in progress)".to_string(),
        id => id.to_string(),
    };
    println!(
        "quorum {}-0: leader {leader} term {} high watermark {}",
        broker::handlers::describe_quorum::METADATA_TOPIC,
        partition.leader_epoch,
        partition.high_watermark
    );
    for voter in &partition.current_voters {
        let end = match voter.log_end_offset {
            -1 => "unknown here".to_string(),
            end => end.to_string(),
        };
        println!("  voter {} log end {end}", voter.replica_id.0);
    }
    Ok(())
}

async fn describe_quorum(address: &str) -> Result<DescribeQuorumResponse, String> {
    let topic = describe_quorum_request::TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(
            broker::handlers::describe_quorum::METADATA_TOPIC,
        )))
        .with_partitions(vec![describe_quorum_request::PartitionData::default()]);
    let request =
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![topic]));
    match exchange(
        address,
        ApiKey::DescribeQuorum,
        DESCRIBE_QUORUM_VERSION,
        request,
    )
    .await?
    {
        ResponseKind::DescribeQuorum(response) => Ok(response),
        other => Err(format!("unexpected response {other:?}")),
    }
}

async fn describe_cluster(address: &str) -> Result<DescribeClusterResponse, String> {
    let request = DescribeClusterRequest::default()
        .with_endpoint_type(1)
        .with_include_fenced_brokers(true);
    let request = RequestKind::DescribeCluster(request);
    match exchange(
        address,
        ApiKey::DescribeCluster,
        DESCRIBE_CLUSTER_VERSION,
        request,
    )
    .await?
    {
        ResponseKind::DescribeCluster(response) => Ok(response),
        other => Err(format!("unexpected response {other:?}")),
    }
}

/// One raw request on a fresh connection, and its response.
async fn exchange(
    address: &str,
    api_key: ApiKey,
    version: i16,
    request: RequestKind,
) -> Result<ResponseKind, String> {
    let exchange = async {
        let mut stream = runtime::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("gregor-cli")));
        let mut buffer = BytesMut::new();
        wire::codec::request_encode(&mut buffer, &header, &request)
            .map_err(|error| error.to_string())?;
        let io = |error: std::io::Error| format!("talking to {address}: {error}");
        stream.write_all(&buffer).await.map_err(io)?;
        buffer.clear();
        let frame = loop {
            let split = wire::frame::frame_split(&mut buffer, RESPONSE_BYTES_MAX)
                .map_err(|error| error.to_string())?;
            if let Some(frame) = split {
                break frame;
            }
            if stream.read_buf(&mut buffer).await.map_err(io)? == 0 {
                return Err(format!(
                    "{address} closed the connection (is it a gregor broker?)"
                ));
            }
        };
        let (_, response) = wire::codec::response_decode(frame, api_key, version)
            .map_err(|error| error.to_string())?;
        Ok(response)
    };
    runtime::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{address} did not answer {api_key:?} in time"))?
}
