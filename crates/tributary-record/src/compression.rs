//! Kafka's record-batch compression codecs, byte-compatible with Kafka's clients.
//!
//! A compressed v2 batch keeps its 61-byte header as it is and compresses only the records
//! section; the CRC-32C covers the compressed bytes. Each codec is written as Kafka's Java client
//! writes it, and read as Kafka's clients (Java and librdkafka) read it:
//!
//! | codec | id | written as | also read |
//! |---|---|---|---|
//! | gzip | 1 | one gzip member, level 6 | concatenated members |
//! | snappy | 2 | snappy-java's (Xerial) framing, 32 KiB chunks | concatenated Xerial streams, plain (unframed) snappy as librdkafka writes it |
//! | lz4 | 3 | one LZ4 frame: 64 KiB independent blocks, no checksums (as Kafka's `Lz4BlockOutputStream`) | any LZ4 frame (linked blocks, checksums, content size), concatenated frames |
//! | zstd | 4 | one zstd frame, level 3, with its content size | concatenated and skippable frames |
//!
//! Decompression is bounded: [`decompress`] stops and fails as soon as the output would pass
//! `max_size`, and its buffer never grows past `max_size`, so a small batch that inflates to
//! gigabytes (a decompression bomb) costs at most `max_size` bytes of output memory. Corrupt or
//! truncated input is an error, never a panic.
//!
//! ```
//! use tributary_record::Compression;
//! use tributary_record::compression::{compress, decompress};
//! let records = b"the records section of a batch".repeat(10);
//! for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
//!     let compressed = compress(codec, &records).unwrap();
//!     assert_eq!(decompress(codec, &compressed, 1 << 20).unwrap(), records);
//! }
//! ```

use std::io::{Read, Write};

use crate::{Compression, RecordError};

/// gzip level Kafka uses by default (`compression.gzip.level` = -1, zlib's default).
const GZIP_LEVEL: u32 = 6;
/// zstd level Kafka uses by default (`compression.zstd.level`).
const ZSTD_LEVEL: i32 = 3;
/// Uncompressed bytes per Xerial chunk: snappy-java's default block size, which Kafka uses.
const XERIAL_CHUNK_BYTES: usize = 32 * 1024;
/// The magic that starts a snappy-java (Xerial) stream.
pub const XERIAL_MAGIC: [u8; 8] = *b"\x82SNAPPY\x00";
/// Magic, then the format version and the minimum compatible version (big-endian `i32`s).
const XERIAL_HEADER_LEN: usize = 16;
/// Version and minimum compatible version snappy-java writes.
const XERIAL_VERSION: i32 = 1;
const XERIAL_COMPATIBLE_VERSION: i32 = 1;

/// Compresses `data` (the records section of a batch) with `codec`, as Kafka's Java producer
/// would. [`Compression::None`] returns a copy; [`Compression::Unknown`] is
/// [`RecordError::UnsupportedCompression`].
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => gzip_compress(data).map_err(codec_error(codec)),
        Compression::Snappy => snappy_compress(data),
        Compression::Lz4 => lz4_compress(data),
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).map_err(codec_error(codec)),
        Compression::Unknown(_) => Err(RecordError::UnsupportedCompression(codec)),
    }
}

/// Decompresses `data` compressed with `codec`, producing at most `max_size` bytes: a larger
/// output is [`RecordError::DecompressedTooLarge`], found before more than `max_size` bytes are
/// held. Corrupt or truncated input is [`RecordError::Codec`]. [`Compression::None`] returns a
/// copy (bounded the same way); [`Compression::Unknown`] is
/// [`RecordError::UnsupportedCompression`].
pub fn decompress(
    codec: Compression,
    data: &[u8],
    max_size: usize,
) -> Result<Vec<u8>, RecordError> {
    // A first guess at the output size; the output grows past it only as far as max_size.
    let capacity = data.len().saturating_mul(2).min(max_size);
    // These codecs never write nothing (not even for no data); Kafka's readers refuse it too.
    if data.is_empty()
        && matches!(
            codec,
            Compression::Gzip | Compression::Lz4 | Compression::Zstd
        )
    {
        return Err(RecordError::Codec {
            codec,
            message: "no compressed data".into(),
        });
    }
    match codec {
        Compression::None => {
            if data.len() > max_size {
                return Err(too_large(codec, max_size));
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => {
            let mut out = Vec::with_capacity(capacity);
            let decoder = flate2::read::MultiGzDecoder::new(data);
            read_bounded(codec, decoder, &mut out, max_size)?;
            Ok(out)
        }
        Compression::Snappy => snappy_decompress(data, max_size),
        Compression::Lz4 => {
            let mut out = Vec::with_capacity(capacity);
            // lz4_flex stops after one frame: decode the frames one by one.
            for frame in lz4_frames(data)? {
                let mut rest = frame;
                read_bounded(
                    codec,
                    lz4_flex::frame::FrameDecoder::new(&mut rest),
                    &mut out,
                    max_size,
                )?;
                if !rest.is_empty() {
                    return Err(RecordError::Codec {
                        codec,
                        message: format!("{} bytes left in an LZ4 frame", rest.len()),
                    });
                }
            }
            Ok(out)
        }
        Compression::Zstd => {
            // zstd also bounds its window (the memory a frame may ask for) to 128 MiB by
            // default (window log 27), enough for every level Kafka producers use.
            let decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(codec_error(codec))?;
            let mut out = Vec::with_capacity(capacity);
            read_bounded(codec, decoder, &mut out, max_size)?;
            Ok(out)
        }
        Compression::Unknown(_) => Err(RecordError::UnsupportedCompression(codec)),
    }
}

/// Appends all `reader` gives to `out`, failing as soon as `out` would pass `max_size` bytes.
fn read_bounded(
    codec: Compression,
    mut reader: impl Read,
    out: &mut Vec<u8>,
    max_size: usize,
) -> Result<(), RecordError> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(codec_error(codec)(err)),
        };
        if n > max_size - out.len() {
            return Err(too_large(codec, max_size));
        }
        reserve_bounded(out, n, max_size);
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Makes room for `additional` more bytes in `out` (which must fit in `max_size`), doubling the
/// buffer as `Vec` does but never past `max_size`.
fn reserve_bounded(out: &mut Vec<u8>, additional: usize, max_size: usize) {
    debug_assert!(out.len() + additional <= max_size);
    if out.capacity() - out.len() < additional {
        let target = out
            .capacity()
            .saturating_mul(2)
            .clamp(out.len() + additional, max_size);
        out.reserve_exact(target - out.len());
    }
}

fn gzip_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 32),
        flate2::Compression::new(GZIP_LEVEL),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

fn lz4_compress(data: &[u8]) -> Result<Vec<u8>, RecordError> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    // Kafka's Lz4BlockInputStream refuses linked blocks; it reads content size and checksums,
    // but its writer sets none, and neither do we.
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(false)
        .content_size(None);
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2 + 32));
    encoder
        .write_all(data)
        .map_err(codec_error(Compression::Lz4))?;
    encoder.finish().map_err(codec_error(Compression::Lz4))
}

/// Splits `data` into whole LZ4 frames. lz4_flex takes the end of its input for the end of a
/// frame, even without the frame's end mark, where Kafka's reader reports a stream that ended too
/// early, and it stops after one frame; the frames' contents are left to lz4_flex to check.
fn lz4_frames(data: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    const MAGIC: u32 = 0x184D_2204;
    const FLG_DICTIONARY_ID: u8 = 0x01;
    const FLG_CONTENT_CHECKSUM: u8 = 0x04;
    const FLG_CONTENT_SIZE: u8 = 0x08;
    const FLG_BLOCK_CHECKSUMS: u8 = 0x10;
    const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

    fn skip<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], RecordError> {
        if rest.len() < n {
            return Err(RecordError::Codec {
                codec: Compression::Lz4,
                message: "LZ4 frame ended early".into(),
            });
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn u32_le(rest: &mut &[u8]) -> Result<u32, RecordError> {
        let bytes = skip(rest, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    let mut frames = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let start = data.len() - rest.len();
        if u32_le(&mut rest)? != MAGIC {
            return Err(RecordError::Codec {
                codec: Compression::Lz4,
                message: "not an LZ4 frame (bad magic)".into(),
            });
        }
        let flg = skip(&mut rest, 2)?[0]; // FLG, then BD
        let mut descriptor_tail = 1; // header checksum
        if flg & FLG_CONTENT_SIZE != 0 {
            descriptor_tail += 8;
        }
        if flg & FLG_DICTIONARY_ID != 0 {
            descriptor_tail += 4;
        }
        skip(&mut rest, descriptor_tail)?;
        let block_checksum_len = if flg & FLG_BLOCK_CHECKSUMS != 0 { 4 } else { 0 };
        loop {
            let block = u32_le(&mut rest)?;
            if block == 0 {
                break; // end mark
            }
            let len = (block & !BLOCK_UNCOMPRESSED) as usize;
            skip(&mut rest, len.saturating_add(block_checksum_len))?;
        }
        if flg & FLG_CONTENT_CHECKSUM != 0 {
            skip(&mut rest, 4)?;
        }
        frames.push(&data[start..data.len() - rest.len()]);
    }
    Ok(frames)
}

/// snappy-java's stream format: [`XERIAL_MAGIC`], version and compatible version (big-endian
/// `i32`s), then chunks, each a big-endian `i32` length and one raw snappy block.
fn snappy_compress(data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 32);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_COMPATIBLE_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    let mut block = vec![0; snap::raw::max_compress_len(XERIAL_CHUNK_BYTES)];
    for chunk in data.chunks(XERIAL_CHUNK_BYTES) {
        let len = encoder
            .compress(chunk, &mut block)
            .map_err(codec_error(Compression::Snappy))?;
        // A 32 KiB chunk compresses to well under 2 GiB.
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&block[..len]);
    }
    Ok(out)
}

/// Xerial-framed snappy when `data` starts with a whole Xerial header (as snappy-java and
/// librdkafka decide), plain snappy otherwise.
fn snappy_decompress(data: &[u8], max_size: usize) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    // snappy-java reads an empty stream as empty.
    if data.is_empty() {
        return Ok(out);
    }
    if !(data.len() >= XERIAL_HEADER_LEN && data.starts_with(&XERIAL_MAGIC)) {
        snappy_block(data, &mut out, max_size)?;
        return Ok(out);
    }
    // The version fields are not checked: every snappy-java version writes 1 and 1, and
    // librdkafka ignores them too.
    let mut rest = &data[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        // snappy-java reads concatenated streams: a header may follow any chunk. A chunk length
        // never starts with 0x82 (it would be negative), so the two cannot be confused.
        if rest.starts_with(&XERIAL_MAGIC) {
            if rest.len() < XERIAL_HEADER_LEN {
                return Err(snappy_error("truncated Xerial header"));
            }
            rest = &rest[XERIAL_HEADER_LEN..];
            continue;
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(snappy_error("truncated Xerial chunk length"));
        };
        let len = i32::from_be_bytes(*len);
        let len = usize::try_from(len)
            .map_err(|_| snappy_error(&format!("negative Xerial chunk length {len}")))?;
        if len > tail.len() {
            return Err(snappy_error(&format!(
                "Xerial chunk of {len} bytes runs past the end ({} left)",
                tail.len()
            )));
        }
        let (block, tail) = tail.split_at(len);
        snappy_block(block, &mut out, max_size)?;
        rest = tail;
    }
    Ok(out)
}

/// Appends the decompressed raw snappy `block` to `out`, keeping `out` within `max_size`.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, max_size: usize) -> Result<(), RecordError> {
    // The block states its decompressed length up front: check it before allocating.
    let len = snap::raw::decompress_len(block).map_err(codec_error(Compression::Snappy))?;
    if len > max_size - out.len() {
        return Err(too_large(Compression::Snappy, max_size));
    }
    let start = out.len();
    reserve_bounded(out, len, max_size);
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(codec_error(Compression::Snappy))?;
    out.truncate(start + written);
    Ok(())
}

fn codec_error<E: std::fmt::Display>(codec: Compression) -> impl Fn(E) -> RecordError {
    move |err| RecordError::Codec {
        codec,
        message: err.to_string(),
    }
}

fn snappy_error(message: &str) -> RecordError {
    RecordError::Codec {
        codec: Compression::Snappy,
        message: message.to_owned(),
    }
}

fn too_large(codec: Compression, max_size: usize) -> RecordError {
    RecordError::DecompressedTooLarge {
        codec,
        limit: max_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// What every fixed vector below decompresses to (59 bytes).
    const PLAIN: &[u8] = b"tributary tributary tributary tributary tributary tributary";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Text that compresses, with some variety so blocks are not trivial.
    fn compressible(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i = 0u32;
        while out.len() < len {
            out.extend_from_slice(format!("record-{} value={};", i % 97, i / 7).as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Bytes that do not compress (xorshift).
    fn incompressible(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_sizes_around_its_block_boundaries() {
        for codec in CODECS {
            for len in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 64 * 1024 + 7, 300_000] {
                for data in [compressible(len), incompressible(len)] {
                    let compressed = compress(codec, &data).unwrap();
                    let back = decompress(codec, &compressed, data.len()).unwrap();
                    assert!(back == data, "{codec:?}, {len} bytes");
                }
            }
        }
    }

    #[test]
    fn none_and_unknown() {
        assert_eq!(compress(Compression::None, b"abc").unwrap(), b"abc");
        assert_eq!(decompress(Compression::None, b"abc", 3).unwrap(), b"abc");
        assert_eq!(
            decompress(Compression::None, b"abc", 2),
            Err(RecordError::DecompressedTooLarge {
                codec: Compression::None,
                limit: 2
            })
        );
        for id in 5..=7 {
            let codec = Compression::Unknown(id);
            assert_eq!(
                compress(codec, b"abc"),
                Err(RecordError::UnsupportedCompression(codec))
            );
            assert_eq!(
                decompress(codec, b"abc", 100),
                Err(RecordError::UnsupportedCompression(codec))
            );
        }
    }

    #[test]
    fn output_of_exactly_max_size_is_accepted_and_one_more_byte_refused() {
        let data = compressible(10_000);
        for codec in CODECS {
            let compressed = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &compressed, 10_000).unwrap(), data);
            assert_eq!(
                decompress(codec, &compressed, 9_999),
                Err(RecordError::DecompressedTooLarge {
                    codec,
                    limit: 9_999
                }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_not_inflated() {
        // 256 MiB of zeros compress to a few hundred KiB at most; a 1 MiB limit must stop each
        // decoder early (the test would take seconds and 256 MiB otherwise).
        let zeros = vec![0u8; 256 << 20];
        for codec in CODECS {
            let bomb = compress(codec, &zeros).unwrap();
            assert!(bomb.len() < 16 << 20, "{codec:?}: {} bytes", bomb.len());
            assert_eq!(
                decompress(codec, &bomb, 1 << 20),
                Err(RecordError::DecompressedTooLarge {
                    codec,
                    limit: 1 << 20
                }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn the_output_buffer_never_grows_past_max_size() {
        let data = compressible(1_000_000);
        for codec in CODECS {
            let compressed = compress(codec, &data).unwrap();
            let out = decompress(codec, &compressed, 1_000_000).unwrap();
            assert!(out.capacity() <= 1_000_000, "{codec:?}: {}", out.capacity());
            assert_eq!(out, data);
        }
    }

    #[test]
    fn zstd_frames_carry_their_content_size() {
        // Frame header descriptor bit 5 (single segment) or bits 6-7 (content size field).
        let frame = compress(Compression::Zstd, PLAIN).unwrap();
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert_ne!(frame[4] & 0xe0, 0, "descriptor {:#04x}", frame[4]);
    }

    #[test]
    fn a_snappy_block_claiming_a_huge_length_is_refused_before_allocating() {
        // Varint 0xFFFFFFFF (4 GiB - 1) then one literal byte.
        let block = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, b'x'];
        assert_eq!(
            decompress(Compression::Snappy, &block, 64 << 20),
            Err(RecordError::DecompressedTooLarge {
                codec: Compression::Snappy,
                limit: 64 << 20
            })
        );
        // Several framed chunks that each fit but together do not.
        let chunk = compress(Compression::Snappy, &[7u8; 1000]).unwrap();
        let mut framed = chunk.clone();
        framed.extend_from_slice(&chunk[XERIAL_HEADER_LEN..]);
        framed.extend_from_slice(&chunk[XERIAL_HEADER_LEN..]);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 3000)
                .unwrap()
                .len(),
            3000
        );
        assert!(matches!(
            decompress(Compression::Snappy, &framed, 2999),
            Err(RecordError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_and_truncated_input_is_an_error_not_a_panic() {
        let data = compressible(100_000);
        for codec in CODECS {
            let compressed = compress(codec, &data).unwrap();
            // Every truncation of the first and last bytes, and a sweep through the middle.
            let cuts = (0..64.min(compressed.len()))
                .chain((0..compressed.len()).step_by(97))
                .chain(compressed.len().saturating_sub(64)..compressed.len());
            for cut in cuts {
                // An error, or (cut at a frame or chunk boundary) a proper prefix of the data.
                if let Ok(out) = decompress(codec, &compressed[..cut], data.len()) {
                    assert!(
                        out.len() < data.len() && data.starts_with(&out),
                        "{codec:?}: truncated to {cut} bytes, decompressed to {} bytes",
                        out.len()
                    );
                }
            }
            // Flipped bytes: an error or (where the codec has no checksum) other bytes.
            for at in (0..compressed.len()).step_by(31) {
                let mut bad = compressed.clone();
                bad[at] ^= 0x5a;
                if let Ok(out) = decompress(codec, &bad, data.len()) {
                    assert!(out.len() <= data.len());
                }
            }
            // Garbage ("\x00" would be valid snappy: a block of 0 bytes).
            for garbage in [
                &b"\xff"[..],
                b"not compressed at all",
                &incompressible(5000),
            ] {
                assert!(decompress(codec, garbage, 1 << 20).is_err(), "{codec:?}");
            }
        }
    }

    #[test]
    fn empty_input() {
        // snappy-java reads an empty stream as empty; gzip, lz4 and zstd always write something.
        assert_eq!(decompress(Compression::Snappy, &[], 0).unwrap(), b"");
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            assert!(decompress(codec, &[], 100).is_err(), "{codec:?}");
            let empty = compress(codec, &[]).unwrap();
            assert!(!empty.is_empty());
            assert_eq!(decompress(codec, &empty, 0).unwrap(), b"");
        }
    }

    #[test]
    fn gzip_vector_from_gzip_cli() {
        // `gzip -n` (GNU gzip 1.12) of PLAIN.
        let vector = hex("1f8b08000000000000032b29ca4c2a2d492caa5428219505000d1d35703b000000");
        assert_eq!(decompress(Compression::Gzip, &vector, 59).unwrap(), PLAIN);
        // Java's GZIPInputStream reads concatenated members; so do we.
        let twice = [vector.clone(), vector].concat();
        assert_eq!(
            decompress(Compression::Gzip, &twice, 1000).unwrap(),
            [PLAIN, PLAIN].concat()
        );
        // Our own output is a gzip member: magic, deflate, no flags.
        assert_eq!(
            compress(Compression::Gzip, PLAIN).unwrap()[..4],
            [0x1f, 0x8b, 8, 0]
        );
    }

    #[test]
    fn zstd_vector_from_zstd_cli() {
        // `zstd` 1.5.4 of PLAIN: single-segment frame with a content checksum.
        let vector = hex("28b52ffd243b85000050747269627574617279200100362a4806ebc46b");
        assert_eq!(decompress(Compression::Zstd, &vector, 59).unwrap(), PLAIN);
        // A hand-made frame: single segment, content size 5, one raw last block "hello",
        // followed by a skippable frame, then the same frame again.
        let hello = hex("28b52ffd200529000068656c6c6f");
        let skippable = hex("502a4d1803000000abcdef");
        let stream = [hello.clone(), skippable, hello].concat();
        assert_eq!(
            decompress(Compression::Zstd, &stream, 10).unwrap(),
            b"hellohello"
        );
        // A checksum mismatch is caught.
        let mut bad = hex("28b52ffd243b85000050747269627574617279200100362a4806ebc46b");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decompress(Compression::Zstd, &bad, 59).is_err());
    }

    #[test]
    fn lz4_vectors_from_lz4_cli() {
        // `lz4 -B4 --no-frame-crc` (1.9.4) of PLAIN: the frame Kafka writes (FLG 0x60, BD 0x40).
        let kafka_like =
            hex("04224d1860408214000000af747269627574617279200a001950757461727900000000");
        assert_eq!(
            decompress(Compression::Lz4, &kafka_like, 59).unwrap(),
            PLAIN
        );
        // `lz4` with its default content checksum, which Kafka's reader also accepts.
        let checksummed =
            hex("04224d186440a714000000af747269627574617279200a00195075746172790000000098300337");
        assert_eq!(
            decompress(Compression::Lz4, &checksummed, 59).unwrap(),
            PLAIN
        );
        let mut bad = checksummed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decompress(Compression::Lz4, &bad, 59).is_err());
        // Concatenated frames are read; a frame without its end mark, or bytes after the last
        // frame, are not (lz4_flex alone would take either for a clean end).
        assert_eq!(
            decompress(
                Compression::Lz4,
                &[&kafka_like[..], &checksummed[..]].concat(),
                200
            )
            .unwrap(),
            [PLAIN, PLAIN].concat()
        );
        let no_end_mark = &kafka_like[..kafka_like.len() - 4];
        assert!(decompress(Compression::Lz4, no_end_mark, 59).is_err());
        for trailing in [&[0u8][..], &[0, 0, 0], b"garbage"] {
            let bad = [&kafka_like[..], trailing].concat();
            assert!(decompress(Compression::Lz4, &bad, 200).is_err());
        }
        // Our frame header is byte for byte the header Kafka's Lz4BlockOutputStream writes:
        // magic, FLG (version 1, independent blocks), BD (64 KiB), header checksum.
        let ours = compress(Compression::Lz4, PLAIN).unwrap();
        assert_eq!(ours[..7], kafka_like[..7]);
        assert_eq!(
            ours[ours.len() - 4..],
            [0, 0, 0, 0],
            "end mark, no checksum"
        );
    }

    #[test]
    fn snappy_vectors_plain_and_xerial() {
        // python-snappy (C++ snappy) of PLAIN: a 10-byte literal, then a 49-byte copy.
        let raw = hex("3b2474726962757461727920c20a00");
        assert_eq!(decompress(Compression::Snappy, &raw, 59).unwrap(), PLAIN);
        // A hand-made block: literal "abcd", then copy 12 bytes from offset 4.
        let handmade = hex("100c616263642e0400");
        assert_eq!(
            decompress(Compression::Snappy, &handmade, 16).unwrap(),
            b"abcdabcdabcdabcd"
        );

        // The same block in snappy-java's framing, as Kafka's Java producer sends it.
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw);
        assert_eq!(decompress(Compression::Snappy, &xerial, 59).unwrap(), PLAIN);
        // Two chunks, and a second stream header between them (snappy-java reads both).
        let mut two = xerial.clone();
        two.extend_from_slice(&xerial[XERIAL_HEADER_LEN..]);
        two.extend_from_slice(&xerial);
        assert_eq!(
            decompress(Compression::Snappy, &two, 1000).unwrap(),
            [PLAIN, PLAIN, PLAIN].concat()
        );

        // Our framing: the header, then big-endian length-prefixed raw blocks of 32 KiB input.
        let ours = compress(Compression::Snappy, PLAIN).unwrap();
        assert_eq!(ours[..XERIAL_HEADER_LEN], xerial[..XERIAL_HEADER_LEN]);
        let len = u32::from_be_bytes(ours[16..20].try_into().unwrap()) as usize;
        assert_eq!(ours.len(), 20 + len);
        assert_eq!(
            decompress(Compression::Snappy, &ours[20..], 59).unwrap(),
            PLAIN,
            "the chunk is one plain snappy block"
        );
        let big = compressible(100_000);
        let ours = compress(Compression::Snappy, &big).unwrap();
        let mut rest = &ours[XERIAL_HEADER_LEN..];
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            chunks.push(decompress(Compression::Snappy, &rest[4..4 + len], 1 << 20).unwrap());
            rest = &rest[4 + len..];
        }
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [32768, 32768, 32768, 100_000 - 3 * 32768]);
        assert_eq!(chunks.concat(), big);

        // Broken framing.
        for bad in [
            &xerial[..XERIAL_HEADER_LEN + 2], // cut chunk length
            &xerial[..xerial.len() - 1],      // cut chunk
            &[&xerial[..], &XERIAL_MAGIC[..], &[0][..]].concat()[..], // cut second header
        ] {
            assert!(decompress(Compression::Snappy, bad, 1000).is_err());
        }
        let mut negative = xerial.clone();
        negative[16] = 0x80;
        assert!(decompress(Compression::Snappy, &negative, 1000).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), codec in 0..4usize) {
            let codec = CODECS[codec];
            let compressed = compress(codec, &data).unwrap();
            prop_assert_eq!(decompress(codec, &compressed, data.len()).unwrap(), data);
        }

        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for codec in CODECS {
                if let Ok(out) = decompress(codec, &data, 4096) {
                    prop_assert!(out.len() <= 4096);
                }
            }
        }
    }
}
