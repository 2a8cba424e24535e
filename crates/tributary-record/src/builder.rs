//! Building uncompressed v2 batches.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{put_varint, put_varlong};
use crate::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, CRC_AT, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Builds one uncompressed v2 record batch, record by record.
///
/// ```
/// use tributary_record::{BatchBuilder, verify_batch};
/// let mut builder = BatchBuilder::new(1_700_000_000_000);
/// builder.push(1_700_000_000_000, Some(b"apples"), Some(b"5"), &[]);
/// let batch = builder.build();
/// assert_eq!(verify_batch(&batch).unwrap().record_count, 1);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<u8>,
    record_count: i32,
    scratch: Vec<u8>,
}

impl BatchBuilder {
    /// An empty batch whose records' timestamps are relative to `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64) -> Self {
        Self {
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records: Vec::new(),
            record_count: 0,
            scratch: Vec::new(),
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.record_count as usize
    }

    /// No record pushed yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Size the batch would have if built now.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_LEN + self.records.len()
    }

    /// Appends a record.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let body = &mut self.scratch;
        body.clear();
        body.push(0); // record attributes: unused in v2
        put_varlong(body, timestamp_ms - self.base_timestamp);
        put_varint(body, self.record_count);
        put_nullable(body, key);
        put_nullable(body, value);
        put_varint(body, headers.len() as i32);
        for (header_key, header_value) in headers {
            put_nullable(body, Some(header_key.as_bytes()));
            put_nullable(body, *header_value);
        }
        put_varint(&mut self.records, body.len() as i32);
        self.records.extend_from_slice(body);
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
    }

    /// The finished batch, with base offset 0 (the leader assigns offsets) and no leader epoch.
    pub fn build(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.size_bytes());
        out.put_i64(0);
        out.put_i32((self.size_bytes() - LOG_OVERHEAD) as i32);
        out.put_i32(NO_PARTITION_LEADER_EPOCH);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, filled below
        out.put_i16(0); // attributes: no compression, create time
        out.put_i32((self.record_count - 1).max(0));
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.record_count);
        out.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}
