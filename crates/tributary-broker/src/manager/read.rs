//! Reads: consumer fetches (Kafka's `ReplicaManager.fetchMessages`), follower fetches on the
//! leader, ListOffsets and OffsetsForLeaderEpoch.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use tributary_metadata::{BrokerId, BrokerState};
use tributary_storage::EpochEndOffset;

use super::ReplicaManager;
use super::poll::long_poll;
use crate::api::{
    EpochQuery, FetchRequest, FetchedPartition, FoundOffset, OffsetQuery, PartitionError,
    ReplicaFetchRequest, TopicPartition,
};
use crate::partition::{IsrProposal, Partition};

/// A partition this broker follows: whom, at which epoch.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The partition.
    pub partition: Arc<Partition>,
    /// Its leader.
    pub leader: BrokerId,
    /// The leader epoch followed.
    pub leader_epoch: i32,
}

/// Whether a long-polling fetch can answer: `min_bytes` are there or an error needs reporting.
fn fetch_done(results: &[FetchedPartition], min_bytes: usize) -> bool {
    let bytes: usize = results.iter().map(|r| r.records.len()).sum();
    bytes >= min_bytes || results.iter().any(|r| r.error.is_some())
}

impl ReplicaManager {
    /// Reads committed batches, long-polling until `min_bytes` are there, an error needs
    /// reporting, or `max_wait` has passed.
    pub async fn fetch(&self, request: &FetchRequest) -> Vec<FetchedPartition> {
        self.settle().await;
        let deadline = tokio::time::Instant::now() + request.max_wait;
        long_poll(&self.data_version, deadline, || {
            let results = self.fetch_once(request);
            if fetch_done(&results, request.min_bytes) {
                ControlFlow::Break(results)
            } else {
                ControlFlow::Continue(results)
            }
        })
        .await
    }

    /// One pass over the partitions of a fetch, without waiting.
    pub fn fetch_once(&self, request: &FetchRequest) -> Vec<FetchedPartition> {
        let mut remaining = request.max_bytes;
        let mut first_data = true;
        let fenced = self.session.self_fence().err();
        request
            .partitions
            .iter()
            .map(|p| {
                let outcome = self.locate(&p.tp).and_then(|partition| {
                    if let Some(err) = &fenced {
                        return Err(err.clone());
                    }
                    partition.fetch(
                        p.offset,
                        p.max_bytes.min(remaining),
                        first_data,
                        p.current_leader_epoch,
                        request.isolation,
                    )
                });
                match outcome {
                    Ok(fetched) => {
                        if !fetched.records.is_empty() {
                            first_data = false;
                            remaining = remaining.saturating_sub(fetched.records.len());
                        }
                        fetched
                    }
                    Err(err) => self.failed_fetch(&p.tp, p.offset, err),
                }
            })
            .collect()
    }

    /// A partition's fetch result for `err`, with the leader hint and, for
    /// OFFSET_OUT_OF_RANGE, the valid range.
    fn failed_fetch(
        &self,
        tp: &TopicPartition,
        offset: i64,
        err: PartitionError,
    ) -> FetchedPartition {
        let range = err.range;
        let mut failed = FetchedPartition::failed(tp.clone(), offset, self.with_hint(tp, err));
        if let Some((start, end)) = range {
            failed.log_start_offset = start;
            failed.log_end_offset = end;
        }
        failed
    }

    /// Kafka's ListOffsets.
    pub async fn list_offsets(
        &self,
        queries: &[OffsetQuery],
    ) -> Vec<(TopicPartition, Result<FoundOffset, PartitionError>)> {
        self.settle().await;
        let fenced = self.session.self_fence().err();
        queries
            .iter()
            .map(|q| {
                let outcome = self.locate(&q.tp).and_then(|partition| {
                    if let Some(err) = &fenced {
                        return Err(err.clone());
                    }
                    partition.list_offset(q.timestamp, q.current_leader_epoch)
                });
                (q.tp.clone(), outcome.map_err(|e| self.with_hint(&q.tp, e)))
            })
            .collect()
    }

    /// Every partition this broker follows (a replica here, led by another broker).
    pub fn followed(&self) -> Vec<Followed> {
        self.partitions()
            .into_iter()
            .filter_map(|partition| {
                let role = partition.role();
                let leader = role.leader.filter(|&l| l != self.me)?;
                Some(Followed {
                    partition,
                    leader,
                    leader_epoch: role.leader_epoch,
                })
            })
            .collect()
    }

    /// A follower's fetch on this leader: checks the follower's registration, reads each
    /// partition up to the log end, and long-polls like a consumer fetch. An ISR change the
    /// fetch calls for (a follower caught up) goes to `propose` at once, while the fetch may
    /// still wait: the controller should hear of it without the long poll's delay.
    pub async fn replica_fetch(
        &self,
        request: &ReplicaFetchRequest,
        mut propose: impl FnMut(IsrProposal),
    ) -> Result<Vec<FetchedPartition>, PartitionError> {
        let (replica, broker_epoch) = (request.replica, request.broker_epoch);
        let registered = self.metadata.read(|image| {
            image
                .registered_broker(replica, broker_epoch)
                .map(|_| ())
                .map_err(|e| PartitionError::new(e.code(), e.message))
        });
        registered?;
        let eligible = self.metadata.read(|image| {
            image
                .brokers
                .get(&replica)
                .is_some_and(|b| b.epoch == broker_epoch && b.state == BrokerState::Running)
        });
        self.settle().await;
        let deadline = tokio::time::Instant::now() + request.max_wait;
        let results = long_poll(&self.data_version, deadline, || {
            let now = Instant::now();
            let mut remaining = request.max_bytes;
            let mut first_data = true;
            let mut results = Vec::with_capacity(request.partitions.len());
            for p in &request.partitions {
                let outcome = self.locate(&p.tp).and_then(|partition| {
                    self.session.self_fence()?;
                    // KIP-74: only the first partition with data may exceed the byte budget.
                    partition.replica_fetch(
                        replica,
                        p.offset,
                        p.log_start_offset,
                        p.leader_epoch,
                        p.max_bytes.min(remaining),
                        first_data,
                        eligible,
                        now,
                    )
                });
                results.push(match outcome {
                    Ok((fetched, proposal)) => {
                        if !fetched.records.is_empty() {
                            first_data = false;
                        }
                        remaining = remaining.saturating_sub(fetched.records.len());
                        if let Some(proposal) = proposal {
                            propose(proposal);
                        }
                        fetched
                    }
                    Err(err) => self.failed_fetch(&p.tp, p.offset, err),
                });
            }
            if fetch_done(&results, request.min_bytes) {
                ControlFlow::Break(results)
            } else {
                ControlFlow::Continue(results)
            }
        })
        .await;
        Ok(results)
    }

    /// KIP-101/279 on the leader, per partition: where the asked epoch ends.
    pub async fn offsets_for_leader_epoch(
        &self,
        queries: &[EpochQuery],
    ) -> Vec<(TopicPartition, Result<EpochEndOffset, PartitionError>)> {
        self.settle().await;
        queries
            .iter()
            .map(|q| {
                let outcome = self
                    .locate(&q.tp)
                    .and_then(|p| p.end_offset_for_epoch(q.current_leader_epoch, q.leader_epoch));
                (q.tp.clone(), outcome.map_err(|e| self.with_hint(&q.tp, e)))
            })
            .collect()
    }
}
