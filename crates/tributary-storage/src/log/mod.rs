//! [`Log`]: one partition's log, a sequence of segments in one directory.
//!
//! The `Log` type and its state live here; each concern that changes them is a child module
//! (open and recovery, append, read, truncation, retention, compaction), so every one of them
//! sees the state without it being exposed to the rest of the crate.

mod append;
mod checkpoint;
mod clean;
mod open;
mod read;
mod resources;
mod retention;
mod truncate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use append::AppendInfo;
pub use clean::{
    CLEANER_CHECKPOINT_FILE, CleanFault, CleanOutcome, CleanableStats, Cleaner, CleanerConfig,
    check_keys,
};
pub use open::OpenReport;
pub use read::{ReadResult, TimestampOffset};
pub use resources::{Clock, DEFAULT_PREALLOCATE_BYTES, LogResources, ManualClock, SystemClock};
pub use retention::RetentionOutcome;

use crate::config::LogConfig;
use crate::epoch::{EpochCache, EpochEndOffset};
use crate::error::{Result, StorageError, io_err};
use crate::format::{FILE_HEADER_LEN, sync_dir, write_atomic};
use crate::segment::Segment;
use checkpoint::{CleanerCheckpoint, LogCheckpoint, PendingTruncation};

/// Offsets in one segment stay within this distance of its base offset (Kafka's bound: the
/// indexes store 32-bit relative offsets).
const MAX_SEGMENT_OFFSET_SPAN: i64 = i32::MAX as i64;
/// The active segment rolls when its in-memory offset index holds this many entries (Kafka's
/// `segment.index.bytes` default of 10 MiB, at 8 bytes an entry): bounded memory per partition.
const MAX_ACTIVE_INDEX_ENTRIES: usize = 10 * 1024 * 1024 / 8;

/// Name of the marker a clean close leaves in the partition directory.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const CLEAN_SHUTDOWN_CONTENTS: &[u8] = b"tributary-clean-shutdown 1\n";

/// One partition's log: an ordered, append-only sequence of Kafka v2 record batches with dense,
/// strictly increasing offsets, in segment files under one directory.
///
/// All methods take `&self`; appends and structural changes are serialised, reads run
/// concurrently with each other. Dropping a `Log` without [`Log::close`] is what a crash looks
/// like: the next open recovers from the recovery point.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    resources: LogResources,
    state: RwLock<State>,
    open_report: OpenReport,
    /// Held by a clean from start to end (one clean at a time); taken before `state`.
    cleaning: Mutex<()>,
    /// Set by close and delete: a running clean stops at its next batch.
    clean_abort: AtomicBool,
}

#[derive(Debug)]
struct State {
    config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty while open.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    /// Everything below it is fsynced.
    recovery_point: i64,
    epochs: EpochCache,
    unflushed_records: u64,
    first_unflushed_ms: Option<i64>,
    /// A file was created in the directory since its last fsync: the next flush syncs it, so
    /// flushed data never sits in a file whose name could vanish in a power loss.
    dir_dirty: bool,
    closed: bool,
    /// The cleaner's first dirty offset and earliest delete horizon (as checkpointed).
    cleaner: CleanerCheckpoint,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log has an active segment")
    }

    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Moves the cleaner's first dirty offset back to `offset` if it is past it (the log was
    /// truncated: what comes next at those offsets is new, dirty data).
    fn reset_cleaner_to(&mut self, dir: &Path, offset: i64) -> Result<()> {
        if self.cleaner.first_dirty_offset <= offset {
            return Ok(());
        }
        self.cleaner.first_dirty_offset = offset;
        self.cleaner.store(dir)
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.checkpoint_pending(dir, None)
    }

    fn checkpoint_pending(&self, dir: &Path, pending: Option<PendingTruncation>) -> Result<()> {
        LogCheckpoint {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
            pending,
        }
        .store(dir)
    }
}

impl Log {
    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the last open went (clean, segments scanned, bytes cut).
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(StorageError::Closed {
                path: self.dir.clone(),
            });
        }
        Ok(state)
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        let state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(StorageError::Closed {
                path: self.dir.clone(),
            });
        }
        Ok(state)
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .log_start_offset
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .log_end_offset()
    }

    /// Offset below which everything is fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .recovery_point
    }

    /// Data bytes in all segments (file headers excluded).
    pub fn size_bytes(&self) -> u64 {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .segments
            .values()
            .map(|s| s.size - FILE_HEADER_LEN)
            .sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .segments
            .len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.segments.keys().copied().collect()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .config
            .clone()
    }

    /// Replaces the configuration (topic config altered); takes effect from the next operation.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.write_state()?.config = config;
        Ok(())
    }

    /// Makes every appended batch durable (fsync) and moves the recovery point to the log end.
    pub fn flush(&self) -> Result<()> {
        let mut state = self.write_state()?;
        Self::flush_locked(&mut state, &self.dir, &self.resources)
    }

    /// Flushes if `flush.ms` has passed since the oldest unflushed append (call periodically).
    pub fn flush_if_due(&self) -> Result<bool> {
        let due = |state: &State, now: i64| {
            state
                .config
                .flush_ms
                .zip(state.first_unflushed_ms)
                .is_some_and(|(ms, since)| now - since >= ms)
        };
        // Most calls find nothing to do: decide under the read lock.
        if !due(&*self.read_state()?, self.resources.clock.now_ms()) {
            return Ok(false);
        }
        let mut state = self.write_state()?;
        let now = self.resources.clock.now_ms();
        let due = state
            .config
            .flush_ms
            .zip(state.first_unflushed_ms)
            .is_some_and(|(ms, since)| now - since >= ms);
        if due {
            Self::flush_locked(&mut state, &self.dir, &self.resources)?;
        }
        Ok(due)
    }

    fn flush_locked(state: &mut State, dir: &Path, resources: &LogResources) -> Result<()> {
        let log_end_offset = state.log_end_offset();
        if state.recovery_point >= log_end_offset && state.unflushed_records == 0 {
            return Ok(());
        }
        state.active_mut().flush(&resources.files)?;
        if state.dir_dirty {
            sync_dir(dir)?;
            // The partition directory's own name, too (created by the first open).
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            state.dir_dirty = false;
        }
        state.recovery_point = log_end_offset;
        state.unflushed_records = 0;
        state.first_unflushed_ms = None;
        Ok(())
    }

    /// Writes the recovery point and log start offset to the checkpoint file (call
    /// periodically: a stale recovery point only makes recovery scan more).
    pub fn checkpoint(&self) -> Result<()> {
        let state = self.read_state()?;
        state.checkpoint(&self.dir)
    }

    /// Records that `epoch` starts at `start_offset` (a leader taking over assigns its epoch at
    /// its log end offset). Older epochs are ignored.
    pub fn assign_epoch_start_offset(&self, epoch: i32, start_offset: i64) -> Result<()> {
        self.write_state()?.epochs.assign(epoch, start_offset)?;
        Ok(())
    }

    /// The newest leader epoch in the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .epochs
            .latest_epoch()
    }

    /// KIP-101/279: the largest epoch at or below `epoch` and the offset where it ends.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> EpochEndOffset {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.epochs.end_offset_for(epoch, state.log_end_offset())
    }

    /// The leader-epoch cache: (epoch, start offset) pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.epochs.entries().to_vec()
    }

    /// Flushes everything, writes the indexes and checkpoints, and leaves the clean-shutdown
    /// marker so the next open needs no scan.
    pub fn close(&self) -> Result<()> {
        let _cleaning = self.stop_cleaning();
        let mut state = self.write_state()?;
        state.active_mut().release_unused(&self.resources.files)?;
        Self::flush_locked(&mut state, &self.dir, &self.resources)?;
        state.active().write_final_indexes()?;
        state.checkpoint(&self.dir)?;
        state.epochs.ensure_written()?;
        write_atomic(&self.dir.join(CLEAN_SHUTDOWN_FILE), CLEAN_SHUTDOWN_CONTENTS)?;
        for segment in state.segments.values() {
            self.resources.files.invalidate(segment.id);
        }
        state.closed = true;
        Ok(())
    }

    /// Closes the log and removes its directory (the partition was deleted or moved away).
    pub fn delete(&self) -> Result<()> {
        let _cleaning = self.stop_cleaning();
        let mut state = self.write_state()?;
        for segment in state.segments.values() {
            self.resources.files.invalidate(segment.id);
        }
        state.closed = true;
        std::fs::remove_dir_all(&self.dir).map_err(io_err("remove", &self.dir))
    }
}

impl Log {
    /// Stops a running clean (it notices at its next batch) and keeps any other from starting
    /// while the guard lives.
    fn stop_cleaning(&self) -> std::sync::MutexGuard<'_, ()> {
        self.clean_abort.store(true, Ordering::Relaxed);
        self.cleaning.lock().unwrap_or_else(|p| p.into_inner())
    }
}
