//! Broker configuration: zero-config defaults, overridden by a TOML file, overridden by flags.
//!
//! Every limit is here with its unit, so an operator finds them in one place and the server code
//! takes them as values, never as globals.

use runtime::sync::Semaphore;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Kafka's default `log.retention.check.interval.ms` (5 minutes): retention deletes whole
/// segments, so checking more often buys little, and each pass walks every partition.
pub const RETENTION_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_millis(300_000);
/// Kafka's default `producer.id.expiration.ms`: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;
/// Kafka's default `max.connections.per.ip` (`Int.MaxValue`): no per-address limit unless set.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = i32::MAX as usize;

/// Kafka's default `connections.max.idle.ms`: ten minutes.
pub const CONNECTIONS_IDLE_MAX_DEFAULT: Duration = Duration::from_secs(10 * 60);

/// Kafka's default `queued.max.request.bytes` is -1, unlimited, which let eight clients that each
/// sent 60 MiB of a 100 MiB frame hold 505 MB. Two maximum-size requests (2 x 100 MiB) may be
/// received at once: large requests are rare (librdkafka sends at most 1 MB by default), two keep
/// one slow sender from stalling every other large request, and the bound plus 64 KiB per
/// connection (64 MiB at 1,024 connections) fits a small machine.
pub const REQUESTS_QUEUED_BYTES_MAX_DEFAULT: usize = 2 * wire::REQUEST_BYTES_MAX as usize;

/// The broker's own settings (topic-level log settings live in `topic_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Where to accept connections.
    pub listen: String,
    /// The `host:port` clients are told to connect to (Metadata). Defaults to `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Kafka's `auto.create.topics.enable`; off by default so typos do not create topics.
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (auto-created, or CreateTopics with -1).
    pub default_partitions: i32,
    /// Connections beyond this are closed on accept: each holds buffers and a task. When every
    /// slot is taken, the longest-idle connection is closed to admit the new one (`limits`).
    pub connections_max: usize,
    /// Kafka's `max.connections.per.ip`: connections from one client address beyond this are
    /// closed on accept, so one misbehaving host cannot take every slot.
    pub connections_per_ip_max: usize,
    /// Kafka's `connections.max.idle.ms`: a connection with no request in flight that has
    /// received nothing and sent nothing for this long is closed.
    pub connections_idle_max: Duration,
    /// Kafka's `socket.request.max.bytes`: bigger frames close the connection unread.
    pub request_bytes_max: u32,
    /// Requests a connection may have in flight before the broker stops reading from it.
    pub requests_in_flight_max: usize,
    /// Kafka's `queued.max.request.bytes`: bytes of large requests (beyond each connection's
    /// 64 KiB base buffer) being received across all connections. A connection that would
    /// exceed it stops reading until memory is released. Must be at least `request_bytes_max`.
    pub requests_queued_bytes_max: usize,
    /// How often retention and compaction run (Kafka's `log.retention.check.interval.ms`,
    /// `RETENTION_CHECK_INTERVAL_DEFAULT` unless set).
    pub retention_check_interval: Duration,
    /// Kafka's `producer.id.expiration.ms`: an idempotent producer with no batch newer than this
    /// in a partition is forgotten there at the next maintenance pass.
    pub producer_id_expiration_ms: i64,
    /// Cluster id reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// A planted bug for the simulator's self-test; inert without the `planted-bugs` feature.
    pub planted: Option<crate::planted::Bug>,
    /// The group coordinator's limits and timeouts (Kafka's `group.*` broker settings).
    pub groups: crate::group::GroupConfig,
    /// The transaction coordinator's settings (Kafka's `transaction.*` broker settings).
    pub transactions: crate::txn::TxnConfig,
    /// The controller quorum: node id -> controller listener `host:port`. Empty is zero
    /// config: this node is its own single voter (`voters_effective`), with no controller
    /// listener unless `controller_listen` asks for one.
    pub voters: BTreeMap<i32, String>,
    /// Where this node's controller listener binds, `IP:PORT`. Defaults to this node's entry
    /// in `voters`; a lone voter binds none unless this is given.
    pub controller_listen: Option<String>,
    /// This broker's rack, for rack-aware replica placement.
    pub rack: Option<String>,
    /// Partition replication (issue 13): Kafka's `replica.*` broker settings.
    pub replica: ReplicaSettings,
    /// Kafka's `broker.heartbeat.interval.ms`: how often this broker heartbeats to the
    /// controller.
    pub broker_heartbeat_interval: Duration,
    /// Kafka's `broker.session.timeout.ms`: a broker not heard from for this long is fenced by
    /// the controller, and its partitions get new leaders. The bound on failover after a crash
    /// that is not a clean shutdown.
    pub broker_session_timeout: Duration,
}

/// Kafka's `replica.*` broker settings, with units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max: Duration,
    /// Kafka's `replica.fetch.wait.max.ms`: how long a follower's fetch may park at the leader.
    pub fetch_wait_max: Duration,
    /// Kafka's `replica.fetch.max.bytes`: per partition, per follower fetch.
    pub fetch_partition_bytes: i32,
}

impl ReplicaSettings {
    pub fn kafka_defaults() -> ReplicaSettings {
        ReplicaSettings {
            lag_time_max: Duration::from_millis(30_000),
            fetch_wait_max: Duration::from_millis(500),
            fetch_partition_bytes: 1024 * 1024,
        }
    }
}

impl BrokerConfig {
    /// What `gregor broker` runs with when given no flags: node 1, 127.0.0.1:9092, `./data`.
    pub fn zero_config() -> BrokerConfig {
        BrokerConfig {
            node_id: 1,
            listen: "127.0.0.1:9092".to_string(),
            advertise: None,
            data_dir: PathBuf::from("data"),
            auto_create_topics: false,
            default_partitions: 1,
            connections_max: 1024,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            connections_idle_max: CONNECTIONS_IDLE_MAX_DEFAULT,
            request_bytes_max: wire::REQUEST_BYTES_MAX,
            requests_in_flight_max: 128,
            requests_queued_bytes_max: REQUESTS_QUEUED_BYTES_MAX_DEFAULT,
            retention_check_interval: RETENTION_CHECK_INTERVAL_DEFAULT,
            producer_id_expiration_ms: PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            cluster_id: "gregor-cluster".to_string(),
            planted: None,
            groups: crate::group::GroupConfig::kafka_defaults(),
            transactions: crate::txn::TxnConfig::kafka_defaults(),
            voters: BTreeMap::new(),
            controller_listen: None,
            rack: None,
            replica: ReplicaSettings::kafka_defaults(),
            broker_heartbeat_interval: Duration::from_millis(2_000),
            broker_session_timeout: Duration::from_millis(9_000),
        }
    }

    /// The quorum this node runs: `voters`, or this node alone when none are given (zero
    /// config; its address is never dialled: a lone voter has no peers).
    pub fn voters_effective(&self) -> BTreeMap<i32, String> {
        match self.voters.is_empty() {
            true => {
                let address = self.controller_listen.clone().unwrap_or_default();
                BTreeMap::from([(self.node_id, address)])
            }
            false => self.voters.clone(),
        }
    }

    /// The address this node's controller listener binds; `None` binds none (a lone voter).
    pub fn controller_address(&self) -> Option<String> {
        let own = self.voters.get(&self.node_id).cloned();
        self.controller_listen.clone().or(own)
    }

    /// The address clients should use, as `(host, port)`.
    pub fn advertised(&self) -> (String, i32) {
        let address = self.advertise.as_deref().unwrap_or(&self.listen);
        match address.rsplit_once(':') {
            Some((host, port)) => (
                host.trim_matches(['[', ']']).to_string(),
                port.parse().unwrap_or(9092),
            ),
            None => (address.to_string(), 9092),
        }
    }
}

/// The optional `--config` TOML file: the same keys as the flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_id: Option<i32>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<i32>,
    pub connections_max: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub connections_max_idle_ms: Option<u64>,
    pub queued_max_request_bytes: Option<usize>,
    pub request_bytes_max: Option<u32>,
    pub retention_check_interval_ms: Option<u64>,
    pub producer_id_expiration_ms: Option<i64>,
    pub transaction_max_timeout_ms: Option<u64>,
    pub cluster_id: Option<String>,
    /// `"1@host:port,2@host:port,3@host:port"`, as the flag.
    pub voters: Option<String>,
    pub controller_listen: Option<String>,
    pub rack: Option<String>,
    pub replica_lag_time_max_ms: Option<u64>,
    pub replica_fetch_wait_max_ms: Option<u64>,
    pub broker_heartbeat_interval_ms: Option<u64>,
    pub broker_session_timeout_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid setting {key} = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl ConfigFile {
    pub fn parse(path: &str, text: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::File {
            path: path.to_string(),
            message: error.to_string(),
        })
    }

    /// Overlays the file's settings on `config`; refuses a `voters` list that does not parse.
    pub fn apply(self, config: &mut BrokerConfig) -> Result<(), ConfigError> {
        let ConfigFile {
            node_id,
            listen,
            advertise,
            data_dir,
            log_level: _,
            auto_create_topics,
            default_partitions,
            connections_max,
            max_connections_per_ip,
            connections_max_idle_ms,
            queued_max_request_bytes,
            request_bytes_max,
            retention_check_interval_ms,
            producer_id_expiration_ms,
            transaction_max_timeout_ms,
            cluster_id,
            voters,
            controller_listen,
            rack,
            replica_lag_time_max_ms,
            replica_fetch_wait_max_ms,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
        } = self;
        config.node_id = node_id.unwrap_or(config.node_id);
        config.listen = listen.unwrap_or(config.listen.clone());
        config.advertise = advertise.or(config.advertise.take());
        config.data_dir = data_dir.unwrap_or(config.data_dir.clone());
        config.auto_create_topics = auto_create_topics.unwrap_or(config.auto_create_topics);
        config.default_partitions = default_partitions.unwrap_or(config.default_partitions);
        config.connections_max = connections_max.unwrap_or(config.connections_max);
        config.connections_per_ip_max =
            max_connections_per_ip.unwrap_or(config.connections_per_ip_max);
        if let Some(idle_ms) = connections_max_idle_ms {
            config.connections_idle_max = Duration::from_millis(idle_ms);
        }
        config.requests_queued_bytes_max =
            queued_max_request_bytes.unwrap_or(config.requests_queued_bytes_max);
        config.request_bytes_max = request_bytes_max.unwrap_or(config.request_bytes_max);
        if let Some(interval_ms) = retention_check_interval_ms {
            config.retention_check_interval = Duration::from_millis(interval_ms);
        }
        config.producer_id_expiration_ms =
            producer_id_expiration_ms.unwrap_or(config.producer_id_expiration_ms);
        if let Some(timeout_ms) = transaction_max_timeout_ms {
            config.transactions.timeout_max = Duration::from_millis(timeout_ms);
        }
        config.cluster_id = cluster_id.unwrap_or(config.cluster_id.clone());
        if let Some(voters) = voters {
            config.voters = voters_parse(&voters)?;
        }
        config.controller_listen = controller_listen.or(config.controller_listen.take());
        config.rack = rack.or(config.rack.take());
        if let Some(lag_ms) = replica_lag_time_max_ms {
            config.replica.lag_time_max = Duration::from_millis(lag_ms);
        }
        if let Some(wait_ms) = replica_fetch_wait_max_ms {
            config.replica.fetch_wait_max = Duration::from_millis(wait_ms);
        }
        if let Some(interval_ms) = broker_heartbeat_interval_ms {
            config.broker_heartbeat_interval = Duration::from_millis(interval_ms);
        }
        if let Some(timeout_ms) = broker_session_timeout_ms {
            config.broker_session_timeout = Duration::from_millis(timeout_ms);
        }
        Ok(())
    }
}

/// Parses `--voters`: `ID@HOST:PORT` entries separated by commas. Ids must be >= 1 (they are
/// Raft ids) and distinct, addresses well formed and distinct.
pub fn voters_parse(text: &str) -> Result<BTreeMap<i32, String>, ConfigError> {
    let invalid = |value: &str, reason| ConfigError::Invalid {
        key: "voters",
        value: value.to_string(),
        reason,
    };
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim) {
        let (id, address) = entry.split_once('@').ok_or_else(|| {
            invalid(
                entry,
                "each voter must be ID@HOST:PORT, e.g. 1@127.0.0.1:9093",
            )
        })?;
        let id: i32 = id
            .parse()
            .map_err(|_| invalid(entry, "a voter id must be an integer"))?;
        if id < 1 {
            return Err(invalid(entry, "a voter id must be >= 1"));
        }
        if !host_port_is_valid(address) {
            return Err(invalid(
                entry,
                "a voter address must be HOST:PORT with a port 1..=65535",
            ));
        }
        if voters.values().any(|known| known == address) {
            return Err(invalid(entry, "two voters share an address"));
        }
        if voters.insert(id, address.to_string()).is_some() {
            return Err(invalid(entry, "a voter id appears twice"));
        }
    }
    Ok(voters)
}

/// `HOST:PORT`: a non-empty host (a name, an IPv4 address or a bracketed IPv6 one) and a port
/// 1..=65535.
fn host_port_is_valid(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|port| port != 0)
}

/// Checks relationships the server relies on; the binary refuses to start otherwise.
pub fn validate(config: &BrokerConfig) -> Result<(), ConfigError> {
    let invalid = |key, value: String, reason| Err(ConfigError::Invalid { key, value, reason });
    if config.node_id < 1 {
        let reason = "must be >= 1: it is the node's Raft id too";
        return invalid("node_id", config.node_id.to_string(), reason);
    }
    if config.default_partitions < 1 {
        return invalid(
            "default_partitions",
            config.default_partitions.to_string(),
            "must be >= 1",
        );
    }
    if config.transactions.timeout_max.is_zero()
        || config.transactions.timeout_max.as_millis() > i32::MAX as u128
    {
        return invalid(
            "transaction_max_timeout_ms",
            config.transactions.timeout_max.as_millis().to_string(),
            "must be 1..=2147483647",
        );
    }
    if config.producer_id_expiration_ms < 1 {
        return invalid(
            "producer_id_expiration_ms",
            config.producer_id_expiration_ms.to_string(),
            "must be >= 1",
        );
    }
    if config.connections_max == 0 {
        return invalid("connections_max", "0".into(), "must be >= 1");
    }
    if config.request_bytes_max < 1024 || config.request_bytes_max > wire::REQUEST_BYTES_MAX {
        let value = config.request_bytes_max.to_string();
        return invalid(
            "request_bytes_max",
            value,
            "must be between 1 KiB and 100 MiB",
        );
    }
    if config.retention_check_interval.is_zero() {
        return invalid("retention_check_interval_ms", "0".into(), "must be >= 1");
    }
    if config.connections_per_ip_max == 0 {
        return invalid("max_connections_per_ip", "0".into(), "must be >= 1");
    }
    if config.connections_idle_max.is_zero() {
        return invalid("connections_max_idle_ms", "0".into(), "must be >= 1");
    }
    // A request of the maximum size must fit the budget, or it would wait forever.
    if config.requests_queued_bytes_max < config.request_bytes_max as usize
        || config.requests_queued_bytes_max > Semaphore::MAX_PERMITS
    {
        let value = config.requests_queued_bytes_max.to_string();
        return invalid(
            "queued_max_request_bytes",
            value,
            "must be at least request_bytes_max",
        );
    }
    if config.listen.parse::<std::net::SocketAddr>().is_err() {
        return invalid(
            "listen",
            config.listen.clone(),
            "must be IP:PORT, e.g. 127.0.0.1:9092",
        );
    }
    validate_cluster(config)
}

/// The quorum's settings: the node id is a Raft id (>= 1); with `voters`, this node is one of
/// them; a controller listener, when there is one, is a bindable address distinct from the
/// Kafka listener.
fn validate_cluster(config: &BrokerConfig) -> Result<(), ConfigError> {
    let invalid = |key, value: String, reason| Err(ConfigError::Invalid { key, value, reason });
    if let Some(rack) = &config.rack {
        if rack.is_empty() || rack.len() > 255 {
            return invalid("rack", rack.clone(), "must be 1..=255 characters");
        }
    }
    let (heartbeat, session) = (
        config.broker_heartbeat_interval,
        config.broker_session_timeout,
    );
    if heartbeat.is_zero() || heartbeat >= session {
        let value = format!(
            "{} (session {} ms)",
            heartbeat.as_millis(),
            session.as_millis()
        );
        let reason = "must be above 0 and below broker_session_timeout_ms";
        return invalid("broker_heartbeat_interval_ms", value, reason);
    }
    if config.voters.is_empty() {
        return match &config.controller_listen {
            Some(address) => controller_listen_check(config, address),
            None => Ok(()),
        };
    }
    let voters = || {
        let entries: Vec<String> = config
            .voters
            .iter()
            .map(|(id, address)| format!("{id}@{address}"))
            .collect();
        entries.join(",")
    };
    if config.voters.keys().any(|id| *id < 1)
        || config.voters.values().any(|a| !host_port_is_valid(a))
    {
        return invalid(
            "voters",
            voters(),
            "each voter must be ID@HOST:PORT with an id >= 1",
        );
    }
    if !config.voters.contains_key(&config.node_id) {
        let value = config.node_id.to_string();
        return invalid("node_id", value, "must be one of the voters' ids");
    }
    let controller = config.controller_address().unwrap_or_default();
    controller_listen_check(config, &controller)?;
    if config
        .voters
        .values()
        .any(|address| *address == config.listen)
    {
        return invalid(
            "listen",
            config.listen.clone(),
            "is a voter's controller address; the Kafka listener needs its own",
        );
    }
    Ok(())
}

fn controller_listen_check(config: &BrokerConfig, address: &str) -> Result<(), ConfigError> {
    let invalid = |reason| {
        Err(ConfigError::Invalid {
            key: "controller_listen",
            value: address.to_string(),
            reason,
        })
    };
    if address.parse::<std::net::SocketAddr>().is_err() {
        return invalid("must be IP:PORT, e.g. 127.0.0.1:9093");
    }
    if address == config.listen {
        return invalid("must differ from listen: controller traffic has its own listener");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let mut config = BrokerConfig::zero_config();
        let file = ConfigFile::parse("x.toml", "node_id = 3\nlisten = \"0.0.0.0:9093\"\n").unwrap();
        file.apply(&mut config).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.listen, "0.0.0.0:9093");
        assert!(ConfigFile::parse("x.toml", "nodeid = 3").is_err());
        assert!(validate(&config).is_ok());
        config.listen = "localhost".into();
        assert!(validate(&config).is_err());
    }

    #[test]
    fn retention_check_interval_is_kafkas_and_settable() {
        let mut config = BrokerConfig::zero_config();
        assert_eq!(config.retention_check_interval, Duration::from_secs(300));
        let file = ConfigFile::parse("x.toml", "retention_check_interval_ms = 500").unwrap();
        file.apply(&mut config).unwrap();
        assert_eq!(config.retention_check_interval, Duration::from_millis(500));
        config.retention_check_interval = Duration::ZERO;
        assert!(validate(&config).is_err(), "a zero interval would spin");
    }

    #[test]
    fn connection_limits_use_kafka_names_and_defaults() {
        let mut config = BrokerConfig::zero_config();
        assert_eq!(config.connections_per_ip_max, 2_147_483_647);
        assert_eq!(config.connections_idle_max, Duration::from_millis(600_000));
        assert!(validate(&config).is_ok());
        let text = "max_connections_per_ip = 5\nconnections_max_idle_ms = 250\n\
                    queued_max_request_bytes = 104857600\n";
        ConfigFile::parse("x.toml", text)
            .unwrap()
            .apply(&mut config)
            .unwrap();
        assert_eq!(config.connections_per_ip_max, 5);
        assert_eq!(config.connections_idle_max, Duration::from_millis(250));
        assert_eq!(config.requests_queued_bytes_max, 100 << 20);
        assert!(validate(&config).is_ok());
        // Smaller than one maximum-size request: such a request could never be received.
        config.requests_queued_bytes_max = config.request_bytes_max as usize - 1;
        assert!(validate(&config).is_err());
        config.requests_queued_bytes_max = config.request_bytes_max as usize;
        config.connections_per_ip_max = 0;
        assert!(validate(&config).is_err());
    }

    #[test]
    fn advertised_defaults_to_listen() {
        let mut config = BrokerConfig::zero_config();
        assert_eq!(config.advertised(), ("127.0.0.1".to_string(), 9092));
        config.advertise = Some("[::1]:9999".into());
        assert_eq!(config.advertised(), ("::1".to_string(), 9999));
    }

    fn cluster_config(node_id: i32) -> BrokerConfig {
        let mut config = BrokerConfig::zero_config();
        config.node_id = node_id;
        config.listen = "127.0.0.1:19092".into();
        config.voters =
            voters_parse("1@127.0.0.1:19093,2@127.0.0.1:19193,3@localhost:19293").unwrap();
        config
    }

    fn refused_key(config: &BrokerConfig) -> &'static str {
        match validate(config) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn voters_parse_refuses_malformed_and_duplicate_entries() {
        let voters = voters_parse("1@127.0.0.1:9093, 2@[::1]:9093,3@host-3.example:9093").unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[&2], "[::1]:9093");
        for bad in [
            "",
            "1@127.0.0.1:9093,1@127.0.0.1:9094",
            "1@127.0.0.1:9093,2@127.0.0.1:9093",
            "0@127.0.0.1:9093",
            "-1@127.0.0.1:9093",
            "x@127.0.0.1:9093",
            "1127.0.0.1:9093",
            "1@127.0.0.1",
            "1@127.0.0.1:0",
            "1@127.0.0.1:70000",
            "1@:9093",
            "1@[::1:9093",
            "1@bad host:9093",
        ] {
            assert!(voters_parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn cluster_mode_needs_this_node_among_the_voters() {
        let config = cluster_config(1);
        assert_eq!(config.voters_effective(), config.voters);
        assert_eq!(
            config.controller_address().as_deref(),
            Some("127.0.0.1:19093")
        );
        assert!(validate(&config).is_ok());
        assert_eq!(refused_key(&cluster_config(4)), "node_id");
        // Node 3's own voter address is a name: it cannot bind there without --controller-listen.
        assert_eq!(refused_key(&cluster_config(3)), "controller_listen");
        let mut config = cluster_config(3);
        config.controller_listen = Some("0.0.0.0:19293".into());
        assert!(validate(&config).is_ok());
        config.controller_listen = Some(config.listen.clone());
        assert_eq!(refused_key(&config), "controller_listen");
        let mut config = cluster_config(1);
        config.listen = "127.0.0.1:19193".into();
        assert_eq!(refused_key(&config), "listen");
        let mut config = cluster_config(1);
        config.rack = Some(String::new());
        assert_eq!(refused_key(&config), "rack");
        config.rack = Some("rack-a".into());
        assert!(validate(&config).is_ok());
    }

    #[test]
    fn zero_config_is_a_lone_voter_without_a_controller_listener() {
        let mut config = BrokerConfig::zero_config();
        assert_eq!(
            config.voters_effective(),
            BTreeMap::from([(1, String::new())])
        );
        assert_eq!(config.controller_address(), None);
        assert!(validate(&config).is_ok());
        config.rack = Some("a".into());
        assert!(validate(&config).is_ok());
        config.controller_listen = Some("127.0.0.1:9093".into());
        assert!(validate(&config).is_ok());
        assert_eq!(
            config.controller_address().as_deref(),
            Some("127.0.0.1:9093")
        );
        config.controller_listen = Some(config.listen.clone());
        assert_eq!(refused_key(&config), "controller_listen");
        config.controller_listen = Some("localhost:9093".into());
        assert_eq!(refused_key(&config), "controller_listen");
        config.controller_listen = None;
        config.node_id = 0;
        assert_eq!(refused_key(&config), "node_id");
    }

    #[test]
    fn config_file_takes_cluster_settings() {
        let mut config = BrokerConfig::zero_config();
        let text = "node_id = 2\nvoters = \"1@127.0.0.1:9093,2@127.0.0.1:9193\"\n\
                    rack = \"r1\"\ncontroller_listen = \"127.0.0.1:9193\"\n";
        ConfigFile::parse("x.toml", text)
            .unwrap()
            .apply(&mut config)
            .unwrap();
        assert_eq!(config.voters.len(), 2);
        assert_eq!(config.rack.as_deref(), Some("r1"));
        assert!(validate(&config).is_ok());
        let text = "voters = \"1@127.0.0.1:9093,1@127.0.0.1:9193\"";
        let file = ConfigFile::parse("x.toml", text).unwrap();
        assert!(file.apply(&mut BrokerConfig::zero_config()).is_err());
    }

    #[test]
    fn broker_sessions_are_kafkas_settable_and_checked() {
        let mut config = BrokerConfig::zero_config();
        assert_eq!(
            config.broker_heartbeat_interval,
            Duration::from_millis(2_000)
        );
        assert_eq!(config.broker_session_timeout, Duration::from_millis(9_000));
        let text = "broker_heartbeat_interval_ms = 300\nbroker_session_timeout_ms = 1500\n";
        ConfigFile::parse("x.toml", text)
            .unwrap()
            .apply(&mut config)
            .unwrap();
        assert_eq!(config.broker_session_timeout, Duration::from_millis(1_500));
        assert!(validate(&config).is_ok());
        config.broker_heartbeat_interval = Duration::from_millis(1_500);
        assert_eq!(refused_key(&config), "broker_heartbeat_interval_ms");
        config.broker_heartbeat_interval = Duration::ZERO;
        assert_eq!(refused_key(&config), "broker_heartbeat_interval_ms");
    }
}
