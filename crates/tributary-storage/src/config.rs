//! A log's configuration, by Kafka's topic-config names, with Kafka's defaults.

use std::fmt;
use std::str::FromStr;

use tributary_record::TimestampType;

use crate::error::{Result, StorageError};

/// `cleanup.policy`: what happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CleanupPolicy {
    /// `delete`: whole segments go by age and size (`retention.ms`, `retention.bytes`).
    #[default]
    Delete,
    /// `compact`: the cleaner keeps the latest record of every key; nothing is deleted by age
    /// or size.
    Compact,
    /// `compact,delete` (or `delete,compact`): both.
    CompactDelete,
}

impl CleanupPolicy {
    /// The cleaner compacts the log.
    pub fn compacts(self) -> bool {
        matches!(self, Self::Compact | Self::CompactDelete)
    }

    /// Retention deletes segments by age and size.
    pub fn deletes(self) -> bool {
        matches!(self, Self::Delete | Self::CompactDelete)
    }
}

/// Kafka's spelling: `delete`, `compact`, `compact,delete`.
impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
            Self::CompactDelete => "compact,delete",
        })
    }
}

/// Parses Kafka's list form, in any order and case, with or without spaces: `compact`,
/// `delete`, `compact,delete`, `Delete, compact`. An empty, unknown or repeated item is refused.
impl FromStr for CleanupPolicy {
    type Err = StorageError;

    fn from_str(value: &str) -> Result<Self> {
        let bad = |reason: String| StorageError::InvalidConfig {
            key: "cleanup.policy",
            reason,
        };
        let (mut compact, mut delete) = (false, false);
        for item in value.split(',').map(str::trim) {
            let seen = if item.eq_ignore_ascii_case("compact") {
                &mut compact
            } else if item.eq_ignore_ascii_case("delete") {
                &mut delete
            } else {
                return Err(bad(format!(
                    "`{item}` in `{value}` is not `compact` or `delete`"
                )));
            };
            if std::mem::replace(seen, true) {
                return Err(bad(format!("`{item}` is listed twice in `{value}`")));
            }
        }
        Ok(match (compact, delete) {
            (true, true) => Self::CompactDelete,
            (true, false) => Self::Compact,
            (false, true) => Self::Delete,
            (false, false) => return Err(bad("no policy given".into())),
        })
    }
}

/// Per-log configuration. Field names are Kafka's topic config keys with `.` as `_`; `-1` means
/// unlimited where Kafka says so.
// `Eq` by hand: the one float, `min_cleanable_dirty_ratio`, is never NaN in a validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this size.
    pub segment_bytes: u32,
    /// `segment.ms`: roll the active segment once its first batch is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes of log between two entries of the sparse indexes.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest record batch a leader accepts.
    pub max_message_bytes: u32,
    /// `retention.ms`: delete sealed segments whose newest record is older; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger; -1 = no limit.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many appended records; `None` (Kafka's default of
    /// Long.MAX_VALUE) leaves durability to replication and the OS.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the oldest unflushed append is this old; `None` = never by time.
    pub flush_ms: Option<i64>,
    /// `message.timestamp.type`: keep the producer's timestamps, or stamp the leader's clock.
    pub message_timestamp_type: TimestampType,
    /// `cleanup.policy`: delete by age and size, compact by key, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long the cleaner keeps a tombstone (a record with a null
    /// value) after it first cleaned the batch holding it, so a consumer that started reading
    /// before still sees the delete.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean once the not-yet-compacted share of the cleanable log
    /// reaches this (0 to 1).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long (a segment is
    /// cleaned only once its newest timestamp is this old).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record stays uncompacted at most about this long: a log with a
    /// dirty segment this old is cleaned whatever its dirty ratio, and the active segment of a
    /// compacted log rolls at this age.
    pub max_compaction_lag_ms: i64,
}

impl Eq for LogConfig {}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: None,
            flush_ms: None,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

impl LogConfig {
    /// The cleaner compacts this log (`cleanup.policy` holds `compact`): every record a leader
    /// appends must have a key.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy.compacts()
    }

    /// Retention deletes segments by age and size (`cleanup.policy` holds `delete`).
    pub fn deletes_by_retention(&self) -> bool {
        self.cleanup_policy.deletes()
    }

    /// The age at which the active segment rolls: `segment.ms`, or `max.compaction.lag.ms` if
    /// that is shorter and the log is compacted (the cleaner never touches the active segment).
    pub fn roll_ms(&self) -> i64 {
        if self.is_compacted() {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }

    /// Checks every value against Kafka's valid range, naming the first key that is wrong.
    pub fn validate(&self) -> Result<()> {
        fn invalid(key: &'static str, reason: String) -> Result<()> {
            Err(StorageError::InvalidConfig { key, reason })
        }
        // Kafka: segment.bytes at least 14 (LegacyRecord overhead); we need room for a header
        // and one v2 batch, and positions must fit the index's 32-bit field.
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u32 {
            return invalid(
                "segment.bytes",
                format!("{} is outside [1024, {}]", self.segment_bytes, i32::MAX),
            );
        }
        if self.segment_ms < 1 {
            return invalid(
                "segment.ms",
                format!("{} must be at least 1", self.segment_ms),
            );
        }
        if self.index_interval_bytes == 0 {
            return invalid("index.interval.bytes", "must be at least 1".into());
        }
        if self.max_message_bytes < tributary_record::BATCH_HEADER_LEN as u32 {
            return invalid(
                "max.message.bytes",
                format!(
                    "{} is smaller than a record batch header ({} bytes)",
                    self.max_message_bytes,
                    tributary_record::BATCH_HEADER_LEN
                ),
            );
        }
        if self.retention_ms < -1 {
            return invalid(
                "retention.ms",
                format!("{} must be -1 or more", self.retention_ms),
            );
        }
        if self.retention_bytes < -1 {
            return invalid(
                "retention.bytes",
                format!("{} must be -1 or more", self.retention_bytes),
            );
        }
        if self.flush_messages == Some(0) {
            return invalid("flush.messages", "must be at least 1".into());
        }
        if let Some(ms) = self.flush_ms
            && ms < 0
        {
            return invalid("flush.ms", format!("{ms} must be 0 or more"));
        }
        if self.delete_retention_ms < 0 {
            return invalid(
                "delete.retention.ms",
                format!("{} must be 0 or more", self.delete_retention_ms),
            );
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return invalid(
                "min.cleanable.dirty.ratio",
                format!("{} is outside [0, 1]", self.min_cleanable_dirty_ratio),
            );
        }
        if self.min_compaction_lag_ms < 0 {
            return invalid(
                "min.compaction.lag.ms",
                format!("{} must be 0 or more", self.min_compaction_lag_ms),
            );
        }
        if self.max_compaction_lag_ms < 1 {
            return invalid(
                "max.compaction.lag.ms",
                format!("{} must be at least 1", self.max_compaction_lag_ms),
            );
        }
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms {
            return invalid(
                "max.compaction.lag.ms",
                format!(
                    "{} is below min.compaction.lag.ms = {}",
                    self.max_compaction_lag_ms, self.min_compaction_lag_ms
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_policy_parses_kafka_lists() {
        for (text, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("Delete, COMPACT", CleanupPolicy::CompactDelete),
        ] {
            assert_eq!(text.parse::<CleanupPolicy>().unwrap(), policy, "{text}");
        }
        assert_eq!(
            CleanupPolicy::CompactDelete
                .to_string()
                .parse::<CleanupPolicy>()
                .unwrap(),
            CleanupPolicy::CompactDelete
        );
        for bad in [
            "",
            "compact,compact",
            "compact,",
            "remove",
            "compact;delete",
        ] {
            let err = bad.parse::<CleanupPolicy>().unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::InvalidConfig {
                        key: "cleanup.policy",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn compaction_settings_are_validated() {
        let ok = LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        };
        ok.validate().unwrap();
        assert!(ok.is_compacted() && !ok.deletes_by_retention());
        assert!(LogConfig::default().deletes_by_retention());
        let cases: [(&str, LogConfig); 6] = [
            (
                "delete.retention.ms",
                LogConfig {
                    delete_retention_ms: -1,
                    ..ok.clone()
                },
            ),
            (
                "min.cleanable.dirty.ratio",
                LogConfig {
                    min_cleanable_dirty_ratio: 1.5,
                    ..ok.clone()
                },
            ),
            (
                "min.cleanable.dirty.ratio",
                LogConfig {
                    min_cleanable_dirty_ratio: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "min.compaction.lag.ms",
                LogConfig {
                    min_compaction_lag_ms: -5,
                    ..ok.clone()
                },
            ),
            (
                "max.compaction.lag.ms",
                LogConfig {
                    max_compaction_lag_ms: 0,
                    ..ok.clone()
                },
            ),
            (
                "max.compaction.lag.ms",
                LogConfig {
                    min_compaction_lag_ms: 10,
                    max_compaction_lag_ms: 5,
                    ..ok.clone()
                },
            ),
        ];
        for (key, config) in cases {
            match config.validate() {
                Err(StorageError::InvalidConfig { key: found, .. }) => assert_eq!(found, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let rolls = LogConfig {
            max_compaction_lag_ms: 60_000,
            ..ok.clone()
        };
        assert_eq!(rolls.roll_ms(), 60_000);
        assert_eq!(
            LogConfig {
                cleanup_policy: CleanupPolicy::Delete,
                ..rolls
            }
            .roll_ms(),
            LogConfig::default().segment_ms
        );
    }
}
