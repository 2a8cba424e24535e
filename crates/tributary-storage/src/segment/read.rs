//! Reading a segment: the batch holding an offset, whole batches from it, an offset by time.

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use tributary_record::{BATCH_HEADER_LEN, BatchHeader, TimestampType};

use crate::cache::{FileCache, SegmentFiles};
use crate::error::{Result, StorageError, io_err};
use crate::format::FILE_HEADER_LEN;
use crate::index::{TimeEntry, floor_entry, read_time_index, search_offset_index_file};

use super::Segment;

impl Segment {
    /// Position of the last indexed batch at or before `offset` (a lower bound for its batch).
    fn index_floor(&self, files: &SegmentFiles, offset: i64) -> Result<u64> {
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let entry = match (&self.active, &files.index) {
            (Some(active), _) => floor_entry(&active.offsets, u64::from(relative), |e| {
                u64::from(e.relative_offset)
            }),
            (None, Some((file, entries))) => {
                search_offset_index_file(file, &self.index_path, *entries, relative)?
            }
            (None, None) => None,
        };
        let position = entry.map_or(FILE_HEADER_LEN, |e| u64::from(e.position));
        if position >= self.size && self.size > FILE_HEADER_LEN {
            // Never skip data silently because an index entry is damaged.
            return Err(StorageError::corrupt(
                &self.index_path,
                0,
                format!(
                    "index entry for offset {offset} points at byte {position}, past the segment's {} bytes",
                    self.size
                ),
            ));
        }
        Ok(position)
    }

    /// Walks batch headers from the index floor of `offset` to the first batch whose last
    /// offset is at least `offset`; returns its position and header, or `None` past the end.
    pub(super) fn locate(
        &self,
        files: &SegmentFiles,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let mut position = self.index_floor(files, offset)?;
        let mut buf = [0u8; BATCH_HEADER_LEN];
        while position < self.size {
            let header = self.read_header(files, position, &mut buf)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    fn read_header(
        &self,
        files: &SegmentFiles,
        position: u64,
        buf: &mut [u8; BATCH_HEADER_LEN],
    ) -> Result<BatchHeader> {
        if position + BATCH_HEADER_LEN as u64 > self.size {
            return Err(StorageError::corrupt(
                &self.log_path,
                position,
                "batch header crosses the end of the segment",
            ));
        }
        files
            .log
            .read_exact_at(buf, position)
            .map_err(io_err("read", &self.log_path))?;
        let header = BatchHeader::parse(buf)
            .map_err(|err| StorageError::corrupt(&self.log_path, position, err.to_string()))?;
        if position + header.total_len() as u64 > self.size {
            return Err(StorageError::corrupt(
                &self.log_path,
                position,
                "batch crosses the end of the segment",
            ));
        }
        Ok(header)
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes` (at
    /// least one whole batch if `min_one_batch`), none whose base offset reaches `limit_offset`.
    /// Returns `None` if the segment has no batch at or after `offset` below the limit.
    pub fn read(
        &self,
        cache: &FileCache,
        offset: i64,
        max_bytes: usize,
        limit_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<(Bytes, i64, i64)>> {
        let files = self.files(cache)?;
        let Some((start, first)) = self.locate(&files, offset)? else {
            return Ok(None);
        };
        if first.base_offset >= limit_offset {
            return Ok(None);
        }
        // Where the bytes below `limit_offset` end.
        let end = if limit_offset >= self.next_offset {
            self.size
        } else {
            match self.locate(&files, limit_offset)? {
                Some((position, header)) if header.base_offset >= limit_offset => position,
                Some((position, header)) => position + header.total_len() as u64,
                None => self.size,
            }
        };
        let want = (end - start).min(max_bytes as u64);
        let want = if want < first.total_len() as u64 {
            if !min_one_batch {
                return Ok(Some((Bytes::new(), first.base_offset, first.base_offset)));
            }
            first.total_len() as u64
        } else {
            want
        };
        let mut buf = BytesMut::zeroed(want as usize);
        files
            .log
            .read_exact_at(&mut buf, start)
            .map_err(io_err("read", &self.log_path))?;
        // Keep whole batches only, checking each header on the way (the pair of the CRC check
        // done before the write: a misplaced position or damaged file shows up here).
        let mut kept = 0usize;
        let mut next = first.base_offset;
        while kept + BATCH_HEADER_LEN <= buf.len() {
            let header = BatchHeader::parse(&buf[kept..]).map_err(|err| {
                StorageError::corrupt(&self.log_path, start + kept as u64, err.to_string())
            })?;
            if header.base_offset < next {
                return Err(StorageError::corrupt(
                    &self.log_path,
                    start + kept as u64,
                    format!(
                        "batch offset {} goes backwards (expected at least {next})",
                        header.base_offset
                    ),
                ));
            }
            if kept + header.total_len() > buf.len() {
                break;
            }
            kept += header.total_len();
            next = header.next_offset();
        }
        buf.truncate(kept);
        Ok(Some((buf.freeze(), first.base_offset, next)))
    }

    /// The first offset (and its timestamp) at or after `offset` whose timestamp is at least
    /// `timestamp`: exact for uncompressed batches, the batch's base offset for compressed ones.
    pub fn offset_for_timestamp(
        &self,
        cache: &FileCache,
        timestamp: i64,
        from_offset: i64,
    ) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let files = self.files(cache)?;
        // Every batch before the floor entry's offset has a timestamp at or below the entry's,
        // which is below the target: start scanning there.
        // A sealed segment's time index is read for the lookup (an unreadable one only means a
        // longer scan from the segment's start).
        let sealed_times;
        let times: &[TimeEntry] = match &self.active {
            Some(active) => &active.times,
            None => {
                sealed_times = read_time_index(&self.time_index_path).unwrap_or_default();
                &sealed_times
            }
        };
        let after = times.partition_point(|t| t.timestamp < timestamp);
        let start_offset = after
            .checked_sub(1)
            .map_or(self.base_offset, |i| {
                self.base_offset + i64::from(times[i].relative_offset)
            })
            .max(from_offset);
        let Some((mut position, _)) = self.locate(&files, start_offset)? else {
            return Ok(None);
        };
        let mut buf = [0u8; BATCH_HEADER_LEN];
        while position < self.size {
            let header = self.read_header(&files, position, &mut buf)?;
            if header.max_timestamp >= timestamp && header.last_offset() >= from_offset {
                if header.timestamp_type() == TimestampType::LogAppendTime {
                    // Every record of the batch carries the leader's clock, not its own.
                    return Ok(Some((
                        header.base_offset.max(from_offset),
                        header.max_timestamp,
                    )));
                }
                let mut batch = BytesMut::zeroed(header.total_len());
                files
                    .log
                    .read_exact_at(&mut batch, position)
                    .map_err(io_err("read", &self.log_path))?;
                let batch = batch.freeze();
                return Ok(Some(match tributary_record::decode_records(&batch) {
                    Ok(records) => records
                        .iter()
                        .find(|r| r.timestamp >= timestamp && r.offset >= from_offset)
                        .map_or((header.base_offset, header.max_timestamp), |r| {
                            (r.offset, r.timestamp)
                        }),
                    // Compressed (or undecodable) records: the batch is the best we can say.
                    Err(_) => (header.base_offset.max(from_offset), header.max_timestamp),
                }));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }
}
