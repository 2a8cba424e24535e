//! The Raft transport over tonic gRPC: the client side ([`GrpcNetworkFactory`], openraft's
//! `RaftNetworkFactory`) and the server side ([`RaftServiceImpl`], the `tributary.raft.v1.Raft`
//! service a coordinator mounts on its gRPC server).
//!
//! openraft's requests and responses travel JSON-encoded in the `bytes` fields of
//! `proto/tributary/raft/v1/raft.proto`; snapshot chunks travel as raw bytes. A remote Raft's
//! error comes back as a reply (openraft's `RemoteError`); a transport failure is a gRPC status,
//! mapped to openraft's `Unreachable` (peer down or not accepting connections: openraft backs
//! off before retrying) or `NetworkError` (anything else: retried at once).
//!
//! The transport is openraft's `RaftNetworkFactory` trait, so a simulated network can replace
//! it ([`RaftNode::start_with`](crate::RaftNode::start_with)).

// openraft's `RPCError` is large; these functions return it because `RaftNetwork` does.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RaftNetwork, RaftNetworkFactory, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tributary_proto::raft::v1 as pb;
use tributary_proto::raft::v1::raft_client::RaftClient;
use tributary_proto::raft::v1::raft_server::RaftServer;

use crate::StateMachine;
use crate::config::RaftConfig;
use crate::types::{BasicNode, NodeId, Raft, SnapshotMeta, TypeConfig};

/// How the gRPC channels to peers are set up.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// The largest message sent or received, in bytes.
    pub max_message_size: usize,
    /// The HTTP/2 frame size, in bytes.
    pub max_frame_size: u32,
}

impl From<&RaftConfig> for TransportOptions {
    fn from(config: &RaftConfig) -> Self {
        TransportOptions {
            connect_timeout: config.connect_timeout,
            max_message_size: config.max_message_size,
            max_frame_size: config.max_frame_size,
        }
    }
}

/// Creates the clients openraft uses to reach its peers, over gRPC.
///
/// Channels connect lazily (a peer that is down at start is no error) and are shared per
/// address, so openraft's frequent `new_client` calls (every election, every leadership check)
/// reuse one HTTP/2 connection. HTTP/2 keepalive notices a peer that vanished without closing
/// its connection, so the channel reconnects instead of timing out forever.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    options: TransportOptions,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl fmt::Debug for GrpcNetworkFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcNetworkFactory")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GrpcNetworkFactory {
    /// A factory with `options`.
    pub fn new(options: TransportOptions) -> Self {
        GrpcNetworkFactory {
            options,
            channels: Arc::default(),
        }
    }

    /// The client of the node at `addr` (`host:port`, or a URI with a scheme).
    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let uri = if addr.contains("://") {
                    addr.to_owned()
                } else {
                    format!("http://{addr}")
                };
                let channel = Endpoint::from_shared(uri)?
                    .connect_timeout(self.options.connect_timeout)
                    .max_frame_size(self.options.max_frame_size)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(self.options.max_message_size)
            .max_encoding_message_size(self.options.max_message_size))
    }
}

impl<S: StateMachine> RaftNetworkFactory<TypeConfig<S>> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork {
            target,
            node: node.clone(),
            client: self.client(&node.addr).map_err(|e| {
                tracing::warn!(target, addr = %node.addr, error = %e, "bad raft peer address");
                Unreachable::new(&e)
            }),
        }
    }
}

/// A connection to one peer, used by openraft to send it Raft RPCs.
pub struct GrpcNetwork {
    target: NodeId,
    node: BasicNode,
    /// The client, or why there is none (an address that is not a valid URI).
    client: Result<RaftClient<Channel>, Unreachable>,
}

impl fmt::Debug for GrpcNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcNetwork")
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .finish_non_exhaustive()
    }
}

/// The header of a snapshot chunk: openraft's `InstallSnapshotRequest` less its data.
#[derive(Serialize, Deserialize)]
struct SnapshotChunkHeader {
    vote: Vote<NodeId>,
    meta: SnapshotMeta,
    offset: u64,
    done: bool,
}

fn network_error<E: std::error::Error>(
    e: &(impl std::error::Error + 'static),
) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(e))
}

/// Maps a gRPC failure: the peer could not be reached (`Unavailable`: refused, reset, DNS, connect
/// timeout) or something else went wrong on the way.
fn status_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        network_error(&status)
    }
}

impl GrpcNetwork {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<Channel>, RPCError<NodeId, BasicNode, E>> {
        self.client.clone().map_err(RPCError::Unreachable)
    }

    /// Decodes a reply: openraft's response, or the remote Raft's error.
    fn decode<T, E>(&self, reply: pb::RaftReply) -> Result<T, RPCError<NodeId, BasicNode, E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match reply.result {
            Some(pb::raft_reply::Result::OkJson(json)) => {
                serde_json::from_slice(&json).map_err(|e| network_error(&e))
            }
            Some(pb::raft_reply::Result::ErrorJson(json)) => {
                let remote: E = serde_json::from_slice(&json).map_err(|e| network_error(&e))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    remote,
                )))
            }
            None => Err(RPCError::Network(NetworkError::new(&AnyError::error(
                "raft reply without a result",
            )))),
        }
    }
}

fn json_request(value: &impl Serialize) -> Result<pb::RaftRequest, serde_json::Error> {
    Ok(pb::RaftRequest {
        json: serde_json::to_vec(value)?.into(),
    })
}

impl<S: StateMachine> RaftNetwork<TypeConfig<S>> for GrpcNetwork {
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig<S>>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let request = json_request(&rpc).map_err(|e| network_error(&e))?;
        let reply = self
            .client()?
            .append_entries(request)
            .await
            .map_err(status_error)?;
        self.decode(reply.into_inner())
    }

    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig<S>>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let header = SnapshotChunkHeader {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
        };
        let request = pb::InstallSnapshotRequest {
            header_json: serde_json::to_vec(&header)
                .map_err(|e| network_error(&e))?
                .into(),
            data: rpc.data.into(),
        };
        let reply = self
            .client()?
            .install_snapshot(request)
            .await
            .map_err(status_error)?;
        self.decode(reply.into_inner())
    }

    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let request = json_request(&rpc).map_err(|e| network_error(&e))?;
        let reply = self.client()?.vote(request).await.map_err(status_error)?;
        self.decode(reply.into_inner())
    }
}

/// The server side of the Raft transport: hands the RPCs of peers to this node's Raft.
///
/// Mount [`RaftServiceImpl::into_server`] (or [`RaftNode::grpc_service`](crate::RaftNode::grpc_service))
/// on the coordinator's tonic server, built with `max_frame_size(Some(MAX_FRAME_SIZE))`
/// ([`MAX_FRAME_SIZE`](crate::MAX_FRAME_SIZE)).
pub struct RaftServiceImpl<S: StateMachine> {
    raft: Raft<S>,
    node_id: NodeId,
    max_message_size: usize,
}

impl<S: StateMachine> fmt::Debug for RaftServiceImpl<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftServiceImpl")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> RaftServiceImpl<S> {
    /// The service of `raft`, accepting messages of up to `max_message_size` bytes.
    pub fn new(raft: Raft<S>, max_message_size: usize) -> Self {
        let node_id = raft.metrics().borrow().id;
        RaftServiceImpl {
            raft,
            node_id,
            max_message_size,
        }
    }

    /// The tonic service to mount, with the message size limits raised.
    pub fn into_server(self) -> RaftServer<Self> {
        let max = self.max_message_size;
        RaftServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

fn decode_request<T: DeserializeOwned>(json: &[u8]) -> Result<T, tonic::Status> {
    serde_json::from_slice(json)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft request: {e}")))
}

fn reply<T: Serialize, E: Serialize>(
    result: Result<T, E>,
) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
    let encoded = match &result {
        Ok(response) => {
            serde_json::to_vec(response).map(|json| pb::raft_reply::Result::OkJson(json.into()))
        }
        Err(error) => {
            serde_json::to_vec(error).map(|json| pb::raft_reply::Result::ErrorJson(json.into()))
        }
    };
    let result =
        encoded.map_err(|e| tonic::Status::internal(format!("unencodable raft reply: {e}")))?;
    Ok(tonic::Response::new(pb::RaftReply {
        result: Some(result),
    }))
}

#[tonic::async_trait]
impl<S: StateMachine> pb::raft_server::Raft for RaftServiceImpl<S> {
    #[tracing::instrument(level = "trace", skip_all, fields(node_id = self.node_id))]
    async fn append_entries(
        &self,
        request: tonic::Request<pb::RaftRequest>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig<S>> = decode_request(&request.get_ref().json)?;
        reply(self.raft.append_entries(rpc).await)
    }

    #[tracing::instrument(level = "trace", skip_all, fields(node_id = self.node_id))]
    async fn vote(
        &self,
        request: tonic::Request<pb::RaftRequest>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = decode_request(&request.get_ref().json)?;
        reply(self.raft.vote(rpc).await)
    }

    #[tracing::instrument(level = "trace", skip_all, fields(node_id = self.node_id))]
    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::InstallSnapshotRequest>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        let request = request.into_inner();
        let header: SnapshotChunkHeader = decode_request(&request.header_json)?;
        let rpc = InstallSnapshotRequest {
            vote: header.vote,
            meta: header.meta,
            offset: header.offset,
            data: request.data.to_vec(),
            done: header.done,
        };
        reply(self.raft.install_snapshot(rpc).await)
    }
}
