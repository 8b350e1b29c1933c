//! Producer ids for InitProducerId, unique across restarts (and, once there are several brokers,
//! across them, by giving each its own blocks): Kafka's ProducerIdBlock. Ids are handed out from
//! a block whose end is made durable in `producer-id-block` before the first id of the block is
//! issued, so a crash at any moment can only skip ids, never issue one twice.
//!
//! The file is written with `write_atomic` and carries a CRC. A file that exists but cannot be
//! read or fails its CRC stops the broker from starting: guessing could reissue ids.
//!
//! In cluster mode the blocks come from the controller (`ProducerIds::clustered`): the metadata
//! log hands each block out once, cluster-wide, so nothing is written here; a restart asks for a
//! new block and skips what was left of the old one. A background task keeps one block in
//! reserve (`cluster_mode::producer_ids_refill`); with none at hand, InitProducerId answers a
//! retriable error.

use runtime::disk::{read_all_stable, write_atomic};
use runtime::Disk;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Kafka's `ProducerIdsBlock` size.
pub const BLOCK_SIZE: i64 = 1000;
pub const FILE_NAME: &str = "producer-id-block";
const HEADER: &str = "gregor-producer-id-block 1";

#[derive(Debug)]
enum Source {
    /// Single node: the durable block end in the data dir.
    File { disk: Arc<dyn Disk>, path: PathBuf },
    /// Cluster mode: blocks from the controller, `(first, end)`, oldest first.
    Controller { blocks: VecDeque<(i64, i64)> },
}

#[derive(Debug)]
pub struct ProducerIds {
    source: Source,
    /// The next id to issue.
    next: i64,
    /// Ids below this are covered by the durable file; issuing `block_end` needs a new block.
    block_end: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt; refusing to guess which producer ids were issued")]
    Corrupt { path: PathBuf },
    #[error("producer ids exhausted")]
    Exhausted,
    #[error("no producer id block from the controller yet")]
    NoBlock,
}

fn encode(block_end: i64) -> String {
    storage::crc_framed(&format!("{HEADER}\nblock_end {block_end}\n"))
}

fn decode(text: &str) -> Option<i64> {
    let body = storage::crc_unframed(text)?;
    let mut lines = body.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let block_end: i64 = lines.next()?.strip_prefix("block_end ")?.parse().ok()?;
    (block_end >= 0).then_some(block_end)
}

impl ProducerIds {
    /// Reads the durable block end in `data_dir`: ids from there on were never issued.
    pub fn open(disk: Arc<dyn Disk>, data_dir: &Path) -> Result<ProducerIds, ProducerIdError> {
        let path = data_dir.join(FILE_NAME);
        let io_error = |source| ProducerIdError::Io {
            path: path.clone(),
            source,
        };
        let next = match disk.exists(&path) {
            false => 0,
            true => {
                let bytes = read_all_stable(&*disk, &path).map_err(io_error)?;
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(decode)
                    .ok_or_else(|| ProducerIdError::Corrupt { path: path.clone() })?
            }
        };
        Ok(ProducerIds {
            source: Source::File { disk, path },
            next,
            block_end: next,
        })
    }

    /// Cluster mode: ids only from blocks given to `block_add`.
    pub fn clustered() -> ProducerIds {
        ProducerIds {
            source: Source::Controller {
                blocks: VecDeque::new(),
            },
            next: 0,
            block_end: 0,
        }
    }

    /// Cluster mode: whether the refill task should fetch a block (none in reserve).
    pub fn block_wanted(&self) -> bool {
        matches!(&self.source, Source::Controller { blocks } if blocks.is_empty())
    }

    /// Cluster mode: a block the controller allocated to this broker. A block that does not lie
    /// above every id issued so far is dropped: the controller's blocks only move forward, so it
    /// can only be a stale reply, and using it could issue an id twice.
    pub fn block_add(&mut self, first: i64, size: i64) {
        let Source::Controller { blocks } = &mut self.source else {
            panic!("producer id blocks are only added in cluster mode");
        };
        let floor = blocks.back().map_or(self.block_end, |(_, end)| *end);
        let Some(end) = first
            .checked_add(size)
            .filter(|_| size > 0 && first >= floor)
        else {
            tracing::warn!(
                first,
                size,
                floor,
                "dropping a producer id block below ids issued"
            );
            return;
        };
        blocks.push_back((first, end));
    }

    /// A producer id never issued before, on this data dir, by any run.
    pub fn next_id(&mut self) -> Result<i64, ProducerIdError> {
        if self.next >= self.block_end {
            match &mut self.source {
                Source::File { disk, path } => {
                    let block_end = self
                        .next
                        .checked_add(BLOCK_SIZE)
                        .ok_or(ProducerIdError::Exhausted)?;
                    write_atomic(&**disk, path, encode(block_end).as_bytes()).map_err(
                        |source| ProducerIdError::Io {
                            path: path.clone(),
                            source,
                        },
                    )?;
                    self.block_end = block_end;
                }
                Source::Controller { blocks } => {
                    let (first, end) = blocks.pop_front().ok_or(ProducerIdError::NoBlock)?;
                    assert!(first >= self.block_end, "producer id blocks move forward");
                    (self.next, self.block_end) = (first, end);
                }
            }
        }
        let id = self.next;
        self.next += 1;
        assert!(self.next <= self.block_end);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use runtime::disk::CrashOptions;
    use runtime::MemDisk;

    fn open(disk: &Arc<MemDisk>) -> ProducerIds {
        let disk: Arc<dyn Disk> = disk.clone();
        disk.create_dir_all(Path::new("data")).unwrap();
        ProducerIds::open(disk, Path::new("data")).unwrap()
    }

    #[test]
    fn ids_are_never_reissued_after_a_crash() {
        let disk = MemDisk::new();
        let mut issued = std::collections::BTreeSet::new();
        for round in 0..4u64 {
            let mut ids = open(&disk);
            for _ in 0..(BLOCK_SIZE + 3) {
                let id = ids.next_id().unwrap();
                assert!(issued.insert(id), "id {id} issued twice (round {round})");
            }
            disk.crash(
                CrashOptions::LoseUnsynced,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(round),
            );
        }
    }

    #[test]
    fn a_corrupt_block_file_stops_the_start() {
        let disk = MemDisk::new();
        open(&disk).next_id().unwrap();
        let path = Path::new("data").join(FILE_NAME);
        disk.flip_bit(&path, 8 * 30).unwrap();
        let dyn_disk: Arc<dyn Disk> = disk.clone();
        assert!(matches!(
            ProducerIds::open(dyn_disk, Path::new("data")),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_file_round_trips_and_refuses_damage() {
        let text = encode(3000);
        assert_eq!(decode(&text), Some(3000));
        assert_eq!(decode(&text.replace("3000", "3001")), None);
        assert_eq!(decode(""), None);
    }

    #[test]
    fn controller_blocks_are_used_in_order_and_never_reused() {
        let mut ids = ProducerIds::clustered();
        assert!(ids.block_wanted());
        assert!(matches!(ids.next_id(), Err(ProducerIdError::NoBlock)));
        ids.block_add(2000, 2);
        assert!(!ids.block_wanted());
        ids.block_add(1000, 2); // Below the reserve: a stale reply, dropped.
        ids.block_add(5000, 1);
        let issued: Vec<i64> = (0..3).map(|_| ids.next_id().unwrap()).collect();
        assert_eq!(issued, vec![2000, 2001, 5000]);
        assert!(ids.block_wanted());
        ids.block_add(4000, 10); // Below ids already issued.
        assert!(matches!(ids.next_id(), Err(ProducerIdError::NoBlock)));
    }
}
