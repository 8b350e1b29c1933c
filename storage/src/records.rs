//! The records inside a batch, as views over their raw bytes, and rebuilding a batch from a
//! subset of them. Compaction needs this byte-exact form: `kafka_protocol`'s decoder collapses
//! repeated header keys into a map and its encoder re-derives offsets and drops the timestamp
//! type, while a raw record copied into a batch with the same base offset and base timestamp
//! keeps its offset, timestamp, key, value and headers bit for bit.
//!
//! Record layout (v2; varints are zigzag): length varint, attributes i8, timestampDelta varlong,
//! offsetDelta varint, keyLength varint + key, valueLength varint + value, headers.

use crate::index::TIMESTAMP_NONE;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use wire::batch::{crc_compute, BATCH_HEADER_BYTES, BATCH_LENGTH_OVERHEAD};
use wire::{BatchHeader, ValidatedBatch};

/// The attribute bits a rewritten batch keeps: timestamp type, transactional, control. The
/// compression bits are cleared because rewrites are stored uncompressed.
const ATTRIBUTES_KEPT: i16 = 0x08 | 0x10 | 0x20;

/// Where a v2 batch header keeps its max timestamp (`i64`, inside the CRC).
const MAX_TIMESTAMP_POSITION: usize = 35;

/// One record of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value_is_null: bool,
    /// The whole record: length prefix and body.
    pub raw: &'a [u8],
}

/// The batch's records section, decompressed if needed.
pub(crate) fn records_section(batch: &ValidatedBatch) -> Result<Bytes, String> {
    let mut section = batch.bytes().slice(BATCH_HEADER_BYTES..);
    let take = |buffer: &mut Bytes| Ok(std::mem::take(buffer));
    let result = match batch.header().compression() {
        0 => return Ok(section),
        1 => Gzip::decompress(&mut section, take),
        2 => Snappy::decompress(&mut section, take),
        3 => Lz4::decompress(&mut section, take),
        4 => Zstd::decompress(&mut section, take),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|error| format!("decompression failed: {error:#}"))
}

/// Splits a records section into `header.record_count` records.
pub(crate) fn records_parse<'a>(
    section: &'a [u8],
    header: &BatchHeader,
) -> Result<Vec<RecordView<'a>>, String> {
    let count = usize::try_from(header.record_count).map_err(|_| "negative record count")?;
    // A record is at least 7 bytes, so a count beyond that is garbage, not an allocation.
    if count > section.len() / 7 + 1 {
        return Err(format!(
            "{count} records cannot fit {} bytes",
            section.len()
        ));
    }
    let mut records = Vec::with_capacity(count);
    let mut rest = section;
    for _ in 0..count {
        let (record, after) = record_parse(rest, header)?;
        records.push(record);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the last record", rest.len()));
    }
    Ok(records)
}

/// The newest record timestamp of a batch, starting from Kafka's "no timestamp" (-1) as
/// Kafka's LogValidator does: a batch whose records all lack a timestamp has none. Reads only
/// each record's length and timestamp delta, so it costs a few varints per record; the full
/// parse (`record_parse`) costs several times more on the produce path.
fn records_timestamp_max(section: &[u8], header: &BatchHeader) -> Result<i64, String> {
    let count = usize::try_from(header.record_count).map_err(|_| "negative record count")?;
    let mut timestamp_max = TIMESTAMP_NONE;
    let mut cursor = Cursor {
        bytes: section,
        position: 0,
    };
    // Bounded by the record count, and each record consumes at least one byte or fails.
    for _ in 0..count {
        let length = usize::try_from(cursor.varint()?).map_err(|_| "negative record length")?;
        let end = cursor.position.checked_add(length);
        let end = end.filter(|end| *end <= section.len());
        let end = end.ok_or_else(|| format!("record of {length} bytes overruns the batch"))?;
        let mut body = Cursor {
            bytes: &section[..end],
            position: cursor.position,
        };
        body.take(1)?; // Attributes: unused in v2.
        let timestamp = header.base_timestamp.wrapping_add(body.varint()?);
        timestamp_max = timestamp_max.max(timestamp);
        cursor.position = end;
    }
    Ok(timestamp_max)
}

/// The batch with its header's max timestamp set to its newest record's, as Kafka's
/// LogValidator sets it for CreateTime batches instead of trusting the client. librdkafka
/// writes MaxTimestamp 0 for records produced without a timestamp (-1); trusted, that aged
/// them from 1970 and time retention deleted them within a minute (issue 8). Segments, the
/// time index and retention all read the header, so it is fixed once, here.
///
/// Uncompressed records are walked in place. A compressed batch is decompressed only when its
/// header looks like that quirk (a first record without a timestamp, or a base above the
/// max), so the common produce path pays no decompression. The batch is copied only when the
/// header is wrong, and returned as it is when its records do not parse: refusing those is
/// the produce path's validation, not this repair's.
pub(crate) fn batch_timestamp_max_settle(batch: ValidatedBatch) -> ValidatedBatch {
    let header = *batch.header();
    let suspicious = header.base_timestamp < 0 || header.base_timestamp > header.max_timestamp;
    if header.is_log_append_time() || (header.compression() != 0 && !suspicious) {
        return batch;
    }
    let Ok(section) = records_section(&batch) else {
        return batch;
    };
    let Ok(timestamp_max) = records_timestamp_max(&section, &header) else {
        return batch;
    };
    if timestamp_max == header.max_timestamp {
        return batch;
    }
    let mut bytes = BytesMut::from(batch.bytes().as_ref());
    bytes[MAX_TIMESTAMP_POSITION..MAX_TIMESTAMP_POSITION + 8]
        .copy_from_slice(&timestamp_max.to_be_bytes());
    let crc = crc_compute(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    ValidatedBatch::validate(bytes.freeze()).expect("only the max timestamp and its CRC changed")
}

fn record_parse<'a>(
    bytes: &'a [u8],
    header: &BatchHeader,
) -> Result<(RecordView<'a>, &'a [u8]), String> {
    let mut cursor = Cursor { bytes, position: 0 };
    let length = usize::try_from(cursor.varint()?).map_err(|_| "negative record length")?;
    let end = cursor
        .position
        .checked_add(length)
        .filter(|end| *end <= bytes.len());
    let end = end.ok_or_else(|| format!("record of {length} bytes overruns the batch"))?;
    let mut body = Cursor {
        bytes: &bytes[..end],
        position: cursor.position,
    };
    body.take(1)?; // Attributes: unused in v2.
    let timestamp_delta = body.varint()?;
    let offset_delta = body.varint()?;
    let key = match body.varint()? {
        -1 => None,
        length => Some(body.take(usize::try_from(length).map_err(|_| "bad key length")?)?),
    };
    let value_is_null = body.varint()? == -1;
    let timestamp = match header.is_log_append_time() {
        true => header.max_timestamp,
        false => header.base_timestamp.wrapping_add(timestamp_delta),
    };
    let offset = header.base_offset + offset_delta;
    if offset_delta < 0 || offset > header.last_offset() {
        return Err(format!(
            "record offset delta {offset_delta} is outside the batch"
        ));
    }
    let record = RecordView {
        offset,
        timestamp,
        key,
        value_is_null,
        raw: &bytes[..end],
    };
    Ok((record, &bytes[end..]))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("{count} bytes overrun the record"))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    /// A zigzag varint of up to 64 bits (Kafka's varint and varlong share the encoding).
    fn varint(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }
}

/// The batch `original` rewritten to hold only `kept` (records parsed from it, in order),
/// uncompressed. Base offset, last offset delta, base timestamp, leader epoch and producer
/// fields are preserved (Kafka's v2 compaction rule), so each raw record stays valid as is and
/// offsets never move. `kept` may be empty: that is the header alone, with its max timestamp,
/// which compaction keeps for a producer's last batch (Kafka's `RETAIN_EMPTY`).
pub(crate) fn batch_rebuild(original: &BatchHeader, kept: &[RecordView]) -> ValidatedBatch {
    let records_bytes: usize = kept.iter().map(|record| record.raw.len()).sum();
    let size = BATCH_HEADER_BYTES + records_bytes;
    let kept_timestamp_max = kept.iter().map(|record| record.timestamp).max();
    let max_timestamp = match (original.is_log_append_time(), kept_timestamp_max) {
        (false, Some(timestamp)) => timestamp,
        (true, _) | (false, None) => original.max_timestamp,
    };
    let mut bytes = BytesMut::with_capacity(size);
    bytes.put_i64(original.base_offset);
    bytes.put_i32((size - BATCH_LENGTH_OVERHEAD) as i32);
    bytes.put_i32(original.partition_leader_epoch);
    bytes.put_i8(wire::batch::MAGIC_V2);
    bytes.put_u32(0); // CRC, filled below.
    bytes.put_i16(original.attributes & ATTRIBUTES_KEPT);
    bytes.put_i32(original.last_offset_delta);
    bytes.put_i64(original.base_timestamp);
    bytes.put_i64(max_timestamp);
    bytes.put_i64(original.producer_id);
    bytes.put_i16(original.producer_epoch);
    bytes.put_i32(original.base_sequence);
    bytes.put_i32(kept.len() as i32);
    assert_eq!(bytes.len(), BATCH_HEADER_BYTES);
    for record in kept {
        bytes.put_slice(record.raw);
    }
    let crc = crc_compute(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    ValidatedBatch::validate(bytes.freeze()).expect("a rebuilt batch is valid by construction")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder};
    use wire::batch::build::{batch_encode, RecordSpec};

    fn spec(key: Option<&str>, value: Option<&str>, timestamp: i64) -> RecordSpec {
        RecordSpec {
            key: key.map(|key| Bytes::from(key.to_string())),
            value: value.map(|value| Bytes::from(value.to_string())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"1")))],
            timestamp,
        }
    }

    /// Parsing agrees with `kafka_protocol`'s decoder, and a rebuilt subset decodes to the same
    /// records with their original offsets, for every codec.
    #[test]
    fn parse_matches_the_decoder_and_rebuild_preserves_records() {
        let specs = [
            spec(Some("a"), Some("1"), 100),
            spec(None, Some("2"), 90),
            spec(Some("b"), None, 120),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = batch_encode(&specs, compression).with_placement(40, 3);
            let section = records_section(&batch).unwrap();
            let records = records_parse(&section, batch.header()).unwrap();
            let decoded = RecordBatchDecoder::decode(&mut batch.bytes().clone())
                .unwrap()
                .records;
            assert_eq!(records.len(), decoded.len());
            for (view, record) in records.iter().zip(&decoded) {
                assert_eq!(view.offset, record.offset);
                assert_eq!(view.timestamp, record.timestamp);
                assert_eq!(view.key, record.key.as_deref());
                assert_eq!(view.value_is_null, record.value.is_none());
            }
            let rebuilt = batch_rebuild(batch.header(), &[records[0], records[2]]);
            let header = rebuilt.header();
            assert_eq!(
                (
                    header.base_offset,
                    header.last_offset(),
                    header.record_count
                ),
                (40, 42, 2)
            );
            assert_eq!(
                (header.partition_leader_epoch, header.compression()),
                (3, 0)
            );
            assert_eq!(header.max_timestamp, 120);
            let again = RecordBatchDecoder::decode(&mut rebuilt.bytes().clone())
                .unwrap()
                .records;
            assert_eq!(again.len(), 2);
            assert_eq!((again[0].offset, again[1].offset), (40, 42));
            assert_eq!(again[0].headers, decoded[0].headers);
            assert_eq!(again[1].value, None);
            let emptied = batch_rebuild(batch.header(), &[]);
            let header = emptied.header();
            assert_eq!(
                (
                    header.base_offset,
                    header.last_offset(),
                    header.record_count,
                    header.max_timestamp
                ),
                (40, 42, 0, batch.header().max_timestamp),
                "an emptied batch keeps its offsets and max timestamp"
            );
            let none = RecordBatchDecoder::decode(&mut emptied.bytes().clone())
                .unwrap()
                .records;
            assert!(none.is_empty());
        }
    }

    /// A batch of records with `timestamps`, its header's max timestamp then set to `claimed`.
    fn batch_claiming(
        timestamps: &[i64],
        claimed: i64,
        compression: Compression,
    ) -> ValidatedBatch {
        let records: Vec<RecordSpec> = timestamps
            .iter()
            .map(|&timestamp| spec(None, Some("v"), timestamp))
            .collect();
        let mut bytes = batch_encode(&records, compression).bytes().to_vec();
        bytes[MAX_TIMESTAMP_POSITION..MAX_TIMESTAMP_POSITION + 8]
            .copy_from_slice(&claimed.to_be_bytes());
        let crc = crc_compute(&bytes);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        ValidatedBatch::validate(bytes.into()).unwrap()
    }

    /// Each case: record timestamps, the header's claimed max, and the max stored.
    #[test]
    fn settle_takes_the_max_from_the_records() {
        let cases: Vec<String> = [
            ("librdkafka untimed", vec![-1, -1], 0, Compression::None),
            (
                "librdkafka untimed, gzip",
                vec![-1, -1],
                0,
                Compression::Gzip,
            ),
            ("claims too new", vec![5, 7], 100, Compression::None),
            ("claims too old", vec![5, 7], 6, Compression::None),
            ("honest", vec![5, 7], 7, Compression::None),
            ("mixed untimed first", vec![-1, 9], 0, Compression::None),
            (
                "gzip with a sane header is trusted",
                vec![5, 7],
                100,
                Compression::Gzip,
            ),
        ]
        .into_iter()
        .map(|(name, timestamps, claimed, compression)| {
            let batch = batch_claiming(&timestamps, claimed, compression);
            let settled = batch_timestamp_max_settle(batch);
            format!("{name}: {claimed} -> {}", settled.header().max_timestamp)
        })
        .collect();
        insta::assert_snapshot!(cases.join("\n"), @r"
        librdkafka untimed: 0 -> -1
        librdkafka untimed, gzip: 0 -> -1
        claims too new: 100 -> 7
        claims too old: 6 -> 7
        honest: 7 -> 7
        mixed untimed first: 0 -> 9
        gzip with a sane header is trusted: 100 -> 100
        ");
        let appended = batch_claiming(&[-1], 0, Compression::None).with_log_append_time(42);
        let settled = batch_timestamp_max_settle(appended.clone());
        assert_eq!(
            settled, appended,
            "LogAppendTime batches carry the broker's time"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let batch = batch_encode(&[spec(Some("a"), Some("1"), 1)], Compression::None);
        let section = records_section(&batch).unwrap();
        for cut in 0..section.len() {
            assert!(
                records_parse(&section[..cut], batch.header()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(records_parse(&[0xff; 20], batch.header()).is_err());
    }
}
