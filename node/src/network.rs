//! Raft transport over gRPC: one reused channel per peer, per-call deadlines,
//! explicit message-size limits, and openraft's messages carried as JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use launcher_proto::launcher::launcher_client::LauncherClient;
use launcher_proto::raft::raft_client::RaftClient;
use launcher_proto::raft::{RaftPayload, RaftReply, SnapshotChunk};
use launcher_storage::{Node, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::InternalAuth;
use crate::faults::{FaultPlan, Link};

/// Largest gRPC message either side accepts. openraft's `max_payload_entries` and
/// snapshot chunk size are derived from it so replication never exceeds it.
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// A Raft client with the internal credential attached.
pub type RaftRpc = RaftClient<InterceptedService<Link, InternalAuth>>;
/// A launcher-service client with the internal credential attached.
pub type LauncherRpc = LauncherClient<InterceptedService<Link, InternalAuth>>;

/// Channels to other nodes, reused across calls (HTTP/2 multiplexes them).
#[derive(Clone)]
pub struct Peers {
    auth: InternalAuth,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    source: Option<std::net::IpAddr>,
    faults: Option<Arc<dyn FaultPlan>>,
}

impl Peers {
    /// A peer set that signs calls with `auth`.
    pub fn new(auth: InternalAuth) -> Self {
        Peers {
            auth,
            channels: Arc::default(),
            source: None,
            faults: None,
        }
    }

    /// Calls to other nodes pass through `plan` (tests: [`crate::faults`]).
    pub fn with_faults(mut self, plan: Option<Arc<dyn FaultPlan>>) -> Self {
        self.faults = plan;
        self
    }

    /// Connections to other nodes leave from `ip` (the node's own listen address, when it names
    /// one): other nodes, and firewalls between them, see the address the node is known by.
    pub fn with_source(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.source = ip.filter(|ip| !ip.is_unspecified());
        self
    }

    /// The address connections to other nodes leave from, when the node names one.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.source
    }

    /// The credential in use.
    pub fn auth(&self) -> &InternalAuth {
        &self.auth
    }

    fn channel(&self, addr: &str) -> Link {
        Link::new(self.shared_channel(addr), self.faults.clone(), self.source, addr)
    }

    fn shared_channel(&self, addr: &str) -> Channel {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return c.clone();
        }
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Endpoint::from_shared(uri)
            .unwrap_or_else(|_| Endpoint::from_static("http://invalid.invalid:1"))
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .local_address(self.source)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        ch
    }

    /// Raft-service client for `addr`.
    pub fn raft(&self, addr: &str) -> RaftRpc {
        RaftClient::with_interceptor(self.channel(addr), self.auth.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// Launcher-service client for `addr`.
    pub fn launcher(&self, addr: &str) -> LauncherRpc {
        LauncherClient::with_interceptor(self.channel(addr), self.auth.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }
}

/// Builds per-target Raft network clients.
#[derive(Clone)]
pub struct NetworkFactory {
    peers: Peers,
}

impl NetworkFactory {
    /// A factory sharing `peers`' channels.
    pub fn new(peers: Peers) -> Self {
        NetworkFactory { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        PeerNetwork {
            target,
            client: self.peers.raft(&node.addr),
        }
    }
}

/// The Raft transport to one peer.
pub struct PeerNetwork {
    target: NodeId,
    client: RaftRpc,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

fn transport_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, Node, E> {
    // A refused or failed connection: openraft backs off instead of hammering a dead peer.
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

fn decode_reply<R, E>(
    target: NodeId,
    reply: RaftReply,
) -> Result<R, RPCError<NodeId, Node, RaftError<NodeId, E>>>
where
    R: serde::de::DeserializeOwned,
    E: std::error::Error + serde::de::DeserializeOwned,
{
    if !reply.error.is_empty() {
        let err: RaftError<NodeId, E> =
            serde_json::from_slice(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        return Err(RPCError::RemoteError(RemoteError::new(target, err)));
    }
    serde_json::from_slice(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn with_deadline<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let payload = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .client
            .append_entries(with_deadline(RaftPayload { payload }, &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let enc = |e: serde_json::Error| RPCError::Network(NetworkError::new(&e));
        let chunk = SnapshotChunk {
            vote: serde_json::to_vec(&rpc.vote).map_err(enc)?,
            meta: serde_json::to_vec(&rpc.meta).map_err(enc)?,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let reply = self
            .client
            .install_snapshot(with_deadline(chunk, &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let payload = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .client
            .vote(with_deadline(RaftPayload { payload }, &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }
}
