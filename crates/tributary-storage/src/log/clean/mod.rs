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
//!
//! Here: the cleaner's settings and reusable state, what it reports, and the entry points on
//! `Log`. `pass` runs one pass (key map, rewrite, swap); `files` reads and writes the segment
//! files of a pass and finishes an interrupted swap at open. The batch bytes are rewritten by
//! `tributary_record` (`split_records`, `rewrite_batch`, `empty_batch`).

mod files;
mod pass;

use std::collections::HashMap;
use std::path::Path;

use tributary_record::{
    BatchHeader, Batches, RecordError, RecordSpan, records_section, split_records,
};

pub use super::checkpoint::CLEANER_CHECKPOINT_FILE;
pub(super) use files::finish_interrupted_clean;
use files::remove_cleaned_files;
use pass::PassEnd;

use super::{Log, State};
use crate::error::{Result, StorageError};
use crate::format::FILE_HEADER_LEN;
use crate::offset_map::{KeyDigest, OffsetMap};

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
pub(super) fn check_batch_keys(
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

    fn cleanable_stats(&self, upper_bound: i64, now_ms: i64) -> CleanableStats {
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

    /// Compacts the log (see the module documentation of `log/clean` and the crate README):
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
}
