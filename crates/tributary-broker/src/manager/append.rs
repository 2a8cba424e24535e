//! Leader appends (Kafka's `ReplicaManager.appendRecords`) and the acks=all wait.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use tributary_proto::common::v1::ErrorCode;

use super::ReplicaManager;
use super::poll::long_poll;
use crate::api::{Acks, PartitionError, ProduceRequest, Produced, TopicPartition};
use crate::partition::Partition;

/// An append's answer, the partition, its last offset, the leader epoch it was written at, and
/// the `min.insync.replicas` an acks=all wait must still see.
type AppendOutcome = (Produced, Arc<Partition>, i64, i32, Option<usize>);

impl ReplicaManager {
    /// Appends each partition's batches on its leader; with acks=all waits (up to the request's
    /// timeout) until the high watermark has passed them. No check of who may write where:
    /// that is the request layer's (`service`); the group coordinator writes
    /// `__consumer_offsets` this way.
    pub async fn append_records(
        &self,
        request: ProduceRequest,
    ) -> Vec<(TopicPartition, Result<Produced, PartitionError>)> {
        self.settle().await;
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut waiting = Vec::new();
        for (tp, records) in request.partitions {
            let outcome = self.append_one(&tp, &records, request.acks);
            match outcome {
                Ok((produced, partition, last_offset, epoch, min_insync)) => {
                    if request.acks == Acks::All {
                        waiting.push((results.len(), partition, last_offset, epoch, min_insync));
                    }
                    results.push((tp, Ok(produced)));
                }
                Err(err) => {
                    let err = self.with_hint(&tp, err);
                    results.push((tp, Err(err)));
                }
            }
        }
        if !waiting.is_empty() {
            let deadline = tokio::time::Instant::now() + request.timeout;
            long_poll(&self.data_version, deadline, || {
                waiting.retain(|(i, partition, last_offset, epoch, min_insync)| {
                    match partition.committed(*last_offset, *epoch, *min_insync) {
                        Ok(true) => false,
                        Ok(false) => true,
                        Err(err) => {
                            let tp = &results[*i].0;
                            let err = self.with_hint(tp, err);
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
            for (i, partition, last_offset, _, _) in waiting {
                results[i].1 = Err(PartitionError::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "{}: appended up to offset {last_offset} but not replicated to every in-sync replica {:?} within {} ms (high watermark {})",
                        partition.tp,
                        partition.role().isr,
                        request.timeout.as_millis(),
                        partition.high_watermark()
                    ),
                ));
            }
        }
        if request.acks == Acks::None {
            for (_, result) in &mut results {
                if let Ok(produced) = result {
                    produced.base_offset = -1;
                }
            }
        }
        results
    }

    fn append_one(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> Result<AppendOutcome, PartitionError> {
        let partition = self.locate(tp)?;
        self.session.self_fence()?;
        let min_insync = (acks == Acks::All).then(|| partition.min_insync_replicas());
        // The append writes to the page cache (and fsyncs per flush.messages): keep it off the
        // runtime's other tasks (heartbeats among them).
        let (info, epoch) = tokio::task::block_in_place(|| partition.append(records, min_insync))?;
        crate::metrics::METRICS.bytes_in.add(info.bytes as u64);
        Ok((
            Produced {
                base_offset: info.first_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: partition.log().log_start_offset(),
            },
            partition.clone(),
            info.last_offset,
            epoch,
            min_insync,
        ))
    }
}
