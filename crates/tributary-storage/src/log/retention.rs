//! Retention (`cleanup.policy=delete`): whole sealed segments deleted by age and size, and the
//! log start offset moved forward.

use super::{Log, State};
use crate::error::{Result, StorageError};
use crate::format::FILE_HEADER_LEN;

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Data bytes deleted.
    pub bytes: u64,
}

impl Log {
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
}
