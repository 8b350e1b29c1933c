//! Which partition a record goes to, exactly as Kafka's Java client decides it, so that gregor
//! producers and Java producers agree on where a key lives.
//!
//! An explicit partition wins; a keyed record goes to `(murmur2(key) & 0x7fffffff) % partitions`
//! (Java's `BuiltInPartitioner.partitionForKey`); a keyless record sticks to one partition per topic
//! until its batch closes, then moves to the next (KIP-480's sticky partitioner, with round robin
//! instead of randomness so a seed decides everything).

use std::collections::BTreeMap;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): 32-bit MurmurHash2 with seed
/// 0x9747b28c, reading little-endian words.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java hashes an int length; keys past 2 GiB cannot reach here (records are far smaller).
    let length = u32::try_from(data.len()).expect("keys are smaller than 4 GiB");
    let mut h = SEED ^ length;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes(word.try_into().expect("chunks of 4"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition for a keyed record: `toPositive(murmur2(key)) % partition_count`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

/// Chooses partitions for records without an explicit one.
#[derive(Debug, Clone)]
pub struct Partitioner {
    /// The partition keyless records of each topic currently stick to.
    sticky: BTreeMap<String, i32>,
    /// Where the next sticky choice starts, so producers with different seeds spread out.
    next: u32,
}

impl Partitioner {
    pub fn new(seed: u64) -> Partitioner {
        Partitioner {
            sticky: BTreeMap::new(),
            next: (seed % u64::from(u32::MAX)) as u32,
        }
    }

    /// The partition for a record of `topic` with `key`, among `partition_count`.
    pub fn partition(&mut self, topic: &str, key: Option<&[u8]>, partition_count: i32) -> i32 {
        assert!(partition_count > 0, "a topic has at least one partition");
        if let Some(key) = key {
            return partition_for_key(key, partition_count);
        }
        if let Some(partition) = self.sticky.get(topic).copied() {
            if partition < partition_count {
                return partition;
            }
        }
        let partition = (self.next % partition_count as u32) as i32;
        self.next = self.next.wrapping_add(1);
        self.sticky.insert(topic.to_string(), partition);
        partition
    }

    /// The batch keyless records of `topic` were sticking to has closed: move on.
    pub fn batch_closed(&mut self, topic: &str) {
        self.sticky.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_utils_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2 and librdkafka/akka cross-checks.
        let vectors: [(&[u8], i32); 11] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"1", -1993445489),
            (b"12", 126087238),
            (b"123", -267702483),
            (b"1234", -1614185708),
            (b"12345", -1188365604),
        ];
        for (data, expected) in vectors {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn keyed_records_use_the_positive_hash_modulo_partitions() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340.
        assert_eq!(partition_for_key(b"21", 1), 0);
        assert_eq!(partition_for_key(b"21", 7), 1173551340 % 7);
        assert_eq!(partition_for_key(b"21", 1000), 340);
        let mut partitioner = Partitioner::new(0);
        assert_eq!(partitioner.partition("t", Some(b"21"), 1000), 340);
    }

    #[test]
    fn keyless_records_stick_until_the_batch_closes_then_rotate() {
        let mut partitioner = Partitioner::new(1);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(partitioner.partition("t", None, 3));
            seen.push(partitioner.partition("t", None, 3));
            partitioner.batch_closed("t");
        }
        assert_eq!(seen, [1, 1, 2, 2, 0, 0, 1, 1]);
        assert_eq!(
            partitioner.partition("u", None, 3),
            2,
            "topics share the rotation"
        );
        assert_eq!(
            partitioner.partition("u", None, 2),
            0,
            "a shrunken count re-chooses"
        );
    }
}
