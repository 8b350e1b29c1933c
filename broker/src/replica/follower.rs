//! The follower side of one partition: where to fetch from, and what to do with the answer.
//! The follower's log is summarized by its epoch history (epoch, start offset), its end and its
//! fsynced end; the shell appends and truncates the real log as the core says.

use super::planted::ReplicaBug;

/// A fetch to send: Fetch's `fetch_offset` and `last_fetched_epoch` (v12+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    pub fetch_offset: i64,
    pub last_fetched_epoch: Option<i32>,
}

/// The leader's answer to a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Batches appended from the fetch offset, each (leader epoch, end offset), in order.
    Records {
        batches: Vec<(i32, i64)>,
        high_watermark: i64,
    },
    /// Fetch v12's `diverging_epoch`: our history differs from the leader's after this epoch's
    /// end offset.
    Diverging { epoch: i32, end_offset: i64 },
}

pub struct Follower {
    planted: Option<ReplicaBug>,
    /// The leader epoch this follower fetches in (the image's).
    leader_epoch: i32,
    /// (epoch, start offset), both strictly increasing: the log's leader-epoch cache.
    epochs: Vec<(i32, i64)>,
    log_end: i64,
    durable_end: i64,
    high_watermark: i64,
}

impl Follower {
    pub fn new(
        leader_epoch: i32,
        epochs: Vec<(i32, i64)>,
        log: (i64, i64, i64),
        planted: Option<ReplicaBug>,
    ) -> Follower {
        let (log_end, durable_end, high_watermark) = log;
        assert!(0 <= durable_end && durable_end <= log_end);
        assert!(epochs
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!(epochs.last().is_none_or(|(_, start)| *start < log_end));
        Follower {
            planted,
            leader_epoch,
            epochs,
            log_end,
            durable_end,
            high_watermark: high_watermark.min(log_end),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    pub fn durable_end(&self) -> i64 {
        self.durable_end
    }

    /// A new leader epoch (the image): fetch from its leader from now on. Nothing of the log
    /// changes: the next fetch names our last epoch, and the new leader says where we diverge.
    pub fn leader_changed(&mut self, leader_epoch: i32) {
        assert!(leader_epoch >= self.leader_epoch, "leader epochs only grow");
        self.leader_epoch = leader_epoch;
    }

    /// The next fetch, or `None` while appended bytes wait for their fsync: the fetch offset is
    /// the durable end, so the leader may count it as durable (the `replica` module doc).
    pub fn fetch_position(&self) -> Option<FetchPosition> {
        let early = ReplicaBug::active(self.planted, ReplicaBug::AckBeforeFollowerFsync);
        if self.durable_end < self.log_end && !early {
            return None;
        }
        let skip = ReplicaBug::active(self.planted, ReplicaBug::SkipTruncation);
        Some(FetchPosition {
            fetch_offset: self.log_end,
            last_fetched_epoch: self
                .epochs
                .last()
                .map(|(epoch, _)| *epoch)
                .filter(|_| !skip),
        })
    }

    /// The follower's fsync made its log durable to `durable_end`.
    pub fn durable(&mut self, durable_end: i64) {
        assert!(
            durable_end <= self.log_end,
            "only appended bytes are fsynced"
        );
        self.durable_end = self.durable_end.max(durable_end);
    }

    /// The leader's answer. Records: the shell appended them. Diverging: returns the offset to
    /// truncate the log to (the shell truncates, then fetches again).
    pub fn answered(&mut self, answer: FetchAnswer) -> Option<i64> {
        match answer {
            FetchAnswer::Records {
                batches,
                high_watermark,
            } => {
                for (epoch, end_offset) in batches {
                    assert!(end_offset > self.log_end, "batches extend the log");
                    if self.epochs.last().is_none_or(|(last, _)| epoch > *last) {
                        self.epochs.push((epoch, self.log_end));
                    }
                    self.log_end = end_offset;
                }
                // Kafka's follower HW: the leader's, capped by what this log holds.
                self.high_watermark = self.high_watermark.max(high_watermark.min(self.log_end));
                None
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                let offset = self.truncation_offset(epoch, end_offset);
                assert!(
                    offset >= self.high_watermark,
                    "a truncation never goes below the HW: offset {offset}, HW {}",
                    self.high_watermark
                );
                self.truncate(offset);
                Some(offset)
            }
        }
    }

    /// Kafka's `getOffsetTruncationState`: our end for the leader's epoch, capped by its end
    /// for it; if we do not have that epoch, the end of our largest epoch below it (the next
    /// fetch names that epoch and the leader answers again). Public so the shell can refuse a
    /// leader's answer that would truncate below the HW before `answered` asserts it.
    pub fn truncation_offset(&self, epoch: i32, end_offset: i64) -> i64 {
        let below = self.epochs.partition_point(|(ours, _)| *ours <= epoch);
        let Some(&(ours, _)) = below.checked_sub(1).map(|last| &self.epochs[last]) else {
            return end_offset.min(self.log_end);
        };
        let our_end = self
            .epochs
            .get(below)
            .map_or(self.log_end, |(_, start)| *start);
        match ours == epoch {
            true => our_end.min(end_offset).min(self.log_end),
            false => our_end.min(self.log_end),
        }
    }

    fn truncate(&mut self, offset: i64) {
        self.log_end = self.log_end.min(offset);
        self.durable_end = self.durable_end.min(offset);
        self.epochs.retain(|(_, start)| *start < offset);
    }
}
