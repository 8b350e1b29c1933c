//! Seeded randomness. One `u64` seed feeds independent named streams, so adding a draw in one
//! concern (the network, say) never shifts the numbers another concern (the disk) sees.

use rand::SeedableRng;
pub use rand::{Rng, RngCore};
pub use rand_chacha::ChaCha8Rng;

/// The independent random streams derived from one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum Stream {
    Swarm = 1,
    Network = 2,
    Disk = 3,
    Workload = 4,
    Nemesis = 5,
    /// Aimed faults (`buggify`); per node through `Stream::buggify`.
    Buggify = 6,
    /// Per-node streams start here: `Stream::node(id)`.
    Node = 1 << 32,
}

impl Stream {
    pub fn node(node_id: i32) -> u64 {
        Stream::Node as u64 + node_id as u32 as u64
    }

    /// A node's aimed-fault stream (0: the simulator's own), apart from every other stream.
    pub fn buggify(node_id: i32) -> u64 {
        (Stream::Buggify as u64) << 40 | node_id as u32 as u64
    }
}

/// The rng for one stream of one seed.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A seed for production use, from the OS (from the simulator's seed under madsim, which
/// intercepts `getrandom`).
pub fn entropy_seed() -> u64 {
    rand::random()
}
