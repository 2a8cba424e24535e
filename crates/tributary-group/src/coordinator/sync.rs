//! SyncGroup: the leader's assignment is written, then every member gets its part.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tributary_kafka::ErrorCode;

use super::{GroupCoordinator, Located, lock, spawn};
use crate::api::{GroupError, SyncGroupRequest, SyncGroupResponse};
use crate::group::{Group, GroupState, check_generation, check_member};
use crate::log::OffsetsLog;

/// How long past the commit timeout a follower waits for the leader's assignment.
const SYNC_GRACE: Duration = Duration::from_secs(60);

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Kafka's SyncGroup.
    pub async fn sync_group(self: &Arc<Self>, req: SyncGroupRequest) -> SyncGroupResponse {
        let fail = |e: GroupError| SyncGroupResponse {
            error: Some(e),
            ..Default::default()
        };
        let (partition, group) = match self.locate(&req.group_id) {
            Ok(Located {
                group: Some(g),
                partition,
                ..
            }) => (partition, g),
            Ok(_) => {
                return fail(GroupError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group `{}` has no members", req.group_id),
                ));
            }
            Err(e) => return fail(e),
        };
        let rx = match self.sync_locked(&req, partition, &group) {
            Ok(rx) => rx,
            Err(answer) => return answer,
        };
        let timeout = self.config.offsets_commit_timeout + SYNC_GRACE;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => fail(GroupError::new(
                ErrorCode::NotCoordinator,
                "the coordinator stopped coordinating the group during the sync",
            )),
            Err(_) => fail(GroupError::new(
                ErrorCode::RebalanceInProgress,
                "the leader's assignment did not arrive in time; rejoin",
            )),
        }
    }

    /// Checks the sync and registers the member as waiting; for the leader, starts writing
    /// the assignment. `Err` is an immediate answer.
    fn sync_locked(
        self: &Arc<Self>,
        req: &SyncGroupRequest,
        partition: i32,
        group: &Arc<Mutex<Group>>,
    ) -> Result<oneshot::Receiver<SyncGroupResponse>, SyncGroupResponse> {
        let fail = |e: GroupError| SyncGroupResponse {
            error: Some(e),
            ..Default::default()
        };
        let mut g = lock(group);
        check_member(&g, &req.member_id, req.group_instance_id.as_deref())
            .and_then(|()| check_generation(&g, req.generation_id))
            .map_err(fail)?;
        match g.state {
            GroupState::PreparingRebalance => {
                return Err(fail(GroupError::new(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing; rejoin",
                )));
            }
            GroupState::Stable => {
                let m = &g.members[&req.member_id];
                return Err(SyncGroupResponse {
                    error: None,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol_name: g.protocol.clone().unwrap_or_default(),
                    assignment: m.assignment.clone(),
                });
            }
            GroupState::Empty | GroupState::Dead => {
                return Err(fail(GroupError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group `{}` has no members", req.group_id),
                )));
            }
            GroupState::CompletingRebalance => {}
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.awaiting_sync = Some(tx);
        }
        if g.leader.as_deref() == Some(req.member_id.as_str()) {
            let mut assignments: HashMap<String, Bytes> = req
                .assignments
                .iter()
                .map(|a| (a.member_id.clone(), a.assignment.clone()))
                .collect();
            for m in g.members.values_mut() {
                m.assignment = assignments.remove(&m.id).unwrap_or_default();
            }
            let write = g.membership_write();
            let generation = g.generation;
            let this = self.clone();
            let group = group.clone();
            // Independent of the leader's request: the group must not stay stuck if the
            // leader goes away mid-write.
            spawn(async move {
                let result = this.append(partition, vec![write]).await;
                this.assignment_written(&group, generation, result);
            });
        }
        Ok(rx)
    }

    /// The assignment of `generation` is written (or not): answer the waiting members.
    fn assignment_written(
        &self,
        group: &Mutex<Group>,
        generation: i32,
        result: Result<i64, GroupError>,
    ) {
        let mut g = lock(group);
        if g.generation != generation || g.state != GroupState::CompletingRebalance {
            return;
        }
        let now_ms = self.now_ms();
        match result {
            Ok(_) => {
                g.set_state(GroupState::Stable, now_ms);
                tracing::info!(group = %g.id, generation, "rebalance complete: group stable");
                let protocol_type = g.protocol_type.clone().unwrap_or_default();
                let protocol_name = g.protocol.clone().unwrap_or_default();
                for m in g.members.values_mut() {
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(SyncGroupResponse {
                            error: None,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %g.id, error = %e.message, "could not write the group's assignment");
                for m in g.members.values_mut() {
                    m.assignment = Bytes::new();
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(SyncGroupResponse {
                            error: Some(e.clone()),
                            ..Default::default()
                        });
                    }
                }
                g.prepare_rebalance(
                    "writing the assignment failed",
                    &self.config,
                    tokio::time::Instant::now(),
                    now_ms,
                );
            }
        }
    }
}
