//! JoinGroup.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tributary_kafka::ErrorCode;

use super::{GroupCoordinator, lock};
use crate::api::{GroupError, JoinGroupRequest, JoinGroupResponse};
use crate::group::JoinOutcome;
use crate::log::OffsetsLog;

/// How long past the rebalance timeout a join waits before giving up on the rebalance.
const JOIN_GRACE: Duration = Duration::from_secs(5);

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Kafka's JoinGroup; answered when the rebalance completes. `client_host` is Kafka's
    /// `/address` of the client.
    pub async fn join_group(
        self: &Arc<Self>,
        req: JoinGroupRequest,
        client_host: String,
    ) -> JoinGroupResponse {
        let fail = |e: GroupError| JoinGroupResponse {
            error: Some(e),
            member_id: req.member_id.clone(),
            generation_id: -1,
            ..Default::default()
        };
        if req.group_id.is_empty() {
            return fail(GroupError::new(
                ErrorCode::InvalidGroupId,
                "the group id is empty",
            ));
        }
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return fail(GroupError::new(
                ErrorCode::InvalidSessionTimeout,
                format!(
                    "session.timeout.ms {} is outside the broker's [{}, {}] (group.min.session.timeout.ms, group.max.session.timeout.ms)",
                    req.session_timeout_ms,
                    self.config.group_min_session_timeout_ms,
                    self.config.group_max_session_timeout_ms
                ),
            ));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(GroupError::new(
                ErrorCode::InconsistentGroupProtocol,
                "a join needs a protocol type and at least one protocol",
            ));
        }
        let (located, group) = match self.locate_or_create(&req.group_id) {
            Ok(found) => found,
            Err(e) => return fail(e),
        };
        let rebalance_timeout = Duration::from_millis(
            req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64,
        );
        let rx = {
            let mut g = lock(&group);
            let (now, now_ms) = (Instant::now(), self.now_ms());
            match g.join(&req, client_host, &self.config, now, now_ms) {
                Ok(JoinOutcome::Now { response, persist }) => {
                    if persist {
                        self.persist_in_background(located.partition, g.membership_write());
                    }
                    return response;
                }
                Ok(JoinOutcome::Wait(rx)) => {
                    g.try_complete_join(now, now_ms);
                    rx
                }
                Err(e) => return fail(e),
            }
        };
        match tokio::time::timeout(rebalance_timeout + JOIN_GRACE, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => fail(GroupError::new(
                ErrorCode::NotCoordinator,
                "the coordinator stopped coordinating the group during the join",
            )),
            Err(_) => fail(GroupError::new(
                ErrorCode::RebalanceInProgress,
                "the rebalance did not complete within the rebalance timeout",
            )),
        }
    }
}
