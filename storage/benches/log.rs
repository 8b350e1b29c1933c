//! `cargo bench -p storage`: append and read throughput of `PartitionLog` on `RealDisk`.
//!
//! Appends are group-committed as the broker does it: many appends, then one `flush_begin`,
//! `FlushTicket::sync` (fdatasync) and `flush_complete`. Batches are built once per shape and
//! copied into a fresh buffer before each append (outside the timed region), as a request
//! buffer would arrive. Reads go through the page cache, which the appends just filled.
//! Prints MB/s (10^6 bytes), records/s and, for appends, the p50/p99 latency of one flush.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage::{LogConfig, PartitionLog, MIB};
use wire::batch::build::{batch_encode, RecordSpec};
use wire::ValidatedBatch;

/// Bytes appended per append scenario: enough for steady state, small enough for ~60 s total.
const APPEND_BYTES_TOTAL: u64 = 768 * MIB;

struct Shape {
    name: &'static str,
    record_bytes: usize,
    batch_bytes: usize,
    /// Appends between two flushes (group commit).
    flush_every_appends: u64,
}

/// The largest batch of `record_bytes` records that fits `batch_bytes`, and its record count.
fn batch_build(record_bytes: usize, batch_bytes: usize) -> (Bytes, usize) {
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let mut count = (batch_bytes / record_bytes).max(1);
    // Bounded: the count shrinks every round and one record always fits.
    loop {
        let records: Vec<RecordSpec> = (0..count)
            .map(|index| RecordSpec {
                key: Some(Bytes::from(format!("key-{index}"))),
                value: Some(value.clone()),
                headers: Vec::new(),
                timestamp: 1_700_000_000_000,
            })
            .collect();
        let batch = batch_encode(&records, Compression::None).into_bytes();
        if batch.len() <= batch_bytes || count == 1 {
            return (batch, count);
        }
        count -= (count / 100).max(1);
    }
}

fn dir_fresh(name: &str) -> PathBuf {
    let root = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = root.join("storage-bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn append_run(shape: &Shape) -> PathBuf {
    let dir = dir_fresh(shape.name);
    let mut log = PartitionLog::open(
        runtime::RealDisk::new(),
        dir.clone(),
        LogConfig::kafka_defaults(),
        0,
    )
    .unwrap();
    let (batch, records_per_batch) = batch_build(shape.record_bytes, shape.batch_bytes);
    let batch_count = APPEND_BYTES_TOTAL / batch.len() as u64;
    let (mut busy, mut flushes, mut unflushed) = (Duration::ZERO, Vec::new(), 0);
    for index in 0..batch_count {
        let fresh = ValidatedBatch::validate(BytesMut::from(&batch[..]).freeze()).unwrap();
        let start = Instant::now();
        log.append(fresh, 0, index as i64).unwrap();
        unflushed += 1;
        if unflushed == shape.flush_every_appends || index + 1 == batch_count {
            let flush_start = Instant::now();
            let ticket = log.flush_begin();
            ticket.sync().unwrap();
            log.flush_complete(ticket);
            flushes.push(flush_start.elapsed());
            unflushed = 0;
        }
        busy += start.elapsed();
    }
    assert_eq!(log.recovery_point(), log.log_end_offset());
    flushes.sort();
    let bytes = batch_count * batch.len() as u64;
    println!(
        "append {:<34} {:>5} MiB {:>7.0} MB/s {:>10.0} records/s  flush p50 {:>6.2} ms p99 {:>6.2} ms ({} flushes)",
        shape.name,
        bytes / MIB,
        bytes as f64 / busy.as_secs_f64() / 1e6,
        (batch_count * records_per_batch as u64) as f64 / busy.as_secs_f64(),
        percentile(&flushes, 0.5).as_secs_f64() * 1e3,
        percentile(&flushes, 0.99).as_secs_f64() * 1e3,
        flushes.len(),
    );
    dir
}

fn read_run(dir: PathBuf, name: &str, max_bytes: usize) {
    let log = PartitionLog::open(
        runtime::RealDisk::new(),
        dir.clone(),
        LogConfig::kafka_defaults(),
        0,
    )
    .unwrap();
    let (mut bytes, mut batches, mut reads) = (0u64, 0usize, 0usize);
    let start = Instant::now();
    // Two passes so the second is all page cache whatever the first found.
    for _ in 0..2 {
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, max_bytes, i64::MAX).unwrap();
            bytes += read.bytes.len() as u64;
            batches += read.batch_count;
            reads += 1;
            offset = read.next_offset;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "read   {:<34} {:>5} MiB {:>7.0} MB/s {:>10.0} batches/s ({reads} reads of {} KiB, every batch CRC-checked)",
        name,
        bytes / MIB,
        bytes as f64 / seconds / 1e6,
        batches as f64 / seconds,
        max_bytes / 1024,
    );
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    const KIB: usize = 1024;
    let batch_mib = MIB as usize;
    let shapes = [
        Shape {
            name: "1 KiB records, 1 MiB batches, flush each",
            record_bytes: 1024,
            batch_bytes: batch_mib,
            flush_every_appends: 1,
        },
        Shape {
            name: "1 KiB records, 1 MiB batches, flush/16",
            record_bytes: 1024,
            batch_bytes: batch_mib,
            flush_every_appends: 16,
        },
        Shape {
            name: "1 KiB records, 64 KiB batches, flush/16",
            record_bytes: 1024,
            batch_bytes: 64 * KIB,
            flush_every_appends: 16,
        },
        Shape {
            name: "100 B records, 16 KiB batches, flush/64",
            record_bytes: 100,
            batch_bytes: 16 * KIB,
            flush_every_appends: 64,
        },
        Shape {
            name: "100 B records, 16 KiB batches, flush/16",
            record_bytes: 100,
            batch_bytes: 16 * KIB,
            flush_every_appends: 16,
        },
    ];
    let started = Instant::now();
    for (index, shape) in shapes.iter().enumerate() {
        let dir = append_run(shape);
        match index {
            0 => read_run(dir, "1 MiB batches, 1 MiB fetches", MIB as usize),
            3 => read_run(dir, "16 KiB batches, 1 MiB fetches", MIB as usize),
            _ => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
