//! The cleaner's key map: key digest -> offset of the key's latest record, in a fixed memory
//! budget (Kafka's `SkimpyOffsetMap` and `log.cleaner.dedupe.buffer.size`).
//!
//! Keys are not stored, only a 128-bit digest of each (MurmurHash3 x64/128, written out here so
//! the crate needs no hashing dependency): 24 bytes an entry whatever the key's size. Two keys
//! with the same digest would be taken for one key, as with Kafka's MD5 digests; at 128 bits the
//! chance of that among a billion keys is about 10^-21.

/// Bytes one entry takes: a 128-bit digest and an offset.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 24;
/// Share of the slots filled before the map reports itself full: linear probing stays short.
const MAX_LOAD: f64 = 0.75;
/// The smallest table (a few keys: every pass still makes progress).
const MIN_SLOTS: usize = 8;

/// A 128-bit key digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub u64, pub u64);

impl KeyDigest {
    /// The digest of `key`.
    pub fn of(key: &[u8]) -> Self {
        let (h1, h2) = murmur3_x64_128(key, 0);
        Self(h1, h2)
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    h1: u64,
    h2: u64,
    /// -1 marks an empty slot (offsets are never negative).
    offset: i64,
}

const EMPTY: Slot = Slot {
    h1: 0,
    h2: 0,
    offset: -1,
};

/// A bounded map from key digest to the offset of the key's latest record, reused from one
/// cleaning to the next. Memory grows on demand up to the budget and stays allocated.
#[derive(Debug)]
pub struct OffsetMap {
    slots: Vec<Slot>,
    /// The most slots the budget allows.
    max_slots: usize,
    /// Slots in use for the current round (a prefix of `slots`).
    active: usize,
    entries: usize,
    max_entries: usize,
}

impl OffsetMap {
    /// A map using at most about `budget_bytes` of memory (at least 8 slots).
    pub fn new(budget_bytes: usize) -> Self {
        let max_slots = (budget_bytes / OFFSET_MAP_ENTRY_BYTES).max(MIN_SLOTS);
        Self {
            slots: Vec::new(),
            max_slots,
            active: 0,
            entries: 0,
            max_entries: 0,
        }
    }

    /// The most keys the map can hold within its budget.
    pub fn capacity(&self) -> usize {
        ((self.max_slots as f64) * MAX_LOAD) as usize
    }

    /// Keys in the map.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// No key in the map.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Empties the map and sizes it for about `expected_keys` keys (within the budget): a small
    /// dirty section costs a small table to clear, not the whole budget.
    pub fn reset(&mut self, expected_keys: usize) {
        let wanted = ((expected_keys as f64) / MAX_LOAD).ceil() as usize + 1;
        self.active = wanted.clamp(MIN_SLOTS, self.max_slots);
        self.slots.clear();
        self.slots.resize(self.active, EMPTY);
        self.entries = 0;
        self.max_entries = (((self.active as f64) * MAX_LOAD) as usize).max(1);
    }

    fn home(&self, digest: KeyDigest) -> usize {
        // Lemire's multiply-shift: uniform over [0, active) without a division.
        ((u128::from(digest.0) * self.active as u128) >> 64) as usize
    }

    /// Records `offset` as the latest offset of the key with `digest`. Returns false, changing
    /// nothing, when the key is new and the map is full.
    pub fn put(&mut self, digest: KeyDigest, offset: i64) -> bool {
        if self.active == 0 {
            self.reset(0);
        }
        let mut i = self.home(digest);
        loop {
            let slot = &mut self.slots[i];
            if slot.offset < 0 {
                if self.entries >= self.max_entries {
                    return false;
                }
                *slot = Slot {
                    h1: digest.0,
                    h2: digest.1,
                    offset,
                };
                self.entries += 1;
                return true;
            }
            if slot.h1 == digest.0 && slot.h2 == digest.1 {
                slot.offset = slot.offset.max(offset);
                return true;
            }
            i += 1;
            if i == self.active {
                i = 0;
            }
        }
    }

    /// Touches the home slot of every digest, so that the lookups that follow find them in the
    /// cache: the loads of this tight loop overlap, where those of a lookup loop would wait one
    /// by one (the table is far larger than the caches). A batch's worth at a time.
    pub fn prefetch(&self, digests: &[Option<KeyDigest>]) {
        if self.active == 0 {
            return;
        }
        let mut sum = 0i64;
        for digest in digests.iter().flatten() {
            sum ^= self.slots[self.home(*digest)].offset;
        }
        std::hint::black_box(sum);
    }

    /// The latest offset recorded for the key with `digest`.
    pub fn get(&self, digest: KeyDigest) -> Option<i64> {
        if self.active == 0 {
            return None;
        }
        let mut i = self.home(digest);
        // The load factor keeps an empty slot in every probe sequence: this ends.
        loop {
            let slot = &self.slots[i];
            if slot.offset < 0 {
                return None;
            }
            if slot.h1 == digest.0 && slot.h2 == digest.1 {
                return Some(slot.offset);
            }
            i += 1;
            if i == self.active {
                i = 0;
            }
        }
    }
}

/// MurmurHash3 x64/128 (Austin Appleby, public domain): `(h1, h2)`, the two little-endian
/// 64-bit halves of the reference implementation's 16-byte output.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut k1 = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        let mut k2 = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    for (i, &byte) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(byte) << (8 * i);
        } else {
            k2 |= u64::from(byte) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    h1 ^= data.len() as u64;
    h2 ^= data.len() as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMHasher's verification value for MurmurHash3_x64_128: hash keys {}, {0}, {0, 1}, ...
    /// of 0..255 bytes with seed 256 - length, then hash the 256 concatenated digests.
    #[test]
    fn murmur3_matches_the_reference_implementation() {
        let key: Vec<u8> = (0..=255u8).collect();
        let mut digests = Vec::with_capacity(16 * 256);
        for len in 0..256usize {
            let (h1, h2) = murmur3_x64_128(&key[..len], 256 - len as u32);
            digests.extend_from_slice(&h1.to_le_bytes());
            digests.extend_from_slice(&h2.to_le_bytes());
        }
        let (h1, _) = murmur3_x64_128(&digests, 0);
        assert_eq!(h1 as u32, 0x6384_BA69);
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
    }

    #[test]
    fn keeps_the_latest_offset_and_reports_full() {
        let mut map = OffsetMap::new(64 * OFFSET_MAP_ENTRY_BYTES);
        map.reset(1_000_000);
        assert_eq!(map.capacity(), 48);
        for i in 0..48i64 {
            assert!(map.put(KeyDigest::of(format!("k{i}").as_bytes()), i));
        }
        assert!(!map.put(KeyDigest::of(b"one too many"), 100));
        // An existing key still updates when the map is full.
        assert!(map.put(KeyDigest::of(b"k3"), 200));
        assert!(map.put(KeyDigest::of(b"k3"), 150), "never goes back");
        assert_eq!(map.get(KeyDigest::of(b"k3")), Some(200));
        assert_eq!(map.get(KeyDigest::of(b"k4")), Some(4));
        assert_eq!(map.get(KeyDigest::of(b"one too many")), None);
        assert_eq!(map.len(), 48);
        map.reset(1);
        assert!(map.is_empty());
        assert_eq!(map.get(KeyDigest::of(b"k3")), None);
    }

    #[test]
    fn a_small_round_uses_a_small_table() {
        let mut map = OffsetMap::new(1 << 30);
        map.reset(1);
        assert_eq!(map.active, MIN_SLOTS);
        map.reset(40);
        assert_eq!(map.active, 55);
        for i in 0..40i64 {
            assert!(map.put(KeyDigest::of(&i.to_be_bytes()), i));
        }
        for i in 0..40i64 {
            assert_eq!(map.get(KeyDigest::of(&i.to_be_bytes())), Some(i));
        }
    }
}
