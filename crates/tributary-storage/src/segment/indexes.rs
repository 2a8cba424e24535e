//! The active segment's sparse indexes, kept in memory until it is sealed.

use std::path::Path;

use crate::error::{Result, io_err};
use crate::index::{OffsetEntry, TimeEntry, write_offset_index, write_time_index};

/// In-memory indexes of the active segment.
#[derive(Debug, Default)]
pub(crate) struct ActiveIndexes {
    pub(super) offsets: Vec<OffsetEntry>,
    pub(super) times: Vec<TimeEntry>,
    pub(super) bytes_since_entry: u64,
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
