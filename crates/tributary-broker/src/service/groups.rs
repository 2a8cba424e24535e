//! The group APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups): the rules are `tributary-group`'s;
//! this layer adds readiness and, for FindCoordinator, the coordinator's address on the
//! listener the request came in on.

use tributary_group::{ErrorCode, GroupError, api};
use tributary_metadata::BrokerId;

use super::{NotReady, Service};
use crate::listeners;

impl Service {
    /// Kafka's FindCoordinator: the broker coordinating the group (the leader of its
    /// `__consumer_offsets` partition) and its address on `listener`.
    pub fn find_coordinator(
        &self,
        request: &api::FindCoordinatorRequest,
        listener: &str,
    ) -> Result<Result<(BrokerId, String), GroupError>, NotReady> {
        self.ready()?;
        let id = match self.groups.find_coordinator(request) {
            Ok(id) => id,
            Err(err) => return Ok(Err(err)),
        };
        let address = self
            .manager
            .metadata()
            .read(|image| listeners::advertised_address(image, id, listener));
        Ok(address.map(|address| (id, address)).ok_or_else(|| {
            GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "broker {id} coordinates group `{}` but has no address on listener {listener}",
                    request.key
                ),
            )
        }))
    }

    /// Kafka's JoinGroup from a client at `client_host`.
    pub async fn join_group(
        &self,
        request: api::JoinGroupRequest,
        client_host: String,
    ) -> Result<api::JoinGroupResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.join_group(request, client_host).await)
    }

    /// Kafka's SyncGroup.
    pub async fn sync_group(
        &self,
        request: api::SyncGroupRequest,
    ) -> Result<api::SyncGroupResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.sync_group(request).await)
    }

    /// Kafka's Heartbeat.
    pub async fn heartbeat(
        &self,
        request: api::HeartbeatRequest,
    ) -> Result<api::HeartbeatResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.heartbeat(request).await)
    }

    /// Kafka's LeaveGroup.
    pub fn leave_group(
        &self,
        request: api::LeaveGroupRequest,
    ) -> Result<api::LeaveGroupResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.leave_group(request))
    }

    /// Kafka's OffsetCommit.
    pub async fn offset_commit(
        &self,
        request: api::OffsetCommitRequest,
    ) -> Result<api::OffsetCommitResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.offset_commit(request).await)
    }

    /// Kafka's OffsetFetch.
    pub fn offset_fetch(
        &self,
        request: api::OffsetFetchRequest,
    ) -> Result<api::OffsetFetchResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.offset_fetch(request))
    }

    /// Kafka's OffsetDelete.
    pub async fn offset_delete(
        &self,
        request: api::OffsetDeleteRequest,
    ) -> Result<api::OffsetDeleteResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.offset_delete(request).await)
    }

    /// Kafka's ListGroups.
    pub fn list_groups(
        &self,
        request: api::ListGroupsRequest,
    ) -> Result<api::ListGroupsResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.list_groups(request))
    }

    /// Kafka's DescribeGroups.
    pub fn describe_groups(
        &self,
        request: api::DescribeGroupsRequest,
    ) -> Result<api::DescribeGroupsResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.describe_groups(request))
    }

    /// Kafka's DeleteGroups.
    pub async fn delete_groups(
        &self,
        request: api::DeleteGroupsRequest,
    ) -> Result<api::DeleteGroupsResponse, NotReady> {
        self.ready()?;
        Ok(self.groups.delete_groups(request).await)
    }
}
