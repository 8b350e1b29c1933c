//! RecordBatch v2: parsed and validated once, at arrival, then carried as a `ValidatedBatch`.
//!
//! Layout (big-endian), byte positions from the start of the batch:
//! ```text
//!  0 baseOffset i64        12 partitionLeaderEpoch i32   21 attributes i16     27 baseTimestamp i64
//!  8 batchLength i32       16 magic i8 (= 2)             23 lastOffsetDelta i32 35 maxTimestamp i64
//!                          17 crc u32 (CRC-32C of 21..)  43 producerId i64     51 producerEpoch i16
//!                                                        53 baseSequence i32   57 recordCount i32
//! ```
//! `batchLength` counts the bytes after itself. baseOffset and partitionLeaderEpoch lie outside the
//! CRC, so the broker writes them in place without touching the producer's checksum.

use bytes::{Bytes, BytesMut};

/// Bytes before `batchLength`'s count begins: baseOffset (8) + batchLength (4).
pub const BATCH_LENGTH_OVERHEAD: usize = 12;
/// The fixed header of a v2 batch; records follow.
pub const BATCH_HEADER_BYTES: usize = 61;
const CRC_POSITION: usize = 17;
const CRC_START: usize = 21;
const MAGIC_POSITION: usize = 16;
pub const MAGIC_V2: i8 = 2;

/// Attribute bits (Kafka's `DefaultRecordBatch`).
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch of {available} bytes is shorter than the {needed}-byte header or its length")]
    Truncated { available: usize, needed: usize },
    #[error("batch length {length} is invalid")]
    Length { length: i32 },
    #[error("batch magic {magic} is not supported (only v2)")]
    Magic { magic: i8 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {count} is inconsistent with last offset delta {last_offset_delta}")]
    Count { count: i32, last_offset_delta: i32 },
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        BATCH_LENGTH_OVERHEAD + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
    pub fn record_count(&self) -> i32 {
        self.record_count
    }
}

fn i16_at(bytes: &[u8], position: usize) -> i16 {
    i16::from_be_bytes(bytes[position..position + 2].try_into().expect("2 bytes"))
}
fn i32_at(bytes: &[u8], position: usize) -> i32 {
    i32::from_be_bytes(bytes[position..position + 4].try_into().expect("4 bytes"))
}
fn i64_at(bytes: &[u8], position: usize) -> i64 {
    i64::from_be_bytes(bytes[position..position + 8].try_into().expect("8 bytes"))
}

/// Reads the total size of the batch starting at `bytes[0]`, from its first 12 bytes, without
/// validating anything else. `None` if fewer than 12 bytes are available.
pub fn batch_size_peek(bytes: &[u8]) -> Option<Result<usize, BatchError>> {
    if bytes.len() < BATCH_LENGTH_OVERHEAD {
        return None;
    }
    let length = i32_at(bytes, 8);
    let minimum = (BATCH_HEADER_BYTES - BATCH_LENGTH_OVERHEAD) as i32;
    if length < minimum {
        return Some(Err(BatchError::Length { length }));
    }
    Some(Ok(BATCH_LENGTH_OVERHEAD + length as usize))
}

/// Parses the header of the batch at the front of `bytes`. Checks lengths and magic, not the CRC.
pub fn header_parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        // The magic byte sits before the v2 header's end: report old formats as such.
        if bytes.len() > MAGIC_POSITION && bytes[MAGIC_POSITION] as i8 != MAGIC_V2 {
            return Err(BatchError::Magic {
                magic: bytes[MAGIC_POSITION] as i8,
            });
        }
        return Err(BatchError::Truncated {
            available: bytes.len(),
            needed: BATCH_HEADER_BYTES,
        });
    }
    let magic = bytes[MAGIC_POSITION] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::Magic { magic });
    }
    let size = batch_size_peek(bytes).expect("header is long enough")?;
    if bytes.len() < size {
        return Err(BatchError::Truncated {
            available: bytes.len(),
            needed: size,
        });
    }
    let header = BatchHeader {
        base_offset: i64_at(bytes, 0),
        batch_length: i32_at(bytes, 8),
        partition_leader_epoch: i32_at(bytes, 12),
        crc: i32_at(bytes, CRC_POSITION) as u32,
        attributes: i16_at(bytes, 21),
        last_offset_delta: i32_at(bytes, 23),
        base_timestamp: i64_at(bytes, 27),
        max_timestamp: i64_at(bytes, 35),
        producer_id: i64_at(bytes, 43),
        producer_epoch: i16_at(bytes, 51),
        base_sequence: i32_at(bytes, 53),
        record_count: i32_at(bytes, 57),
    };
    let counts_consistent = header.record_count >= 0
        && header.last_offset_delta >= 0
        && i64::from(header.record_count) <= i64::from(header.last_offset_delta) + 1;
    if !counts_consistent {
        return Err(BatchError::Count {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// The CRC-32C a batch should carry: over attributes to the end.
pub fn crc_compute(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// A whole v2 batch whose length, magic, counts and CRC have been checked.
/// **Invariant:** `bytes` is exactly one batch and `header` is its parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Validates the batch that fills `bytes` exactly.
    pub fn validate(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = header_parse(&bytes)?;
        if header.size() != bytes.len() {
            return Err(BatchError::Length {
                length: header.batch_length,
            });
        }
        let computed = crc_compute(&bytes);
        if computed != header.crc {
            return Err(BatchError::Crc {
                stored: header.crc,
                computed,
            });
        }
        Ok(ValidatedBatch { bytes, header })
    }

    /// Planted bug support: everything `validate` checks except the CRC.
    #[cfg(feature = "planted-bugs")]
    pub fn validate_without_crc(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = header_parse(&bytes)?;
        if header.size() != bytes.len() {
            return Err(BatchError::Length {
                length: header.batch_length,
            });
        }
        Ok(ValidatedBatch { bytes, header })
    }

    /// Splits a concatenation of batches (a Produce `records` field, a Fetch response, a segment
    /// read) and validates each one. A trailing partial batch is an error here: callers that
    /// expect one (fetch responses cut at max_bytes) use `validate_prefix`.
    pub fn validate_all(bytes: Bytes) -> Result<Vec<ValidatedBatch>, BatchError> {
        let (batches, rest) = ValidatedBatch::validate_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(BatchError::Truncated {
                available: rest.len(),
                needed: BATCH_HEADER_BYTES,
            });
        }
        Ok(batches)
    }

    /// Validates whole batches from the front; returns them and the unconsumed (partial) tail.
    pub fn validate_prefix(mut bytes: Bytes) -> Result<(Vec<ValidatedBatch>, Bytes), BatchError> {
        let mut batches = Vec::new();
        while let Some(size) = batch_size_peek(&bytes) {
            let size = size?;
            if bytes.len() < size {
                break;
            }
            batches.push(ValidatedBatch::validate(bytes.split_to(size))?);
        }
        Ok((batches, bytes))
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The same batch with the broker's fields written in place: baseOffset and
    /// partitionLeaderEpoch (both outside the CRC, so it stays valid).
    pub fn with_placement(self, base_offset: i64, partition_leader_epoch: i32) -> ValidatedBatch {
        let mut bytes = self
            .bytes
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
        let header = BatchHeader {
            base_offset,
            partition_leader_epoch,
            ..self.header
        };
        debug_assert_eq!(crc_compute(&bytes), header.crc);
        ValidatedBatch {
            bytes: bytes.freeze(),
            header,
        }
    }

    /// The same batch with maxTimestamp replaced (LogAppendTime): inside the CRC, so it is recomputed.
    pub fn with_log_append_time(self, timestamp: i64) -> ValidatedBatch {
        let mut bytes = self
            .bytes
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let attributes = self.header.attributes | TIMESTAMP_TYPE_LOG_APPEND;
        bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        bytes[35..43].copy_from_slice(&timestamp.to_be_bytes());
        let crc = crc_compute(&bytes);
        bytes[CRC_POSITION..CRC_START].copy_from_slice(&crc.to_be_bytes());
        let header = BatchHeader {
            attributes,
            max_timestamp: timestamp,
            crc,
            ..self.header
        };
        ValidatedBatch {
            bytes: bytes.freeze(),
            header,
        }
    }
}

/// Test and tool support: builds valid batches with the `kafka-protocol` encoder.
pub mod build {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One record to encode.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct RecordSpec {
        pub key: Option<Bytes>,
        pub value: Option<Bytes>,
        pub headers: Vec<(String, Option<Bytes>)>,
        pub timestamp: i64,
    }

    /// Encodes `records` as one v2 batch with base offset 0.
    pub fn batch_encode(records: &[RecordSpec], compression: Compression) -> ValidatedBatch {
        batch_encode_with(records, compression, -1, -1, -1, false)
    }

    /// Encodes a batch with producer fields (for idempotence and transactions).
    pub fn batch_encode_with(
        records: &[RecordSpec],
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) -> ValidatedBatch {
        assert!(!records.is_empty(), "a batch holds at least one record");
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(index, spec)| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // The encoder starts a new batch whenever offset - sequence changes, and derives
                // baseSequence from the first record: -1, 0, 1, ... yields baseSequence -1.
                sequence: base_sequence.wrapping_add(index as i32),
                timestamp: spec.timestamp,
                key: spec.key.clone(),
                value: spec.value.clone(),
                headers: spec
                    .headers
                    .iter()
                    .map(|(name, value)| (name.clone().into(), value.clone()))
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buffer, &records, &options)
            .expect("encoding a valid batch");
        ValidatedBatch::validate(buffer.freeze()).expect("the encoder writes valid batches")
    }

    /// The ways a CRC-valid batch can still be poison (issue 8): each one a broker must refuse
    /// before appending, because a reader could not decode it. Tests and the simulator's
    /// malformed sends use them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Poison {
        /// The record bytes are garbage.
        GarbageRecords,
        /// The header declares 3 records; 1 is present.
        CountMismatch,
        /// Compression codec 7, which does not exist.
        UnknownCodec,
        /// The gzip flag on an uncompressed body.
        GzipFlagOnPlainBody,
        /// The transactional bit without a producer id.
        TransactionalWithoutProducer,
        /// A control batch, which only brokers write.
        Control,
    }

    impl Poison {
        pub const ALL: [Poison; 6] = [
            Poison::GarbageRecords,
            Poison::CountMismatch,
            Poison::UnknownCodec,
            Poison::GzipFlagOnPlainBody,
            Poison::TransactionalWithoutProducer,
            Poison::Control,
        ];

        pub fn name(self) -> &'static str {
            match self {
                Poison::GarbageRecords => "garbage-records",
                Poison::CountMismatch => "count-mismatch",
                Poison::UnknownCodec => "unknown-codec",
                Poison::GzipFlagOnPlainBody => "gzip-flag-on-plain-body",
                Poison::TransactionalWithoutProducer => "transactional-without-producer",
                Poison::Control => "control",
            }
        }
    }

    /// `record` encoded as one uncompressed batch, then poisoned, with its CRC made valid again
    /// so that only record-level validation can tell.
    pub fn batch_poisoned(record: &RecordSpec, poison: Poison) -> Bytes {
        let batch = batch_encode(std::slice::from_ref(record), Compression::None);
        let mut bytes = BytesMut::from(&batch.bytes()[..]);
        let attributes = 21..23;
        let mut set_attributes = |bits: i16| {
            let old = i16::from_be_bytes([bytes[21], bytes[22]]);
            bytes[attributes.clone()].copy_from_slice(&(old | bits).to_be_bytes());
        };
        match poison {
            Poison::UnknownCodec => set_attributes(7),
            Poison::GzipFlagOnPlainBody => set_attributes(1),
            Poison::TransactionalWithoutProducer => set_attributes(0x10),
            Poison::Control => set_attributes(0x20),
            Poison::CountMismatch => {
                bytes[23..27].copy_from_slice(&2i32.to_be_bytes()); // lastOffsetDelta
                bytes[57..61].copy_from_slice(&3i32.to_be_bytes()); // record count
            }
            Poison::GarbageRecords => {
                for byte in &mut bytes[BATCH_HEADER_BYTES..] {
                    *byte = 0x7f;
                }
            }
        }
        let crc = crc_compute(&bytes);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use kafka_protocol::records::Compression;

    fn records(count: usize) -> Vec<RecordSpec> {
        (0..count)
            .map(|index| RecordSpec {
                key: Some(Bytes::from(format!("k{index}"))),
                value: Some(Bytes::from(format!("value-{index}"))),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
                timestamp: 1_000 + index as i64,
            })
            .collect()
    }

    #[test]
    fn encoded_batches_validate_and_report_their_header() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = batch_encode(&records(3), compression);
            let header = batch.header();
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.max_timestamp, 1_002);
            assert_eq!(header.compression(), compression as i16);
        }
    }

    #[test]
    fn placement_keeps_the_crc_valid() {
        let batch = batch_encode(&records(2), Compression::None).with_placement(42, 7);
        let again = ValidatedBatch::validate(batch.bytes().clone()).unwrap();
        assert_eq!(again.header().base_offset, 42);
        assert_eq!(again.header().partition_leader_epoch, 7);
        assert_eq!(again.header().next_offset(), 44);
        let stamped = again.with_log_append_time(99);
        let again = ValidatedBatch::validate(stamped.into_bytes()).unwrap();
        assert!(again.header().is_log_append_time());
        assert_eq!(again.header().max_timestamp, 99);
    }

    #[test]
    fn corruption_is_reported_not_trusted() {
        let batch = batch_encode(&records(2), Compression::None).into_bytes();
        let mut flipped = BytesMut::from(&batch[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            ValidatedBatch::validate(flipped.freeze()),
            Err(BatchError::Crc { .. })
        ));
        let mut magic = BytesMut::from(&batch[..]);
        magic[MAGIC_POSITION] = 1;
        assert_eq!(
            ValidatedBatch::validate(magic.freeze()),
            Err(BatchError::Magic { magic: 1 })
        );
        let short = batch.slice(..batch.len() - 1);
        assert!(matches!(
            ValidatedBatch::validate(short),
            Err(BatchError::Truncated { .. })
        ));
        let mut long = BytesMut::from(&batch[..]);
        long.extend_from_slice(b"x");
        assert!(matches!(
            ValidatedBatch::validate(long.freeze()),
            Err(BatchError::Length { .. })
        ));
    }

    #[test]
    fn prefix_validation_leaves_the_partial_tail() {
        let one = batch_encode(&records(1), Compression::None).into_bytes();
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one);
        two.extend_from_slice(&one[..20]);
        let (batches, rest) = ValidatedBatch::validate_prefix(two.freeze()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(rest.len(), 20);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = ValidatedBatch::validate_prefix(Bytes::from(bytes));
        }
    }
}
