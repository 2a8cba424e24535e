//! The application's deterministic state machine, the one thing the Raft layer does not know.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A boxed error from application code ([`StateMachine::restore`]); `anyhow::Error` and any
/// `std::error::Error + Send + Sync` convert into it with `?` or `.into()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The application state that Raft replicates: every node applies the same committed commands in
/// the same order and must end in the same state.
///
/// The Raft layer keeps the state machine in memory (behind a lock, see
/// [`RaftNode::read`](crate::RaftNode::read)) and makes it durable through snapshots: on restart
/// a node restores the latest snapshot with [`restore`](Self::restore) and then re-applies the
/// committed log entries after it. `apply` therefore must be a pure function of the current state,
/// the command and the log index: no clocks, no randomness, no I/O.
pub trait StateMachine: Send + Sync + 'static {
    /// The payload of one Raft log entry (a metadata change requested by a client).
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// What [`apply`](Self::apply) returns for one command. Openraft entries that carry no
    /// command (leader blanks, membership changes) produce `Response::default()`.
    type Response: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + Default + 'static;

    /// Applies one committed command at Raft log index `log_index`.
    ///
    /// Must be deterministic, and must validate the command against the current state itself:
    /// an invalid command (a topic that already exists, a stale epoch) is answered with an error
    /// *response* and leaves the state unchanged. It must not panic and cannot fail: the entry is
    /// already committed, every replica applies it. Log indexes increase strictly but have gaps
    /// (entries without a command are not passed here).
    fn apply(&mut self, log_index: u64, command: &Self::Command) -> Self::Response;

    /// Serializes the whole state. Include a format version in the bytes, so that a later
    /// release can still restore snapshots written by this one.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with the one serialized in `snapshot` (the output of
    /// [`snapshot`](Self::snapshot) on this or another node, possibly of an older release).
    ///
    /// On error the state may be partly replaced; the Raft node stops (a replica that cannot
    /// restore a snapshot cannot take part in the cluster).
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), BoxError>;
}
