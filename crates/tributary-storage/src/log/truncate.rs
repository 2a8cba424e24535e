//! Truncation: a follower's divergent tail cut, or the whole log restarted at an offset. The
//! intent is checkpointed first, so an open after a crash finishes it.

use super::checkpoint::{CleanerCheckpoint, PendingTruncation};
use super::{Log, State};
use crate::error::Result;
use crate::format::sync_dir;
use crate::segment::Segment;

impl Log {
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

    pub(super) fn truncate_to_locked(&self, state: &mut State, offset: i64) -> Result<i64> {
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

    pub(super) fn restart_at_locked(&self, state: &mut State, offset: i64) -> Result<()> {
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
}
