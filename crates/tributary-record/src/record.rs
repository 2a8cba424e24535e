//! Records inside a batch, compressed or not.

use bytes::Bytes;

use crate::varint::{get_varint, get_varlong};
use crate::{
    BATCH_HEADER_LEN, BatchHeader, Compression, DECOMPRESSED_RECORDS_BYTES_MAX, MIN_RECORD_BYTES,
    RecordError, compression, verify_batch,
};

/// One record, decoded, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset in the partition.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp: i64,
    /// Key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

/// A record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key (UTF-8).
    pub key: String,
    /// Header value, or `None`.
    pub value: Option<Bytes>,
}

/// Decodes the records of one whole batch (verifying it first), decompressing them if the batch
/// is compressed, to at most [`DECOMPRESSED_RECORDS_BYTES_MAX`] bytes. Keys, values and header
/// values share `batch`'s memory (or, compressed, the decompressed records' memory).
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, RecordError> {
    decode_records_with_limit(batch, DECOMPRESSED_RECORDS_BYTES_MAX)
}

/// [`decode_records`], with compressed records allowed to inflate to at most
/// `decompressed_bytes_max` bytes ([`RecordError::DecompressedTooLarge`] past that). The limit
/// does not apply to an uncompressed batch, which is already in memory.
pub fn decode_records_with_limit(
    batch: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<Record>, RecordError> {
    let header = verify_batch(batch)?;
    decode_verified(batch, &header, decompressed_bytes_max)
}

/// [`decode_records`] of a batch already checked by [`verify_batch`] (or [`crate::Batches`],
/// which verifies each batch it yields), whose `header` that returned: the CRC is not computed
/// a second time.
pub fn decode_verified_records(
    batch: &Bytes,
    header: &BatchHeader,
) -> Result<Vec<Record>, RecordError> {
    decode_verified(batch, header, DECOMPRESSED_RECORDS_BYTES_MAX)
}

fn decode_verified(
    batch: &Bytes,
    header: &BatchHeader,
    decompressed_bytes_max: usize,
) -> Result<Vec<Record>, RecordError> {
    let codec = header.compression();
    let records_bytes = if codec == Compression::None {
        batch.slice(BATCH_HEADER_LEN..)
    } else {
        let plain =
            compression::decompress(codec, &batch[BATCH_HEADER_LEN..], decompressed_bytes_max)?;
        // The check `verify_batch` can only make on uncompressed batches.
        if header.record_count as usize > plain.len() / MIN_RECORD_BYTES {
            return Err(RecordError::Invalid(format!(
                "{} records cannot fit in {} bytes of decompressed records",
                header.record_count,
                plain.len()
            )));
        }
        Bytes::from(plain)
    };
    let mut records = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let mut rest = &records_bytes[..];
    for _ in 0..header.record_count {
        let length = get_varint(&mut rest)?;
        let length = usize::try_from(length)
            .map_err(|_| RecordError::Invalid(format!("negative record length {length}")))?;
        if length > rest.len() {
            return Err(RecordError::Invalid(format!(
                "record of {length} bytes runs past the end of the batch"
            )));
        }
        let (mut body, tail) = rest.split_at(length);
        rest = tail;
        let _attributes = take(&mut body, 1)?;
        let timestamp_delta = get_varlong(&mut body)?;
        let offset_delta = get_varint(&mut body)?;
        if offset_delta < 0 || offset_delta > header.last_offset_delta {
            return Err(RecordError::Invalid(format!(
                "offset delta {offset_delta} outside the batch (last delta {})",
                header.last_offset_delta
            )));
        }
        let key = nullable(&records_bytes, &mut body)?;
        let value = nullable(&records_bytes, &mut body)?;
        let header_count = get_varint(&mut body)?;
        if header_count < 0 {
            return Err(RecordError::Invalid(format!(
                "negative header count {header_count}"
            )));
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(64));
        for _ in 0..header_count {
            let key = nullable(&records_bytes, &mut body)?
                .ok_or_else(|| RecordError::Invalid("null header key".into()))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| RecordError::Invalid("header key is not UTF-8".into()))?;
            let value = nullable(&records_bytes, &mut body)?;
            headers.push(Header { key, value });
        }
        if !body.is_empty() {
            return Err(RecordError::Invalid(format!(
                "{} unread bytes at the end of a record",
                body.len()
            )));
        }
        records.push(Record {
            offset: header.base_offset + i64::from(offset_delta),
            timestamp: header.base_timestamp + timestamp_delta,
            key,
            value,
            headers,
        });
    }
    if !rest.is_empty() {
        return Err(RecordError::Invalid(format!(
            "{} bytes after the last of {} records",
            rest.len(),
            header.record_count
        )));
    }
    Ok(records)
}

fn take<'a>(body: &mut &'a [u8], n: usize) -> Result<&'a [u8], RecordError> {
    if body.len() < n {
        return Err(RecordError::Invalid("record runs past its length".into()));
    }
    let (head, tail) = body.split_at(n);
    *body = tail;
    Ok(head)
}

/// Reads a varint-length-prefixed byte string (-1 = null) as a slice of `records`, the records
/// section `body` lies in.
fn nullable(records: &Bytes, body: &mut &[u8]) -> Result<Option<Bytes>, RecordError> {
    let len = get_varint(body)?;
    if len < 0 {
        return Ok(None);
    }
    let slice = take(body, len as usize)?;
    Ok(Some(records.slice_ref(slice)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ATTRIBUTES_AT, BatchBuilder, CRC_AT, set_base_offset, set_log_append_time};
    use proptest::prelude::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sample(codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(1_700_000_000_000)
            .producer(42, 3, 7)
            .compression(codec);
        builder.push(1_700_000_000_000, Some(b"k1"), Some(b"v1"), &[]);
        builder.push(
            1_700_000_000_005,
            None,
            Some(b"v2"),
            &[("h", Some(b"x")), ("n", None)],
        );
        builder.push(1_699_999_999_999, Some(b""), None, &[]);
        builder.build()
    }

    /// Rewrites the records section of `batch` and fixes its length and CRC, as a (buggy or
    /// hostile) producer could.
    fn with_records(batch: &[u8], records: &[u8]) -> Bytes {
        let mut out = batch[..BATCH_HEADER_LEN].to_vec();
        out.extend_from_slice(records);
        let length = (out.len() - crate::LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crate::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    #[test]
    fn uncompressed_batches_are_byte_for_byte_what_they_were() {
        // Built by this crate before compression existed.
        assert_eq!(
            sample(Compression::None)[..],
            hex(concat!(
                "000000000000000000000053ffffffff02cd5d929d0000000000020000018bcfe568000000018bcf",
                "e56805000000000000002a0003000000070000000314000000046b31047631001e000a0201047632",
                "0402680278026e010c000104000100"
            ))
        );
        assert_eq!(
            BatchBuilder::new(5).build()[..],
            hex(concat!(
                "000000000000000000000031ffffffff029ec63e4b00000000000000000000000000050000000000",
                "000005ffffffffffffffffffffffffffff00000000"
            ))
        );
    }

    #[test]
    fn every_codec_round_trips_through_builder_and_decoder() {
        let expected = decode_records(&sample(Compression::None)).unwrap();
        assert_eq!(expected.len(), 3);
        for codec in CODECS {
            let batch = sample(codec);
            let header = verify_batch(&batch).unwrap();
            assert_eq!(header.compression(), codec);
            assert_eq!(header.attributes, i16::from(codec.id()));
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.max_timestamp, 1_700_000_000_005);
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, 7);
            assert_eq!(decode_records(&batch).unwrap(), expected, "{codec:?}");
        }
    }

    #[test]
    fn compressed_batches_survive_the_leaders_patches() {
        for codec in CODECS {
            let mut batch = sample(codec).to_vec();
            set_base_offset(&mut batch, 100);
            set_log_append_time(&mut batch, 1_800_000_000_000);
            let header = verify_batch(&batch).unwrap();
            assert_eq!(header.compression(), codec, "the codec bits survive");
            let records = decode_records(&Bytes::from(batch)).unwrap();
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [100, 101, 102], "{codec:?}");
        }
    }

    #[test]
    fn large_batches_compress_and_round_trip() {
        for codec in CODECS {
            let mut builder = BatchBuilder::new(0).compression(codec);
            for i in 0..2_000 {
                let value = format!("value {i} of a batch large enough for many blocks").repeat(8);
                builder.push(
                    i,
                    Some(format!("key-{i}").as_bytes()),
                    Some(value.as_bytes()),
                    &[],
                );
            }
            let batch = builder.build();
            if codec != Compression::None {
                assert!(
                    batch.len() < builder.size_bytes() / 4,
                    "{codec:?}: {}",
                    batch.len()
                );
            }
            let records = decode_records(&batch).unwrap();
            assert_eq!(records.len(), 2_000);
            assert_eq!(records[1_999].offset, 1_999);
            assert_eq!(records[1_999].key.as_deref(), Some(&b"key-1999"[..]));
        }
    }

    #[test]
    fn a_decompression_bomb_batch_is_refused() {
        for codec in CODECS {
            let mut builder = BatchBuilder::new(0).compression(codec);
            builder.push(0, None, Some(&vec![0; 4 << 20]), &[]);
            let batch = builder.build();
            let result = decode_records_with_limit(&batch, 1 << 20);
            if codec == Compression::None {
                // Nothing to inflate: the batch is already in memory.
                assert_eq!(result.unwrap().len(), 1);
            } else {
                assert!(batch.len() < 1 << 20, "{codec:?}");
                assert_eq!(
                    result,
                    Err(RecordError::DecompressedTooLarge {
                        codec,
                        limit: 1 << 20
                    })
                );
                assert_eq!(decode_records(&batch).unwrap().len(), 1);
            }
        }
    }

    #[test]
    fn corrupt_compressed_records_are_an_error_even_under_a_valid_crc() {
        for codec in &CODECS[1..] {
            let batch = sample(*codec);
            let compressed = &batch[BATCH_HEADER_LEN..];
            // Cut short, damaged, replaced by garbage: errors, never a panic or wrong records.
            for cut in 0..compressed.len() {
                let bad = with_records(&batch, &compressed[..cut]);
                assert!(decode_records(&bad).is_err(), "{codec:?} cut at {cut}");
            }
            for at in 0..compressed.len() {
                let mut damaged = compressed.to_vec();
                damaged[at] ^= 0xa5;
                let bad = with_records(&batch, &damaged);
                if let Ok(records) = decode_records(&bad) {
                    // Only possible where the damage hit literal bytes of a checksum-less codec.
                    assert_eq!(records.len(), 3);
                }
            }
            let garbage = with_records(&batch, b"\xff\xfe garbage, not compressed");
            assert!(matches!(
                decode_records(&garbage),
                Err(RecordError::Codec { .. })
            ));
        }
    }

    #[test]
    fn a_record_count_the_decompressed_records_cannot_hold_is_refused() {
        let batch = sample(Compression::Zstd);
        let mut lie = batch.to_vec();
        lie[crate::RECORD_COUNT_AT..crate::RECORD_COUNT_AT + 4]
            .copy_from_slice(&1_000_000i32.to_be_bytes());
        lie[crate::LAST_OFFSET_DELTA_AT..crate::LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&999_999i32.to_be_bytes());
        let lie = with_records(&lie, &batch[BATCH_HEADER_LEN..]);
        assert!(matches!(
            decode_records(&lie),
            Err(RecordError::Invalid(message)) if message.contains("cannot fit")
        ));
    }

    #[test]
    fn an_undefined_codec_is_refused() {
        // verify_batch already refuses codec ids 5-7, before any decompression is tried.
        let mut batch = sample(Compression::None).to_vec();
        batch[ATTRIBUTES_AT + 1] |= 5;
        let batch = with_records(&batch, &sample(Compression::None)[BATCH_HEADER_LEN..]);
        assert_eq!(
            decode_records(&batch),
            Err(RecordError::Invalid(
                "unknown compression codec id 5".into()
            ))
        );
    }

    #[test]
    #[should_panic(expected = "no batch can be compressed with unknown(6)")]
    fn the_builder_refuses_an_undefined_codec() {
        let _ = BatchBuilder::new(0).compression(Compression::Unknown(6));
    }

    type RecordSpec = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn record_spec() -> impl Strategy<Value = RecordSpec> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..200);
        (
            -1_000i64..1_000,
            proptest::option::of(bytes.clone()),
            proptest::option::of(bytes.clone()),
            proptest::collection::vec(("[a-z]{0,8}", proptest::option::of(bytes)), 0..3),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_records_round_trip_with_any_codec(
            specs in proptest::collection::vec(record_spec(), 0..20),
            codec in 0..5usize,
        ) {
            let codec = CODECS[codec];
            let mut builder = BatchBuilder::new(1_000).compression(codec);
            for (delta, key, value, headers) in &specs {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                builder.push(1_000 + delta, key.as_deref(), value.as_deref(), &headers);
            }
            let records = decode_records(&builder.build()).unwrap();
            prop_assert_eq!(records.len(), specs.len());
            for (i, (record, (delta, key, value, headers))) in records.iter().zip(&specs).enumerate() {
                prop_assert_eq!(record.offset, i as i64);
                prop_assert_eq!(record.timestamp, 1_000 + delta);
                prop_assert_eq!(record.key.as_deref(), key.as_deref());
                prop_assert_eq!(record.value.as_deref(), value.as_deref());
                prop_assert_eq!(record.headers.len(), headers.len());
                for (got, (k, v)) in record.headers.iter().zip(headers) {
                    prop_assert_eq!(&got.key, k);
                    prop_assert_eq!(got.value.as_deref(), v.as_deref());
                }
            }
        }
    }
}
