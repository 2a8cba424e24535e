//! Opening a log: an interrupted compaction or truncation finished, segments listed and, after a
//! crash, recovered from the recovery point.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, RwLock};

use tributary_record::BatchHeader;

use super::checkpoint::{CleanerCheckpoint, LogCheckpoint, PendingTruncation};
use super::clean::finish_interrupted_clean;
use super::{CLEAN_SHUTDOWN_FILE, Log, LogResources, State};
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::{Result, StorageError, io_err};
use crate::format::{FILE_HEADER_LEN, FileKind, parse_segment_name, segment_path, sync_dir};
use crate::segment::{Segment, remove_if_exists};

/// How a log came back when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The previous close was clean (no scan was needed).
    pub clean: bool,
    /// Segments scanned for recovery.
    pub segments_recovered: usize,
    /// Bytes of torn or corrupt data cut from the tail.
    pub bytes_truncated: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`. After a clean close this reads only metadata; after
    /// a crash it scans every segment from the recovery point, truncating a torn or corrupt tail
    /// and rebuilding indexes, so nothing before the damage is lost.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        resources: LogResources,
    ) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        // A clean interrupted by a crash is rolled back or completed before anything else looks
        // at the segments.
        finish_interrupted_clean(&dir)?;
        let cache = &resources.files;
        let now = resources.clock.now_ms();

        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") || name.ends_with(".deleted") {
                remove_if_exists(&entry.path())?;
            } else if let Some(base) = parse_segment_name(name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        // A crash while creating a segment can leave its data file without a header (short,
        // or zero-filled after a power loss): the header is written before any batch, so such
        // a file holds nothing that was acknowledged.
        while let Some(&last) = bases.last() {
            let path = segment_path(&dir, last, FileKind::Log);
            let len = data_file_len(&dir, last)?;
            if len < FILE_HEADER_LEN {
                tracing::warn!(dir = %dir.display(), base = last, "removing a segment file cut before its header");
                Segment::delete_files(&dir, last)?;
                bases.pop();
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            let mut header = [0u8; FILE_HEADER_LEN as usize];
            file.read_exact_at(&mut header, 0)
                .map_err(io_err("read", &path))?;
            if header == [0u8; FILE_HEADER_LEN as usize] {
                tracing::warn!(dir = %dir.display(), base = last, "segment header never reached the disk; rewriting it");
                file.write_all_at(&crate::format::file_header(FileKind::Log), 0)
                    .map_err(io_err("write", &path))?;
                file.sync_all().map_err(io_err("fsync", &path))?;
            }
            break;
        }

        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let marked_clean = marker.exists();
        if marked_clean {
            // From here on, a crash must lead to recovery.
            remove_if_exists(&marker)?;
            sync_dir(&dir)?;
        }
        let checkpoint = LogCheckpoint::load(&dir)?;
        // Epochs are checkpointed before the batches that carry them are written, so the
        // checkpoint is never behind the data; only a missing or damaged checkpoint makes us
        // rebuild it from the batches themselves, which takes a scan of every segment.
        let (epochs, rebuild_epochs) = match EpochCache::load(&dir) {
            Ok(epochs) => {
                let rebuild = !epochs.found() && !bases.is_empty();
                (epochs, rebuild)
            }
            Err(err @ StorageError::Corrupt { .. }) => {
                tracing::warn!(dir = %dir.display(), error = %err, "leader-epoch checkpoint damaged, rebuilding it from the log");
                (EpochCache::empty(&dir), !bases.is_empty())
            }
            Err(err) => return Err(err),
        };
        let clean = marked_clean && !rebuild_epochs;
        let mut log_start_offset = checkpoint.map_or(0, |c| c.log_start_offset);
        let recovery_point = if rebuild_epochs {
            0
        } else if clean {
            i64::MAX
        } else {
            checkpoint.map_or(0, |c| c.recovery_point)
        };

        // Segments wholly below the log start offset were being deleted when we stopped.
        while bases.len() > 1 && bases[1] <= log_start_offset {
            let base = bases.remove(0);
            tracing::info!(dir = %dir.display(), base, "finishing the deletion of a segment below the log start offset");
            Segment::delete_files(&dir, base)?;
        }

        let mut segments = BTreeMap::new();
        let mut report = OpenReport {
            clean,
            segments_recovered: 0,
            bytes_truncated: 0,
        };
        // Recovery starts at the segment holding the recovery point.
        let first_to_recover = bases
            .iter()
            .rposition(|&base| base <= recovery_point)
            .unwrap_or(0);
        let mut rebuilt_epochs: Vec<(i32, i64)> = epochs.entries().to_vec();
        let mut on_batch = |header: &BatchHeader| {
            let epoch = header.partition_leader_epoch;
            if rebuild_epochs
                && epoch >= 0
                && rebuilt_epochs
                    .last()
                    .is_none_or(|&(latest, _)| epoch > latest)
            {
                rebuilt_epochs.push((epoch, header.base_offset));
            }
        };
        let interval = config.index_interval_bytes;
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let last = i + 1 == bases.len();
            let mut segment = if (clean || i < first_to_recover) && !last {
                Segment::open_sealed(&dir, base, config.index_interval_bytes, cache)?
            } else if clean {
                let before = data_file_len(&dir, base)?;
                let (segment, _) =
                    Segment::open_active(&dir, base, interval, cache, &mut on_batch)?;
                report.bytes_truncated += before - segment.size;
                segment
            } else {
                let before = data_file_len(&dir, base)?;
                let (mut segment, end) =
                    Segment::recover(&dir, base, interval, cache, &mut on_batch)?;
                report.segments_recovered += 1;
                report.bytes_truncated += before - end.valid_len;
                if end.damage.is_some() && !last {
                    // Everything after damage in a sealed segment is unreachable: drop it.
                    for &later in &bases[i + 1..] {
                        tracing::warn!(dir = %dir.display(), base = later, "deleting a segment after a corrupt one");
                        report.bytes_truncated +=
                            data_file_len(&dir, later)?.saturating_sub(FILE_HEADER_LEN);
                        Segment::delete_files(&dir, later)?;
                    }
                    bases.truncate(i + 1);
                    segment.flush(cache)?;
                } else if !last {
                    segment.seal(cache)?;
                } else {
                    segment.flush(cache)?;
                }
                segment
            };
            // Restart-stable segment age where the file system keeps birth times.
            segment.created_ms = segment.born_ms().unwrap_or(now).min(now);
            segments.insert(base, segment);
            i += 1;
        }
        let new_log = segments.is_empty();
        if new_log {
            let mut segment = Segment::create(&dir, log_start_offset, cache)?;
            segment.created_ms = now;
            segments.insert(log_start_offset, segment);
        }
        let first_base = *segments.keys().next().expect("not empty");
        log_start_offset = log_start_offset.max(first_base);
        // A damaged cleaner checkpoint costs only work: the next clean starts from the log start.
        let cleaner = match CleanerCheckpoint::load(&dir) {
            Ok(checkpoint) => checkpoint.unwrap_or_default(),
            Err(err @ StorageError::Corrupt { .. }) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cleaner checkpoint damaged, the next clean reads the whole log");
                CleanerCheckpoint::default()
            }
            Err(err) => return Err(err),
        };
        let mut state = State {
            config,
            segments,
            log_start_offset,
            recovery_point: 0,
            epochs,
            unflushed_records: 0,
            first_unflushed_ms: None,
            dir_dirty: new_log,
            closed: false,
            cleaner,
        };
        let log_end_offset = state.log_end_offset();
        log_start_offset = log_start_offset.min(log_end_offset);
        state.log_start_offset = log_start_offset;
        // Whatever survived recovery is on disk now (recovered segments were fsynced).
        state.recovery_point = log_end_offset;
        if rebuild_epochs {
            state.epochs.replace(rebuilt_epochs)?;
        }
        state.epochs.truncate_from_end(log_end_offset)?;
        state.epochs.truncate_from_start(log_start_offset)?;
        let pending = checkpoint.and_then(|c| c.pending);
        let unchanged = checkpoint.is_some_and(|c| {
            c.recovery_point == state.recovery_point
                && c.log_start_offset == log_start_offset
                && c.pending.is_none()
        });
        if !unchanged && !new_log && pending.is_none() {
            state.checkpoint(&dir)?;
        }
        if !clean || report.bytes_truncated > 0 {
            tracing::info!(
                dir = %dir.display(),
                clean,
                segments_recovered = report.segments_recovered,
                bytes_truncated = report.bytes_truncated,
                log_end_offset,
                "log recovered"
            );
        }
        // Data recovery may have cut the tail below the cleaner's checkpoint.
        let log_end_offset = state.log_end_offset();
        state.reset_cleaner_to(&dir, log_end_offset)?;
        let log = Self {
            dir,
            resources,
            state: RwLock::new(state),
            open_report: report,
            cleaning: Mutex::new(()),
            clean_abort: AtomicBool::new(false),
        };
        if let Some(pending) = pending {
            tracing::warn!(dir = %log.dir.display(), ?pending, "finishing a truncation interrupted by a crash");
            let mut state = log.write_state()?;
            match pending {
                PendingTruncation::TruncateTo(offset) => {
                    log.truncate_to_locked(&mut state, offset)?;
                    // Already cut before the crash: just clear the intent.
                    state.checkpoint(&log.dir)?;
                }
                PendingTruncation::RestartAt(offset) => {
                    log.restart_at_locked(&mut state, offset)?
                }
            }
        }
        Ok(log)
    }
}

fn data_file_len(dir: &Path, base_offset: i64) -> Result<u64> {
    let path = segment_path(dir, base_offset, FileKind::Log);
    Ok(std::fs::metadata(&path)
        .map_err(io_err("stat", &path))?
        .len())
}
