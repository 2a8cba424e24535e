//! Heartbeat.

use std::time::Duration;

use tokio::time::Instant;
use tributary_kafka::ErrorCode;

use super::{GroupCoordinator, Located, lock};
use crate::api::{GroupError, HeartbeatRequest, HeartbeatResponse};
use crate::group::{GroupState, check_generation, check_member};
use crate::log::OffsetsLog;

/// The longest a heartbeat is held (`max_wait_ms` is capped to it).
const HEARTBEAT_WAIT_MAX: Duration = Duration::from_secs(30);

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Kafka's Heartbeat; with `max_wait_ms` (our extension) held while the group is stable,
    /// answered at once when a rebalance starts.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(HEARTBEAT_WAIT_MAX);
        if !wait.is_zero()
            && let Ok(Located {
                group: Some(group), ..
            }) = self.locate(&req.group_id)
        {
            let mut rx = {
                let g = lock(&group);
                (g.state == GroupState::Stable && g.generation == req.generation_id)
                    .then(|| g.rebalances.subscribe())
            };
            if let Some(rx) = rx.as_mut() {
                // Refresh the session now too: the wait may be as long as the interval.
                let _ = self.heartbeat_now(&req);
                let _ = tokio::time::timeout(wait, rx.changed()).await;
            }
        }
        self.heartbeat_now(&req)
    }

    fn heartbeat_now(&self, req: &HeartbeatRequest) -> HeartbeatResponse {
        let result = (|| {
            let group = self.locate(&req.group_id)?.group.ok_or_else(|| {
                GroupError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group `{}` has no members", req.group_id),
                )
            })?;
            let mut g = lock(&group);
            check_member(&g, &req.member_id, req.group_instance_id.as_deref())?;
            if g.state == GroupState::Empty || g.state == GroupState::Dead {
                return Err(GroupError::new(
                    ErrorCode::UnknownMemberId,
                    "the group is empty",
                ));
            }
            if let Some(m) = g.members.get_mut(&req.member_id) {
                m.session_deadline = Instant::now() + m.session_timeout;
            }
            if g.state == GroupState::PreparingRebalance {
                return Err(GroupError::new(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing; rejoin",
                ));
            }
            check_generation(&g, req.generation_id)
        })();
        HeartbeatResponse {
            error: result.err(),
        }
    }
}
