//! Records inside an uncompressed batch.

use bytes::Bytes;

use crate::varint::{get_varint, get_varlong};
use crate::{BATCH_HEADER_LEN, Compression, RecordError, verify_batch};

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

/// Decodes the records of one whole, uncompressed batch (verifying it first). Keys, values and
/// header values share `batch`'s memory.
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, RecordError> {
    let header = verify_batch(batch)?;
    if header.compression() != Compression::None {
        return Err(RecordError::UnsupportedCompression(header.compression()));
    }
    let mut records = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let mut rest = &batch[BATCH_HEADER_LEN..];
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
        let key = nullable(batch, &mut body)?;
        let value = nullable(batch, &mut body)?;
        let header_count = get_varint(&mut body)?;
        if header_count < 0 {
            return Err(RecordError::Invalid(format!(
                "negative header count {header_count}"
            )));
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(64));
        for _ in 0..header_count {
            let key = nullable(batch, &mut body)?
                .ok_or_else(|| RecordError::Invalid("null header key".into()))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| RecordError::Invalid("header key is not UTF-8".into()))?;
            let value = nullable(batch, &mut body)?;
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

/// Reads a varint-length-prefixed byte string (-1 = null) as a slice of `batch`.
fn nullable(batch: &Bytes, body: &mut &[u8]) -> Result<Option<Bytes>, RecordError> {
    let len = get_varint(body)?;
    if len < 0 {
        return Ok(None);
    }
    let slice = take(body, len as usize)?;
    Ok(Some(batch.slice_ref(slice)))
}
