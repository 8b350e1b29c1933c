//! Control batches: the COMMIT and ABORT markers a transaction coordinator has the partition
//! leaders write (KIP-98). A control batch has the control and transactional attribute bits,
//! the producer's id and epoch, base sequence -1, and one uncompressed record:
//!
//! ```text
//! key:   version i16 (0), type i16 (0 = ABORT, 1 = COMMIT)       Kafka's ControlRecordType
//! value: version i16 (0), coordinator_epoch i32                 Kafka's EndTxnMarker
//! ```
//!
//! Only brokers write them (`records_validate` refuses them from producers); readers skip them,
//! and a read_committed reader uses them to end the transactions it buffered.

use crate::batch::{crc_compute, BATCH_HEADER_BYTES, BATCH_LENGTH_OVERHEAD, MAGIC_V2};
use crate::ValidatedBatch;
use bytes::{BufMut, BytesMut};

/// Attribute bits of a control batch: transactional (0x10) and control (0x20).
const CONTROL_ATTRIBUTES: i16 = 0x10 | 0x20;
const TYPE_ABORT: i16 = 0;
const TYPE_COMMIT: i16 = 1;

/// What a control batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// COMMIT (true) or ABORT (false).
    pub commit: bool,
    pub coordinator_epoch: i32,
}

fn varint_put(buffer: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    // Bounded: ten 7-bit groups cover 64 bits.
    while zigzag >= 0x80 {
        buffer.put_u8((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    buffer.put_u8(zigzag as u8);
}

/// The control batch for `marker`, at base offset 0 (the log places it), timestamped
/// `timestamp_ms` (Kafka stamps markers with the leader's clock).
pub fn control_batch_encode(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    timestamp_ms: i64,
) -> ValidatedBatch {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(match marker.commit {
        true => TYPE_COMMIT,
        false => TYPE_ABORT,
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(marker.coordinator_epoch);
    let mut body = BytesMut::new();
    body.put_i8(0); // record attributes
    varint_put(&mut body, 0); // timestamp delta
    varint_put(&mut body, 0); // offset delta
    varint_put(&mut body, key.len() as i64);
    body.put_slice(&key);
    varint_put(&mut body, value.len() as i64);
    body.put_slice(&value);
    varint_put(&mut body, 0); // header count
    let mut record = BytesMut::new();
    varint_put(&mut record, body.len() as i64);
    record.put_slice(&body);

    let mut batch = BytesMut::with_capacity(BATCH_HEADER_BYTES + record.len());
    batch.put_i64(0); // base offset
    batch.put_i32((BATCH_HEADER_BYTES - BATCH_LENGTH_OVERHEAD + record.len()) as i32);
    batch.put_i32(-1); // partition leader epoch: the log places it
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0); // crc, below
    batch.put_i16(CONTROL_ATTRIBUTES);
    batch.put_i32(0); // last offset delta
    batch.put_i64(timestamp_ms);
    batch.put_i64(timestamp_ms);
    batch.put_i64(producer_id);
    batch.put_i16(producer_epoch);
    batch.put_i32(-1); // base sequence
    batch.put_i32(1); // record count
    batch.put_slice(&record);
    let crc = crc_compute(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    ValidatedBatch::validate(batch.freeze()).expect("a control batch is valid by construction")
}

/// What the control batch `batch` says, or why it says nothing: not a control batch,
/// compressed, or a record that is not a version-0 ABORT/COMMIT marker. Never panics.
pub fn control_marker_parse(batch: &ValidatedBatch) -> Result<ControlMarker, String> {
    let header = batch.header();
    if !header.is_control() {
        return Err("not a control batch".into());
    }
    if header.compression() != 0 || header.record_count != 1 {
        return Err("a control batch holds one uncompressed record".into());
    }
    let mut reader = Reader {
        bytes: &batch.bytes()[BATCH_HEADER_BYTES..],
    };
    let length = reader.varint()?;
    if usize::try_from(length).ok() != Some(reader.bytes.len()) {
        return Err(format!("record length {length} does not fill the batch"));
    }
    reader.take(1)?; // attributes
    reader.varint()?; // timestamp delta
    reader.varint()?; // offset delta
    let key = reader.sized()?;
    let value = reader.sized()?;
    let (Ok(key), Ok(value)) = (<[u8; 4]>::try_from(key), <[u8; 6]>::try_from(value)) else {
        return Err("control key or value of the wrong size".into());
    };
    let key_version = i16::from_be_bytes([key[0], key[1]]);
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let value_version = i16::from_be_bytes([value[0], value[1]]);
    if key_version != 0 || value_version != 0 {
        return Err(format!(
            "control record version {key_version}/{value_version}"
        ));
    }
    let commit = match kind {
        TYPE_ABORT => false,
        TYPE_COMMIT => true,
        other => return Err(format!("control record type {other}")),
    };
    Ok(ControlMarker {
        commit,
        coordinator_epoch: i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err("control record truncated".into());
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint too long".into())
    }

    /// A varint length and that many bytes (a null, -1, is refused: markers have both).
    fn sized(&mut self) -> Result<&'a [u8], String> {
        let length = self.varint()?;
        let length = usize::try_from(length).map_err(|_| "null control key or value")?;
        self.take(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_match_kafkas_decoder() {
        for commit in [false, true] {
            let marker = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let batch = control_batch_encode(42, 3, marker, 1_000);
            let header = batch.header();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, -1);
            assert_eq!(control_marker_parse(&batch), Ok(marker));
            let mut bytes = batch.bytes().clone();
            let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .expect("kafka-protocol decodes it");
            let record = &decoded.records[0];
            assert!(record.control && record.transactional);
            assert_eq!(
                record.key.as_deref(),
                Some(&[0, 0, 0, u8::from(commit)][..])
            );
        }
    }

    #[test]
    fn data_batches_and_garbage_are_not_markers() {
        let data = crate::batch::build::batch_encode(
            &[crate::batch::build::RecordSpec::default()],
            kafka_protocol::records::Compression::None,
        );
        assert!(control_marker_parse(&data).is_err());
        let good = control_batch_encode(
            1,
            0,
            ControlMarker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        for index in BATCH_HEADER_BYTES..good.size() {
            let mut bytes = BytesMut::from(&good.bytes()[..]);
            bytes[index] ^= 0x41;
            let crc = crc_compute(&bytes);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            if let Ok(batch) = ValidatedBatch::validate(bytes.freeze()) {
                let _ = control_marker_parse(&batch); // an error or another marker, never a panic
            }
        }
    }
}
