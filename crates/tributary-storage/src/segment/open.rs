//! Opening a segment: a sealed one by its indexes (checked against the data), the active one
//! after a clean close, or any one by scanning its batches after a crash.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tributary_record::{BATCH_HEADER_LEN, BatchHeader, NO_TIMESTAMP, verify_batch};

use crate::cache::FileCache;
use crate::error::{Result, StorageError, io_err};
use crate::format::{FILE_HEADER_LEN, FileKind, check_file_header, segment_path};
use crate::index::{
    OFFSET_ENTRY_LEN, OffsetEntry, TIME_ENTRY_LEN, TimeEntry, index_entry_count, read_offset_index,
    read_time_index,
};

use super::{ActiveIndexes, Segment};

/// Bytes read at a time when scanning a segment during recovery.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// What the end of a sealed segment's data says.
#[derive(Debug)]
struct SealedTail {
    next_offset: i64,
    max_timestamp: i64,
    last_batch_offset: i64,
}

/// Where a scan of a segment stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Bytes of valid batches from the start of the file.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

impl Segment {
    /// Opens a sealed segment written before a clean shutdown, without reading its data:
    /// `next_offset` is the next segment's base offset.
    ///
    /// The indexes are checked against the data: the time index must end with the entry that
    /// sealing wrote for the last batch (so a time index cut at an entry boundary is caught), and
    /// the batches after the last offset-index entry are read to find the exact next offset.
    /// A damaged index is rebuilt from the data; damaged data is an error, never silently cut.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        cache: &FileCache,
    ) -> Result<Self> {
        let size = Self::open_len(&segment_path(dir, base_offset, FileKind::Log))?;
        let mut segment = Self::blank(dir, base_offset, size, false, cache);
        match segment.check_sealed_indexes() {
            Ok((entries, tail)) => {
                segment.index_entries = entries;
                segment.max_timestamp = tail.max_timestamp;
                segment.next_offset = tail.next_offset;
                segment.last_batch_offset = tail.last_batch_offset;
            }
            Err(err) => {
                tracing::warn!(segment = %segment.log_path.display(), error = %err, "index unusable, rebuilding it from the data file");
                segment.rebuild_indexes(cache, index_interval_bytes)?;
            }
        }
        Ok(segment)
    }

    /// Validates a sealed segment's index files against its data; returns the offset index's
    /// entry count and what the data's tail says.
    fn check_sealed_indexes(&self) -> Result<(u64, SealedTail)> {
        let (entries, last_entry) = self.index_file_entries()?;
        let last_time = self.last_time_entry()?;
        let log = File::open(&self.log_path).map_err(io_err("open", &self.log_path))?;
        check_file_header(&log, &self.log_path, FileKind::Log)?;
        let mut position = last_entry.map_or(FILE_HEADER_LEN, |e| u64::from(e.position));
        let mut last: Option<BatchHeader> = None;
        let mut max_after_entry = NO_TIMESTAMP;
        let mut buf = [0u8; BATCH_HEADER_LEN];
        while position < self.size {
            if position + BATCH_HEADER_LEN as u64 > self.size {
                return Err(StorageError::corrupt(
                    &self.log_path,
                    position,
                    "partial batch header at the end of a sealed segment",
                ));
            }
            log.read_exact_at(&mut buf, position)
                .map_err(io_err("read", &self.log_path))?;
            let header = BatchHeader::parse(&buf)
                .map_err(|err| StorageError::corrupt(&self.log_path, position, err.to_string()))?;
            if last.is_none()
                && let Some(entry) = last_entry
                && header.base_offset != self.base_offset + i64::from(entry.relative_offset)
            {
                return Err(StorageError::corrupt(
                    &self.index_path,
                    0,
                    format!(
                        "last index entry names offset {} but the batch there starts at {}",
                        self.base_offset + i64::from(entry.relative_offset),
                        header.base_offset
                    ),
                ));
            }
            position += header.total_len() as u64;
            max_after_entry = max_after_entry.max(header.max_timestamp);
            last = Some(header);
        }
        if position != self.size {
            return Err(StorageError::corrupt(
                &self.log_path,
                self.size,
                "last batch runs past the end of a sealed segment",
            ));
        }
        let Some(last) = last else {
            return Ok((
                entries,
                SealedTail {
                    next_offset: self.base_offset,
                    max_timestamp: NO_TIMESTAMP,
                    last_batch_offset: -1,
                },
            ));
        };
        let consistent = match last_time {
            Some(t) => {
                i64::from(t.relative_offset) == last.base_offset - self.base_offset
                    && t.timestamp >= max_after_entry
            }
            None => max_after_entry == NO_TIMESTAMP,
        };
        if !consistent {
            return Err(StorageError::corrupt(
                &self.time_index_path,
                0,
                "time index does not end with the entry for the segment's last batch",
            ));
        }
        Ok((
            entries,
            SealedTail {
                next_offset: last.next_offset(),
                max_timestamp: last_time.map_or(NO_TIMESTAMP, |t| t.timestamp),
                last_batch_offset: last.base_offset,
            },
        ))
    }

    /// Opens the last segment after a clean shutdown as the active one: loads its indexes and
    /// scans only the data after the last index entry. Anything malformed there is truncated.
    pub fn open_active(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        cache: &FileCache,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Self, ScanEnd)> {
        let size = Self::open_len(&segment_path(dir, base_offset, FileKind::Log))?;
        let mut segment = Self::blank(dir, base_offset, size, true, cache);
        let indexes = read_offset_index(&segment.index_path, size).and_then(|offsets| {
            let times = read_time_index(&segment.time_index_path)?;
            Ok((offsets, times))
        });
        let mut file_last_time = None;
        let start = match indexes {
            Ok((offsets, times)) if !offsets.is_empty() => {
                file_last_time = times.last().copied();
                let last = *offsets.last().expect("not empty");
                let active = segment.active.as_mut().expect("active");
                active.offsets = offsets;
                // Keep only time entries at or before the resume point: later ones are rebuilt.
                // Time entries up to the resume point cover every batch before it.
                active.times = times
                    .into_iter()
                    .filter(|t| t.relative_offset <= last.relative_offset)
                    .collect();
                segment.max_timestamp = active.times.last().map_or(NO_TIMESTAMP, |t| t.timestamp);
                // The batch at the last entry is scanned again and indexed again.
                active.offsets.pop();
                active.bytes_since_entry = u64::from(index_interval_bytes);
                u64::from(last.position)
            }
            Ok(_) => FILE_HEADER_LEN,
            Err(err) => {
                tracing::warn!(segment = %segment.log_path.display(), error = %err, "active segment index unusable, rebuilding it");
                FILE_HEADER_LEN
            }
        };
        let end = segment.recover_from(start, index_interval_bytes, cache, on_batch)?;
        // A clean close ends the time index with the entry for the last batch; if that is not
        // what the file ends with, entries before the resume point may be missing too.
        if start > FILE_HEADER_LEN && file_last_time != segment.final_time_entry() {
            tracing::warn!(segment = %segment.log_path.display(), "active segment time index does not match the data, rebuilding it");
            let size = segment.size;
            segment = Self::blank(dir, base_offset, size, true, cache);
            let end =
                segment.recover_from(FILE_HEADER_LEN, index_interval_bytes, cache, on_batch)?;
            return Ok((segment, end));
        }
        Ok((segment, end))
    }

    /// The time-index entry that ends a closed or sealed segment: the segment's max timestamp
    /// at its last batch. `None` without batches or timestamps.
    pub(super) fn final_time_entry(&self) -> Option<TimeEntry> {
        (self.max_timestamp != NO_TIMESTAMP && self.last_batch_offset >= 0).then(|| TimeEntry {
            timestamp: self.max_timestamp,
            relative_offset: (self.last_batch_offset - self.base_offset) as u32,
        })
    }

    /// Opens any segment by scanning its whole data file: rebuilds both indexes, truncates a
    /// torn or corrupt tail, and leaves the segment active (the caller seals it if it is not
    /// the last one).
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        cache: &FileCache,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Self, ScanEnd)> {
        let size = Self::open_len(&segment_path(dir, base_offset, FileKind::Log))?;
        let mut segment = Self::blank(dir, base_offset, size, true, cache);
        let end = segment.recover_from(FILE_HEADER_LEN, index_interval_bytes, cache, on_batch)?;
        Ok((segment, end))
    }

    /// Scans from `start` to the end of the data file, indexing every valid batch; truncates
    /// the file at the first invalid one.
    fn recover_from(
        &mut self,
        start: u64,
        index_interval_bytes: u32,
        cache: &FileCache,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<ScanEnd> {
        let file_len = self.size;
        let end = self.scan_and_index(start, index_interval_bytes, cache, on_batch)?;
        if let Some(reason) = &end.damage {
            tracing::warn!(
                segment = %self.log_path.display(),
                position = end.valid_len,
                discarded_bytes = file_len - end.valid_len,
                reason = %reason,
                "truncating a torn or corrupt segment tail"
            );
            let files = self.files(cache)?;
            files
                .log
                .set_len(end.valid_len)
                .map_err(io_err("truncate", &self.log_path))?;
            files
                .log
                .sync_all()
                .map_err(io_err("fsync", &self.log_path))?;
            self.size = end.valid_len;
        }
        Ok(end)
    }

    /// Like [`Self::recover_from`] from the first batch, but damage is an error and the file is
    /// left as it is (a sealed segment's data is never cut).
    pub(super) fn reindex_all(
        &mut self,
        index_interval_bytes: u32,
        cache: &FileCache,
    ) -> Result<()> {
        self.next_offset = self.base_offset;
        self.max_timestamp = NO_TIMESTAMP;
        self.last_batch_offset = -1;
        self.active = Some(ActiveIndexes::default());
        let end = self.scan_and_index(FILE_HEADER_LEN, index_interval_bytes, cache, &mut |_| {})?;
        match end.damage {
            Some(reason) => Err(StorageError::corrupt(&self.log_path, end.valid_len, reason)),
            None => Ok(()),
        }
    }

    /// Scans from `start`, indexing every valid batch, and says where the valid data ends.
    fn scan_and_index(
        &mut self,
        start: u64,
        index_interval_bytes: u32,
        cache: &FileCache,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<ScanEnd> {
        let files = self.files(cache)?;
        check_file_header(&files.log, &self.log_path, FileKind::Log)?;
        let file_len = self.size;
        let base_offset = self.base_offset;
        let mut next_offset = self.next_offset;
        let mut batches = Vec::new();
        let end = scan_batches(
            &files.log,
            &self.log_path,
            start,
            file_len,
            &mut |header, position| {
                if header.base_offset < next_offset {
                    return Err(format!(
                        "batch at offset {} after offsets up to {}",
                        header.base_offset,
                        next_offset - 1
                    ));
                }
                if header.last_offset() - base_offset > i64::from(u32::MAX) {
                    return Err(format!(
                        "offset {} too far from the segment's base offset {base_offset}",
                        header.last_offset()
                    ));
                }
                next_offset = header.next_offset();
                batches.push((*header, position));
                Ok(())
            },
        )?;
        for (header, position) in &batches {
            self.index_batch(header, *position, index_interval_bytes);
            on_batch(header);
        }
        Ok(end)
    }

    /// Rebuilds a sealed segment's index files from its data.
    fn rebuild_indexes(&mut self, cache: &FileCache, index_interval_bytes: u32) -> Result<()> {
        self.reindex_all(index_interval_bytes, cache)?;
        self.seal(cache)
    }

    fn index_file_entries(&self) -> Result<(u64, Option<OffsetEntry>)> {
        let (entries, last) =
            last_index_entry(&self.index_path, FileKind::OffsetIndex, OFFSET_ENTRY_LEN)?;
        let Some(last) = last else {
            return Ok((0, None));
        };
        let entry = OffsetEntry::decode(&last);
        if u64::from(entry.position) >= self.size {
            return Err(StorageError::corrupt(
                &self.index_path,
                FILE_HEADER_LEN + (entries - 1) * OFFSET_ENTRY_LEN,
                "index entry past the end of the segment",
            ));
        }
        Ok((entries, Some(entry)))
    }

    fn last_time_entry(&self) -> Result<Option<TimeEntry>> {
        let (_, last) =
            last_index_entry(&self.time_index_path, FileKind::TimeIndex, TIME_ENTRY_LEN)?;
        Ok(last.map(|bytes| TimeEntry::decode(&bytes)))
    }
}

/// Scans whole batches from `start` to `file_len`, validating each (header, CRC) and handing it
/// to `check`, which may refuse it. Stops at the first bad batch and says why.
pub(crate) fn scan_batches(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    check: &mut dyn FnMut(&BatchHeader, u64) -> Result<(), String>,
) -> Result<ScanEnd> {
    // `buf` holds the file's bytes [buf_start, buf_start + buf.len()).
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    let ensure = |buf: &mut Vec<u8>, buf_start: &mut u64, position: u64, len: usize| {
        if position >= *buf_start && (position - *buf_start) as usize + len <= buf.len() {
            return Ok(());
        }
        let read = (SCAN_CHUNK_BYTES.max(len) as u64).min(file_len - position) as usize;
        buf.resize(read, 0);
        *buf_start = position;
        file.read_exact_at(buf, position)
            .map_err(io_err("read", path))
    };
    let mut position = start;
    while position < file_len {
        let damaged = |reason: String| {
            Ok(ScanEnd {
                valid_len: position,
                damage: Some(reason),
            })
        };
        let remaining = file_len - position;
        if remaining < BATCH_HEADER_LEN as u64 {
            return damaged(format!(
                "{remaining} bytes at the end, less than a batch header (torn write)"
            ));
        }
        ensure(&mut buf, &mut buf_start, position, BATCH_HEADER_LEN)?;
        let at = (position - buf_start) as usize;
        let header = match BatchHeader::parse(&buf[at..]) {
            Ok(header) => header,
            Err(err) => return damaged(err.to_string()),
        };
        let total = header.total_len();
        if total as u64 > remaining {
            return damaged(format!(
                "batch of {total} bytes but only {remaining} bytes left (torn write)"
            ));
        }
        if total > SCAN_CHUNK_BYTES {
            // A large batch (or a damaged length field) is checked in chunks, so recovery's
            // memory stays bounded whatever the header claims.
            if let Err(err) = header.check_consistency() {
                return damaged(err.to_string());
            }
            let computed = crc_of_range(
                file,
                path,
                position + tributary_record::CRC_COVERED_FROM as u64,
                position + total as u64,
            )?;
            if computed != header.crc {
                return damaged(format!(
                    "record batch CRC mismatch: stored {:#010x}, computed {computed:#010x}",
                    header.crc
                ));
            }
        } else {
            ensure(&mut buf, &mut buf_start, position, total)?;
            let at = (position - buf_start) as usize;
            if let Err(err) = verify_batch(&buf[at..at + total]) {
                return damaged(err.to_string());
            }
        }
        if let Err(reason) = check(&header, position) {
            return damaged(reason);
        }
        position += total as u64;
    }
    Ok(ScanEnd {
        valid_len: position,
        damage: None,
    })
}

/// CRC-32C of the file's bytes `[from, to)`, read a chunk at a time.
fn crc_of_range(file: &File, path: &Path, from: u64, to: u64) -> Result<u32> {
    let mut chunk = vec![0u8; SCAN_CHUNK_BYTES];
    let mut crc = tributary_record::Crc32c::default();
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(chunk.len());
        file.read_exact_at(&mut chunk[..n], at)
            .map_err(io_err("read", path))?;
        crc.update(&chunk[..n]);
        at += n as u64;
    }
    Ok(crc.finish())
}

/// Entry count of an index file and the bytes of its last entry (header and length checked).
fn last_index_entry(path: &Path, kind: FileKind, entry_len: u64) -> Result<(u64, Option<Vec<u8>>)> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let entries = index_entry_count(&file, path, kind, entry_len)?;
    if entries == 0 {
        return Ok((0, None));
    }
    let mut buf = vec![0u8; entry_len as usize];
    file.read_exact_at(&mut buf, FILE_HEADER_LEN + (entries - 1) * entry_len)
        .map_err(io_err("read", path))?;
    Ok((entries, Some(buf)))
}
