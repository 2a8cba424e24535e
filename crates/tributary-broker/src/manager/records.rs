//! DeleteRecords (Kafka's `ReplicaManager.deleteRecords` and `DelayedDeleteRecords`) and
//! DescribeLogDirs (`ReplicaManager.describeLogDirs`).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use tributary_metadata::{BrokerId, BrokerState};
use tributary_proto::common::v1::ErrorCode;

use super::ReplicaManager;
use super::poll::long_poll;
use crate::api::{DeleteRecordsRequest, LogDir, PartitionError, TopicPartition};
use crate::partition::Partition;

/// Each partition's answer to DeleteRecords: its low watermark, or why not.
pub type DeleteRecordsResults = Vec<(TopicPartition, Result<i64, PartitionError>)>;

impl ReplicaManager {
    /// Kafka's DeleteRecords: on each partition this broker leads, moves the log start offset
    /// (see [`Partition::delete_records`]), then waits, up to the request's timeout in the one
    /// long poll, until the partition's low watermark reaches it: the records are gone from
    /// every live replica. Answers each partition's low watermark, or its error
    /// (REQUEST_TIMED_OUT when the wait runs out first). Who may delete where (internal topics)
    /// is the request layer's.
    pub async fn delete_records(&self, request: &DeleteRecordsRequest) -> DeleteRecordsResults {
        self.settle().await;
        let fenced = self.session.self_fence().err();
        let mut results: DeleteRecordsResults = Vec::with_capacity(request.partitions.len());
        // Partitions deleted on this leader, waiting for their followers: index in `results`,
        // the partition, the low watermark required, the last one seen.
        let mut waiting: Vec<(usize, Arc<Partition>, i64, i64)> = Vec::new();
        for (tp, offset) in &request.partitions {
            let outcome = self.locate(tp).and_then(|partition| {
                if let Some(err) = &fenced {
                    return Err(err.clone());
                }
                // Deleting segments is file-system work: keep it off the runtime's other tasks.
                let required = tokio::task::block_in_place(|| partition.delete_records(*offset))?;
                Ok((partition, required))
            });
            match outcome {
                Ok((partition, required)) => {
                    waiting.push((results.len(), partition, required, -1));
                    results.push((tp.clone(), Ok(-1)));
                }
                Err(err) => {
                    let err = self.with_hint(tp, err);
                    results.push((tp.clone(), Err(err)));
                }
            }
        }
        if waiting.is_empty() {
            return results;
        }
        let deadline = tokio::time::Instant::now() + request.timeout;
        long_poll(&self.data_version, deadline, || {
            let alive = self.alive_brokers();
            waiting.retain_mut(|(i, partition, required, seen)| {
                match partition.low_watermark(|b| alive.contains(&b)) {
                    Ok(low) if low >= *required => {
                        results[*i].1 = Ok(low);
                        false
                    }
                    Ok(low) => {
                        *seen = low;
                        true
                    }
                    Err(err) => {
                        let err = self.with_hint(&results[*i].0, err);
                        results[*i].1 = Err(err);
                        false
                    }
                }
            });
            if waiting.is_empty() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await;
        for (i, partition, required, seen) in waiting {
            results[i].1 = Err(PartitionError::new(
                ErrorCode::RequestTimedOut,
                format!(
                    "{}: records below offset {required} are deleted on the leader, but within {} ms not on every live replica of {:?} (low watermark {seen})",
                    partition.tp,
                    request.timeout.as_millis(),
                    partition.role().replicas
                ),
            ));
        }
        results
    }

    /// The brokers Kafka counts as alive for the low watermark: registered and not fenced.
    fn alive_brokers(&self) -> HashSet<BrokerId> {
        self.metadata.read(|image| {
            image
                .brokers
                .iter()
                .filter(|(_, b)| b.state != BrokerState::Fenced)
                .map(|(&id, _)| id)
                .collect()
        })
    }

    /// Kafka's DescribeLogDirs: the data directory with the partitions in `wanted` it holds
    /// (`None`: all of them), their sizes and lags, and the space on its volume (-1 when the
    /// file system does not say).
    pub async fn describe_log_dirs(&self, wanted: Option<&[TopicPartition]>) -> Vec<LogDir> {
        self.settle().await;
        let wanted: Option<HashSet<&TopicPartition>> = wanted.map(|w| w.iter().collect());
        let mut partitions: Vec<_> = self
            .partitions()
            .into_iter()
            .filter(|p| wanted.as_ref().is_none_or(|w| w.contains(&p.tp)))
            .map(|p| p.log_dir_entry())
            .collect();
        partitions.sort_by(|a, b| a.tp.cmp(&b.tp));
        let dir = self.data_dir.path();
        let (total_bytes, usable_bytes) = match self.data_dir.volume_space() {
            Ok((total, usable)) => (
                i64::try_from(total).unwrap_or(i64::MAX),
                i64::try_from(usable).unwrap_or(i64::MAX),
            ),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot read the data directory's volume size");
                (-1, -1)
            }
        };
        let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        vec![LogDir {
            path: path.display().to_string(),
            total_bytes,
            usable_bytes,
            partitions,
        }]
    }
}
