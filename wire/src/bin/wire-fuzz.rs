//! The wire fuzz target for the nightly campaign: mutates real clients' frames (the corpus) and
//! sketched frames of every API and version, and requires, for each, that the bounds walker
//! and the protocol crate agree and that nothing allocates by an unchecked length. Memory stays
//! bounded: the peak resident size is printed at the end.
//!
//!     cargo run --release -p wire --bin wire-fuzz -- [FRAMES] [SEED]      (default 1000000 0)

use bytes::Bytes;
use wire::bounds::fuzz::{corpus, mutate, Frame, Mutation};
use wire::bounds::{api_keys, request_sketch, response_sketch, CrossCheck};

/// splitmix64: enough randomness for choosing mutations, and replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn mutation(rng: &mut Rng) -> Mutation {
    let at = rng.next() as usize;
    match rng.below(3) {
        0 => {
            let value = match rng.below(4) {
                0 => i32::MAX,
                1 => -2,
                2 => 0x7fff_0000,
                _ => rng.next() as i32,
            };
            Mutation::Int32 { at, value }
        }
        1 => Mutation::Byte {
            at,
            value: rng.next() as u8,
        },
        _ => Mutation::Truncate { at },
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let frames: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("FRAMES"));
    let seed: u64 = args.next().map_or(0, |a| a.parse().expect("SEED"));
    let corpus = corpus();
    let versions: Vec<_> = api_keys()
        .flat_map(|key| {
            let range = key.valid_versions();
            (range.min..=range.max).map(move |version| (key, version))
        })
        .collect();
    let mut rng = Rng(seed);
    let (mut decoded, mut refused, mut bounded) = (0u64, 0u64, 0u64);
    for index in 0..frames {
        let frame = match rng.below(3) {
            0 => corpus[rng.below(corpus.len() as u64) as usize].clone(),
            pick => {
                let (api_key, version) = versions[rng.below(versions.len() as u64) as usize];
                let sketch_seed = rng.next();
                let sketched = if pick == 1 {
                    request_sketch(api_key, version, sketch_seed).map(Frame::Request)
                } else {
                    response_sketch(api_key, version, sketch_seed).map(|bytes| Frame::Response {
                        api_key,
                        version,
                        bytes,
                    })
                };
                let Some(sketched) = sketched else { continue };
                sketched
            }
        };
        let mut bytes: Bytes = frame.bytes().clone();
        for _ in 0..=rng.below(3) {
            bytes = mutate(&bytes, &mutation(&mut rng));
        }
        match frame.with_bytes(bytes.clone()).cross_check() {
            Ok(CrossCheck::Decoded) => decoded += 1,
            Ok(CrossCheck::Refused) => refused += 1,
            Ok(CrossCheck::RefusedByBound) => bounded += 1,
            Err(disagreement) => {
                eprintln!(
                    "frame {index} (seed {seed}): {disagreement}\n{frame:?}\nmutated: {bytes:?}"
                );
                std::process::exit(1);
            }
        }
    }
    println!(
        "{frames} frames: {decoded} decoded, {refused} refused by both, {bounded} refused by a \
         bound; peak resident {}",
        peak_resident()
    );
}

/// The process's peak resident set (VmHWM), from procfs.
#[allow(
    clippy::disallowed_methods,
    reason = "a command-line tool, outside the runtime seam"
)]
fn peak_resident() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM"))
                .map(|line| line.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}
