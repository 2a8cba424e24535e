//! The coordinator's settings, as plain values (the broker reads its config keys and builds
//! this).

use std::time::Duration;

/// The group coordinator's settings (Kafka's broker keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i32,
    /// `offsets.commit.timeout.ms`: how long a commit waits for replication.
    pub offsets_commit_timeout: Duration,
    /// `offsets.retention.minutes`: how long an empty group's offsets are kept.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval: Duration,
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this
    /// long (again after each new join, up to the rebalance timeout) for more members.
    pub group_initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub group_max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout: Duration::from_secs(5),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            group_initial_rebalance_delay: Duration::from_millis(500),
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: usize::MAX,
        }
    }
}
