//! The on-disk layout of small logs, as inline snapshots: file names, sizes and the batches in
//! each segment after appends and rolls, retention, compaction and truncation. One helper,
//! `log_after`, runs a small script and renders the directory (STYLE.md 16).

mod common;

use common::*;
use kafka_protocol::records::Compression;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use storage::{CleanupPolicy, PartitionLog};
use wire::batch::build::{batch_encode, RecordSpec};

/// Runs `script` (one command per line) against a fresh log on a `MemDisk` and renders the
/// directory and the log's offsets. Commands:
/// `config segment_bytes=N retention_ms=N retention_bytes=N cleanup=delete|compact|both`,
/// `append key=value@ts ...` (one batch; `-` is no key, `null` a tombstone),
/// `fill count=N bytes=N ts=N` (N one-record batches), `flush`, `retention now=T`,
/// `compact now=T`, `truncate O`, `start O` (advance the log start), `crash` (lose unsynced
/// bytes and reopen), `reopen`.
fn log_after(script: &str) -> String {
    let disk = mem_disk();
    let mut config = config_small();
    let mut log: Option<PartitionLog> = None;
    for line in script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let (command, arguments) = line.split_once(' ').unwrap_or((line, ""));
        if command == "config" {
            config_apply(&mut config, arguments);
            continue;
        }
        let log_now = log.get_or_insert_with(|| open(&disk, config.clone()));
        match command {
            "append" => {
                log_now.append(batch_parse(arguments), 0, 0).unwrap();
            }
            "fill" => fill(log_now, arguments),
            "flush" => log_now.flush().unwrap(),
            "retention" => {
                log_now.retention_enforce(number(arguments, "now")).unwrap();
            }
            "compact" => {
                log_now.compact(number(arguments, "now")).unwrap();
            }
            "truncate" => log_now.truncate_to(arguments.parse().unwrap()).unwrap(),
            "start" => log_now
                .advance_log_start_offset(arguments.parse().unwrap())
                .unwrap(),
            "crash" | "reopen" => {
                if command == "crash" {
                    disk.crash(
                        CrashOptions::LoseUnsynced,
                        &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
                    );
                }
                log = Some(open(&disk, config.clone()));
            }
            other => panic!("unknown command {other}"),
        }
    }
    let log = log.unwrap_or_else(|| open(&disk, config.clone()));
    format!(
        "{}\nlog_start={} log_end={} recovery_point={} segments={}",
        layout(&disk, &dir()),
        log.log_start_offset(),
        log.log_end_offset(),
        log.recovery_point(),
        log.segment_count()
    )
}

fn number(arguments: &str, name: &str) -> i64 {
    let prefix = format!("{name}=");
    let word = arguments
        .split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()));
    word.unwrap_or_else(|| panic!("missing {name}= in {arguments:?}"))
        .parse()
        .unwrap()
}

fn config_apply(config: &mut storage::LogConfig, arguments: &str) {
    for word in arguments.split_whitespace() {
        let (name, value) = word.split_once('=').unwrap();
        match name {
            "segment_bytes" => config.segment_bytes = value.parse().unwrap(),
            "retention_ms" => config.retention_ms = Some(value.parse().unwrap()),
            "retention_bytes" => config.retention_bytes = Some(value.parse().unwrap()),
            "delete_retention_ms" => config.delete_retention_ms = value.parse().unwrap(),
            "cleanup" => {
                config.cleanup_policy = match value {
                    "delete" => CleanupPolicy::Delete,
                    "compact" => CleanupPolicy::Compact,
                    _ => CleanupPolicy::CompactAndDelete,
                }
            }
            other => panic!("unknown config {other}"),
        }
    }
}

fn batch_parse(arguments: &str) -> wire::ValidatedBatch {
    let records: Vec<RecordSpec> = arguments
        .split_whitespace()
        .map(|spec| {
            let (pair, timestamp) = spec.split_once('@').unwrap();
            let (key, value) = pair.split_once('=').unwrap();
            let key = (key != "-").then_some(key);
            let value = (value != "null").then_some(value);
            record(key, value, timestamp.parse().unwrap())
        })
        .collect();
    batch_encode(&records, Compression::None)
}

fn fill(log: &mut PartitionLog, arguments: &str) {
    for index in 0..number(arguments, "count") {
        let batch = batch_sized(
            1,
            number(arguments, "bytes") as usize,
            number(arguments, "ts") + index,
        );
        log.append(batch, 0, 0).unwrap();
    }
}

#[test]
fn empty_log() {
    insta::assert_snapshot!(log_after(""), @"
    00000000000000000000.log 0B []
    leader-epoch-checkpoint 4B
    log.checkpoint 75B
    log_start=0 log_end=0 recovery_point=0 segments=1
    ");
}

#[test]
fn rolls_when_the_segment_is_full() {
    insta::assert_snapshot!(log_after("
        fill count=7 bytes=60 ts=100
    "), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.index 16B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000003.timeindex 36B
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=7 recovery_point=6 segments=3
    ");
}

#[test]
fn retention_by_time_and_size() {
    insta::assert_snapshot!(log_after("
        config retention_ms=1000
        fill count=7 bytes=60 ts=100
        flush
        retention now=1103
    "), @"
    00000000000000000003.index 16B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000003.timeindex 36B
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=3 log_end=7 recovery_point=7 segments=2
    ");
    insta::assert_snapshot!(log_after("
        config retention_bytes=300
        fill count=9 bytes=60 ts=100
        retention now=0
    "), @"
    00000000000000000006.log 387B [6..6 7..7 8..8]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=6 log_end=9 recovery_point=6 segments=1
    ");
}

#[test]
fn retention_honours_the_log_start_offset() {
    insta::assert_snapshot!(log_after("
        fill count=7 bytes=60 ts=100
        start 5
        retention now=0
        reopen
    "), @"
    00000000000000000003.index 16B
    00000000000000000003.log 387B [3..3 4..4 5..5]
    00000000000000000003.timeindex 36B
    00000000000000000006.log 129B [6..6]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=5 log_end=7 recovery_point=7 segments=2
    ");
}

#[test]
fn compaction_keeps_the_latest_per_key() {
    insta::assert_snapshot!(log_after("
        config cleanup=compact segment_bytes=200
        append a=1@10 b=1@10
        append a=2@20 -=keyless@20
        append b=null@30 c=1@30
        append a=3@40
        append c=2@50
        compact now=35
    "), @"
    00000000000000000000.index 0B
    00000000000000000000.log 75B [2..3]
    00000000000000000000.timeindex 12B
    00000000000000000004.index 0B
    00000000000000000004.log 148B [4..5 6..6]
    00000000000000000004.timeindex 12B
    00000000000000000007.log 70B [7..7]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=8 recovery_point=7 segments=3
    ");
}

#[test]
fn compaction_drops_old_tombstones() {
    insta::assert_snapshot!(log_after("
        config cleanup=compact segment_bytes=200 delete_retention_ms=100
        append a=1@10 b=1@10
        append b=null@30
        append c=1@40
        append d=1@50
        compact now=131
    "), @"
    00000000000000000000.index 0B
    00000000000000000000.log 70B [0..1]
    00000000000000000000.timeindex 12B
    00000000000000000003.log 140B [3..3 4..4]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=5 recovery_point=3 segments=2
    ");
}

#[test]
fn truncation_removes_later_segments() {
    insta::assert_snapshot!(log_after("
        fill count=7 bytes=60 ts=100
        truncate 3
        crash
    "), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 0B []
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=3 recovery_point=3 segments=2
    ");
}

#[test]
fn a_crash_loses_only_unflushed_batches() {
    insta::assert_snapshot!(log_after("
        fill count=4 bytes=60 ts=100
        flush
        fill count=2 bytes=60 ts=200
        crash
    "), @"
    00000000000000000000.index 16B
    00000000000000000000.log 387B [0..0 1..1 2..2]
    00000000000000000000.timeindex 36B
    00000000000000000003.log 129B [3..3]
    leader-epoch-checkpoint 8B
    log.checkpoint 75B
    log_start=0 log_end=4 recovery_point=4 segments=2
    ");
}
