//! Rewriting a batch with a subset of its records, as compaction does: the records section
//! split into located records ([`RecordSpan`]), a batch rebuilt from the records kept
//! ([`rewrite_batch`]) and a batch kept without records ([`empty_batch`]).
//!
//! A rewritten batch keeps its base offset, last offset delta, partition leader epoch, producer
//! id, epoch and base sequence, codec and timestamp type, and gets a new CRC; its records keep
//! their offset deltas (so its offsets may have gaps).

use crate::varint::{put_varint, put_varlong, read_varint_at, read_varlong_at};
use crate::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, BatchHeader, COMPRESSION_MASK, CRC_AT,
    DECOMPRESSED_RECORDS_BYTES_MAX, DELETE_HORIZON_BIT, LENGTH_AT, LOG_OVERHEAD, MAGIC_V2,
    NO_TIMESTAMP, RecordError, TimestampType, compression,
};

/// One record of a (decompressed) records section, located by byte positions in that section.
#[derive(Debug, Clone, Copy)]
pub struct RecordSpan {
    /// The whole record, its length prefix included.
    start: usize,
    end: usize,
    /// Position of the record's attributes byte.
    attributes_at: usize,
    /// Position of the key length: everything from here to `end` is copied unchanged.
    rest_at: usize,
    key: Option<(usize, usize)>,
    /// The record's timestamp minus the batch's base timestamp.
    pub timestamp_delta: i64,
    /// The record's offset minus the batch's base offset.
    pub offset_delta: i32,
    /// A tombstone: the value is null.
    pub value_is_null: bool,
}

impl RecordSpan {
    /// The record's key in `section` (the section the span was split from); `None` if null.
    #[inline]
    pub fn key<'a>(&self, section: &'a [u8]) -> Option<&'a [u8]> {
        self.key.map(|(from, to)| &section[from..to])
    }

    /// Whether the record has a key (not null).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }
}

/// The records section of `batch` (whose header is `header`), decompressed into `buf` if it is
/// compressed (bounded by [`DECOMPRESSED_RECORDS_BYTES_MAX`]).
pub fn records_section<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], RecordError> {
    if header.compression() == crate::Compression::None || header.record_count == 0 {
        return Ok(&batch[BATCH_HEADER_LEN..]);
    }
    *buf = compression::decompress(
        header.compression(),
        &batch[BATCH_HEADER_LEN..],
        DECOMPRESSED_RECORDS_BYTES_MAX,
    )?;
    Ok(buf)
}

/// Splits a (decompressed) records section into its `header.record_count` records, checking
/// each one's framing and offset delta, into `out` (cleared first; reused to avoid allocating
/// per batch).
pub fn split_records(
    section: &[u8],
    header: &BatchHeader,
    out: &mut Vec<RecordSpan>,
) -> Result<(), RecordError> {
    out.clear();
    let invalid = |what: String| RecordError::Invalid(what);
    let mut position = 0usize;
    for i in 0..header.record_count {
        let start = position;
        let length = read_varint_at(section, &mut position, section.len())?;
        let length = usize::try_from(length)
            .map_err(|_| invalid(format!("record {i} has negative length {length}")))?;
        let body_start = position;
        let end = body_start
            .checked_add(length)
            .filter(|&end| end <= section.len())
            .ok_or_else(|| invalid(format!("record {i} runs past the end of the batch")))?;
        if length == 0 {
            return Err(invalid(format!("record {i} is empty")));
        }
        let attributes_at = body_start;
        let mut at = body_start + 1;
        let timestamp_delta = read_varlong_at(section, &mut at, end, 10)?;
        let offset_delta = read_varint_at(section, &mut at, end)?;
        if offset_delta < 0 || offset_delta > header.last_offset_delta {
            return Err(invalid(format!(
                "record {i} has offset delta {offset_delta} outside the batch (last delta {})",
                header.last_offset_delta
            )));
        }
        let rest_at = at;
        let key_len = read_varint_at(section, &mut at, end)?;
        let key = if key_len < 0 {
            None
        } else {
            let key_start = at;
            at = key_start
                .checked_add(key_len as usize)
                .filter(|&e| e <= end)
                .ok_or_else(|| invalid(format!("record {i}'s key runs past the record")))?;
            Some((key_start, at))
        };
        let value_len = read_varint_at(section, &mut at, end)?;
        if value_len >= 0 && value_len as usize > end - at {
            return Err(invalid(format!("record {i}'s value runs past the record")));
        }
        out.push(RecordSpan {
            start,
            end,
            attributes_at,
            rest_at,
            key,
            timestamp_delta,
            offset_delta,
            value_is_null: value_len < 0,
        });
        position = end;
    }
    if position != section.len() {
        return Err(invalid(format!(
            "{} bytes after the last of {} records",
            section.len() - position,
            header.record_count
        )));
    }
    Ok(())
}

/// A batch with `header`'s fields and no records: uncompressed (no codec frames nothing),
/// without a delete horizon, both timestamps the batch's max timestamp (Kafka's
/// `writeEmptyHeader`), the last offset delta kept so the producer's last sequence stays.
pub fn empty_batch(header: &BatchHeader) -> Vec<u8> {
    let attributes = header.attributes & !COMPRESSION_MASK & !DELETE_HORIZON_BIT;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN);
    write_header(
        &mut out,
        header,
        attributes,
        header.max_timestamp,
        header.max_timestamp,
        0,
    );
    finish_batch(&mut out);
    out
}

/// Where [`rewrite_batch`] writes: the batch, and two scratch buffers (kept by the caller so a
/// pass over many batches allocates nothing per batch).
#[derive(Debug)]
pub struct RewriteBuffers<'a> {
    /// The rewritten batch.
    pub out: &'a mut Vec<u8>,
    /// The kept records, uncompressed.
    pub plain: &'a mut Vec<u8>,
    /// One re-encoded record.
    pub record: &'a mut Vec<u8>,
}

/// Rebuilds the batch of `header` and `section` (its records section, decompressed, split into
/// `records`) with only the records flagged non-zero in `keep`, in the batch's codec, with a
/// delete horizon (KIP-534: attribute bit 6, the horizon in the base timestamp field, the
/// records' timestamp deltas re-based so every record keeps its timestamp) if `horizon` is given.
/// Returns the horizon the batch got: `None` if the records' timestamps cannot be re-based on it
/// without overflow (the caller's tombstones then stay). The max timestamp is recomputed from
/// the kept records, except for log-append-time batches.
pub fn rewrite_batch(
    header: &BatchHeader,
    section: &[u8],
    records: &[RecordSpan],
    keep: &[u8],
    horizon: Option<i64>,
    buffers: RewriteBuffers<'_>,
) -> Result<Option<i64>, RecordError> {
    let RewriteBuffers {
        out,
        plain,
        record: body,
    } = buffers;
    let kept = || {
        records
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k != 0)
            .map(|(r, _)| r)
    };
    let timestamp = |r: &RecordSpan| header.base_timestamp.checked_add(r.timestamp_delta);
    let first = kept()
        .next()
        .ok_or_else(|| RecordError::Invalid("no record to rebuild a batch from".into()))?;
    let overflow = || RecordError::Invalid("record timestamp overflows".into());
    let rebase =
        |base: i64| kept().all(|r| timestamp(r).and_then(|t| t.checked_sub(base)).is_some());
    let (base_timestamp, horizon) = match horizon {
        Some(h) if rebase(h) => (h, Some(h)),
        _ => {
            let first_timestamp = timestamp(first).ok_or_else(overflow)?;
            if rebase(first_timestamp) {
                (first_timestamp, None)
            } else {
                (header.base_timestamp, None)
            }
        }
    };
    let max_timestamp = if header.timestamp_type() == TimestampType::LogAppendTime {
        header.max_timestamp
    } else {
        kept().filter_map(timestamp).max().unwrap_or(NO_TIMESTAMP)
    };
    plain.clear();
    for record in kept() {
        if base_timestamp == header.base_timestamp {
            plain.extend_from_slice(&section[record.start..record.end]);
            continue;
        }
        let delta = timestamp(record)
            .and_then(|t| t.checked_sub(base_timestamp))
            .ok_or_else(overflow)?;
        body.clear();
        body.push(section[record.attributes_at]);
        put_varlong(body, delta);
        put_varint(body, record.offset_delta);
        body.extend_from_slice(&section[record.rest_at..record.end]);
        put_varint(plain, body.len() as i32);
        plain.extend_from_slice(body);
    }
    let mut attributes = header.attributes & !DELETE_HORIZON_BIT;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_BIT;
    }
    out.clear();
    write_header(
        out,
        header,
        attributes,
        base_timestamp,
        max_timestamp,
        kept().count() as i32,
    );
    if header.compression() == crate::Compression::None {
        out.extend_from_slice(plain);
    } else {
        out.extend_from_slice(&compression::compress(header.compression(), plain)?);
    }
    if out.len() - LOG_OVERHEAD > i32::MAX as usize {
        return Err(RecordError::Invalid("rebuilt batch too large".into()));
    }
    finish_batch(out);
    Ok(horizon)
}

/// Writes the 61 header bytes of a batch with `header`'s offsets, epoch and producer fields
/// (length and CRC left for [`finish_batch`]).
fn write_header(
    out: &mut Vec<u8>,
    header: &BatchHeader,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    record_count: i32,
) {
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&record_count.to_be_bytes());
}

/// Fills in the batch length and the CRC-32C of a batch whose bytes are all in `out`.
fn finish_batch(out: &mut [u8]) {
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crate::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Compression, decode_records, verify_batch};
    use bytes::Bytes;

    fn batch(codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(1_000)
            .producer(7, 2, 100)
            .compression(codec);
        builder.push(1_000, Some(b"a"), Some(b"1"), &[("h", Some(b"x"))]);
        builder.push(1_005, Some(b"b"), None, &[]);
        builder.push(990, Some(b"c"), Some(b"3"), &[]);
        let mut batch = builder.build().to_vec();
        crate::set_base_offset(&mut batch, 500);
        crate::set_partition_leader_epoch(&mut batch, 4);
        Bytes::from(batch)
    }

    #[test]
    fn rebuilt_batches_keep_offsets_producer_fields_and_timestamps() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let original = batch(codec);
            let header = verify_batch(&original).unwrap();
            let mut plain = Vec::new();
            let section = records_section(&original, &header, &mut plain).unwrap();
            let mut records = Vec::new();
            split_records(section, &header, &mut records).unwrap();
            for (keep, horizon) in [
                ([0u8, 1, 1], None),
                ([0, 1, 0], Some(50_000)),
                ([1, 0, 1], None),
            ] {
                let (mut out, mut plain, mut record) = (Vec::new(), Vec::new(), Vec::new());
                let buffers = RewriteBuffers {
                    out: &mut out,
                    plain: &mut plain,
                    record: &mut record,
                };
                let got =
                    rewrite_batch(&header, section, &records, &keep, horizon, buffers).unwrap();
                assert_eq!(got, horizon);
                let rebuilt = verify_batch(&out).unwrap();
                assert_eq!(rebuilt.base_offset, 500);
                assert_eq!(rebuilt.last_offset_delta, 2);
                assert_eq!(rebuilt.partition_leader_epoch, 4);
                assert_eq!(
                    (
                        rebuilt.producer_id,
                        rebuilt.producer_epoch,
                        rebuilt.base_sequence
                    ),
                    (7, 2, 100)
                );
                assert_eq!(rebuilt.compression(), codec);
                assert_eq!(rebuilt.has_delete_horizon(), horizon.is_some());
                if let Some(h) = horizon {
                    assert_eq!(rebuilt.base_timestamp, h);
                    assert_eq!(rebuilt.delete_horizon_ms(), Some(h));
                }
                let decoded = decode_records(&Bytes::from(out.clone())).unwrap();
                let all = decode_records(&original).unwrap();
                let expected: Vec<_> = all
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k != 0)
                    .map(|(r, _)| r.clone())
                    .collect();
                assert_eq!(decoded, expected, "{codec} {keep:?}");
                assert_eq!(
                    rebuilt.max_timestamp,
                    expected.iter().map(|r| r.timestamp).max().unwrap()
                );
            }
        }
    }

    #[test]
    fn empty_batches_keep_the_producer_and_offset_range() {
        let original = batch(Compression::Zstd);
        let header = verify_batch(&original).unwrap();
        let empty = empty_batch(&header);
        let parsed = verify_batch(&empty).unwrap();
        assert_eq!(parsed.record_count, 0);
        assert_eq!(parsed.next_offset(), header.next_offset());
        assert_eq!((parsed.producer_id, parsed.base_sequence), (7, 100));
        assert_eq!(parsed.compression(), Compression::None);
        assert!(!parsed.has_delete_horizon());
        assert!(decode_records(&Bytes::from(empty)).unwrap().is_empty());
    }

    #[test]
    fn split_records_locates_keys_values_and_deltas() {
        let original = batch(Compression::Lz4);
        let header = verify_batch(&original).unwrap();
        let mut plain = Vec::new();
        let section = records_section(&original, &header, &mut plain).unwrap();
        let mut records = Vec::new();
        split_records(section, &header, &mut records).unwrap();
        let keys: Vec<_> = records.iter().map(|r| r.key(section).unwrap()).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
        let deltas: Vec<_> = records
            .iter()
            .map(|r| (r.offset_delta, r.timestamp_delta, r.value_is_null))
            .collect();
        assert_eq!(deltas, [(0, 0, false), (1, 5, true), (2, -10, false)]);
        // Every cut of the section is refused, never a panic.
        for cut in 0..section.len() {
            assert!(split_records(&section[..cut], &header, &mut records).is_err());
        }
    }
}
