//! LeaveGroup.

use std::sync::Arc;

use tokio::time::Instant;
use tributary_kafka::ErrorCode;

use super::{GroupCoordinator, Located, lock};
use crate::api::{GroupError, LeaveGroupRequest, LeaveGroupResponse, LeaveGroupResponseMember};
use crate::group::{check_instance, error};
use crate::log::OffsetsLog;

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Kafka's LeaveGroup.
    pub fn leave_group(self: &Arc<Self>, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let (partition, group) = match self.locate(&req.group_id) {
            Ok(Located {
                group: Some(g),
                partition,
                ..
            }) => (partition, g),
            Ok(_) => {
                return LeaveGroupResponse {
                    error: error(
                        ErrorCode::UnknownMemberId,
                        format!("group `{}` has no members", req.group_id),
                    ),
                    members: Vec::new(),
                };
            }
            Err(e) => {
                return LeaveGroupResponse {
                    error: Some(e),
                    members: Vec::new(),
                };
            }
        };
        let mut g = lock(&group);
        let mut results = Vec::new();
        let mut left = 0;
        for leaving in &req.members {
            let id = if leaving.member_id.is_empty() {
                leaving
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| g.static_members.get(i).cloned())
                    .unwrap_or_default()
            } else {
                leaving.member_id.clone()
            };
            let error: Option<GroupError> = if !g.members.contains_key(&id) {
                error(
                    ErrorCode::UnknownMemberId,
                    format!("member `{id}` is not in the group"),
                )
            } else if let Err(e) = check_instance(&g, &id, leaving.group_instance_id.as_deref()) {
                Some(e)
            } else {
                tracing::info!(group = %g.id, member = %id, reason = %leaving.reason, "member left");
                g.remove_member(&id);
                left += 1;
                None
            };
            results.push(LeaveGroupResponseMember {
                member_id: id,
                group_instance_id: leaving.group_instance_id.clone(),
                error,
            });
        }
        if left > 0
            && g.after_members_removed("members left", &self.config, Instant::now(), self.now_ms())
        {
            self.persist_in_background(partition, g.membership_write());
        }
        LeaveGroupResponse {
            error: None,
            members: results,
        }
    }
}
