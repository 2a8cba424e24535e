//! [`Log`]: one partition's log, a sequence of segments in one directory.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use tributary_record::{BatchHeader, Batches, RecordError, TimestampType};

use crate::cache::FileCache;
use crate::checkpoint::{Checkpoint, PendingTruncation};
use crate::cleaner::{CleanerCheckpoint, check_batch_keys, finish_interrupted_clean};
use crate::config::LogConfig;
use crate::epoch::{EpochCache, EpochEndOffset};
use crate::error::{Result, StorageError, io_err};
use crate::format::{
    FILE_HEADER_LEN, FileKind, parse_segment_name, segment_path, sync_dir, write_atomic,
};
use crate::segment::{Segment, remove_if_exists};

/// Offsets in one segment stay within this distance of its base offset (Kafka's bound: the
/// indexes store 32-bit relative offsets).
pub(crate) const MAX_SEGMENT_OFFSET_SPAN: i64 = i32::MAX as i64;
/// The active segment rolls when its in-memory offset index holds this many entries (Kafka's
/// `segment.index.bytes` default of 10 MiB, at 8 bytes an entry): bounded memory per partition.
pub(crate) const MAX_ACTIVE_INDEX_ENTRIES: usize = 10 * 1024 * 1024 / 8;

/// Name of the marker a clean close leaves in the partition directory.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const CLEAN_SHUTDOWN_CONTENTS: &[u8] = b"tributary-clean-shutdown 1\n";

/// The time source of a log (retention, `segment.ms`, `flush.ms`, log-append time).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every log of one broker shares: the open-file cache and the clock.
#[derive(Debug, Clone)]
pub struct LogResources {
    /// Bounded cache of open segment files.
    pub files: Arc<FileCache>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Blocks of an active segment's data file are allocated up to this many bytes ahead of
    /// its writes (`fallocate`, the file's size unchanged; 0: never), but never more than an
    /// eighth of what the segment already holds (so a rarely written partition holds nothing
    /// ahead). Buffered writes into allocated blocks skip ext4's delayed-allocation
    /// bookkeeping (see the crate's README for what it gains). The blocks ahead are given back
    /// when the segment is sealed or the log closed, and at the next open after a crash.
    pub preallocate_bytes: u64,
}

/// [`LogResources::preallocate_bytes`] by default: 4 MiB.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 4 << 20;

impl LogResources {
    /// Resources keeping at most `max_open_segments` segments' files open, on the system clock,
    /// preallocating [`DEFAULT_PREALLOCATE_BYTES`] ahead.
    pub fn new(max_open_segments: usize) -> Self {
        Self {
            files: FileCache::new(max_open_segments),
            clock: Arc::new(SystemClock),
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
        }
    }
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub first_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest timestamp among the batches (after log-append time stamping).
    pub max_timestamp: i64,
    /// The leader's clock if the topic uses log-append time, else -1.
    pub log_append_time_ms: i64,
    /// Records appended.
    pub record_count: u64,
    /// Batches appended.
    pub batch_count: usize,
    /// Bytes appended.
    pub bytes: usize,
    /// Every batch appended: its header as written (offsets and epoch assigned) and its
    /// position in `source`.
    headers: Vec<(BatchHeader, usize)>,
    /// The bytes given to the append; [`AppendInfo::batches`] stamps them as written.
    source: Bytes,
}

impl AppendInfo {
    /// What a retried append of batches already in the log reports: their offsets, nothing
    /// written.
    pub fn already_appended(first_offset: i64, last_offset: i64) -> Self {
        Self {
            first_offset,
            last_offset,
            max_timestamp: tributary_record::NO_TIMESTAMP,
            log_append_time_ms: -1,
            record_count: 0,
            batch_count: 0,
            bytes: 0,
            headers: Vec::new(),
            source: Bytes::new(),
        }
    }

    /// The batches exactly as written: the leader's offsets and epoch stamped in. A leader's
    /// append writes the stamps beside the producer's bytes instead of copying them, so this
    /// copies (tests and tools; the broker needs only [`AppendInfo::headers`]).
    pub fn batches(&self) -> Bytes {
        let mut out = BytesMut::from(&self.source[..]);
        for &(header, at) in &self.headers {
            let stamp = stamp(&self.source[at..], &header);
            out[at..at + STAMP_LEN].copy_from_slice(&stamp);
        }
        out.freeze()
    }

    /// The header of every batch appended, as written (offsets and epoch assigned).
    pub fn headers(&self) -> impl Iterator<Item = &BatchHeader> {
        self.headers.iter().map(|(header, _)| header)
    }
}

/// The first bytes of a batch, which the leader stamps (base offset, batch length, partition
/// leader epoch): outside the CRC, so the rest is written as the producer sent it.
const STAMP_LEN: usize = tributary_record::PRE_MAGIC_LEN;

/// Batches up to this size are stamped in a copy on the stack and written with one plain
/// `pwrite`: below it the copy costs less than a vectored write's extra work.
const SMALL_BATCH: usize = 1024;

/// The first bytes of `batch` as the leader writes them: `header`'s base offset and
/// partition leader epoch stamped in.
fn stamp(batch: &[u8], header: &BatchHeader) -> [u8; STAMP_LEN] {
    let mut stamp = [0u8; STAMP_LEN];
    stamp.copy_from_slice(&batch[..STAMP_LEN]);
    tributary_record::set_base_offset(&mut stamp, header.base_offset);
    tributary_record::set_partition_leader_epoch(&mut stamp, header.partition_leader_epoch);
    stamp
}

/// What an append writes.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The batches exactly as given (a follower's copy of the leader's).
    Whole(&'a [u8]),
    /// The producer's batches: each written as [`stamp`] of its header (offsets assigned),
    /// then its bytes after the stamp.
    Stamped(&'a [u8]),
}

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

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Data bytes deleted.
    pub bytes: u64,
}

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

/// One partition's log: an ordered, append-only sequence of Kafka v2 record batches with dense,
/// strictly increasing offsets, in segment files under one directory.
///
/// All methods take `&self`; appends and structural changes are serialised, reads run
/// concurrently with each other. Dropping a `Log` without [`Log::close`] is what a crash looks
/// like: the next open recovers from the recovery point.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) resources: LogResources,
    pub(crate) state: RwLock<State>,
    open_report: OpenReport,
    /// Held by a clean from start to end (one clean at a time); taken before `state`.
    pub(crate) cleaning: Mutex<()>,
    /// Set by close and delete: a running clean stops at its next batch.
    pub(crate) clean_abort: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty while open.
    pub(crate) segments: BTreeMap<i64, Segment>,
    pub(crate) log_start_offset: i64,
    /// Everything below it is fsynced.
    recovery_point: i64,
    epochs: EpochCache,
    unflushed_records: u64,
    first_unflushed_ms: Option<i64>,
    /// A file was created in the directory since its last fsync: the next flush syncs it, so
    /// flushed data never sits in a file whose name could vanish in a power loss.
    dir_dirty: bool,
    pub(crate) closed: bool,
    /// The cleaner's first dirty offset and earliest delete horizon (as checkpointed).
    pub(crate) cleaner: CleanerCheckpoint,
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

    pub(crate) fn log_end_offset(&self) -> i64 {
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
        Checkpoint {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
            pending,
        }
        .store(dir)
    }
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
        let checkpoint = Checkpoint::load(&dir)?;
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

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the last open went (clean, segments scanned, bytes cut).
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    pub(crate) fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(StorageError::Closed {
                path: self.dir.clone(),
            });
        }
        Ok(state)
    }

    pub(crate) fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
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

    /// Appends batches as the partition's leader: validates every batch (CRC, magic, sizes,
    /// dense offset deltas) before writing anything, assigns offsets from the log end offset,
    /// stamps `leader_epoch` (and the leader's clock for log-append-time topics).
    ///
    /// On a compacted log (`cleanup.policy` with `compact`) every record must have a key, as in
    /// Kafka: a keyless one fails the append with [`StorageError::InvalidBatch`] naming it.
    ///
    /// The producer's bytes are not copied: each batch is written as its stamped first 16
    /// bytes (base offset, length, leader epoch: outside the CRC) followed by the rest of it
    /// as received, in one vectored write. Only log-append-time topics, whose stamp changes
    /// the CRC-covered max timestamp, copy the batches to re-stamp them.
    pub fn append_as_leader(&self, records: &Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        let (max_message_bytes, compacted) = {
            let state = self.read_state()?;
            (state.config.max_message_bytes, state.config.is_compacted())
        };
        let (headers, record_count) = validate(records, Some(max_message_bytes))?;
        if compacted {
            let mut scratch = Vec::new();
            for &(header, position) in &headers {
                let batch = &records[position..position + header.total_len()];
                check_batch_keys(batch, &header, position, &mut scratch)?;
            }
        }
        for &(header, position) in &headers {
            if header.record_count == 0 || header.last_offset_delta != header.record_count - 1 {
                return Err(StorageError::InvalidBatch {
                    position,
                    source: RecordError::Invalid(format!(
                        "a produced batch must hold records with offset deltas 0..{}, found {} records and last offset delta {}",
                        header.record_count, header.record_count, header.last_offset_delta
                    )),
                });
            }
        }
        let mut state = self.write_state()?;
        let now = self.resources.clock.now_ms();
        let log_append_time = state.config.message_timestamp_type == TimestampType::LogAppendTime;
        let first_offset = state.log_end_offset();
        // Log-append time changes CRC-covered bytes: those batches are copied and re-stamped.
        let mut copy = log_append_time.then(|| BytesMut::from(&records[..]));
        let mut next = first_offset;
        let mut max_timestamp = tributary_record::NO_TIMESTAMP;
        let mut stamped = Vec::with_capacity(headers.len());
        for &(mut header, position) in &headers {
            if let Some(copy) = &mut copy {
                let batch = &mut copy[position..position + header.total_len()];
                tributary_record::set_log_append_time(batch, now);
                header.max_timestamp = now;
            }
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            stamped.push((header, position));
            next = next
                .checked_add(i64::from(header.last_offset_delta) + 1)
                .ok_or(StorageError::OffsetsOutOfOrder {
                    base_offset: next,
                    expected_at_least: next,
                })?;
            max_timestamp = max_timestamp.max(if log_append_time {
                now
            } else {
                header.max_timestamp
            });
        }
        let source = copy.map_or_else(|| records.clone(), BytesMut::freeze);
        state.epochs.assign(leader_epoch, first_offset)?;
        self.append_locked(&mut state, Source::Stamped(&source), &stamped)?;
        Self::after_append(&mut state, &self.dir, &self.resources, record_count, now)?;
        Ok(AppendInfo {
            first_offset,
            last_offset: next - 1,
            max_timestamp,
            log_append_time_ms: if log_append_time { now } else { -1 },
            record_count,
            batch_count: headers.len(),
            bytes: source.len(),
            headers: stamped,
            source,
        })
    }

    /// Appends batches as a follower: the leader's bytes unchanged (offsets and leader epochs
    /// kept), after checking each batch's CRC and that offsets only move forward and epochs
    /// never go back.
    pub fn append_as_follower(&self, records: Bytes) -> Result<AppendInfo> {
        let (headers, record_count) = validate(&records, None)?;
        let mut state = self.write_state()?;
        let now = self.resources.clock.now_ms();
        let mut expected = state.log_end_offset();
        // Only epochs that hold records count: a leadership that ended before its first append
        // must not block the records of the leader that replaced it.
        let mut latest_epoch = state.epochs.latest_epoch_with_data(expected).unwrap_or(-1);
        let mut max_timestamp = tributary_record::NO_TIMESTAMP;
        for &(header, _) in &headers {
            if header.base_offset < expected {
                return Err(StorageError::OffsetsOutOfOrder {
                    base_offset: header.base_offset,
                    expected_at_least: expected,
                });
            }
            if header.partition_leader_epoch < latest_epoch {
                return Err(StorageError::EpochOutOfOrder {
                    base_offset: header.base_offset,
                    epoch: header.partition_leader_epoch,
                    latest: latest_epoch,
                });
            }
            latest_epoch = header.partition_leader_epoch;
            expected = header.next_offset();
            max_timestamp = max_timestamp.max(header.max_timestamp);
        }
        let first_offset = headers[0].0.base_offset;
        let last_offset = expected - 1;
        for &(header, _) in &headers {
            state
                .epochs
                .assign(header.partition_leader_epoch, header.base_offset)?;
        }
        self.append_locked(&mut state, Source::Whole(&records), &headers)?;
        Self::after_append(&mut state, &self.dir, &self.resources, record_count, now)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time_ms: -1,
            record_count,
            batch_count: headers.len(),
            bytes: records.len(),
            headers,
            source: records,
        })
    }

    /// Writes validated batches (with their final offsets in `headers`) at the end of the
    /// active segment, rolling first if needed. Batches whose offsets would not fit one
    /// segment's 32-bit relative offsets (a follower's gap after compaction) go to a new
    /// segment: if a later group fails, the earlier ones stay (the follower fetches again).
    fn append_locked(
        &self,
        state: &mut State,
        batches: Source<'_>,
        headers: &[(BatchHeader, usize)],
    ) -> Result<()> {
        let cache = &self.resources.files;
        let interval = state.config.index_interval_bytes;
        let mut i = 0;
        while i < headers.len() {
            let group_first = headers[i].0.base_offset;
            let mut j = i + 1;
            while j < headers.len()
                && headers[j].0.last_offset() - group_first <= MAX_SEGMENT_OFFSET_SPAN
            {
                j += 1;
            }
            let (last, last_at) = headers[j - 1];
            let (start, end) = (headers[i].1, last_at + last.total_len());

            let now = self.resources.clock.now_ms();
            let active = state.active();
            let has_data = active.size > FILE_HEADER_LEN;
            let too_big =
                active.size + (end - start) as u64 > u64::from(state.config.segment_bytes);
            let too_old = now - active.created_ms > state.config.roll_ms();
            let index_full = active.index_entries_in_memory() >= MAX_ACTIVE_INDEX_ENTRIES;
            let span_overflow = last.last_offset() - active.base_offset > MAX_SEGMENT_OFFSET_SPAN;
            if has_data && (too_big || too_old || index_full) || span_overflow {
                self.roll_locked(state, group_first)?;
            }
            let active = state.active_mut();
            let preallocate = self.resources.preallocate_bytes;
            let position = match batches {
                Source::Whole(bytes) => {
                    active.write(cache, &[IoSlice::new(&bytes[start..end])], preallocate)?
                }
                // One batch (what producers send): its two pieces from the stack; a small one
                // copied whole, where one plain write costs less than a vectored one.
                Source::Stamped(records) if j == i + 1 => {
                    let (header, at) = headers[i];
                    let stamp = stamp(&records[at..], &header);
                    let rest = &records[at + STAMP_LEN..at + header.total_len()];
                    if header.total_len() <= SMALL_BATCH {
                        let mut whole = [0u8; SMALL_BATCH];
                        whole[..STAMP_LEN].copy_from_slice(&stamp);
                        whole[STAMP_LEN..header.total_len()].copy_from_slice(rest);
                        let whole = &whole[..header.total_len()];
                        active.write(cache, &[IoSlice::new(whole)], preallocate)?
                    } else {
                        let parts = [IoSlice::new(&stamp), IoSlice::new(rest)];
                        active.write(cache, &parts, preallocate)?
                    }
                }
                Source::Stamped(records) => {
                    let stamps: Vec<_> = headers[i..j]
                        .iter()
                        .map(|(h, at)| stamp(&records[*at..], h))
                        .collect();
                    let parts: Vec<_> = headers[i..j]
                        .iter()
                        .zip(&stamps)
                        .flat_map(|(&(header, at), stamp)| {
                            [
                                IoSlice::new(stamp),
                                IoSlice::new(&records[at + STAMP_LEN..at + header.total_len()]),
                            ]
                        })
                        .collect();
                    active.write(cache, &parts, preallocate)?
                }
            };
            for &(header, at) in &headers[i..j] {
                active.index_batch(&header, position + (at - start) as u64, interval);
            }
            i = j;
        }
        Ok(())
    }

    fn after_append(
        state: &mut State,
        dir: &Path,
        resources: &LogResources,
        record_count: u64,
        now: i64,
    ) -> Result<()> {
        state.unflushed_records += record_count;
        state.first_unflushed_ms.get_or_insert(now);
        let due_by_count = state
            .config
            .flush_messages
            .is_some_and(|n| state.unflushed_records >= n);
        let due_by_time = state
            .config
            .flush_ms
            .zip(state.first_unflushed_ms)
            .is_some_and(|(ms, since)| now - since >= ms);
        if due_by_count || due_by_time {
            Self::flush_locked(state, dir, resources)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base_offset`.
    fn roll_locked(&self, state: &mut State, base_offset: i64) -> Result<()> {
        let cache = &self.resources.files;
        let log_end_offset = state.log_end_offset();
        let base_offset = base_offset.max(log_end_offset);
        let (old_base, old_empty) = {
            let active = state.active();
            (active.base_offset, active.size == FILE_HEADER_LEN)
        };
        if old_empty && old_base == base_offset {
            return Ok(());
        }
        // Create the new segment before touching the old one: if the disk is full, the log
        // keeps its active segment and stays writable once space returns.
        let mut segment = Segment::create(&self.dir, base_offset, cache)?;
        segment.created_ms = self.resources.clock.now_ms();
        if !old_empty && let Err(err) = state.active_mut().seal(cache) {
            segment.delete(cache)?;
            return Err(err);
        }
        state.segments.insert(base_offset, segment);
        if old_empty {
            // An empty active segment holds nothing: it is replaced, not sealed.
            state
                .segments
                .remove(&old_base)
                .expect("the old active segment")
                .delete(cache)?;
        }
        // Sealed segments are fsynced, so the recovery point moves to the new segment; the
        // checkpoint's directory fsync also makes the new file's name durable.
        if state.unflushed_records > 0 || state.recovery_point < log_end_offset {
            state.recovery_point = log_end_offset;
            state.unflushed_records = 0;
            state.first_unflushed_ms = None;
        }
        state.checkpoint(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled a new segment");
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset (no-op when the
    /// active segment is empty).
    pub fn roll(&self) -> Result<()> {
        let mut state = self.write_state()?;
        let log_end_offset = state.log_end_offset();
        self.roll_locked(&mut state, log_end_offset)
    }

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

    /// Removes every batch from the one holding `offset` on (replica divergence after a
    /// failover), and every leader epoch that starts at or after the new log end. A batch that
    /// straddles `offset` is removed whole, so the new log end offset may be below `offset`.
    /// Truncating to the log end offset removes no record but still drops the epochs that
    /// start there (an epoch begun by a leader that wrote nothing: a follower must forget it,
    /// or it keeps asking its leader about it). Returns the new log end offset.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        let mut state = self.write_state()?;
        self.truncate_to_locked(&mut state, offset)
    }

    fn truncate_to_locked(&self, state: &mut State, offset: i64) -> Result<i64> {
        let cache = &self.resources.files;
        if offset >= state.log_end_offset() {
            if offset == state.log_end_offset() {
                state.epochs.truncate_from_end(offset)?;
            }
            return Ok(state.log_end_offset());
        }
        if offset <= state.log_start_offset {
            self.restart_at_locked(state, offset)?;
            return Ok(offset);
        }
        // Intent first, then delete newest first: a crash at any point leaves a contiguous
        // prefix, and the next open finishes the truncation.
        state.checkpoint_pending(&self.dir, Some(PendingTruncation::TruncateTo(offset)))?;
        let first = *state.segments.keys().next().expect("not empty");
        let doomed: Vec<i64> = state
            .segments
            .range(offset..)
            .map(|(&b, _)| b)
            .filter(|&b| b != first)
            .rev()
            .collect();
        for base in doomed {
            state
                .segments
                .remove(&base)
                .expect("listed")
                .delete(cache)?;
        }
        let interval = state.config.index_interval_bytes;
        let now = self.resources.clock.now_ms();
        let active = state.active_mut();
        active.truncate_to(cache, offset, interval)?;
        active.created_ms = now;
        let log_end_offset = state.log_end_offset();
        if log_end_offset <= state.log_start_offset {
            // The batch holding `offset` straddled the log start: nothing visible remains.
            let start = state.log_start_offset;
            self.restart_at_locked(state, start)?;
            return Ok(start);
        }
        state.recovery_point = state.recovery_point.min(log_end_offset);
        state.epochs.truncate_from_end(log_end_offset)?;
        state.checkpoint(&self.dir)?;
        state.reset_cleaner_to(&self.dir, log_end_offset)?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset, "log truncated");
        Ok(log_end_offset)
    }

    /// Deletes everything and restarts the log empty at `offset` (a follower far behind a
    /// leader whose log starts later).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        let mut state = self.write_state()?;
        self.restart_at_locked(&mut state, offset)
    }

    fn restart_at_locked(&self, state: &mut State, offset: i64) -> Result<()> {
        let cache = &self.resources.files;
        state.checkpoint_pending(&self.dir, Some(PendingTruncation::RestartAt(offset)))?;
        while let Some((_, segment)) = state.segments.pop_last() {
            segment.delete(cache)?;
        }
        let mut segment = Segment::create(&self.dir, offset, cache)?;
        segment.created_ms = self.resources.clock.now_ms();
        state.segments.insert(offset, segment);
        state.log_start_offset = offset;
        state.recovery_point = offset;
        state.epochs.replace(Vec::new())?;
        state.unflushed_records = 0;
        state.first_unflushed_ms = None;
        sync_dir(&self.dir)?;
        state.checkpoint(&self.dir)?;
        if state.cleaner != CleanerCheckpoint::default() {
            state.cleaner = CleanerCheckpoint::default();
            state.cleaner.store(&self.dir)?;
        }
        Ok(())
    }

    /// Moves the log start offset forward to `offset` (Kafka's DeleteRecords; retention): reads
    /// below it fail, and segments wholly below it are deleted. Never beyond the log end offset.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<RetentionOutcome> {
        let mut state = self.write_state()?;
        if offset > state.log_end_offset() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: state.log_start_offset,
                log_end_offset: state.log_end_offset(),
            });
        }
        if offset <= state.log_start_offset {
            return Ok(RetentionOutcome::default());
        }
        state.log_start_offset = offset;
        state.checkpoint(&self.dir)?;
        state.epochs.truncate_from_start(offset)?;
        self.delete_below_start(&mut state)
    }

    /// Deletes the oldest segments that retention lets go, as Kafka does: by age
    /// (`retention.ms`, against each segment's newest timestamp) and by size (`retention.bytes`:
    /// a segment goes only if at least that much remains), never a segment with records at or
    /// above `high_watermark` (not yet replicated everywhere). An active segment that has
    /// expired entirely is rolled and deleted too, so an idle partition still expires. Moves the
    /// log start offset to the first remaining record.
    ///
    /// Only where `cleanup.policy` holds `delete`: a log that is only compacted keeps every
    /// segment (it still deletes segments wholly below a log start offset moved by
    /// [`Log::advance_log_start_offset`]).
    pub fn apply_retention(&self, high_watermark: i64) -> Result<RetentionOutcome> {
        let mut state = self.write_state()?;
        if !state.config.deletes_by_retention() {
            return self.delete_below_start(&mut state);
        }
        let now = self.resources.clock.now_ms();
        let config = state.config.clone();
        let log_end_offset = state.log_end_offset();
        let high_watermark = high_watermark.min(log_end_offset);
        // Each segment with data, oldest first, and the offset its records end before.
        let bases: Vec<i64> = state.segments.keys().copied().collect();
        let mut candidates = Vec::new();
        for (i, segment) in state.segments.values().enumerate() {
            let upper = bases.get(i + 1).copied().unwrap_or(log_end_offset);
            if segment.size == FILE_HEADER_LEN || upper > high_watermark {
                break;
            }
            candidates.push((segment, upper));
        }
        let mut delete_count = 0;
        if config.retention_ms >= 0 {
            for (segment, _) in &candidates {
                let newest = if segment.max_timestamp >= 0 {
                    segment.max_timestamp
                } else {
                    segment.modified_ms()?
                };
                if now - newest <= config.retention_ms {
                    break;
                }
                delete_count += 1;
            }
        }
        if config.retention_bytes >= 0 {
            let total: u64 = state
                .segments
                .values()
                .map(|s| s.size - FILE_HEADER_LEN)
                .sum();
            let mut excess = total as i64 - config.retention_bytes;
            let mut by_size = 0;
            for (segment, _) in &candidates {
                let size = (segment.size - FILE_HEADER_LEN) as i64;
                if excess - size < 0 {
                    break;
                }
                excess -= size;
                by_size += 1;
            }
            delete_count = delete_count.max(by_size);
        }
        if delete_count == 0 {
            return self.delete_below_start(&mut state);
        }
        let new_start = candidates[delete_count - 1].1;
        if delete_count == state.segments.len() {
            // The active segment goes too: start an empty one at the log end first.
            self.roll_locked(&mut state, log_end_offset)?;
        }
        if new_start > state.log_start_offset {
            state.log_start_offset = new_start;
            state.checkpoint(&self.dir)?;
            state.epochs.truncate_from_start(new_start)?;
        }
        self.delete_below_start(&mut state)
    }

    fn delete_below_start(&self, state: &mut State) -> Result<RetentionOutcome> {
        let mut outcome = RetentionOutcome::default();
        loop {
            let mut bases = state.segments.keys();
            let (Some(&first), Some(&second)) = (bases.next(), bases.next()) else {
                break;
            };
            if second > state.log_start_offset {
                break;
            }
            let segment = state.segments.remove(&first).expect("listed");
            outcome.segments += 1;
            outcome.bytes += segment.size - FILE_HEADER_LEN;
            tracing::info!(segment = %segment.log_path().display(), "deleting segment below the log start offset");
            segment.delete(&self.resources.files)?;
        }
        Ok(outcome)
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

fn data_file_len(dir: &Path, base_offset: i64) -> Result<u64> {
    let path = segment_path(dir, base_offset, FileKind::Log);
    Ok(std::fs::metadata(&path)
        .map_err(io_err("stat", &path))?
        .len())
}

/// Validates every batch of an append before anything is written: structure, CRC, header
/// consistency and (for leaders) `max.message.bytes`. Returns each batch's header and position.
fn validate(
    records: &[u8],
    max_message_bytes: Option<u32>,
) -> Result<(Vec<(BatchHeader, usize)>, u64)> {
    let mut headers = Vec::new();
    let mut record_count = 0u64;
    for item in Batches::new(records) {
        let (header, position, _) = item.map_err(|source| StorageError::InvalidBatch {
            position: headers
                .last()
                .map_or(0, |&(h, p): &(BatchHeader, usize)| p + h.total_len()),
            source,
        })?;
        if let Some(max) = max_message_bytes
            && header.total_len() > max as usize
        {
            return Err(StorageError::BatchTooLarge {
                size: header.total_len(),
                max,
            });
        }
        record_count += header.record_count as u64;
        headers.push((header, position));
    }
    if headers.is_empty() {
        return Err(StorageError::EmptyAppend);
    }
    Ok((headers, record_count))
}
