//! The coordinator's Raft state machine: the metadata image, plus the most recent records so
//! brokers can follow the metadata log without a snapshot each time.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tributary_metadata::{ApiError, MetadataImage, MetadataRecord, RecordResult};
use tributary_raft::{BoxError, StateMachine};

/// Records kept in memory for followers of the metadata log; one further behind gets a
/// snapshot of the image first.
pub const RECENT_RECORDS: usize = 10_000;

/// What applying a record answered (the proposer's reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Result<RecordResult, ApiError>);

impl Default for Applied {
    fn default() -> Self {
        Self(Ok(RecordResult::Done))
    }
}

/// The metadata image and the tail of the metadata log.
#[derive(Debug, Default)]
pub struct MetadataState {
    image: MetadataImage,
    /// Records applied successfully, by offset, oldest first (at most [`RECENT_RECORDS`]).
    recent: VecDeque<(u64, MetadataRecord)>,
    /// Every successful record at or above this offset is in `recent`.
    complete_from: u64,
}

impl MetadataState {
    /// The current image.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Records from `from` on, if the tail still holds all of them (`None`: send a snapshot).
    pub fn records_from(&self, from: u64, max: usize) -> Option<Vec<(u64, MetadataRecord)>> {
        if from < self.complete_from {
            return None;
        }
        let start = self.recent.partition_point(|(offset, _)| *offset < from);
        Some(self.recent.iter().skip(start).take(max).cloned().collect())
    }
}

impl StateMachine for MetadataState {
    type Command = MetadataRecord;
    type Response = Applied;

    fn apply(&mut self, log_index: u64, command: &MetadataRecord) -> Applied {
        let result = self.image.apply(log_index, command);
        if result.is_ok() {
            if self.recent.len() == RECENT_RECORDS
                && let Some((dropped, _)) = self.recent.pop_front()
            {
                self.complete_from = dropped + 1;
            }
            self.recent.push_back((log_index, command.clone()));
        }
        Applied(result)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.image.to_snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), BoxError> {
        self.image = MetadataImage::from_snapshot(snapshot)?;
        self.recent.clear();
        self.complete_from = self.image.offset + 1;
        Ok(())
    }
}
