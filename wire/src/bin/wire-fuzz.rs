//! The wire fuzz target for the nightly campaign, over both decoding surfaces:
//! - frames: mutates real clients' frames (the corpus) and sketched frames of every API and
//!   version, and requires that the bounds walker and the protocol crate agree, so nothing
//!   allocates by an unchecked length;
//! - record batches: mutates encoded batches of every codec (CRC fixed up, so the mutations
//!   reach the records) and requires that what `records_readable` accepts the crate's record
//!   decoder decodes, and that what `records_validate` (the broker's produce check) accepts
//!   `records_readable` accepts too.
//!
//! Memory stays bounded: the peak resident size is printed at the end.
//!
//!     cargo run --release -p wire --bin wire-fuzz -- [FRAMES] [SEED]      (default 1000000 0)

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use wire::batch::build::{batch_encode, RecordSpec};
use wire::batch::{crc_compute, BATCH_HEADER_BYTES};
use wire::bounds::fuzz::{corpus, mutate, Frame, Mutation};
use wire::bounds::{api_keys, request_sketch, response_sketch, CrossCheck};
use wire::{records_readable, records_validate, RecordRules, ValidatedBatch};

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
    let mut batches = BatchTally::default();
    for index in 0..frames {
        if rng.below(4) == 0 {
            if let Err(disagreement) = batch_fuzz(&mut rng, &mut batches) {
                eprintln!("frame {index} (seed {seed}): {disagreement}");
                std::process::exit(1);
            }
            continue;
        }
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
        "{frames} inputs: frames {decoded} decoded, {refused} refused by both, {bounded} refused \
         by a bound; batches {} readable, {} refused; peak resident {}",
        batches.readable,
        batches.refused,
        peak_resident()
    );
}

#[derive(Default)]
struct BatchTally {
    readable: u64,
    refused: u64,
}

/// Produce-side limits for the fuzzed batches: small, so bombs are cheap to refuse.
const BATCH_RULES: RecordRules = RecordRules {
    decompressed_bytes_max: 1 << 20,
    key_required: false,
};

fn batch_fuzz(rng: &mut Rng, tally: &mut BatchTally) -> Result<(), String> {
    let records: Vec<RecordSpec> = (0..1 + rng.below(6)).map(|_| record_spec(rng)).collect();
    let codec = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ][rng.below(5) as usize];
    let mut bytes = batch_encode(&records, codec).bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let position = 21 + rng.below((bytes.len() - 21) as u64) as usize;
        match rng.below(3) {
            0 => bytes[position] = rng.next() as u8,
            1 => bytes.insert(position, rng.next() as u8),
            _ => {
                bytes.remove(position);
            }
        }
        if bytes.len() <= BATCH_HEADER_BYTES {
            return Ok(());
        }
    }
    let length = bytes.len() as i32 - 12;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc_compute(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let Ok(batch) = ValidatedBatch::validate(Bytes::from(bytes)) else {
        tally.refused += 1;
        return Ok(());
    };
    let produce_ok = records_validate(&batch, &BATCH_RULES).is_ok();
    if records_readable(&batch, BATCH_RULES.decompressed_bytes_max).is_err() {
        if produce_ok {
            return Err(format!("produce accepts what readers refuse: {batch:?}"));
        }
        tally.refused += 1;
        return Ok(());
    }
    if crate_refuses_snappy_framing(&batch) {
        tally.readable += 1;
        return Ok(());
    }
    let mut decoding = batch.bytes().clone();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RecordBatchDecoder::decode(&mut decoding)
    }));
    match decoded {
        Ok(Ok(set)) if set.records.len() == batch.header().record_count() as usize => {
            tally.readable += 1;
            Ok(())
        }
        Ok(Ok(set)) => Err(format!(
            "readable batch of {} records decoded to {}: {batch:?}",
            batch.header().record_count(),
            set.records.len()
        )),
        Ok(Err(error)) => Err(format!(
            "readable batch the crate refuses ({error:#}): {batch:?}"
        )),
        Err(_) => Err(format!("readable batch the crate panics on: {batch:?}")),
    }
}

/// The crate reads xerial-framed snappy only after the whole 16-byte header (magic, version 1,
/// compatible version 1); librdkafka and `records_readable` check the 8-byte magic and skip the
/// rest. Our client then reports such a batch as corrupt rather than decoding it, which is safe,
/// so the fuzz target does not count the difference as a disagreement.
fn crate_refuses_snappy_framing(batch: &ValidatedBatch) -> bool {
    const CRATE_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let body = &batch.bytes()[BATCH_HEADER_BYTES..];
    batch.header().compression() == 2
        && body.starts_with(&CRATE_HEADER[..8])
        && !body.starts_with(CRATE_HEADER)
}

fn record_spec(rng: &mut Rng) -> RecordSpec {
    let bytes = |rng: &mut Rng| {
        (rng.below(4) != 0)
            .then(|| Bytes::from(vec![b'a' + rng.below(26) as u8; rng.below(40) as usize]))
    };
    let key = bytes(rng);
    let value = bytes(rng);
    let headers = (0..rng.below(3))
        .map(|i| (format!("h{i}"), bytes(rng)))
        .collect();
    RecordSpec {
        key,
        value,
        headers,
        timestamp: rng.next() as i64 >> 24,
    }
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
