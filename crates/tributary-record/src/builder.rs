//! Building v2 batches, uncompressed or compressed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{put_varint, put_varlong};
use crate::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, CRC_AT, Compression, LOG_OVERHEAD, MAGIC_V2,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordError,
    compression,
};

/// Builds one v2 record batch, record by record; uncompressed unless a codec is chosen with
/// [`BatchBuilder::compression`].
///
/// ```
/// use tributary_record::{BatchBuilder, Compression, decode_records, verify_batch};
/// let mut builder = BatchBuilder::new(1_700_000_000_000);
/// builder.push(1_700_000_000_000, Some(b"apples"), Some(b"5"), &[]);
/// let batch = builder.build();
/// assert_eq!(verify_batch(&batch).unwrap().record_count, 1);
///
/// let mut builder = BatchBuilder::new(1_700_000_000_000).compression(Compression::Lz4);
/// builder.push(1_700_000_000_000, Some(b"apples"), Some(b"5"), &[]);
/// let batch = builder.build();
/// assert_eq!(verify_batch(&batch).unwrap().compression(), Compression::Lz4);
/// assert_eq!(decode_records(&batch).unwrap()[0].value.as_deref(), Some(&b"5"[..]));
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
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
            compression: Compression::None,
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

    /// Compresses the records section with `codec` when the batch is built (Kafka's
    /// `compression.type`); [`Compression::None`], the default, leaves it as it is.
    ///
    /// # Panics
    ///
    /// On [`Compression::Unknown`]: Kafka defines no such codec, so no batch can carry it.
    pub fn compression(mut self, codec: Compression) -> Self {
        assert!(
            !matches!(codec, Compression::Unknown(_)),
            "no batch can be compressed with {codec}"
        );
        self.compression = codec;
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

    /// Size the batch would have if built now, uncompressed. A compressed batch is smaller
    /// unless its records do not compress (then a few bytes of framing larger); this is what a
    /// producer compares with its batch size limit, as Kafka's producer does before compression.
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

    /// The finished batch, with base offset 0 (the leader assigns offsets) and no leader epoch;
    /// the records section compressed with the chosen codec, the CRC over the compressed bytes.
    ///
    /// # Panics
    ///
    /// Where [`BatchBuilder::try_build`] fails: a batch past 2 GiB, which no batch size limit
    /// allows, or a codec failing on records in memory, which the codecs do not do.
    pub fn build(&self) -> Bytes {
        match self.try_build() {
            Ok(batch) => batch,
            Err(err) => panic!("cannot build the batch: {err}"),
        }
    }

    /// [`BatchBuilder::build`], returning a codec's failure or a batch past 2 GiB
    /// ([`RecordError::Invalid`]) instead of panicking.
    pub fn try_build(&self) -> Result<Bytes, RecordError> {
        let compressed;
        let records = if self.compression == Compression::None {
            &self.records
        } else {
            compressed = compression::compress(self.compression, &self.records)?;
            &compressed
        };
        let size_bytes = BATCH_HEADER_LEN + records.len();
        let batch_length = i32::try_from(size_bytes - LOG_OVERHEAD).map_err(|_| {
            RecordError::Invalid(format!("a batch of {size_bytes} bytes is too large"))
        })?;
        let mut out = BytesMut::with_capacity(size_bytes);
        out.put_i64(0);
        out.put_i32(batch_length);
        out.put_i32(NO_PARTITION_LEADER_EPOCH);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, filled below
        // Attributes: the codec in bits 0-2; create time, not transactional, not control.
        out.put_i16(i16::from(self.compression.id()));
        out.put_i32((self.record_count - 1).max(0));
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.record_count);
        out.extend_from_slice(records);
        let crc = crate::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
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
