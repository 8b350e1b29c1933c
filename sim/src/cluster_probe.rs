//! DescribeCluster v2 as one raw request: the `client` crate does not speak it, and the cluster
//! world asks every broker after heal which brokers it lists and which it shows fenced
//! (`include_fenced_brokers`), as `gregor cluster describe` does.

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// v2 adds `include_fenced_brokers` and `is_fenced`.
const VERSION: i16 = 2;
/// A response lists brokers only: far below this.
const RESPONSE_BYTES_MAX: u32 = 1 << 20;
/// Kafka's `ENDPOINT_TYPE_BROKER`.
const ENDPOINT_BROKERS: i8 = 1;

/// The brokers `address` lists, fenced ones included: id -> fenced.
pub async fn describe_cluster(
    address: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, bool>, String> {
    runtime::time::timeout(timeout, exchange(address))
        .await
        .map_err(|_| format!("{address} did not answer DescribeCluster in time"))?
}

async fn exchange(address: &str) -> Result<BTreeMap<i32, bool>, String> {
    let io = |error: std::io::Error| format!("talking to {address}: {error}");
    let mut stream = runtime::net::TcpStream::connect(address)
        .await
        .map_err(io)?;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::DescribeCluster as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("gregor-sim")));
    let request = DescribeClusterRequest::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_include_fenced_brokers(true);
    let mut buffer = BytesMut::new();
    wire::codec::request_encode(&mut buffer, &header, &RequestKind::DescribeCluster(request))
        .map_err(|error| error.to_string())?;
    stream.write_all(&buffer).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    buffer.clear();
    let frame = loop {
        let split = wire::frame::frame_split(&mut buffer, RESPONSE_BYTES_MAX)
            .map_err(|error| error.to_string())?;
        if let Some(frame) = split {
            break frame;
        }
        if stream.read_buf(&mut buffer).await.map_err(io)? == 0 {
            return Err(format!("{address} closed the connection"));
        }
    };
    let (_, response) = wire::codec::response_decode(frame, ApiKey::DescribeCluster, VERSION)
        .map_err(|error| error.to_string())?;
    let ResponseKind::DescribeCluster(response) = response else {
        return Err(format!(
            "{address} answered DescribeCluster with another API"
        ));
    };
    if response.error_code != 0 {
        return Err(format!(
            "{address}: DescribeCluster error {}",
            response.error_code
        ));
    }
    Ok(response
        .brokers
        .iter()
        .map(|broker| (broker.broker_id.0, broker.is_fenced))
        .collect())
}
