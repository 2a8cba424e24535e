//! Kafka's byte schemas, shared by Tributary's client and broker, named Kafka's way.
//!
//! - [`consumer_protocol`]: `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`
//!   (versions 0 to 3), the opaque bytes consumers exchange through JoinGroup and SyncGroup.
//! - [`offsets`]: the records of `__consumer_offsets` (`OffsetCommitKey` / `OffsetCommitValue`,
//!   `GroupMetadataKey` / `GroupMetadataValue`) in Kafka's own schemas and versions, and the
//!   group-to-partition hash.
//! - [`ErrorCode`]: Kafka's error codes with Kafka's names and numbers, for crates that must
//!   speak Kafka's errors without the gRPC types.
//!
//! The next step is Kafka's wire protocol (the `kafka-protocol` crate's messages); it belongs
//! here too.
//!
//! Architecture invariants:
//! - Bytes written here are Kafka's, byte for byte: Kafka's tools can read them, and data
//!   written by any earlier Tributary build reads back unchanged.
//! - Decoding never panics and never allocates more than the input can justify: garbage is an
//!   error.
//! - No gRPC, no tonic, no proto crate, no I/O: pure encoding and decoding.

pub mod consumer_protocol;
mod error;
pub mod offsets;

pub use error::ErrorCode;
pub use offsets::OFFSETS_TOPIC;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`, `partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
