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
}
