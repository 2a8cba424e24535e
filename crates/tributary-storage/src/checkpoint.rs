//! The partition checkpoint: recovery point and log start offset, in one small text file.
//!
//! ```text
//! tributary-log-checkpoint 1
//! recovery-point 1234
//! log-start-offset 100
//! pending-truncation none          (or `truncate-to 1200`, `restart-at 5000`)
//! ```
//! A truncation records its intent here before it deletes anything, and the next open finishes
//! it: a crash in the middle can neither leave a gap in the offsets nor bring truncated records
//! back.
//! The recovery point is the offset below which everything is known to be on disk (fsynced);
//! crash recovery scans from the segment that holds it. It is written at roll, at close and
//! when the owner calls [`Log::checkpoint`](crate::Log::checkpoint), not on every flush: an older
//! recovery point only makes recovery scan more, never lose data.

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::format::write_atomic;

pub const CHECKPOINT_FILE: &str = "log-checkpoint";
const HEADER: &str = "tributary-log-checkpoint";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub pending: Option<PendingTruncation>,
}

/// A truncation that was started and must be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingTruncation {
    /// Everything from the batch holding this offset goes.
    TruncateTo(i64),
    /// Everything goes; the log restarts empty at this offset.
    RestartAt(i64),
}

impl Checkpoint {
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StorageError::io("read", &path, err)),
        };
        let corrupt = |line: u64, reason: &str| StorageError::corrupt(&path, line, reason);
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(HEADER))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| corrupt(1, "missing `tributary-log-checkpoint <version>` line"))?;
        if version != VERSION {
            return Err(StorageError::UnsupportedFormat {
                path: path.clone(),
                found: version,
                supported: VERSION,
            });
        }
        let mut field = |line: u64, name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| corrupt(line, "missing or malformed field"))
        };
        let recovery_point = field(2, "recovery-point")?;
        let log_start_offset = field(3, "log-start-offset")?;
        let pending_line = lines
            .next()
            .and_then(|l| l.strip_prefix("pending-truncation "))
            .ok_or_else(|| corrupt(4, "missing `pending-truncation` line"))?;
        let mut words = pending_line.split_whitespace();
        let pending = match (words.next(), words.next().map(str::parse::<i64>)) {
            (Some("none"), None) => None,
            (Some("truncate-to"), Some(Ok(o))) if o >= 0 => Some(PendingTruncation::TruncateTo(o)),
            (Some("restart-at"), Some(Ok(o))) if o >= 0 => Some(PendingTruncation::RestartAt(o)),
            _ => return Err(corrupt(4, "malformed `pending-truncation` line")),
        };
        Ok(Some(Self {
            recovery_point,
            log_start_offset,
            pending,
        }))
    }

    pub fn store(&self, dir: &Path) -> Result<()> {
        let pending = match self.pending {
            None => "none".to_owned(),
            Some(PendingTruncation::TruncateTo(o)) => format!("truncate-to {o}"),
            Some(PendingTruncation::RestartAt(o)) => format!("restart-at {o}"),
        };
        let text = format!(
            "{HEADER} {VERSION}\nrecovery-point {}\nlog-start-offset {}\npending-truncation {pending}\n",
            self.recovery_point, self.log_start_offset
        );
        write_atomic(&dir.join(CHECKPOINT_FILE), text.as_bytes())
    }
}
