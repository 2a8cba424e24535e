//! A topic's configs as the broker uses them, parsed once when the metadata is applied (the
//! image keeps them as Kafka's strings; the hot path reads fields).

use tributary_metadata::Topic;
use tributary_record::TimestampType;
use tributary_storage::LogConfig;

/// The typed configs of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// What the storage engine needs (segments, retention, flush, compaction).
    pub log: LogConfig,
    /// `min.insync.replicas`: the ISR size below which acks=all writes are refused.
    pub min_insync_replicas: usize,
}

impl TopicConfig {
    /// The effective configs of `topic` (its overrides over the cluster's defaults).
    pub fn of(topic: &Topic) -> Self {
        Self {
            log: log_config(topic),
            min_insync_replicas: topic
                .config("min.insync.replicas")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1),
        }
    }
}

/// The storage configuration of a topic's logs, from its effective topic configs.
pub fn log_config(topic: &Topic) -> LogConfig {
    let d = LogConfig::default();
    let long = |key: &str| topic.config(key).and_then(|v| v.parse::<i64>().ok());
    let below_max = |v: i64| (v < i64::MAX).then_some(v);
    // Validated by the topic-config table; the filters only guard an image written before.
    let min_lag = long("min.compaction.lag.ms")
        .filter(|v| *v >= 0)
        .unwrap_or(d.min_compaction_lag_ms);
    let max_lag = long("max.compaction.lag.ms")
        .filter(|v| *v >= 1)
        .unwrap_or(d.max_compaction_lag_ms);
    LogConfig {
        segment_bytes: long("segment.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.segment_bytes),
        segment_ms: long("segment.ms").unwrap_or(d.segment_ms),
        max_message_bytes: long("max.message.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_message_bytes),
        retention_ms: long("retention.ms").unwrap_or(d.retention_ms),
        retention_bytes: long("retention.bytes").unwrap_or(d.retention_bytes),
        flush_messages: long("flush.messages")
            .and_then(below_max)
            .and_then(|v| u64::try_from(v).ok()),
        flush_ms: long("flush.ms").and_then(below_max),
        message_timestamp_type: match topic.config("message.timestamp.type") {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        // Validated lists (`delete`, `compact`, `compact,delete`, `delete,compact`).
        cleanup_policy: topic
            .config("cleanup.policy")
            .and_then(|v| v.parse::<tributary_storage::CleanupPolicy>().ok())
            .unwrap_or(d.cleanup_policy),
        delete_retention_ms: long("delete.retention.ms").unwrap_or(d.delete_retention_ms),
        min_cleanable_dirty_ratio: topic
            .config("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(d.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: min_lag,
        // Never below the minimum: LogConfig::validate refuses that, and the log would not open.
        max_compaction_lag_ms: max_lag.max(min_lag),
        ..d
    }
}
