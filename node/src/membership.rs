//! Membership (ARCHITECTURE.md): node identity on disk, forming a cluster (`--init` or
//! `bootstrap-expect`), joining as a learner, promotion, explicit removal, and the
//! leader's periodic duties (lost members, dead-member cleanup, expiry).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use launcher_proto::launcher::{JoinReply, JoinRequest};
use launcher_proto::raft::{DiscoverReply, DiscoverRequest, NodeHeartbeat};
use launcher_storage::command::HostedCluster;
use launcher_storage::{Command, CommandV1, ErrorCode, Node, NodeId, Response};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{NodeError, NodeResult};
use crate::network::Peers;
use crate::state::{NodeState, VERSION};
use crate::writes::WriteRequest;

/// Who this data directory belongs to. Written once, fsynced, before Raft starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    pub cluster_id: String,
}

const IDENTITY_FILE: &str = "identity.json";

impl Identity {
    /// Reads the identity of `data_dir`, if it has one.
    pub fn load(data_dir: &Path) -> Result<Option<Identity>, String> {
        let p = data_dir.join(IDENTITY_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "{} is corrupt ({e}); this data dir cannot be trusted: restore it or wipe it to rejoin",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    }

    /// Writes the identity durably (temp file, fsync, rename, directory fsync).
    pub fn store(&self, data_dir: &Path) -> Result<(), String> {
        let p = data_dir.join(IDENTITY_FILE);
        let tmp = data_dir.join("identity.json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("identity serialises"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", p.display()))
    }
}

/// How a node with an empty data dir becomes a member.
#[derive(Debug, Clone)]
pub enum Formation {
    /// Start a new one-node cluster here (`--init`).
    Init,
    /// Wait for `expect` empty nodes among the join addresses; the lowest address initialises.
    BootstrapExpect { expect: usize, join: Vec<String> },
    /// Join an existing cluster through any of these addresses.
    Join(Vec<String>),
}

/// The outcome of formation: who we are, and whether we must initialise Raft with these voters.
#[derive(Debug, Clone)]
pub struct Formed {
    pub identity: Identity,
    pub initial_voters: Option<BTreeMap<NodeId, Node>>,
}

/// Resolves join entries (`host:port`, DNS names may give several addresses).
pub(crate) async fn resolve(join: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for j in join {
        match tokio::net::lookup_host(j.as_str()).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.to_string())),
            Err(e) => tracing::debug!(address = %j, error = %e, "join address does not resolve yet"),
        }
    }
    out.into_iter().collect()
}

pub(crate) async fn discover(peers: &Peers, addr: &str) -> Option<DiscoverReply> {
    discover_within(peers, addr, Duration::from_secs(1)).await
}

/// [`discover`] with its own deadline.
pub(crate) async fn discover_within(peers: &Peers, addr: &str, deadline: Duration) -> Option<DiscoverReply> {
    let mut req = tonic::Request::new(DiscoverRequest {
        from_address: String::new(),
    });
    req.set_timeout(deadline);
    // The header tells the callee; the caller must enforce the deadline itself: over a
    // connection that went silent (a paused or cut-off peer) the call would otherwise wait
    // for HTTP/2 keep-alive to give up, seconds later.
    let mut client = peers.raft(addr);
    match tokio::time::timeout(deadline, client.discover(req)).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

/// Asks `addr` to let this node join; returns the identity to adopt.
async fn join_via(
    peers: &Peers,
    addr: &str,
    node_id: Option<NodeId>,
    advertise: &str,
) -> NodeResult<Identity> {
    let mut req = tonic::Request::new(JoinRequest {
        node_id: node_id.unwrap_or(0),
        address: advertise.to_string(),
        cluster_id: String::new(),
    });
    req.set_timeout(Duration::from_secs(15));
    let reply = peers
        .launcher(addr)
        .join(req)
        .await
        .map_err(|s| NodeError::from(&s))?
        .into_inner();
    Ok(Identity {
        node_id: reply.node_id,
        cluster_id: reply.cluster_id,
    })
}

/// One join attempt through `addr`: `Some` when joined, `None` to retry, an error when the
/// cluster refused this node for good.
async fn try_join(
    peers: &Peers,
    addr: &str,
    configured_id: Option<NodeId>,
    advertise: &str,
) -> crate::error::StartResult<Option<Formed>> {
    match join_via(peers, addr, configured_id, advertise).await {
        Ok(identity) => Ok(Some(Formed {
            identity,
            initial_voters: None,
        })),
        Err(e) if e.code == ErrorCode::InvalidRequest => Err(crate::error::StartError::Cluster(format!(
            "the cluster refused this node: {}",
            e.message
        ))),
        Err(e) => {
            tracing::info!(via = %addr, error = %e, "join attempt failed; retrying");
            Ok(None)
        }
    }
}

/// Becomes a member of a cluster, waiting as long as it takes (until `give_up`).
pub async fn form(
    how: Formation,
    configured_id: Option<NodeId>,
    configured_cluster: Option<String>,
    advertise: &str,
    peers: &Peers,
    mut give_up: tokio::sync::watch::Receiver<bool>,
) -> crate::error::StartResult<Formed> {
    match how {
        Formation::Init => {
            let node_id = configured_id.unwrap_or(1);
            let cluster_id = configured_cluster.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let voters = BTreeMap::from([(
                node_id,
                Node {
                    addr: advertise.to_string(),
                },
            )]);
            Ok(Formed {
                identity: Identity { node_id, cluster_id },
                initial_voters: Some(voters),
            })
        }
        Formation::Join(join) | Formation::BootstrapExpect { join, .. } if join.is_empty() => {
            Err(crate::error::StartError::Cluster(
                "join is empty: set [node] join to the addresses of other nodes".into(),
            ))
        }
        Formation::Join(join) => loop {
            for addr in resolve(&join).await.into_iter().filter(|a| a != advertise) {
                if let Some(formed) = try_join(peers, &addr, configured_id, advertise).await? {
                    return Ok(formed);
                }
            }
            wait_or_give_up(&mut give_up, Duration::from_millis(500)).await?;
        },
        Formation::BootstrapExpect { expect, join } => loop {
            let mut fresh: BTreeMap<String, NodeId> = BTreeMap::new();
            fresh.insert(advertise.to_string(), configured_id.unwrap_or(0));
            for addr in resolve(&join).await.into_iter().filter(|a| a != advertise) {
                let Some(reply) = discover(peers, &addr).await else {
                    continue;
                };
                if !reply.cluster_id.is_empty() && reply.initialized {
                    // A cluster exists (perhaps formed a moment ago by the lowest address): join it.
                    if let Some(formed) = try_join(peers, &addr, configured_id, advertise).await? {
                        return Ok(formed);
                    }
                } else if reply.cluster_id.is_empty() {
                    fresh.insert(reply.address, reply.node_id);
                }
            }
            if fresh.len() >= expect {
                let chosen: Vec<(String, NodeId)> = fresh.into_iter().take(expect).collect();
                if chosen[0].0 == advertise {
                    let all_configured = chosen.iter().all(|(_, id)| *id != 0);
                    let voters: BTreeMap<NodeId, Node> = chosen
                        .iter()
                        .enumerate()
                        .map(|(i, (addr, id))| {
                            let id = if all_configured { *id } else { i as NodeId + 1 };
                            (id, Node { addr: addr.clone() })
                        })
                        .collect();
                    if voters.len() != expect {
                        return Err(crate::error::StartError::Cluster(format!("bootstrap-expect={expect}: the discovered nodes have duplicate node ids {chosen:?}")));
                    }
                    let node_id = voters
                        .iter()
                        .find(|(_, n)| n.addr == advertise)
                        .map(|(id, _)| *id)
                        .expect("self chosen");
                    let cluster_id = configured_cluster
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                    tracing::info!(
                        expect,
                        ?voters,
                        "bootstrap-expect reached: initialising the cluster"
                    );
                    return Ok(Formed {
                        identity: Identity { node_id, cluster_id },
                        initial_voters: Some(voters),
                    });
                }
            } else {
                tracing::info!(
                    seen = fresh.len(),
                    expect,
                    "waiting for bootstrap-expect nodes to appear"
                );
            }
            wait_or_give_up(&mut give_up, Duration::from_millis(500)).await?;
        },
    }
}

async fn wait_or_give_up(
    give_up: &mut tokio::sync::watch::Receiver<bool>,
    d: Duration,
) -> crate::error::StartResult<()> {
    if *give_up.borrow() {
        return Err(crate::error::StartError::Cluster(
            "stopped while forming the cluster".into(),
        ));
    }
    let _ = tokio::time::timeout(d, give_up.changed()).await;
    if *give_up.borrow() {
        return Err(crate::error::StartError::Cluster(
            "stopped while forming the cluster".into(),
        ));
    }
    Ok(())
}

fn raft_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::unavailable(format!("membership change failed: {e}"))
}

impl NodeState {
    /// Handles a join request: on the leader, adds the node as a learner (promotion follows
    /// once it caught up); elsewhere forwards it to the leader.
    pub async fn handle_join(&self, req: JoinRequest) -> NodeResult<JoinReply> {
        if !req.cluster_id.is_empty() && req.cluster_id != self.cluster_id() {
            return Err(NodeError::invalid(format!(
                "the joining node belongs to cluster {}, this is cluster {}",
                req.cluster_id,
                self.cluster_id()
            )));
        }
        let (membership_nodes, voters) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            let nodes: BTreeMap<NodeId, Node> = mem.nodes().map(|(id, n)| (*id, n.clone())).collect();
            (nodes, mem.voter_ids().collect::<BTreeSet<_>>())
        };
        let records = self.table(|sm| sm.nodes()).await?;
        let at_addr = membership_nodes
            .iter()
            .find(|(_, n)| n.addr == req.address)
            .map(|(id, _)| *id);
        let reply = |node_id| JoinReply {
            node_id,
            cluster_id: self.cluster_id(),
            leader_id: self.leader().unwrap_or(0),
        };
        // A voter named by bootstrap-expect that has never run: any member can tell it its id
        // (the initial membership needs it to vote before there can be a leader). Once it has
        // registered, the same address with empty data is a new incarnation (handled below).
        if let Some(existing) = at_addr {
            let fresh = !records.iter().any(|r| r.id == existing);
            if fresh && (req.node_id == 0 || req.node_id == existing) {
                return Ok(reply(existing));
            }
        }
        if !self.is_leader() {
            let (_, addr) = self.await_leader_addr(self.write_timeout()).await?;
            let mut call = tonic::Request::new(req);
            call.set_timeout(Duration::from_secs(10));
            return Ok(self
                .peers
                .launcher(&addr)
                .join(call)
                .await
                .map_err(|s| NodeError::from(&s))?
                .into_inner());
        }
        if req.node_id != 0 && records.iter().any(|r| r.id == req.node_id && r.removed) {
            return Err(NodeError::invalid(format!(
                "node id {} was removed from this cluster and cannot come back under it; wipe its data dir and \
                 start it without an id to join under a new one",
                req.node_id
            )));
        }
        if req.node_id != 0 {
            if let Some(n) = membership_nodes.get(&req.node_id) {
                if n.addr != req.address {
                    return Err(NodeError::invalid(format!(
                        "node id {} is already a member at {}; a second node cannot use it. Remove it first \
                         (members remove {}) or start this node without an id",
                        req.node_id, n.addr, req.node_id
                    )));
                }
            }
        }
        // A node coming back at the same address with an empty data dir is a new incarnation:
        // reusing the old id would forget its votes, so it gets a fresh id and the old one goes.
        let replaced = at_addr;
        let asked_is_free = req.node_id != 0
            && !membership_nodes.contains_key(&req.node_id)
            && !records.iter().any(|r| r.id == req.node_id);
        let node_id = if asked_is_free {
            req.node_id
        } else {
            let cmd = Command::V1(CommandV1::AllocateNodeId {
                addr: req.address.clone(),
            });
            match self.write(WriteRequest::Command { command: cmd }).await?.0 {
                Response::NodeId { id } => id,
                other => {
                    return Err(NodeError::internal(format!(
                        "unexpected answer to id allocation: {other:?}"
                    )))
                }
            }
        };
        if let Some(old) = replaced {
            tracing::warn!(old, new = node_id, addr = %req.address, "a wiped node rejoins; retiring its old id");
            self.retire(old, voters.contains(&old)).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .raft
                .add_learner(
                    node_id,
                    Node {
                        addr: req.address.clone(),
                    },
                    false,
                )
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(node_id, error = %e, "add learner failed; retrying (membership changes queue)");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(raft_err(e)),
            }
        }
        tracing::info!(node_id, addr = %req.address, "node joined as learner");
        Ok(reply(node_id))
    }

    /// Removes a member from Raft and tombstones its id.
    async fn retire(&self, node: NodeId, voter: bool) -> NodeResult<u64> {
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([node]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node]))
        };
        // `retain = false`: a removed voter does not stay behind as a learner.
        self.change_membership_retrying(change).await?;
        let cmd = Command::V1(CommandV1::RemoveNode { node });
        Ok(self.write(WriteRequest::Command { command: cmd }).await?.1)
    }

    async fn change_membership_retrying(&self, change: ChangeMembers<NodeId, Node>) -> NodeResult<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline && e.forward_to_leader().is_none() => {
                    tracing::info!(error = %e, "membership change failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(raft_err(e)),
            }
        }
    }

    /// `members remove <id>`: leaves the cluster for good (ARCHITECTURE.md). Idempotent: a
    /// member already removed (by an earlier call, or by the leader's dead-member cleanup) is
    /// removed again without error; an id that never was a member is refused. Called during an
    /// election, or with the leader just gone, it waits for the next leader, as writes do.
    pub async fn remove_member(&self, node: NodeId) -> NodeResult<u64> {
        let deadline = Instant::now() + self.write_timeout();
        let mut metrics = self.raft.metrics();
        loop {
            if self.is_leader() {
                return self.remove_member_as_leader(node).await;
            }
            let (_, addr) = self
                .await_leader_addr(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let req = launcher_proto::launcher::LeaveRequest {
                caller: Some(launcher_proto::launcher::Caller {
                    user: "launcher-node".into(),
                    admin: true,
                }),
                node_id: node,
            };
            let mut call = tonic::Request::new(req);
            call.set_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            );
            match self.peers.launcher(&addr).leave(call).await {
                Ok(r) => return Ok(r.into_inner().applied_index),
                Err(status) => {
                    let e = NodeError::from(&status);
                    // The leader we knew is gone or moved: removal is idempotent, so asking the
                    // next one is safe whether or not this call reached it.
                    if e.code != ErrorCode::Unavailable || Instant::now() >= deadline {
                        return Err(e);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ =
                        tokio::time::timeout(left.min(Duration::from_millis(200)), metrics.changed()).await;
                }
            }
        }
    }

    async fn remove_member_as_leader(&self, node: NodeId) -> NodeResult<u64> {
        let (voters, learners) = self.members();
        let is_voter = voters.contains(&node);
        if !is_voter && !learners.contains(&node) {
            let known = self
                .table(move |sm| sm.nodes())
                .await?
                .iter()
                .any(|r| r.id == node);
            if !known {
                return Err(NodeError::new(
                    ErrorCode::InvalidRequest,
                    format!("node {node} is not a member"),
                ));
            }
            // Out of the Raft membership already: make sure its record is tombstoned too.
            let cmd = Command::V1(CommandV1::RemoveNode { node });
            return Ok(self.write(WriteRequest::Command { command: cmd }).await?.1);
        }
        if is_voter && voters.len() == 1 {
            return Err(NodeError::new(
                ErrorCode::InvalidJobState,
                "cannot remove the last voter of the cluster",
            ));
        }
        self.retire(node, is_voter).await
    }

    /// Announces this node's address and clusters in the job table, retrying until it lands.
    pub async fn register(&self, clusters: Vec<HostedCluster>) -> NodeResult<()> {
        let cmd = Command::V1(CommandV1::RegisterNode {
            id: self.id,
            addr: self.advertise.clone(),
            clusters,
            version: VERSION.into(),
        });
        match self.write(WriteRequest::Command { command: cmd }).await?.0 {
            Response::Applied { .. } => Ok(()),
            Response::Error { code, message } => Err(NodeError::new(code, message)),
            other => Err(NodeError::internal(format!(
                "unexpected answer to registration: {other:?}"
            ))),
        }
    }

    /// Sends this node's heartbeat to the leader (or, without a known leader, to any member:
    /// a removed node hears of its removal this way, as it no longer receives the log).
    pub async fn send_heartbeat(&self) {
        let targets: Vec<String> = match self.leader_addr() {
            Ok((leader, _)) if leader == self.id => return,
            Ok((_, addr)) => vec![addr],
            Err(_) => {
                let m = self.raft.metrics();
                let m = m.borrow();
                m.membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(_, n)| n.addr.clone())
                    .collect()
            }
        };
        for addr in targets {
            let mut req = tonic::Request::new(NodeHeartbeat {
                node_id: self.id,
                applied_index: self.applied_index(),
                version: VERSION.into(),
            });
            req.set_timeout(Duration::from_secs(1));
            match self.peers.raft(&addr).heartbeat(req).await {
                Ok(reply) => {
                    if reply.into_inner().removed {
                        self.removed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    return;
                }
                Err(e) => tracing::debug!(to = %addr, error = %e, "heartbeat failed"),
            }
        }
    }

    /// One round of the leader's duties; does nothing on followers.
    pub async fn maintain(&self) {
        let (is_leader, term, quorum_ack, last_log, replication) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == openraft::ServerState::Leader,
                m.current_term,
                m.millis_since_quorum_ack,
                m.last_log_index.unwrap_or(0),
                m.replication.clone(),
            )
        };
        let (voters, learners) = self.members();
        let all: Vec<NodeId> = voters.iter().chain(learners.iter()).copied().collect();
        self.liveness.observe_term(is_leader, term, &all);
        if !is_leader {
            self.proposer.allow_batches(false);
            return;
        }
        // Group commit only while every member applies batches: during a rolling upgrade an
        // older member could not decode them. A member that has not registered yet counts as old.
        let records = self.table(|sm| sm.nodes()).await.unwrap_or_default();
        let batches = all.iter().all(|id| {
            records
                .iter()
                .any(|r| r.id == *id && launcher_storage::command::applies_batches(&r.version))
        });
        self.proposer.allow_batches(batches);
        if self.finish_joint_change().await {
            return;
        }
        // Promote caught-up learners, one membership change at a time.
        for l in &learners {
            let matched = replication
                .as_ref()
                .and_then(|r| r.get(l).cloned().flatten())
                .map_or(0, |x| x.index);
            if matched + 100 >= last_log && self.is_healthy(*l) {
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([*l]));
                match self.raft.change_membership(change, false).await {
                    Ok(_) => tracing::info!(node = l, "learner caught up: promoted to voter"),
                    Err(e) => tracing::info!(node = l, error = %e, "promotion deferred"),
                }
                return;
            }
        }
        let cfg = &self.config.node;
        let lost_after = Duration::from_secs(cfg.node_lost_timeout_seconds);
        // Only a leader that recently heard from a quorum, and has led long enough to have
        // heard from everyone, may condemn a member (a leader waking from a pause must not).
        let quorum_fresh = quorum_ack.is_some_and(|ms| ms <= cfg.election_timeout_max_ms);
        let settled = self.liveness.leader_for().is_some_and(|d| d > lost_after);
        if quorum_fresh {
            self.fail_jobs_of_removed_members().await;
        }
        if quorum_fresh && settled {
            let unseen: Vec<NodeId> = all
                .iter()
                .copied()
                .filter(|n| *n != self.id && !self.is_alive(*n) && !self.liveness.is_lost(*n))
                .collect();
            // The metrics read above may predate a pause of this very node (a leader waking
            // up reads its old quorum acknowledgement until Raft catches up): confirm the
            // leadership with a quorum now, and look again at whom it has heard from since.
            if !unseen.is_empty() && self.leader_read_index().await.is_ok() {
                for node in unseen {
                    if !self.is_alive(node) {
                        self.declare_lost(node).await;
                    }
                }
            }
            if cfg.dead_member_removal_seconds > 0 {
                let dead_after = Duration::from_secs(cfg.dead_member_removal_seconds);
                for node in all.iter().copied().filter(|n| *n != self.id) {
                    let dead = self
                        .liveness
                        .seen(node)
                        .is_none_or(|s| s.at.elapsed() > dead_after);
                    let is_voter = voters.contains(&node);
                    if dead && (!is_voter || voters.len() > 3) {
                        tracing::warn!(
                            node,
                            "member down longer than dead-member-removal-seconds: removing it"
                        );
                        if let Err(e) = self.retire(node, is_voter).await {
                            tracing::warn!(node, error = %e, "dead-member removal failed");
                        }
                        return;
                    }
                }
            }
        }
        self.expire_jobs().await;
    }

    /// A membership change whose leader died between the joint and the final configuration
    /// leaves the next leader in the joint one, where openraft keeps it: this leader carries
    /// the change through to its final configuration (and tombstones the members it removes,
    /// as `members remove` does). Returns whether the membership was joint.
    async fn finish_joint_change(&self) -> bool {
        let joint: Vec<BTreeSet<NodeId>> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_joint_config().clone()
        };
        let (Some(first), Some(last)) = (joint.first(), joint.last()) else {
            return false;
        };
        if joint.len() < 2 {
            return false;
        }
        let leaving: Vec<NodeId> = first.difference(last).copied().collect();
        let change = ChangeMembers::ReplaceAllVoters(last.clone());
        match self.raft.change_membership(change, false).await {
            Ok(_) => {
                tracing::warn!(voters = ?last, ?leaving, "finished a membership change an earlier leader left half done");
                for node in leaving {
                    let cmd = Command::V1(CommandV1::RemoveNode { node });
                    if let Err(e) = self.write(WriteRequest::Command { command: cmd }).await {
                        tracing::warn!(node, error = %e, "cannot tombstone the removed member yet");
                    }
                }
            }
            Err(e) => tracing::info!(error = %e, "finishing the half-done membership change deferred"),
        }
        true
    }

    /// A removed member never reports again (it cannot come back under its id, ARCHITECTURE.md), and
    /// being no member any more, the liveness sweep above never looks at it: its non-terminal
    /// jobs are lost now, however it left (a wiped node rejoining under a new id,
    /// `members remove`, dead-member cleanup).
    async fn fail_jobs_of_removed_members(&self) {
        let removed: Vec<NodeId> = self
            .table(|sm| sm.nodes())
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.removed)
            .map(|r| r.id)
            .collect();
        for node in removed {
            if self.table(move |sm| sm.active_jobs(node)).await.unwrap_or(0) > 0 {
                self.declare_lost(node).await;
            }
        }
    }

    async fn declare_lost(&self, node: NodeId) {
        let active = self.table(move |sm| sm.active_jobs(node)).await.unwrap_or(0);
        if active == 0 {
            self.liveness.mark_lost(node);
            return;
        }
        // Shared-scheduler jobs go to another live node hosting the same cluster.
        let records = self.table(|sm| sm.nodes()).await.unwrap_or_default();
        let mut adopters = Vec::new();
        if let Some(lost) = records.iter().find(|r| r.id == node) {
            for c in lost.clusters.iter().filter(|c| c.shared) {
                let heir = records
                    .iter()
                    .filter(|r| r.id != node && !r.removed && !r.draining && r.hosts(&c.name).is_some())
                    .map(|r| r.id)
                    .find(|id| self.is_alive(*id));
                if let Some(h) = heir {
                    adopters.push((c.name.clone(), h));
                }
            }
        }
        let cmd = Command::V1(CommandV1::NodeLost {
            node,
            time: clock::now(),
            adopters,
        });
        // Only as the leader that decided it: forwarded to a new leader, a stale leader's
        // decision would condemn members the new one hears from.
        match self.write_as_leader(WriteRequest::Command { command: cmd }).await {
            Ok((Response::Applied { count, .. }, _)) => {
                tracing::warn!(
                    node,
                    jobs = count,
                    "member lost: its local jobs failed, shared ones handed over"
                );
                self.liveness.mark_lost(node);
            }
            Ok((other, _)) => tracing::warn!(node, ?other, "declaring member lost was refused"),
            Err(e) => tracing::warn!(node, error = %e, "declaring member lost failed; will retry"),
        }
    }

    async fn expire_jobs(&self) {
        let cutoff = clock::seconds_ago(self.config.server.job_expiry_hours * 3600);
        let check = cutoff.clone();
        if !self
            .table(move |sm| sm.has_expired(&check))
            .await
            .unwrap_or(false)
        {
            return;
        }
        let cmd = Command::V1(CommandV1::Expire {
            cutoff,
            now: clock::now(),
        });
        match self.write(WriteRequest::Command { command: cmd }).await {
            Ok((Response::Applied { count, .. }, _)) => tracing::info!(count, "expired terminal jobs"),
            Ok((other, _)) => tracing::warn!(?other, "expiry refused"),
            Err(e) => tracing::warn!(error = %e, "expiry failed; will retry"),
        }
    }
}

/// Where the data of one node lives.
pub fn data_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("db"), data_dir.join("snapshots"))
}
