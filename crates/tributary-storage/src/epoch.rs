//! The leader-epoch cache: for each leader epoch, the first offset written in it (KIP-101).
//!
//! A follower that becomes one after a failover asks the new leader for the end offset of its
//! own latest epoch and truncates beyond it, so replicas never diverge. The cache answers that
//! question. It is checkpointed to `leader-epoch-checkpoint` in Kafka's text layout (a version
//! line, a count line, then `epoch start_offset` lines) whenever it changes.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::format::write_atomic;

/// Version of the checkpoint layout (Kafka's is 0, and ours is the same layout).
const CHECKPOINT_VERSION: u32 = 0;
/// File name inside the partition directory.
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// The answer to "where does epoch E end?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    /// The largest epoch in the log at or below the one asked for; -1 if there is none.
    pub leader_epoch: i32,
    /// The first offset of the next higher epoch (or the log end offset when the epoch asked for
    /// is the latest); -1 if there is none.
    pub end_offset: i64,
}

impl EpochEndOffset {
    /// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET answer.
    pub const UNDEFINED: Self = Self {
        leader_epoch: -1,
        end_offset: -1,
    };
}

#[derive(Debug)]
pub(crate) struct EpochCache {
    path: PathBuf,
    /// The checkpoint file existed when loaded.
    found: bool,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(EPOCH_CHECKPOINT_FILE);
        let (entries, found) = match std::fs::read_to_string(&path) {
            Ok(text) => (parse(&path, &text)?, true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => (Vec::new(), false),
            Err(err) => return Err(StorageError::io("read", &path, err)),
        };
        Ok(Self {
            path,
            found,
            entries,
        })
    }

    /// An empty cache for `dir`, replacing whatever checkpoint is there at the next change.
    pub fn empty(dir: &Path) -> Self {
        Self {
            path: dir.join(EPOCH_CHECKPOINT_FILE),
            found: false,
            entries: Vec::new(),
        }
    }

    pub fn found(&self) -> bool {
        self.found
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`): a no-op for the
    /// latest epoch at or after its start; otherwise entries with an epoch at or above `epoch`,
    /// or a start at or after `start_offset`, are replaced (they hold no record the log keeps).
    /// Returns whether the cache changed (and was checkpointed).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool> {
        if epoch < 0 {
            return Ok(false);
        }
        if let Some(&(latest, start)) = self.entries.last()
            && latest == epoch
            && start_offset >= start
        {
            return Ok(false);
        }
        self.entries
            .retain(|&(e, start)| e < epoch && start < start_offset);
        self.entries.push((epoch, start_offset));
        self.checkpoint()?;
        Ok(true)
    }

    /// The newest epoch that has records below `log_end_offset`.
    pub fn latest_epoch_with_data(&self, log_end_offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|&&(_, start)| start < log_end_offset)
            .map(|&(epoch, _)| epoch)
    }

    /// KIP-101/279, as Kafka answers it: for the latest epoch, the log end offset; for an older
    /// one, the start of the next higher epoch, with the largest epoch at or below the one asked
    /// for (or the one asked for, if it is older than every entry); for a newer or unknown one,
    /// UNDEFINED.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> EpochEndOffset {
        let Some(&(latest, _)) = self.entries.last() else {
            return EpochEndOffset::UNDEFINED;
        };
        if epoch < 0 {
            return EpochEndOffset::UNDEFINED;
        }
        if epoch == latest {
            return EpochEndOffset {
                leader_epoch: latest,
                end_offset: log_end_offset,
            };
        }
        let above = self.entries.partition_point(|&(e, _)| e <= epoch);
        let Some(&(_, higher_start)) = self.entries.get(above) else {
            return EpochEndOffset::UNDEFINED;
        };
        let leader_epoch = above
            .checked_sub(1)
            .map_or(epoch, |floor| self.entries[floor].0);
        EpochEndOffset {
            leader_epoch,
            end_offset: higher_start,
        }
    }

    /// Forgets epochs that start at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        self.retain_starts(|start| start < end_offset)
    }

    fn retain_starts(&mut self, keep: impl Fn(i64) -> bool) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| keep(start));
        if self.entries.len() != before {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Drops epochs wholly before `start_offset`; the newest of them now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let below = self
            .entries
            .partition_point(|&(_, start)| start <= start_offset);
        if below == 0 {
            return Ok(());
        }
        let (epoch, start) = self.entries[below - 1];
        if below == 1 && start == start_offset {
            return Ok(());
        }
        self.entries.drain(..below - 1);
        self.entries[0] = (epoch, start.max(start_offset));
        self.checkpoint()
    }

    /// Replaces every entry (after a rebuild from the batches themselves).
    pub fn replace(&mut self, entries: Vec<(i32, i64)>) -> Result<()> {
        if entries != self.entries || !self.found {
            self.found = true;
            self.entries = entries;
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes the checkpoint if there is no file yet (so the next open need not rebuild it).
    pub fn ensure_written(&mut self) -> Result<()> {
        if !self.found {
            self.checkpoint()?;
            self.found = true;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

fn parse(path: &Path, text: &str) -> Result<Vec<(i32, i64)>> {
    let corrupt = |line: usize, reason: String| StorageError::corrupt(path, line as u64, reason);
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(1, "missing version line".into()))?;
    if version != CHECKPOINT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: version,
            supported: CHECKPOINT_VERSION,
        });
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(2, "missing entry count line".into()))?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for (i, line) in lines.enumerate() {
        let mut fields = line.split_whitespace();
        let entry = match (fields.next(), fields.next(), fields.next()) {
            (Some(epoch), Some(start), None) => {
                epoch.parse::<i32>().ok().zip(start.parse::<i64>().ok())
            }
            _ => None,
        };
        let (epoch, start) = entry.ok_or_else(|| corrupt(i + 3, format!("bad entry {line:?}")))?;
        if let Some(&(prev_epoch, prev_start)) = entries.last()
            && (epoch <= prev_epoch || start < prev_start)
        {
            return Err(corrupt(i + 3, format!("entry {line:?} does not increase")));
        }
        entries.push((epoch, start));
    }
    if entries.len() != count {
        return Err(corrupt(
            2,
            format!("{count} entries announced, {} found", entries.len()),
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kip_279() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::load(dir.path()).unwrap();
        assert_eq!(cache.end_offset_for(0, 0), EpochEndOffset::UNDEFINED);
        cache.assign(1, 0).unwrap();
        cache.assign(3, 10).unwrap();
        cache.assign(5, 25).unwrap();
        assert!(
            !cache.assign(5, 30).unwrap(),
            "the latest epoch keeps its start"
        );
        let at = |epoch| cache.end_offset_for(epoch, 40);
        let answer = |leader_epoch, end_offset| EpochEndOffset {
            leader_epoch,
            end_offset,
        };
        assert_eq!(
            at(0),
            answer(0, 0),
            "older than every entry: where the log's epochs start"
        );
        assert_eq!(at(1), answer(1, 10));
        assert_eq!(at(2), answer(1, 10));
        assert_eq!(at(4), answer(3, 25));
        assert_eq!(at(5), answer(5, 40));
        assert_eq!(at(9), EpochEndOffset::UNDEFINED, "newer than the latest");

        let reloaded = EpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), &[(1, 0), (3, 10), (5, 25)]);

        // A lower epoch replaces the entries at or above it (Kafka's assign).
        cache.assign(4, 30).unwrap();
        assert_eq!(cache.entries(), &[(1, 0), (3, 10), (4, 30)]);
        assert_eq!(cache.latest_epoch_with_data(30), Some(3));
        cache.truncate_from_end(25).unwrap();
        assert_eq!(cache.entries(), &[(1, 0), (3, 10)]);
        cache.truncate_from_start(12).unwrap();
        assert_eq!(cache.entries(), &[(3, 12)]);
    }

    #[test]
    fn corrupt_checkpoints_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EPOCH_CHECKPOINT_FILE);
        std::fs::write(&path, "0\n2\n1 0\n").unwrap();
        let err = EpochCache::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 entries announced, 1 found"), "{err}");
        std::fs::write(&path, "7\n0\n").unwrap();
        assert!(matches!(
            EpochCache::load(dir.path()),
            Err(StorageError::UnsupportedFormat { found: 7, .. })
        ));
    }
}
