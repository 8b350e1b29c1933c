//! The aborted-transaction index of a closed segment (`<base>.txnindex`, Kafka's format): one
//! 34-byte entry per ABORT marker the segment holds for a transaction that wrote data, in log
//! order: `version i16 (0), producer_id i64, first_offset i64, last_offset i64,
//! last_stable_offset i64`, big-endian. Pure encoding here; `segment` reads and writes the file.
//!
//! Like the offset index it is a cache of what the segment's batches say: written at roll with
//! the other index files (first, and only when not empty, so a missing one next to an offset
//! index means none aborted), never for the active segment (whose entries live in memory and which
//! recovery always scans), and rebuilt by recovery's producer-state replay when missing or
//! invalid. Kafka's file carries no checksum, so a decoded index is also held to its segment:
//! every entry must end at a control batch of its producer (`Segment::index_open`).

use crate::producer_state::AbortedTxn;

const ENTRY_BYTES: usize = 34;
const VERSION: i16 = 0;

pub(crate) fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for entry in entries {
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.extend_from_slice(&entry.producer_id.to_be_bytes());
        bytes.extend_from_slice(&entry.first_offset.to_be_bytes());
        bytes.extend_from_slice(&entry.last_offset.to_be_bytes());
        bytes.extend_from_slice(&entry.last_stable_offset.to_be_bytes());
    }
    bytes
}

/// The entries of a segment spanning offsets `[base_offset, next_offset)`, or why the bytes
/// cannot be its index: a partial entry, an unknown version, offsets out of order or outside
/// the segment, a stable offset that goes back.
pub(crate) fn decode(
    bytes: &[u8],
    base_offset: i64,
    next_offset: i64,
) -> Result<Vec<AbortedTxn>, String> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(format!("{} bytes are not whole entries", bytes.len()));
    }
    let mut entries: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for chunk in bytes.chunks_exact(ENTRY_BYTES) {
        let i64_at = |at: usize| i64::from_be_bytes(chunk[at..at + 8].try_into().expect("8"));
        let version = i16::from_be_bytes([chunk[0], chunk[1]]);
        let entry = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        let previous = entries.last();
        let valid = version == VERSION
            && entry.producer_id >= 0
            && (0..=entry.last_offset).contains(&entry.first_offset)
            && (base_offset..next_offset).contains(&entry.last_offset)
            && (0..=entry.last_offset + 1).contains(&entry.last_stable_offset)
            && previous.is_none_or(|previous| {
                previous.last_offset < entry.last_offset
                    && previous.last_stable_offset <= entry.last_stable_offset
            });
        if !valid {
            return Err(format!(
                "entry {entry:?} (version {version}) is out of place"
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entries = [
            AbortedTxn {
                producer_id: 3,
                first_offset: 2,
                last_offset: 10,
                last_stable_offset: 5,
            },
            AbortedTxn {
                producer_id: 4,
                first_offset: 5,
                last_offset: 12,
                last_stable_offset: 13,
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 68);
        assert_eq!(decode(&bytes, 10, 13), Ok(entries.to_vec()));
        assert_eq!(decode(&[], 0, 0), Ok(Vec::new()));
        assert!(decode(&bytes[..67], 10, 13).is_err(), "a torn tail");
        assert!(
            decode(&bytes, 11, 13).is_err(),
            "a marker below the segment"
        );
        assert!(decode(&bytes, 10, 12).is_err(), "a marker past the segment");
        let mut swapped = encode(&entries[1..]);
        swapped.extend(encode(&entries[..1]));
        assert!(decode(&swapped, 10, 13).is_err(), "out of order");
        let mut versioned = bytes.clone();
        versioned[1] = 1;
        assert!(decode(&versioned, 10, 13).is_err(), "an unknown version");
    }
}
