//! Log upkeep: flush by `flush.ms`, checkpoints, retention, compaction, and closing.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::ReplicaManager;
use crate::api::TopicPartition;
use crate::partition::Partition;

impl ReplicaManager {
    /// Cleans the compacted logs that need it (`min.cleanable.dirty.ratio`, tombstones past
    /// `delete.retention.ms`), dirtiest first, never at or above a partition's high watermark.
    /// Blocking: runs on the cleaner's own thread; appends and reads go on meanwhile.
    pub fn clean_logs(&self, cleaner: &mut tributary_storage::Cleaner) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut dirty: Vec<(f64, Arc<Partition>)> = self
            .partitions()
            .into_iter()
            .filter(|p| p.log().config().is_compacted())
            .filter(|p| p.log().needs_cleaning(p.high_watermark(), now))
            .map(|p| (p.log().dirty_ratio(p.high_watermark(), now), p))
            .collect();
        dirty.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (ratio, partition) in dirty {
            match partition
                .log()
                .clean(partition.high_watermark(), now, cleaner)
            {
                Ok(outcome) => tracing::info!(
                    partition = %partition.tp,
                    dirty_ratio = ratio,
                    bytes_read = outcome.bytes_read,
                    bytes_written = outcome.bytes_written,
                    "cleaned a compacted log"
                ),
                Err(err) => {
                    tracing::error!(partition = %partition.tp, error = %err, "cleaning a log failed")
                }
            }
        }
    }

    /// Periodic log upkeep: flush by `flush.ms`, and when due, checkpoint recovery points and
    /// high watermarks, expire idle producer ids, and apply retention (bounded by each
    /// partition's high watermark).
    pub fn maintain(&self, checkpoint: bool, retention: bool) {
        if checkpoint && let Err(err) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %format!("{err:#}"), "writing the high-watermark checkpoint failed");
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let expiration_ms = self.config.producer_id_expiration_ms as i64;
        for partition in self.partitions() {
            if checkpoint {
                let expired = partition.expire_producers(now_ms, expiration_ms);
                if expired > 0 {
                    tracing::info!(partition = %partition.tp, expired, "forgot idle producer ids");
                }
            }
            let log = partition.log();
            if let Err(err) = log.flush_if_due() {
                tracing::error!(partition = %partition.tp, error = %err, "flush failed");
            }
            if checkpoint && let Err(err) = log.checkpoint() {
                tracing::error!(partition = %partition.tp, error = %err, "checkpoint failed");
            }
            if retention {
                match log.apply_retention(partition.high_watermark()) {
                    Ok(outcome) if outcome.segments > 0 => {
                        tracing::info!(partition = %partition.tp, segments = outcome.segments, bytes = outcome.bytes, "retention deleted old segments")
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!(partition = %partition.tp, error = %err, "retention failed")
                    }
                }
            }
        }
    }

    /// Writes every partition's high watermark to `replication-offset-checkpoint`.
    pub fn checkpoint_high_watermarks(&self) -> Result<()> {
        let hws: HashMap<TopicPartition, i64> = self
            .partitions()
            .into_iter()
            .map(|p| (p.tp.clone(), p.high_watermark()))
            .collect();
        self.data_dir.write_hw_checkpoint(&hws)
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close_all(&self) -> Result<()> {
        if let Err(err) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %format!("{err:#}"), "writing the high-watermark checkpoint failed");
        }
        let mut first_error = None;
        for partition in self.partitions() {
            if let Err(err) = partition.close() {
                tracing::error!(partition = %partition.tp, error = %err, "closing a log failed");
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err).context("closing logs"),
            None => Ok(()),
        }
    }
}
