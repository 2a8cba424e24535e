//! `tributary.broker.v1.Group`: the gRPC face of the [`GroupCoordinator`], one per listener.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::group_server::Group;
use tributary_proto::common::v1::{Error as PbError, ErrorCode};

use super::GroupCoordinator;

/// The group service on one listener (FindCoordinator answers with addresses on it).
#[derive(Debug, Clone)]
pub struct GroupService {
    coordinator: Arc<GroupCoordinator>,
    listener: Arc<str>,
}

impl GroupService {
    /// The service of `coordinator` on `listener`.
    pub fn new(coordinator: Arc<GroupCoordinator>, listener: Arc<str>) -> Self {
        Self {
            coordinator,
            listener,
        }
    }

    fn ready(&self) -> Result<(), Status> {
        if self.coordinator.manager().session().is_ready() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the broker is starting: recovering logs and catching up with the metadata",
            ))
        }
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

#[tonic::async_trait]
impl Group for GroupService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        self.ready()?;
        let req = request.into_inner();
        if req.key_type != 0 {
            return Ok(Response::new(pb::FindCoordinatorResponse {
                error: Some(PbError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "key type {} is not supported (0: group; transactions come later)",
                        req.key_type
                    ),
                )),
                node_id: -1,
                address: String::new(),
            }));
        }
        if req.key.is_empty() {
            return Ok(Response::new(pb::FindCoordinatorResponse {
                error: Some(PbError::new(
                    ErrorCode::InvalidGroupId,
                    "the group id is empty",
                )),
                node_id: -1,
                address: String::new(),
            }));
        }
        let response = match self.coordinator.find_coordinator(&req.key) {
            Ok(id) => {
                let address =
                    self.coordinator.manager().metadata().read(|image| {
                        crate::listeners::advertised_address(image, id, &self.listener)
                    });
                match address {
                    Some(address) => pb::FindCoordinatorResponse {
                        error: None,
                        node_id: id,
                        address,
                    },
                    None => pb::FindCoordinatorResponse {
                        error: Some(PbError::new(
                            ErrorCode::CoordinatorNotAvailable,
                            format!(
                                "broker {id} coordinates group `{}` but has no address on listener {}",
                                req.key, self.listener
                            ),
                        )),
                        node_id: -1,
                        address: String::new(),
                    },
                }
            }
            Err(error) => pb::FindCoordinatorResponse {
                error: Some(error),
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
        self.ready()?;
        let host = client_host(&request);
        Ok(Response::new(
            self.coordinator
                .join_group(request.into_inner(), host)
                .await
                .filled(),
        ))
    }

    async fn sync_group(
        &self,
        request: Request<pb::SyncGroupRequest>,
    ) -> Result<Response<pb::SyncGroupResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator
                .sync_group(request.into_inner())
                .await
                .filled(),
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator
                .heartbeat(request.into_inner())
                .await
                .filled(),
        ))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator.leave_group(request.into_inner()).filled(),
        ))
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator
                .offset_commit(request.into_inner())
                .await
                .filled(),
        ))
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator.offset_fetch(request.into_inner()).filled(),
        ))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator.list_groups(request.into_inner()).filled(),
        ))
    }

    async fn describe_groups(
        &self,
        request: Request<pb::DescribeGroupsRequest>,
    ) -> Result<Response<pb::DescribeGroupsResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator
                .describe_groups(request.into_inner())
                .filled(),
        ))
    }

    async fn delete_groups(
        &self,
        request: Request<pb::DeleteGroupsRequest>,
    ) -> Result<Response<pb::DeleteGroupsResponse>, Status> {
        self.ready()?;
        Ok(Response::new(
            self.coordinator
                .delete_groups(request.into_inner())
                .await
                .filled(),
        ))
    }
}
