//! The sparse offset and time indexes of a segment.
//!
//! The active segment keeps both indexes in memory and writes them out when it is flushed,
//! sealed or closed; sealed segments are searched in their files with positioned reads, so an
//! index costs no memory until it is used and nothing is ever memory-mapped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, StorageError, io_err};
use crate::format::{FILE_HEADER_LEN, FileKind, check_file_header, create_with_header};

/// One offset index entry: a batch starting at `position` holds offsets from
/// `base_offset + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset of the batch's first record, minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the data file.
    pub position: u32,
}

/// One time index entry: every batch before the one at `relative_offset` has a max timestamp of
/// at most `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp seen in the segment up to and including that batch.
    pub timestamp: i64,
    /// Base offset of that batch, minus the segment's base offset.
    pub relative_offset: u32,
}

pub(crate) const OFFSET_ENTRY_LEN: u64 = 8;
pub(crate) const TIME_ENTRY_LEN: u64 = 12;

impl OffsetEntry {
    fn encode(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..].copy_from_slice(&self.position.to_be_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")),
        }
    }
}

impl TimeEntry {
    fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..].copy_from_slice(&self.relative_offset.to_be_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Self {
        Self {
            timestamp: i64::from_be_bytes(buf[..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// The last entry of `entries` whose key is at most `target` (entries sorted by key).
pub(crate) fn floor_entry<T: Copy>(
    entries: &[T],
    target: u64,
    key: impl Fn(&T) -> u64,
) -> Option<T> {
    let after = entries.partition_point(|e| key(e) <= target);
    after.checked_sub(1).map(|i| entries[i])
}

/// Writes an offset index file (header and entries).
pub(crate) fn write_offset_index(path: &Path, entries: &[OffsetEntry]) -> Result<File> {
    let file = create_with_header(path, FileKind::OffsetIndex)?;
    let mut buf = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN as usize);
    for entry in entries {
        buf.extend_from_slice(&entry.encode());
    }
    file.write_all_at(&buf, FILE_HEADER_LEN)
        .map_err(io_err("write", path))?;
    Ok(file)
}

/// Writes a time index file (header and entries).
pub(crate) fn write_time_index(path: &Path, entries: &[TimeEntry]) -> Result<File> {
    let file = create_with_header(path, FileKind::TimeIndex)?;
    let mut buf = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN as usize);
    for entry in entries {
        buf.extend_from_slice(&entry.encode());
    }
    file.write_all_at(&buf, FILE_HEADER_LEN)
        .map_err(io_err("write", path))?;
    Ok(file)
}

/// Reads every entry of an offset index file, checking its header, its length and that entries
/// strictly increase and stay inside `data_len` bytes of segment data.
pub(crate) fn read_offset_index(path: &Path, data_len: u64) -> Result<Vec<OffsetEntry>> {
    let bytes = read_index_file(path, FileKind::OffsetIndex, OFFSET_ENTRY_LEN)?;
    let entries: Vec<OffsetEntry> = bytes
        .chunks_exact(OFFSET_ENTRY_LEN as usize)
        .map(OffsetEntry::decode)
        .collect();
    for (i, pair) in entries.windows(2).enumerate() {
        if pair[1].relative_offset <= pair[0].relative_offset
            || pair[1].position <= pair[0].position
        {
            return Err(StorageError::corrupt(
                path,
                FILE_HEADER_LEN + (i as u64 + 1) * OFFSET_ENTRY_LEN,
                "offset index entries do not increase",
            ));
        }
    }
    if let Some(last) = entries.last()
        && u64::from(last.position) >= data_len
    {
        return Err(StorageError::corrupt(
            path,
            FILE_HEADER_LEN + (entries.len() as u64 - 1) * OFFSET_ENTRY_LEN,
            format!(
                "offset index points at byte {} of a {data_len}-byte segment",
                last.position
            ),
        ));
    }
    Ok(entries)
}

/// Reads every entry of a time index file, checking its header and length.
pub(crate) fn read_time_index(path: &Path) -> Result<Vec<TimeEntry>> {
    let bytes = read_index_file(path, FileKind::TimeIndex, TIME_ENTRY_LEN)?;
    Ok(bytes
        .chunks_exact(TIME_ENTRY_LEN as usize)
        .map(TimeEntry::decode)
        .collect())
}

fn read_index_file(path: &Path, kind: FileKind, entry_len: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let entries = index_entry_count(&file, path, kind, entry_len)?;
    let mut bytes = vec![0u8; (entries * entry_len) as usize];
    file.read_exact_at(&mut bytes, FILE_HEADER_LEN)
        .map_err(io_err("read", path))?;
    Ok(bytes)
}

/// Checks an index file's header and that its length is a whole number of entries; returns
/// the number of entries.
pub(crate) fn index_entry_count(
    file: &File,
    path: &Path,
    kind: FileKind,
    entry_len: u64,
) -> Result<u64> {
    check_file_header(file, path, kind)?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    // The header check read 8 bytes, so `len >= FILE_HEADER_LEN`.
    let body = len - FILE_HEADER_LEN;
    if !body.is_multiple_of(entry_len) {
        return Err(StorageError::corrupt(
            path,
            len,
            format!("index length {len} is not a header plus whole {entry_len}-byte entries"),
        ));
    }
    Ok(body / entry_len)
}

/// Binary-searches an offset index file for the last entry at or before `relative_offset`,
/// with positioned reads (no memory kept).
pub(crate) fn search_offset_index_file(
    file: &File,
    path: &Path,
    entry_count: u64,
    relative_offset: u32,
) -> Result<Option<OffsetEntry>> {
    let (mut low, mut high) = (0u64, entry_count); // answer in [low, high)
    let mut best = None;
    let mut buf = [0u8; OFFSET_ENTRY_LEN as usize];
    while low < high {
        let mid = low + (high - low) / 2;
        file.read_exact_at(&mut buf, FILE_HEADER_LEN + mid * OFFSET_ENTRY_LEN)
            .map_err(io_err("read", path))?;
        let entry = OffsetEntry::decode(&buf);
        if entry.relative_offset <= relative_offset {
            best = Some(entry);
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(best)
}
