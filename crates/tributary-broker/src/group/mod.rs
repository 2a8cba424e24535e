//! The broker's side of the group coordinator (`tributary-group`): [`ReplicaLog`], the
//! coordinator's `__consumer_offsets` over the replica manager, and the consumer-group lag
//! metric ([`lag`]). The group APIs are served through the service layer (`service/groups.rs`,
//! `grpc/group.rs`).
//!
//! Architecture invariants:
//! - The group rules live in `tributary-group`; this module only adapts: the log, the wire
//!   types, the metrics.
//! - Error codes cross between Kafka's `ErrorCode` and the gRPC API's by number.

pub mod lag;
mod log;

use std::sync::{Arc, Mutex};

use tributary_proto::common::v1 as common;

use crate::manager::ReplicaManager;
pub use log::ReplicaLog;
pub use tributary_group::{GroupConfig, GroupState, OFFSETS_TOPIC};

/// The coordinator's engine over this broker's log.
pub type Coordinator = tributary_group::GroupCoordinator<ReplicaLog>;

/// The group coordinator of one broker, with its lag table.
pub struct GroupCoordinator {
    coordinator: Arc<Coordinator>,
    manager: Arc<ReplicaManager>,
    /// The consumer-group lag last measured ([`lag`]).
    lag: Mutex<Vec<lag::LagSample>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCoordinator {
    /// A coordinator over `manager`'s partitions.
    pub fn new(manager: Arc<ReplicaManager>, config: GroupConfig) -> Arc<Self> {
        Arc::new(Self {
            coordinator: tributary_group::GroupCoordinator::new(
                Arc::new(ReplicaLog::new(manager.clone())),
                config,
            ),
            manager,
            lag: Mutex::new(Vec::new()),
        })
    }

    /// The broker this coordinator runs on.
    pub fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// The coordinator's requests.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Runs the coordinator's maintenance until aborted (see
    /// `tributary_group::GroupCoordinator::run`).
    pub async fn run(self: Arc<Self>) {
        self.coordinator.clone().run().await
    }
}

/// The gRPC API's code for Kafka's `code` (the same number).
pub fn proto_code(code: tributary_group::ErrorCode) -> common::ErrorCode {
    common::ErrorCode::try_from(i32::from(code.code()))
        .unwrap_or(common::ErrorCode::UnknownServerError)
}

/// Kafka's code for the gRPC API's `code` (the same number).
pub fn kafka_code(code: common::ErrorCode) -> tributary_group::ErrorCode {
    tributary_group::ErrorCode::from_code(code as i32)
        .unwrap_or(tributary_group::ErrorCode::UnknownServerError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_error_code_is_a_kafka_error_code_with_the_same_number() {
        for number in -1..=200 {
            let Ok(code) = common::ErrorCode::try_from(number) else {
                continue;
            };
            let kafka = kafka_code(code);
            assert_eq!(i32::from(kafka.code()), number, "{code:?}");
            assert_eq!(kafka.name(), code.as_str_name());
            assert_eq!(proto_code(kafka), code);
        }
    }
}
