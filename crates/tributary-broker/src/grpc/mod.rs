//! The gRPC face of the broker: one file per service, each only translating between the
//! protobuf messages and the service layer (`service`). No request logic lives here.
//!
//! - `broker`: `tributary.broker.v1.Broker` (Metadata, Produce, Fetch, FetchStream,
//!   InitProducerId, ListOffsets, DeleteRecords and DescribeLogDirs, the last two in
//!   `records`), one instance per listener.
//! - `admin`: `tributary.coordinator.v1.Admin` as brokers serve it (forwarded).
//! - `group`: `tributary.broker.v1.Group` (the group APIs), one instance per listener.
//! - `replication`: `tributary.broker.v1.Replication` (followers' fetches).

mod admin;
mod broker;
mod group;
mod records;
mod replication;

pub use admin::AdminService;
pub use broker::BrokerService;
pub use group::GroupService;
pub use replication::ReplicationService;

use tonic::Status;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::Error as WireError;

use crate::api::{LeaderHint, PartitionError};
use crate::service::{NotReady, Service};

impl From<NotReady> for Status {
    fn from(err: NotReady) -> Self {
        Status::unavailable(err.to_string())
    }
}

fn ok() -> Option<WireError> {
    Some(WireError::none())
}

fn wire_error(err: &PartitionError) -> Option<WireError> {
    Some(WireError::new(err.code, err.message.clone()))
}

/// A leader hint for a client on `listener`: the leader's address on that listener.
fn wire_hint(
    service: &Service,
    listener: &str,
    hint: &Option<LeaderHint>,
) -> Option<pb::LeaderHint> {
    hint.as_ref().map(|h| pb::LeaderHint {
        leader_id: h.leader.unwrap_or(-1),
        leader_epoch: h.leader_epoch,
        address: h
            .leader
            .and_then(|leader| service.advertised_address(leader, listener))
            .unwrap_or_default(),
    })
}

/// Kafka's -1 ("no epoch known") as `None`.
fn known_epoch(epoch: i32) -> Option<i32> {
    (epoch >= 0).then_some(epoch)
}
