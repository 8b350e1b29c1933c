//! `gregor cluster describe`: the brokers (fenced ones marked), the controller, and the
//! partitions that are offline (no leader) or under-replicated (ISR smaller than the
//! replicas). Brokers and controller come from DescribeCluster v2 with fenced brokers included
//! (the `client` crate does not speak it, so it is one raw request here); partitions from
//! Metadata. The Raft term is not carried by any Kafka API, so it is not shown.

use crate::cli::{config, text, Bootstrap};
use bytes::BytesMut;
use client::Admin;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, RequestHeader, RequestKind,
    ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use std::time::Duration;

/// DescribeCluster v2 adds `include_fenced_brokers` and `is_fenced`.
const DESCRIBE_CLUSTER_VERSION: i16 = 2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A DescribeCluster response lists brokers only: far below this.
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

async fn describe_cluster(address: &str) -> Result<DescribeClusterResponse, String> {
    let exchange = async {
        let mut stream = runtime::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::DescribeCluster as i16)
            .with_request_api_version(DESCRIBE_CLUSTER_VERSION)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("gregor-cli")));
        let request = DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true);
        let mut buffer = BytesMut::new();
        wire::codec::request_encode(&mut buffer, &header, &RequestKind::DescribeCluster(request))
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
        let (_, response) =
            wire::codec::response_decode(frame, ApiKey::DescribeCluster, DESCRIBE_CLUSTER_VERSION)
                .map_err(|error| error.to_string())?;
        match response {
            ResponseKind::DescribeCluster(response) => Ok(response),
            other => Err(format!("unexpected response {other:?}")),
        }
    };
    runtime::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{address} did not answer DescribeCluster in time"))?
}
