//! Seeded randomness. One `u64` seed feeds independent streams, so adding a draw in one concern
//! (a producer, say) never shifts the numbers another concern (the disk) sees.
//!
//! Streams are independent by construction (STYLE.md 23): a stream id is a kind in the high 32
//! bits and an index in the low 32 (`(kind as u64) << 32 | index`), so two different (kind,
//! index) pairs can never name the same ChaCha stream. The old `base + index` ids let producer 1
//! share the nemesis stream and node 2's disk as well.

use rand::SeedableRng;
pub use rand::{Rng, RngCore};
pub use rand_chacha::ChaCha8Rng;

/// What a stream is for. The index tells apart the members of a kind (node ids, process ids).
/// Never renumber a kind: every seed's world would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Stream {
    /// The run's swarm options (`sim::options`).
    Swarm = 1,
    /// Each broker node's clock skew, drawn in node order (index 0).
    ClockSkew = 2,
    /// A node's disk faults and crash damage (index: node id).
    Disk = 3,
    /// A workload process: a producer or a consumer (index: process id).
    Workload = 4,
    /// The nemesis's choice of faults (index 0).
    Nemesis = 5,
    /// A node's seed for each of its starts, drawn in order (index: node id). Each start is a new
    /// process, which in production draws a fresh seed from the OS.
    Incarnation = 6,
    /// A broker's own draws, such as topic ids (index: node id), from its start's seed.
    Node = 7,
    /// A broker's group coordinator: member ids (index: node id), from its start's seed.
    Groups = 8,
    /// Aimed faults (`buggify`; index: node id, 0 for the simulator's own).
    Buggify = 9,
    /// A broker's transaction coordinator: the `__transaction_state` topic id (index: node id),
    /// from its start's seed.
    Transactions = 10,
}

impl Stream {
    /// The ChaCha stream id of member `index` of this kind.
    pub fn id(self, index: u32) -> u64 {
        (self as u64) << 32 | u64::from(index)
    }
}

/// The rng for member `index` of stream `kind` of one seed.
pub fn stream_rng(seed: u64, kind: Stream, index: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(kind.id(index));
    rng
}

/// A seed for production use, from the OS (from the simulator's seed under madsim, which
/// intercepts `getrandom`).
pub fn entropy_seed() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collisions the old `base + index` ids had: producer 1 (workload 4 + 1) and node 2's
    /// disk (disk 3 + 2) both drew the nemesis's numbers (stream 5).
    #[test]
    fn streams_of_different_kinds_or_indices_differ() {
        let kinds = [
            Stream::Swarm,
            Stream::ClockSkew,
            Stream::Disk,
            Stream::Workload,
            Stream::Nemesis,
            Stream::Incarnation,
            Stream::Node,
            Stream::Groups,
            Stream::Buggify,
        ];
        let mut ids = std::collections::BTreeSet::new();
        let mut firsts = std::collections::BTreeSet::new();
        for kind in kinds {
            for index in [0, 1, 2, 5, 100, u32::MAX] {
                assert!(ids.insert(kind.id(index)), "{kind:?} {index} collides");
                firsts.insert(stream_rng(7, kind, index).next_u64());
            }
        }
        assert_eq!(
            firsts.len(),
            kinds.len() * 6,
            "every stream draws its own numbers"
        );
        assert_ne!(
            stream_rng(7, Stream::Workload, 1).next_u64(),
            stream_rng(7, Stream::Nemesis, 0).next_u64()
        );
        assert_ne!(
            stream_rng(7, Stream::Disk, 2).next_u64(),
            stream_rng(7, Stream::Nemesis, 0).next_u64()
        );
    }
}
