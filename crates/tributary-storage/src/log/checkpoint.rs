//! The log's two small text checkpoints, in one format: a `<name> <version>` line, then one
//! `<field> <value>` line per field, replaced atomically (temporary file, fsync, rename,
//! directory fsync).
//!
//! ```text
//! log-checkpoint:                         cleaner-offset-checkpoint:
//! tributary-log-checkpoint 1              tributary-cleaner-checkpoint 1
//! recovery-point 1234                     first-dirty-offset 1234
//! log-start-offset 100                    delete-horizon-ms none   (or a timestamp)
//! pending-truncation none
//!   (or `truncate-to 1200`, `restart-at 5000`)
//! ```
//!
//! `log-checkpoint`: the recovery point is the offset below which everything is known to be on
//! disk (fsynced); crash recovery scans from the segment that holds it. It is written at roll,
//! at close and when the owner calls `Log::checkpoint`, not on every flush: an older recovery
//! point only makes recovery scan more, never lose data. A truncation records its intent here
//! before it deletes anything, and the next open finishes it: a crash in the middle can neither
//! leave a gap in the offsets nor bring truncated records back.
//!
//! `cleaner-offset-checkpoint`: where the dirty part of a compacted log starts, and the earliest
//! delete horizon of its tombstones.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::format::write_atomic;

/// Name of the recovery checkpoint in the partition directory.
pub(crate) const CHECKPOINT_FILE: &str = "log-checkpoint";
/// Name of the cleaner's checkpoint in the partition directory.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// One text checkpoint file: its name and its first line.
struct TextFile {
    name: &'static str,
    header: &'static str,
    version: u32,
}

const LOG_FILE: TextFile = TextFile {
    name: CHECKPOINT_FILE,
    header: "tributary-log-checkpoint",
    version: 1,
};

const CLEANER_FILE: TextFile = TextFile {
    name: CLEANER_CHECKPOINT_FILE,
    header: "tributary-cleaner-checkpoint",
    version: 1,
};

/// The field lines of a checkpoint whose version line was checked, read in order.
struct Fields {
    path: PathBuf,
    lines: std::vec::IntoIter<String>,
    /// The 1-based number of the next line.
    line: u64,
}

impl Fields {
    /// The value of the next line, which must be `<name> <value>`; `what` is the error if not.
    fn next(&mut self, name: &str, what: &str) -> Result<(u64, String)> {
        let line = self.line;
        self.line += 1;
        let value = self
            .lines
            .next()
            .and_then(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
        match value {
            Some(value) => Ok((line, value)),
            None => Err(self.corrupt(line, what)),
        }
    }

    /// A non-negative offset field.
    fn offset(&mut self, name: &str, what: &str) -> Result<i64> {
        let (line, value) = self.next(name, what)?;
        value
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| self.corrupt(line, what))
    }

    fn corrupt(&self, line: u64, reason: &str) -> StorageError {
        StorageError::corrupt(&self.path, line, reason)
    }
}

impl TextFile {
    /// The fields of the file in `dir`, `None` if there is none; an error if its first line is
    /// not this file's name and version.
    fn read(&self, dir: &Path) -> Result<Option<Fields>> {
        let path = dir.join(self.name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StorageError::io("read", &path, err)),
        };
        let mut lines = text
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(self.header).map(str::to_owned))
            .and_then(|v| v.trim().parse::<u32>().ok());
        let Some(version) = version else {
            let reason = format!("missing `{} <version>` line", self.header);
            return Err(StorageError::corrupt(&path, 1, &reason));
        };
        if version != self.version {
            return Err(StorageError::UnsupportedFormat {
                path,
                found: version,
                supported: self.version,
            });
        }
        Ok(Some(Fields {
            path,
            lines,
            line: 2,
        }))
    }

    /// Replaces the file in `dir` with these `(name, value)` lines.
    fn write(&self, dir: &Path, fields: &[(&str, String)]) -> Result<()> {
        let mut text = format!("{} {}\n", self.header, self.version);
        for (name, value) in fields {
            text.push_str(name);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        }
        write_atomic(&dir.join(self.name), text.as_bytes())
    }
}

/// The recovery point, the log start offset and an unfinished truncation (`log-checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct LogCheckpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub pending: Option<PendingTruncation>,
}

/// A truncation that was started and must be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingTruncation {
    /// Everything from the batch holding this offset goes.
    TruncateTo(i64),
    /// Everything goes; the log restarts empty at this offset.
    RestartAt(i64),
}

impl LogCheckpoint {
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let Some(mut fields) = LOG_FILE.read(dir)? else {
            return Ok(None);
        };
        let recovery_point = fields.offset("recovery-point", "missing or malformed field")?;
        let log_start_offset = fields.offset("log-start-offset", "missing or malformed field")?;
        let (line, pending) =
            fields.next("pending-truncation ", "missing `pending-truncation` line")?;
        let mut words = pending.split_whitespace();
        let pending = match (words.next(), words.next().map(str::parse::<i64>)) {
            (Some("none"), None) => None,
            (Some("truncate-to"), Some(Ok(o))) if o >= 0 => Some(PendingTruncation::TruncateTo(o)),
            (Some("restart-at"), Some(Ok(o))) if o >= 0 => Some(PendingTruncation::RestartAt(o)),
            _ => return Err(fields.corrupt(line, "malformed `pending-truncation` line")),
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
        LOG_FILE.write(
            dir,
            &[
                ("recovery-point", self.recovery_point.to_string()),
                ("log-start-offset", self.log_start_offset.to_string()),
                ("pending-truncation", pending),
            ],
        )
    }
}

/// Where the dirty part starts and the earliest delete horizon (`cleaner-offset-checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CleanerCheckpoint {
    pub first_dirty_offset: i64,
    pub delete_horizon_ms: Option<i64>,
}

impl CleanerCheckpoint {
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let Some(mut fields) = CLEANER_FILE.read(dir)? else {
            return Ok(None);
        };
        let first_dirty_offset = fields.offset(
            "first-dirty-offset ",
            "missing or malformed `first-dirty-offset`",
        )?;
        let (line, horizon) = fields.next("delete-horizon-ms ", "missing `delete-horizon-ms`")?;
        let delete_horizon_ms = match horizon.as_str() {
            "none" => None,
            ms => Some(
                ms.parse::<i64>()
                    .map_err(|_| fields.corrupt(line, "malformed `delete-horizon-ms`"))?,
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
        CLEANER_FILE.write(
            dir,
            &[
                ("first-dirty-offset", self.first_dirty_offset.to_string()),
                ("delete-horizon-ms", horizon),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_checkpoints_are_written_byte_for_byte_as_before() {
        let dir = tempfile::tempdir().unwrap();
        LogCheckpoint {
            recovery_point: 1234,
            log_start_offset: 100,
            pending: Some(PendingTruncation::TruncateTo(1200)),
        }
        .store(dir.path())
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap(),
            "tributary-log-checkpoint 1\nrecovery-point 1234\nlog-start-offset 100\npending-truncation truncate-to 1200\n"
        );
        CleanerCheckpoint {
            first_dirty_offset: 7,
            delete_horizon_ms: None,
        }
        .store(dir.path())
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CLEANER_CHECKPOINT_FILE)).unwrap(),
            "tributary-cleaner-checkpoint 1\nfirst-dirty-offset 7\ndelete-horizon-ms none\n"
        );
    }

    #[test]
    fn log_checkpoint_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LogCheckpoint::load(dir.path()).unwrap(), None);
        for pending in [
            None,
            Some(PendingTruncation::TruncateTo(5)),
            Some(PendingTruncation::RestartAt(9)),
        ] {
            let checkpoint = LogCheckpoint {
                recovery_point: 42,
                log_start_offset: 3,
                pending,
            };
            checkpoint.store(dir.path()).unwrap();
            assert_eq!(LogCheckpoint::load(dir.path()).unwrap(), Some(checkpoint));
        }
        let path = dir.path().join(CHECKPOINT_FILE);
        for damaged in [
            "",
            "tributary-log-checkpoint x\n",
            "tributary-log-checkpoint 1\nrecovery-point -1\nlog-start-offset 0\npending-truncation none\n",
            "tributary-log-checkpoint 1\nrecovery-point 1\nlog-start-offset 0\n",
            "tributary-log-checkpoint 1\nrecovery-point 1\nlog-start-offset 0\npending-truncation cut 5\n",
        ] {
            std::fs::write(&path, damaged).unwrap();
            assert!(
                matches!(
                    LogCheckpoint::load(dir.path()),
                    Err(StorageError::Corrupt { .. })
                ),
                "{damaged:?}"
            );
        }
        std::fs::write(&path, "tributary-log-checkpoint 2\n").unwrap();
        assert!(matches!(
            LogCheckpoint::load(dir.path()),
            Err(StorageError::UnsupportedFormat { found: 2, .. })
        ));
    }

    #[test]
    fn cleaner_checkpoint_round_trips_and_refuses_damage() {
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
}
