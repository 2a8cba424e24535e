//! `tributary.broker.v1.Group`: translation between the gRPC messages and the group APIs of
//! the service layer (`tributary-group`'s types), one instance per listener.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tributary_group::{GroupError, api};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::group_server::Group;
use tributary_proto::common::v1::Error as PbError;

use crate::group::proto_code;
use crate::service::Service;

/// The group service on one listener (FindCoordinator answers with addresses on it).
#[derive(Debug, Clone)]
pub struct GroupService {
    service: Arc<Service>,
    listener: Arc<str>,
}

impl GroupService {
    /// The group service for clients on `listener`.
    pub fn new(service: Arc<Service>, listener: Arc<str>) -> Self {
        Self { service, listener }
    }
}

/// Success travels as an explicit NONE error, as in every other response of the API.
fn fill(error: &mut Option<PbError>) {
    if error.is_none() {
        *error = Some(PbError::none());
    }
}

/// Fills every absent error of a response with NONE.
trait Filled: Sized {
    fn filled(self) -> Self;
}

macro_rules! filled {
    ($ty:ty, |$r:ident| $body:block) => {
        impl Filled for $ty {
            fn filled(mut self) -> Self {
                let $r = &mut self;
                $body
                self
            }
        }
    };
}

filled!(pb::FindCoordinatorResponse, |r| { fill(&mut r.error) });
filled!(pb::JoinGroupResponse, |r| { fill(&mut r.error) });
filled!(pb::SyncGroupResponse, |r| { fill(&mut r.error) });
filled!(pb::HeartbeatResponse, |r| { fill(&mut r.error) });
filled!(pb::LeaveGroupResponse, |r| {
    fill(&mut r.error);
    r.members.iter_mut().for_each(|m| fill(&mut m.error));
});
filled!(pb::OffsetCommitResponse, |r| {
    r.topics
        .iter_mut()
        .flat_map(|t| &mut t.partitions)
        .for_each(|p| fill(&mut p.error));
});
filled!(pb::OffsetFetchResponse, |r| {
    fill(&mut r.error);
    r.topics
        .iter_mut()
        .flat_map(|t| &mut t.partitions)
        .for_each(|p| fill(&mut p.error));
});
filled!(pb::ListGroupsResponse, |r| { fill(&mut r.error) });
filled!(pb::DescribeGroupsResponse, |r| {
    r.groups.iter_mut().for_each(|g| fill(&mut g.error));
});
filled!(pb::DeleteGroupsResponse, |r| {
    r.results.iter_mut().for_each(|g| fill(&mut g.error));
});

/// Kafka prints client hosts as `/address`.
fn client_host<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_else(|| "/unknown".to_owned())
}

fn pb_error(e: GroupError) -> PbError {
    PbError::new(proto_code(e.code), e.message)
}

fn pb_err(e: Option<GroupError>) -> Option<PbError> {
    e.map(pb_error)
}

fn join_request(r: pb::JoinGroupRequest) -> api::JoinGroupRequest {
    api::JoinGroupRequest {
        group_id: r.group_id,
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        member_id: r.member_id,
        group_instance_id: r.group_instance_id,
        protocol_type: r.protocol_type,
        protocols: r
            .protocols
            .into_iter()
            .map(|p| api::JoinGroupProtocol {
                name: p.name,
                metadata: p.metadata,
            })
            .collect(),
        client_id: r.client_id,
        reason: r.reason,
        require_known_member_id: true,
    }
}

fn join_response(r: api::JoinGroupResponse) -> pb::JoinGroupResponse {
    pb::JoinGroupResponse {
        error: pb_err(r.error),
        generation_id: r.generation_id,
        protocol_type: r.protocol_type,
        protocol_name: r.protocol_name,
        leader: r.leader,
        skip_assignment: r.skip_assignment,
        member_id: r.member_id,
        members: r
            .members
            .into_iter()
            .map(|m| pb::join_group_response::Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                metadata: m.metadata,
            })
            .collect(),
    }
}

fn sync_request(r: pb::SyncGroupRequest) -> api::SyncGroupRequest {
    api::SyncGroupRequest {
        group_id: r.group_id,
        generation_id: r.generation_id,
        member_id: r.member_id,
        group_instance_id: r.group_instance_id,
        protocol_type: r.protocol_type,
        protocol_name: r.protocol_name,
        assignments: r
            .assignments
            .into_iter()
            .map(|a| api::SyncGroupAssignment {
                member_id: a.member_id,
                assignment: a.assignment,
            })
            .collect(),
    }
}

fn sync_response(r: api::SyncGroupResponse) -> pb::SyncGroupResponse {
    pb::SyncGroupResponse {
        error: pb_err(r.error),
        protocol_type: r.protocol_type,
        protocol_name: r.protocol_name,
        assignment: r.assignment,
    }
}

fn heartbeat_request(r: pb::HeartbeatRequest) -> api::HeartbeatRequest {
    api::HeartbeatRequest {
        group_id: r.group_id,
        generation_id: r.generation_id,
        member_id: r.member_id,
        group_instance_id: r.group_instance_id,
        max_wait_ms: r.max_wait_ms,
    }
}

fn leave_request(r: pb::LeaveGroupRequest) -> api::LeaveGroupRequest {
    api::LeaveGroupRequest {
        group_id: r.group_id,
        members: r
            .members
            .into_iter()
            .map(|m| api::LeaveGroupMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                reason: m.reason,
            })
            .collect(),
    }
}

fn leave_response(r: api::LeaveGroupResponse) -> pb::LeaveGroupResponse {
    pb::LeaveGroupResponse {
        error: pb_err(r.error),
        members: r
            .members
            .into_iter()
            .map(|m| pb::leave_group_response::Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                error: pb_err(m.error),
            })
            .collect(),
    }
}

fn commit_request(r: pb::OffsetCommitRequest) -> api::OffsetCommitRequest {
    api::OffsetCommitRequest {
        group_id: r.group_id,
        generation_id: r.generation_id,
        member_id: r.member_id,
        group_instance_id: r.group_instance_id,
        topics: r
            .topics
            .into_iter()
            .map(|t| api::OffsetCommitTopic {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| api::OffsetCommitPartition {
                        partition: p.partition,
                        committed_offset: p.committed_offset,
                        committed_leader_epoch: p.committed_leader_epoch,
                        committed_metadata: p.committed_metadata,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn commit_response(r: api::OffsetCommitResponse) -> pb::OffsetCommitResponse {
    pb::OffsetCommitResponse {
        topics: r
            .topics
            .into_iter()
            .map(|t| pb::offset_commit_response::Topic {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| pb::offset_commit_response::Partition {
                        partition: p.partition,
                        error: pb_err(p.error),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn fetch_request(r: pb::OffsetFetchRequest) -> api::OffsetFetchRequest {
    api::OffsetFetchRequest {
        group_id: r.group_id,
        topics: r
            .topics
            .into_iter()
            .map(|t| api::OffsetFetchTopic {
                name: t.name,
                partitions: t.partitions,
            })
            .collect(),
    }
}

fn fetch_response(r: api::OffsetFetchResponse) -> pb::OffsetFetchResponse {
    pb::OffsetFetchResponse {
        error: pb_err(r.error),
        topics: r
            .topics
            .into_iter()
            .map(|t| pb::offset_fetch_response::Topic {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| pb::offset_fetch_response::Partition {
                        partition: p.partition,
                        committed_offset: p.committed_offset,
                        committed_leader_epoch: p.committed_leader_epoch,
                        metadata: p.metadata,
                        error: pb_err(p.error),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn list_response(r: api::ListGroupsResponse) -> pb::ListGroupsResponse {
    pb::ListGroupsResponse {
        error: pb_err(r.error),
        groups: r
            .groups
            .into_iter()
            .map(|g| pb::list_groups_response::Group {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.group_state,
            })
            .collect(),
    }
}

fn describe_response(r: api::DescribeGroupsResponse) -> pb::DescribeGroupsResponse {
    pb::DescribeGroupsResponse {
        groups: r
            .groups
            .into_iter()
            .map(|g| pb::describe_groups_response::DescribedGroup {
                error: pb_err(g.error),
                group_id: g.group_id,
                group_state: g.group_state,
                protocol_type: g.protocol_type,
                protocol_data: g.protocol_data,
                coordinator_id: g.coordinator_id,
                members: g
                    .members
                    .into_iter()
                    .map(|m| pb::describe_groups_response::Member {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.member_metadata,
                        member_assignment: m.member_assignment,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn delete_response(r: api::DeleteGroupsResponse) -> pb::DeleteGroupsResponse {
    pb::DeleteGroupsResponse {
        results: r
            .results
            .into_iter()
            .map(|g| pb::delete_groups_response::Result {
                group_id: g.group_id,
                error: pb_err(g.error),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Group for GroupService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let req = request.into_inner();
        let found = self.service.find_coordinator(
            &api::FindCoordinatorRequest {
                key: req.key.clone(),
                key_type: req.key_type,
            },
            &self.listener,
        )?;
        let response = match found {
            Ok((node_id, address)) => pb::FindCoordinatorResponse {
                error: None,
                node_id,
                address,
            },
            Err(error) => pb::FindCoordinatorResponse {
                error: Some(pb_error(error)),
                node_id: -1,
                address: String::new(),
            },
        };
        Ok(Response::new(response.filled()))
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        let host = client_host(&request);
        let response = self
            .service
            .join_group(join_request(request.into_inner()), host)
            .await?;
        Ok(Response::new(join_response(response).filled()))
    }

    async fn sync_group(
        &self,
        request: Request<pb::SyncGroupRequest>,
    ) -> Result<Response<pb::SyncGroupResponse>, Status> {
        let response = self
            .service
            .sync_group(sync_request(request.into_inner()))
            .await?;
        Ok(Response::new(sync_response(response).filled()))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let response = self
            .service
            .heartbeat(heartbeat_request(request.into_inner()))
            .await?;
        Ok(Response::new(
            pb::HeartbeatResponse {
                error: pb_err(response.error),
            }
            .filled(),
        ))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let response = self
            .service
            .leave_group(leave_request(request.into_inner()))?;
        Ok(Response::new(leave_response(response).filled()))
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        let response = self
            .service
            .offset_commit(commit_request(request.into_inner()))
            .await?;
        Ok(Response::new(commit_response(response).filled()))
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        let response = self
            .service
            .offset_fetch(fetch_request(request.into_inner()))?;
        Ok(Response::new(fetch_response(response).filled()))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let req = request.into_inner();
        let response = self.service.list_groups(api::ListGroupsRequest {
            states_filter: req.states_filter,
        })?;
        Ok(Response::new(list_response(response).filled()))
    }

    async fn describe_groups(
        &self,
        request: Request<pb::DescribeGroupsRequest>,
    ) -> Result<Response<pb::DescribeGroupsResponse>, Status> {
        let req = request.into_inner();
        let response = self
            .service
            .describe_groups(api::DescribeGroupsRequest { groups: req.groups })?;
        Ok(Response::new(describe_response(response).filled()))
    }

    async fn delete_groups(
        &self,
        request: Request<pb::DeleteGroupsRequest>,
    ) -> Result<Response<pb::DeleteGroupsResponse>, Status> {
        let req = request.into_inner();
        let response = self
            .service
            .delete_groups(api::DeleteGroupsRequest { groups: req.groups })
            .await?;
        Ok(Response::new(delete_response(response).filled()))
    }
}
