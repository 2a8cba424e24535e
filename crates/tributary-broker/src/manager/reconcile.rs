//! The logs' lifecycle: bringing the hosted partitions in line with the metadata image.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use tributary_metadata::{MetadataImage, PartitionState};
use tributary_storage::{Log, LogConfig};
use uuid::Uuid;

use super::ReplicaManager;
use crate::api::TopicPartition;
use crate::dirs;
use crate::partition::Partition;
use crate::topic_config::TopicConfig;

/// A partition the image assigns to this broker.
#[derive(Debug)]
struct Assigned {
    topic_id: Uuid,
    state: PartitionState,
    config: TopicConfig,
}

impl ReplicaManager {
    /// Brings the hosted partitions in line with the image: removes logs of deleted topics (or
    /// of a topic deleted and re-created: another id), creates logs for new partitions, opens
    /// (recovering) logs found on disk that the image still assigns here, and applies every
    /// partition's leader, epoch, ISR and configs.
    pub fn reconcile(&self) -> Result<()> {
        let _serial = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (offset, wanted) = self
            .metadata
            .read(|image| (image.offset, self.assigned(image)));

        if let Some(on_disk) = self
            .on_disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            for found in on_disk {
                match (wanted.get(&found.tp), found.topic_id) {
                    (Some(want), Some(id)) if want.topic_id == id => {
                        self.open_partition(&found.tp, id, &want.config.log)
                    }
                    (_, id) => {
                        tracing::info!(partition = %found.tp, topic_id = ?id, dir = %found.dir.display(), "removing a log the metadata no longer assigns here (topic deleted, re-created, or moved)");
                        dirs::remove_partition_dir(&found.dir)?;
                    }
                }
            }
        }

        let stale: Vec<Arc<Partition>> = {
            let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            partitions
                .values()
                .filter(|p| wanted.get(&p.tp).is_none_or(|w| w.topic_id != p.topic_id))
                .cloned()
                .collect()
        };
        for partition in stale {
            self.partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&partition.tp);
            tracing::info!(partition = %partition.tp, topic_id = %partition.topic_id, "deleting the log of a deleted partition");
            if let Err(err) = partition.log().delete() {
                tracing::error!(partition = %partition.tp, error = %err, "could not delete a log");
            }
        }
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|tp, _| wanted.contains_key(tp));

        for (tp, want) in &wanted {
            let existing = self
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(tp)
                .cloned();
            let partition = match existing {
                Some(p) => p,
                None => {
                    if self
                        .failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(tp)
                    {
                        continue;
                    }
                    let dir = self.data_dir.partition_dir(tp);
                    if let Err(err) = dirs::write_partition_metadata(&dir, want.topic_id) {
                        self.mark_failed(tp, format!("{err:#}"));
                        continue;
                    }
                    self.open_partition(tp, want.topic_id, &want.config.log);
                    match self
                        .partitions
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(tp)
                    {
                        Some(p) => p.clone(),
                        None => continue,
                    }
                }
            };
            if let Err(err) = partition.set_config(want.config.clone()) {
                tracing::error!(partition = %tp, error = %err, "could not apply topic configs");
            }
            if let Err(err) = partition.apply_state(&want.state) {
                tracing::error!(partition = %tp, error = %err, "could not take on the partition's new role");
            }
        }
        tracing::debug!(offset, partitions = wanted.len(), "reconciled");
        self.reconciled.send_modify(|r| *r = (*r).max(offset));
        // Waiting fetches re-check: leadership may have moved.
        self.data_version.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    fn open_partition(&self, tp: &TopicPartition, topic_id: Uuid, config: &LogConfig) {
        let dir = self.data_dir.partition_dir(tp);
        match Log::open(&dir, config.clone(), self.resources.clone()) {
            Ok(log) => {
                let report = log.open_report();
                if report.segments_recovered > 0 || report.bytes_truncated > 0 {
                    tracing::warn!(partition = %tp, segments = report.segments_recovered, bytes_truncated = report.bytes_truncated, "recovered a log after an unclean shutdown");
                }
                let partition = Arc::new(Partition::new(
                    tp.clone(),
                    topic_id,
                    self.me,
                    log,
                    self.data_version.clone(),
                ));
                if let Some(&hw) = self
                    .hw_checkpoint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(tp)
                {
                    partition.restore_high_watermark(hw);
                }
                self.partitions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tp.clone(), partition);
            }
            Err(err) => self.mark_failed(tp, err.to_string()),
        }
    }

    fn mark_failed(&self, tp: &TopicPartition, why: String) {
        tracing::error!(partition = %tp, error = %why, "cannot open the partition's log; it is served as KAFKA_STORAGE_ERROR");
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), why);
    }

    /// The partitions the image assigns to this broker.
    fn assigned(&self, image: &MetadataImage) -> HashMap<TopicPartition, Assigned> {
        let mut out = HashMap::new();
        for topic in image.topics.values() {
            let config = TopicConfig::of(topic);
            for (index, state) in topic.partitions.iter().enumerate() {
                if state.replicas.contains(&self.me) {
                    out.insert(
                        TopicPartition::new(topic.name.clone(), index as i32),
                        Assigned {
                            topic_id: topic.id,
                            state: state.clone(),
                            config: config.clone(),
                        },
                    );
                }
            }
        }
        out
    }
}
