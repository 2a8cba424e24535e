//! One pass of a clean: the key map built from the dirty part, each group of segments rewritten
//! into a `.cleaned` segment and swapped in, the cleaner checkpoint moved.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tributary_record::{
    BatchHeader, RewriteBuffers, empty_batch, records_section, rewrite_batch, split_records,
    verify_batch,
};

use super::files::{
    CLEANED_SUFFIX, CleanedSegment, CleanedWriter, SWAP_SUFFIX, SegmentReader, rename, suffixed,
};
use super::{CleanFault, CleanOutcome, Cleaner, MAX_TRACKED_PRODUCERS, digest_keys};
use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::format::{FILE_HEADER_LEN, FileKind, segment_path, sync_dir};
use crate::log::checkpoint::CleanerCheckpoint;
use crate::log::{Log, MAX_ACTIVE_INDEX_ENTRIES, MAX_SEGMENT_OFFSET_SPAN, State};
use crate::segment::Segment;

/// A sealed segment as a pass saw it.
#[derive(Debug, Clone)]
pub(super) struct SegmentSnapshot {
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
pub(super) struct PassPlan {
    /// Every segment, the active one last.
    pub(super) segments: Vec<SegmentSnapshot>,
    /// The first `cleanable` segments may be rewritten.
    pub(super) cleanable: usize,
    pub(super) first_uncleanable: i64,
    pub(super) first_dirty: i64,
    /// Only records below it are committed (the high watermark).
    pub(super) upper_bound: i64,
    pub(super) delete_horizon_ms: Option<i64>,
    pub(super) config: LogConfig,
}

impl State {
    pub(super) fn plan(&self, upper_bound: i64, now_ms: i64) -> PassPlan {
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
pub(super) enum PassEnd {
    /// Cleaned up to this offset (the map's end).
    Done(i64),
    Aborted,
}

impl Log {
    fn aborting(&self) -> bool {
        self.clean_abort.load(Ordering::Relaxed)
    }

    /// One pass: build the key map from the dirty part, rewrite and swap every segment up to
    /// where the map ends, then move the checkpoint.
    pub(super) fn clean_pass(
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
#[cfg(test)]
mod tests {
    use super::*;

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
