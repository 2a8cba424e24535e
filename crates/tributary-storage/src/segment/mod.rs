//! A segment: one data file of record batches plus its sparse offset and time indexes.
//!
//! The active segment takes appends and keeps its indexes in memory; sealed segments are
//! immutable and are searched in their index files. A segment's files are opened through the
//! shared [`FileCache`], so an idle segment holds no descriptor.
//!
//! Children: `open` (opening, recovery scans and index checks), `read` (finding and reading
//! batches), `indexes` (the active segment's in-memory indexes).

mod indexes;
mod open;
mod read;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tributary_record::{BatchHeader, NO_TIMESTAMP};

use crate::cache::{FileCache, SegmentFiles};
use crate::error::{Result, StorageError, io_err};
use crate::format::{FILE_HEADER_LEN, FileKind, create_with_header, segment_path};

pub(crate) use indexes::ActiveIndexes;
pub(crate) use open::scan_batches;

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

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StorageError::io("remove", path, err)),
    }
}
