//! `gregor`: the broker and its command-line tools.

use broker::config::{validate, BrokerConfig, ConfigFile};
use broker::NodeContext;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
mod cli_cluster;
mod cli_group;

#[derive(Parser)]
#[command(
    name = "gregor",
    version,
    about = "A Kafka-compatible log broker, proven in a deterministic simulator"
)]
struct Command {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Run a broker (zero flags: node 1 on 127.0.0.1:9092, data in ./data).
    Broker(Box<BrokerArgs>),
    #[command(flatten)]
    Client(cli::ClientAction),
}

#[derive(Args)]
struct BrokerArgs {
    /// TOML file with the same keys as these flags (node_id, listen, ...). Flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (default 1, >= 1: it is the Raft id too); with --voters one of their ids.
    #[arg(long)]
    node_id: Option<i32>,
    /// The controller quorum, ID@HOST:PORT,... (each node's controller listener). Without it
    /// the broker is its own single voter (no controller listener unless --controller-listen).
    #[arg(long)]
    voters: Option<String>,
    /// Where this node's controller listener binds, IP:PORT (default: its --voters address; none
    /// for a lone voter).
    #[arg(long)]
    controller_listen: Option<String>,
    /// This broker's rack, for rack-aware replica placement.
    #[arg(long)]
    rack: Option<String>,
    /// Address to listen on, IP:PORT.
    #[arg(long)]
    listen: Option<String>,
    /// HOST:PORT clients should connect to (defaults to --listen).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// tracing filter, e.g. info, debug, broker=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// Create unknown topics on Metadata requests (Kafka's auto.create.topics.enable).
    #[arg(long)]
    auto_create_topics: Option<bool>,
    /// Partitions for topics created without a count.
    #[arg(long)]
    default_partitions: Option<i32>,
    /// How often retention and compaction run, in ms (Kafka's log.retention.check.interval.ms;
    /// default 300000).
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// Forget an idempotent producer idle this long in a partition (Kafka's
    /// producer.id.expiration.ms; default 86400000).
    #[arg(long)]
    producer_id_expiration_ms: Option<i64>,
    /// The longest transaction timeout a producer may ask for (Kafka's
    /// transaction.max.timeout.ms; default 900000).
    #[arg(long)]
    transaction_max_timeout_ms: Option<u64>,
    /// Connections allowed from one client address (Kafka's max.connections.per.ip).
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Close a connection idle this long (Kafka's connections.max.idle.ms; default 600000).
    #[arg(long)]
    connections_max_idle_ms: Option<u64>,
    /// Bytes of large requests being received across all connections before reading pauses
    /// (Kafka's queued.max.request.bytes; default 209715200).
    #[arg(long)]
    queued_max_request_bytes: Option<usize>,
    /// A follower not caught up for this long leaves the ISR, in ms (Kafka's
    /// replica.lag.time.max.ms; default 30000).
    #[arg(long)]
    replica_lag_time_max_ms: Option<u64>,
    /// How long a follower's fetch may wait at the leader for new records, in ms (Kafka's
    /// replica.fetch.wait.max.ms; default 500).
    #[arg(long)]
    replica_fetch_wait_max_ms: Option<u64>,
    /// How often this broker heartbeats to the controller, in ms (Kafka's
    /// broker.heartbeat.interval.ms; default 2000).
    #[arg(long)]
    broker_heartbeat_interval_ms: Option<u64>,
    /// A broker not heard from for this long is fenced and its partitions get new leaders, in
    /// ms: the failover time after a crash (Kafka's broker.session.timeout.ms; default 9000).
    #[arg(long)]
    broker_session_timeout_ms: Option<u64>,
}

fn main() -> ExitCode {
    let command = Command::parse();
    match command.action {
        Action::Broker(args) => broker_main(*args),
        Action::Client(action) => cli::run(action),
    }
}

fn broker_config(args: &BrokerArgs) -> Result<(BrokerConfig, String), String> {
    let mut config = BrokerConfig::zero_config();
    let mut log_level = "info".to_string();
    if let Some(path) = &args.config {
        let bytes = runtime::disk::read_all(&runtime::RealDisk, path)
            .map_err(|error| format!("cannot read config file {}: {error}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("config file {} is not UTF-8", path.display()))?;
        let file = ConfigFile::parse(&path.display().to_string(), &text)
            .map_err(|error| error.to_string())?;
        if let Some(level) = &file.log_level {
            log_level = level.clone();
        }
        file.apply(&mut config).map_err(|error| error.to_string())?;
    }
    config.node_id = args.node_id.unwrap_or(config.node_id);
    config.listen = args.listen.clone().unwrap_or(config.listen);
    config.advertise = args.advertise.clone().or(config.advertise);
    config.data_dir = args.data_dir.clone().unwrap_or(config.data_dir);
    config.auto_create_topics = args.auto_create_topics.unwrap_or(config.auto_create_topics);
    config.default_partitions = args.default_partitions.unwrap_or(config.default_partitions);
    if let Some(interval_ms) = args.retention_check_interval_ms {
        config.retention_check_interval = std::time::Duration::from_millis(interval_ms);
    }
    config.producer_id_expiration_ms = args
        .producer_id_expiration_ms
        .unwrap_or(config.producer_id_expiration_ms);
    if let Some(timeout_ms) = args.transaction_max_timeout_ms {
        config.transactions.timeout_max = std::time::Duration::from_millis(timeout_ms);
    }
    config.connections_per_ip_max = args
        .max_connections_per_ip
        .unwrap_or(config.connections_per_ip_max);
    if let Some(idle_ms) = args.connections_max_idle_ms {
        config.connections_idle_max = std::time::Duration::from_millis(idle_ms);
    }
    if let Some(lag_ms) = args.replica_lag_time_max_ms {
        config.replica.lag_time_max = std::time::Duration::from_millis(lag_ms);
    }
    if let Some(wait_ms) = args.replica_fetch_wait_max_ms {
        config.replica.fetch_wait_max = std::time::Duration::from_millis(wait_ms);
    }
    if let Some(interval_ms) = args.broker_heartbeat_interval_ms {
        config.broker_heartbeat_interval = std::time::Duration::from_millis(interval_ms);
    }
    if let Some(timeout_ms) = args.broker_session_timeout_ms {
        config.broker_session_timeout = std::time::Duration::from_millis(timeout_ms);
    }
    config.requests_queued_bytes_max = args
        .queued_max_request_bytes
        .unwrap_or(config.requests_queued_bytes_max);
    if let Some(voters) = &args.voters {
        config.voters = broker::config::voters_parse(voters).map_err(|error| error.to_string())?;
    }
    config.controller_listen = args.controller_listen.clone().or(config.controller_listen);
    config.rack = args.rack.clone().or(config.rack);
    if let Some(level) = &args.log_level {
        log_level = level.clone();
    }
    validate(&config).map_err(|error| error.to_string())?;
    Ok((config, log_level))
}

fn broker_main(args: BrokerArgs) -> ExitCode {
    let (config, log_level) = match broker_config(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("gregor: {message}");
            return ExitCode::from(2);
        }
    };
    cli::tracing_init(&log_level);
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::RealDisk::new(),
        seed: runtime::rng::entropy_seed(),
        cluster_hooks: Default::default(),
    };
    let served = runtime::run_main(broker::serve(config, context, runtime::shutdown_signal()));
    match served {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            tracing::error!(%error, "broker failed");
            eprintln!("gregor: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("gregor: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
