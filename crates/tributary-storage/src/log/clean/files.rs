//! The cleaner's files: segments read batch by batch, cleaned segments written as
//! `.cleaned` files, and the swap protocol's renames, including the completion or rollback of a
//! swap interrupted by a crash (at open).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tributary_record::{BATCH_HEADER_LEN, BatchHeader, NO_TIMESTAMP};

use crate::error::{Result, StorageError, io_err};
use crate::format::{
    FILE_HEADER_LEN, FileKind, check_file_header, create_with_header, parse_segment_name,
    segment_path, sync_dir,
};
use crate::index::TimeEntry;
use crate::log::MAX_SEGMENT_OFFSET_SPAN;
use crate::segment::{ActiveIndexes, Segment, remove_if_exists, scan_batches};

pub(super) const CLEANED_SUFFIX: &str = ".cleaned";
pub(super) const SWAP_SUFFIX: &str = ".swap";
/// Bytes read at a time when only batch headers are wanted.
const HEADER_WINDOW_BYTES: usize = 16 << 10;

/// Reads the batches of a segment file in order, through a reusable buffer: whole batches in
/// chunks of `chunk` bytes, or only headers (small windows) when the records are not needed.
pub(super) struct SegmentReader<'b> {
    file: File,
    path: &'b Path,
    end: u64,
    position: u64,
    buf: &'b mut Vec<u8>,
    buf_start: u64,
    buf_len: usize,
    chunk: usize,
    current: (u64, usize),
}

impl<'b> SegmentReader<'b> {
    pub(super) fn open(
        path: &'b Path,
        end: u64,
        buf: &'b mut Vec<u8>,
        chunk: usize,
    ) -> Result<Self> {
        let file = File::open(path).map_err(io_err("open", path))?;
        check_file_header(&file, path, FileKind::Log)?;
        Ok(Self {
            file,
            path,
            end,
            position: FILE_HEADER_LEN,
            buf,
            buf_start: 0,
            buf_len: 0,
            chunk,
            current: (0, 0),
        })
    }

    pub(super) fn corrupt(&self, reason: String) -> StorageError {
        StorageError::corrupt(self.path, self.current.0, reason)
    }

    /// Makes the file's bytes `[at, at + need)` available in the buffer, reading `want` bytes
    /// (or what is left of the file) when they are not.
    fn fill(&mut self, at: u64, need: usize, want: usize) -> Result<()> {
        if at >= self.buf_start && at + need as u64 <= self.buf_start + self.buf_len as u64 {
            return Ok(());
        }
        let len = (want.max(need) as u64).min(self.end - at) as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.file
            .read_exact_at(&mut self.buf[..len], at)
            .map_err(io_err("read", self.path))?;
        self.buf_start = at;
        self.buf_len = len;
        Ok(())
    }

    /// The next batch's header, with its bytes available from [`Self::batch`] if `body`.
    pub(super) fn next(&mut self, body: bool) -> Result<Option<BatchHeader>> {
        if self.position >= self.end {
            return Ok(None);
        }
        let at = self.position;
        self.current = (at, 0);
        let remaining = self.end - at;
        if remaining < BATCH_HEADER_LEN as u64 {
            return Err(self.corrupt(format!(
                "{remaining} bytes at the end of a sealed segment, less than a batch header"
            )));
        }
        let window = if body {
            self.chunk
        } else {
            HEADER_WINDOW_BYTES
        };
        self.fill(at, BATCH_HEADER_LEN, window)?;
        let offset = (at - self.buf_start) as usize;
        let header = BatchHeader::parse(&self.buf[offset..offset + BATCH_HEADER_LEN])
            .map_err(|e| self.corrupt(e.to_string()))?;
        let total = header.total_len();
        if total as u64 > remaining {
            return Err(self.corrupt(format!(
                "batch of {total} bytes runs past the end of the segment"
            )));
        }
        if body {
            self.fill(at, total, self.chunk)?;
        }
        self.current = (at, total);
        self.position = at + total as u64;
        Ok(Some(header))
    }

    /// The bytes of the batch [`Self::next`] returned with `body`.
    pub(super) fn batch(&self) -> &[u8] {
        let offset = (self.current.0 - self.buf_start) as usize;
        &self.buf[offset..offset + self.current.1]
    }

    pub(super) fn at_end(&self) -> bool {
        self.position >= self.end
    }
}

/// A cleaned segment's files, written and fsynced.
#[derive(Debug)]
pub(super) struct CleanedSegment {
    pub(super) dir: PathBuf,
    pub(super) base_offset: i64,
    pub(super) size: u64,
    /// Some batch differs from the input, or some was removed.
    pub(super) changed: bool,
    /// The earliest delete horizon among its batches.
    pub(super) horizon: Option<i64>,
}

impl CleanedSegment {
    pub(super) fn remove(&self) {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex] {
            for suffix in [CLEANED_SUFFIX, SWAP_SUFFIX] {
                let _ = std::fs::remove_file(suffixed(&self.dir, self.base_offset, kind, suffix));
            }
        }
    }
}

/// Writes a cleaned segment: buffered data, indexes built as [`Segment`] builds them.
pub(super) struct CleanedWriter {
    dir: PathBuf,
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    buf: Vec<u8>,
    chunk: usize,
    /// Bytes written to the file so far (header included).
    flushed: u64,
    /// Bytes of the segment so far, buffered ones included.
    size: u64,
    indexes: ActiveIndexes,
    interval: u32,
    max_timestamp: i64,
    last_batch_offset: i64,
    changed: bool,
    horizon: Option<i64>,
}

impl CleanedWriter {
    pub(super) fn create(
        dir: &Path,
        base_offset: i64,
        interval: u32,
        mut buf: Vec<u8>,
        chunk: usize,
    ) -> Result<Self> {
        let log_path = suffixed(dir, base_offset, FileKind::Log, CLEANED_SUFFIX);
        let file = create_with_header(&log_path, FileKind::Log)?;
        buf.clear();
        Ok(Self {
            dir: dir.to_path_buf(),
            base_offset,
            log_path,
            file,
            buf,
            chunk,
            flushed: FILE_HEADER_LEN,
            size: FILE_HEADER_LEN,
            indexes: ActiveIndexes::default(),
            interval,
            max_timestamp: NO_TIMESTAMP,
            last_batch_offset: -1,
            changed: false,
            horizon: None,
        })
    }

    pub(super) fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        changed: bool,
    ) -> Result<()> {
        let relative = header.base_offset - self.base_offset;
        if !(0..=MAX_SEGMENT_OFFSET_SPAN).contains(&relative)
            || header.base_offset <= self.last_batch_offset
        {
            return Err(StorageError::corrupt(
                &self.log_path,
                self.size,
                format!(
                    "batch at offset {} does not fit a segment based at {} after offset {}",
                    header.base_offset, self.base_offset, self.last_batch_offset
                ),
            ));
        }
        if self.size + batch.len() as u64 > u64::from(u32::MAX) {
            return Err(StorageError::corrupt(
                &self.log_path,
                self.size,
                "cleaned segment outgrows 32-bit positions",
            ));
        }
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.indexes.add(
            relative as u32,
            self.size,
            self.max_timestamp,
            batch.len() as u64,
            self.interval,
        );
        self.last_batch_offset = header.base_offset;
        self.changed |= changed;
        self.buf.extend_from_slice(batch);
        self.size += batch.len() as u64;
        if self.buf.len() >= self.chunk {
            self.write_buffered()?;
        }
        Ok(())
    }

    pub(super) fn mark_changed(&mut self) {
        self.changed = true;
    }

    pub(super) fn note_horizon(&mut self, horizon: Option<i64>) {
        if let Some(h) = horizon {
            self.horizon = Some(self.horizon.map_or(h, |old| old.min(h)));
        }
    }

    fn write_buffered(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.flushed)
            .map_err(io_err("write", &self.log_path))?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and the indexes, fsyncs all three files.
    pub(super) fn finish(mut self) -> Result<(CleanedSegment, Vec<u8>)> {
        let result = (|| {
            self.write_buffered()?;
            self.file
                .sync_all()
                .map_err(io_err("fsync", &self.log_path))?;
            let final_entry = (self.max_timestamp != NO_TIMESTAMP && self.last_batch_offset >= 0)
                .then(|| TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset: (self.last_batch_offset - self.base_offset) as u32,
                });
            self.indexes.write_sealed(
                &suffixed(
                    &self.dir,
                    self.base_offset,
                    FileKind::OffsetIndex,
                    CLEANED_SUFFIX,
                ),
                &suffixed(
                    &self.dir,
                    self.base_offset,
                    FileKind::TimeIndex,
                    CLEANED_SUFFIX,
                ),
                final_entry,
            )
        })();
        let segment = CleanedSegment {
            dir: self.dir.clone(),
            base_offset: self.base_offset,
            size: self.size,
            changed: self.changed,
            horizon: self.horizon,
        };
        match result {
            Ok(()) => Ok((segment, std::mem::take(&mut self.buf))),
            Err(err) => {
                segment.remove();
                Err(err)
            }
        }
    }

    /// Removes the files; returns the buffer for reuse.
    pub(super) fn discard(mut self) -> Vec<u8> {
        CleanedSegment {
            dir: self.dir.clone(),
            base_offset: self.base_offset,
            size: 0,
            changed: false,
            horizon: None,
        }
        .remove();
        std::mem::take(&mut self.buf)
    }
}

/// `<dir>/<base>.<kind><suffix>`.
pub(super) fn suffixed(dir: &Path, base_offset: i64, kind: FileKind, suffix: &str) -> PathBuf {
    let mut path = segment_path(dir, base_offset, kind).into_os_string();
    path.push(suffix);
    PathBuf::from(path)
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err("rename into place", to))
}

/// Removes leftover `.cleaned` files (best effort: they are removed at the next open anyway).
pub(super) fn remove_cleaned_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(CLEANED_SUFFIX))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// At open, before the segments are listed: deletes `.cleaned` files (a clean that had not
/// committed) and `.swap` indexes without a `.log.swap` (likewise), and completes every swap
/// whose `.log.swap` exists (committed): the segments it replaces (based in its offset range)
/// are deleted and the swap files renamed into place. Returns how many swaps were completed.
pub(in crate::log) fn finish_interrupted_clean(dir: &Path) -> Result<usize> {
    let mut log_swaps = Vec::new();
    let mut index_swaps = Vec::new();
    let mut bases = Vec::new();
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(CLEANED_SUFFIX) {
            remove_if_exists(&entry.path())?;
            removed = true;
        } else if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            if let Some(base) = parse_segment_name(stem) {
                log_swaps.push(base);
            } else {
                let base = stem
                    .strip_suffix(".index")
                    .or_else(|| stem.strip_suffix(".timeindex"))
                    .and_then(|s| parse_segment_name(&format!("{s}.log")));
                index_swaps.push((entry.path(), base));
            }
        } else if let Some(base) = parse_segment_name(name) {
            bases.push(base);
        }
    }
    log_swaps.sort_unstable();
    for &base in &log_swaps {
        let swap = suffixed(dir, base, FileKind::Log, SWAP_SUFFIX);
        let end = swap_end_offset(&swap, base)?;
        for &old in bases.iter().filter(|&&b| b > base && b < end) {
            tracing::warn!(dir = %dir.display(), base, old, "completing an interrupted compaction: deleting a replaced segment");
            Segment::delete_files(dir, old)?;
        }
        for kind in [FileKind::OffsetIndex, FileKind::TimeIndex] {
            let from = suffixed(dir, base, kind, SWAP_SUFFIX);
            if from.exists() {
                rename(&from, &segment_path(dir, base, kind))?;
            }
        }
        sync_dir(dir)?;
        rename(&swap, &segment_path(dir, base, FileKind::Log))?;
        sync_dir(dir)?;
        tracing::warn!(dir = %dir.display(), base, end, "completed a compaction swap interrupted by a crash");
    }
    for (path, base) in index_swaps {
        if base.is_none_or(|b| !log_swaps.contains(&b)) {
            remove_if_exists(&path)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(log_swaps.len())
}

/// The offset after the last batch of a committed swap file, every batch checked. A damaged swap
/// file cannot be completed nor rolled back (the segments it replaces may be gone): an error.
fn swap_end_offset(path: &Path, base: i64) -> Result<i64> {
    let file = File::open(path).map_err(io_err("open", path))?;
    check_file_header(&file, path, FileKind::Log)?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut end = base;
    let scan = scan_batches(&file, path, FILE_HEADER_LEN, len, &mut |header, _| {
        if header.base_offset < end {
            return Err(format!(
                "batch at offset {} after offsets up to {}",
                header.base_offset,
                end - 1
            ));
        }
        end = header.next_offset();
        Ok(())
    })?;
    if let Some(reason) = scan.damage {
        return Err(StorageError::corrupt(
            path,
            scan.valid_len,
            format!("committed compaction swap file is damaged: {reason}"),
        ));
    }
    Ok(end.max(base + 1))
}
