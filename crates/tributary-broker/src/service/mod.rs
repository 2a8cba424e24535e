//! The protocol-neutral service layer (Kafka's `KafkaApis`): every request a client or a peer
//! can make of a broker is one method here, over the plain types of `api` with Kafka's error
//! codes. The gRPC services (`grpc`) only translate, and a Kafka-protocol listener will too, so
//! no request has a second implementation.
//!
//! - `produce`: Produce, InitProducerId.
//! - `fetch`: Fetch (one answer, or a stream), ListOffsets.
//! - `replication`: a follower's fetch, OffsetsForLeaderEpoch.
//! - `metadata`: the Metadata answer for the listener a request came in on.
//! - `groups`: the group APIs, on `tributary-group`'s coordinator.
//! - `admin`: admin calls forwarded to the coordinators, answered once this broker has applied
//!   the change (read-your-writes).
//! - `records`: DeleteRecords and DescribeLogDirs, which act on this broker's own logs.
//!
//! Invariants: nothing is served before the broker is ready (logs recovered and reconciled);
//! request metrics are counted here, once for every protocol; clients cannot produce to
//! internal topics nor delete their records.

mod admin;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod records;
mod replication;

use std::sync::Arc;
use std::time::Duration;

use crate::group::Coordinator;
use crate::manager::ReplicaManager;

pub use admin::{AdminError, BrokerConfigEntry};
pub use produce::ProduceResults;

/// Longest long-poll a fetch may ask for.
pub const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
/// How long an admin call or a Metadata request waits for this broker's metadata to reach the
/// change it made or asks for.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// The broker cannot take requests yet (it is recovering its logs or catching up with the
/// metadata): clients retry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(String);

/// The broker's request handler, shared by every listener and protocol.
#[derive(Debug)]
pub struct Service {
    manager: Arc<ReplicaManager>,
    groups: Arc<Coordinator>,
    /// The block of producer ids this broker hands out: next, end (exclusive).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Service {
    /// The service over `manager`'s partitions and the group coordinator `groups`.
    pub fn new(manager: Arc<ReplicaManager>, groups: Arc<Coordinator>) -> Self {
        Self {
            manager,
            groups,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// The replica manager beneath.
    pub fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// `Ok` once the broker serves requests.
    pub fn ready(&self) -> Result<(), NotReady> {
        if self.manager.session().is_ready() {
            Ok(())
        } else {
            Err(NotReady(format!(
                "broker {} is starting (recovering its logs and catching up with the metadata); retry shortly",
                self.manager.broker_id()
            )))
        }
    }
}

/// Kafka's internal topics: clients cannot produce to them.
pub fn is_internal_topic(topic: &str) -> bool {
    topic == tributary_group::OFFSETS_TOPIC
}
