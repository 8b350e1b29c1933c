//! Idempotent producers' state in one partition (Kafka's ProducerStateManager and
//! ProducerAppendInfo), sans-IO: per producer id, the epoch and the sequence ranges and offsets of
//! the last `BATCHES_RETAINED` batches, derived only from the log's batch headers, so the same
//! state comes back from a snapshot plus the log tail after it, or from the whole log.
//!
//! The rules a produced batch with a producer id meets, in Kafka's order (as of KIP-360):
//! - a batch whose epoch and exact sequence range match one of the producer's retained batches is
//!   a duplicate: answered with the original offsets, not appended again;
//! - an epoch older than the producer's is INVALID_PRODUCER_EPOCH;
//! - a newer epoch must start at sequence 0, unless the producer is unknown here;
//! - within an epoch, the first sequence must follow the last one (wrapping at `i32::MAX`);
//! - an unknown producer (never seen, or expired) is accepted at any sequence: KIP-360 took
//!   UNKNOWN_PRODUCER_ID out of the produce path, because a producer whose records retention
//!   deleted would otherwise be refused forever and re-send its buffer as new records.
//!
//! Transactions (KIP-98): a transactional data batch opens a transaction for its producer if
//! none is open (its first offset is remembered: the ongoing transactions bound the last stable
//! offset); a control batch (COMMIT or ABORT marker, written by the broker for the coordinator)
//! closes it. A marker carries the producer's epoch, which may be newer (a marker is how the
//! coordinator fences a zombie: its later data batches are then of an old epoch), and the
//! coordinator's epoch, which may not be older than the last one seen for the producer
//! (TRANSACTION_COORDINATOR_FENCED: a deposed coordinator's markers are refused).
//!
//! Snapshots (`<offset>.snapshot`) hold the state of every batch below their offset, ongoing
//! transactions included; their encoding carries a CRC and a version, and a snapshot that fails
//! either is ignored (the state is rebuilt from an older snapshot or the log).

use std::collections::{BTreeMap, VecDeque};
use wire::{BatchHeader, ControlMarker, ValidatedBatch};

/// Kafka keeps the last five batches per producer: the most a client may have in flight.
pub const BATCHES_RETAINED: usize = 5;

/// One batch as the producer state remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp (what expiration measures).
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most `BATCHES_RETAINED`, all of `epoch`.
    pub batches: VecDeque<BatchMeta>,
    /// The newest batch's timestamp: the producer expires `producer.id.expiration.ms` after it.
    pub last_timestamp_ms: i64,
    /// The coordinator epoch of the newest marker (-1: none yet).
    pub coordinator_epoch: i32,
    /// The first offset of the producer's open transaction, if one is open.
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_sequence)
    }

    fn duplicate_find(&self, epoch: i16, first: i32, last: i32) -> Option<BatchMeta> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|batch| batch.first_sequence == first && batch.last_sequence == last)
            .copied()
    }
}

/// How a produced batch is to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: append it.
    Append,
    /// A retry of this already appended batch: answer with its offsets.
    Duplicate(BatchMeta),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    EpochFenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {first_sequence} does not follow {expected_after} in epoch {epoch}")]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        /// The last sequence seen (-1: a new epoch, which must start at 0).
        expected_after: i32,
    },
    #[error("producer {producer_id}: marker from coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
}

/// A transaction a marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    /// The offset of its first data batch; `None` if it wrote nothing here (an empty
    /// transaction, or a fencing abort).
    pub first_offset: Option<i64>,
    /// The marker's offset.
    pub last_offset: i64,
    pub commit: bool,
}

/// An aborted transaction in a partition (Kafka's `AbortedTxn`): a read_committed reader drops
/// the producer's records in `[first_offset, last_offset]`. `last_stable_offset` is the LSO
/// once the abort was written: never above any later entry's, so a search can stop there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// The last sequence of a batch: Kafka's `DefaultRecordBatch.incrementSequence`, wrapping past
/// `i32::MAX` to 0.
pub fn sequence_last(first: i32, offset_delta: i32) -> i32 {
    let delta = offset_delta.max(0);
    match first > i32::MAX - delta {
        true => delta - (i32::MAX - first) - 1,
        false => first + delta,
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Whether a batch carries idempotence state: a producer id, and data (control batches carry
/// transaction markers, handled with transactions).
pub fn is_idempotent(header: &BatchHeader) -> bool {
    header.producer_id >= 0 && !header.is_control()
}

/// The checks of one batch against what is known of its producer (`None`: unknown).
fn admit(entry: Option<&ProducerEntry>, header: &BatchHeader) -> Result<Admission, SequenceError> {
    let producer_id = header.producer_id;
    let epoch = header.producer_epoch;
    let first = header.base_sequence;
    let last = sequence_last(first, header.last_offset_delta);
    let Some(entry) = entry else {
        return Ok(Admission::Append);
    };
    if let Some(duplicate) = entry.duplicate_find(epoch, first, last) {
        return Ok(Admission::Duplicate(duplicate));
    }
    if epoch < entry.epoch {
        return Err(SequenceError::EpochFenced {
            producer_id,
            epoch,
            current: entry.epoch,
        });
    }
    let expected_after = match epoch == entry.epoch {
        true => entry.last_sequence().unwrap_or(-1),
        false => -1,
    };
    let follows = match (epoch == entry.epoch, entry.last_sequence()) {
        (false, _) | (true, None) => first == 0,
        (true, Some(last)) => in_sequence(last, first),
    };
    if !follows {
        return Err(SequenceError::OutOfOrder {
            producer_id,
            epoch,
            first_sequence: first,
            expected_after,
        });
    }
    Ok(Admission::Append)
}

fn entry_apply(entry: &mut Option<ProducerEntry>, header: &BatchHeader) {
    let batch = BatchMeta {
        first_sequence: header.base_sequence,
        last_sequence: sequence_last(header.base_sequence, header.last_offset_delta),
        first_offset: header.base_offset,
        last_offset: header.last_offset(),
        timestamp_ms: header.max_timestamp,
    };
    let entry = entry_epoch_observe(entry, header);
    entry.batches.push_back(batch);
    if entry.batches.len() > BATCHES_RETAINED {
        entry.batches.pop_front();
    }
    if header.is_transactional() && entry.txn_first_offset.is_none() {
        entry.txn_first_offset = Some(batch.first_offset);
    }
}

/// The producer's entry (created if unknown) moved to the batch's epoch (a new epoch forgets
/// the old batches) and time.
fn entry_epoch_observe<'a>(
    entry: &'a mut Option<ProducerEntry>,
    header: &BatchHeader,
) -> &'a mut ProducerEntry {
    let entry = entry.get_or_insert_with(|| ProducerEntry {
        epoch: header.producer_epoch,
        batches: VecDeque::new(),
        last_timestamp_ms: header.max_timestamp,
        coordinator_epoch: -1,
        txn_first_offset: None,
    });
    if entry.epoch != header.producer_epoch {
        entry.epoch = header.producer_epoch;
        entry.batches.clear();
    }
    entry.last_timestamp_ms = entry.last_timestamp_ms.max(header.max_timestamp);
    entry
}

/// Every producer's state in one partition, up to `end_offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// The open transactions: first offset -> producer id. **Invariant:** exactly the entries'
    /// `txn_first_offset`s.
    ongoing: BTreeMap<i64, i64>,
    /// Every batch below this offset has been applied.
    end_offset: i64,
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"gregorPS";
/// 2: transactions (coordinator epoch, open transaction's first offset). A version-1 snapshot
/// is refused like a corrupt one, so the state is rebuilt from the log.
const SNAPSHOT_VERSION: u16 = 2;

impl ProducerStates {
    pub fn new(end_offset: i64) -> ProducerStates {
        ProducerStates {
            producers: BTreeMap::new(),
            ongoing: BTreeMap::new(),
            end_offset,
        }
    }

    /// The first offset of the oldest open transaction: the last stable offset cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The open transactions: (first offset, producer id), oldest first.
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing
            .iter()
            .map(|(first, producer)| (*first, *producer))
    }

    /// Checks a marker for `producer_id` before it is written: its epoch may not be older than
    /// the producer's, nor its coordinator epoch older than the last marker's. A producer
    /// unknown here is accepted (Kafka writes the marker: it is how an empty abort fences).
    pub fn admit_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(SequenceError::EpochFenced {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a marker appended at `header`'s offset: the producer's transaction ends, its
    /// epoch and coordinator epoch become the marker's.
    pub fn apply_marker(&mut self, header: &BatchHeader, marker: ControlMarker) -> CompletedTxn {
        assert!(header.is_control() && header.producer_id >= 0);
        assert!(
            header.base_offset >= self.end_offset,
            "batches are applied in log order"
        );
        self.end_offset = header.next_offset();
        let mut entry = self.producers.remove(&header.producer_id);
        let updated = entry_epoch_observe(&mut entry, header);
        updated.coordinator_epoch = marker.coordinator_epoch;
        let first_offset = updated.txn_first_offset.take();
        if let Some(first) = first_offset {
            let removed = self.ongoing.remove(&first);
            assert_eq!(
                removed,
                Some(header.producer_id),
                "ongoing matches the entries"
            );
        }
        self.producers
            .insert(header.producer_id, entry.expect("observed"));
        CompletedTxn {
            producer_id: header.producer_id,
            first_offset,
            last_offset: header.base_offset,
            commit: marker.commit,
        }
    }

    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Per producer, the last offset of its newest data batch (none after a marker of a new
    /// epoch): the batches compaction must keep, if only as headers.
    pub fn last_data_offsets(&self) -> BTreeMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, entry)| Some((*id, entry.batches.back()?.last_offset)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks one request's batches as if each were appended after the ones before it: all are
    /// new (`Append`), or the first duplicate found, or the first error. Nothing changes.
    pub fn admit_all<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
    ) -> Result<Admission, SequenceError> {
        // Only the producers this request names are staged; a request rarely names more than one.
        let mut staged: BTreeMap<i64, Option<ProducerEntry>> = BTreeMap::new();
        for header in headers {
            if !is_idempotent(header) {
                continue;
            }
            let entry = staged
                .entry(header.producer_id)
                .or_insert_with(|| self.producers.get(&header.producer_id).cloned());
            match admit(entry.as_ref(), header)? {
                Admission::Append => {
                    // Offsets are not known yet; only the sequence and epoch matter to what
                    // follows in the same request.
                    entry_apply(entry, header);
                }
                duplicate => return Ok(duplicate),
            }
        }
        Ok(Admission::Append)
    }

    /// Records a batch appended to the log at its placed offsets (leader, follower or replay).
    pub fn apply(&mut self, header: &BatchHeader) {
        assert!(
            header.base_offset >= self.end_offset,
            "batches are applied in log order"
        );
        self.end_offset = header.next_offset();
        if !is_idempotent(header) {
            return;
        }
        let mut entry = self.producers.remove(&header.producer_id);
        let open_before = entry.as_ref().and_then(|entry| entry.txn_first_offset);
        entry_apply(&mut entry, header);
        let entry = entry.expect("applied");
        if let (None, Some(first)) = (open_before, entry.txn_first_offset) {
            self.ongoing.insert(first, header.producer_id);
        }
        self.producers.insert(header.producer_id, entry);
    }

    /// Records any batch appended to the log (a data batch, a marker): the one entry point of
    /// the log's appends and replays. A control batch whose record cannot be read (another
    /// writer's, damaged) ends no transaction. Returns the transaction a marker ended.
    pub fn apply_batch(&mut self, batch: &ValidatedBatch) -> Option<CompletedTxn> {
        let header = batch.header();
        if header.is_control() && header.producer_id >= 0 {
            match wire::control_marker_parse(batch) {
                Ok(marker) => return Some(self.apply_marker(header, marker)),
                Err(reason) => {
                    tracing::warn!(offset = header.base_offset, %reason, "unreadable control batch ends no transaction");
                }
            }
        }
        self.apply(header);
        None
    }

    /// The index entry of a transaction a marker just ended, if it aborted one that wrote data
    /// here; its stable offset is the oldest still open transaction's first offset, or the
    /// offset after the marker.
    pub fn aborted_entry(&self, completed: &CompletedTxn) -> Option<AbortedTxn> {
        let first_offset = completed.first_offset.filter(|_| !completed.commit)?;
        Some(AbortedTxn {
            producer_id: completed.producer_id,
            first_offset,
            last_offset: completed.last_offset,
            last_stable_offset: self
                .first_unstable_offset()
                .unwrap_or(completed.last_offset + 1),
        })
    }

    /// Forgets producers whose newest batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms`), unless a transaction of theirs is open (its marker
    /// must still find it). Returns how many went.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Moves the end forward without batches (a log restarted at a later offset).
    pub fn end_advance(&mut self, end_offset: i64) {
        self.end_offset = self.end_offset.max(end_offset);
    }

    /// `magic, version, crc32c(rest), end_offset, count, then per producer: id, epoch,
    /// last_timestamp, coordinator epoch, open transaction's first offset (-1: none), batch
    /// count, batches`; integers big-endian.
    pub fn snapshot_encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.producers.len() * 64);
        body.extend_from_slice(&self.end_offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in &self.producers {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
            body.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                body.extend_from_slice(&batch.first_sequence.to_be_bytes());
                body.extend_from_slice(&batch.last_sequence.to_be_bytes());
                body.extend_from_slice(&batch.first_offset.to_be_bytes());
                body.extend_from_slice(&batch.last_offset.to_be_bytes());
                body.extend_from_slice(&batch.timestamp_ms.to_be_bytes());
            }
        }
        let mut bytes = Vec::with_capacity(body.len() + 14);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// The state a snapshot holds, or `None` if any byte of it is wrong (bad magic, version or
    /// CRC, truncated, trailing bytes, impossible values).
    pub fn snapshot_decode(bytes: &[u8]) -> Option<ProducerStates> {
        let mut reader = Reader { bytes };
        if reader.take(8)? != SNAPSHOT_MAGIC
            || u16::from_be_bytes(reader.array()?) != SNAPSHOT_VERSION
        {
            return None;
        }
        let crc = u32::from_be_bytes(reader.array()?);
        if crc != crc32c::crc32c(reader.bytes) {
            return None;
        }
        let end_offset = i64::from_be_bytes(reader.array()?);
        let count = u32::from_be_bytes(reader.array()?);
        let mut producers = BTreeMap::new();
        let mut ongoing = BTreeMap::new();
        for _ in 0..count {
            let producer_id = i64::from_be_bytes(reader.array()?);
            let epoch = i16::from_be_bytes(reader.array()?);
            let last_timestamp_ms = i64::from_be_bytes(reader.array()?);
            let coordinator_epoch = i32::from_be_bytes(reader.array()?);
            let txn_first_offset = match i64::from_be_bytes(reader.array()?) {
                -1 => None,
                first if (0..end_offset).contains(&first) => Some(first),
                _ => return None,
            };
            let batch_count = usize::from(reader.take(1)?[0]);
            if producer_id < 0 || batch_count > BATCHES_RETAINED || coordinator_epoch < -1 {
                return None;
            }
            if let Some(first) = txn_first_offset {
                if ongoing.insert(first, producer_id).is_some() {
                    return None;
                }
            }
            let mut batches = VecDeque::with_capacity(batch_count);
            for _ in 0..batch_count {
                let batch = BatchMeta {
                    first_sequence: i32::from_be_bytes(reader.array()?),
                    last_sequence: i32::from_be_bytes(reader.array()?),
                    first_offset: i64::from_be_bytes(reader.array()?),
                    last_offset: i64::from_be_bytes(reader.array()?),
                    timestamp_ms: i64::from_be_bytes(reader.array()?),
                };
                if batch.first_offset > batch.last_offset || batch.last_offset >= end_offset {
                    return None;
                }
                batches.push_back(batch);
            }
            let entry = ProducerEntry {
                epoch,
                batches,
                last_timestamp_ms,
                coordinator_epoch,
                txn_first_offset,
            };
            if producers.insert(producer_id, entry).is_some() {
                return None;
            }
        }
        (reader.bytes.is_empty() && end_offset >= 0).then_some(ProducerStates {
            producers,
            ongoing,
            end_offset,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(producer_id: i64, epoch: i16, first: i32, records: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1000,
            max_timestamp: 1000 + base,
            producer_id,
            producer_epoch: epoch,
            base_sequence: first,
            record_count: records,
        }
    }

    /// Admits and, if new, applies at the log end: what the leader path does.
    fn produce(
        states: &mut ProducerStates,
        mut header: BatchHeader,
    ) -> Result<Admission, SequenceError> {
        let admission = states.admit_all([&header])?;
        if admission == Admission::Append {
            header.base_offset = states.end_offset();
            states.apply(&header);
        }
        Ok(admission)
    }

    #[test]
    fn a_retry_gets_the_original_offsets_back() {
        let mut states = ProducerStates::new(0);
        assert_eq!(
            produce(&mut states, header(7, 0, 0, 3, 0)),
            Ok(Admission::Append)
        );
        assert_eq!(
            produce(&mut states, header(7, 0, 3, 2, 0)),
            Ok(Admission::Append)
        );
        let Ok(Admission::Duplicate(original)) = produce(&mut states, header(7, 0, 0, 3, 0)) else {
            panic!("a retry is a duplicate");
        };
        assert_eq!((original.first_offset, original.last_offset), (0, 2));
        assert_eq!(states.end_offset(), 5, "nothing appended for the retry");
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::new(0);
        for sequence in 0..6 {
            produce(&mut states, header(7, 0, sequence, 1, 0)).unwrap();
        }
        assert!(matches!(
            produce(&mut states, header(7, 0, 1, 1, 0)),
            Ok(Admission::Duplicate(_))
        ));
        assert_eq!(
            produce(&mut states, header(7, 0, 0, 1, 0)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                epoch: 0,
                first_sequence: 0,
                expected_after: 5
            }),
            "the sixth-newest batch fell out of the window"
        );
    }

    #[test]
    fn gaps_and_old_epochs_are_refused_and_a_new_epoch_starts_at_zero() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, header(7, 1, 0, 2, 0)).unwrap();
        assert!(matches!(
            produce(&mut states, header(7, 1, 3, 1, 0)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            produce(&mut states, header(7, 0, 2, 1, 0)),
            Err(SequenceError::EpochFenced { current: 1, .. })
        ));
        assert!(matches!(
            produce(&mut states, header(7, 2, 5, 1, 0)),
            Err(SequenceError::OutOfOrder {
                expected_after: -1,
                ..
            })
        ));
        assert_eq!(
            produce(&mut states, header(7, 2, 0, 1, 0)),
            Ok(Admission::Append)
        );
        assert_eq!(
            states.entry(7).unwrap().batches.len(),
            1,
            "a new epoch forgets the old batches"
        );
        assert!(
            matches!(
                produce(&mut states, header(7, 1, 0, 2, 0)),
                Err(SequenceError::EpochFenced { .. })
            ),
            "a duplicate of an older epoch is fenced, not deduplicated"
        );
    }

    #[test]
    fn an_unknown_producer_is_accepted_at_any_sequence() {
        let mut states = ProducerStates::new(0);
        assert_eq!(
            produce(&mut states, header(9, 3, 1234, 1, 0)),
            Ok(Admission::Append)
        );
        assert_eq!(
            produce(&mut states, header(9, 3, 1235, 1, 0)),
            Ok(Admission::Append)
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(sequence_last(i32::MAX - 1, 3), 1);
        assert_eq!(sequence_last(i32::MAX, 0), i32::MAX);
        assert_eq!(sequence_last(i32::MAX, 1), 0);
        let mut states = ProducerStates::new(0);
        produce(&mut states, header(7, 0, i32::MAX - 1, 2, 0)).unwrap();
        assert_eq!(
            produce(&mut states, header(7, 0, 0, 1, 0)),
            Ok(Admission::Append)
        );
        let mut states = ProducerStates::new(0);
        produce(&mut states, header(7, 0, i32::MAX - 1, 4, 0)).unwrap();
        assert_eq!(states.entry(7).unwrap().batches[0].last_sequence, 1);
        assert_eq!(
            produce(&mut states, header(7, 0, 2, 1, 0)),
            Ok(Admission::Append)
        );
    }

    #[test]
    fn a_request_is_checked_batch_after_batch() {
        let states = ProducerStates::new(0);
        let (first, second, gap) = (
            header(7, 0, 0, 2, 0),
            header(7, 0, 2, 1, 2),
            header(7, 0, 9, 1, 3),
        );
        assert_eq!(states.admit_all([&first, &second]), Ok(Admission::Append));
        let mut known = states.clone();
        known.apply(&header(7, 0, 0, 1, 0));
        assert!(known.admit_all([&header(7, 0, 1, 1, 1), &gap]).is_err());
        assert_eq!(
            known.entry(7).unwrap().batches.len(),
            1,
            "admission changes nothing"
        );
    }

    #[test]
    fn producers_expire_after_their_newest_batch() {
        let mut states = ProducerStates::new(0);
        let mut later = header(2, 0, 0, 1, 0);
        later.max_timestamp = 1001;
        produce(&mut states, header(1, 0, 0, 1, 0)).unwrap();
        produce(&mut states, later).unwrap();
        assert_eq!(
            states.expire(1000 + 500, 501),
            0,
            "neither is 501 ms old yet"
        );
        assert_eq!(states.expire(1000 + 501, 501), 1);
        assert!(states.entry(1).is_none() && states.entry(2).is_some());
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let mut states = ProducerStates::new(0);
        for producer_id in 0..3 {
            for sequence in 0..7 {
                produce(&mut states, header(producer_id, 1, sequence * 2, 2, 0)).unwrap();
            }
        }
        let bytes = states.snapshot_encode();
        assert_eq!(ProducerStates::snapshot_decode(&bytes), Some(states));
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert_eq!(
                ProducerStates::snapshot_decode(&damaged),
                None,
                "flip at {index}"
            );
        }
        assert_eq!(
            ProducerStates::snapshot_decode(&bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(ProducerStates::snapshot_decode(&[]), None);
    }

    fn transactional(
        producer_id: i64,
        epoch: i16,
        first: i32,
        records: i32,
        base: i64,
    ) -> BatchHeader {
        let mut batch = header(producer_id, epoch, first, records, base);
        batch.attributes = 0x10;
        batch
    }

    fn marker_header(producer_id: i64, epoch: i16, base: i64) -> BatchHeader {
        let mut batch = header(producer_id, epoch, -1, 1, base);
        batch.attributes = 0x30;
        batch
    }

    /// Admits and, if accepted, applies a marker at the log end: what `append_marker` does.
    fn mark(
        states: &mut ProducerStates,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<CompletedTxn, SequenceError> {
        states.admit_marker(producer_id, epoch, coordinator_epoch)?;
        let marker = ControlMarker {
            commit,
            coordinator_epoch,
        };
        Ok(states.apply_marker(
            &marker_header(producer_id, epoch, states.end_offset()),
            marker,
        ))
    }

    /// `ongoing` is exactly the entries' open transactions.
    fn ongoing_check(states: &ProducerStates) {
        let derived: BTreeMap<i64, i64> = states
            .producers
            .iter()
            .filter_map(|(id, entry)| entry.txn_first_offset.map(|first| (first, *id)))
            .collect();
        assert_eq!(derived, states.ongoing);
    }

    #[test]
    fn a_transaction_opens_at_its_first_batch_and_a_marker_closes_it() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, header(1, 0, 0, 2, 0)).unwrap();
        assert_eq!(states.first_unstable_offset(), None, "idempotent only");
        produce(&mut states, transactional(7, 0, 0, 3, 0)).unwrap();
        produce(&mut states, transactional(8, 0, 0, 1, 0)).unwrap();
        produce(&mut states, transactional(7, 0, 3, 1, 0)).unwrap();
        assert_eq!(states.first_unstable_offset(), Some(2));
        assert_eq!(states.ongoing().collect::<Vec<_>>(), [(2, 7), (5, 8)]);
        let completed = mark(&mut states, 7, 0, 0, false).unwrap();
        assert_eq!(
            completed,
            CompletedTxn {
                producer_id: 7,
                first_offset: Some(2),
                last_offset: 7,
                commit: false
            }
        );
        assert_eq!(states.first_unstable_offset(), Some(5));
        let empty = mark(&mut states, 9, 0, 0, true).unwrap();
        assert_eq!(
            empty.first_offset, None,
            "a marker with nothing open is still taken"
        );
        mark(&mut states, 8, 0, 0, true).unwrap();
        assert_eq!(states.first_unstable_offset(), None);
        produce(&mut states, transactional(7, 0, 4, 1, 0)).unwrap();
        assert_eq!(
            states.first_unstable_offset(),
            Some(10),
            "the next transaction"
        );
        ongoing_check(&states);
    }

    #[test]
    fn a_marker_of_a_newer_epoch_fences_the_old_one() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, transactional(7, 0, 0, 2, 0)).unwrap();
        mark(&mut states, 7, 1, 0, false).unwrap();
        assert_eq!(states.entry(7).unwrap().epoch, 1);
        assert_eq!(
            produce(&mut states, transactional(7, 0, 2, 1, 0)),
            Err(SequenceError::EpochFenced {
                producer_id: 7,
                epoch: 0,
                current: 1
            }),
            "the zombie's next batch"
        );
        assert!(matches!(
            mark(&mut states, 7, 0, 0, true),
            Err(SequenceError::EpochFenced { .. })
        ));
        assert_eq!(
            produce(&mut states, transactional(7, 1, 0, 1, 0)),
            Ok(Admission::Append),
            "the new epoch starts at sequence 0"
        );
    }

    #[test]
    fn a_deposed_coordinators_marker_is_fenced() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, transactional(7, 0, 0, 1, 0)).unwrap();
        mark(&mut states, 7, 0, 5, true).unwrap();
        assert_eq!(
            mark(&mut states, 7, 0, 4, true),
            Err(SequenceError::CoordinatorFenced {
                producer_id: 7,
                coordinator_epoch: 4,
                current: 5
            })
        );
        assert!(
            mark(&mut states, 7, 0, 5, false).is_ok(),
            "the same epoch may retry"
        );
        assert!(mark(&mut states, 7, 0, 6, false).is_ok());
    }

    #[test]
    fn a_producer_with_an_open_transaction_does_not_expire() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, transactional(7, 0, 0, 1, 0)).unwrap();
        produce(&mut states, header(8, 0, 0, 1, 0)).unwrap();
        assert_eq!(states.expire(i64::MAX, 1), 1);
        assert!(states.entry(7).is_some() && states.entry(8).is_none());
        ongoing_check(&states);
    }

    #[test]
    fn a_version_1_snapshot_is_refused() {
        let mut states = ProducerStates::new(0);
        produce(&mut states, transactional(7, 0, 0, 1, 0)).unwrap();
        let mut bytes = states.snapshot_encode();
        assert_eq!(ProducerStates::snapshot_decode(&bytes), Some(states));
        bytes[8..10].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(ProducerStates::snapshot_decode(&bytes), None);
    }

    /// One step of a producer workload: a data batch, or a marker for a producer.
    #[derive(Debug, Clone)]
    enum Send {
        Data {
            producer_id: i64,
            epoch: i16,
            first: i32,
            records: i32,
            transactional: bool,
        },
        Marker {
            producer_id: i64,
            epoch: i16,
            coordinator_epoch: i32,
            commit: bool,
        },
    }

    fn send_strategy() -> impl Strategy<Value = Send> {
        prop_oneof![
            3 => (0i64..3, 0i16..3, 0i32..12, 1i32..4, any::<bool>()).prop_map(
                |(producer_id, epoch, first, records, transactional)| Send::Data {
                    producer_id, epoch, first, records, transactional
                }
            ),
            1 => (0i64..3, 0i16..3, 0i32..3, any::<bool>()).prop_map(
                |(producer_id, epoch, coordinator_epoch, commit)| Send::Marker {
                    producer_id, epoch, coordinator_epoch, commit
                }
            ),
        ]
    }

    /// A batch as the log holds it: its header and, for a marker, what the marker says.
    type Logged = (BatchHeader, Option<ControlMarker>);

    fn replay(states: &mut ProducerStates, batches: &[Logged]) {
        for (header, marker) in batches {
            match marker {
                Some(marker) => {
                    states.apply_marker(header, *marker);
                }
                None => states.apply(header),
            }
        }
    }

    proptest! {
        /// Whatever producers send (idempotent and transactional batches, markers), the state
        /// after a snapshot round trip, the state rebuilt by replaying the appended batches, and
        /// a snapshot taken anywhere plus the batches after it, all equal the live state; a
        /// resend of any of a producer's last five batches is a duplicate with its original
        /// offsets.
        #[test]
        fn replay_and_snapshots_agree_with_the_live_state(
            sends in prop::collection::vec(send_strategy(), 1..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut live = ProducerStates::new(0);
            let mut appended: Vec<Logged> = Vec::new();
            let mut snapshots = vec![live.snapshot_encode()];
            for send in sends {
                match send {
                    Send::Data { producer_id, epoch, first, records, transactional: txn } => {
                        let mut batch = match txn {
                            true => transactional(producer_id, epoch, first, records, 0),
                            false => header(producer_id, epoch, first, records, 0),
                        };
                        if let Ok(Admission::Append) = live.admit_all([&batch]) {
                            batch.base_offset = live.end_offset();
                            live.apply(&batch);
                            appended.push((batch, None));
                        }
                    }
                    Send::Marker { producer_id, epoch, coordinator_epoch, commit } => {
                        if live.admit_marker(producer_id, epoch, coordinator_epoch).is_ok() {
                            let batch = marker_header(producer_id, epoch, live.end_offset());
                            let marker = ControlMarker { commit, coordinator_epoch };
                            live.apply_marker(&batch, marker);
                            appended.push((batch, Some(marker)));
                        }
                    }
                }
                ongoing_check(&live);
                if snapshots.len() == appended.len() {
                    snapshots.push(live.snapshot_encode());
                }
            }
            let mut replayed = ProducerStates::new(0);
            replay(&mut replayed, &appended);
            prop_assert_eq!(&replayed, &live);
            let decoded = ProducerStates::snapshot_decode(&live.snapshot_encode());
            prop_assert_eq!(decoded.as_ref(), Some(&live));
            let cut = cut.index(appended.len() + 1);
            let mut resumed = ProducerStates::snapshot_decode(&snapshots[cut]).expect("valid");
            prop_assert_eq!(resumed.end_offset(), appended.get(cut).map_or(live.end_offset(), |b| b.0.base_offset));
            replay(&mut resumed, &appended[cut..]);
            prop_assert_eq!(&resumed, &live);
            for (batch, marker) in &appended {
                if marker.is_some() {
                    continue;
                }
                let entry = live.entry(batch.producer_id).unwrap();
                let retained = entry.epoch == batch.producer_epoch
                    && entry.batches.iter().any(|meta| meta.first_offset == batch.base_offset);
                if retained {
                    let admission = live.admit_all([batch]);

                    let Ok(Admission::Duplicate(meta)) = admission else {
                        return Err(TestCaseError::fail(format!("{batch:?} not a duplicate: {admission:?}")));
                    };
                    prop_assert_eq!(meta.first_offset, batch.base_offset);
                }
            }
        }
    }
}
