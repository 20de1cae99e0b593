//! The Raft gRPC service: openraft RPCs, forwarded writes, read indexes, liveness
//! heartbeats and discovery. Every call but `Discover` must carry this cluster's id.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use futures::Stream;
use launcher_proto::raft::raft_server::Raft as RaftApi;
use launcher_proto::raft::{
    DiscoverReply, DiscoverRequest, ForwardedWrite, ForwardedWriteReply, NodeHeartbeat, NodeHeartbeatReply,
    RaftPayload, RaftReply, ReadIndexReply, ReadIndexRequest, SnapshotChunk, WatchLeaderNotice,
    WatchLeaderRequest,
};
use launcher_storage::NodeId;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::ServerState;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::InternalAuth;
use crate::error::NodeError;
use crate::state::NodeState;
use crate::writes::WriteRequest;

/// What the gRPC services can reach before and after Raft starts: discovery works from the
/// first moment; everything else answers Unavailable until the node is up.
pub struct NodeCell {
    pub auth: InternalAuth,
    pub advertise: String,
    pub bootstrap_expect: u64,
    pub node_id: Mutex<Option<NodeId>>,
    pub shared: OnceLock<Arc<NodeState>>,
    /// Turns true when the server begins to drain: open watches end so the drain is not held up.
    pub serving_stopped: watch::Receiver<bool>,
}

impl NodeCell {
    /// The running node, or Unavailable while it starts.
    pub fn shared(&self) -> Result<&Arc<NodeState>, Status> {
        self.shared
            .get()
            .ok_or_else(|| NodeError::unavailable("this node is still starting; retry shortly").into())
    }
}

/// The Raft service.
#[derive(Clone)]
pub struct RaftService {
    cell: Arc<NodeCell>,
}

impl RaftService {
    /// A service over `cell`.
    pub fn new(cell: Arc<NodeCell>) -> Self {
        RaftService { cell }
    }

    fn enter<T>(&self, req: &Request<T>) -> Result<&Arc<NodeState>, Status> {
        self.cell.auth.check(req, false)?;
        self.cell.shared()
    }
}

fn bad_payload(e: serde_json::Error) -> Status {
    Status::invalid_argument(format!("undecodable Raft payload: {e}"))
}

fn reply<T: serde::Serialize, E: serde::Serialize>(r: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let out = match r {
        Ok(v) => RaftReply {
            payload: serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?,
            error: vec![],
        },
        Err(e) => RaftReply {
            payload: vec![],
            error: serde_json::to_vec(&e).map_err(|e| Status::internal(e.to_string()))?,
        },
    };
    Ok(Response::new(out))
}

/// The stream of a leader watch.
pub type LeaderWatch = Pin<Box<dyn Stream<Item = Result<WatchLeaderNotice, Status>> + Send>>;

#[tonic::async_trait]
impl RaftApi for RaftService {
    type WatchLeaderStream = LeaderWatch;

    async fn watch_leader(&self, req: Request<WatchLeaderRequest>) -> Result<Response<LeaderWatch>, Status> {
        let shared = self.enter(&req)?.clone();
        let term = req.get_ref().term;
        let leads = move |m: &openraft::RaftMetrics<NodeId, launcher_storage::Node>| {
            m.state == ServerState::Leader && m.current_term == term
        };
        let metrics = shared.raft.metrics();
        if !leads(&metrics.borrow()) {
            return Err(Status::failed_precondition(format!(
                "node {} does not lead in term {term}",
                shared.id
            )));
        }
        let stopped = self.cell.serving_stopped.clone();
        let notice = WatchLeaderNotice {
            leader_id: shared.id,
            term,
        };
        // A notice now and then every heartbeat period, until this node stops leading in
        // `term` or begins to stop: the follower learns of a crash from the connection itself,
        // of a pause or a cut from the silence.
        let mut pulse = tokio::time::interval(crate::failover::pulse(&shared.config));
        pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = futures::stream::unfold(
            (metrics, stopped, pulse),
            move |(mut metrics, mut stopped, mut pulse)| async move {
                let leading = tokio::select! {
                    _ = pulse.tick() => true,
                    _ = metrics.wait_for(|m| !leads(m)) => false,
                    _ = stopped.wait_for(|s| *s) => false,
                };
                leading.then_some((Ok(notice), (metrics, stopped, pulse)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftReply>, Status> {
        let shared = self.enter(&req)?;
        let rpc: AppendEntriesRequest<launcher_storage::TypeConfig> =
            serde_json::from_slice(&req.get_ref().payload).map_err(bad_payload)?;
        reply(shared.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftReply>, Status> {
        let shared = self.enter(&req)?;
        let rpc: VoteRequest<NodeId> = serde_json::from_slice(&req.get_ref().payload).map_err(bad_payload)?;
        reply(shared.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<SnapshotChunk>) -> Result<Response<RaftReply>, Status> {
        let shared = self.enter(&req)?;
        let c = req.into_inner();
        let rpc = InstallSnapshotRequest {
            vote: serde_json::from_slice(&c.vote).map_err(bad_payload)?,
            meta: serde_json::from_slice(&c.meta).map_err(bad_payload)?,
            offset: c.offset,
            data: c.data,
            done: c.done,
        };
        reply(shared.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        req: Request<ForwardedWrite>,
    ) -> Result<Response<ForwardedWriteReply>, Status> {
        let shared = self.enter(&req)?;
        let write: WriteRequest = serde_json::from_slice(&req.get_ref().request)
            .map_err(|e| Status::invalid_argument(format!("undecodable forwarded write: {e}")))?;
        let (resp, index) = shared.serve_forwarded(write).await?;
        let response = serde_json::to_vec(&resp).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ForwardedWriteReply {
            response,
            log_index: index,
        }))
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        let shared = self.enter(&req)?;
        let read_index = shared.leader_read_index().await?;
        Ok(Response::new(ReadIndexReply { read_index }))
    }

    async fn heartbeat(&self, req: Request<NodeHeartbeat>) -> Result<Response<NodeHeartbeatReply>, Status> {
        let shared = self.enter(&req)?;
        let hb = req.into_inner();
        let member = shared.addr_of(hb.node_id).is_some();
        let removed = !member && {
            let id = hb.node_id;
            shared
                .table(move |sm| Ok(sm.nodes()?.iter().any(|n| n.id == id && n.removed)))
                .await
                .unwrap_or(false)
        };
        if member {
            shared.liveness.record_heartbeat(hb.node_id, hb.applied_index);
        }
        let (leader_id, term) = {
            let m = shared.raft.metrics();
            let m = m.borrow();
            (m.current_leader.unwrap_or(0), m.current_term)
        };
        Ok(Response::new(NodeHeartbeatReply {
            leader_id,
            term,
            removed,
        }))
    }

    async fn discover(&self, req: Request<DiscoverRequest>) -> Result<Response<DiscoverReply>, Status> {
        self.cell.auth.check_credential(&req)?;
        let (initialized, leader_id, last_log_id, hears_leader, term) = match self.cell.shared.get() {
            Some(s) => {
                let last = s.raft.data_metrics().borrow().last_log;
                let last = serde_json::to_vec(&last).map_err(|e| Status::internal(e.to_string()))?;
                let leader = s.leader();
                let hears = leader.is_some_and(|l| crate::failover::hears(s, l));
                let term = s.raft.metrics().borrow().current_term;
                (true, leader.unwrap_or(0), last, hears, term)
            }
            None => (false, 0, vec![], false, 0),
        };
        Ok(Response::new(DiscoverReply {
            address: self.cell.advertise.clone(),
            cluster_id: self.cell.auth.cluster_id(),
            node_id: self
                .cell
                .node_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(0),
            bootstrap_expect: self.cell.bootstrap_expect,
            initialized,
            leader_id,
            last_log_id,
            hears_leader,
            term,
        }))
    }
}
