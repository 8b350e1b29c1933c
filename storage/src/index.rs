//! Sparse per-segment indexes, in memory and in Kafka's on-disk format. Pure: no I/O.
//!
//! - The offset index maps a batch's base offset, relative to the segment's base (`u32`), to the
//!   batch's byte position (`u32`). A lookup returns the last entry at or below the target, from
//!   which a reader scans forward over batch headers.
//! - The time index maps the largest timestamp seen so far (`i64`) to the relative base offset
//!   of the batch that carried it. Every batch before that offset has a smaller or equal
//!   timestamp, so a search for a target starts at the last entry whose timestamp is below it.
//!
//! One entry of each is added per `index_interval_bytes` of batches (`IndexBuilder`), so an index
//! is about `segment_bytes / index_interval_bytes` entries. Indexes of closed segments are
//! written to disk at roll; the active segment's indexes live only in memory and are rebuilt by
//! recovery, which scans the active segment anyway.

use wire::BatchHeader;

/// On disk: relative offset `u32` then position `u32`, big-endian (Kafka's `.index`).
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
/// On disk: timestamp `i64` then relative offset `u32`, big-endian (Kafka's `.timeindex`).
pub(crate) const TIME_ENTRY_BYTES: usize = 12;
/// Kafka's "no timestamp".
pub(crate) const TIMESTAMP_NONE: i64 = -1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// **Invariant:** relative offsets and positions strictly increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

/// **Invariant:** timestamps strictly increase; relative offsets never decrease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset);
            assert!(entry.position > last.position);
        }
        self.entries.push(entry);
    }

    /// The last entry at or below `relative_offset`: where a scan for it starts.
    pub fn floor(&self, relative_offset: u32) -> OffsetEntry {
        let count = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        match count {
            0 => OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            _ => self.entries[count - 1],
        }
    }

    /// The planted bug `IndexLookupOvershoots`: the entry after the floor when there is one.
    #[cfg(feature = "planted-bugs")]
    pub fn planted_overshoot(&self, relative_offset: u32) -> OffsetEntry {
        let count = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        match self.entries.get(count) {
            Some(entry) => *entry,
            None => self.floor(relative_offset),
        }
    }

    /// The first entry at or above `relative_offset`: every batch from its position on starts at
    /// or above the offset, so a read bounded by the offset never needs bytes past it.
    pub fn ceiling(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.relative_offset < relative_offset);
        self.entries.get(count).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        bytes
    }

    /// Parses an index file and checks its shape against the segment's size. An index that
    /// fails is rebuilt from the segment, never trusted.
    pub fn decode(bytes: &[u8], log_bytes: u64) -> Result<OffsetIndex, String> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return Err(format!(
                "{} bytes is not a whole number of entries",
                bytes.len()
            ));
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let relative_offset = u32::from_be_bytes(chunk[0..4].try_into().expect("4 bytes"));
            let position = u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes"));
            let previous = index.entries.last().copied();
            let previous = previous.unwrap_or(OffsetEntry {
                relative_offset: 0,
                position: 0,
            });
            if relative_offset <= previous.relative_offset || position <= previous.position {
                return Err(format!(
                    "entry ({relative_offset}, {position}) does not increase"
                ));
            }
            if u64::from(position) >= log_bytes {
                return Err(format!(
                    "position {position} is beyond the {log_bytes}-byte segment"
                ));
            }
            index.entries.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        Ok(index)
    }
}

impl TimeIndex {
    #[cfg(test)]
    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    pub fn timestamp_last(&self) -> i64 {
        self.entries
            .last()
            .map_or(TIMESTAMP_NONE, |entry| entry.timestamp)
    }

    /// Appends unless the timestamp does not advance (Kafka's `maybeAppend`).
    pub fn push(&mut self, entry: TimeEntry) {
        let Some(last) = self.entries.last() else {
            if entry.timestamp > TIMESTAMP_NONE {
                self.entries.push(entry);
            }
            return;
        };
        if entry.timestamp > last.timestamp {
            assert!(entry.relative_offset >= last.relative_offset);
            self.entries.push(entry);
        }
    }

    /// Where a search for the first batch with a timestamp at or above `timestamp` may start:
    /// the offset of the last entry below it (every batch before that offset is below it too).
    pub fn start_for(&self, timestamp: i64) -> u32 {
        let count = self
            .entries
            .partition_point(|entry| entry.timestamp < timestamp);
        match count {
            0 => 0,
            _ => self.entries[count - 1].relative_offset,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        bytes
    }

    /// Parses a time index file; `relative_offset_end` bounds the offsets it may name.
    pub fn decode(bytes: &[u8], relative_offset_end: u64) -> Result<TimeIndex, String> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(format!(
                "{} bytes is not a whole number of entries",
                bytes.len()
            ));
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes"));
            let relative_offset = u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes"));
            let (timestamp_previous, relative_previous) =
                index.entries.last().map_or((TIMESTAMP_NONE, 0), |entry| {
                    (entry.timestamp, entry.relative_offset)
                });
            if timestamp <= timestamp_previous || relative_offset < relative_previous {
                return Err(format!(
                    "entry ({timestamp}, {relative_offset}) does not increase"
                ));
            }
            if u64::from(relative_offset) >= relative_offset_end {
                return Err(format!(
                    "relative offset {relative_offset} is beyond the segment"
                ));
            }
            index.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        Ok(index)
    }
}

/// Both indexes of one segment plus the running state that decides when to add an entry. Every
/// batch of the segment passes through `observe`, in order, whether appended or scanned by
/// recovery, so a rebuilt index equals the one built by appends.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
    base_offset: i64,
    interval_bytes: u32,
    bytes_since_entry: u64,
    /// The largest batch max timestamp so far, and the base offset of the batch carrying it.
    timestamp_max: i64,
    timestamp_max_offset: i64,
}

impl IndexBuilder {
    pub fn new(base_offset: i64, interval_bytes: u32) -> IndexBuilder {
        assert!(interval_bytes > 0);
        IndexBuilder {
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            base_offset,
            interval_bytes,
            bytes_since_entry: 0,
            timestamp_max: TIMESTAMP_NONE,
            timestamp_max_offset: base_offset,
        }
    }

    /// A closed segment's indexes loaded from disk, with the timestamp maximum over its batches.
    pub fn loaded(
        base_offset: i64,
        offsets: OffsetIndex,
        times: TimeIndex,
        timestamp_max: i64,
    ) -> Self {
        let timestamp_max_offset = base_offset + i64::from(times.start_for(i64::MAX));
        IndexBuilder {
            offsets,
            times,
            timestamp_max,
            timestamp_max_offset,
            ..Self::new(base_offset, 1)
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset).expect("segment offsets fit u32 (rolled before)")
    }

    /// Records the batch `header` stored at `position`.
    pub fn observe(&mut self, header: &BatchHeader, position: u32) {
        assert!(header.base_offset >= self.base_offset);
        if self.bytes_since_entry >= u64::from(self.interval_bytes) {
            let relative_offset = self.relative(header.base_offset);
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.seal();
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += header.size() as u64;
        if header.max_timestamp > self.timestamp_max {
            self.timestamp_max = header.max_timestamp;
            self.timestamp_max_offset = header.base_offset;
        }
    }

    /// Adds the time entry for the maximum so far; at roll this makes the last entry the
    /// segment's maximum, so a loaded closed segment knows it without a scan.
    pub fn seal(&mut self) {
        let relative_offset = self.relative(self.timestamp_max_offset);
        self.times.push(TimeEntry {
            timestamp: self.timestamp_max,
            relative_offset,
        });
    }

    pub fn timestamp_max(&self) -> i64 {
        self.timestamp_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base_offset: i64, bytes: usize, max_timestamp: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: (bytes - wire::batch::BATCH_LENGTH_OVERHEAD) as i32,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: max_timestamp,
            max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: 1,
        }
    }

    #[test]
    fn entries_every_interval_and_lookups_bracket_the_target() {
        let mut builder = IndexBuilder::new(100, 250);
        for (index, timestamp) in [5, 3, 9, 9, 12, 1].into_iter().enumerate() {
            builder.observe(
                &header(100 + index as i64, 100, timestamp),
                index as u32 * 100,
            );
        }
        builder.seal();
        let offsets: Vec<_> = builder
            .offsets
            .entries()
            .iter()
            .map(|e| (e.relative_offset, e.position))
            .collect();
        assert_eq!(offsets, [(3, 300)]);
        let times: Vec<_> = builder
            .times
            .entries()
            .iter()
            .map(|e| (e.timestamp, e.relative_offset))
            .collect();
        assert_eq!(times, [(9, 2), (12, 4)]);
        assert_eq!(
            builder.offsets.floor(2),
            OffsetEntry {
                relative_offset: 0,
                position: 0
            }
        );
        assert_eq!(builder.offsets.floor(4).position, 300);
        assert_eq!(builder.offsets.ceiling(1).map(|e| e.position), Some(300));
        assert_eq!(builder.offsets.ceiling(4), None);
        assert_eq!(builder.times.start_for(10), 2);
        assert_eq!(builder.times.start_for(9), 0);
        assert_eq!(builder.timestamp_max(), 12);
    }

    #[test]
    fn decode_accepts_what_encode_wrote_and_rejects_garbage() {
        let mut offsets = OffsetIndex::default();
        offsets.push(OffsetEntry {
            relative_offset: 4,
            position: 400,
        });
        offsets.push(OffsetEntry {
            relative_offset: 9,
            position: 900,
        });
        assert_eq!(
            OffsetIndex::decode(&offsets.encode(), 1000),
            Ok(offsets.clone())
        );
        assert!(
            OffsetIndex::decode(&offsets.encode(), 900).is_err(),
            "past the segment's end"
        );
        assert!(
            OffsetIndex::decode(&[0; 16], 1000).is_err(),
            "zeros do not increase"
        );
        assert!(OffsetIndex::decode(&[1; 7], 1000).is_err(), "partial entry");
        let mut times = TimeIndex::default();
        times.push(TimeEntry {
            timestamp: 10,
            relative_offset: 0,
        });
        times.push(TimeEntry {
            timestamp: 20,
            relative_offset: 3,
        });
        assert_eq!(TimeIndex::decode(&times.encode(), 4), Ok(times.clone()));
        assert!(
            TimeIndex::decode(&times.encode(), 3).is_err(),
            "offset beyond the segment"
        );
        assert!(TimeIndex::decode(&[0xff; 24], 10).is_err());
    }
}
