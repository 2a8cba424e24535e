//! ListGroups, DescribeGroups, DeleteGroups.

use tributary_kafka::ErrorCode;

use super::{GroupCoordinator, Located, lock};
use crate::api::{
    DeleteGroupsRequest, DeleteGroupsResponse, DeletedGroup, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember, GroupError, ListGroupsRequest,
    ListGroupsResponse, ListedGroup,
};
use crate::group::GroupState;
use crate::log::OffsetsLog;

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// The groups this broker coordinates.
    pub fn list_groups(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut out: Vec<ListedGroup> = self
            .loaded_groups()
            .iter()
            .filter_map(|g| {
                let g = lock(g);
                let state = g.state.name();
                (g.state != GroupState::Dead
                    && (req.states_filter.is_empty()
                        || req
                            .states_filter
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(state))))
                .then(|| ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    group_state: state.to_owned(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse {
            error: None,
            groups: out,
        }
    }

    /// Kafka's DescribeGroups.
    pub fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let me = self.log.broker_id();
        let groups = req
            .groups
            .iter()
            .map(|id| {
                let dead = |error| DescribedGroup {
                    error,
                    group_id: id.clone(),
                    group_state: GroupState::Dead.name().to_owned(),
                    coordinator_id: me,
                    ..Default::default()
                };
                match self.locate(id) {
                    Err(e) => dead(Some(e)),
                    Ok(Located { group: None, .. }) => dead(None),
                    Ok(Located { group: Some(g), .. }) => {
                        let g = lock(&g);
                        let protocol = g.protocol.clone().unwrap_or_default();
                        DescribedGroup {
                            error: None,
                            group_id: id.clone(),
                            group_state: g.state.name().to_owned(),
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            protocol_data: protocol.clone(),
                            coordinator_id: me,
                            members: g
                                .members
                                .values()
                                .map(|m| DescribedGroupMember {
                                    member_id: m.id.clone(),
                                    group_instance_id: m.instance_id.clone(),
                                    client_id: m.client_id.clone(),
                                    client_host: m.client_host.clone(),
                                    member_metadata: m.metadata_for(&protocol),
                                    member_assignment: m.assignment.clone(),
                                })
                                .collect(),
                        }
                    }
                }
            })
            .collect();
        DescribeGroupsResponse { groups }
    }

    /// Kafka's DeleteGroups: only empty groups; their offsets go too.
    pub async fn delete_groups(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut results = Vec::new();
        for id in &req.groups {
            let error = self.delete_group(id).await.err();
            results.push(DeletedGroup {
                group_id: id.clone(),
                error,
            });
        }
        DeleteGroupsResponse { results }
    }

    async fn delete_group(&self, id: &str) -> Result<(), GroupError> {
        let located = self.locate(id)?;
        let Some(group) = located.group else {
            return Err(GroupError::new(
                ErrorCode::GroupIdNotFound,
                format!("group `{id}` does not exist"),
            ));
        };
        let writes = {
            let mut g = lock(&group);
            if g.state == GroupState::Dead {
                return Err(GroupError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("group `{id}` does not exist"),
                ));
            }
            if !g.members.is_empty() {
                return Err(GroupError::new(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group `{id}` has {} active members; stop them first",
                        g.members.len()
                    ),
                ));
            }
            g.set_state(GroupState::Dead, self.now_ms());
            g.tombstones()
        };
        match self.append(located.partition, writes).await {
            Ok(_) => {
                let mut shards = lock(&self.shards);
                if let Some(shard) = shards.get_mut(&located.partition) {
                    shard.groups.remove(id);
                }
                tracing::info!(group = id, "group deleted");
                Ok(())
            }
            Err(e) => {
                lock(&group).set_state(GroupState::Empty, self.now_ms());
                Err(e)
            }
        }
    }
}
