//! The records inside a produced RecordBatch v2, checked as Kafka's `LogValidator` checks them
//! before anything is appended. A `ValidatedBatch` proves only the envelope (lengths, magic, CRC);
//! a CRC-valid batch can still hold records no consumer can read, and storing one poisons the
//! partition for every client. `records_validate` is the second gate, for batches from producers.
//!
//! Record layout (v2; varints are zigzag, at most 5 bytes, varlongs at most 10): length varint,
//! attributes i8, timestampDelta varlong, offsetDelta varint, keyLength varint + key, valueLength
//! varint + value, headerCount varint, then per header keyLength varint + key, valueLength varint +
//! value. A length of -1 means null.
//!
//! The pass reads an uncompressed batch in place, without copying. A compressed body is inflated
//! into one buffer, bounded by `RecordRules::decompressed_bytes_max`, so a zip bomb costs at most
//! that many bytes: no size read from the input is trusted for an allocation.

use crate::batch::{BatchHeader, ValidatedBatch, BATCH_HEADER_BYTES};
use std::io::Read;

/// zstd frames declare their window size and the decoder allocates it, so an untrusted frame
/// could ask for 2 GiB. 2^24 (16 MiB) admits every compression level up to 19 (librdkafka's and
/// Kafka's default is 3, a 2 MiB window); the "ultra" levels 20-22 are refused.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// snappy-java's stream header (magic, version, compatible version): Kafka's Java clients frame
/// snappy this way; librdkafka may send a raw snappy block instead, which Kafka also accepts.
const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_XERIAL_HEADER_BYTES: usize = 16;

/// What a topic demands of every record it accepts (the inputs Kafka's `LogValidator` takes from
/// the topic's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// A compressed body may inflate to at most this many bytes (the topic's
    /// `max.message.bytes`): the inflating stops there, so a zip bomb is refused, not unpacked.
    pub decompressed_bytes_max: usize,
    /// Every record needs a key (`cleanup.policy` includes compact: compaction keeps the latest
    /// value per key, and a record without one has nothing to be kept by).
    pub key_required: bool,
}

/// Why a produced batch's records were refused. The variants above `Control` mean the bytes do
/// not form the records they claim (Kafka's CORRUPT_MESSAGE); from `Control` on, the records are
/// well-formed but not allowed (INVALID_RECORD). The broker's edge maps them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("compression codec {codec} is unknown (0-4 are none, gzip, snappy, lz4, zstd)")]
    Codec { codec: i16 },
    #[error("the {codec} body does not decompress: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("the {codec} body inflates to more than {limit} bytes (max.message.bytes)")]
    DecompressedTooLarge { codec: &'static str, limit: usize },
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: i32, reason: &'static str },
    #[error("the batch declares {declared} records but holds {found}")]
    CountMismatch { declared: i32, found: i32 },
    #[error("{bytes} bytes are left over after the batch's {count} records")]
    TrailingBytes { bytes: usize, count: i32 },
    #[error("producers may not write control batches")]
    Control,
    #[error("record count {count} does not match last offset delta {last_offset_delta} + 1")]
    CountOffsets { count: i32, last_offset_delta: i32 },
    #[error("a transactional batch needs a producer id (it has {producer_id})")]
    TransactionalWithoutProducer { producer_id: i64 },
    #[error(
        "producer id {producer_id} needs an epoch and a base sequence >= 0 \
         (they are {producer_epoch} and {base_sequence})"
    )]
    ProducerFields {
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    },
    #[error("record {index} has offset delta {offset_delta}; inner offsets run 0, 1, 2, ...")]
    OffsetDelta { index: i32, offset_delta: i32 },
    #[error("record {index}: timestamp delta {delta} overflows base timestamp {base}")]
    TimestampDelta { index: i32, base: i64, delta: i64 },
    #[error("record {index} has a header with a null key")]
    HeaderKeyNull { index: i32 },
    #[error("record {index} has a header key that is not UTF-8")]
    HeaderKeyNotUtf8 { index: i32 },
    #[error("a compacted topic refuses records without a key ({} of them, first {})", indexes.len(), indexes[0])]
    KeyMissing {
        /// Each keyless record's index in its batch (Kafka's `batch_index`); never empty.
        indexes: Vec<i32>,
    },
}

/// Checks everything about `batch` that its envelope does not prove: attribute bits a producer
/// may set, the codec, the body inflating within bounds, every record parsing exactly, the
/// count, consecutive offset deltas, timestamps, header keys, and `rules`.
pub fn records_validate(batch: &ValidatedBatch, rules: &RecordRules) -> Result<(), RecordError> {
    let header = batch.header();
    attributes_validate(header)?;
    let body = &batch.bytes()[BATCH_HEADER_BYTES..];
    match header.compression() {
        0 => records_check(body, header, rules, Deltas::Consecutive),
        codec => {
            let inflated = decompress(codec, body, rules.decompressed_bytes_max)?;
            records_check(&inflated, header, rules, Deltas::Consecutive)
        }
    }
}

/// What a reader checks of a fetched batch before decoding it: the codec is known, the body
/// inflates within `decompressed_bytes_max` (a hostile broker must not zip-bomb a client), and
/// every record parses. Unlike `records_validate`, control batches and producer fields are a
/// reader's business to interpret, not to refuse, and offset deltas need only increase within
/// the batch, because compaction removes records from stored batches.
pub fn records_readable(
    batch: &ValidatedBatch,
    decompressed_bytes_max: usize,
) -> Result<(), RecordError> {
    let header = batch.header();
    let rules = RecordRules {
        decompressed_bytes_max,
        key_required: false,
    };
    let body = &batch.bytes()[BATCH_HEADER_BYTES..];
    match header.compression() {
        0 => records_check(body, header, &rules, Deltas::Increasing),
        codec => {
            let inflated = decompress(codec, body, decompressed_bytes_max)?;
            records_check(&inflated, header, &rules, Deltas::Increasing)
        }
    }
}

/// How a batch's offset deltas must run: as a producer writes them (0, 1, 2, ...), or as a
/// log may hold them after compaction (increasing, up to the header's last offset delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deltas {
    Consecutive,
    Increasing,
}

/// The header fields a producer may set. A producer id (>= 0) is allowed with a valid epoch and
/// sequence, because idempotent clients (kafka-python, librdkafka) send them by default.
fn attributes_validate(header: &BatchHeader) -> Result<(), RecordError> {
    if header.is_control() {
        return Err(RecordError::Control);
    }
    if i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(RecordError::CountOffsets {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(RecordError::TransactionalWithoutProducer {
            producer_id: header.producer_id,
        });
    }
    if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err(RecordError::ProducerFields {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
        });
    }
    Ok(())
}

/// Walks the records section: exactly `record_count` records, nothing left over.
fn records_check(
    section: &[u8],
    header: &BatchHeader,
    rules: &RecordRules,
    deltas: Deltas,
) -> Result<(), RecordError> {
    let mut cursor = Cursor::new(section);
    let mut keys_missing = Vec::new();
    let mut offset_delta_previous = -1;
    for index in 0..header.record_count {
        if cursor.is_empty() {
            return Err(RecordError::CountMismatch {
                declared: header.record_count,
                found: index,
            });
        }
        let (has_key, offset_delta) = record_check(&mut cursor, index, header)?;
        let in_order = match deltas {
            Deltas::Consecutive => offset_delta == index,
            Deltas::Increasing => {
                offset_delta > offset_delta_previous && offset_delta <= header.last_offset_delta
            }
        };
        if !in_order {
            return Err(RecordError::OffsetDelta {
                index,
                offset_delta,
            });
        }
        offset_delta_previous = offset_delta;
        if rules.key_required && !has_key {
            keys_missing.push(index);
        }
    }
    if !cursor.is_empty() {
        return Err(RecordError::TrailingBytes {
            bytes: cursor.remaining(),
            count: header.record_count,
        });
    }
    if !keys_missing.is_empty() {
        return Err(RecordError::KeyMissing {
            indexes: keys_missing,
        });
    }
    Ok(())
}

/// Parses record `index` at the cursor; returns whether it has a key, and its offset delta.
fn record_check(
    cursor: &mut Cursor,
    index: i32,
    header: &BatchHeader,
) -> Result<(bool, i32), RecordError> {
    let malformed = |reason| RecordError::Malformed { index, reason };
    let length = cursor.varint().map_err(malformed)?;
    let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
    let body = cursor
        .take(length)
        .map_err(|_| malformed("record length runs past the batch"))?;
    let mut record = Cursor::new(body);
    record.take(1).map_err(malformed)?; // Attributes: unused in v2.
    let timestamp_delta = record.varlong().map_err(malformed)?;
    let offset_delta = record.varint().map_err(malformed)?;
    if header.base_timestamp.checked_add(timestamp_delta).is_none() {
        return Err(RecordError::TimestampDelta {
            index,
            base: header.base_timestamp,
            delta: timestamp_delta,
        });
    }
    let has_key = record.nullable_bytes().map_err(malformed)?;
    record.nullable_bytes().map_err(malformed)?; // The value.
    let header_count = record.varint().map_err(malformed)?;
    if header_count < 0 {
        return Err(malformed("negative header count"));
    }
    // Bounded by the record's bytes: every header consumes at least two.
    for _ in 0..header_count {
        // A header key is a string: clients decode it as UTF-8 (kafka-python raises otherwise).
        match record.nullable_slice().map_err(malformed)? {
            None => return Err(RecordError::HeaderKeyNull { index }),
            Some(key) if std::str::from_utf8(key).is_err() => {
                return Err(RecordError::HeaderKeyNotUtf8 { index })
            }
            Some(_) => {}
        }
        record.nullable_bytes().map_err(malformed)?;
    }
    if !record.is_empty() {
        return Err(malformed("record length leaves bytes unread"));
    }
    Ok((has_key, offset_delta))
}

/// A read position over untrusted bytes: every read is checked, none panics.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn remaining(&self) -> usize {
        self.bytes.len()
    }
    fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        if count > self.bytes.len() {
            return Err("a length runs past the record");
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// An unsigned LEB128 value of at most `bytes_max` bytes, with no bits beyond `bits`.
    fn unsigned(&mut self, bytes_max: usize, bits: u32) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for index in 0..bytes_max {
            let [byte, rest @ ..] = self.bytes else {
                return Err("a varint runs past the end");
            };
            self.bytes = rest;
            let shift = 7 * index as u32;
            let payload = u64::from(byte & 0x7f);
            if shift + 7 > bits && payload >> (bits - shift) != 0 {
                return Err("a varint is out of range");
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is too long")
    }
    fn varint(&mut self) -> Result<i32, &'static str> {
        let raw = self.unsigned(5, 32)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let raw = self.unsigned(10, 64)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A varint length and that many bytes, or -1 for null; returns whether it was non-null.
    fn nullable_bytes(&mut self) -> Result<bool, &'static str> {
        self.nullable_slice().map(|slice| slice.is_some())
    }

    /// A varint length and that many bytes, or -1 for null.
    fn nullable_slice(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            length if length >= 0 => self.take(length as usize).map(Some),
            _ => Err("a length is below -1"),
        }
    }
}

/// Why inflating stopped.
enum Inflate {
    TooLarge,
    Broken(String),
}

/// Inflates a compressed records section, refusing one that grows past `limit` bytes.
fn decompress(codec: i16, body: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
    let (name, inflated) = match codec {
        1 => (
            "gzip",
            read_bounded(flate2::read::MultiGzDecoder::new(body), limit),
        ),
        2 => ("snappy", snappy_decompress(body, limit)),
        3 => ("lz4", lz4_decompress(body, limit)),
        4 => ("zstd", zstd_decompress(body, limit)),
        codec => return Err(RecordError::Codec { codec }),
    };
    inflated.map_err(|error| match error {
        Inflate::TooLarge => RecordError::DecompressedTooLarge { codec: name, limit },
        Inflate::Broken(reason) => RecordError::Decompress {
            codec: name,
            reason,
        },
    })
}

/// Reads at most `limit + 1` bytes: the buffer grows with what the stream yields, never with a
/// size the stream claims.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut inflated = Vec::new();
    let limit_plus_one = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit_plus_one)
        .read_to_end(&mut inflated)
        .map_err(|error| Inflate::Broken(error.to_string()))?;
    if inflated.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(inflated)
}

fn lz4_decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let broken = |error: std::io::Error| Inflate::Broken(error.to_string());
    let mut decoder = lz4::Decoder::new(body).map_err(broken)?;
    let inflated = read_bounded(&mut decoder, limit)?;
    // The decoder reports a frame cut short only here, not as a read error.
    decoder.finish().1.map_err(broken)?;
    Ok(inflated)
}

fn zstd_decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let broken = |error: std::io::Error| Inflate::Broken(error.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(broken)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(broken)?;
    read_bounded(decoder, limit)
}

/// Raw snappy, or snappy-java's framing (a header, then blocks of `u32` length + raw snappy).
/// Each raw block states its inflated size, which is checked against `limit` before allocating.
fn snappy_decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut inflated = Vec::new();
    if !body.starts_with(SNAPPY_XERIAL_MAGIC) {
        snappy_block_append(body, &mut inflated, limit)?;
        return Ok(inflated);
    }
    let mut rest = body.get(SNAPPY_XERIAL_HEADER_BYTES..).unwrap_or_default();
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Err(Inflate::Broken("a snappy block length is cut off".into()));
        };
        let length = u32::from_be_bytes(*length) as usize;
        let Some(block) = after.get(..length) else {
            return Err(Inflate::Broken("a snappy block runs past the body".into()));
        };
        snappy_block_append(block, &mut inflated, limit)?;
        rest = &after[length..];
    }
    Ok(inflated)
}

fn snappy_block_append(block: &[u8], inflated: &mut Vec<u8>, limit: usize) -> Result<(), Inflate> {
    let broken = |error: snap::Error| Inflate::Broken(error.to_string());
    let length = snap::raw::decompress_len(block).map_err(broken)?;
    if length > limit.saturating_sub(inflated.len()) {
        return Err(Inflate::TooLarge);
    }
    let start = inflated.len();
    inflated.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut inflated[start..])
        .map_err(broken)?;
    inflated.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build::{batch_encode, batch_encode_with, RecordSpec};
    use crate::batch::crc_compute;
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::records::Compression;
    use std::io::Write;

    const RULES: RecordRules = RecordRules {
        decompressed_bytes_max: 1024 * 1024,
        key_required: false,
    };

    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut raw = ((value << 1) ^ (value >> 63)) as u64;
        while raw >= 0x80 {
            out.push(raw as u8 | 0x80);
            raw >>= 7;
        }
        out.push(raw as u8);
    }

    type NullableBytes = Option<&'static [u8]>;

    /// One record, hand-encoded so tests can break any field.
    #[derive(Clone)]
    struct Raw {
        offset_delta: i64,
        timestamp_delta: i64,
        key: Option<&'static [u8]>,
        value: Option<&'static [u8]>,
        headers: Vec<(NullableBytes, NullableBytes)>,
    }

    fn raw(offset_delta: i64) -> Raw {
        Raw {
            offset_delta,
            timestamp_delta: offset_delta,
            key: Some(b"k"),
            value: Some(b"value"),
            headers: vec![(Some(b"h"), None)],
        }
    }

    fn nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => varint(out, -1),
            Some(bytes) => {
                varint(out, bytes.len() as i64);
                out.extend_from_slice(bytes);
            }
        }
    }

    fn record_bytes(record: &Raw) -> Vec<u8> {
        let mut body = vec![0u8];
        varint(&mut body, record.timestamp_delta);
        varint(&mut body, record.offset_delta);
        nullable(&mut body, record.key);
        nullable(&mut body, record.value);
        varint(&mut body, record.headers.len() as i64);
        for (key, value) in &record.headers {
            nullable(&mut body, *key);
            nullable(&mut body, *value);
        }
        let mut out = Vec::new();
        varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    fn section(records: &[Raw]) -> Vec<u8> {
        records.iter().flat_map(record_bytes).collect()
    }

    /// The batch fields a case may change; `envelope(count)` sets lastOffsetDelta to `count - 1`.
    #[derive(Clone, Copy)]
    struct Envelope {
        attributes: i16,
        count: i32,
        last_offset_delta: i32,
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    }

    fn envelope(count: i32) -> Envelope {
        Envelope {
            attributes: 0,
            count,
            last_offset_delta: count - 1,
            base_timestamp: 1_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// A batch around `section` with a valid CRC, so only the records can be wrong.
    fn batch(envelope: Envelope, section: &[u8]) -> ValidatedBatch {
        let mut bytes = BytesMut::new();
        bytes.put_i64(0);
        bytes.put_i32((BATCH_HEADER_BYTES - 12 + section.len()) as i32);
        bytes.put_i32(0);
        bytes.put_i8(2);
        bytes.put_u32(0);
        bytes.put_i16(envelope.attributes);
        bytes.put_i32(envelope.last_offset_delta);
        bytes.put_i64(envelope.base_timestamp);
        bytes.put_i64(envelope.base_timestamp);
        bytes.put_i64(envelope.producer_id);
        bytes.put_i16(envelope.producer_epoch);
        bytes.put_i32(envelope.base_sequence);
        bytes.put_i32(envelope.count);
        bytes.put_slice(section);
        let crc = crc_compute(&bytes);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        ValidatedBatch::validate(bytes.freeze()).expect("the envelope is valid")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }
    fn snappy_xerial(bytes: &[u8]) -> Vec<u8> {
        let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in bytes.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }
    fn lz4(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        encoder.write_all(bytes).unwrap();
        let (out, result) = encoder.finish();
        result.unwrap();
        out
    }
    fn zstd(bytes: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(bytes, 3).unwrap()
    }

    /// Renders one line per case: its name and `ok` or the error.
    fn check(cases: &[(&str, ValidatedBatch, RecordRules)]) -> String {
        cases
            .iter()
            .map(
                |(name, batch, rules)| match records_validate(batch, rules) {
                    Ok(()) => format!("{name}: ok\n"),
                    Err(error) => format!("{name}: {error}\n"),
                },
            )
            .collect()
    }

    #[test]
    fn well_formed_batches_pass_with_every_codec() {
        let plain = section(&[raw(0), raw(1), raw(2)]);
        let compressed = |codec: i16, body: Vec<u8>| {
            let envelope = Envelope {
                attributes: codec,
                ..envelope(3)
            };
            batch(envelope, &body)
        };
        let idempotent = Envelope {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            ..envelope(3)
        };
        let transactional = Envelope {
            attributes: 0x10,
            ..idempotent
        };
        let no_timestamp = Envelope {
            base_timestamp: -1,
            ..envelope(1)
        };
        let mut keyless = raw(0);
        keyless.key = None;
        insta::assert_snapshot!(check(&[
            ("none", batch(envelope(3), &plain), RULES),
            ("gzip", compressed(1, gzip(&plain)), RULES),
            ("snappy framed", compressed(2, snappy_xerial(&plain)), RULES),
            ("snappy raw", compressed(2, snap::raw::Encoder::new().compress_vec(&plain).unwrap()), RULES),
            ("lz4", compressed(3, lz4(&plain)), RULES),
            ("zstd", compressed(4, zstd(&plain)), RULES),
            ("idempotent", batch(idempotent, &plain), RULES),
            ("transactional", batch(transactional, &plain), RULES),
            ("timestamp -1", batch(no_timestamp, &section(&[raw(0)])), RULES),
            ("keyless, delete policy", batch(envelope(1), &section(&[keyless])), RULES),
        ]), @r"
        none: ok
        gzip: ok
        snappy framed: ok
        snappy raw: ok
        lz4: ok
        zstd: ok
        idempotent: ok
        transactional: ok
        timestamp -1: ok
        keyless, delete policy: ok
        ");
    }

    /// Issue 8, section 2: the poison batches a CRC check let through, and their kin.
    #[test]
    fn broken_records_are_refused_by_class() {
        let one = section(&[raw(0)]);
        let with = |attributes: i16| Envelope {
            attributes,
            ..envelope(1)
        };
        let mut huge_length = Vec::new();
        varint(&mut huge_length, 1 << 40);
        huge_length.extend_from_slice(&one[1..]);
        let mut short_length = one.clone();
        short_length[0] -= 2; // Zigzag: one byte shorter.
        let mut null_header = raw(0);
        null_header.headers = vec![(None, Some(b"v"))];
        let mut latin1_header = raw(0);
        latin1_header.headers = vec![(Some(b"caf\xe9"), Some(b"v"))];
        let mut overflow = raw(0);
        overflow.timestamp_delta = i64::MAX;
        let mut trailing = one.clone();
        trailing.push(0);
        let mut negative_key = one.clone();
        negative_key[4] = 3; // Key length -2.
        let pid = |producer_id, producer_epoch, base_sequence, attributes| Envelope {
            producer_id,
            producer_epoch,
            base_sequence,
            attributes,
            ..envelope(1)
        };
        let uneven = envelope(2);
        let uneven = {
            let mut bytes = BytesMut::from(&batch(uneven, &section(&[raw(0), raw(1)])).bytes()[..]);
            bytes[23..27].copy_from_slice(&5i32.to_be_bytes());
            let crc = crc_compute(&bytes);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            ValidatedBatch::validate(bytes.freeze()).unwrap()
        };
        insta::assert_snapshot!(check(&[
            ("garbage records", batch(envelope(1), &[0xff; 20]), RULES),
            ("count 3, one record", batch(envelope(3), &one), RULES),
            ("codec 7", batch(with(7), &one), RULES),
            ("gzip flag, plain body", batch(with(1), &one), RULES),
            ("snappy flag, plain body", batch(with(2), &one), RULES),
            ("lz4 flag, plain body", batch(with(3), &one), RULES),
            ("zstd flag, plain body", batch(with(4), &one), RULES),
            ("record length 2^40", batch(envelope(1), &huge_length), RULES),
            ("record length short", batch(envelope(1), &short_length), RULES),
            ("key length -2", batch(envelope(1), &negative_key), RULES),
            ("bytes after the records", batch(envelope(1), &trailing), RULES),
            ("offset deltas 0, 2", batch(envelope(2), &section(&[raw(0), raw(2)])), RULES),
            ("timestamp overflow", batch(envelope(1), &section(&[overflow])), RULES),
            ("null header key", batch(envelope(1), &section(&[null_header])), RULES),
            ("header key not UTF-8", batch(envelope(1), &section(&[latin1_header])), RULES),
            ("count 2, last offset delta 5", uneven, RULES),
            ("transactional, pid -1", batch(with(0x10), &one), RULES),
            ("control", batch(pid(7, 0, 0, 0x30), &one), RULES),
            ("pid 7, epoch -1", batch(pid(7, -1, 0, 0), &one), RULES),
            ("pid 7, sequence -1", batch(pid(7, 0, -1, 0), &one), RULES),
        ]), @r"
        garbage records: record 0 is malformed: a varint is out of range
        count 3, one record: the batch declares 3 records but holds 1
        codec 7: compression codec 7 is unknown (0-4 are none, gzip, snappy, lz4, zstd)
        gzip flag, plain body: the gzip body does not decompress: invalid gzip header
        snappy flag, plain body: the snappy body does not decompress: snappy: corrupt input (expected valid offset but got offset 1818326538; dst position: 2)
        lz4 flag, plain body: the lz4 body does not decompress: LZ4 error: ERROR_frameType_unknown
        zstd flag, plain body: the zstd body does not decompress: Unknown frame descriptor
        record length 2^40: record 0 is malformed: a varint is too long
        record length short: record 0 is malformed: a varint runs past the end
        key length -2: record 0 is malformed: a length is below -1
        bytes after the records: 1 bytes are left over after the batch's 1 records
        offset deltas 0, 2: record 1 has offset delta 2; inner offsets run 0, 1, 2, ...
        timestamp overflow: record 0: timestamp delta 9223372036854775807 overflows base timestamp 1000
        null header key: record 0 has a header with a null key
        header key not UTF-8: record 0 has a header key that is not UTF-8
        count 2, last offset delta 5: record count 2 does not match last offset delta 5 + 1
        transactional, pid -1: a transactional batch needs a producer id (it has -1)
        control: producers may not write control batches
        pid 7, epoch -1: producer id 7 needs an epoch and a base sequence >= 0 (they are -1 and 0)
        pid 7, sequence -1: producer id 7 needs an epoch and a base sequence >= 0 (they are 0 and -1)
        ");
    }

    #[test]
    fn compacted_topics_name_every_keyless_record() {
        let mut keyless = raw(1);
        keyless.key = None;
        let mut keyless_too = raw(3);
        keyless_too.key = None;
        let records = section(&[raw(0), keyless, raw(2), keyless_too]);
        let compacted = RecordRules {
            key_required: true,
            ..RULES
        };
        let error = records_validate(&batch(envelope(4), &records), &compacted);
        assert_eq!(
            error,
            Err(RecordError::KeyMissing {
                indexes: vec![1, 3]
            })
        );
        assert_eq!(
            records_validate(&batch(envelope(4), &records), &RULES),
            Ok(())
        );
    }

    /// A small body that inflates past the limit is refused, by every codec, without inflating
    /// it all: the limit is 64 KiB here and the bomb 8 MiB.
    #[test]
    fn zip_bombs_stop_at_the_limit() {
        let bomb = vec![0u8; 8 * 1024 * 1024];
        let rules = RecordRules {
            decompressed_bytes_max: 64 * 1024,
            key_required: false,
        };
        let compressed = |codec: i16, body: Vec<u8>| {
            assert!(body.len() < 1024 * 1024, "the bomb is small");
            let envelope = Envelope {
                attributes: codec,
                ..envelope(1)
            };
            (batch(envelope, &body), rules)
        };
        let cases = [
            ("gzip", compressed(1, gzip(&bomb))),
            ("snappy framed", compressed(2, snappy_xerial(&bomb))),
            (
                "snappy raw",
                compressed(2, snap::raw::Encoder::new().compress_vec(&bomb).unwrap()),
            ),
            ("lz4", compressed(3, lz4(&bomb))),
            ("zstd", compressed(4, zstd(&bomb))),
        ];
        let cases: Vec<_> = cases
            .into_iter()
            .map(|(name, (batch, rules))| (name, batch, rules))
            .collect();
        insta::assert_snapshot!(check(&cases), @r"
        gzip: the gzip body inflates to more than 65536 bytes (max.message.bytes)
        snappy framed: the snappy body inflates to more than 65536 bytes (max.message.bytes)
        snappy raw: the snappy body inflates to more than 65536 bytes (max.message.bytes)
        lz4: the lz4 body inflates to more than 65536 bytes (max.message.bytes)
        zstd: the zstd body inflates to more than 65536 bytes (max.message.bytes)
        ");
    }

    #[test]
    fn every_poison_passes_the_envelope_and_is_refused_by_its_records() {
        use crate::batch::build::{batch_poisoned, Poison, RecordSpec};
        let record = RecordSpec {
            value: Some(Bytes::from_static(b"poison")),
            timestamp: 1,
            ..Default::default()
        };
        let rules = RecordRules {
            decompressed_bytes_max: 1 << 20,
            key_required: false,
        };
        let verdicts: String = Poison::ALL
            .iter()
            .map(|poison| {
                let batch = ValidatedBatch::validate(batch_poisoned(&record, *poison))
                    .expect("a poisoned batch keeps a valid envelope");
                let verdict = records_validate(&batch, &rules).expect_err("poison is refused");
                format!("{}: {verdict}\n", poison.name())
            })
            .collect();
        insta::assert_snapshot!(verdicts, @r"
        garbage-records: record 0 is malformed: negative record length
        count-mismatch: the batch declares 3 records but holds 1
        unknown-codec: compression codec 7 is unknown (0-4 are none, gzip, snappy, lz4, zstd)
        gzip-flag-on-plain-body: the gzip body does not decompress: invalid gzip header
        transactional-without-producer: a transactional batch needs a producer id (it has -1)
        control: producers may not write control batches
        ");
    }

    #[test]
    fn readers_accept_compacted_and_control_batches_and_refuse_bombs_and_garbage() {
        // What a client checks of fetched batches: compaction leaves gaps in offset deltas and
        // control batches are a reader's to interpret; bombs and broken records are refused.
        let compacted = Envelope {
            last_offset_delta: 4,
            ..envelope(2)
        };
        let control = Envelope {
            attributes: 0x20,
            ..envelope(1)
        };
        let gzip_bomb = Envelope {
            attributes: 1,
            ..envelope(1)
        };
        let cases = [
            (
                "compacted, deltas 1 and 4",
                batch(compacted, &section(&[raw(1), raw(4)])),
            ),
            ("control", batch(control, &section(&[raw(0)]))),
            (
                "deltas out of order",
                batch(compacted, &section(&[raw(3), raw(2)])),
            ),
            (
                "delta past the last",
                batch(compacted, &section(&[raw(1), raw(5)])),
            ),
            ("gzip bomb", batch(gzip_bomb, &gzip(&vec![0u8; 8 << 20]))),
            ("garbage", batch(envelope(1), b"\x7f\x00garbage")),
        ];
        let verdicts: String = cases
            .iter()
            .map(|(name, batch)| match records_readable(batch, 1 << 20) {
                Ok(()) => format!("{name}: readable\n"),
                Err(error) => format!("{name}: {error}\n"),
            })
            .collect();
        insta::assert_snapshot!(verdicts, @r"
        compacted, deltas 1 and 4: readable
        control: readable
        deltas out of order: record 1 has offset delta 2; inner offsets run 0, 1, 2, ...
        delta past the last: record 1 has offset delta 5; inner offsets run 0, 1, 2, ...
        gzip bomb: the gzip body inflates to more than 1048576 bytes (max.message.bytes)
        garbage: record 0 is malformed: negative record length
        ");
    }

    fn spec() -> impl proptest::strategy::Strategy<Value = RecordSpec> {
        use proptest::prelude::*;
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        let header = ("[a-z]{0,6}", bytes());
        (
            bytes(),
            bytes(),
            proptest::collection::vec(header, 0..3),
            -1i64..5_000,
        )
            .prop_map(|(key, value, headers, timestamp)| RecordSpec {
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
                timestamp,
            })
    }

    fn compression(index: u8) -> Compression {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ][usize::from(index % 5)]
    }

    proptest::proptest! {
        /// Whatever the encoder writes, with any codec and producer fields, passes.
        #[test]
        fn encoded_batches_pass(
            specs in proptest::collection::vec(spec(), 1..20),
            codec in 0u8..5,
            idempotent in proptest::bool::ANY,
        ) {
            let batch = if idempotent {
                batch_encode_with(&specs, compression(codec), 3, 0, 11, false)
            } else {
                batch_encode(&specs, compression(codec))
            };
            proptest::prop_assert_eq!(records_validate(&batch, &RULES), Ok(()));
        }

        /// Mutations of a valid batch, with the CRC fixed up so they reach the records, never
        /// panic: they validate or are refused.
        #[test]
        fn mutated_batches_never_panic(
            specs in proptest::collection::vec(spec(), 1..8),
            codec in 0u8..5,
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY, 0u8..3), 1..6),
        ) {
            let valid = batch_encode(&specs, compression(codec));
            let mut bytes = valid.bytes().to_vec();
            for (position, byte, kind) in edits {
                let position = 21 + position % (bytes.len() - 21);
                match kind {
                    0 => bytes[position] = byte,
                    1 => bytes.insert(position, byte),
                    _ => { bytes.remove(position); }
                }
                if bytes.len() <= BATCH_HEADER_BYTES { break; }
            }
            let length = bytes.len() as i32 - 12;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            let crc = crc_compute(&bytes);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            if let Ok(batch) = ValidatedBatch::validate(Bytes::from(bytes)) {
                let _ = records_validate(&batch, &RULES);
            }
        }
    }
}
