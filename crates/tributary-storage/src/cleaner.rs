//! Log compaction (`cleanup.policy=compact`), as Kafka's log cleaner does it.
//!
//! A compacted log keeps, for every key, at least the latest record with that key. The cleaner
//! splits the log into three parts:
//!
//! ```text
//!  log start        first dirty offset            first uncleanable offset        log end
//!      |  clean: one record per key |  dirty: as appended  |  uncleanable: active segment, |
//!      |  (cleaned before)          |                      |  at/above the upper bound, or |
//!      |                            |                      |  younger than min.compaction  |
//! ```
//!
//! A pass reads the dirty part into an [`OffsetMap`] (key digest -> latest offset; bounded, so a
//! large dirty part takes several passes, each ending where the map filled), then rewrites every
//! segment from the log start to where the map ends, keeping a record if no later record has its
//! key. Adjacent small segments are merged (up to `segment.bytes`). The first dirty offset is
//! kept in `cleaner-offset-checkpoint`, so only new data is read into the map.
//!
//! What is kept, and why:
//! - Offsets never change; a rewritten batch keeps its base offset, last offset delta, producer
//!   id, epoch and base sequence, partition leader epoch, codec and timestamp type, and gets a
//!   new CRC. Records keep their offset deltas, so the offsets of a batch have gaps.
//! - A batch all of whose records go is dropped, except that it stays as an empty batch (no
//!   records, the same header fields, uncompressed) when it is the last batch of the segment
//!   being written (so the segment still ends where it ended: the swap's range and the next
//!   segment's base stay consistent) or the last committed batch (below the upper bound) of an
//!   idempotent producer that has not expired (`producer.id.expiration.ms`), so producer state
//!   rebuilt from the log still knows the producer's last sequence, as Kafka keeps it. (A later
//!   batch above the upper bound does not count: a truncation may still remove it.)
//! - Records without a key are kept: nothing can supersede them. Leaders refuse them on
//!   compacted logs ([`check_keys`]); they appear only in a log compacted after being written
//!   under `delete`. (Kafka drops them at cleaning; we prefer never to lose data silently.)
//! - Control batches are copied unchanged.
//! - Tombstones (a key with a null value) follow KIP-534: the first clean that keeps a
//!   tombstone stamps its batch with a delete horizon, `now + delete.retention.ms` (attribute bit
//!   6, the horizon in the base timestamp field, record timestamp deltas re-based so every
//!   record keeps its timestamp). A later clean drops the tombstone once the horizon has passed,
//!   if the tombstone is still the latest record of its key. The earliest horizon in the log is
//!   checkpointed, and a log whose horizon has passed needs cleaning even when it is not dirty.
//!
//! Crash safety follows Kafka's swap protocol: a cleaned segment is written as
//! `<base>.{log,index,timeindex}.cleaned` and fsynced; the indexes are renamed to `.swap`, then
//! (under the log's write lock, after checking that no segment of the group changed meanwhile)
//! the data file: `<base>.log.swap` is the commit point. Then the replaced segments are deleted,
//! the indexes and finally the data file are renamed into place. `Log::open` deletes `.cleaned`
//! files and `.swap` indexes without a `.log.swap` (an uncommitted clean), and completes every
//! `.log.swap` (a committed one). Each step is made durable (directory fsync) before the next.
//!
//! Readers never see a torn state: they read under the log's read lock, and the swap of the
//! in-memory segment list and of the files happens under the write lock, as retention's deletions
//! do. The slow part, reading and writing the segments, holds no lock: appends and reads go on.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tributary_record::{
    BATCH_HEADER_LEN, BatchHeader, Batches, NO_TIMESTAMP, RecordError, RecordSpan, RewriteBuffers,
    empty_batch, records_section, rewrite_batch, split_records, verify_batch,
};

use crate::config::LogConfig;
use crate::error::{Result, StorageError, io_err};
use crate::format::{
    FILE_HEADER_LEN, FileKind, check_file_header, create_with_header, parse_segment_name,
    segment_path, sync_dir, write_atomic,
};
use crate::index::TimeEntry;
use crate::log::{Log, MAX_ACTIVE_INDEX_ENTRIES, MAX_SEGMENT_OFFSET_SPAN, State};
use crate::offset_map::{KeyDigest, OffsetMap};
use crate::segment::{ActiveIndexes, Segment, remove_if_exists, scan_batches};

/// Name of the cleaner's checkpoint in the partition directory.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const CHECKPOINT_HEADER: &str = "tributary-cleaner-checkpoint";
const CHECKPOINT_VERSION: u32 = 1;
const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";
/// Bytes read at a time when only batch headers are wanted.
const HEADER_WINDOW_BYTES: usize = 16 << 10;
/// Producer ids whose last batch one pass tracks; past this, every idempotent batch that would
/// be dropped is kept as an empty batch instead (safe, only less compact).
const MAX_TRACKED_PRODUCERS: usize = 100_000;

/// The cleaner's settings, broker-wide (Kafka's `log.cleaner.*` and `producer.id.expiration.ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory of the key map (24 bytes a key, three quarters
    /// of it usable). Kafka's default is 128 MiB, about 4.2 million keys per pass.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.buffer.size`: bytes read and written at a time.
    pub io_buffer_bytes: usize,
    /// `producer.id.expiration.ms`: the last batch of an idempotent producer idle for longer is
    /// no longer kept for its producer state.
    pub producer_id_expiration_ms: i64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            dedupe_buffer_bytes: 128 << 20,
            io_buffer_bytes: 1 << 20,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl CleanerConfig {
    /// Checks every value, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |key: &'static str, reason: String| Err(StorageError::InvalidConfig { key, reason });
        if self.dedupe_buffer_bytes < 256 {
            return invalid(
                "log.cleaner.dedupe.buffer.size",
                format!("{} is below 256", self.dedupe_buffer_bytes),
            );
        }
        if !(4096..=1 << 30).contains(&self.io_buffer_bytes) {
            return invalid(
                "log.cleaner.io.buffer.size",
                format!("{} is outside [4096, 2^30]", self.io_buffer_bytes),
            );
        }
        if self.producer_id_expiration_ms < 1 {
            return invalid(
                "producer.id.expiration.ms",
                format!("{} must be at least 1", self.producer_id_expiration_ms),
            );
        }
        Ok(())
    }
}

/// A step of the swap at which a test can make the cleaner stop as if the process died.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanFault {
    /// The `.cleaned` files are written and fsynced; nothing renamed.
    CleanedWritten,
    /// The indexes are renamed to `.swap`; the data file is still `.cleaned` (not committed).
    IndexesSwapped,
    /// `<base>.log.swap` is durable (committed); the old segments are untouched.
    SwapCommitted,
    /// The replaced segments are deleted and the indexes renamed into place; the data file is
    /// still `.log.swap`.
    OldSegmentsDeleted,
}

/// The cleaner's reusable state: the bounded key map and I/O buffers. A broker keeps one per
/// cleaner thread and passes it to [`Log::clean`] of one log after another.
#[derive(Debug)]
pub struct Cleaner {
    config: CleanerConfig,
    map: OffsetMap,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    batch_buf: Vec<u8>,
    scratch: Vec<u8>,
    /// A rebuilt batch, its uncompressed records and one re-encoded record.
    rebuilt: Vec<u8>,
    plain: Vec<u8>,
    record_buf: Vec<u8>,
    records: Vec<RecordSpan>,
    /// The key digest of each record of the current batch.
    digests: Vec<Option<KeyDigest>>,
    /// Producer id -> base offset of its last batch in the log, for the current pass.
    producers: HashMap<i64, i64>,
    /// More producer ids than [`MAX_TRACKED_PRODUCERS`] in the current pass.
    producers_overflow: bool,
    fault: Option<CleanFault>,
    fault_hit: bool,
}

impl Cleaner {
    /// A cleaner with `config` (validated).
    pub fn new(config: CleanerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            map: OffsetMap::new(config.dedupe_buffer_bytes),
            config,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            batch_buf: Vec::new(),
            scratch: Vec::new(),
            rebuilt: Vec::new(),
            plain: Vec::new(),
            record_buf: Vec::new(),
            records: Vec::new(),
            digests: Vec::new(),
            producers: HashMap::new(),
            producers_overflow: false,
            fault: None,
            fault_hit: false,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CleanerConfig {
        &self.config
    }

    /// Keys one pass can hold.
    pub fn map_capacity(&self) -> usize {
        self.map.capacity()
    }

    /// Makes the next clean stop at `at` as if the process had died there (crash tests): the
    /// files stay as they are, the call returns an error, and the log must be dropped and
    /// reopened.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, at: Option<CleanFault>) {
        self.fault = at;
        self.fault_hit = false;
    }

    fn check_fault(&mut self, step: CleanFault, dir: &Path) -> Result<()> {
        if self.fault == Some(step) {
            self.fault = None;
            self.fault_hit = true;
            return Err(StorageError::Io {
                op: "continue compaction (injected fault)",
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!("fault injected at {step:?}")),
            });
        }
        Ok(())
    }
}

/// What [`Log::clean`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanOutcome {
    /// Passes run (each rebuilds the key map and rewrites the log from its start).
    pub passes: u32,
    /// Segments read and rewritten.
    pub segments_read: usize,
    /// Cleaned segments swapped in.
    pub segments_written: usize,
    /// Bytes of the segments read for rewriting (file headers excluded).
    pub bytes_read: u64,
    /// Bytes of the cleaned segments written (file headers excluded).
    pub bytes_written: u64,
    /// Records read while rewriting.
    pub records_read: u64,
    /// Records removed: superseded by a later record with the same key, or expired tombstones.
    pub records_removed: u64,
    /// Of those, tombstones past their delete horizon.
    pub tombstones_removed: u64,
    /// Batches removed because none of their records remained.
    pub batches_removed: u64,
    /// Batches kept without records (a segment's last batch, an idempotent producer's last).
    pub empty_batches_kept: u64,
    /// The first dirty offset after the clean.
    pub first_dirty_offset: i64,
    /// The first offset the clean could not touch.
    pub first_uncleanable_offset: i64,
    /// The clean stopped early: a segment it was cleaning was deleted or truncated meanwhile,
    /// or the log was closed. What was swapped in before stays; the rest is cleaned next time.
    pub aborted: bool,
}

/// How much of a log is clean and dirty, and whether it needs cleaning: cheap, from memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanableStats {
    /// Where the dirty part starts.
    pub first_dirty_offset: i64,
    /// Where the cleanable part ends (the base offset of the first segment the cleaner must not
    /// touch: the active one, one reaching the upper bound, or one within
    /// `min.compaction.lag.ms`).
    pub first_uncleanable_offset: i64,
    /// Bytes of cleanable segments wholly below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of cleanable segments at or after it.
    pub dirty_bytes: u64,
    /// `dirty_bytes / (clean_bytes + dirty_bytes)`, 0 when both are 0.
    pub dirty_ratio: f64,
    /// The first dirty segment is older than `max.compaction.lag.ms`.
    pub compaction_lag_exceeded: bool,
    /// A tombstone's delete horizon has passed.
    pub tombstones_expired: bool,
    /// The log is compacted and `dirty_ratio > min.cleanable.dirty.ratio`, or its compaction
    /// lag is exceeded, or tombstones can go.
    pub needs_cleaning: bool,
}

/// The cleaner's checkpoint: where the dirty part starts and the earliest delete horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CleanerCheckpoint {
    pub first_dirty_offset: i64,
    pub delete_horizon_ms: Option<i64>,
}

impl CleanerCheckpoint {
    /// ```text
    /// tributary-cleaner-checkpoint 1
    /// first-dirty-offset 1234
    /// delete-horizon-ms none              (or a timestamp)
    /// ```
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CLEANER_CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StorageError::io("read", &path, err)),
        };
        let corrupt = |line: u64, reason: &str| StorageError::corrupt(&path, line, reason);
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(CHECKPOINT_HEADER))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| corrupt(1, "missing `tributary-cleaner-checkpoint <version>` line"))?;
        if version != CHECKPOINT_VERSION {
            return Err(StorageError::UnsupportedFormat {
                path: path.clone(),
                found: version,
                supported: CHECKPOINT_VERSION,
            });
        }
        let first_dirty_offset = lines
            .next()
            .and_then(|l| l.strip_prefix("first-dirty-offset "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| corrupt(2, "missing or malformed `first-dirty-offset`"))?;
        let horizon = lines
            .next()
            .and_then(|l| l.strip_prefix("delete-horizon-ms "))
            .map(str::trim)
            .ok_or_else(|| corrupt(3, "missing `delete-horizon-ms`"))?;
        let delete_horizon_ms = match horizon {
            "none" => None,
            ms => Some(
                ms.parse::<i64>()
                    .map_err(|_| corrupt(3, "malformed `delete-horizon-ms`"))?,
            ),
        };
        Ok(Some(Self {
            first_dirty_offset,
            delete_horizon_ms,
        }))
    }

    pub fn store(&self, dir: &Path) -> Result<()> {
        let horizon = self
            .delete_horizon_ms
            .map_or_else(|| "none".to_owned(), |ms| ms.to_string());
        let text = format!(
            "{CHECKPOINT_HEADER} {CHECKPOINT_VERSION}\nfirst-dirty-offset {}\ndelete-horizon-ms {horizon}\n",
            self.first_dirty_offset
        );
        write_atomic(&dir.join(CLEANER_CHECKPOINT_FILE), text.as_bytes())
    }
}

/// Checks that every record of every non-control batch in `batches` has a key, as a compacted
/// topic requires (Kafka refuses keyless records there at produce). The batches are validated
/// (CRC, structure) on the way; compressed records are decompressed. The error names the batch's
/// byte position and the record.
pub fn check_keys(batches: &[u8]) -> Result<()> {
    let mut records = Vec::new();
    let mut iter = Batches::new(batches);
    loop {
        let position = iter.position();
        match iter.next() {
            None => return Ok(()),
            Some(Err(source)) => return Err(StorageError::InvalidBatch { position, source }),
            Some(Ok((header, position, bytes))) => {
                check_batch_keys(bytes, &header, position, &mut records)?
            }
        }
    }
}

/// [`check_keys`] for one batch already validated.
pub(crate) fn check_batch_keys(
    batch: &[u8],
    header: &BatchHeader,
    position: usize,
    records: &mut Vec<RecordSpan>,
) -> Result<()> {
    if header.is_control() || header.record_count == 0 {
        return Ok(());
    }
    let invalid = |source: RecordError| StorageError::InvalidBatch { position, source };
    let mut plain = Vec::new();
    let section = records_section(batch, header, &mut plain).map_err(invalid)?;
    split_records(section, header, records).map_err(invalid)?;
    if let Some((i, record)) = records.iter().enumerate().find(|(_, r)| !r.has_key()) {
        return Err(StorageError::KeylessRecord {
            position,
            record: i,
            offset_delta: record.offset_delta,
        });
    }
    Ok(())
}

/// The digest of every record's key (`None` for a keyless record).
fn digest_keys(section: &[u8], records: &[RecordSpan], out: &mut Vec<Option<KeyDigest>>) {
    out.clear();
    out.extend(records.iter().map(|r| r.key(section).map(KeyDigest::of)));
}

/// A sealed segment as a pass saw it.
#[derive(Debug, Clone)]
struct SegmentSnapshot {
    base_offset: i64,
    id: u64,
    /// Bytes of the data file, header included (the active segment's size when seen).
    size: u64,
    next_offset: i64,
    created_ms: i64,
    index_entries: u64,
    path: PathBuf,
}

/// Everything a pass needs, taken under the read lock.
#[derive(Debug)]
struct PassPlan {
    /// Every segment, the active one last.
    segments: Vec<SegmentSnapshot>,
    /// The first `cleanable` segments may be rewritten.
    cleanable: usize,
    first_uncleanable: i64,
    first_dirty: i64,
    /// Only records below it are committed (the high watermark).
    upper_bound: i64,
    delete_horizon_ms: Option<i64>,
    config: LogConfig,
}

impl State {
    /// How many leading segments the cleaner may touch, and the offset where that stops.
    fn cleanable_prefix(&self, upper_bound: i64, now_ms: i64) -> (usize, i64) {
        let min_lag = self.config.min_compaction_lag_ms;
        let count = self.segments.len();
        let mut cleanable = 0;
        for (i, segment) in self.segments.values().enumerate() {
            if i + 1 == count || segment.next_offset > upper_bound {
                break;
            }
            if min_lag > 0 {
                let newest = if segment.max_timestamp >= 0 {
                    segment.max_timestamp
                } else {
                    segment.created_ms
                };
                if now_ms.saturating_sub(newest) < min_lag {
                    break;
                }
            }
            cleanable += 1;
        }
        let first_uncleanable = self
            .segments
            .values()
            .nth(cleanable)
            .map_or(self.log_start_offset, |s| s.base_offset);
        (cleanable, first_uncleanable)
    }

    /// The first dirty offset, within the log.
    fn first_dirty_offset(&self) -> i64 {
        self.cleaner
            .first_dirty_offset
            .clamp(self.log_start_offset, self.log_end_offset())
    }

    pub(crate) fn cleanable_stats(&self, upper_bound: i64, now_ms: i64) -> CleanableStats {
        let (cleanable, first_uncleanable) = self.cleanable_prefix(upper_bound, now_ms);
        let first_dirty = self.first_dirty_offset();
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut first_dirty_created = None;
        for segment in self.segments.values().take(cleanable) {
            let bytes = segment.size - FILE_HEADER_LEN;
            if segment.next_offset <= first_dirty {
                clean_bytes += bytes;
            } else {
                dirty_bytes += bytes;
                first_dirty_created.get_or_insert(segment.created_ms);
            }
        }
        let total = clean_bytes + dirty_bytes;
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        let config = &self.config;
        let compaction_lag_exceeded = first_dirty_created
            .is_some_and(|created| now_ms.saturating_sub(created) > config.max_compaction_lag_ms);
        let tombstones_expired =
            cleanable > 0 && self.cleaner.delete_horizon_ms.is_some_and(|h| h <= now_ms);
        let needs_cleaning = config.is_compacted()
            && ((dirty_bytes > 0
                && (dirty_ratio > config.min_cleanable_dirty_ratio || compaction_lag_exceeded))
                || tombstones_expired);
        CleanableStats {
            first_dirty_offset: first_dirty,
            first_uncleanable_offset: first_uncleanable,
            clean_bytes,
            dirty_bytes,
            dirty_ratio,
            compaction_lag_exceeded,
            tombstones_expired,
            needs_cleaning,
        }
    }

    fn plan(&self, upper_bound: i64, now_ms: i64) -> PassPlan {
        let (cleanable, first_uncleanable) = self.cleanable_prefix(upper_bound, now_ms);
        PassPlan {
            segments: self
                .segments
                .values()
                .map(|s| SegmentSnapshot {
                    base_offset: s.base_offset,
                    id: s.id,
                    size: s.size,
                    next_offset: s.next_offset,
                    created_ms: s.created_ms,
                    index_entries: s.index_entry_count(),
                    path: s.log_path().to_path_buf(),
                })
                .collect(),
            cleanable,
            first_uncleanable,
            first_dirty: self.first_dirty_offset().min(first_uncleanable),
            upper_bound,
            delete_horizon_ms: self.cleaner.delete_horizon_ms,
            config: self.config.clone(),
        }
    }

    /// Whether the segments of `plan` from index `from` on are still those the pass read (none
    /// deleted, truncated or replaced; a roll keeps a segment's id).
    fn unchanged_since(&self, plan: &PassPlan, from: usize) -> bool {
        plan.segments[from..].iter().all(|s| {
            self.segments
                .get(&s.base_offset)
                .is_some_and(|current| current.id == s.id)
        })
    }
}

/// How a pass ended.
enum PassEnd {
    /// Cleaned up to this offset (the map's end).
    Done(i64),
    Aborted,
}

impl Log {
    /// How much of the log is dirty and whether it needs cleaning, for records below
    /// `upper_bound` (the high watermark) at `now_ms`: computed from memory, cheap enough to call
    /// for every partition on every round of a maintenance loop.
    pub fn cleanable_stats(&self, upper_bound: i64, now_ms: i64) -> CleanableStats {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cleanable_stats(upper_bound, now_ms)
    }

    /// The dirty share of the cleanable log (Kafka's cleanable ratio); see
    /// [`Log::cleanable_stats`].
    pub fn dirty_ratio(&self, upper_bound: i64, now_ms: i64) -> f64 {
        self.cleanable_stats(upper_bound, now_ms).dirty_ratio
    }

    /// Whether [`Log::clean`] has work that `min.cleanable.dirty.ratio`,
    /// `max.compaction.lag.ms` or an expired tombstone calls for; false unless the log is
    /// compacted.
    pub fn needs_cleaning(&self, upper_bound: i64, now_ms: i64) -> bool {
        self.cleanable_stats(upper_bound, now_ms).needs_cleaning
    }

    /// The first offset not yet compacted (persisted in `cleaner-offset-checkpoint`).
    pub fn first_dirty_offset(&self) -> i64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first_dirty_offset()
    }

    /// Compacts the log (see the module documentation of `cleaner.rs` and the crate README):
    /// keeps the latest record of every key in the sealed segments wholly below `upper_bound`
    /// (the high watermark: records not yet replicated everywhere are never cleaned) and older
    /// than `min.compaction.lag.ms` at `now_ms`, never the active segment; merges small
    /// segments; drops tombstones past their delete horizon. Runs as many passes as the key map
    /// needs to cover every dirty record. Does nothing unless the log is compacted.
    ///
    /// Appends and reads go on meanwhile; each cleaned segment is swapped in atomically. A clean
    /// racing with a truncation or deletion of its segments stops early
    /// ([`CleanOutcome::aborted`]); [`Log::close`] and [`Log::delete`] stop it and wait for it.
    pub fn clean(
        &self,
        upper_bound: i64,
        now_ms: i64,
        cleaner: &mut Cleaner,
    ) -> Result<CleanOutcome> {
        let _cleaning = self.cleaning.lock().unwrap_or_else(|p| p.into_inner());
        cleaner.fault_hit = false;
        let mut outcome = CleanOutcome::default();
        loop {
            let plan = {
                let state = self.read_state()?;
                outcome.first_dirty_offset = state.first_dirty_offset();
                if !state.config.is_compacted() {
                    break;
                }
                state.plan(upper_bound, now_ms)
            };
            outcome.first_uncleanable_offset = plan.first_uncleanable;
            let dirty = plan.cleanable > 0 && plan.first_dirty < plan.first_uncleanable;
            let expired = plan.cleanable > 0
                && outcome.passes == 0
                && plan.delete_horizon_ms.is_some_and(|h| h <= now_ms);
            if !dirty && !expired {
                break;
            }
            let end = match self.clean_pass(&plan, now_ms, cleaner, &mut outcome) {
                Ok(end) => end,
                Err(err) => {
                    if !cleaner.fault_hit {
                        remove_cleaned_files(&self.dir);
                    }
                    return Err(err);
                }
            };
            outcome.passes += 1;
            match end {
                PassEnd::Aborted => {
                    remove_cleaned_files(&self.dir);
                    outcome.aborted = true;
                    break;
                }
                PassEnd::Done(end) => {
                    outcome.first_dirty_offset = end;
                    if end >= plan.first_uncleanable {
                        break;
                    }
                }
            }
        }
        Ok(outcome)
    }

    fn aborting(&self) -> bool {
        self.clean_abort.load(Ordering::Relaxed)
    }

    /// One pass: build the key map from the dirty part, rewrite and swap every segment up to
    /// where the map ends, then move the checkpoint.
    fn clean_pass(
        &self,
        plan: &PassPlan,
        now_ms: i64,
        cleaner: &mut Cleaner,
        outcome: &mut CleanOutcome,
    ) -> Result<PassEnd> {
        let Some(map_end) = self.build_map(plan, cleaner)? else {
            return Ok(PassEnd::Aborted);
        };
        // Every cleanable segment holding offsets below the map's end is rewritten: the clean
        // part (one record per key already) and the dirty part the map covers.
        let rewrite = plan.segments[..plan.cleanable]
            .iter()
            .take_while(|s| s.base_offset < map_end)
            .count();
        let mut horizon: Option<i64> = None;
        let ctx = PassContext {
            config: &plan.config,
            now_ms,
            map_end,
            producer_expiration_ms: cleaner.config.producer_id_expiration_ms,
        };
        for group in group_segments(&plan.segments[..rewrite], plan.config.segment_bytes) {
            let written = match self.clean_group(plan, group.clone(), &ctx, cleaner, outcome)? {
                Some(written) => written,
                None => return Ok(PassEnd::Aborted),
            };
            if let Some(h) = written.horizon {
                horizon = Some(horizon.map_or(h, |old| old.min(h)));
            }
            if !self.swap_group(plan, group, written, cleaner, outcome)? {
                return Ok(PassEnd::Aborted);
            }
        }
        let mut state = self.write_state()?;
        if !state.unchanged_since(plan, plan.segments.len() - 1) {
            // Truncated meanwhile: the new data after the truncation point is dirty.
            return Ok(PassEnd::Aborted);
        }
        let checkpoint = CleanerCheckpoint {
            first_dirty_offset: map_end.clamp(state.log_start_offset, state.log_end_offset()),
            delete_horizon_ms: horizon,
        };
        checkpoint.store(&self.dir)?;
        state.cleaner = checkpoint;
        tracing::debug!(dir = %self.dir.display(), first_dirty_offset = map_end, "cleaner pass done");
        Ok(PassEnd::Done(map_end))
    }

    /// Reads the dirty part into the key map (and every batch header into the producer
    /// tracker). Returns the offset where the map ends: the first uncleanable offset, or the
    /// first record whose key did not fit. `None` if the clean must stop.
    fn build_map(&self, plan: &PassPlan, cleaner: &mut Cleaner) -> Result<Option<i64>> {
        let first_dirty = plan.first_dirty;
        let expected_keys: i64 = plan.segments[..plan.cleanable]
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .map(|s| s.next_offset - s.base_offset.max(first_dirty))
            .sum();
        cleaner
            .map
            .reset(usize::try_from(expected_keys).unwrap_or(usize::MAX));
        cleaner.producers.clear();
        cleaner.producers_overflow = false;
        let mut map_end = plan.first_uncleanable;
        let mut full = false;
        let Cleaner {
            map,
            read_buf,
            batch_buf,
            records,
            digests,
            producers,
            producers_overflow,
            config,
            ..
        } = cleaner;
        for (i, segment) in plan.segments.iter().enumerate() {
            let dirty = i < plan.cleanable && segment.next_offset > first_dirty;
            if !dirty && segment.base_offset >= plan.upper_bound {
                // Nothing committed from here on: nothing more to learn about producers.
                break;
            }
            let mut reader = match SegmentReader::open(
                &segment.path,
                segment.size,
                read_buf,
                config.io_buffer_bytes,
            ) {
                Ok(reader) => reader,
                Err(err) => return self.stop_or_fail(plan, i, err),
            };
            loop {
                if self.aborting() {
                    return Ok(None);
                }
                let body = dirty && !full;
                let header = match reader.next(body) {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(err) => return self.stop_or_fail(plan, i, err),
                };
                if !dirty && header.base_offset >= plan.upper_bound {
                    break;
                }
                // A producer's later batch that is not committed yet may still be truncated
                // away: only committed batches decide which one is its last.
                if header.producer_id >= 0 && header.last_offset() < plan.upper_bound {
                    if let Some(last) = producers.get_mut(&header.producer_id) {
                        *last = header.base_offset;
                    } else if producers.len() < MAX_TRACKED_PRODUCERS {
                        producers.insert(header.producer_id, header.base_offset);
                    } else {
                        *producers_overflow = true;
                    }
                }
                if !body || header.is_control() || header.next_offset() <= first_dirty {
                    continue;
                }
                let section = match records_section(reader.batch(), &header, batch_buf) {
                    Ok(section) => section,
                    Err(err) => {
                        return self.stop_or_fail(plan, i, reader.corrupt(err.to_string()));
                    }
                };
                if let Err(err) = split_records(section, &header, records) {
                    return self.stop_or_fail(plan, i, reader.corrupt(err.to_string()));
                }
                digest_keys(section, records, digests);
                map.prefetch(digests);
                for (record, digest) in records.iter().zip(digests.iter()) {
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    let Some(digest) = *digest else { continue };
                    if offset < first_dirty || offset >= plan.first_uncleanable {
                        continue;
                    }
                    if !map.put(digest, offset) {
                        map_end = offset;
                        full = true;
                        break;
                    }
                }
            }
        }
        if *producers_overflow {
            tracing::warn!(dir = %self.dir.display(), tracked = MAX_TRACKED_PRODUCERS, "too many producer ids to track: keeping every idempotent batch that would be removed, as an empty batch");
        }
        Ok(Some(map_end))
    }

    /// After an error reading segment `index` of the plan: if the log changed under the pass
    /// (retention deleted or truncation cut the segment), stop quietly; else it is a real error.
    fn stop_or_fail<T>(
        &self,
        plan: &PassPlan,
        index: usize,
        err: StorageError,
    ) -> Result<Option<T>> {
        let state = self.read_state()?;
        if state.unchanged_since(plan, index.min(plan.segments.len() - 1)) {
            Err(err)
        } else {
            Ok(None)
        }
    }

    /// Writes the cleaned version of the segments `group` of the plan to `.cleaned` files.
    /// `None` if the clean must stop.
    fn clean_group(
        &self,
        plan: &PassPlan,
        group: Range<usize>,
        ctx: &PassContext<'_>,
        cleaner: &mut Cleaner,
        outcome: &mut CleanOutcome,
    ) -> Result<Option<CleanedSegment>> {
        let base_offset = plan.segments[group.start].base_offset;
        let mut writer = CleanedWriter::create(
            &self.dir,
            base_offset,
            plan.config.index_interval_bytes,
            std::mem::take(&mut cleaner.write_buf),
            cleaner.config.io_buffer_bytes,
        )?;
        let result = self.clean_group_into(plan, group, ctx, cleaner, outcome, &mut writer);
        match result {
            Ok(true) => {
                let (written, buf) = writer.finish()?;
                cleaner.write_buf = buf;
                cleaner.check_fault(CleanFault::CleanedWritten, &self.dir)?;
                Ok(Some(written))
            }
            Ok(false) => {
                cleaner.write_buf = writer.discard();
                Ok(None)
            }
            Err(err) => {
                cleaner.write_buf = writer.discard();
                Err(err)
            }
        }
    }

    fn clean_group_into(
        &self,
        plan: &PassPlan,
        group: Range<usize>,
        ctx: &PassContext<'_>,
        cleaner: &mut Cleaner,
        outcome: &mut CleanOutcome,
        writer: &mut CleanedWriter,
    ) -> Result<bool> {
        let last_segment = group.end - 1;
        let Cleaner {
            read_buf,
            batch_buf,
            scratch,
            rebuilt,
            plain,
            record_buf,
            records,
            digests,
            producers,
            producers_overflow,
            map,
            config,
            ..
        } = cleaner;
        let producers_overflow = *producers_overflow;
        for i in group {
            let segment = &plan.segments[i];
            outcome.segments_read += 1;
            outcome.bytes_read += segment.size - FILE_HEADER_LEN;
            let mut reader = match SegmentReader::open(
                &segment.path,
                segment.size,
                read_buf,
                config.io_buffer_bytes,
            ) {
                Ok(reader) => reader,
                Err(err) => return self.stop_or_fail(plan, i, err).map(|_: Option<()>| false),
            };
            loop {
                if self.aborting() {
                    return Ok(false);
                }
                let header = match reader.next(true) {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(err) => return self.stop_or_fail(plan, i, err).map(|_: Option<()>| false),
                };
                let last_of_segment = i == last_segment && reader.at_end();
                let batch = reader.batch();
                if header.is_control() {
                    writer.append(batch, &header, false)?;
                    continue;
                }
                if let Err(err) = verify_batch(batch) {
                    return self
                        .stop_or_fail(plan, i, reader.corrupt(err.to_string()))
                        .map(|_: Option<()>| false);
                }
                let section = match records_section(batch, &header, batch_buf) {
                    Ok(section) => section,
                    Err(err) => {
                        return self
                            .stop_or_fail(plan, i, reader.corrupt(err.to_string()))
                            .map(|_: Option<()>| false);
                    }
                };
                if let Err(err) = split_records(section, &header, records) {
                    return self
                        .stop_or_fail(plan, i, reader.corrupt(err.to_string()))
                        .map(|_: Option<()>| false);
                }
                let had_horizon = header.has_delete_horizon();
                let horizon_passed = had_horizon && header.base_timestamp <= ctx.now_ms;
                let mut kept = 0usize;
                let mut tombstones_kept = false;
                // Keep flags in `scratch` (one byte per record): no allocation per batch.
                scratch.clear();
                digest_keys(section, records, digests);
                map.prefetch(digests);
                for (record, digest) in records.iter().zip(digests.iter()) {
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    let keep = match *digest {
                        None => true,
                        Some(digest) => {
                            let latest = map.get(digest);
                            if latest.is_some_and(|latest| offset < latest) {
                                false
                            } else if record.value_is_null {
                                // Only where the map is authoritative can no older value of the
                                // key survive the tombstone's removal.
                                let expired = horizon_passed && offset < ctx.map_end;
                                if expired {
                                    outcome.tombstones_removed += 1;
                                }
                                !expired
                            } else {
                                true
                            }
                        }
                    };
                    scratch.push(u8::from(keep));
                    if keep {
                        kept += 1;
                        tombstones_kept |= record.value_is_null;
                    }
                }
                outcome.records_read += records.len() as u64;
                outcome.records_removed += (records.len() - kept) as u64;
                let horizon = if tombstones_kept {
                    if had_horizon {
                        Some(header.base_timestamp)
                    } else {
                        Some(ctx.now_ms.saturating_add(ctx.config.delete_retention_ms))
                    }
                } else {
                    None
                };
                if kept > 0 && kept == records.len() && horizon.is_some() == had_horizon {
                    writer.append(batch, &header, false)?;
                    writer.note_horizon(horizon);
                    continue;
                }
                if kept == 0 {
                    let producer_needs = header.producer_id >= 0
                        && ctx.now_ms.saturating_sub(header.max_timestamp)
                            < ctx.producer_expiration_ms
                        && producers
                            .get(&header.producer_id)
                            .map_or(producers_overflow, |&last| last == header.base_offset);
                    if last_of_segment || producer_needs {
                        let empty = empty_batch(&header);
                        let empty_header = BatchHeader::parse(&empty)
                            .map_err(|e| reader.corrupt(e.to_string()))?;
                        writer.append(&empty, &empty_header, empty[..] != *batch)?;
                        outcome.empty_batches_kept += 1;
                    } else {
                        writer.mark_changed();
                        outcome.batches_removed += 1;
                    }
                    continue;
                }
                let keep: &[u8] = scratch;
                let buffers = RewriteBuffers {
                    out: rebuilt,
                    plain,
                    record: record_buf,
                };
                let horizon = rewrite_batch(&header, section, records, keep, horizon, buffers)
                    .map_err(|e| reader.corrupt(e.to_string()))?;
                let rebuilt_header =
                    BatchHeader::parse(rebuilt).map_err(|e| reader.corrupt(e.to_string()))?;
                writer.append(rebuilt, &rebuilt_header, true)?;
                writer.note_horizon(horizon);
            }
        }
        Ok(true)
    }

    /// Swaps the cleaned segment in for the segments `group` of the plan. Returns false (nothing
    /// changed) if those segments changed meanwhile.
    fn swap_group(
        &self,
        plan: &PassPlan,
        group: Range<usize>,
        written: CleanedSegment,
        cleaner: &mut Cleaner,
        outcome: &mut CleanOutcome,
    ) -> Result<bool> {
        let dir = &self.dir;
        let base_offset = plan.segments[group.start].base_offset;
        if !written.changed && group.len() == 1 {
            // The segment is already clean: leave it as it is.
            written.remove();
            return Ok(true);
        }
        for kind in [FileKind::OffsetIndex, FileKind::TimeIndex] {
            rename(
                &suffixed(dir, base_offset, kind, CLEANED_SUFFIX),
                &suffixed(dir, base_offset, kind, SWAP_SUFFIX),
            )?;
        }
        sync_dir(dir)?;
        cleaner.check_fault(CleanFault::IndexesSwapped, dir)?;
        let mut state = self.write_state()?;
        if !state.unchanged_since(plan, group.start) {
            drop(state);
            written.remove();
            return Ok(false);
        }
        rename(
            &suffixed(dir, base_offset, FileKind::Log, CLEANED_SUFFIX),
            &suffixed(dir, base_offset, FileKind::Log, SWAP_SUFFIX),
        )?;
        sync_dir(dir)?;
        // Committed: from here on, a crash is finished by the next open, and an error leaves
        // the files ahead of memory, so the log closes itself until it is reopened.
        let finish = (|| {
            cleaner.check_fault(CleanFault::SwapCommitted, dir)?;
            for segment in &plan.segments[group.start + 1..group.end] {
                Segment::delete_files(dir, segment.base_offset)?;
            }
            for kind in [FileKind::OffsetIndex, FileKind::TimeIndex] {
                rename(
                    &suffixed(dir, base_offset, kind, SWAP_SUFFIX),
                    &segment_path(dir, base_offset, kind),
                )?;
            }
            sync_dir(dir)?;
            cleaner.check_fault(CleanFault::OldSegmentsDeleted, dir)?;
            rename(
                &suffixed(dir, base_offset, FileKind::Log, SWAP_SUFFIX),
                &segment_path(dir, base_offset, FileKind::Log),
            )?;
            sync_dir(dir)?;
            Segment::open_sealed(
                dir,
                base_offset,
                plan.config.index_interval_bytes,
                &self.resources.files,
            )
        })();
        let mut segment = match finish {
            Ok(segment) => segment,
            Err(err) => {
                tracing::error!(dir = %dir.display(), base_offset, error = %err, "a compaction swap failed after its commit point: closing the log; reopening it completes the swap");
                for segment in state.segments.values() {
                    self.resources.files.invalidate(segment.id);
                }
                state.closed = true;
                return Err(err);
            }
        };
        segment.created_ms = plan.segments[group.clone()]
            .iter()
            .map(|s| s.created_ms)
            .min()
            .unwrap_or(segment.created_ms);
        for snapshot in &plan.segments[group.clone()] {
            if let Some(old) = state.segments.remove(&snapshot.base_offset) {
                self.resources.files.invalidate(old.id);
            }
        }
        state.segments.insert(base_offset, segment);
        drop(state);
        outcome.segments_written += 1;
        outcome.bytes_written += written.size - FILE_HEADER_LEN;
        tracing::debug!(dir = %dir.display(), base_offset, segments = group.len(), "swapped in a cleaned segment");
        Ok(true)
    }
}

/// What every group of a pass shares.
struct PassContext<'a> {
    config: &'a LogConfig,
    now_ms: i64,
    /// Offsets below this are covered by the key map.
    map_end: i64,
    producer_expiration_ms: i64,
}

/// Splits cleanable segments into runs of adjacent segments that fit one segment: at most
/// `segment.bytes` of data, offsets within a segment's 32-bit relative range, and an index small
/// enough to build in memory.
fn group_segments(segments: &[SegmentSnapshot], segment_bytes: u32) -> Vec<Range<usize>> {
    let limit = u64::from(segment_bytes).saturating_sub(FILE_HEADER_LEN);
    let mut groups = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let first = &segments[start];
        let mut bytes = first.size - FILE_HEADER_LEN;
        let mut entries = first.index_entries;
        let mut end = start + 1;
        while let Some(next) = segments.get(end) {
            let add = next.size - FILE_HEADER_LEN;
            let span = next.next_offset - 1 - first.base_offset;
            if bytes + add > limit
                || span > MAX_SEGMENT_OFFSET_SPAN
                || entries + next.index_entries > (MAX_ACTIVE_INDEX_ENTRIES / 2) as u64
            {
                break;
            }
            bytes += add;
            entries += next.index_entries;
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

/// Reads the batches of a segment file in order, through a reusable buffer: whole batches in
/// chunks of `chunk` bytes, or only headers (small windows) when the records are not needed.
struct SegmentReader<'b> {
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
    fn open(path: &'b Path, end: u64, buf: &'b mut Vec<u8>, chunk: usize) -> Result<Self> {
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

    fn corrupt(&self, reason: String) -> StorageError {
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
    fn next(&mut self, body: bool) -> Result<Option<BatchHeader>> {
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
    fn batch(&self) -> &[u8] {
        let offset = (self.current.0 - self.buf_start) as usize;
        &self.buf[offset..offset + self.current.1]
    }

    fn at_end(&self) -> bool {
        self.position >= self.end
    }
}

/// A cleaned segment's files, written and fsynced.
#[derive(Debug)]
struct CleanedSegment {
    dir: PathBuf,
    base_offset: i64,
    size: u64,
    /// Some batch differs from the input, or some was removed.
    changed: bool,
    /// The earliest delete horizon among its batches.
    horizon: Option<i64>,
}

impl CleanedSegment {
    fn remove(&self) {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex] {
            for suffix in [CLEANED_SUFFIX, SWAP_SUFFIX] {
                let _ = std::fs::remove_file(suffixed(&self.dir, self.base_offset, kind, suffix));
            }
        }
    }
}

/// Writes a cleaned segment: buffered data, indexes built as [`Segment`] builds them.
struct CleanedWriter {
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
    fn create(
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

    fn append(&mut self, batch: &[u8], header: &BatchHeader, changed: bool) -> Result<()> {
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

    fn mark_changed(&mut self) {
        self.changed = true;
    }

    fn note_horizon(&mut self, horizon: Option<i64>) {
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
    fn finish(mut self) -> Result<(CleanedSegment, Vec<u8>)> {
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
    fn discard(mut self) -> Vec<u8> {
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
fn suffixed(dir: &Path, base_offset: i64, kind: FileKind, suffix: &str) -> PathBuf {
    let mut path = segment_path(dir, base_offset, kind).into_os_string();
    path.push(suffix);
    PathBuf::from(path)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err("rename into place", to))
}

/// Removes leftover `.cleaned` files (best effort: they are removed at the next open anyway).
fn remove_cleaned_files(dir: &Path) {
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
pub(crate) fn finish_interrupted_clean(dir: &Path) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tributary_record::{BatchBuilder, Compression};

    fn batch(codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(1_000)
            .producer(7, 2, 100)
            .compression(codec);
        builder.push(1_000, Some(b"a"), Some(b"1"), &[("h", Some(b"x"))]);
        builder.push(1_005, Some(b"b"), None, &[]);
        builder.push(990, Some(b"c"), Some(b"3"), &[]);
        builder.build()
    }

    #[test]
    fn keyless_records_are_named() {
        let mut builder = BatchBuilder::new(0).compression(Compression::Lz4);
        builder.push(0, Some(b"k"), Some(b"v"), &[]);
        builder.push(0, None, Some(b"v"), &[]);
        let mut buf = batch(Compression::None).to_vec();
        let at = buf.len();
        buf.extend_from_slice(&builder.build());
        match check_keys(&buf) {
            Err(
                e @ StorageError::KeylessRecord {
                    position,
                    record: 1,
                    offset_delta: 1,
                },
            ) => {
                assert_eq!(position, at);
                assert!(
                    e.to_string()
                        .contains("record 1 (offset delta 1) of the batch at byte"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        check_keys(&batch(Compression::Gzip)).unwrap();
    }

    #[test]
    fn checkpoint_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CleanerCheckpoint::load(dir.path()).unwrap(), None);
        for checkpoint in [
            CleanerCheckpoint {
                first_dirty_offset: 42,
                delete_horizon_ms: None,
            },
            CleanerCheckpoint {
                first_dirty_offset: 7,
                delete_horizon_ms: Some(1_700_000_000_000),
            },
        ] {
            checkpoint.store(dir.path()).unwrap();
            assert_eq!(
                CleanerCheckpoint::load(dir.path()).unwrap(),
                Some(checkpoint)
            );
        }
        let path = dir.path().join(CLEANER_CHECKPOINT_FILE);
        std::fs::write(
            &path,
            "tributary-cleaner-checkpoint 1\nfirst-dirty-offset x\n",
        )
        .unwrap();
        assert!(matches!(
            CleanerCheckpoint::load(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
        std::fs::write(&path, "tributary-cleaner-checkpoint 9\n").unwrap();
        assert!(matches!(
            CleanerCheckpoint::load(dir.path()),
            Err(StorageError::UnsupportedFormat { found: 9, .. })
        ));
    }

    #[test]
    fn groups_respect_size_and_offset_span() {
        let snap = |base: i64, next: i64, size: u64| SegmentSnapshot {
            base_offset: base,
            id: 0,
            size: size + FILE_HEADER_LEN,
            next_offset: next,
            created_ms: 0,
            index_entries: 0,
            path: PathBuf::new(),
        };
        let segments = [
            snap(0, 10, 400),
            snap(10, 20, 500),
            snap(20, 30, 200),
            snap(30, 40, 900),
            snap(40, i64::from(i32::MAX) + 41, 10),
        ];
        let groups = group_segments(&segments, 1000 + FILE_HEADER_LEN as u32);
        assert_eq!(groups, vec![0..2, 2..3, 3..4, 4..5]);
    }
}
