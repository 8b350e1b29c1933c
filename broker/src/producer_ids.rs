//! Producer ids for InitProducerId, unique across restarts and brokers: Kafka's
//! ProducerIdBlock (KIP-730). The blocks come from the controller: the metadata log hands each
//! block out once, cluster-wide, so nothing is written here; a restart asks for a new block and
//! skips what was left of the old one. `Broker::open_on` fetches a first block before the
//! broker serves, and a background task keeps one in reserve
//! (`cluster_mode::producer_ids_refill`); with none at hand, InitProducerId answers a retriable
//! error.
//!
//! A data dir written before the metadata log existed kept its block end in
//! `producer-id-block` (CRC-framed): `legacy_floor` reads it so the import
//! (`cluster_mode::legacy_import`) moves the controller's allocator past every id it covered. A
//! file that exists but cannot be read or fails its CRC stops the start: guessing could reissue
//! ids.

use runtime::disk::read_all_stable;
use runtime::Disk;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// Kafka's `ProducerIdsBlock` size.
pub const BLOCK_SIZE: i64 = 1000;
/// A pre-Raft data dir's durable block end.
pub const FILE_NAME: &str = "producer-id-block";
const HEADER: &str = "gregor-producer-id-block 1";

#[derive(Debug, Default)]
pub struct ProducerIds {
    /// Blocks from the controller, `(first, end)`, oldest first.
    blocks: VecDeque<(i64, i64)>,
    /// The next id to issue.
    next: i64,
    /// The end of the block `next` is in; issuing `block_end` needs a new block.
    block_end: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt; refusing to guess which producer ids were issued")]
    Corrupt { path: PathBuf },
    #[error("no producer id block from the controller yet")]
    NoBlock,
}

#[cfg(test)]
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

/// The first producer id a pre-Raft data dir never issued: its `producer-id-block` end, 0
/// without the file.
pub fn legacy_floor(disk: &dyn Disk, data_dir: &Path) -> Result<i64, ProducerIdError> {
    let path = data_dir.join(FILE_NAME);
    if !disk.exists(&path) {
        return Ok(0);
    }
    let bytes = read_all_stable(disk, &path).map_err(|source| ProducerIdError::Io {
        path: path.clone(),
        source,
    })?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(decode)
        .ok_or(ProducerIdError::Corrupt { path })
}

impl ProducerIds {
    /// Ids only from blocks given to `block_add`.
    pub fn clustered() -> ProducerIds {
        ProducerIds::default()
    }

    /// Whether the refill task should fetch a block (none in reserve).
    pub fn block_wanted(&self) -> bool {
        self.blocks.is_empty()
    }

    /// A block the controller allocated to this broker. A block that does not lie above every
    /// id issued so far is dropped: the controller's blocks only move forward, so it can only be
    /// a stale reply, and using it could issue an id twice.
    pub fn block_add(&mut self, first: i64, size: i64) {
        let floor = self.blocks.back().map_or(self.block_end, |(_, end)| *end);
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
        self.blocks.push_back((first, end));
    }

    /// A producer id never issued before, by any broker of the cluster.
    pub fn next_id(&mut self) -> Result<i64, ProducerIdError> {
        if self.next >= self.block_end {
            let (first, end) = self.blocks.pop_front().ok_or(ProducerIdError::NoBlock)?;
            assert!(first >= self.block_end, "producer id blocks move forward");
            (self.next, self.block_end) = (first, end);
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
    use runtime::MemDisk;
    use std::sync::Arc;

    #[test]
    fn the_legacy_floor_is_the_files_block_end_and_damage_stops_the_start() {
        let disk = MemDisk::new();
        let data = Path::new("data");
        disk.create_dir_all(data).unwrap();
        assert_eq!(legacy_floor(&*disk, data).unwrap(), 0, "no file");
        let path = data.join(FILE_NAME);
        runtime::disk::write_atomic(&*disk, &path, encode(3000).as_bytes()).unwrap();
        assert_eq!(legacy_floor(&*disk, data).unwrap(), 3000);
        disk.flip_bit(&path, 8 * 30).unwrap();
        let dyn_disk: Arc<dyn Disk> = disk.clone();
        assert!(matches!(
            legacy_floor(&*dyn_disk, data),
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
