//! The errors of the Raft layer's API.

use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader,
    InitializeError, QuorumNotEnough,
};

use crate::state_machine::BoxError;
use crate::store::StoreError;
use crate::types::{BasicNode, NodeId};

/// An error of a [`RaftNode`](crate::RaftNode) operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node is not the leader; the request must go to the leader (when one is known).
    #[error("not the Raft leader; the leader is {}", describe_leader(*.leader_id, .leader_addr.as_deref()))]
    ForwardToLeader {
        /// The leader this node knows of, if any.
        leader_id: Option<NodeId>,
        /// The leader's Raft address (`host:port`), if known.
        leader_addr: Option<String>,
    },
    /// A leader could not confirm its leadership with a quorum (a linearizable read failed).
    #[error("leadership not confirmed by a quorum: {0}")]
    QuorumNotEnough(#[source] Box<QuorumNotEnough<NodeId>>),
    /// A membership change was refused (another is in progress, a learner is missing, ...).
    #[error("membership change refused: {0}")]
    ChangeMembership(#[source] Box<ChangeMembershipError<NodeId>>),
    /// Initializing the cluster was refused (already initialized, or this node is not a member).
    #[error("cluster initialization refused: {0}")]
    Initialize(#[source] Box<InitializeError<NodeId, BasicNode>>),
    /// The Raft node has stopped (shut down, or a storage error or panic stopped it).
    #[error("raft node stopped: {0}")]
    Fatal(#[source] Box<Fatal<NodeId>>),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored Raft value (vote, snapshot metadata, ...) could not be decoded.
    #[error("raft store holds an undecodable {what}: {source}")]
    Decode {
        /// Which value.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A command does not survive a JSON round trip (entries are stored and sent as JSON).
    #[error("the command cannot be encoded as a Raft entry: {source}")]
    Encode {
        /// The encoding or decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The data directory belongs to another node.
    #[error("the raft data directory belongs to node {found}, not to node {expected}")]
    WrongNode {
        /// The node id this node was started with.
        expected: NodeId,
        /// The node id found in the store.
        found: NodeId,
    },
    /// The state machine could not restore the stored snapshot at start.
    #[error("restoring the state machine from snapshot {snapshot_id} failed: {source}")]
    Restore {
        /// The snapshot's id.
        snapshot_id: String,
        /// The state machine's error.
        #[source]
        source: BoxError,
    },
    /// A blocking task (opening or flushing the store) panicked or was cancelled.
    #[error("a blocking raft store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(#[source] Box<openraft::ConfigError>),
    /// A wait for a condition ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// How long the wait was.
        timeout: Duration,
        /// What was waited for.
        what: String,
    },
}

fn describe_leader(id: Option<NodeId>, addr: Option<&str>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        (None, _) => "unknown".to_owned(),
    }
}

impl Error {
    /// Whether this node is not the leader (the caller should retry on the leader).
    pub fn is_forward_to_leader(&self) -> bool {
        matches!(self, Error::ForwardToLeader { .. })
    }

    /// Whether `initialize` failed because the node already holds cluster state (harmless when
    /// every node of a new cluster is told to bootstrap).
    pub fn is_already_initialized(&self) -> bool {
        matches!(self, Error::Initialize(e) if matches!(**e, InitializeError::NotAllowed(_)))
    }
}

impl From<ForwardToLeader<NodeId, BasicNode>> for Error {
    fn from(f: ForwardToLeader<NodeId, BasicNode>) -> Self {
        Error::ForwardToLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|node| node.addr),
        }
    }
}

impl From<ClientWriteError<NodeId, BasicNode>> for Error {
    fn from(e: ClientWriteError<NodeId, BasicNode>) -> Self {
        match e {
            ClientWriteError::ForwardToLeader(f) => f.into(),
            ClientWriteError::ChangeMembershipError(e) => Error::ChangeMembership(Box::new(e)),
        }
    }
}

impl From<CheckIsLeaderError<NodeId, BasicNode>> for Error {
    fn from(e: CheckIsLeaderError<NodeId, BasicNode>) -> Self {
        match e {
            CheckIsLeaderError::ForwardToLeader(f) => f.into(),
            CheckIsLeaderError::QuorumNotEnough(q) => Error::QuorumNotEnough(Box::new(q)),
        }
    }
}

impl From<InitializeError<NodeId, BasicNode>> for Error {
    fn from(e: InitializeError<NodeId, BasicNode>) -> Self {
        Error::Initialize(Box::new(e))
    }
}

impl<E: Into<Error>> From<openraft::error::RaftError<NodeId, E>> for Error {
    fn from(e: openraft::error::RaftError<NodeId, E>) -> Self {
        match e {
            openraft::error::RaftError::APIError(api) => api.into(),
            openraft::error::RaftError::Fatal(fatal) => fatal.into(),
        }
    }
}

impl From<Fatal<NodeId>> for Error {
    fn from(e: Fatal<NodeId>) -> Self {
        Error::Fatal(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 64,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn forward_to_leader_names_the_leader() {
        let e = Error::from(ForwardToLeader::<NodeId, BasicNode>::new(
            2,
            BasicNode::new("10.0.0.2:9093"),
        ));
        assert!(e.is_forward_to_leader());
        assert_eq!(
            e.to_string(),
            "not the Raft leader; the leader is node 2 at 10.0.0.2:9093"
        );
    }
}
