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
    let value = get_varlong_bounded(buf, 5)?;
    i32::try_from(value).map_err(|_| RecordError::Invalid(format!("varint {value} out of range")))
}

/// Reads a zig-zag varlong from the front of `buf`, advancing it.
pub fn get_varlong(buf: &mut &[u8]) -> Result<i64, RecordError> {
    get_varlong_bounded(buf, 10)
}

fn get_varlong_bounded(buf: &mut &[u8], max_bytes: usize) -> Result<i64, RecordError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(RecordError::Invalid(
                "varint runs past the end of the batch".into(),
            ));
        };
        *buf = rest;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
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
