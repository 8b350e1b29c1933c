//! The `Retention` and `Compaction` workloads' additions to the plain one (`workload`): the
//! topic's cleanup configs, records with keys, tombstones and odd timestamps, a watcher that
//! records the log start the broker reports, and consumers that, when retention takes the
//! records under their position, record the log start and move up to it.
//!
//! What may legitimately vanish is judged by the checker (`checks::retention`,
//! `checks::compaction`) from what this records: the topic's settings, each record's key,
//! tombstone flag and timestamp, and every log start the broker reported.

use crate::options::{LogPolicy, Options};
use crate::recorder::Recorder;
use crate::world::TOPIC;
use bytes::Bytes;
use checker::{EventKind, OffsetQuery, Op, Partition, RecordSpec};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The header that carries a record's value id, so a tombstone (null value) still names its send.
pub(crate) const VALUE_HEADER: &str = "v";

/// The header that pads records in seeds with `Options::record_padding_max`.
const PADDING_HEADER: &str = "pad";
/// The log-start watcher's process id.
pub(crate) const WATCHER_PROCESS: u64 = 900;
/// Ten years, for timestamps far from now.
const FAR_MS: i64 = 10 * 365 * 24 * 3_600 * 1_000;
/// An upper bound on the bytes one record takes in the log: every batch holds one record
/// (each producer waits for its send), with a 61-byte batch header, a key of at most 3 bytes, a
/// value id of at most 8 digits (also in a 1-byte-named header for keyed records), a timestamp
/// delta of 0 and one-byte varint lengths: about 100 bytes; 128 leaves room.
const RECORD_BYTES_MAX: u64 = 128;

/// The topic configs the policy asks for.
pub(crate) fn topic_configs(policy: &LogPolicy) -> BTreeMap<String, String> {
    let mut configs = BTreeMap::new();
    let cleanup = match (policy.compact, policy.delete) {
        (true, true) => "compact,delete",
        (true, false) => "compact",
        _ => "delete",
    };
    configs.insert("cleanup.policy".to_string(), cleanup.to_string());
    if let Some(ms) = policy.retention_ms {
        configs.insert("retention.ms".to_string(), ms.to_string());
    }
    if let Some(bytes) = policy.retention_bytes {
        configs.insert("retention.bytes".to_string(), bytes.to_string());
    }
    configs.insert(
        "delete.retention.ms".to_string(),
        policy.delete_retention_ms.to_string(),
    );
    configs
}

/// The topic's settings as the checker reads them.
pub(crate) fn topic_settings(policy: &LogPolicy) -> checker::TopicSettings {
    checker::TopicSettings {
        delete: policy.delete,
        compact: policy.compact,
        // The broker's default (a week) when unset: nothing in a run is that old, except
        // records stamped far in the past, which the default does delete.
        retention_ms: policy.retention_ms.or(Some(7 * 24 * 3_600 * 1_000)),
        retention_bytes: policy.retention_bytes,
        delete_retention_ms: policy.delete_retention_ms,
        offset_bytes_max: RECORD_BYTES_MAX,
    }
}

/// Builds the record for `value` and records what it holds. Draws from `rng` only under a log
/// policy, so plain workloads keep their worlds.
pub(crate) fn record_build(
    options: &Options,
    rng: &mut impl Rng,
    recorder: &Recorder,
    partition: &Partition,
    value: i64,
) -> client::ProducerRecord {
    let value_bytes = Bytes::from(value.to_string());
    let Some(policy) = &options.log_policy else {
        let mut record = client::ProducerRecord::new(TOPIC, None, Some(value_bytes));
        if options.record_padding_max > 0 {
            let padding = vec![b'p'; rng.gen_range(0..=options.record_padding_max)];
            record.headers = vec![(PADDING_HEADER.to_string(), Some(Bytes::from(padding)))];
        }
        return record;
    };
    let now_ms = runtime::Clock::system().wall_ms();
    let timestamp = timestamp_draw(policy, rng, now_ms);
    let key = (policy.key_count > 0).then(|| rng.gen_range(0..policy.key_count));
    let tombstone = key.is_some() && rng.gen_bool(policy.tombstone_rate);
    let spec = RecordSpec {
        key,
        tombstone,
        timestamp,
    };
    recorder.record_spec(partition, value, spec);
    let mut record = client::ProducerRecord::new(
        TOPIC,
        key.map(|key| Bytes::from(format!("k{key}"))),
        (!tombstone).then(|| value_bytes.clone()),
    );
    if key.is_some() {
        record.headers = vec![(VALUE_HEADER.to_string(), Some(value_bytes))];
    }
    record.timestamp_ms = Some(timestamp);
    record
}

/// The current time, or now and then none (-1), 0, far in the past or far in the future.
fn timestamp_draw(policy: &LogPolicy, rng: &mut impl Rng, now_ms: i64) -> i64 {
    let draw: f64 = rng.gen();
    let mut threshold = 0.0;
    for (rate, timestamp) in [
        (policy.timestamp_none_rate, -1),
        (policy.timestamp_zero_rate, 0),
        (policy.timestamp_past_rate, now_ms - FAR_MS),
        (policy.timestamp_future_rate, now_ms + FAR_MS),
    ] {
        threshold += rate;
        if draw < threshold {
            return timestamp;
        }
    }
    now_ms
}

/// Asks the log start of `partition` and records it (`ListOffsets` earliest).
pub(crate) async fn log_start_list(
    process: u64,
    consumer: &mut client::Consumer,
    partition: &Partition,
    recorder: &Recorder,
    deadline: Duration,
) -> Option<i64> {
    let invoke = Op::ListOffsets {
        partition: partition.clone(),
        query: OffsetQuery::Earliest,
        offset: None,
        timestamp: None,
        leader_epoch: None,
    };
    recorder.event(process, EventKind::Invoke, invoke.clone());
    let asked = client::TopicPartition::new(&partition.topic, partition.partition);
    let listed = runtime::time::timeout(
        deadline,
        consumer.list_offsets(&asked, client::offsets::TIMESTAMP_EARLIEST),
    )
    .await;
    match listed {
        Ok(Ok(listed)) => {
            let op = Op::ListOffsets {
                partition: partition.clone(),
                query: OffsetQuery::Earliest,
                offset: Some(listed.offset),
                timestamp: None,
                leader_epoch: Some(listed.leader_epoch),
            };
            recorder.event(process, EventKind::Ok, op);
            Some(listed.offset)
        }
        Ok(Err(_)) => {
            recorder.event(process, EventKind::Fail, invoke);
            None
        }
        Err(_) => {
            recorder.event(process, EventKind::Info, invoke);
            None
        }
    }
}

/// After a failed poll: any partition whose position retention deleted (below the log start,
/// `OFFSET_OUT_OF_RANGE` for a consumer that must not reset on its own) moves up to the log
/// start, both recorded, so the checker sees why the consumer jumped.
pub(crate) async fn positions_resync(
    process: u64,
    consumer: &mut client::Consumer,
    partitions: &[Partition],
    recorder: &Recorder,
    deadline: Duration,
) {
    for partition in partitions {
        let asked = client::TopicPartition::new(&partition.topic, partition.partition);
        let Some(position) = consumer.position(&asked) else {
            continue;
        };
        let Some(log_start) =
            log_start_list(process, consumer, partition, recorder, deadline).await
        else {
            continue;
        };
        if position >= log_start {
            continue;
        }
        let seek = Op::Seek {
            offsets: BTreeMap::from([(partition.clone(), log_start)]),
        };
        recorder.event(process, EventKind::Invoke, seek.clone());
        let kind = match consumer.seek(&asked, client::Offset::At(log_start)).await {
            Ok(()) => EventKind::Ok,
            Err(_) => EventKind::Fail,
        };
        recorder.event(process, kind, seek);
    }
}

/// Records every partition's log start every few hundred milliseconds until `stop`: the
/// reports early-deletion is judged by.
pub(crate) async fn watcher_run(
    options: Options,
    config: client::ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = runtime::rng::stream_rng(
        options.seed,
        runtime::rng::Stream::Workload,
        crate::workload::process_index(WATCHER_PROCESS),
    );
    let mut consumer = client::Consumer::new(config, crate::workload::consumer_config());
    let partitions: Vec<Partition> = (0..options.topic_partitions)
        .map(|index| Partition::new(TOPIC, index))
        .collect();
    while !stop.load(Ordering::SeqCst) {
        for partition in &partitions {
            let deadline = options.request_timeout * 2;
            log_start_list(
                WATCHER_PROCESS,
                &mut consumer,
                partition,
                &recorder,
                deadline,
            )
            .await;
        }
        runtime::time::sleep(Duration::from_millis(rng.gen_range(100..1_000))).await;
    }
}
