//! The log start offset across a partition's replicas (Kafka's DeleteRecords): the leader moves
//! its own, each follower reports its own in every fetch and takes the leader's from the
//! answer, and the low watermark is the smallest among the live replicas. Also a partition as
//! DescribeLogDirs shows it.

use std::sync::atomic::Ordering;

use tributary_metadata::BrokerId;
use tributary_proto::common::v1::ErrorCode;

use super::{Partition, storage_error};
use crate::api::{DELETE_TO_HIGH_WATERMARK, LogDirPartition, PartitionError};

impl Partition {
    /// Kafka's DeleteRecords on the leader: moves the log start offset up to `offset`
    /// ([`DELETE_TO_HIGH_WATERMARK`]: the high watermark), deleting the segments wholly below
    /// it, and returns the offset the low watermark must reach. Never past the high watermark
    /// (OFFSET_OUT_OF_RANGE: only committed records can be deleted); refused where
    /// `cleanup.policy` lacks `delete` (POLICY_VIOLATION, as Kafka: the cleaner owns such a
    /// log). An offset at or below the log start deletes nothing.
    pub fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        if !self.log.config().deletes_by_retention() {
            return Err(PartitionError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "{}: records cannot be deleted from a topic whose cleanup.policy is compact without delete",
                    self.tp
                ),
            ));
        }
        let high_watermark = self.high_watermark();
        let target = if offset == DELETE_TO_HIGH_WATERMARK {
            high_watermark
        } else {
            offset
        };
        let start = self.log.log_start_offset();
        if target < 0 || target > high_watermark {
            return Err(PartitionError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "{}: cannot delete the records below offset {offset}: it must lie between 0 and the high watermark {high_watermark}, or be -1 for the high watermark (the log starts at {start})",
                    self.tp
                ),
            ));
        }
        if target > start {
            self.log
                .advance_log_start_offset(target)
                .map_err(|e| storage_error(&self.tp, e))?;
            let _span = self.span(role.leader_epoch).entered();
            tracing::info!(
                from = start,
                to = target,
                "moved the log start offset (DeleteRecords)"
            );
            // Followers long-polling hear of it in their next answer.
            self.bump();
        }
        Ok(target)
    }

    /// The low watermark (Kafka's `lowWatermarkIfLeader`): the smallest log start offset
    /// among this leader and its followers on live brokers (`alive`); -1 while a live follower
    /// has not reported one to this leader epoch. Followers on dead brokers do not hold it
    /// back, as in Kafka: they learn the leader's log start when they fetch again.
    pub fn low_watermark(&self, alive: impl Fn(BrokerId) -> bool) -> Result<i64, PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        let own = self.log.log_start_offset();
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(role
            .replicas
            .iter()
            .filter(|&&b| b != self.me && alive(b))
            .map(|b| followers.get(b).map_or(-1, |f| f.log_start))
            .fold(own, i64::min))
    }

    /// A follower takes what a fetch answer said of the leader's log (Kafka's
    /// `maybeIncrementLogStartOffset` for `LeaderOffsetIncremented`): its log start offset,
    /// which this log's follows (up to this replica's high watermark, so never past what it
    /// holds of the leader's log), and its log end offset (for DescribeLogDirs' lag). Refused
    /// (FENCED_LEADER_EPOCH) if the role moved on meanwhile.
    pub fn follow_leader_log(
        &self,
        leader: BrokerId,
        epoch: i32,
        leader_log_start: i64,
        leader_log_end: i64,
    ) -> Result<(), PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_follows(&role, leader, epoch)?;
        self.leader_log_end.store(leader_log_end, Ordering::Release);
        let target = leader_log_start.min(self.high_watermark());
        let start = self.log.log_start_offset();
        if target > start {
            self.log
                .advance_log_start_offset(target)
                .map_err(|e| storage_error(&self.tp, e))?;
            let _span = self.span(epoch).entered();
            tracing::info!(
                from = start,
                to = target,
                "moved the log start offset to the leader's"
            );
        }
        Ok(())
    }

    /// This partition as DescribeLogDirs shows it: the size of its segments, and its offset
    /// lag: 0 on the leader, and on a follower how far its log end is behind the leader's as
    /// of its last fetch (0 until it has fetched from the current leader).
    ///
    /// Kafka reports `max(high watermark - log end, 0)` for a current log, which is 0 on every
    /// replica (a follower's high watermark never passes its log end); the leader's log end
    /// says how far behind a follower really is.
    pub fn log_dir_entry(&self) -> LogDirPartition {
        let leads = self.role.read().unwrap_or_else(|p| p.into_inner()).leader == Some(self.me);
        let leader_end = self.leader_log_end.load(Ordering::Acquire);
        let offset_lag = if leads || leader_end < 0 {
            0
        } else {
            (leader_end - self.log.log_end_offset()).max(0)
        };
        LogDirPartition {
            tp: self.tp.clone(),
            size_bytes: self.log.size_bytes(),
            offset_lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::watch;
    use tributary_metadata::PartitionState;
    use tributary_storage::{CleanupPolicy, Log, LogConfig, LogResources};
    use uuid::Uuid;

    use super::*;
    use crate::api::TopicPartition;

    fn batch(n: usize) -> bytes::Bytes {
        let mut builder = tributary_record::BatchBuilder::new(1_000);
        for i in 0..n {
            builder.push(1_000, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        builder.build()
    }

    fn partition(me: BrokerId, dir: &std::path::Path, config: LogConfig) -> Partition {
        let log = Log::open(dir, config, LogResources::new(16)).unwrap();
        Partition::new(
            TopicPartition::new("t", 0),
            Uuid::nil(),
            me,
            log,
            Arc::new(watch::channel(0).0),
        )
    }

    fn state(leader: BrokerId, epoch: i32) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: Some(leader),
            leader_epoch: epoch,
            partition_epoch: epoch,
        }
    }

    /// Leader 1 of `t-0` holding 10 records, all committed (both followers fetched to 10 and
    /// report log start 0).
    fn leader_with_ten(dir: &std::path::Path) -> Partition {
        let p = partition(1, dir, LogConfig::default());
        p.apply_state(&state(1, 0)).unwrap();
        p.append(&batch(4), None).unwrap();
        p.append(&batch(6), None).unwrap();
        let now = Instant::now();
        for follower in [2, 3] {
            p.replica_fetch(follower, 10, 0, 0, 1 << 20, true, true, now)
                .unwrap();
        }
        assert_eq!(p.high_watermark(), 10);
        p
    }

    fn everyone(_: BrokerId) -> bool {
        true
    }

    #[test]
    fn the_low_watermark_waits_for_every_live_follower_to_report_the_new_log_start() {
        let tmp = tempfile::tempdir().unwrap();
        let p = leader_with_ten(tmp.path());
        assert_eq!(p.delete_records(4).unwrap(), 4);
        assert_eq!(p.log().log_start_offset(), 4);
        assert_eq!(
            p.low_watermark(everyone).unwrap(),
            0,
            "no follower knows yet"
        );
        let now = Instant::now();
        p.replica_fetch(2, 10, 4, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(
            p.low_watermark(everyone).unwrap(),
            0,
            "follower 3 still starts at 0"
        );
        assert_eq!(
            p.low_watermark(|b| b != 3).unwrap(),
            4,
            "a follower on a dead broker does not count"
        );
        p.replica_fetch(3, 10, 4, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(p.low_watermark(everyone).unwrap(), 4);
        let fetched = p.fetch(
            3,
            1 << 20,
            true,
            None,
            crate::api::Isolation::ReadUncommitted,
        );
        assert_eq!(
            fetched.unwrap_err().code,
            ErrorCode::OffsetOutOfRange,
            "deleted records cannot be read"
        );
    }

    #[test]
    fn minus_one_deletes_up_to_the_high_watermark_and_never_past_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = leader_with_ten(tmp.path());
        p.append(&batch(5), None).unwrap();
        assert_eq!(p.high_watermark(), 10, "offsets 10..15 are not committed");
        let err = p.delete_records(11).unwrap_err();
        assert_eq!(err.code, ErrorCode::OffsetOutOfRange, "{err:?}");
        let err = p.delete_records(-2).unwrap_err();
        assert_eq!(err.code, ErrorCode::OffsetOutOfRange, "{err:?}");
        assert_eq!(p.log().log_start_offset(), 0, "a refusal deletes nothing");
        assert_eq!(p.delete_records(DELETE_TO_HIGH_WATERMARK).unwrap(), 10);
        assert_eq!(p.log().log_start_offset(), 10);
        // An offset below the log start deletes nothing and is answered.
        assert_eq!(p.delete_records(3).unwrap(), 3);
        assert_eq!(p.log().log_start_offset(), 10);
    }

    #[test]
    fn only_the_leader_deletes_and_never_from_a_compact_only_log() {
        let tmp = tempfile::tempdir().unwrap();
        let follower = partition(2, &tmp.path().join("f"), LogConfig::default());
        follower.apply_state(&state(1, 0)).unwrap();
        let err = follower.delete_records(0).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotLeaderOrFollower);
        assert_eq!(
            follower.low_watermark(everyone).unwrap_err().code,
            ErrorCode::NotLeaderOrFollower
        );

        let compacted = LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        };
        let p = partition(1, &tmp.path().join("c"), compacted);
        p.apply_state(&state(1, 0)).unwrap();
        let err = p.delete_records(0).unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyViolation, "{err:?}");
    }

    /// Follower 2 of `t-0`, led by 1 at epoch 0, holding the leader's first 10 records.
    fn follower_with_ten(dir: &std::path::Path) -> Partition {
        let p = partition(2, dir, LogConfig::default());
        p.apply_state(&state(1, 0)).unwrap();
        let mut stored = batch(10).to_vec();
        tributary_record::set_partition_leader_epoch(&mut stored, 0);
        p.follower_append(1, 0, stored.into(), 8).unwrap();
        p
    }

    #[test]
    fn a_follower_takes_the_leaders_log_start_up_to_its_high_watermark() {
        let tmp = tempfile::tempdir().unwrap();
        let p = follower_with_ten(tmp.path());
        assert_eq!(p.high_watermark(), 8);
        p.follow_leader_log(1, 0, 5, 10).unwrap();
        assert_eq!(p.log().log_start_offset(), 5);
        p.follow_leader_log(1, 0, 9, 10).unwrap();
        assert_eq!(
            p.log().log_start_offset(),
            8,
            "never past what this replica knows is committed"
        );
        p.follow_leader_log(1, 0, 2, 10).unwrap();
        assert_eq!(p.log().log_start_offset(), 8, "never backwards");
        let err = p.follow_leader_log(3, 1, 10, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::FencedLeaderEpoch);
        assert_eq!(p.log().log_start_offset(), 8);
    }

    #[test]
    fn a_followers_offset_lag_is_its_distance_to_the_leaders_log_end() {
        let tmp = tempfile::tempdir().unwrap();
        let p = follower_with_ten(tmp.path());
        assert_eq!(p.log_dir_entry().offset_lag, 0, "not known yet");
        p.follow_leader_log(1, 0, 0, 25).unwrap();
        let entry = p.log_dir_entry();
        assert_eq!(entry.offset_lag, 15);
        assert_eq!(entry.size_bytes, p.log().size_bytes());
        assert!(entry.size_bytes > 0);
        // Leading, it lags behind no one; a new leader's log end is not known until fetched.
        p.apply_state(&state(2, 1)).unwrap();
        assert_eq!(p.log_dir_entry().offset_lag, 0);
        p.apply_state(&state(3, 2)).unwrap();
        assert_eq!(p.log_dir_entry().offset_lag, 0);
    }
}
