//! Test support: a small key-value state machine and a cluster of Raft nodes in this process,
//! talking real gRPC over 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tributary_raft::{
    BoxError, MAX_FRAME_SIZE, NodeId, RaftConfig, RaftNode, StateMachine, WriteOutcome,
};

/// A generous bound for anything a 3-node cluster does on a loaded 2-core machine (elections
/// take 1.5-3 s with the default timeouts).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A command of [`Kv`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Set { key: String, value: String },
    /// Sets `key` to `value` unless it exists (fails with an error response if it does).
    Create { key: String, value: String },
}

/// What [`Kv`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// The key's value before the command.
    pub previous: Option<String>,
    /// Why the command was refused, if it was.
    pub error: Option<String>,
}

/// A key-value map; its snapshot carries a format version.
#[derive(Debug, Default)]
pub struct Kv {
    pub data: BTreeMap<String, String>,
    /// The log index of the last applied command.
    pub last_index: u64,
    /// How many times a snapshot was restored into this instance (not part of the state).
    pub restores: u64,
}

#[derive(Serialize, Deserialize)]
struct KvSnapshot {
    version: u32,
    data: BTreeMap<String, String>,
    last_index: u64,
}

const KV_SNAPSHOT_VERSION: u32 = 1;

impl StateMachine for Kv {
    type Command = KvCommand;
    type Response = KvResponse;

    fn apply(&mut self, log_index: u64, command: &KvCommand) -> KvResponse {
        assert!(log_index > self.last_index, "log indexes must increase");
        self.last_index = log_index;
        match command {
            KvCommand::Set { key, value } => KvResponse {
                previous: self.data.insert(key.clone(), value.clone()),
                error: None,
            },
            KvCommand::Create { key, value } => match self.data.get(key) {
                Some(existing) => KvResponse {
                    previous: Some(existing.clone()),
                    error: Some(format!("{key} exists")),
                },
                None => {
                    self.data.insert(key.clone(), value.clone());
                    KvResponse::default()
                }
            },
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&KvSnapshot {
            version: KV_SNAPSHOT_VERSION,
            data: self.data.clone(),
            last_index: self.last_index,
        })
        .expect("a map of strings serializes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), BoxError> {
        let snapshot: KvSnapshot = serde_json::from_slice(snapshot)?;
        if snapshot.version != KV_SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {}", snapshot.version).into());
        }
        self.data = snapshot.data;
        self.last_index = snapshot.last_index;
        self.restores += 1;
        Ok(())
    }
}

/// A `Set` of `key` to `value`.
pub fn set(key: impl Into<String>, value: impl Into<String>) -> KvCommand {
    KvCommand::Set {
        key: key.into(),
        value: value.into(),
    }
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running node: the Raft node and the gRPC server peers reach it through.
struct Running {
    node: RaftNode<Kv>,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// One member of a [`Cluster`]: its address and data directory survive restarts.
struct Member {
    addr: SocketAddr,
    dir: PathBuf,
    running: Option<Running>,
}

/// Raft nodes in this process, each with its own gRPC server on 127.0.0.1 and its own data
/// directory.
pub struct Cluster {
    root: TempDir,
    config: RaftConfig,
    members: BTreeMap<NodeId, Member>,
}

impl Cluster {
    /// Starts nodes `1..=n` (not initialized).
    pub async fn start(n: u64, config: RaftConfig) -> Cluster {
        let mut cluster = Cluster {
            root: tempfile::tempdir().expect("temp dir"),
            config,
            members: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.add(id).await;
        }
        cluster
    }

    /// Starts a new node `id` on a fresh port and directory (not a member of the cluster until a
    /// leader adds it).
    pub async fn add(&mut self, id: NodeId) {
        assert!(!self.members.contains_key(&id), "node {id} exists");
        let dir = self.root.path().join(format!("node-{id}"));
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = incoming.local_addr().expect("local addr");
        let running = self.run(id, &dir, incoming).await;
        self.members.insert(
            id,
            Member {
                addr,
                dir,
                running: Some(running),
            },
        );
    }

    async fn run(&self, id: NodeId, dir: &std::path::Path, incoming: TcpIncoming) -> Running {
        let node = RaftNode::start(id, dir, self.config.clone(), Kv::default())
            .await
            .unwrap_or_else(|e| panic!("node {id} failed to start: {e}"));
        let (stop_server, stop) = oneshot::channel::<()>();
        let service = node.grpc_service();
        let server = tokio::spawn(
            Server::builder()
                .max_frame_size(Some(MAX_FRAME_SIZE))
                .serve_with_incoming_shutdown(
                    service,
                    incoming.with_nodelay(Some(true)),
                    async move {
                        let _ = stop.await;
                    },
                ),
        );
        Running {
            node,
            stop_server,
            server,
        }
    }

    /// Every node id, running or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }

    /// The ids of the running nodes.
    pub fn running_ids(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s Raft address.
    pub fn addr(&self, id: NodeId) -> String {
        self.members[&id].addr.to_string()
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &RaftNode<Kv> {
        &self.members[&id]
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is stopped"))
            .node
    }

    /// Bootstraps the cluster with every node as a voter, from node `on`.
    pub async fn initialize(&self, on: NodeId) {
        let members = self
            .ids()
            .into_iter()
            .map(|id| (id, self.addr(id)))
            .collect();
        self.node(on).initialize(members).await.expect("initialize");
    }

    /// Waits until every running node in `among` knows the same leader, itself in `among` and
    /// a leader by its own account; returns it.
    pub async fn leader(&self, among: &[NodeId]) -> NodeId {
        eventually(
            "one leader known to every running node",
            TIMEOUT,
            move || async move {
                let leaders: Vec<Option<NodeId>> =
                    among.iter().map(|id| self.node(*id).leader()).collect();
                let leader = leaders[0]?;
                let agreed = leaders.iter().all(|l| *l == Some(leader));
                (agreed && among.contains(&leader) && self.node(leader).leader_term().is_some())
                    .then_some(leader)
            },
        )
        .await
    }

    /// Writes `command` on the leader of the running nodes, retrying (for at most [`TIMEOUT`])
    /// when leadership moves under the write; returns the leader and the outcome.
    pub async fn write(&self, command: KvCommand) -> (NodeId, WriteOutcome<KvResponse>) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leader = self.leader(&self.running_ids()).await;
            match self.node(leader).client_write(command.clone()).await {
                Ok(written) => return (leader, written),
                Err(e) if e.is_forward_to_leader() && Instant::now() < deadline => {}
                Err(e) => panic!("write {command:?} on node {leader}: {e}"),
            }
        }
    }

    /// Stops node `id`: its server first (peers see it down), then its Raft node.
    pub async fn stop(&mut self, id: NodeId) {
        let running = self
            .members
            .get_mut(&id)
            .and_then(|m| m.running.take())
            .unwrap_or_else(|| panic!("node {id} is not running"));
        let _ = running.stop_server.send(());
        let mut server = running.server;
        if tokio::time::timeout(TIMEOUT, &mut server).await.is_err() {
            server.abort();
        }
        running.node.shutdown().await.expect("shutdown");
    }

    /// Restarts the stopped node `id` from its data directory, on its old address.
    pub async fn restart(&mut self, id: NodeId) {
        let member = &self.members[&id];
        assert!(member.running.is_none(), "node {id} is running");
        let incoming = TcpIncoming::bind(member.addr).expect("rebind the node's port");
        let dir = member.dir.clone();
        let running = self.run(id, &dir, incoming).await;
        self.members.get_mut(&id).expect("member").running = Some(running);
    }

    /// Stops every running node.
    pub async fn stop_all(&mut self) {
        for id in self.running_ids() {
            self.stop(id).await;
        }
    }
}
