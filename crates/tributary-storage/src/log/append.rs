//! Appends: a leader's (offsets assigned, epoch stamped) and a follower's (bytes as the leader
//! wrote them), and the roll of the active segment.

use std::io::IoSlice;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use tributary_record::{BatchHeader, Batches, RecordError, TimestampType};

use super::clean::check_batch_keys;
use super::{Log, LogResources, MAX_ACTIVE_INDEX_ENTRIES, MAX_SEGMENT_OFFSET_SPAN, State};
use crate::error::{Result, StorageError};
use crate::format::FILE_HEADER_LEN;
use crate::segment::Segment;

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

impl Log {
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
    pub(super) fn roll_locked(&self, state: &mut State, base_offset: i64) -> Result<()> {
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
