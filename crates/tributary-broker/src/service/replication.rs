//! The leader's side of replication as followers ask for it: their fetches and
//! OffsetsForLeaderEpoch (KIP-101/279).

use std::time::Instant;

use tributary_storage::EpochEndOffset;

use super::{NotReady, Service};
use crate::api::{
    EpochQuery, FetchedPartition, PartitionError, ReplicaFetchRequest, TopicPartition,
};
use crate::metrics::METRICS;

impl Service {
    /// A follower's fetch: reads each partition up to the log end for a registered follower,
    /// long-polling like a consumer fetch; ISR expansions it calls for go to the controller.
    pub async fn replica_fetch(
        &self,
        request: &ReplicaFetchRequest,
    ) -> Result<Result<Vec<FetchedPartition>, PartitionError>, NotReady> {
        self.ready()?;
        let start = Instant::now();
        let fetched = self
            .manager
            .replica_fetch(request, |proposal| {
                crate::isr::propose(&self.manager, proposal)
            })
            .await;
        match &fetched {
            Ok(results) => {
                METRICS
                    .bytes_out
                    .add(results.iter().map(|r| r.records.len() as u64).sum());
                METRICS.request(
                    "replica_fetch",
                    start,
                    results
                        .iter()
                        .filter_map(|r| r.error.as_ref().map(|e| e.code))
                        .collect::<Vec<_>>(),
                );
            }
            Err(err) => METRICS.request("replica_fetch", start, [err.code]),
        }
        Ok(fetched)
    }

    /// KIP-101/279 on the leader, per partition: where the asked epoch ends.
    pub async fn offsets_for_leader_epoch(
        &self,
        queries: &[EpochQuery],
    ) -> Result<Vec<(TopicPartition, Result<EpochEndOffset, PartitionError>)>, NotReady> {
        self.ready()?;
        Ok(self.manager.offsets_for_leader_epoch(queries).await)
    }
}
