//! Records as callers see them, and the RecordBatch v2 bytes they travel in.
//!
//! Producing: `batch_encode` turns timestamped records into one batch with `wire`'s builder (the
//! `kafka-protocol` encoder, compression included). Consuming: `records_decode` walks the batches of
//! one partition's Fetch data, where Kafka's rules apply: a fetch may start mid-batch (skip records
//! below the fetch offset), the last batch may be cut short at `max_bytes` (ignore it; the next
//! fetch starts there), control batches are skipped, and under read_committed, batches of aborted
//! transactions are dropped using the response's aborted-transaction list.
//!
//! Known limit: `kafka-protocol` keeps record headers in a map, so duplicate header names within
//! one record (legal in Kafka) collapse to the last one.

use crate::error::ClientError;
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use wire::batch::build::{batch_encode_with, RecordSpec};
use wire::batch::{batch_size_peek, BatchHeader, ValidatedBatch};
use wire::protocol::records::{Compression, Record, RecordBatchDecoder};

/// Kafka's `DefaultRecord.MAX_RECORD_OVERHEAD`: the most a record's framing (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count) adds to its payload.
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 21;

/// The fewest bytes one uncompressed record can take: seven one-byte fields. A batch claiming more
/// records than its bytes allow is corrupt, and is refused before the decoder allocates for them.
const RECORD_BYTES_MIN: usize = 7;

/// Records a compressed batch may claim. Decompression can legitimately expand far beyond the
/// batch's size, so this bounds the decoder's up-front allocation instead: a 1 MiB batch of
/// minimal records holds about 150 000, and this leaves room for compression on top.
pub const BATCH_RECORD_COUNT_MAX: i32 = 1 << 20;

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// Chosen by the partitioner when `None`.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// CreateTime; the producer's clock (`ClientConfig::clock`) when `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a key and a value, no headers, partitioned and timestamped by the producer.
    pub fn new(
        topic: impl Into<String>,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key,
            value,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// An upper bound on the bytes this record adds to a batch, before compression.
    pub fn size_estimate(&self) -> usize {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(name, value)| 10 + name.len() + value.as_ref().map_or(0, Bytes::len))
            .sum();
        RECORD_OVERHEAD_BYTES_MAX
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + header_bytes
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 when sent with acks=0: the broker does not say.
    pub offset: i64,
    /// The broker's LogAppendTime if the topic uses it, else the record's CreateTime.
    pub timestamp: i64,
    /// The partition's leader epoch in the metadata the batch was sent by, to the broker that
    /// acknowledged it (-1 unknown, and with acks=0): that broker led at this epoch or a later
    /// one when it acknowledged.
    pub leader_epoch: i32,
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp: i64,
}

/// Encodes records (key, value, headers, timestamp) as one batch with base offset 0.
pub fn batch_encode(
    records: &[ProducerRecord],
    timestamps: &[i64],
    compression: Compression,
) -> Bytes {
    batch_encode_sequenced(records, timestamps, compression, None)
}

/// An idempotent producer's identity on a batch: producer id, epoch, first sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Part of a transaction: the batch's transactional attribute bit (4) is set.
    pub transactional: bool,
}

/// `batch_encode`, with an idempotent producer's id, epoch and first sequence when given.
pub fn batch_encode_sequenced(
    records: &[ProducerRecord],
    timestamps: &[i64],
    compression: Compression,
    sequenced: Option<Sequenced>,
) -> Bytes {
    assert_eq!(records.len(), timestamps.len());
    let specs: Vec<RecordSpec> = records
        .iter()
        .zip(timestamps)
        .map(|(record, timestamp)| RecordSpec {
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp: *timestamp,
        })
        .collect();
    let (producer_id, epoch, base_sequence, transactional) = sequenced
        .map_or((-1, -1, -1, false), |s| {
            (s.producer_id, s.epoch, s.base_sequence, s.transactional)
        });
    batch_encode_with(
        &specs,
        compression,
        producer_id,
        epoch,
        base_sequence,
        transactional,
    )
    .into_bytes()
}

/// A transaction the broker says was aborted: skip its producer's batches from `first_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// One partition's Fetch data, ready to decode.
#[derive(Debug, Clone)]
pub struct FetchedData<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub fetch_offset: i64,
    pub records: Bytes,
    /// `Some` under read_committed (possibly empty); `None` under read_uncommitted.
    pub aborted: Option<Vec<AbortedTransaction>>,
}

/// A batch that cannot be read, and where a consumer that chooses to skip it may resume.
struct Corrupt {
    offset: i64,
    skip_to: i64,
    reason: String,
}

/// Decodes `data` into `out`; returns the offset after the last whole batch, or `None` when no
/// whole batch arrived (empty data, or only a cut-off one).
///
/// A corrupt batch ends the walk. The records before it are returned and the position stops at
/// it, so the next fetch starts there and this reports it as `ClientError::CorruptBatch`: a
/// consumer never re-reads the records before a bad batch in a loop, and never silently skips it.
pub fn records_decode(
    data: FetchedData<'_>,
    out: &mut Vec<ConsumerRecord>,
) -> Result<Option<i64>, ClientError> {
    let read_committed = data.aborted.is_some();
    let mut aborted_pending: VecDeque<AbortedTransaction> =
        data.aborted.clone().unwrap_or_default().into();
    aborted_pending
        .make_contiguous()
        .sort_by_key(|aborted| aborted.first_offset);
    let mut aborting: BTreeSet<i64> = BTreeSet::new();
    let mut next_offset = None;
    let mut rest = data.records.clone();
    let stop = |next_offset: Option<i64>, corrupt: Corrupt| match next_offset {
        Some(next) if next > data.fetch_offset => Ok(Some(next)),
        _ => Err(ClientError::CorruptBatch {
            topic: data.topic.to_string(),
            partition: data.partition,
            offset: corrupt.offset,
            skip_to: corrupt.skip_to,
            reason: corrupt.reason,
        }),
    };
    loop {
        let batch = match batch_next(&mut rest, data.fetch_offset) {
            Ok(Some(batch)) => batch,
            // The tail after the last whole batch is a batch cut at max_bytes: not an error.
            Ok(None) => break,
            Err(corrupt) => return stop(next_offset, corrupt),
        };
        let header = *batch.header();
        if header.last_offset() < data.fetch_offset {
            next_offset = Some(header.next_offset());
            continue;
        }
        if read_committed {
            while aborted_pending
                .front()
                .is_some_and(|aborted| aborted.first_offset <= header.last_offset())
            {
                aborting.insert(
                    aborted_pending
                        .pop_front()
                        .expect("front exists")
                        .producer_id,
                );
            }
        }
        let records = match batch_records(&batch) {
            Ok(records) => records,
            Err(reason) => {
                let offset = header.base_offset.max(data.fetch_offset);
                let skip_to = header.next_offset();
                return stop(
                    next_offset,
                    Corrupt {
                        offset,
                        skip_to,
                        reason,
                    },
                );
            }
        };
        next_offset = Some(header.next_offset());
        if header.is_control() {
            if records.iter().any(control_record_is_abort) {
                aborting.remove(&header.producer_id);
            }
            continue;
        }
        if read_committed && header.is_transactional() && aborting.contains(&header.producer_id) {
            continue;
        }
        let first = records.partition_point(|record| record.offset < data.fetch_offset);
        out.extend(
            records
                .into_iter()
                .skip(first)
                .map(|record| consumer_record(&data, &header, record)),
        );
    }
    Ok(next_offset)
}

/// Splits the next whole batch off `rest`; `Ok(None)` at the end or at a batch cut short. A
/// batch whose envelope is broken cannot say where it ends, so skipping it moves one offset on.
fn batch_next(rest: &mut Bytes, fetch_offset: i64) -> Result<Option<ValidatedBatch>, Corrupt> {
    let Some(size) = batch_size_peek(rest) else {
        return Ok(None);
    };
    let base_offset = i64::from_be_bytes(rest[..8].try_into().expect("12 bytes peeked"));
    let corrupt = |reason: String| Corrupt {
        offset: base_offset.max(fetch_offset),
        skip_to: fetch_offset + 1,
        reason,
    };
    let size = size.map_err(|error| corrupt(error.to_string()))?;
    if rest.len() < size {
        return Ok(None);
    }
    ValidatedBatch::validate(rest.split_to(size))
        .map(Some)
        .map_err(|error| corrupt(error.to_string()))
}

/// A fetched batch may inflate to at most this much. Brokers cap a batch at the topic's
/// `max.message.bytes` (1 MiB by default; topics rarely raise it past tens of MiB), so anything
/// larger is hostile, and refusing it bounds the client's memory per batch.
const FETCHED_BATCH_INFLATED_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The records of one validated batch, decompressed. The decoder is guarded: bytes from the
/// network must not crash the client.
fn batch_records(batch: &ValidatedBatch) -> Result<Vec<Record>, String> {
    let header = batch.header();
    let count_max = if header.compression() == 0 {
        i32::try_from(batch.size() / RECORD_BYTES_MIN).unwrap_or(i32::MAX)
    } else {
        BATCH_RECORD_COUNT_MAX
    };
    if header.record_count() > count_max {
        return Err(format!(
            "batch claims {} records, at most {count_max} fit",
            header.record_count()
        ));
    }
    // The decoder inflates without a bound and reserves headers by a count it reads: check the
    // batch first, so a hostile broker can neither zip-bomb nor abort us.
    wire::records_readable(batch, FETCHED_BATCH_INFLATED_BYTES_MAX).map_err(|e| e.to_string())?;
    let mut bytes = batch.bytes().clone();
    let decoded = catch_unwind(AssertUnwindSafe(|| RecordBatchDecoder::decode(&mut bytes)));
    match decoded {
        Ok(Ok(set)) => Ok(set.records),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(_) => Err("record decoder panicked on malformed input".to_string()),
    }
}

/// A control record's key is (version i16, type i16); type 0 is ABORT, 1 is COMMIT.
fn control_record_is_abort(record: &Record) -> bool {
    record
        .key
        .as_ref()
        .is_some_and(|key| key.len() >= 4 && key[2..4] == [0, 0])
}

fn consumer_record(data: &FetchedData<'_>, header: &BatchHeader, record: Record) -> ConsumerRecord {
    // Under LogAppendTime the broker stamps only the batch's max timestamp; it applies to all.
    let timestamp = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        record.timestamp
    };
    ConsumerRecord {
        topic: data.topic.to_string(),
        partition: data.partition,
        offset: record.offset,
        leader_epoch: header.partition_leader_epoch,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
        timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use wire::batch::build::batch_encode_with;

    fn record(index: usize) -> ProducerRecord {
        ProducerRecord {
            headers: vec![("h".into(), Some(Bytes::from(format!("hv{index}"))))],
            ..ProducerRecord::new(
                "t",
                Some(Bytes::from(format!("k{index}"))),
                Some(Bytes::from(format!("v{index}"))),
            )
        }
    }

    /// A batch of `count` records placed at `base_offset`.
    fn batch(base_offset: i64, count: usize, compression: Compression) -> Bytes {
        let records: Vec<ProducerRecord> = (0..count)
            .map(|i| record(base_offset as usize + i))
            .collect();
        let timestamps: Vec<i64> = (0..count).map(|i| 1_000 + i as i64).collect();
        let bytes = batch_encode(&records, &timestamps, compression);
        ValidatedBatch::validate(bytes)
            .unwrap()
            .with_placement(base_offset, 4)
            .into_bytes()
    }

    /// A transactional batch (or a control marker when `marker` is given) of `producer_id`.
    fn txn_batch(base_offset: i64, producer_id: i64, marker: Option<i16>) -> Bytes {
        let spec = match marker {
            None => RecordSpec {
                value: Some(Bytes::from("txn")),
                timestamp: 5,
                ..RecordSpec::default()
            },
            Some(kind) => {
                let key = [0u8, 0, (kind >> 8) as u8, kind as u8];
                RecordSpec {
                    key: Some(Bytes::copy_from_slice(&key)),
                    timestamp: 5,
                    ..RecordSpec::default()
                }
            }
        };
        let batch = batch_encode_with(&[spec], Compression::None, producer_id, 0, 0, true);
        let mut bytes = BytesMut::from(&batch.into_bytes()[..]);
        if marker.is_some() {
            // Set the control bit (attributes at byte 21..23, bit 5) and fix the CRC it covers.
            bytes[22] |= 0x20;
            let crc = wire::batch::crc_compute(&bytes);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        ValidatedBatch::validate(bytes.freeze())
            .unwrap()
            .with_placement(base_offset, 4)
            .into_bytes()
    }

    fn concat(parts: &[Bytes]) -> Bytes {
        let mut all = BytesMut::new();
        for part in parts {
            all.extend_from_slice(part);
        }
        all.freeze()
    }

    fn decode(
        fetch_offset: i64,
        records: Bytes,
        aborted: Option<Vec<AbortedTransaction>>,
    ) -> (Vec<String>, Option<i64>) {
        let mut out = Vec::new();
        let data = FetchedData {
            topic: "t",
            partition: 0,
            fetch_offset,
            records,
            aborted,
        };
        let next = records_decode(data, &mut out).unwrap();
        let rendered = out
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"-"))
                )
            })
            .collect();
        (rendered, next)
    }

    #[test]
    fn batches_round_trip_through_encode_and_decode_with_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut out = Vec::new();
            let data = FetchedData {
                topic: "t",
                partition: 2,
                fetch_offset: 10,
                records: batch(10, 3, compression),
                aborted: None,
            };
            assert_eq!(
                records_decode(data, &mut out).unwrap(),
                Some(13),
                "{compression:?}"
            );
            assert_eq!(out.len(), 3);
            assert_eq!(out[1].offset, 11);
            assert_eq!(out[1].key.as_deref(), Some(&b"k11"[..]));
            assert_eq!(
                out[1].headers,
                vec![("h".to_string(), Some(Bytes::from("hv11")))]
            );
            assert_eq!(out[1].timestamp, 1_001);
            assert_eq!(out[1].leader_epoch, 4);
            assert_eq!(out[1].partition, 2);
        }
    }

    #[test]
    fn a_fetch_starting_mid_batch_skips_the_records_below_it() {
        let records = concat(&[
            batch(0, 3, Compression::None),
            batch(3, 2, Compression::Lz4),
        ]);
        assert_eq!(
            decode(2, records.clone(), None),
            (vec!["2:v2".into(), "3:v3".into(), "4:v4".into()], Some(5))
        );
        assert_eq!(decode(4, records, None), (vec!["4:v4".into()], Some(5)));
    }

    #[test]
    fn a_batch_cut_at_max_bytes_is_left_for_the_next_fetch() {
        let second = batch(2, 2, Compression::None);
        let records = concat(&[
            batch(0, 2, Compression::None),
            second.slice(..second.len() - 5),
        ]);
        assert_eq!(
            decode(0, records, None),
            (vec!["0:v0".into(), "1:v1".into()], Some(2))
        );
        assert_eq!(decode(2, second.slice(..30), None), (vec![], None));
        assert_eq!(decode(0, Bytes::new(), None), (vec![], None));
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_control_batches() {
        let records = concat(&[
            txn_batch(0, 7, None),    // aborted below
            txn_batch(1, 8, None),    // committed
            txn_batch(2, 7, Some(0)), // ABORT marker for 7
            txn_batch(3, 8, Some(1)), // COMMIT marker for 8
            txn_batch(4, 7, None),    // a later transaction of 7, not aborted
        ]);
        let aborted = vec![AbortedTransaction {
            producer_id: 7,
            first_offset: 0,
        }];
        assert_eq!(
            decode(0, records.clone(), Some(aborted)),
            (vec!["1:txn".into(), "4:txn".into()], Some(5))
        );
        let uncommitted = decode(0, records, None).0;
        assert_eq!(
            uncommitted,
            ["0:txn", "1:txn", "4:txn"],
            "read_uncommitted sees all but markers"
        );
    }

    /// Kafka's consumer adds an aborted transaction's producer when it reaches a batch of that
    /// producer at or past the transaction's first offset, and drops it at the producer's ABORT
    /// marker: a fetch from the middle of an aborted transaction still drops its tail, and a
    /// producer's second aborted transaction is dropped after a committed one in between.
    #[test]
    fn read_committed_follows_each_aborted_range_until_its_marker() {
        let records = concat(&[
            txn_batch(0, 7, None),    // aborted (first range)
            txn_batch(1, 7, None),    // aborted (first range)
            txn_batch(2, 7, Some(0)), // ABORT
            txn_batch(3, 7, None),    // committed
            txn_batch(4, 7, Some(1)), // COMMIT
            txn_batch(5, 7, None),    // aborted (second range)
            txn_batch(6, 9, None),    // another producer, committed later: visible
            txn_batch(7, 7, Some(0)), // ABORT
        ]);
        // Listed out of order, as a broker may: the consumer sorts by first offset.
        let aborted = vec![
            AbortedTransaction {
                producer_id: 7,
                first_offset: 5,
            },
            AbortedTransaction {
                producer_id: 7,
                first_offset: 0,
            },
        ];
        assert_eq!(
            decode(0, records.clone(), Some(aborted.clone())),
            (vec!["3:txn".into(), "6:txn".into()], Some(8))
        );
        // From mid-way through the first aborted transaction.
        assert_eq!(
            decode(1, records.clone(), Some(aborted.clone())),
            (vec!["3:txn".into(), "6:txn".into()], Some(8))
        );
        // Only markers and aborted records: nothing returned, yet the position moves past them.
        assert_eq!(
            decode(
                0,
                concat(&[txn_batch(0, 7, None), txn_batch(1, 7, Some(0))]),
                Some(aborted[1..].to_vec())
            ),
            (vec![], Some(2))
        );
        // Without the list (read_uncommitted) every data record shows.
        assert_eq!(decode(0, records, None).0.len(), 5);
    }

    /// A non-transactional batch of a producer with an aborted transaction is never dropped
    /// (Kafka drops only batches with the transactional bit).
    #[test]
    fn read_committed_keeps_non_transactional_batches() {
        let plain = ValidatedBatch::validate(
            batch_encode_with(
                &[RecordSpec {
                    value: Some(Bytes::from("plain")),
                    timestamp: 5,
                    ..RecordSpec::default()
                }],
                Compression::None,
                7,
                0,
                0,
                false,
            )
            .into_bytes(),
        )
        .unwrap()
        .with_placement(1, 4)
        .into_bytes();
        let records = concat(&[txn_batch(0, 7, None), plain, txn_batch(2, 7, Some(0))]);
        let aborted = vec![AbortedTransaction {
            producer_id: 7,
            first_offset: 0,
        }];
        assert_eq!(
            decode(0, records, Some(aborted)),
            (vec!["1:plain".into()], Some(3))
        );
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let mut bytes = BytesMut::from(&batch(0, 2, Compression::None)[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let mut out = Vec::new();
        let data = FetchedData {
            topic: "t",
            partition: 0,
            fetch_offset: 0,
            records: bytes.freeze(),
            aborted: None,
        };
        assert!(matches!(
            records_decode(data, &mut out),
            Err(ClientError::CorruptBatch { .. })
        ));
    }

    /// Every batch this client's producer writes passes the broker's record validation.
    #[test]
    fn produced_batches_pass_the_brokers_record_validation() {
        let rules = wire::RecordRules {
            decompressed_bytes_max: 1024 * 1024,
            key_required: true,
        };
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<ProducerRecord> = (0..50).map(record).collect();
            let timestamps: Vec<i64> = (0..50).map(|index| 1_000 + index).collect();
            let bytes = batch_encode(&records, &timestamps, compression);
            let batch = ValidatedBatch::validate(bytes).unwrap();
            assert_eq!(
                wire::records_validate(&batch, &rules),
                Ok(()),
                "{compression:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_fetch_data_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut out = Vec::new();
            let data = FetchedData { topic: "t", partition: 0, fetch_offset: 0, records: Bytes::from(bytes), aborted: Some(vec![]) };
            let _ = records_decode(data, &mut out);
        }
    }
}
