//! The openraft type configuration for a [`StateMachine`], and short names for openraft's types.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Cursor;
use std::marker::PhantomData;

use openraft::RaftTypeConfig;

use crate::StateMachine;

/// A Raft node's id (the coordinator's node id).
pub type NodeId = u64;

/// What the cluster knows about a node: its Raft gRPC address, `host:port`.
pub use openraft::BasicNode;

/// openraft's type configuration for the state machine `S`: entries carry `S::Command`, applying
/// one yields `S::Response`, nodes are `u64` ids with a [`BasicNode`] address, snapshots are
/// byte buffers, the runtime is tokio.
///
/// A zero-sized marker: it is `Copy`, `Ord`, `Default` and so on whatever `S` is.
pub struct TypeConfig<S>(PhantomData<fn() -> S>);

impl<S: StateMachine> RaftTypeConfig for TypeConfig<S> {
    type D = S::Command;
    type R = S::Response;
    type NodeId = NodeId;
    type Node = BasicNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = openraft::TokioRuntime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}

// The derives would demand the same traits of `S`; the marker needs none of them.
impl<S> fmt::Debug for TypeConfig<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}
impl<S> Clone for TypeConfig<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for TypeConfig<S> {}
impl<S> Default for TypeConfig<S> {
    fn default() -> Self {
        Self(PhantomData)
    }
}
impl<S> PartialEq for TypeConfig<S> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<S> Eq for TypeConfig<S> {}
impl<S> PartialOrd for TypeConfig<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<S> Ord for TypeConfig<S> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}
impl<S> Hash for TypeConfig<S> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// The openraft Raft instance of a node replicating `S`.
pub type Raft<S> = openraft::Raft<TypeConfig<S>>;
/// A Raft log entry of `S`.
pub type Entry<S> = openraft::Entry<TypeConfig<S>>;
/// A Raft log id: the index and the term (with the leader that proposed it).
pub type LogId = openraft::LogId<NodeId>;
/// A node's Raft metrics (role, term, leader, log and apply progress, membership).
pub type RaftMetrics = openraft::RaftMetrics<NodeId, BasicNode>;
/// The cluster membership as stored with the last membership entry.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// A snapshot's metadata: its last log id, membership and id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
/// The storage error type openraft's storage traits return.
pub type StorageError = openraft::StorageError<NodeId>;
