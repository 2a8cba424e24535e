//! Record batches go out as the log's bytes, not copied into the encoded answer.
//!
//! The codec writes a `bytes` field by copying it. A Fetch answer's records can be megabytes,
//! so each partition's records (when large) are replaced before encoding by a unique 16-byte
//! marker, and the encoded answer is then cut at each marker: the answer goes out as a list of
//! chunks, the record batches among them as the very buffers the log read, with the length
//! prefix rewritten for their real size. Kafka's schemas have no enclosing byte lengths around
//! `records` (only the frame size, which is computed over the chunks), so nothing else changes.

use bytes::{BufMut, Bytes, BytesMut};

/// Records shorter than this are copied (a separate chunk costs more than the copy).
pub const MIN_SPLICED: usize = 4 << 10;
const MARKER_LEN: usize = 16;

/// The records set aside while an answer is encoded, each behind its marker.
#[derive(Debug, Default)]
pub struct Splices(Vec<(Bytes, Bytes)>);

impl Splices {
    /// `records` itself if small, else a fresh marker that stands for it in the answer.
    pub fn set_aside(&mut self, records: Bytes) -> Bytes {
        if records.len() < MIN_SPLICED {
            return records;
        }
        let marker = Bytes::copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        self.0.push((marker.clone(), records));
        marker
    }

    /// Whether nothing was set aside.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Cuts `encoded` (a whole size-prefixed answer) at each marker, in order, and puts the
    /// records in their place. `compact`: the records' length is an unsigned varint of
    /// length + 1 (flexible versions), else an i32. `None` if a marker is missing (a bug).
    pub fn apply(self, encoded: BytesMut, compact: bool) -> Option<Vec<Bytes>> {
        let encoded = encoded.freeze();
        let mut chunks = Vec::with_capacity(self.0.len() * 3 + 1);
        let mut cursor = 0;
        let prefix_len = if compact { 1 } else { 4 };
        for (marker, records) in self.0 {
            let found = encoded[cursor..]
                .windows(MARKER_LEN)
                .position(|w| w == marker.as_ref())?
                + cursor;
            if found < cursor + prefix_len {
                return None;
            }
            chunks.push(encoded.slice(cursor..found - prefix_len));
            let mut prefix = BytesMut::with_capacity(5);
            if compact {
                let mut n = u32::try_from(records.len() + 1).ok()?;
                while n >= 0x80 {
                    prefix.put_u8((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                prefix.put_u8(n as u8);
            } else {
                prefix.put_i32(i32::try_from(records.len()).ok()?);
            }
            chunks.push(prefix.freeze());
            chunks.push(records);
            cursor = found + MARKER_LEN;
        }
        if cursor < encoded.len() {
            chunks.push(encoded.slice(cursor..));
        }
        let size = chunks.iter().map(Bytes::len).sum::<usize>() - 4;
        let size = i32::try_from(size).ok()?;
        let mut head = BytesMut::from(chunks[0].as_ref());
        head[0..4].copy_from_slice(&size.to_be_bytes());
        chunks[0] = head.freeze();
        Some(chunks)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseKind};

    use super::*;

    fn answer(records: [Bytes; 2]) -> FetchResponse {
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(
                records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_records(Some(r))
                    })
                    .collect(),
            ),
        ])
    }

    /// The chunks, joined, are exactly what the codec writes with the records inline.
    #[test]
    fn spliced_answers_equal_copied_ones() {
        let big = Bytes::from(vec![7u8; 70_000]);
        let small = Bytes::from_static(b"small");
        for (version, records) in [
            (4_i16, [big.clone(), small.clone()]),
            (11, [big.clone(), small.clone()]),
            (12, [big.clone(), small.clone()]),
            // Records last: nothing follows them at v4-11.
            (11, [small.clone(), big.clone()]),
        ] {
            let mut inline = BytesMut::new();
            inline.put_i32(0);
            ResponseKind::Fetch(answer(records.clone()))
                .encode(&mut inline, version)
                .unwrap();
            let size = (inline.len() - 4) as i32;
            inline[0..4].copy_from_slice(&size.to_be_bytes());

            let mut splices = Splices::default();
            let records = records.map(|r| splices.set_aside(r));
            assert!(!splices.is_empty());
            let mut encoded = BytesMut::new();
            encoded.put_i32(0);
            ResponseKind::Fetch(answer(records))
                .encode(&mut encoded, version)
                .unwrap();
            let chunks = splices.apply(encoded, version >= 12).unwrap();
            assert!(
                chunks.iter().any(|c| c.as_ptr() == big.as_ptr()),
                "v{version}: the records went out as the log's own buffer"
            );
            assert!(
                chunks.iter().all(|c| !c.is_empty()),
                "v{version}: no empty chunk"
            );
            let joined = chunks.concat();
            let first_difference = joined.iter().zip(inline.iter()).position(|(a, b)| a != b);
            assert_eq!(
                (joined.len(), first_difference),
                (inline.len(), None),
                "v{version}: length and first differing byte"
            );
        }
    }
}
