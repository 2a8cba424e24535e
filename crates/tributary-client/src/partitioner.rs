//! Choosing a partition: by key with murmur2 exactly as Kafka's default partitioner does (a key
//! lands on the same partition number as with Kafka's Java client), keyless records sticky per
//! batch, or a partitioner of the application's own.

/// Picks a record's partition.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition of a record of `topic` with `key`, among `partitions` (at least 1), or
    /// `None` to let the producer stick keyless records to one partition per batch.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> Option<i32>;
}

/// Kafka's default: `toPositive(murmur2(key)) % partitions` for keyed records, sticky for
/// keyless ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPartitioner;

impl Partitioner for DefaultPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partitions: i32) -> Option<i32> {
        let key = key?;
        Some(partition_for_key(key, partitions))
    }
}

/// The partition Kafka's default partitioner gives `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                *expected,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keys_spread_and_stay_put() {
        let p = DefaultPartitioner;
        assert_eq!(p.partition("t", None, 6), None);
        let a = p.partition("t", Some(b"user-1"), 6).unwrap();
        assert_eq!(p.partition("t", Some(b"user-1"), 6), Some(a));
        assert!((0..6).contains(&a));
        assert_eq!(partition_for_key(b"", 1), 0);
    }
}
