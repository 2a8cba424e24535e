//! The simulated network: openraft's `RaftNetworkFactory` and `RaftNetwork` over an in-memory
//! [`Router`] that hands each RPC straight to the target's `openraft::Raft`, subject to the
//! router's faults (cut links, lost requests and replies, delays, crashed nodes).

// openraft's `RPCError` is large; these functions return it because `RaftNetwork` does.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tributary_raft::openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use tributary_raft::openraft::network::RPCOption;
use tributary_raft::openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tributary_raft::openraft::{AnyError, RaftNetwork, RaftNetworkFactory};
use tributary_raft::{BasicNode, NodeId, Raft, TypeConfig};

use super::machine::History;
use super::rng::SplitMix64;

type Config = TypeConfig<History>;
type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// How lossy and slow the network is (links that are not cut).
#[derive(Debug, Clone, Copy)]
pub struct Quality {
    /// Per mille of requests lost on the way (the target never sees them).
    pub lose_request: u64,
    /// Per mille of replies lost on the way back (the target did act on the request).
    pub lose_reply: u64,
    /// The most a message (request or reply) is delayed, in milliseconds.
    pub max_delay_ms: u64,
    /// Per mille of messages delayed by up to `slow_delay_ms` instead.
    pub slow: u64,
    /// The delay of a slow message, at most, in milliseconds.
    pub slow_delay_ms: u64,
}

impl Quality {
    /// A perfect network.
    pub const PERFECT: Quality = Quality {
        lose_request: 0,
        lose_reply: 0,
        max_delay_ms: 0,
        slow: 0,
        slow_delay_ms: 0,
    };
}

/// Counters of what the network did.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    pub delivered: u64,
    pub lost: u64,
    pub unreachable: u64,
}

struct RouterState {
    nodes: BTreeMap<NodeId, Raft<History>>,
    /// Directed links `(from, to)` that carry nothing.
    cut: BTreeSet<(NodeId, NodeId)>,
    quality: Quality,
    rng: SplitMix64,
    stats: NetStats,
}

/// The simulated network between the nodes of one simulation.
pub struct Router {
    state: Mutex<RouterState>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

/// What happens to one request.
enum Fate {
    /// The target is down or the link is cut: the sender learns it at once.
    Unreachable,
    /// The request is lost: the sender waits for its timeout.
    Lost,
    /// The request arrives after `there`; the reply (lost if `lose_reply`) arrives `back` later.
    Delivered {
        there: Duration,
        back: Duration,
        lose_reply: bool,
    },
}

impl Router {
    /// A network with no nodes, no cuts, a perfect link quality, and random choices from `rng`.
    pub fn new(rng: SplitMix64) -> Arc<Self> {
        Arc::new(Router {
            state: Mutex::new(RouterState {
                nodes: BTreeMap::new(),
                cut: BTreeSet::new(),
                quality: Quality::PERFECT,
                rng,
                stats: NetStats::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `id` is up and receives through `raft`.
    pub fn connect(&self, id: NodeId, raft: Raft<History>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Node `id` is down: nothing reaches it any more.
    pub fn disconnect(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Sets the quality of the links that are not cut.
    pub fn set_quality(&self, quality: Quality) {
        self.lock().quality = quality;
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    fn delay(rng: &mut SplitMix64, q: &Quality) -> Duration {
        if q.slow > 0 && rng.chance(q.slow) {
            rng.millis(0, q.slow_delay_ms)
        } else {
            rng.millis(0, q.max_delay_ms)
        }
    }

    fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let mut state = self.lock();
        let state = &mut *state;
        if !state.nodes.contains_key(&to) || state.cut.contains(&(from, to)) {
            state.stats.unreachable += 1;
            return Fate::Unreachable;
        }
        let q = state.quality;
        if q.lose_request > 0 && state.rng.chance(q.lose_request) {
            state.stats.lost += 1;
            return Fate::Lost;
        }
        let there = Self::delay(&mut state.rng, &q);
        let back = Self::delay(&mut state.rng, &q);
        let lose_reply = q.lose_reply > 0 && state.rng.chance(q.lose_reply);
        Fate::Delivered {
            there,
            back,
            lose_reply,
        }
    }

    /// The target's Raft if it is up and `from → to` is not cut (checked again on arrival, so a
    /// cut or crash while a message is in flight loses it).
    fn arrive(&self, from: NodeId, to: NodeId) -> Option<Raft<History>> {
        let mut state = self.lock();
        if state.cut.contains(&(from, to)) {
            state.stats.lost += 1;
            return None;
        }
        let raft = state.nodes.get(&to).cloned();
        if raft.is_none() {
            state.stats.lost += 1;
        }
        raft
    }

    /// Carries one RPC from `from` to `to` and its reply back, applying the faults.
    async fn send<T, E, F, Fut>(
        &self,
        from: NodeId,
        to: NodeId,
        option: &RPCOption,
        call: F,
    ) -> RpcResult<T, E>
    where
        E: std::error::Error,
        F: FnOnce(Raft<History>) -> Fut,
        Fut: Future<Output = Result<T, RaftError<NodeId, E>>>,
    {
        // A lost message is noticed when the sender gives up: at its RPC timeout (openraft drops
        // the call at `hard_ttl`; this bound only keeps every wait finite).
        let timeout = option.hard_ttl().min(Duration::from_secs(2));
        let lost = |what: &str| RPCError::Network(NetworkError::new(&AnyError::error(what)));
        match self.fate(from, to) {
            Fate::Unreachable => Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                format!("node {to} is down or cut off from node {from}"),
            )))),
            Fate::Lost => {
                tokio::time::sleep(timeout).await;
                Err(lost("request lost"))
            }
            Fate::Delivered {
                there,
                back,
                lose_reply,
            } => {
                tokio::time::sleep(there).await;
                let Some(raft) = self.arrive(from, to) else {
                    tokio::time::sleep(timeout.saturating_sub(there)).await;
                    return Err(lost("request lost in flight"));
                };
                let result = call(raft).await;
                tokio::time::sleep(back).await;
                if lose_reply || self.arrive(to, from).is_none() {
                    tokio::time::sleep(timeout.saturating_sub(there + back)).await;
                    return Err(lost("reply lost"));
                }
                self.lock().stats.delivered += 1;
                match result {
                    Ok(reply) => Ok(reply),
                    // The target stopped (crashed) while handling the request.
                    Err(RaftError::Fatal(fatal)) => {
                        Err(RPCError::Unreachable(Unreachable::new(&fatal)))
                    }
                    Err(e) => Err(RPCError::RemoteError(RemoteError::new(to, e))),
                }
            }
        }
    }
}

/// The network factory of node `from`.
#[derive(Debug, Clone)]
pub struct SimNetworkFactory {
    pub from: NodeId,
    pub router: Arc<Router>,
}

impl RaftNetworkFactory<Config> for SimNetworkFactory {
    type Network = SimConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> SimConnection {
        SimConnection {
            from: self.from,
            to: target,
            router: Arc::clone(&self.router),
        }
    }
}

/// Node `from`'s connection to node `to`.
#[derive(Debug)]
pub struct SimConnection {
    from: NodeId,
    to: NodeId,
    router: Arc<Router>,
}

impl RaftNetwork<Config> for SimConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Config>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        self.router
            .send(self.from, self.to, &option, |raft| async move {
                raft.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Config>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.router
            .send(self.from, self.to, &option, |raft| async move {
                raft.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        self.router
            .send(self.from, self.to, &option, |raft| async move {
                raft.vote(rpc).await
            })
            .await
    }
}
