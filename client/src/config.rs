//! Client-wide settings shared by `Admin`, `Producer` and `Consumer`, and the limits that bound
//! every buffer the client owns.
//!
//! There is no `Default`: `ClientConfig::new(bootstrap)` fills in Kafka's defaults where Kafka has
//! one, so the choice is visible at the call site. Simulation callers shorten the timeouts.

use runtime::Clock;
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The largest response frame we accept, refused before allocating (the length prefix is
/// untrusted). Matches the broker's request limit (`wire::REQUEST_BYTES_MAX`): a Fetch response is
/// bounded by `fetch_bytes_max` (50 MiB by default) plus headers, well inside it.
pub const RESPONSE_BYTES_MAX: u32 = wire::REQUEST_BYTES_MAX;

/// Requests sent on one connection before their responses are read. Kafka's
/// `max.in.flight.requests.per.connection` default: enough to hide one round trip behind the next
/// few, small enough that a timeout fails only a handful of requests.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 5;

/// How much the read buffer grows by per `read`: one typical Produce response or small Fetch
/// response fits, and large Fetch responses grow the buffer to their exact size via `frame_split`.
pub const READ_CHUNK_BYTES: usize = 64 * KIB;

/// Bootstrap servers and brokers from metadata tried per connection attempt. A cluster larger than
/// this is reached through the first ones, which know the rest.
pub const BROKERS_TRIED_MAX: usize = 64;

/// The write buffer is kept for reuse below this size; a larger one (after a big Produce) is
/// dropped so that one burst does not pin memory for the connection's life.
pub const WRITE_BUFFER_RETAINED_BYTES_MAX: usize = 4 * MIB;

/// Settings every client object needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of brokers to ask for the cluster's metadata first.
    pub bootstrap: Vec<String>,
    /// Sent in every request header; shows up in broker logs.
    pub client_id: String,
    /// Bound on one request's round trip, connecting included. Kafka's `request.timeout.ms`. In
    /// madsim a partitioned link stalls rather than failing, so this is what unsticks a caller.
    pub request_timeout: Duration,
    /// Bound on establishing a TCP connection and negotiating API versions.
    pub connect_timeout: Duration,
    /// Pause between attempts after a retriable error. Kafka's `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// Attempts after the first for retriable errors (leader moved, connection lost, timeout).
    pub retries: u32,
    /// Source of record timestamps and deadlines; never a global clock.
    pub clock: Clock,
}

impl ClientConfig {
    /// Kafka's defaults: request timeout 30 s, retry backoff 100 ms.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            client_id: "gregor-client".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(100),
            retries: 5,
            clock: Clock::system(),
        }
    }
}

/// `host:port`, with brackets around IPv6 literals as `SocketAddr` parsing expects.
pub fn broker_address(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse_as_socket_addresses() {
        assert_eq!(broker_address("10.0.0.1", 9092), "10.0.0.1:9092");
        assert_eq!(broker_address("::1", 9092), "[::1]:9092");
        assert_eq!(broker_address("broker-1", 9092), "broker-1:9092");
        for address in [
            broker_address("10.0.0.1", 9092),
            broker_address("::1", 9092),
        ] {
            assert!(address.parse::<std::net::SocketAddr>().is_ok(), "{address}");
        }
    }
}
