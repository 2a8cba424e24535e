//! The maintenance loop: sessions, rebalance deadlines and the expiry of long-empty groups'
//! offsets (`offsets.retention.minutes`).

use std::sync::Arc;

use tokio::time::Instant;

use super::{GroupCoordinator, TICK, lock};
use crate::log::{OffsetsLog, Write};

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Runs until aborted: every tick, loads newly led `__consumer_offsets` partitions and
    /// unloads lost ones, expires sessions, completes rebalances past their deadline; every
    /// `offsets.retention.check.interval.ms` expires the offsets of long-empty groups.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        loop {
            ticker.tick().await;
            self.maintain();
            if last_expiry.elapsed() >= self.config.offsets_retention_check_interval {
                last_expiry = Instant::now();
                self.expire_offsets().await;
            }
        }
    }

    /// One maintenance pass (see [`GroupCoordinator::run`]).
    pub fn maintain(self: &Arc<Self>) {
        if !self.log.is_ready() {
            return;
        }
        self.follow_leadership();
        let now = Instant::now();
        let now_ms = self.now_ms();
        for group in self.loaded_groups() {
            let mut g = lock(&group);
            if g.expire_sessions(&self.config, now, now_ms) {
                let partition = self.partition_for(&g.id);
                self.persist_in_background(partition, g.membership_write());
            }
        }
    }

    /// Tombstones the offsets of groups empty for longer than `offsets.retention.minutes`, and
    /// then the groups themselves.
    pub async fn expire_offsets(&self) {
        let retention_ms = self.config.offsets_retention.as_millis() as i64;
        let now_ms = self.now_ms();
        let shards: Vec<(i32, Vec<_>)> = lock(&self.shards)
            .iter()
            .filter(|(_, s)| s.loaded)
            .map(|(p, s)| (*p, s.groups.values().cloned().collect()))
            .collect();
        for (partition, groups) in shards {
            for group in groups {
                let (writes, id): (Vec<Write>, String) = {
                    let mut g = lock(&group);
                    match g.expire_offsets(retention_ms, now_ms) {
                        Some(writes) => (writes, g.id.clone()),
                        None => continue,
                    }
                };
                if let Err(e) = self.append(partition, writes).await {
                    tracing::warn!(group = %id, error = %e.message, "could not expire offsets");
                    continue;
                }
                tracing::info!(group = %id, "expired the offsets of an empty group");
                if lock(&group).state == crate::group::GroupState::Dead
                    && let Some(shard) = lock(&self.shards).get_mut(&partition)
                {
                    shard.groups.remove(&id);
                }
            }
        }
    }
}
