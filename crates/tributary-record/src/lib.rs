//! Kafka's record batch format v2 (magic 2), byte for byte.
//!
//! A *record batch* is the unit Tributary stores, replicates and serves: the bytes a producer
//! sends are the bytes written to the segment file and the bytes a consumer or follower
//! receives. This crate parses and validates those bytes ([`BatchHeader`], [`verify_batch`],
//! [`Batches`]), patches the few header fields a leader owns ([`set_base_offset`],
//! [`set_partition_leader_epoch`], [`set_log_append_time`]), builds new batches
//! ([`BatchBuilder`]), decodes their records ([`decode_records`]) and rewrites a batch with a
//! subset of its records for compaction ([`split_records`], [`rewrite_batch`], [`empty_batch`]).
//! The records section may be compressed with Kafka's codecs (gzip, snappy, lz4, zstd;
//! [`compression`]); the header never is.
//!
//! Layout of a v2 batch (all integers big-endian):
//!
//! | field | bytes | covered by CRC |
//! |---|---|---|
//! | base offset | 8 | no |
//! | batch length (bytes after this field) | 4 | no |
//! | partition leader epoch | 4 | no |
//! | magic (2) | 1 | no |
//! | CRC-32C | 4 | no |
//! | attributes | 2 | yes |
//! | last offset delta | 4 | yes |
//! | base timestamp | 8 | yes |
//! | max timestamp | 8 | yes |
//! | producer id | 8 | yes |
//! | producer epoch | 2 | yes |
//! | base sequence | 4 | yes |
//! | record count | 4 | yes |
//! | records | … | yes |
//!
//! Architecture invariants:
//! - Pure functions over byte slices: no files, no network, no async, no replication.
//! - The one crate that knows a batch's layout: field positions, attribute bits, varints, the
//!   CRC's range. Other crates call it (the storage engine, the broker, the client) and never
//!   re-encode the layout.
//! - Parsing malformed bytes gives a [`RecordError`], never a panic; decompression is bounded
//!   ([`DECOMPRESSED_RECORDS_BYTES_MAX`]), so no batch makes it allocate without limit.
//! - A batch it builds or rewrites verifies with [`verify_batch`]; a rewrite keeps a batch's
//!   offsets, producer fields and codec.
//! - No two top-level modules refer to each other, directly or in a circle.

mod builder;
pub mod compression;
mod record;
mod rewrite;
pub mod varint;

pub use builder::BatchBuilder;
pub use record::{
    Header, Record, decode_records, decode_records_with_limit, decode_verified_records,
};
pub use rewrite::{
    RecordSpan, RewriteBuffers, empty_batch, records_section, rewrite_batch, split_records,
};

/// The only record batch format Tributary accepts.
pub const MAGIC_V2: i8 = 2;
/// Bytes before the batch length field ends: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, records excluded.
pub const BATCH_HEADER_LEN: usize = 61;
/// `producer_id` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producer_epoch` of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// The CRC-32C covers the batch from this byte (the attributes) to its end.
pub const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;
/// The smallest encoding of one record (length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each).
pub const MIN_RECORD_BYTES: usize = 7;
/// `base_sequence` of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// `partition_leader_epoch` before a leader stamps the batch.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// A timestamp that is not known.
pub const NO_TIMESTAMP: i64 = -1;
/// The most bytes [`decode_records`] lets a compressed records section inflate to: 64 MiB, far
/// above any batch Kafka's size limits let a producer send uncompressed (`message.max.bytes`
/// defaults to 1 MiB), so only a decompression bomb meets it.
pub const DECOMPRESSED_RECORDS_BYTES_MAX: usize = 64 * 1024 * 1024;

// Field positions inside a batch.
const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// KIP-534: the base timestamp field holds the batch's delete horizon (set by compaction).
const DELETE_HORIZON_BIT: i16 = 0x40;

/// What can be wrong with the bytes of a record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the batch length promise.
    #[error("record batch truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// A magic byte other than 2 (older message formats are not accepted).
    #[error("unsupported record batch magic {0} (Tributary stores magic 2 only)")]
    UnsupportedMagic(i8),
    /// The batch length field cannot describe a v2 batch.
    #[error("invalid record batch length {0} (a v2 batch is at least {min} bytes after the length field)", min = BATCH_HEADER_LEN - LOG_OVERHEAD)]
    InvalidLength(i32),
    /// The CRC-32C stored in the batch does not match its contents.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A header field or record inside the batch is malformed.
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// The records are compressed with a codec this build cannot decode.
    #[error("unsupported compression codec {0:?}")]
    UnsupportedCompression(Compression),
    /// The codec failed: corrupt or truncated compressed records.
    #[error("{codec} records cannot be decompressed: {message}")]
    Codec {
        /// The codec of the batch.
        codec: Compression,
        /// What the codec reported.
        message: String,
    },
    /// The compressed records inflate to more bytes than allowed (a decompression bomb, or a
    /// batch larger than the caller accepts).
    #[error("{codec} records decompress to more than {limit} bytes")]
    DecompressedTooLarge {
        /// The codec of the batch.
        codec: Compression,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// The compression codec of a batch (attributes bits 0–2), numbered as Kafka numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip.
    Gzip,
    /// Snappy (Xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
    /// A codec id Kafka does not define (5–7).
    Unknown(u8),
}

impl Compression {
    fn from_attributes(attributes: i16) -> Self {
        match (attributes & COMPRESSION_MASK) as u8 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => Self::Unknown(other),
        }
    }

    /// Kafka's codec id.
    pub fn id(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
            Self::Unknown(id) => id,
        }
    }
}

/// Kafka's name of the codec, as in the `compression.type` config (`unknown(5)` for the rest).
impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Gzip => f.write_str("gzip"),
            Self::Snappy => f.write_str("snappy"),
            Self::Lz4 => f.write_str("lz4"),
            Self::Zstd => f.write_str("zstd"),
            Self::Unknown(id) => write!(f, "unknown({id})"),
        }
    }
}

/// Whose clock a batch's timestamps come from (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the leader when it appended the batch.
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 record batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Length of the batch after the length field; the batch takes `batch_length + 12` bytes.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Always [`MAGIC_V2`] once parsed.
    pub magic: i8,
    /// CRC-32C of everything from the attributes to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent or transactional producer, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Epoch of that producer, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`. Checks the magic byte and that the batch length
    /// can describe a v2 batch; does not check the CRC (see [`verify_batch`]).
    pub fn parse(buf: &[u8]) -> Result<Self, RecordError> {
        if buf.len() < BATCH_HEADER_LEN {
            // Report the magic first when we have it: an old-format batch is a clearer error.
            if buf.len() > MAGIC_AT && buf[MAGIC_AT] as i8 != MAGIC_V2 {
                return Err(RecordError::UnsupportedMagic(buf[MAGIC_AT] as i8));
            }
            return Err(RecordError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(RecordError::UnsupportedMagic(magic));
        }
        let batch_length = read_i32(buf, LENGTH_AT);
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordError::InvalidLength(batch_length));
        }
        Ok(Self {
            base_offset: read_i64(buf, BASE_OFFSET_AT),
            batch_length,
            partition_leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: read_i32(buf, CRC_AT) as u32,
            attributes: read_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            record_count: read_i32(buf, RECORD_COUNT_AT),
        })
    }

    /// Bytes the whole batch takes, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Sequence number of the record at `offset_delta` in the batch, wrapping at `i32::MAX` as
    /// Kafka's do (`DefaultRecordBatch.incrementSequence`); [`NO_SEQUENCE`] without one.
    pub fn sequence_at(&self, offset_delta: i32) -> i32 {
        if self.base_sequence < 0 {
            return NO_SEQUENCE;
        }
        ((i64::from(self.base_sequence) + i64::from(offset_delta)) % (i64::from(i32::MAX) + 1))
            as i32
    }

    /// Sequence number of the batch's last record (see [`Self::sequence_at`]).
    pub fn last_sequence(&self) -> i32 {
        self.sequence_at(self.last_offset_delta)
    }

    /// Compression codec of the records.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes)
    }

    /// Whose clock the timestamps come from.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// A control batch (transaction markers), not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Compaction stamped the batch with a delete horizon (KIP-534, attributes bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }

    /// The delete horizon (in the base timestamp field) if the batch has one: its tombstones
    /// may go once this time has passed.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon().then_some(self.base_timestamp)
    }

    /// Checks the header fields a well-formed batch must agree on (counts, deltas, timestamps
    /// are not checked against the records themselves, which may be compressed).
    pub fn check_consistency(&self) -> Result<(), RecordError> {
        if self.record_count < 0 {
            return Err(RecordError::Invalid(format!(
                "negative record count {}",
                self.record_count
            )));
        }
        if self.last_offset_delta < 0 {
            return Err(RecordError::Invalid(format!(
                "negative last offset delta {}",
                self.last_offset_delta
            )));
        }
        if self.record_count > 0 && self.last_offset_delta < self.record_count - 1 {
            return Err(RecordError::Invalid(format!(
                "last offset delta {} cannot hold {} records",
                self.last_offset_delta, self.record_count
            )));
        }
        if let Compression::Unknown(id) = self.compression() {
            return Err(RecordError::Invalid(format!(
                "unknown compression codec id {id}"
            )));
        }
        // The base offset is outside the CRC: it must still leave room for the whole batch.
        let fits = self.base_offset >= 0
            && self
                .base_offset
                .checked_add(i64::from(self.last_offset_delta) + 1)
                .is_some();
        if !fits {
            return Err(RecordError::Invalid(format!(
                "base offset {} with last offset delta {} is out of range",
                self.base_offset, self.last_offset_delta
            )));
        }
        // Uncompressed records take at least MIN_RECORD_BYTES each: a larger count is a lie.
        if self.compression() == Compression::None {
            let records_len = self.total_len() - BATCH_HEADER_LEN;
            if self.record_count as usize > records_len / MIN_RECORD_BYTES {
                return Err(RecordError::Invalid(format!(
                    "{} records cannot fit in {records_len} bytes of records",
                    self.record_count
                )));
            }
        }
        Ok(())
    }
}

/// Validates one whole batch: `buf` must hold exactly one batch whose length field matches,
/// with magic 2, a matching CRC-32C and consistent header fields.
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(buf)?;
    if header.total_len() != buf.len() {
        return Err(if header.total_len() > buf.len() {
            RecordError::Truncated {
                needed: header.total_len(),
                available: buf.len(),
            }
        } else {
            RecordError::Invalid(format!(
                "batch length {} leaves {} trailing bytes",
                header.batch_length,
                buf.len() - header.total_len()
            ))
        });
    }
    let computed = crate::crc32c(&buf[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(RecordError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    header.check_consistency()?;
    Ok(header)
}

/// Iterates over the batches of a buffer of concatenated batches, validating each (see
/// [`verify_batch`]). Stops after the first error.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Batches of `buf`, from its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            position: 0,
            failed: false,
        }
    }

    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    /// The header, the batch's position in the buffer and its bytes.
    type Item = Result<(BatchHeader, usize, &'a [u8]), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.position..];
        let result = BatchHeader::parse(rest).and_then(|header| {
            let len = header.total_len();
            if len > rest.len() {
                return Err(RecordError::Truncated {
                    needed: len,
                    available: rest.len(),
                });
            }
            verify_batch(&rest[..len]).map(|header| (header, len))
        });
        match result {
            Ok((header, len)) => {
                let at = self.position;
                self.position += len;
                Some(Ok((header, at, &rest[..len])))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

/// CRC-32C (Castagnoli), the checksum of the record batch format (and of our own files).
pub fn crc32c(data: &[u8]) -> u32 {
    // The 32-bit CRC comes back widened to u64.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// A CRC-32C computed over data given in pieces.
#[derive(Clone, Debug)]
pub struct Crc32c(crc_fast::Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    /// Adds the next piece.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of every piece so far.
    pub fn finish(&self) -> u32 {
        self.0.finalize() as u32
    }
}

/// The bytes of a batch before its magic byte (base offset, batch length, partition leader
/// epoch): outside the CRC, so a leader can stamp them without touching the rest.
pub const PRE_MAGIC_LEN: usize = MAGIC_AT;

/// Sets the base offset of the batch at the start of `batch` (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the partition leader epoch of the batch at the start of `batch` (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the idempotent-producer fields (producer id, epoch, base sequence) of the batch at the
/// start of `batch` and recomputes the CRC: a producer that starts a partition's sequence over
/// re-stamps the batches it has not sent yet.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crate::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Marks the whole batch `batch` as stamped with the leader's clock: sets the timestamp type to
/// log-append time and the max timestamp to `timestamp_ms`, then recomputes the CRC, as Kafka
/// does for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = read_i16(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crate::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sample() -> Bytes {
        let mut builder = BatchBuilder::new(1_000);
        builder.push(1_000, Some(b"k1"), Some(b"v1"), &[]);
        builder.push(1_005, None, Some(b"v2"), &[("h", Some(b"x"))]);
        builder.build()
    }

    #[test]
    fn crc32c_is_castagnolis_in_one_piece_and_in_many() {
        // The check value of CRC-32C (RFC 3720's iSCSI CRC).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut pieces = Crc32c::default();
        for chunk in data.chunks(4_093) {
            pieces.update(chunk);
        }
        assert_eq!(pieces.finish(), crc32c(&data));
        assert_eq!(Crc32c::default().finish(), crc32c(&[]));
    }

    #[test]
    fn set_producer_restamps_the_batch_and_keeps_it_valid() {
        let mut batch = sample().to_vec();
        set_producer(&mut batch, 42, 3, 7);
        let header = verify_batch(&batch).expect("the CRC is recomputed");
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 7)
        );
        let records = decode_records(&Bytes::from(batch)).unwrap();
        assert_eq!(records.len(), 2, "the records are untouched");
    }

    #[test]
    fn sequences_wrap_at_i32_max_and_a_batch_without_one_has_none() {
        let mut batch = sample().to_vec();
        let plain = verify_batch(&batch).unwrap();
        assert_eq!(
            (plain.sequence_at(0), plain.last_sequence()),
            (NO_SEQUENCE, NO_SEQUENCE)
        );
        set_producer(&mut batch, 1, 0, 10);
        let header = verify_batch(&batch).unwrap();
        assert_eq!((header.sequence_at(1), header.last_sequence()), (11, 11));
        set_producer(&mut batch, 1, 0, i32::MAX);
        let header = verify_batch(&batch).unwrap();
        assert_eq!(
            (header.sequence_at(0), header.last_sequence()),
            (i32::MAX, 0)
        );
    }

    #[test]
    fn built_batch_verifies_and_decodes() {
        let batch = sample();
        let header = verify_batch(&batch).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_005);
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        let records = decode_records(&batch).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].offset, 1);
        assert_eq!(records[1].timestamp, 1_005);
        assert_eq!(records[1].headers[0].key, "h");
    }

    #[test]
    fn every_flipped_bit_under_the_crc_is_detected() {
        let batch = sample();
        for byte in ATTRIBUTES_AT..batch.len() {
            let mut copy = batch.to_vec();
            copy[byte] ^= 0x01;
            let err = verify_batch(&copy).unwrap_err();
            assert!(
                matches!(err, RecordError::CrcMismatch { .. }),
                "byte {byte}: {err}"
            );
        }
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let mut batch = sample().to_vec();
        set_base_offset(&mut batch, 42);
        set_partition_leader_epoch(&mut batch, 7);
        let header = verify_batch(&batch).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        set_log_append_time(&mut batch, 9_999);
        let header = verify_batch(&batch).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 9_999);
    }

    #[test]
    fn truncated_and_old_format_batches_are_refused() {
        let batch = sample();
        for cut in 0..batch.len() {
            assert!(verify_batch(&batch[..cut]).is_err(), "cut at {cut}");
        }
        let mut old = batch.to_vec();
        old[MAGIC_AT] = 1;
        assert_eq!(verify_batch(&old), Err(RecordError::UnsupportedMagic(1)));
    }

    #[test]
    fn batches_iterates_and_stops_at_a_torn_tail() {
        let one = sample();
        let mut buf = one.to_vec();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&one[..20]);
        let mut iter = Batches::new(&buf);
        assert_eq!(iter.next().unwrap().unwrap().1, 0);
        assert_eq!(iter.next().unwrap().unwrap().1, one.len());
        assert!(iter.next().unwrap().is_err());
        assert!(iter.next().is_none());
    }
}
