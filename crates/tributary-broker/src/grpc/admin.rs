//! `tributary.coordinator.v1.Admin` as brokers serve it: the service layer forwards each call
//! to the coordinators and waits for its own metadata (read-your-writes).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tributary_proto::coordinator::v1 as cpb;
use tributary_proto::coordinator::v1::admin_server::Admin;

use crate::service::{AdminError, Service};

/// The admin service on every listener.
#[derive(Debug, Clone)]
pub struct AdminService(pub Arc<Service>);

impl From<AdminError> for Status {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::NotReady(not_ready) => not_ready.into(),
            AdminError::Coordinators(status) => status,
        }
    }
}

/// Implements each `Admin` method as the service layer's method of the same name.
macro_rules! forward {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    Ok(Response::new(self.0.$method(request.into_inner()).await?))
                }
            )*
        }
    };
}

forward! {
    create_topics(cpb::CreateTopicsRequest) -> cpb::CreateTopicsResponse;
    delete_topics(cpb::DeleteTopicsRequest) -> cpb::DeleteTopicsResponse;
    create_partitions(cpb::CreatePartitionsRequest) -> cpb::CreatePartitionsResponse;
    describe_configs(cpb::DescribeConfigsRequest) -> cpb::DescribeConfigsResponse;
    alter_configs(cpb::AlterConfigsRequest) -> cpb::AlterConfigsResponse;
    describe_cluster(cpb::DescribeClusterRequest) -> cpb::DescribeClusterResponse;
    add_coordinator(cpb::AddCoordinatorRequest) -> cpb::MembershipResponse;
    remove_coordinator(cpb::RemoveCoordinatorRequest) -> cpb::MembershipResponse;
}
