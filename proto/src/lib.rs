//! Every wire type and gRPC service of Tributary.
//!
//! The `.proto` files under `proto/tributary/` are the single source of truth for what crosses
//! a process boundary; no other crate declares a wire type. `bytes` fields are generated as
//! [`bytes::Bytes`], so record batches are never copied out of the transport's buffers.

/// Shared types: Kafka's error codes, topic-partition pairs.
pub mod common {
    /// Version 1 of the shared types.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("tributary.common.v1");
    }
}

/// The brokers' client-facing API: Metadata, Produce, Fetch, ListOffsets, DeleteRecords,
/// DescribeLogDirs.
pub mod broker {
    /// Version 1 of the broker API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("tributary.broker.v1");
    }
}

/// The coordinator's API: broker lifecycle, the metadata log, and admin.
pub mod coordinator {
    /// Version 1 of the coordinator API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("tributary.coordinator.v1");
    }
}

/// The Raft transport between coordinator nodes (used by `tributary-raft` only).
pub mod raft {
    /// Version 1 of the Raft transport.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("tributary.raft.v1");
    }
}

impl common::v1::ErrorCode {
    /// Whether retrying the same request may succeed: Kafka's `RetriableException` family
    /// (leadership moved, not enough replicas yet, a coordinator loading, a timeout).
    ///
    /// One deliberate difference: CORRUPT_MESSAGE is not retriable here. Kafka retries it in
    /// case the network damaged the batch; over gRPC the broker checks the bytes exactly as the
    /// client sent them, so the same bytes would fail again.
    pub fn is_retriable(self) -> bool {
        // Kafka's list, kept once, in `tributary-kafka` (the numbers are the same).
        tributary_kafka::ErrorCode::from_code(self as i32)
            .is_some_and(tributary_kafka::ErrorCode::is_retriable)
    }
}

impl common::v1::Error {
    /// Success (code NONE).
    pub fn none() -> Self {
        Self {
            code: common::v1::ErrorCode::None as i32,
            message: String::new(),
            retriable: false,
        }
    }

    /// An error with `code` and `message`; `retriable` follows the code.
    pub fn new(code: common::v1::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retriable: code.is_retriable(),
        }
    }

    /// The code as the enum (UNKNOWN_SERVER_ERROR for a number this build does not know).
    pub fn error_code(&self) -> common::v1::ErrorCode {
        common::v1::ErrorCode::try_from(self.code)
            .unwrap_or(common::v1::ErrorCode::UnknownServerError)
    }
}

#[cfg(test)]
mod tests {
    use super::common::v1::ErrorCode;

    #[test]
    fn error_codes_keep_kafkas_numbers_and_names() {
        assert_eq!(ErrorCode::UnknownServerError as i32, -1);
        assert_eq!(ErrorCode::NotLeaderOrFollower as i32, 6);
        assert_eq!(ErrorCode::NotEnoughReplicas as i32, 19);
        assert_eq!(ErrorCode::FencedLeaderEpoch as i32, 74);
        assert_eq!(
            ErrorCode::NotLeaderOrFollower.as_str_name(),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(ErrorCode::try_from(56), Ok(ErrorCode::KafkaStorageError));
    }

    #[test]
    fn retriable_follows_kafka() {
        assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
        assert!(ErrorCode::NotEnoughReplicas.is_retriable());
        assert!(!ErrorCode::OffsetOutOfRange.is_retriable());
        assert!(!ErrorCode::MessageTooLarge.is_retriable());
        assert!(!ErrorCode::TopicAlreadyExists.is_retriable());
        let err = super::common::v1::Error::new(ErrorCode::LeaderNotAvailable, "moving");
        assert!(err.retriable);
        assert_eq!(err.error_code(), ErrorCode::LeaderNotAvailable);
    }
}
