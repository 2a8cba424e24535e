//! The leader's side of ISR changes (Kafka's `Partition.maybeShrinkIsr` / `maybeExpandIsr`
//! with `AlterPartitionManager`): proposals go to the controller, one at a time per partition,
//! and take effect only once it has committed them.
//!
//! Invariant: an ISR change is never applied before the controller commits it (a pending
//! expansion only holds the high watermark back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_metadata::PartitionState;
use tributary_proto::common::v1::ErrorCode;

use crate::manager::ReplicaManager;
use crate::partition::IsrProposal;

/// Proposes ISR shrinks for followers not caught up within `lag`.
pub fn shrink_isrs(manager: &Arc<ReplicaManager>, lag: Duration) {
    let now = Instant::now();
    for partition in manager.partitions() {
        if let Some(proposal) = partition.shrink_proposal(now, lag) {
            propose(manager, proposal);
        }
    }
}

/// Sends an ISR change to the controller (in the background) and applies the answer.
///
/// The proposal stays pending (its new members count for the high watermark) until the
/// metadata shows a newer partition epoch or the controller refuses it before writing
/// anything; an answer that may have been lost (transport error, a controller failover) is
/// sent again, never taken for a refusal.
pub fn propose(manager: &Arc<ReplicaManager>, proposal: IsrProposal) {
    let manager = manager.clone();
    crate::spawn(async move {
        let request = tributary_proto::coordinator::v1::AlterPartitionRequest {
            broker_id: manager.broker_id(),
            broker_epoch: manager.session().broker_epoch(),
            topic_id: proposal.topic_id.as_bytes().to_vec().into(),
            partition: proposal.tp.partition,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: proposal.new_isr.clone(),
        };
        loop {
            let current = manager
                .partition(&proposal.tp)
                .filter(|p| p.topic_id == proposal.topic_id && p.is_pending(&proposal));
            let Some(partition) = current else {
                return; // answered by the metadata meanwhile, or the topic is gone
            };
            let answer = manager
                .coordinators()
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient::new(channel)
                            .alter_partition(request)
                            .await
                    }
                })
                .await;
            let response = match answer {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::warn!(partition = %proposal.tp, error = %status.message(), "ISR change not confirmed; sending it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let code = response
                .error
                .as_ref()
                .map_or(ErrorCode::None, |e| e.error_code());
            match (code, response.partition.as_ref()) {
                (ErrorCode::None, Some(state)) => {
                    tracing::info!(partition = %proposal.tp, isr = ?state.isr, "ISR changed");
                    let metrics = &crate::metrics::METRICS;
                    if state.isr.len() > partition.role().isr.len() {
                        metrics.isr_expands.add(1);
                    } else {
                        metrics.isr_shrinks.add(1);
                    }
                    if let Err(err) = partition.apply_state(&PartitionState::from(state)) {
                        tracing::error!(partition = %proposal.tp, error = %err, "could not apply the new ISR");
                    }
                }
                // The partition changed under the proposal (or it was applied and the
                // answer lost): the metadata brings the newer state, which clears it.
                (
                    ErrorCode::NotLeaderOrFollower
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::InvalidUpdateVersion,
                    _,
                ) => {
                    tracing::info!(partition = %proposal.tp, error = ?response.error, "ISR change overtaken; waiting for the metadata");
                }
                _ => {
                    tracing::info!(partition = %proposal.tp, proposed = ?proposal.new_isr, error = ?response.error, "ISR change refused");
                    partition.proposal_failed(&proposal);
                }
            }
            return;
        }
    });
}
