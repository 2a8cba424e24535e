//! A segment: one data file of record batches plus its sparse offset and time indexes.
//!
//! The active segment takes appends and keeps its indexes in memory; sealed segments are
//! immutable and are searched in their index files. A segment's files are opened through the
//! shared [`FileCache`], so an idle segment holds no descriptor.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tributary_record::{BATCH_HEADER_LEN, BatchHeader, NO_TIMESTAMP, TimestampType, verify_batch};

use crate::cache::{FileCache, SegmentFiles};
use crate::error::{Result, StorageError, io_err};
use crate::format::{
    FILE_HEADER_LEN, FileKind, check_file_header, create_with_header, segment_path,
};
use crate::index::{
    OFFSET_ENTRY_LEN, OffsetEntry, TIME_ENTRY_LEN, TimeEntry, floor_entry, index_entry_count,
    read_offset_index, read_time_index, search_offset_index_file, write_offset_index,
    write_time_index,
};

/// Bytes read at a time when scanning a segment during recovery.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// In-memory indexes of the active segment.
#[derive(Debug, Default)]
pub(crate) struct ActiveIndexes {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    bytes_since_entry: u64,
}

/// The smallest step of preallocation (see `Segment::preallocated`).
const PREALLOCATE_MIN: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Segment {
    /// Key of this segment's files in the [`FileCache`].
    pub id: u64,
    pub base_offset: i64,
    /// Bytes of the data file, header included; only whole batches lie below it.
    pub size: u64,
    /// Offset after the last batch (the next segment's base offset for sealed segments opened
    /// after a clean shutdown, which is the same unless compaction left a gap).
    pub next_offset: i64,
    /// Largest batch max timestamp, or [`NO_TIMESTAMP`].
    pub max_timestamp: i64,
    /// When the segment was created (ms since the epoch, wall clock): what `segment.ms` is
    /// measured from. Kafka measures from the first batch's timestamp instead, which makes a
    /// producer with old timestamps roll a segment on every append; we use the broker's clock.
    pub created_ms: i64,
    /// Base offset of the last batch, or -1 while empty.
    last_batch_offset: i64,
    /// Entries in the offset index file (sealed segments).
    index_entries: u64,
    pub active: Option<ActiveIndexes>,
    /// The handle unflushed writes went through, held until they are fsynced: Linux reports a
    /// failed write-back only to descriptors open when it happened, so the fsync must use this
    /// one even if the cache has evicted it.
    pinned: Option<Arc<SegmentFiles>>,
    /// The data file's blocks are allocated (`fallocate`, keeping the file's size) up to here:
    /// writes into allocated blocks skip ext4's delayed-allocation bookkeeping. Nothing past
    /// `size` is ever read; sealing, closing, truncating and opening after a crash give the
    /// blocks past the end back.
    preallocated: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_index_path: PathBuf,
}

impl ActiveIndexes {
    /// Indexes a batch of `batch_len` bytes at `position` whose base offset is
    /// `relative_offset` past the segment's, `max_timestamp` being the segment's largest
    /// timestamp up to and including it: an entry every `index_interval_bytes`.
    pub(crate) fn add(
        &mut self,
        relative_offset: u32,
        position: u64,
        max_timestamp: i64,
        batch_len: u64,
        index_interval_bytes: u32,
    ) {
        if self.bytes_since_entry >= u64::from(index_interval_bytes) {
            self.offsets.push(OffsetEntry {
                relative_offset,
                position: position as u32,
            });
            if self
                .times
                .last()
                .is_none_or(|t| max_timestamp > t.timestamp)
            {
                self.times.push(TimeEntry {
                    timestamp: max_timestamp,
                    relative_offset,
                });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += batch_len;
    }

    /// Writes a sealed segment's index files: the offset entries, and the time entries ended by
    /// `final_entry` (the segment's max timestamp at its last batch), both fsynced.
    pub(crate) fn write_sealed(
        &self,
        index_path: &Path,
        time_index_path: &Path,
        final_entry: Option<TimeEntry>,
    ) -> Result<()> {
        let mut times = self.times.clone();
        if let Some(last) = final_entry
            && times.last() != Some(&last)
        {
            times.push(last);
        }
        let index = write_offset_index(index_path, &self.offsets)?;
        let times = write_time_index(time_index_path, &times)?;
        index.sync_all().map_err(io_err("fsync", index_path))?;
        times.sync_all().map_err(io_err("fsync", time_index_path))
    }
}

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
    /// The size of the data file at `path`, giving back any block allocated past its end (a
    /// crash before the preallocation was released leaves some).
    fn open_len(path: &Path) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(io_err("stat", path))?;
        // st_blocks counts 512-byte units; one extra page covers file-system rounding.
        if meta.blocks() * 512 > meta.len().next_multiple_of(4096) + 4096 {
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(meta.len()))
                .map_err(io_err("trim the preallocated end of", path))?;
        }
        Ok(meta.len())
    }

    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            segment_path(dir, base_offset, FileKind::Log),
            segment_path(dir, base_offset, FileKind::OffsetIndex),
            segment_path(dir, base_offset, FileKind::TimeIndex),
        )
    }

    fn blank(dir: &Path, base_offset: i64, size: u64, active: bool, cache: &FileCache) -> Self {
        let (log_path, index_path, time_index_path) = Self::paths(dir, base_offset);
        Self {
            id: cache.new_id(),
            base_offset,
            size,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            created_ms: 0,
            last_batch_offset: -1,
            index_entries: 0,
            active: active.then(ActiveIndexes::default),
            pinned: None,
            preallocated: 0,
            log_path,
            index_path,
            time_index_path,
        }
    }

    /// Creates a new, empty active segment.
    pub fn create(dir: &Path, base_offset: i64, cache: &FileCache) -> Result<Self> {
        let segment = Self::blank(dir, base_offset, FILE_HEADER_LEN, true, cache);
        if let Err(err) = create_with_header(&segment.log_path, FileKind::Log) {
            // Never leave a data file without its header (a full disk can do that).
            let _ = std::fs::remove_file(&segment.log_path);
            return Err(err);
        }
        // Stale index files of an earlier segment with this base offset must not be trusted.
        remove_if_exists(&segment.index_path)?;
        remove_if_exists(&segment.time_index_path)?;
        Ok(segment)
    }

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
    fn final_time_entry(&self) -> Option<TimeEntry> {
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
    fn reindex_all(&mut self, index_interval_bytes: u32, cache: &FileCache) -> Result<()> {
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

    /// Records a batch just written at `position` in the in-memory indexes and metadata.
    pub fn index_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        let relative_offset = (header.base_offset - self.base_offset) as u32;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.next_offset();
        self.last_batch_offset = header.base_offset;
        self.size = self.size.max(position + header.total_len() as u64);
        let max_timestamp = self.max_timestamp;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        active.add(
            relative_offset,
            position,
            max_timestamp,
            header.total_len() as u64,
            index_interval_bytes,
        );
    }

    /// Entries in the offset index, in memory (active) or in its file (sealed).
    pub fn index_entry_count(&self) -> u64 {
        self.active
            .as_ref()
            .map_or(self.index_entries, |a| a.offsets.len() as u64)
    }

    /// Entries in the active segment's in-memory offset index (0 when sealed).
    pub fn index_entries_in_memory(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.offsets.len())
    }

    /// This segment's open files (through the cache).
    pub fn files(&self, cache: &FileCache) -> Result<Arc<SegmentFiles>> {
        cache.get_or_open(self.id, || {
            let writable = self.active.is_some();
            let log = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&self.log_path)
                .map_err(io_err("open", &self.log_path))?;
            let index = if writable {
                None
            } else {
                let file =
                    File::open(&self.index_path).map_err(io_err("open", &self.index_path))?;
                Some((file, self.index_entries))
            };
            Ok(SegmentFiles { log, index })
        })
    }

    /// Writes `parts` (together whole, validated batches) at the end of the data file in one
    /// vectored write, first allocating the file's blocks ahead when the write passes what is
    /// allocated: `preallocate` bytes at a time, but never more than an eighth of the segment's
    /// size (0: never). On failure the file is cut back so no partial batch remains.
    pub fn write(
        &mut self,
        cache: &FileCache,
        parts: &[std::io::IoSlice<'_>],
        preallocate: u64,
    ) -> Result<u64> {
        let files = match &self.pinned {
            Some(files) => files.clone(),
            None => self.files(cache)?,
        };
        self.pinned = Some(files.clone());
        let position = self.size;
        let end = position + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        if end > self.preallocated {
            // Never more ahead than an eighth of what the segment holds: a partition written
            // rarely never preallocates, and 10,000 partitions cannot hold 4 MiB each for
            // nothing.
            let chunk = preallocate.min(position / 8) / PREALLOCATE_MIN * PREALLOCATE_MIN;
            if chunk > 0 {
                self.preallocate(&files.log, position, end, chunk);
            }
        }
        if let Err(err) = write_all_vectored_at(&files.log, parts, position) {
            let err = StorageError::io("append to", &self.log_path, err);
            // Best effort: the size we track already excludes the partial write, and recovery
            // would cut it anyway; trimming now keeps the file clean for a retry.
            let _ = files.log.set_len(position);
            self.preallocated = 0;
            return Err(err);
        }
        Ok(position)
    }

    /// Allocates the blocks from `position` to at least `end` in steps of `chunk`, keeping the
    /// file's size. Best effort: a file system without `fallocate`, or a full disk, leaves the
    /// write to allocate as it goes (and to fail with ENOSPC by itself if it must).
    fn preallocate(&mut self, file: &File, position: u64, end: u64, chunk: u64) {
        let from = self.preallocated.max(position);
        let len = (end - from).div_ceil(chunk) * chunk;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, from, len) {
            Ok(()) => self.preallocated = from + len,
            Err(rustix::io::Errno::NOSPC) => {}
            Err(err) => {
                // Not supported here: stop trying for this segment.
                tracing::debug!(segment = %self.log_path.display(), error = %err, "no preallocation");
                self.preallocated = u64::MAX;
            }
        }
    }

    /// Gives back the blocks allocated past the end of the data (see `preallocated`): at
    /// sealing and at a clean close.
    pub fn release_unused(&mut self, cache: &FileCache) -> Result<()> {
        if self.preallocated > self.size && self.preallocated != u64::MAX {
            let files = match &self.pinned {
                Some(files) => files.clone(),
                None => self.files(cache)?,
            };
            files
                .log
                .set_len(self.size)
                .map_err(io_err("trim the preallocated end of", &self.log_path))?;
        }
        self.preallocated = 0;
        Ok(())
    }

    /// Makes the data file durable.
    pub fn flush(&mut self, cache: &FileCache) -> Result<()> {
        let files = match &self.pinned {
            Some(files) => files.clone(),
            None => self.files(cache)?,
        };
        files
            .log
            .sync_data()
            .map_err(io_err("fsync", &self.log_path))?;
        self.pinned = None;
        Ok(())
    }

    /// Writes the active segment's indexes, ending the time index with the final entry, and
    /// fsyncs them (at seal and at a clean close, whose marker promises they are complete).
    pub fn write_final_indexes(&self) -> Result<()> {
        let Some(active) = self.active.as_ref() else {
            return Ok(());
        };
        active.write_sealed(
            &self.index_path,
            &self.time_index_path,
            self.final_time_entry(),
        )
    }

    /// Turns the active segment into a sealed one: indexes written and fsynced (see
    /// [`Self::write_final_indexes`]), data fsynced. On failure (a full disk) the segment stays
    /// active and nothing in memory changes.
    pub fn seal(&mut self, cache: &FileCache) -> Result<()> {
        let Some(entries) = self.active.as_ref().map(|a| a.offsets.len() as u64) else {
            return Ok(());
        };
        self.write_final_indexes()?;
        self.release_unused(cache)?;
        self.flush(cache)?;
        self.index_entries = entries;
        self.active = None;
        self.pinned = None;
        // Reopen read-only, with the index file.
        cache.invalidate(self.id);
        Ok(())
    }

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
    fn locate(&self, files: &SegmentFiles, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
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

    /// Cuts the segment so that it ends before the batch holding `offset`; turns it back into
    /// the active segment (indexes in memory). Returns the new next offset.
    pub fn truncate_to(
        &mut self,
        cache: &FileCache,
        offset: i64,
        index_interval_bytes: u32,
    ) -> Result<i64> {
        let files = self.files(cache)?;
        let cut = self
            .locate(&files, offset)?
            .map_or(self.size, |(position, _)| position);
        drop(files);
        cache.invalidate(self.id);
        let file = OpenOptions::new()
            .write(true)
            .open(&self.log_path)
            .map_err(io_err("open", &self.log_path))?;
        file.set_len(cut)
            .map_err(io_err("truncate", &self.log_path))?;
        file.sync_all().map_err(io_err("fsync", &self.log_path))?;
        // Rebuild the in-memory indexes from the remaining data (bounded by one segment).
        self.size = cut;
        self.preallocated = 0;
        self.id = cache.new_id();
        self.reindex_all(index_interval_bytes, cache)?;
        Ok(self.next_offset)
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

    /// Removes the segment's files.
    pub fn delete(self, cache: &FileCache) -> Result<()> {
        cache.invalidate(self.id);
        for path in [&self.log_path, &self.index_path, &self.time_index_path] {
            remove_if_exists(path)?;
        }
        Ok(())
    }

    /// Removes the files of the segment with `base_offset` in `dir` without opening it.
    pub fn delete_files(dir: &Path, base_offset: i64) -> Result<()> {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex] {
            remove_if_exists(&segment_path(dir, base_offset, kind))?;
        }
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Birth time of the data file (ms since the epoch) where the file system records one.
    pub fn born_ms(&self) -> Option<i64> {
        let born = std::fs::metadata(&self.log_path)
            .and_then(|m| m.created())
            .ok()?;
        born.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64)
    }

    /// Modification time of the data file, in ms since the epoch (for retention of segments
    /// without timestamps).
    pub fn modified_ms(&self) -> Result<i64> {
        let modified = std::fs::metadata(&self.log_path)
            .and_then(|m| m.modified())
            .map_err(io_err("stat", &self.log_path))?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64))
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

/// The most pieces one `pwritev` takes (IOV_MAX on Linux).
const IOV_MAX: usize = 1024;

/// `pwritev` of every part, in order, from `position`, until all is written.
fn write_all_vectored_at(
    file: &File,
    parts: &[std::io::IoSlice<'_>],
    mut position: u64,
) -> std::io::Result<()> {
    if let [one] = parts {
        return file.write_all_at(one, position);
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    if parts.len() <= IOV_MAX {
        // The common case: one call writes it all, with no copy of the piece list.
        match rustix::io::pwritev(file, parts, position) {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => written = n,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    // A short write, EINTR, or more pieces than one call takes: go on after what is written.
    let mut owned: Vec<std::io::IoSlice<'_>> = parts.to_vec();
    let mut parts = &mut owned[..];
    std::io::IoSlice::advance_slices(&mut parts, written);
    position += written as u64;
    while !parts.is_empty() {
        let now = parts.len().min(IOV_MAX);
        match rustix::io::pwritev(file, &parts[..now], position) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                position += n as u64;
                std::io::IoSlice::advance_slices(&mut parts, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
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

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StorageError::io("remove", path, err)),
    }
}
