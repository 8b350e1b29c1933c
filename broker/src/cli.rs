//! Client-side commands (`gregor topic|produce|consume|group`), built on the project's own
//! `client` crate.

use bytes::Bytes;
use clap::{Args, Subcommand};
use client::{
    Acks, Admin, ClientConfig, ClientError, ConfigChange, Consumer, ConsumerConfig, GroupConfig,
    GroupConsumer, Offset, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct Bootstrap {
    /// A broker to start from, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) bootstrap: String,
}

#[derive(Subcommand)]
pub enum ClientAction {
    /// Create, list, describe, alter or delete topics, or delete their records.
    #[command(subcommand)]
    Topic(TopicAction),
    /// Produce lines from stdin, one record each (`KEY<sep>VALUE` with --key-sep).
    Produce {
        topic: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Split each line at the first occurrence of this into key and value.
        #[arg(long)]
        key_sep: Option<String>,
        /// 0, 1 or all.
        #[arg(long, default_value = "all")]
        acks: String,
        /// Send every record to this partition (default: by key hash, or sticky without key).
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Print records of a topic, one per line (`KEY<tab>VALUE` when keyed).
    Consume {
        topic: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Start at the log start (default: only new records).
        #[arg(long)]
        from_beginning: bool,
        /// Start at this offset (in every partition read).
        #[arg(long)]
        offset: Option<i64>,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// Stop after this many records.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Stop after this long without a record (default: never).
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Skip a batch that cannot be read (reported on stderr) instead of stopping with an
        /// error. Its records are lost to this reader.
        #[arg(long, conflicts_with = "group")]
        skip_corrupt: bool,
        /// Consume as a member of this consumer group: partitions are shared with the group's
        /// other members and progress is committed (--from-beginning applies when nothing is).
        #[arg(long, conflicts_with_all = ["offset", "partition"])]
        group: Option<String>,
    },
    /// List, describe, delete consumer groups, or reset or delete their committed offsets.
    #[command(subcommand)]
    Group(GroupAction),
    /// Inspect the cluster (brokers, controller, offline and under-replicated partitions).
    #[command(subcommand)]
    Cluster(ClusterAction),
}

#[derive(Subcommand)]
pub enum ClusterAction {
    /// Brokers (fenced ones marked), the controller, offline and under-replicated partitions.
    Describe {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Subcommand)]
pub enum GroupAction {
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// State, members and assignments, and per partition the committed offset, end and lag.
    Describe {
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Deletes an empty group and its committed offsets.
    Delete {
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Deletes the group's committed offsets of TOPIC's partitions; an active group keeps those
    /// of topics it consumes.
    DeleteOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Sets the committed offsets of TOPIC's partitions; only while the group has no members.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        #[command(flatten)]
        target: ResetTarget,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

/// Exactly one of the three.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end: the group skips everything produced so far.
    #[arg(long)]
    to_latest: bool,
    #[arg(long)]
    to_offset: Option<i64>,
}

impl ResetTarget {
    pub fn offset(&self) -> Option<i64> {
        self.to_offset
    }

    pub fn to_earliest(&self) -> bool {
        self.to_earliest
    }
}

#[derive(Subcommand)]
pub enum TopicAction {
    Create {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// Topic config, KEY=VALUE; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Describe {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    Delete {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Changes topic configs in place; other overrides are kept. Takes effect without a restart.
    #[command(arg_required_else_help = true)]
    Alter {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Override a config, KEY=VALUE; repeatable.
        #[arg(long = "config", value_parser = parse_key_value, required_unless_present = "delete_configs")]
        configs: Vec<(String, String)>,
        /// Remove an override, so the default applies again; repeatable.
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
    /// Deletes the records below OFFSET by moving the log start offset up.
    DeleteRecords {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// The new log start offset; -1 deletes everything consumers can read now.
        #[arg(long, allow_hyphen_values = true)]
        offset: i64,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_string(), value.to_string()))
}

pub fn run(action: ClientAction) -> ExitCode {
    tracing_init("warn");
    let outcome = runtime::run_main(async move {
        match action {
            ClientAction::Topic(action) => topic(action).await,
            ClientAction::Produce {
                topic,
                bootstrap,
                key_sep,
                acks,
                partition,
            } => produce(topic, bootstrap, key_sep, &acks, partition).await,
            ClientAction::Consume {
                topic,
                bootstrap,
                from_beginning,
                max_messages,
                idle_timeout_ms,
                group: Some(group),
                ..
            } => {
                let limits = (max_messages, idle_timeout_ms);
                consume_group(topic, bootstrap, group, from_beginning, limits).await
            }
            ClientAction::Consume {
                topic,
                bootstrap,
                from_beginning,
                offset,
                partition,
                max_messages,
                idle_timeout_ms,
                skip_corrupt,
                group: None,
            } => {
                let start = match (offset, from_beginning) {
                    (Some(offset), _) => Offset::At(offset),
                    (None, true) => Offset::Earliest,
                    (None, false) => Offset::Latest,
                };
                let limits = ConsumeLimits {
                    max_messages,
                    idle_timeout: idle_timeout_ms.map(Duration::from_millis),
                    skip_corrupt,
                };
                consume(topic, bootstrap, start, partition, limits).await
            }
            ClientAction::Group(action) => crate::cli_group::group(action).await,
            ClientAction::Cluster(ClusterAction::Describe { bootstrap }) => {
                crate::cli_cluster::describe(bootstrap).await
            }
        }
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("gregor: {message}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("gregor: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn config(bootstrap: &Bootstrap) -> ClientConfig {
    ClientConfig::new([bootstrap.bootstrap.clone()])
}

pub(crate) fn text(error: ClientError) -> String {
    error.to_string()
}

async fn topic(action: TopicAction) -> Result<(), String> {
    match action {
        TopicAction::Create {
            name,
            bootstrap,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            Admin::new(config(&bootstrap))
                .create_topic(&name, partitions, replication_factor, configs)
                .await
                .map_err(text)?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicAction::List { bootstrap } => {
            for name in Admin::new(config(&bootstrap))
                .list_topics()
                .await
                .map_err(text)?
            {
                println!("{name}");
            }
        }
        TopicAction::Describe { name, bootstrap } => {
            let mut admin = Admin::new(config(&bootstrap));
            let topics = admin
                .describe_topics(std::slice::from_ref(&name))
                .await
                .map_err(text)?;
            let configs = admin.describe_configs(&name).await.map_err(text)?;
            let mut consumer = Consumer::new(config(&bootstrap), ConsumerConfig::kafka_defaults());
            for topic in topics {
                println!("topic {} partitions {}", topic.name, topic.partitions.len());
                for partition in &topic.partitions {
                    let tp = TopicPartition::new(&topic.name, partition.partition);
                    let start = consumer.list_offsets(&tp, -2).await.map_err(text)?.offset;
                    let end = consumer.list_offsets(&tp, -1).await.map_err(text)?.offset;
                    let leader = partition
                        .leader
                        .map_or_else(|| "none".to_string(), |leader| leader.to_string());
                    println!(
                        "  partition {} leader {leader} replicas {:?} isr {:?} offsets {start}..{end}",
                        partition.partition, partition.replicas, partition.isr
                    );
                }
            }
            for (key, entry) in configs {
                let origin = if entry.is_default { "default" } else { "topic" };
                println!("  {key}={} ({origin})", entry.value.unwrap_or_default());
            }
        }
        TopicAction::Delete { name, bootstrap } => {
            let results = Admin::new(config(&bootstrap))
                .delete_topics(std::slice::from_ref(&name))
                .await
                .map_err(text)?;
            for (topic, result) in results {
                result.map_err(|error| format!("{topic}: {error}"))?;
                println!("deleted topic {topic}");
            }
        }
        TopicAction::Alter {
            name,
            bootstrap,
            configs,
            delete_configs,
        } => topic_alter(&name, &bootstrap, configs, delete_configs).await?,
        TopicAction::DeleteRecords {
            name,
            bootstrap,
            partition,
            offset,
        } => topic_delete_records(&name, &bootstrap, partition, offset).await?,
    }
    Ok(())
}

/// `gregor topic alter`: one IncrementalAlterConfigs, then the changed keys as now in force.
async fn topic_alter(
    name: &str,
    bootstrap: &Bootstrap,
    configs: Vec<(String, String)>,
    delete_configs: Vec<String>,
) -> Result<(), String> {
    let mut keys: Vec<String> = configs.iter().map(|(key, _)| key.clone()).collect();
    keys.extend(delete_configs.iter().cloned());
    let changes: Vec<ConfigChange> = configs
        .into_iter()
        .map(|(key, value)| ConfigChange::Set { key, value })
        .chain(
            delete_configs
                .into_iter()
                .map(|key| ConfigChange::Delete { key }),
        )
        .collect();
    let mut admin = Admin::new(config(bootstrap));
    admin
        .incremental_alter_configs(name, &changes)
        .await
        .map_err(text)?;
    let now = admin.describe_configs(name).await.map_err(text)?;
    println!("altered topic {name}");
    for key in keys {
        match now.get(&key) {
            Some(entry) => {
                let origin = if entry.is_default { "default" } else { "topic" };
                let value = entry.value.clone().unwrap_or_default();
                println!("  {key}={value} ({origin})");
            }
            // Accepted and ignored, as Kafka does (message.format.version).
            None => println!("  {key} ignored"),
        }
    }
    Ok(())
}

/// `gregor topic delete-records`: one DeleteRecords for the chosen partitions.
async fn topic_delete_records(
    name: &str,
    bootstrap: &Bootstrap,
    partition: Option<i32>,
    offset: i64,
) -> Result<(), String> {
    let mut admin = Admin::new(config(bootstrap));
    let partitions = topic_partitions(&mut admin, name, partition).await?;
    let offsets = partitions
        .into_iter()
        .map(|index| (TopicPartition::new(name, index), offset))
        .collect();
    let results = admin.delete_records(&offsets).await.map_err(text)?;
    let mut failed = 0;
    for (partition, result) in results {
        match result {
            Ok(low_watermark) => println!("{partition} log start offset {low_watermark}"),
            Err(error) => {
                failed += 1;
                eprintln!("{partition}: {error}");
            }
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(format!(
            "{failed} partition(s) of {name} refused; an offset must be at most the partition's end (see `gregor topic describe {name}`)"
        )),
    }
}

/// The partitions a command addresses: `partition` if given, else every one of `topic`.
pub(crate) async fn topic_partitions(
    admin: &mut Admin,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<i32>, String> {
    if let Some(partition) = partition {
        return Ok(vec![partition]);
    }
    let topics = admin
        .describe_topics(&[topic.to_string()])
        .await
        .map_err(text)?;
    Ok(topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition))
        .collect())
}

async fn produce(
    topic: String,
    bootstrap: Bootstrap,
    key_sep: Option<String>,
    acks: &str,
    partition: Option<i32>,
) -> Result<(), String> {
    let acks = match acks {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(format!("--acks {other}: expected 0, 1 or all")),
    };
    let producer = Producer::new(
        config(&bootstrap),
        ProducerConfig {
            acks,
            ..ProducerConfig::kafka_defaults()
        },
    );
    let mut records = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| format!("reading stdin: {error}"))?;
        let (key, value) = match key_sep.as_deref().and_then(|sep| line.split_once(sep)) {
            Some((key, value)) => (
                Some(Bytes::from(key.to_string())),
                Bytes::from(value.to_string()),
            ),
            None => (None, Bytes::from(line)),
        };
        let mut record = ProducerRecord::new(topic.clone(), key, Some(value));
        record.partition = partition;
        records.push(record);
    }
    let count = records.len();
    let results = producer.send_batch(records).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|result| result.err())
        .map(text)
        .collect();
    producer.close().await.map_err(text)?;
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} of {count} records failed; first: {first}",
            failures.len()
        ));
    }
    eprintln!("produced {count} record(s) to {topic}");
    Ok(())
}

/// When `gregor consume` stops, and what it does with a batch it cannot read.
struct ConsumeLimits {
    max_messages: Option<u64>,
    idle_timeout: Option<Duration>,
    skip_corrupt: bool,
}

async fn consume(
    topic: String,
    bootstrap: Bootstrap,
    start: Offset,
    partition: Option<i32>,
    limits: ConsumeLimits,
) -> Result<(), String> {
    let partitions = match partition {
        Some(partition) => vec![partition],
        None => {
            let topics = Admin::new(config(&bootstrap))
                .describe_topics(std::slice::from_ref(&topic))
                .await
                .map_err(text)?;
            topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.partition))
                .collect()
        }
    };
    let mut consumer = Consumer::new(config(&bootstrap), ConsumerConfig::kafka_defaults());
    let assignment = partitions
        .iter()
        .map(|p| (TopicPartition::new(&topic, *p), start))
        .collect();
    consumer.assign(assignment).await.map_err(text)?;
    let clock = runtime::Clock::system();
    let mut printed = 0u64;
    // Idle time is measured on the clock, not counted in polls: a poll can return early.
    let mut record_last_at = clock.now();
    let poll_wait = Duration::from_millis(500);
    loop {
        let records = match consumer.poll(poll_wait).await {
            Ok(records) => records,
            Err(ClientError::CorruptBatch {
                topic,
                partition,
                offset,
                skip_to,
                reason,
            }) if limits.skip_corrupt => {
                eprintln!(
                    "skipping offsets {offset}..{skip_to} of {topic}-{partition}: corrupt batch: {reason}"
                );
                let tp = TopicPartition::new(&topic, partition);
                consumer
                    .seek(&tp, Offset::At(skip_to))
                    .await
                    .map_err(text)?;
                continue;
            }
            Err(error @ ClientError::CorruptBatch { .. }) => {
                return Err(format!(
                    "{error}; stopping (rerun with --skip-corrupt to skip the batch)"
                ));
            }
            Err(error) => return Err(text(error)),
        };
        if !records.is_empty() {
            record_last_at = clock.now();
        }
        for record in records {
            print_record(&record);
            printed += 1;
            if limits.max_messages.is_some_and(|max| printed >= max) {
                return Ok(());
            }
        }
        let idle = clock.now().saturating_duration_since(record_last_at);
        if limits.idle_timeout.is_some_and(|timeout| idle >= timeout) {
            return Ok(());
        }
    }
}

/// `gregor consume --group`: a group member printing records and committing after each poll.
async fn consume_group(
    topic: String,
    bootstrap: Bootstrap,
    group: String,
    from_beginning: bool,
    (max_messages, idle_timeout_ms): (Option<u64>, Option<u64>),
) -> Result<(), String> {
    let consumer_config = ConsumerConfig {
        offset_reset: if from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..ConsumerConfig::kafka_defaults()
    };
    let mut member = GroupConsumer::new(
        config(&bootstrap),
        consumer_config,
        GroupConfig::kafka_defaults(group),
    );
    member.subscribe(std::slice::from_ref(&topic));
    let clock = runtime::Clock::system();
    let mut printed = 0u64;
    let mut record_last_at = clock.now();
    let poll_wait = Duration::from_millis(500);
    loop {
        let records = member.poll(poll_wait).await.map_err(text)?;
        if !records.is_empty() {
            record_last_at = clock.now();
        }
        let idle = clock.now().saturating_duration_since(record_last_at);
        // Commit exactly what was printed: the next run starts after it.
        let mut offsets = BTreeMap::new();
        let done = records.iter().any(|record| {
            print_record(record);
            let partition = TopicPartition::new(&record.topic, record.partition);
            offsets.insert(partition, record.offset + 1);
            printed += 1;
            max_messages.is_some_and(|max| printed >= max)
        });
        member.commit_offsets(&offsets).await.map_err(text)?;
        let idle_out = idle_timeout_ms.is_some_and(|t| idle >= Duration::from_millis(t));
        if done || idle_out {
            return member.close().await.map_err(text);
        }
    }
}

fn print_record(record: &client::ConsumerRecord) {
    let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
    match &record.key {
        Some(key) => println!("{}\t{value}", String::from_utf8_lossy(key)),
        None => println!("{value}"),
    }
}

/// Human-readable logs on stderr, filtered by `level` (a tracing-subscriber filter).
pub fn tracing_init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
