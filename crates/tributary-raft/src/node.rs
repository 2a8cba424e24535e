//! [`RaftNode`]: one member of a Raft cluster replicating a [`StateMachine`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::RaftNetworkFactory;
use openraft::ServerState;
use openraft::metrics::WaitError;
use tokio::sync::watch;
use tributary_proto::raft::v1::raft_server::RaftServer;

use crate::StateMachine;
use crate::config::RaftConfig;
use crate::error::Error;
use crate::network::{GrpcNetworkFactory, RaftServiceImpl, TransportOptions};
use crate::storage::{LogStorage, Shared, StateMachineStorage};
use crate::store::{MetaKey, RaftStore, SledStore};
use crate::types::{BasicNode, NodeId, Raft, RaftMetrics, TypeConfig};

/// The name of the directory, under a node's data directory, that holds its Raft store.
pub const RAFT_DIR: &str = "raft";

/// How long [`RaftNode::shutdown`] waits for openraft's tasks to let go of the store.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The result of a committed and applied write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome<R> {
    /// The Raft log index of the command (the "metadata offset" it produced).
    pub log_index: u64,
    /// The term of the leader that committed it.
    pub term: u64,
    /// What [`StateMachine::apply`] returned on the leader.
    pub response: R,
}

/// Who leads the cluster, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// This node's current term (the leader's term when a leader is known).
    pub term: u64,
    /// The leader's id, if known.
    pub leader_id: Option<NodeId>,
    /// The leader's Raft address, if known.
    pub leader_addr: Option<String>,
    /// Whether this node is the leader.
    pub is_self: bool,
}

/// One member of a Raft cluster replicating the state machine `S`.
///
/// Built by [`start`](Self::start) (sled store in the data directory, gRPC transport) or
/// [`start_with`](Self::start_with) (any store and transport). The coordinator mounts
/// [`grpc_service`](Self::grpc_service) on its gRPC server so that peers reach this node at the
/// address given in the membership. Stop it with [`shutdown`](Self::shutdown).
pub struct RaftNode<S: StateMachine> {
    id: NodeId,
    raft: Raft<S>,
    shared: Arc<Shared<S>>,
    /// The store, until [`RaftNode::shutdown`] releases it.
    store: Mutex<Option<Arc<dyn RaftStore>>>,
    max_message_size: usize,
}

impl<S: StateMachine> fmt::Debug for RaftNode<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Starts node `id` with its Raft store in `data_dir/raft` (sled, created if absent) and the
    /// gRPC transport.
    ///
    /// `state_machine` must be in its initial (empty) state: the node restores it from the latest
    /// snapshot in the store, and openraft then re-applies the committed entries after it. A new
    /// node is not part of any cluster until [`initialize`](Self::initialize) (on one node of a new
    /// cluster) or a leader's [`add_learner`](Self::add_learner) makes it one.
    pub async fn start(
        id: NodeId,
        data_dir: impl AsRef<Path>,
        config: RaftConfig,
        state_machine: S,
    ) -> Result<Self, Error> {
        let dir = data_dir.as_ref().join(RAFT_DIR);
        let cache = config.sled_cache_capacity;
        // Opening sled reads and recovers its files: keep it off the runtime's worker threads.
        let store = tokio::task::spawn_blocking(move || SledStore::open(dir, cache)).await??;
        let network = GrpcNetworkFactory::new(TransportOptions::from(&config));
        Self::start_with(id, config, Arc::new(store), network, state_machine).await
    }

    /// Starts node `id` on any [`RaftStore`] and any openraft transport (a simulated network in
    /// tests, for instance). See [`start`](Self::start).
    #[tracing::instrument(level = "info", skip_all, fields(node_id = id))]
    pub async fn start_with<N>(
        id: NodeId,
        config: RaftConfig,
        store: Arc<dyn RaftStore>,
        network: N,
        state_machine: S,
    ) -> Result<Self, Error>
    where
        N: RaftNetworkFactory<TypeConfig<S>>,
    {
        let openraft_config = Arc::new(config.to_openraft()?);
        claim_store(&*store, id)?;
        let shared = Arc::new(Shared::load(state_machine, &*store)?);
        let raft = openraft::Raft::new(
            id,
            openraft_config,
            network,
            LogStorage::<S>::sharing(Arc::clone(&store), &shared),
            StateMachineStorage::new(Arc::clone(&shared), Arc::clone(&store)),
        )
        .await
        .map_err(Error::from)?;
        let node = RaftNode {
            id,
            raft,
            shared,
            store: Mutex::new(Some(store)),
            max_message_size: config.max_message_size,
        };
        let metrics = node.metrics().borrow().clone();
        tracing::info!(
            term = metrics.current_term,
            last_log_index = ?metrics.last_log_index,
            last_applied = ?metrics.last_applied,
            "raft node started"
        );
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft instance, for anything this type does not wrap.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The gRPC service that receives this node's Raft messages, to mount on the coordinator's
    /// server (built with `max_frame_size(Some(MAX_FRAME_SIZE))`).
    pub fn grpc_service(&self) -> RaftServer<RaftServiceImpl<S>> {
        RaftServiceImpl::new(self.raft.clone(), self.max_message_size).into_server()
    }

    /// Bootstraps a new cluster whose voters are `members` (node id → Raft address `host:port`).
    ///
    /// Call it on one node of the new cluster, or on every node with the same `members` (each
    /// writes the same first entry; a node that already holds cluster state, because it was
    /// initialized or heard from a leader, refuses with [`Error::is_already_initialized`], which
    /// the caller may ignore). This node must be one of `members`.
    #[tracing::instrument(level = "info", skip(self), fields(node_id = self.id))]
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), Error> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        self.raft.initialize(nodes).await?;
        Ok(())
    }

    /// Proposes `command`; returns once it is committed and applied on this node (the leader).
    ///
    /// Fails with [`Error::ForwardToLeader`] (naming the leader, if known) when this node is not
    /// the leader, and with [`Error::Encode`] when the command does not survive a JSON round
    /// trip (entries travel and are stored as JSON: a command that could not be decoded would
    /// stall replication or stop the node).
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id, term = self.term()))]
    pub async fn client_write(
        &self,
        command: S::Command,
    ) -> Result<WriteOutcome<S::Response>, Error> {
        serde_json::to_vec(&command)
            .and_then(|json| serde_json::from_slice::<S::Command>(&json))
            .map_err(|source| Error::Encode { source })?;
        let written = self.raft.client_write(command).await?;
        Ok(WriteOutcome {
            log_index: written.log_id.index,
            term: written.log_id.leader_id.term,
            response: written.data,
        })
    }

    /// A linearizable read barrier: confirms with a quorum that this node is still the leader and
    /// waits until its state machine has applied everything committed before the call. A read
    /// with [`read`](Self::read) after it sees every write acknowledged before it. Returns the
    /// applied index the read is at least at.
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id, term = self.term()))]
    pub async fn ensure_linearizable(&self) -> Result<u64, Error> {
        let read_log_id = self.raft.ensure_linearizable().await?;
        Ok(read_log_id
            .map_or(0, |id| id.index)
            .max(self.applied_index()))
    }

    /// Reads the state machine (this node's applied state: possibly stale on a follower; call
    /// [`ensure_linearizable`](Self::ensure_linearizable) first on the leader for a linearizable
    /// read). Applying waits while `f` runs: keep it short.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.read().state)
    }

    /// Like [`read`](Self::read), and also passes the index of the last applied entry (the
    /// "metadata offset" of the state `f` sees).
    pub fn read_applied<R>(&self, f: impl FnOnce(&S, u64) -> R) -> R {
        let applied = self.shared.read();
        f(
            &applied.state,
            applied.last_applied.map_or(0, |id| id.index),
        )
    }

    /// The index of the last entry applied to the state machine (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.shared.applied_index()
    }

    /// A watch of the last applied index: changes after each batch of entries is applied (and
    /// when a snapshot is installed).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// openraft's metrics of this node (role, term, leader, log and apply progress, membership),
    /// as a watch.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.raft.metrics()
    }

    /// This node's current term. On the leader, the term of its leadership (the controller
    /// epoch).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The term, the leader and its address, from one consistent view of the metrics.
    pub fn leader_info(&self) -> LeaderInfo {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader_addr = metrics.current_leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|node| node.addr.clone())
        });
        LeaderInfo {
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_addr,
            is_self: metrics.state == ServerState::Leader,
        }
    }

    /// This node's leadership term if it is the leader now (its local view: use
    /// [`ensure_linearizable`](Self::ensure_linearizable) to confirm with a quorum).
    pub fn leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader).then_some(metrics.current_term)
    }

    /// Waits until this node knows a leader; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, Error> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a known leader")
            .await
            .map_err(|e| wait_error(e, timeout, "a known leader"))?;
        Ok(metrics.current_leader.unwrap_or_default())
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), Error> {
        let mut applied = self.shared.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|&applied| applied >= index))
            .await
            .map_err(|_| Error::Timeout {
                timeout,
                what: format!("entry {index} to be applied on node {}", self.id),
            })?
            .map_err(|_| Error::from(openraft::error::Fatal::Stopped))?;
        Ok(())
    }

    /// Adds node `id` at `addr` as a learner (it receives the log but does not vote). With
    /// `blocking`, waits until it has caught up with the leader. Call on the leader. Returns the
    /// log index of the membership change.
    #[tracing::instrument(level = "info", skip(self), fields(node_id = self.id, term = self.term()))]
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
        blocking: bool,
    ) -> Result<u64, Error> {
        let written = self
            .raft
            .add_learner(id, BasicNode { addr }, blocking)
            .await?;
        Ok(written.log_id.index)
    }

    /// Changes the voters to `voters` (joint consensus; the new voters must be learners
    /// already). With `retain`, removed voters stay as learners. Call on the leader. Returns the
    /// log index of the final membership entry.
    #[tracing::instrument(level = "info", skip(self), fields(node_id = self.id, term = self.term()))]
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain: bool,
    ) -> Result<u64, Error> {
        let written = self.raft.change_membership(voters, retain).await?;
        Ok(written.log_id.index)
    }

    /// Asks openraft to build a snapshot now (it purges the log behind it afterwards, keeping
    /// [`RaftConfig::max_in_snapshot_log_to_keep`] entries).
    pub async fn trigger_snapshot(&self) -> Result<(), Error> {
        self.raft.trigger().snapshot().await.map_err(Error::from)
    }

    /// Stops the node: openraft's tasks end, and the store is flushed and released (the data
    /// directory can be opened again, in this process or another, as soon as this returns).
    /// Reads of the state machine keep working; everything else fails with [`Error::Fatal`].
    /// Calling it again does nothing.
    #[tracing::instrument(level = "info", skip(self), fields(node_id = self.id))]
    pub async fn shutdown(&self) -> Result<(), Error> {
        let Some(store) = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core ended abnormally");
        }
        let flushed = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.flush()).await
        };
        // openraft's replication and snapshot tasks hold the store until they notice the
        // shutdown (usually at once); the directory stays locked until the last of them lets go.
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(10);
        while Arc::strong_count(&store) > 1 && waited < RELEASE_TIMEOUT {
            tokio::time::sleep(step).await;
            waited += step;
        }
        if Arc::strong_count(&store) > 1 {
            tracing::warn!(
                holders = Arc::strong_count(&store) - 1,
                "openraft tasks still hold the store after shutdown"
            );
        }
        drop(store);
        flushed??;
        tracing::info!("raft node stopped");
        Ok(())
    }
}

/// Records `id` as the store's owner, or checks that it is.
fn claim_store(store: &dyn RaftStore, id: NodeId) -> Result<(), Error> {
    match store.get_meta(MetaKey::NodeId)? {
        Some(bytes) => {
            let found: NodeId = serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                what: MetaKey::NodeId.name(),
                source,
            })?;
            if found != id {
                return Err(Error::WrongNode {
                    expected: id,
                    found,
                });
            }
            Ok(())
        }
        None => {
            let bytes = serde_json::to_vec(&id).map_err(|source| Error::Decode {
                what: MetaKey::NodeId.name(),
                source,
            })?;
            store.put_meta(&[(MetaKey::NodeId, &bytes)])?;
            store.flush()?;
            Ok(())
        }
    }
}

fn wait_error(e: WaitError, timeout: Duration, what: &str) -> Error {
    match e {
        WaitError::Timeout(..) => Error::Timeout {
            timeout,
            what: what.to_owned(),
        },
        WaitError::ShuttingDown => openraft::error::Fatal::Stopped.into(),
    }
}
