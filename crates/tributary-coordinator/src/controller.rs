//! The controller loop. Every coordinator runs it; only the Raft leader acts: it claims the
//! controller role with a record (the controller epoch rises), fences brokers whose heartbeats
//! stopped, elects leaders for partitions that lost theirs, and moves leadership back to
//! preferred replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_metadata::controller::plan_preferred_leaders;
use tributary_metadata::{BrokerState, MetadataRecord};
use uuid::Uuid;

use crate::coordinator::{Coordinator, WriteError};

/// How often the controller looks at the cluster.
pub const TICK: Duration = Duration::from_millis(250);

/// Runs until the process stops.
pub async fn run(coordinator: Arc<Coordinator>) {
    let mut leading_term: Option<u64> = None;
    let mut since = Instant::now();
    let mut last_rebalance = Instant::now();
    let rebalance_every = Duration::from_millis(coordinator.config.leader_rebalance_interval_ms);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let leader = coordinator.node().leader_info();
        if !leader.is_self {
            leading_term = None;
            continue;
        }
        if leading_term != Some(leader.term) {
            match take_over(&coordinator, leader.term).await {
                Ok(()) => {
                    leading_term = Some(leader.term);
                    since = Instant::now();
                    last_rebalance = Instant::now();
                }
                Err(why) => {
                    tracing::info!(why, "could not take over as controller yet");
                    continue;
                }
            }
        }
        for (broker, epoch) in coordinator.expired_brokers(since) {
            tracing::warn!(broker, "broker missed its heartbeats: fencing it");
            let record = MetadataRecord::SetBrokerState {
                id: broker,
                epoch,
                state: BrokerState::Fenced,
            };
            if let Err(WriteError::Unavailable(why)) = coordinator.write(record).await {
                tracing::info!(why, "lost the controller role while fencing");
                leading_term = None;
                break;
            }
        }
        coordinator.run_elections().await;
        if last_rebalance.elapsed() >= rebalance_every {
            last_rebalance = Instant::now();
            for change in coordinator.read(plan_preferred_leaders) {
                let _ = coordinator
                    .write(MetadataRecord::ChangePartition(change))
                    .await;
            }
        }
    }
}

/// Claims the controller role: names the cluster on first start, then records this node as
/// controller (its epoch is that record's offset). Liveness starts afresh: every registered
/// broker gets a full session timeout to heartbeat this controller.
async fn take_over(coordinator: &Coordinator, term: u64) -> Result<(), String> {
    if coordinator.read(|image| image.cluster_id.is_none()) {
        let cluster_id = Uuid::new_v4().simple().to_string();
        coordinator
            .write(MetadataRecord::Bootstrap { cluster_id })
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    coordinator.reset_liveness();
    let node_id = coordinator.node().id();
    let (offset, _) = coordinator
        .write(MetadataRecord::BecomeController { node_id, term })
        .await
        .map_err(|e| format!("{e:?}"))?;
    tracing::info!(
        node_id,
        term,
        controller_epoch = offset,
        "became the controller"
    );
    Ok(())
}
