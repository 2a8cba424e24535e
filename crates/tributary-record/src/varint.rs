//! Kafka's zig-zag variable-length integers (protobuf's `sint32` / `sint64` encoding).

use crate::RecordError;

/// Appends `value` as a zig-zag varint.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// Appends `value` as a zig-zag varlong.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Bytes `value` takes as a zig-zag varint.
pub fn varint_len(value: i32) -> usize {
    let zigzag = ((i64::from(value) << 1) ^ (i64::from(value) >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a zig-zag varint from the front of `buf`, advancing it.
pub fn get_varint(buf: &mut &[u8]) -> Result<i32, RecordError> {
    let mut at = 0;
    let value = read_varint_at(buf, &mut at, buf.len())?;
    *buf = &buf[at..];
    Ok(value)
}

/// Reads a zig-zag varlong from the front of `buf`, advancing it.
pub fn get_varlong(buf: &mut &[u8]) -> Result<i64, RecordError> {
    let mut at = 0;
    let value = read_varlong_at(buf, &mut at, buf.len(), 10)?;
    *buf = &buf[at..];
    Ok(value)
}

/// A zig-zag varint (at most 5 bytes, in `i32` range) at `buf[*at..end]`, advancing `at`.
#[inline(always)]
pub fn read_varint_at(buf: &[u8], at: &mut usize, end: usize) -> Result<i32, RecordError> {
    let value = read_varlong_at(buf, at, end, 5)?;
    i32::try_from(value).map_err(|_| RecordError::Invalid(format!("varint {value} out of range")))
}

/// A zig-zag varlong of at most `max_bytes` bytes at `buf[*at..end]`, advancing `at`. Fast paths
/// for one and two bytes (every length and delta of a typical record): a compaction pass spends
/// much of its parsing time here.
#[inline(always)]
pub fn read_varlong_at(
    buf: &[u8],
    at: &mut usize,
    end: usize,
    max_bytes: usize,
) -> Result<i64, RecordError> {
    let end = end.min(buf.len());
    if *at < end && buf[*at] < 0x80 {
        let raw = u64::from(buf[*at]);
        *at += 1;
        return Ok(unzigzag(raw));
    }
    if max_bytes >= 2 && *at + 1 < end && buf[*at + 1] < 0x80 {
        let raw = u64::from(buf[*at] & 0x7f) | (u64::from(buf[*at + 1]) << 7);
        *at += 2;
        return Ok(unzigzag(raw));
    }
    read_varlong_slow(buf, at, end, max_bytes)
}

#[inline(always)]
fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[cold]
fn read_varlong_slow(
    buf: &[u8],
    at: &mut usize,
    end: usize,
    max_bytes: usize,
) -> Result<i64, RecordError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        if *at >= end {
            return Err(RecordError::Invalid(
                "varint runs past the end of the batch".into(),
            ));
        }
        let byte = buf[*at];
        *at += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(unzigzag(raw));
        }
    }
    Err(RecordError::Invalid(format!(
        "varint longer than {max_bytes} bytes"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        put_varint(&mut out, 0);
        put_varint(&mut out, -1);
        put_varint(&mut out, 1);
        put_varint(&mut out, 64);
        assert_eq!(out, [0x00, 0x01, 0x02, 0x80, 0x01]);
    }

    #[test]
    fn positioned_reads_agree_with_slice_reads_and_refuse_every_cut() {
        let mut buf = Vec::new();
        let values = [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ];
        for v in values {
            put_varlong(&mut buf, v);
        }
        let mut at = 0;
        for v in values {
            assert_eq!(read_varlong_at(&buf, &mut at, buf.len(), 10).unwrap(), v);
        }
        assert_eq!(at, buf.len());
        // Cut short, too long, out of i32 range: errors, never panics.
        assert!(read_varlong_at(&buf, &mut 0, 0, 10).is_err());
        assert!(read_varlong_at(&[0x80; 12], &mut 0, 12, 10).is_err());
        let mut big = Vec::new();
        put_varlong(&mut big, i64::from(i32::MAX) + 1);
        assert!(read_varint_at(&big, &mut 0, big.len()).is_err());
        for v in (-70_000i64..70_000).step_by(7) {
            let mut one = Vec::new();
            put_varlong(&mut one, v);
            let mut at = 0;
            assert_eq!(read_varlong_at(&one, &mut at, one.len(), 10).unwrap(), v);
            assert_eq!(at, one.len());
            // Every cut is an error.
            for cut in 0..one.len() {
                assert!(
                    read_varlong_at(&one, &mut 0, cut, 10).is_err(),
                    "{v} cut at {cut}"
                );
            }
        }
        let mut at = 0;
        let mut rest = &buf[..];
        for _ in values {
            assert_eq!(
                read_varlong_at(&buf, &mut at, buf.len(), 10).ok(),
                get_varlong(&mut rest).ok()
            );
        }
    }

    proptest! {
        #[test]
        fn varlong_round_trips(value: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            let mut slice = &out[..];
            prop_assert_eq!(get_varlong(&mut slice).unwrap(), value);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn varint_round_trips_and_len_agrees(value: i32) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_len(value));
            let mut slice = &out[..];
            prop_assert_eq!(get_varint(&mut slice).unwrap(), value);
        }
    }
}
