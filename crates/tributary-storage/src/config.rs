//! A log's configuration, by Kafka's topic-config names, with Kafka's defaults.

use tributary_record::TimestampType;

use crate::error::{Result, StorageError};

/// Per-log configuration. Field names are Kafka's topic config keys with `.` as `_`; `-1` means
/// unlimited where Kafka says so.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

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
        }
    }
}

impl LogConfig {
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
        Ok(())
    }
}
