//! Model test: random operation sequences (appends, reads, flushes with group commit,
//! retention, truncation, DeleteRecords, compaction, timestamp lookups, and crashes that tear or
//! lose unsynced bytes) run against `PartitionLog` on a `MemDisk` and against a tiny in-memory
//! model. After every operation the whole log must read back exactly as the model says.
//!
//! The model is a list of stored batches (their exact bytes) plus the offsets. Where the log has
//! a choice the model cannot predict without knowing segment boundaries (what retention and
//! compaction removed, how much of the unsynced tail a crash kept), the model checks that the
//! choice was allowed and then adopts it:
//! - crash: the recovered log is the synced prefix plus a prefix of the unsynced batches;
//! - retention: only expired batches (or batches below the log start) went;
//! - compaction: surviving records are unchanged, a record went only if a later record has its
//!   key (or it is an expired tombstone), and every key's latest record survives.

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use proptest::prelude::*;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use std::collections::BTreeMap;
use storage::{CleanupPolicy, LogConfig, LogError, PartitionLog, TimestampType};
use wire::batch::build::{batch_encode, RecordSpec};
use wire::ValidatedBatch;

const RETENTION_MS: i64 = 400;
const DELETE_RETENTION_MS: i64 = 100;
const MAX_MESSAGE_BYTES: u32 = 1_500;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: Vec<(Option<u8>, Option<u16>)>,
        replicated: bool,
        epoch_bump: bool,
    },
    AppendTooLarge,
    Read {
        offset: u16,
        max_bytes: u16,
        max_offset: u16,
    },
    Flush,
    /// Group commit: begin, more appends, sync, complete.
    FlushSplit {
        records: u8,
    },
    Retention,
    Truncate {
        offset: u16,
    },
    AdvanceStart {
        offset: u16,
    },
    Compact,
    OffsetForTimestamp {
        back_ms: u16,
    },
    Crash {
        tear: bool,
        seed: u64,
    },
    Tick {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        prop::option::weighted(0.8, 0u8..5),
        prop::option::weighted(0.9, 0u16..200),
    );
    prop_oneof![
        12 => (prop::collection::vec(record, 1..4), prop::bool::weighted(0.2), prop::bool::weighted(0.1))
            .prop_map(|(records, replicated, epoch_bump)| Op::Append { records, replicated, epoch_bump }),
        1 => Just(Op::AppendTooLarge),
        4 => (any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(offset, max_bytes, max_offset)| Op::Read { offset, max_bytes: max_bytes % 2000, max_offset }),
        2 => Just(Op::Flush),
        2 => (1u8..4).prop_map(|records| Op::FlushSplit { records }),
        2 => Just(Op::Retention),
        1 => any::<u16>().prop_map(|offset| Op::Truncate { offset }),
        1 => any::<u16>().prop_map(|offset| Op::AdvanceStart { offset }),
        2 => Just(Op::Compact),
        1 => any::<u16>().prop_map(|back_ms| Op::OffsetForTimestamp { back_ms: back_ms % 600 }),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(tear, seed)| Op::Crash { tear, seed }),
        3 => (0u16..200).prop_map(|ms| Op::Tick { ms }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp: i64,
}

#[derive(Debug, Clone)]
struct ModelBatch {
    batch: ValidatedBatch,
    records: Vec<ModelRecord>,
}

impl ModelBatch {
    fn new(batch: ValidatedBatch) -> ModelBatch {
        let decoded = RecordBatchDecoder::decode(&mut batch.bytes().clone()).expect("decodable");
        let records = decoded
            .records
            .into_iter()
            .map(|record| ModelRecord {
                offset: record.offset,
                key: record.key,
                value: record.value,
                timestamp: record.timestamp,
            })
            .collect();
        ModelBatch { batch, records }
    }
    fn base(&self) -> i64 {
        self.batch.header().base_offset
    }
    fn last(&self) -> i64 {
        self.batch.header().last_offset()
    }
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    log_start: i64,
    log_end: i64,
    /// What a `flush` or completed ticket made durable (the log may have synced more at rolls).
    flushed_end: i64,
    epoch: i32,
    epochs: Vec<(i32, i64)>,
    now_ms: i64,
}

impl Model {
    fn epoch_assign(&mut self, epoch: i32, start: i64) {
        if self
            .epochs
            .last()
            .is_some_and(|(latest, _)| epoch <= *latest)
        {
            return;
        }
        while self
            .epochs
            .last()
            .is_some_and(|(_, last_start)| *last_start >= start)
        {
            self.epochs.pop();
        }
        self.epochs.push((epoch, start));
    }

    fn epochs_truncate_from_start(&mut self) {
        let below = self
            .epochs
            .iter()
            .take_while(|(_, start)| *start < self.log_start)
            .count();
        if below > 0 {
            let epoch = self.epochs[below - 1].0;
            let exact = self
                .epochs
                .get(below)
                .is_some_and(|(_, start)| *start == self.log_start);
            self.epochs.drain(..below);
            if !exact {
                self.epochs.insert(0, (epoch, self.log_start));
            }
        }
    }

    /// Keeps only batches ending below `log_end` (truncation, crash).
    fn cut(&mut self, log_end: i64) {
        self.batches.retain(|batch| batch.last() < log_end);
        self.log_end = log_end;
        self.flushed_end = self.flushed_end.min(log_end);
        self.log_start = self.log_start.min(log_end);
        self.epochs.retain(|(_, start)| *start < log_end);
    }

    /// What `read` must return.
    fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> (Vec<u8>, usize, i64) {
        let limit = max_offset.min(self.log_end);
        let mut bytes = Vec::new();
        let mut next_offset = offset;
        let mut count = 0;
        for batch in self.batches.iter().filter(|batch| batch.last() >= offset) {
            let fits = count == 0 || bytes.len() + batch.batch.size() <= max_bytes;
            // A read stops before a gap (whole batches compacted away): see `read.rs`.
            let gap = count > 0 && batch.base() > next_offset;
            if offset >= limit || batch.last() >= limit || !fits || gap {
                break;
            }
            bytes.extend_from_slice(batch.batch.bytes());
            next_offset = batch.last() + 1;
            count += 1;
        }
        (bytes, count, next_offset)
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Option<(i64, i64)> {
        let records = self.batches.iter().flat_map(|batch| batch.records.iter());
        records
            .filter(|record| record.offset >= self.log_start && record.timestamp >= timestamp)
            .map(|record| (record.offset, record.timestamp))
            .next()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        segment_ms: 2_000,
        retention_ms: Some(RETENTION_MS),
        retention_bytes: None,
        cleanup_policy: CleanupPolicy::CompactAndDelete,
        delete_retention_ms: DELETE_RETENTION_MS,
        index_interval_bytes: 150,
        max_message_bytes: MAX_MESSAGE_BYTES,
        message_timestamp_type: TimestampType::CreateTime,
    }
}

fn batch_of(records: &[(Option<u8>, Option<u16>)], now_ms: i64) -> ValidatedBatch {
    let specs: Vec<RecordSpec> = records
        .iter()
        .enumerate()
        .map(|(index, (key, value_bytes))| RecordSpec {
            key: key.map(|key| Bytes::from(format!("k{key}"))),
            value: value_bytes.map(|bytes| Bytes::from("x".repeat(bytes as usize))),
            headers: vec![("h".into(), Some(Bytes::from(format!("{index}"))))],
            timestamp: now_ms - index as i64,
        })
        .collect();
    batch_encode(&specs, Compression::None)
}

struct Harness {
    disk: std::sync::Arc<runtime::MemDisk>,
    log: PartitionLog,
    model: Model,
}

impl Harness {
    fn pick(&self, raw: u16, above_end: i64) -> i64 {
        let span = self.model.log_end - self.model.log_start + 1 + above_end;
        self.model.log_start + i64::from(raw) % span
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append {
                records,
                replicated,
                epoch_bump,
            } => self.append(records, *replicated, *epoch_bump)?,
            Op::AppendTooLarge => {
                let batch = batch_of(&[(None, Some(MAX_MESSAGE_BYTES as u16))], self.model.now_ms);
                let result = self.log.append(batch, self.model.epoch, self.model.now_ms);
                prop_assert!(
                    matches!(result, Err(LogError::RecordTooLarge { .. })),
                    "{result:?}"
                );
            }
            Op::Read {
                offset,
                max_bytes,
                max_offset,
            } => self.read(*offset, *max_bytes, *max_offset)?,
            Op::Flush => {
                self.log.flush().unwrap();
                self.model.flushed_end = self.model.log_end;
            }
            Op::FlushSplit { records } => {
                let ticket = self.log.flush_begin();
                let covered = self.model.log_end;
                prop_assert_eq!(ticket.offset_end(), covered);
                for _ in 0..*records {
                    self.append(&[(Some(0), Some(10))], false, false)?;
                }
                ticket.sync().unwrap();
                self.log.flush_complete(ticket);
                self.model.flushed_end = self.model.flushed_end.max(covered);
            }
            Op::Retention => self.retention()?,
            Op::Truncate { offset } => self.truncate(self.pick(*offset, 0))?,
            Op::AdvanceStart { offset } => {
                let offset = self.pick(*offset, 0);
                self.log.advance_log_start_offset(offset).unwrap();
                if offset > self.model.log_start {
                    self.model.log_start = offset;
                    self.model.flushed_end = self.model.flushed_end.max(offset);
                    self.model.epochs_truncate_from_start();
                }
            }
            Op::Compact => self.compact()?,
            Op::OffsetForTimestamp { back_ms } => {
                let timestamp = self.model.now_ms - i64::from(*back_ms);
                let found = self.log.offset_for_timestamp(timestamp).unwrap();
                prop_assert_eq!(
                    found,
                    self.model.offset_for_timestamp(timestamp),
                    "at {}",
                    timestamp
                );
            }
            Op::Crash { tear, seed } => self.crash(*tear, *seed)?,
            Op::Tick { ms } => self.model.now_ms += i64::from(*ms),
        }
        self.check()
    }

    fn append(
        &mut self,
        records: &[(Option<u8>, Option<u16>)],
        replicated: bool,
        epoch_bump: bool,
    ) -> Result<(), TestCaseError> {
        self.model.now_ms += 1;
        self.model.epoch += i32::from(epoch_bump);
        let batch = batch_of(records, self.model.now_ms);
        let base = self.model.log_end;
        let info = if replicated {
            let placed = batch.with_placement(base, self.model.epoch);
            let wrong = placed.clone().with_placement(base + 1, self.model.epoch);
            let mismatch = self.log.append_replicated(wrong);
            prop_assert!(
                matches!(mismatch, Err(LogError::OffsetMismatch { .. })),
                "{mismatch:?}"
            );
            self.log.append_replicated(placed).unwrap()
        } else {
            self.log
                .append(batch, self.model.epoch, self.model.now_ms)
                .unwrap()
        };
        prop_assert_eq!(info.base_offset, base);
        let stored = self.log.read(base, 1, i64::MAX).unwrap();
        let stored = ValidatedBatch::validate(stored.bytes).unwrap();
        prop_assert_eq!(stored.header().partition_leader_epoch, self.model.epoch);
        self.model.log_end = info.last_offset + 1;
        self.model.epoch_assign(self.model.epoch, base);
        self.model.batches.push(ModelBatch::new(stored));
        Ok(())
    }

    fn read(&mut self, offset: u16, max_bytes: u16, max_offset: u16) -> Result<(), TestCaseError> {
        let offset = match offset % 10 {
            0 => self.model.log_end + 1,
            1 if self.model.log_start > 0 => self.model.log_start - 1,
            _ => self.pick(offset, 0),
        };
        let max_offset = self.pick(max_offset, 3);
        let result = self.log.read(offset, max_bytes as usize, max_offset);
        if offset < self.model.log_start || offset > self.model.log_end {
            prop_assert!(
                matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                "{result:?}"
            );
            return Ok(());
        }
        let result = result.unwrap();
        let (bytes, count, next_offset) = self.model.read(offset, max_bytes as usize, max_offset);
        prop_assert_eq!(
            &result.bytes[..],
            &bytes[..],
            "read({}, {}, {})",
            offset,
            max_bytes,
            max_offset
        );
        prop_assert_eq!(result.batch_count, count);
        prop_assert_eq!(result.next_offset, next_offset);
        Ok(())
    }

    fn retention(&mut self) -> Result<(), TestCaseError> {
        let outcome = self.log.retention_enforce(self.model.now_ms).unwrap();
        let log_start = self.log.log_start_offset();
        prop_assert!(log_start >= self.model.log_start);
        for batch in self
            .model
            .batches
            .iter()
            .filter(|batch| batch.last() < log_start)
        {
            let below_start = batch.last() < self.model.log_start;
            let expired = self.model.now_ms - batch.batch.header().max_timestamp > RETENTION_MS;
            prop_assert!(
                below_start || expired,
                "retention deleted a live batch at {}",
                batch.base()
            );
        }
        self.model.batches.retain(|batch| batch.last() >= log_start);
        if log_start > self.model.log_start {
            self.model.log_start = log_start;
            self.model.epochs_truncate_from_start();
        }
        if outcome.rolled {
            self.model.flushed_end = self.model.log_end;
        }
        Ok(())
    }

    fn truncate(&mut self, offset: i64) -> Result<(), TestCaseError> {
        self.log.truncate_to(offset).unwrap();
        let log_end = self.log.log_end_offset();
        let kept_end = self
            .model
            .batches
            .iter()
            .filter(|b| b.last() < offset)
            .map(|b| b.last() + 1)
            .max();
        let removed_base = self
            .model
            .batches
            .iter()
            .find(|b| b.last() >= offset)
            .map(ModelBatch::base);
        if offset < self.model.log_end {
            // With no batch kept, the log ends at its first segment's base, which compaction may
            // have left below every remaining batch.
            let low = kept_end.unwrap_or(0);
            let high = removed_base.unwrap_or(offset).min(offset);
            prop_assert!(
                low.min(high) <= log_end && log_end <= high,
                "truncate_to({}) ended at {}",
                offset,
                log_end
            );
            self.model.cut(log_end);
            // Truncation is durable on return.
            self.model.flushed_end = log_end;
        } else {
            prop_assert_eq!(log_end, self.model.log_end);
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<(), TestCaseError> {
        self.log.compact(self.model.now_ms).unwrap();
        // Reads stop before gaps compaction leaves, so read on from where each one ended.
        let mut batches: Vec<ModelBatch> = Vec::new();
        let mut offset = self.model.log_start;
        while offset < self.log.log_end_offset() {
            let read = self.log.read(offset, usize::MAX, i64::MAX).unwrap();
            if read.batch_count == 0 {
                break;
            }
            offset = read.next_offset;
            let more = ValidatedBatch::validate_all(read.bytes).unwrap();
            batches.extend(more.into_iter().map(ModelBatch::new));
        }
        let kept: BTreeMap<i64, &ModelRecord> = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .map(|r| (r.offset, r))
            .collect();
        let mut latest: BTreeMap<&Bytes, i64> = BTreeMap::new();
        let before: Vec<&ModelRecord> = self
            .model
            .batches
            .iter()
            .filter(|b| b.last() >= self.model.log_start)
            .flat_map(|b| b.records.iter())
            .collect();
        for record in &before {
            if let Some(key) = &record.key {
                latest.insert(key, record.offset);
            }
        }
        let horizon = self.model.now_ms - DELETE_RETENTION_MS;
        for record in &before {
            let latest_offset = record.key.as_ref().map(|key| latest[key]);
            let expired_tombstone = record.value.is_none() && record.timestamp < horizon;
            match kept.get(&record.offset) {
                Some(survivor) => {
                    prop_assert_eq!(*survivor, *record, "compaction changed a record")
                }
                None => {
                    let superseded = latest_offset.is_some_and(|latest| latest > record.offset);
                    prop_assert!(
                        superseded || (latest_offset.is_some() && expired_tombstone),
                        "compaction lost {:?}",
                        record
                    );
                }
            }
        }
        prop_assert_eq!(
            kept.len(),
            kept.keys()
                .filter(|o| before.iter().any(|r| r.offset == **o))
                .count()
        );
        // Batches wholly below the log start are unreadable, and compaction may have removed
        // them: the model forgets them.
        self.model.batches = batches;
        Ok(())
    }

    fn crash(&mut self, tear: bool, seed: u64) -> Result<(), TestCaseError> {
        let durable_end = self.log.recovery_point();
        prop_assert!(durable_end >= self.model.flushed_end);
        let options = if tear {
            CrashOptions::Tear
        } else {
            CrashOptions::LoseUnsynced
        };
        self.disk
            .crash(options, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        self.log = open(&self.disk, config());
        let log_end = self.log.log_end_offset();
        prop_assert!(
            log_end >= durable_end,
            "lost synced data: {} < {}",
            log_end,
            durable_end
        );
        prop_assert!(log_end <= self.model.log_end);
        let boundary =
            log_end == durable_end || self.model.batches.iter().any(|b| b.last() + 1 == log_end);
        prop_assert!(boundary, "recovered to {} inside a batch", log_end);
        self.model.cut(log_end);
        self.model.flushed_end = log_end;
        Ok(())
    }

    /// The whole log equals the model, and the offsets and epochs agree.
    fn check(&mut self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.log.log_start_offset(), self.model.log_start);
        prop_assert_eq!(self.log.log_end_offset(), self.model.log_end);
        prop_assert!(self.log.recovery_point() >= self.model.flushed_end);
        prop_assert!(self.log.recovery_point() <= self.model.log_end);
        let all = self
            .log
            .read(self.model.log_start, usize::MAX, i64::MAX)
            .unwrap();
        let (bytes, _, _) = self.model.read(self.model.log_start, usize::MAX, i64::MAX);
        prop_assert_eq!(
            &all.bytes[..],
            &bytes[..],
            "the whole log differs from the model"
        );
        prop_assert_eq!(
            self.log.latest_epoch(),
            self.model.epochs.last().map(|(epoch, _)| *epoch)
        );
        for epoch in -1..=self.model.epoch + 1 {
            let expected = expected_epoch_end(&self.model.epochs, epoch, self.model.log_end);
            prop_assert_eq!(
                self.log.epoch_end_offset(epoch),
                expected,
                "epoch {}",
                epoch
            );
        }
        Ok(())
    }
}

fn expected_epoch_end(epochs: &[(i32, i64)], epoch: i32, log_end: i64) -> Option<(i32, i64)> {
    let floor = epochs.iter().rev().find(|(e, _)| *e <= epoch);
    let next = epochs
        .iter()
        .find(|(e, _)| *e > epoch)
        .map_or(log_end, |(_, start)| *start);
    match floor {
        Some((floor_epoch, _)) => Some((*floor_epoch, next)),
        None => epochs.first().map(|(_, start)| (epoch, *start)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_500, max_shrink_iters: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..150)) {
        let disk = mem_disk();
        let log = open(&disk, config());
        let mut harness = Harness { disk, log, model: Model { now_ms: 1_000, ..Model::default() } };
        for op in &ops {
            harness.apply(op)?;
        }
    }
}
