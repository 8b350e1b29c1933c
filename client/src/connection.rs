//! One TCP connection to one broker: framing, correlation ids, version negotiation, timeouts.
//!
//! Like mini-redis's `Connection`, this owns only the socket and its two reusable buffers. On
//! connect it sends ApiVersions and from then on sends each request at the highest version both
//! sides implement (`versions`). Every wait is bounded by a timeout because a partitioned link in
//! madsim stalls instead of failing. Every frame is flushed because madsim delivers bytes only on
//! flush.
//!
//! **Invariant:** a connection whose request failed, timed out or was cancelled mid-flight is
//! `broken` and must be dropped: the next bytes on the stream may answer a request nobody awaits.
//! `broken` is set before any await on the socket and cleared only after a clean exchange, so a
//! cancelled future leaves it set without any extra bookkeeping.

use crate::config::WRITE_BUFFER_RETAINED_BYTES_MAX;
use crate::config::{ClientConfig, IN_FLIGHT_REQUESTS_MAX, READ_CHUNK_BYTES, RESPONSE_BYTES_MAX};
use crate::error::ClientError;
use crate::versions::API_VERSIONS_VERSION_FIRST;
use crate::versions::{api_versions_next, request_api_key, ApiVersionsNext, BrokerVersions};
use bytes::{Bytes, BytesMut};
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use runtime::net::TcpStream;
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;
use wire::codec::{request_encode, response_decode};
use wire::frame::frame_split;
use wire::protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use wire::protocol::messages::{RequestKind, ResponseKind};
use wire::protocol::protocol::StrBytes;

/// A request sent whose response has not been read yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
}

pub struct Connection {
    stream: TcpStream,
    address: String,
    client_id: StrBytes,
    request_timeout: Duration,
    versions: BrokerVersions,
    correlation_id_next: i32,
    buffer_write: BytesMut,
    buffer_read: BytesMut,
    in_flight: VecDeque<InFlight>,
    broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connection")
            .field("address", &self.address)
            .field("in_flight", &self.in_flight.len())
            .field("broken", &self.broken)
            .finish()
    }
}

impl Connection {
    /// Connects to `address` (`host:port`) and negotiates API versions, within
    /// `config.connect_timeout`.
    #[tracing::instrument(skip_all, fields(address = %address))]
    pub async fn connect(address: &str, config: &ClientConfig) -> Result<Connection, ClientError> {
        let what = || "connect and ApiVersions".to_string();
        deadline(address, what, config.connect_timeout, async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(|error| ClientError::io(address, &error))?;
            // Requests are small and latency-bound; Nagle would hold them back a round trip.
            stream
                .set_nodelay(true)
                .map_err(|error| ClientError::io(address, &error))?;
            let mut connection = Connection {
                stream,
                address: address.to_string(),
                client_id: StrBytes::from_string(config.client_id.clone()),
                request_timeout: config.request_timeout,
                versions: BrokerVersions::from_response(&ApiVersionsResponse::default()),
                correlation_id_next: 0,
                buffer_write: BytesMut::new(),
                buffer_read: BytesMut::with_capacity(READ_CHUNK_BYTES),
                in_flight: VecDeque::with_capacity(IN_FLIGHT_REQUESTS_MAX),
                broken: false,
            };
            connection.versions_negotiate().await?;
            tracing::debug!("connected");
            Ok(connection)
        })
        .await
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The broker's advertised versions, as negotiated on connect.
    pub fn versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// True once an exchange failed or was abandoned: drop the connection and open a new one.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `body` and waits for its response, within the request timeout.
    ///
    /// Must not be mixed with pipelined requests still awaiting `response_receive`.
    pub async fn request(&mut self, body: RequestKind) -> Result<ResponseKind, ClientError> {
        assert!(
            self.in_flight.is_empty(),
            "request() while pipelined requests are in flight"
        );
        let api_key = request_api_key(&body)?;
        let what = || format!("{api_key:?} request");
        let address = self.address.clone();
        deadline(&address, what, self.request_timeout, async {
            self.request_send(body).await?;
            self.response_receive().await
        })
        .await
    }

    /// Sends a request whose response is read later by `response_receive`, for pipelining. At most
    /// `IN_FLIGHT_REQUESTS_MAX` may be outstanding; the caller reads responses in send order.
    pub async fn request_send(&mut self, body: RequestKind) -> Result<(), ClientError> {
        assert!(
            self.in_flight.len() < IN_FLIGHT_REQUESTS_MAX,
            "in-flight requests over limit"
        );
        let api_key = request_api_key(&body)?;
        let api_version = self.versions.version_choose(api_key)?;
        let correlation_id = self.frame_write(api_key, api_version, &body)?;
        self.in_flight.push_back(InFlight {
            correlation_id,
            api_key,
            api_version,
        });
        self.flush().await
    }

    /// Reads the response to the oldest pipelined request, within the request timeout.
    pub async fn response_receive(&mut self) -> Result<ResponseKind, ClientError> {
        let Some(expected) = self.in_flight.front().copied() else {
            panic!("response_receive() with no request in flight");
        };
        let what = || format!("{:?} response", expected.api_key);
        let address = self.address.clone();
        deadline(&address, what, self.request_timeout, async {
            self.broken = true;
            let frame = self.frame_read().await?;
            let response = self.response_parse(frame, expected)?;
            self.in_flight.pop_front();
            self.broken = false;
            Ok(response)
        })
        .await
    }

    /// Sends a request the broker will not answer: a Produce with acks=0.
    pub async fn send_no_response(&mut self, body: RequestKind) -> Result<(), ClientError> {
        let api_key = request_api_key(&body)?;
        let api_version = self.versions.version_choose(api_key)?;
        let what = || format!("{api_key:?} send");
        let address = self.address.clone();
        deadline(&address, what, self.request_timeout, async {
            self.frame_write(api_key, api_version, &body)?;
            self.flush().await
        })
        .await
    }

    /// ApiVersions at v3, falling back to what the broker advertises if it answers
    /// UNSUPPORTED_VERSION. Bounded: each retry is at a strictly lower version.
    async fn versions_negotiate(&mut self) -> Result<(), ClientError> {
        let mut version = API_VERSIONS_VERSION_FIRST;
        loop {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("gregor-client"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let correlation_id = self.frame_write(
                ApiKey::ApiVersions,
                version,
                &RequestKind::ApiVersions(request),
            )?;
            self.flush().await?;
            self.broken = true;
            let frame = self.frame_read().await?;
            let response = api_versions_decode(&self.address, frame, version, correlation_id)?;
            self.broken = false;
            match api_versions_next(version, &response) {
                ApiVersionsNext::Use => {
                    self.versions = BrokerVersions::from_response(&response);
                    return Ok(());
                }
                ApiVersionsNext::Retry(lower) => {
                    assert!(lower < version);
                    version = lower;
                }
                ApiVersionsNext::Fail(code) => {
                    return ClientError::from_code(code, || "ApiVersions".to_string());
                }
            }
        }
    }

    /// Encodes one request frame into the write buffer; returns its correlation id.
    fn frame_write(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: &RequestKind,
    ) -> Result<i32, ClientError> {
        let correlation_id = self.correlation_id_next;
        // Wrapping is fine: ids only need to differ among the few requests in flight.
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        request_encode(&mut self.buffer_write, &header, body)?;
        Ok(correlation_id)
    }

    /// Writes and flushes the write buffer. The flush is what delivers the bytes under madsim.
    async fn flush(&mut self) -> Result<(), ClientError> {
        self.broken = true;
        let result = async {
            self.stream.write_all(&self.buffer_write).await?;
            self.stream.flush().await
        }
        .await;
        result.map_err(|error| ClientError::io(&self.address, &error))?;
        self.buffer_write.clear();
        if self.buffer_write.capacity() > WRITE_BUFFER_RETAINED_BYTES_MAX {
            self.buffer_write = BytesMut::new();
        }
        self.broken = false;
        Ok(())
    }

    /// Reads until one whole frame is buffered and returns it (without its length prefix).
    async fn frame_read(&mut self) -> Result<Bytes, ClientError> {
        loop {
            let split = frame_split(&mut self.buffer_read, RESPONSE_BYTES_MAX);
            let frame = split.map_err(|error| ClientError::Frame {
                address: self.address.clone(),
                reason: error.to_string(),
            })?;
            if let Some(frame) = frame {
                return Ok(frame);
            }
            self.buffer_read.reserve(READ_CHUNK_BYTES);
            let read = self.stream.read_buf(&mut self.buffer_read).await;
            match read {
                Ok(0) => {
                    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Err(ClientError::io(&self.address, &eof));
                }
                Ok(_) => {}
                Err(error) => return Err(ClientError::io(&self.address, &error)),
            }
        }
    }

    fn response_parse(
        &self,
        frame: Bytes,
        expected: InFlight,
    ) -> Result<ResponseKind, ClientError> {
        let decoded = response_decode(frame, expected.api_key, expected.api_version);
        let (correlation_id, body) = decoded.map_err(|source| ClientError::Decode {
            address: self.address.clone(),
            source,
        })?;
        if correlation_id != expected.correlation_id {
            let reason = format!(
                "{:?} response has correlation id {correlation_id}, expected {}",
                expected.api_key, expected.correlation_id
            );
            return Err(ClientError::protocol(&self.address, reason));
        }
        Ok(body)
    }
}

/// Decodes an ApiVersions response sent at `version`. A broker that refuses `version` answers in
/// the v0 format with UNSUPPORTED_VERSION (KIP-511), so the error code is read first, from the
/// bytes after the v0 header's correlation id, and the body decoded at v0 if it says so.
fn api_versions_decode(
    address: &str,
    frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<ApiVersionsResponse, ClientError> {
    let error_code = frame
        .get(4..6)
        .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]));
    let unsupported = wire::protocol::error::ResponseError::UnsupportedVersion.code();
    let version_body = if error_code == Some(unsupported) {
        0
    } else {
        version
    };
    let decoded = response_decode(frame, ApiKey::ApiVersions, version_body);
    let (correlation_id_got, body) = decoded.map_err(|source| ClientError::Decode {
        address: address.to_string(),
        source,
    })?;
    if correlation_id_got != correlation_id {
        let reason =
            format!("ApiVersions correlation id {correlation_id_got}, expected {correlation_id}");
        return Err(ClientError::protocol(address, reason));
    }
    match body {
        ResponseKind::ApiVersions(response) => Ok(response),
        other => Err(ClientError::protocol(
            address,
            format!("ApiVersions answered with {other:?}"),
        )),
    }
}

/// Runs `work` within `limit`, turning expiry into `ClientError::Timeout`.
async fn deadline<T>(
    address: &str,
    what: impl FnOnce() -> String,
    limit: Duration,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match runtime::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ClientError::Timeout {
            address: address.to_string(),
            what: what(),
            after: limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::codec::response_encode;
    use wire::protocol::messages::api_versions_response::ApiVersion;

    fn frame(version: i16, correlation_id: i32, response: ApiVersionsResponse) -> Bytes {
        let mut buffer = BytesMut::new();
        let body = ResponseKind::ApiVersions(response);
        response_encode(
            &mut buffer,
            ApiKey::ApiVersions,
            version,
            correlation_id,
            &body,
        )
        .unwrap();
        frame_split(&mut buffer, RESPONSE_BYTES_MAX)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn api_versions_answers_are_read_at_v0_when_the_broker_refuses_our_version() {
        let refusal = ApiVersionsResponse::default()
            .with_error_code(35)
            .with_api_keys(vec![ApiVersion::default()
                .with_api_key(18)
                .with_min_version(0)
                .with_max_version(2)]);
        let decoded = api_versions_decode("b:1", frame(0, 4, refusal), 3, 4).unwrap();
        assert_eq!(decoded.error_code, 35);
        assert_eq!(decoded.api_keys[0].max_version, 2);
        let answer = ApiVersionsResponse::default().with_api_keys(vec![ApiVersion::default()
            .with_api_key(1)
            .with_min_version(4)
            .with_max_version(17)]);
        let decoded = api_versions_decode("b:1", frame(3, 5, answer), 3, 5).unwrap();
        assert_eq!(decoded.api_keys[0].max_version, 17);
    }

    #[test]
    fn a_mismatched_correlation_id_is_a_protocol_error() {
        let answer = ApiVersionsResponse::default();
        let error = api_versions_decode("b:1", frame(3, 9, answer), 3, 5).unwrap_err();
        assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
        assert!(error.is_connection_fatal());
    }
}
