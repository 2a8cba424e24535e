//! The group coordinator: Kafka's classic consumer-group protocol, as Kafka's own
//! `GroupCoordinator` is its own module.
//!
//! A group lives on the leader of its `__consumer_offsets` partition
//! (`abs(javaHashCode(group)) % partitions`). That leader keeps the group's membership and
//! committed offsets in memory and writes every change to the partition with acks=all before
//! acknowledging it, so the partition is the group's durable state: a broker that becomes its
//! leader replays it ([`GroupCoordinator::maintain`] starts the load; requests meanwhile get
//! COORDINATOR_LOAD_IN_PROGRESS), and one that stops leading it drops its groups at once
//! (requests get NOT_COORDINATOR; waiting joins and syncs are answered with it).
//!
//! Membership follows Kafka's state machine: Empty → PreparingRebalance (members (re)join) →
//! CompletingRebalance (the leader computes the assignment and sends it with SyncGroup) → Stable,
//! with generations that fence members of an older one, session timeouts, rebalance timeouts,
//! Kafka's initial rebalance delay, MEMBER_ID_REQUIRED for new dynamic members, and static
//! membership (`group.instance.id`: a restarted member takes its old place without a rebalance).
//! Assignment is the clients' business (the leader runs the assignor); the coordinator keeps
//! member metadata and assignments as opaque bytes.
//!
//! Map: [`api`] the requests and responses (Kafka's fields, plain Rust); `group` one group's
//! state machine, pure (time passed in); `coordinator` the shell, one file per concern (join,
//! sync, heartbeat, leave, offsets, admin, load, expiry); [`log`] the one trait through which
//! it reaches `__consumer_offsets`, which the broker implements.
//!
//! Architecture invariants:
//! - Nothing is acknowledged (offset commit, completed sync) before its record is replicated to
//!   every in-sync replica of the `__consumer_offsets` partition.
//! - Only the current leader of a group's partition, with the partition loaded at that leader
//!   epoch, answers for the group.
//! - A member of an old generation can neither commit nor sync.
//! - The state machine reads no clock; the coordinator reaches the log only through
//!   [`OffsetsLog`]. No gRPC, no proto crate, no broker crate here.

pub mod api;
mod config;
mod coordinator;
mod group;
pub mod log;

pub use api::GroupError;
pub use config::GroupConfig;
pub use coordinator::{GroupCoordinator, TICK};
pub use group::GroupState;
pub use log::{OffsetsLog, StoredRecord, Write};
pub use tributary_kafka::{ErrorCode, OFFSETS_TOPIC};

#[cfg(test)]
mod tests;
