//! The Raft layer of Tributary's coordinator: [openraft] 0.9 with its log, vote and snapshots in
//! [sled] (behind this crate's own [`RaftStore`] trait) and its messages over tonic gRPC,
//! generic over a deterministic application [`StateMachine`].
//!
//! It knows nothing about topics or brokers: the coordinator implements [`StateMachine`] for its
//! metadata image, starts a [`RaftNode`], mounts [`RaftNode::grpc_service`] on its gRPC server,
//! and writes through [`RaftNode::client_write`] on the leader.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use tributary_raft::{BoxError, RaftConfig, RaftNode, StateMachine};
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     fn apply(&mut self, _index: u64, add: &u64) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.0.to_be_bytes().to_vec()
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) -> Result<(), BoxError> {
//!         self.0 = u64::from_be_bytes(snapshot.try_into()?);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), tributary_raft::Error> {
//! let node = RaftNode::start(1, "/var/lib/tributary", RaftConfig::default(), Counter::default()).await?;
//! // Mount node.grpc_service() on the gRPC server listening at 10.0.0.1:9093, then:
//! node.initialize(BTreeMap::from([(1, "10.0.0.1:9093".to_owned())])).await?;
//! let written = node.client_write(5).await?;
//! assert_eq!(written.response, 5);
//! node.ensure_linearizable().await?;
//! assert_eq!(node.read(|counter| counter.0), 5);
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! See `README.md` in this crate for the storage design, the durability rule and the timeouts.

#![warn(missing_docs)]

mod config;
mod error;
pub mod network;
mod node;
mod state_machine;
pub mod storage;
pub mod store;
mod types;

pub use config::{MAX_FRAME_SIZE, RaftConfig};
pub use error::Error;
pub use network::{GrpcNetworkFactory, RaftServiceImpl, TransportOptions};
pub use node::{LeaderInfo, RAFT_DIR, RaftNode, WriteOutcome};
pub use state_machine::{BoxError, StateMachine};
pub use store::{MetaKey, RaftStore, SledStore, StoreError};
pub use types::{
    BasicNode, Entry, LogId, NodeId, Raft, RaftMetrics, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// openraft itself, at the version this crate is built on (0.9.25).
pub use openraft;
