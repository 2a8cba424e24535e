//! Reads: whole batches from an offset, and the offset of a timestamp.

use bytes::Bytes;

use super::Log;
use crate::error::{Result, StorageError};

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, exactly as stored; empty when nothing is there yet.
    pub records: Bytes,
    /// Base offset of the first batch returned (at or before the offset asked for).
    pub first_offset: Option<i64>,
    /// Offset after the last batch returned: where the next read continues.
    pub next_offset: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
}

/// An offset found by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// First offset whose record timestamp is at or after the timestamp asked for.
    pub offset: i64,
    /// That record's timestamp.
    pub timestamp: i64,
}

impl Log {
    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (but at least one
    /// whole batch if `min_one_batch`, as Kafka's KIP-74), and none at or past `max_offset`
    /// (exclusive; the high watermark for consumers, `None` for the log end offset). Reads one
    /// segment at a time: a short result is not the end of the log, `next_offset` says where to
    /// continue.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
        min_one_batch: bool,
    ) -> Result<ReadResult> {
        let state = self.read_state()?;
        let log_end_offset = state.log_end_offset();
        let log_start_offset = state.log_start_offset;
        if offset < log_start_offset || offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let limit = max_offset.map_or(log_end_offset, |m| m.min(log_end_offset));
        let empty = ReadResult {
            records: Bytes::new(),
            first_offset: None,
            next_offset: offset,
            log_start_offset,
            log_end_offset,
        };
        if offset >= limit {
            return Ok(empty);
        }
        let floor = state
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        for segment in state.segments.range(floor..).map(|(_, s)| s) {
            if segment.base_offset >= limit {
                break;
            }
            if segment.next_offset <= offset {
                continue;
            }
            if let Some((records, first, next)) = segment.read(
                &self.resources.files,
                offset,
                max_bytes,
                limit,
                min_one_batch,
            )? {
                let found = !records.is_empty();
                return Ok(ReadResult {
                    records,
                    first_offset: found.then_some(first),
                    next_offset: if found { next } else { offset },
                    log_start_offset,
                    log_end_offset,
                });
            }
        }
        Ok(empty)
    }

    /// The first offset at or after the log start whose record timestamp is at least
    /// `timestamp` (Kafka's ListOffsets by time), or `None` if every record is older.
    /// Exact for uncompressed batches; for compressed ones, the batch's first offset.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let state = self.read_state()?;
        for segment in state.segments.values() {
            if segment.next_offset <= state.log_start_offset {
                continue;
            }
            if let Some((offset, timestamp)) = segment.offset_for_timestamp(
                &self.resources.files,
                timestamp,
                state.log_start_offset,
            )? {
                return Ok(Some(TimestampOffset { offset, timestamp }));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp in the log (Kafka's ListOffsets MAX_TIMESTAMP,
    /// -3): its offset and timestamp, or `None` for an empty log or one without timestamps.
    /// Like [`Self::offset_for_timestamp`], exact for uncompressed batches.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>> {
        let largest = {
            let state = self.read_state()?;
            state
                .segments
                .values()
                .filter(|s| s.next_offset > state.log_start_offset)
                .map(|s| s.max_timestamp)
                .max()
        };
        match largest {
            Some(t) if t != tributary_record::NO_TIMESTAMP => self.offset_for_timestamp(t),
            _ => Ok(None),
        }
    }
}
