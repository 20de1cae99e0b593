//! What every service of a running node shares: Raft, the job table, peers, liveness.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use launcher_storage::engine::SledEngine;
use launcher_storage::table::ApplyError;
use launcher_storage::{LogStore, NodeId, Raft, StateMachine};
use openraft::ServerState;

use crate::config::Config;
use crate::error::{NodeError, NodeResult};
use crate::network::Peers;

/// Version string nodes report to each other.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A node's view of one member's liveness (leader side).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub at: Instant,
    pub applied: u64,
}

/// Leader-side liveness bookkeeping (ARCHITECTURE.md): heartbeats from members, when this node
/// became leader, and which members it declared lost.
#[derive(Default)]
pub struct Liveness {
    inner: Mutex<LivenessInner>,
}

#[derive(Default)]
struct LivenessInner {
    /// (term, since) of the current leadership of this node.
    leader_since: Option<(u64, Instant)>,
    /// Last heartbeat, or the start of this leadership's grace period (lost-member rule).
    seen: HashMap<NodeId, Seen>,
    /// Last heartbeat actually received (placement and health: no grace).
    heard: HashMap<NodeId, Instant>,
    lost: HashSet<NodeId>,
}

impl Liveness {
    /// Records a heartbeat.
    pub fn record_heartbeat(&self, node: NodeId, applied: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        g.seen.insert(node, Seen { at: now, applied });
        g.heard.insert(node, now);
        g.lost.remove(&node);
    }

    /// When `node`'s last heartbeat actually arrived.
    pub fn heard(&self, node: NodeId) -> Option<Instant> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heard
            .get(&node)
            .copied()
    }

    /// Called on every maintenance tick: notes a new leadership term, giving every member a
    /// fresh grace period (we have not heard from anyone yet in this term), and gives a member
    /// that joined during this leadership its grace period from when the leader first saw it
    /// in the membership (a learner added a moment ago has had no chance to report yet).
    pub fn observe_term(&self, is_leader: bool, term: u64, members: &[NodeId]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !is_leader {
            g.leader_since = None;
            return;
        }
        let now = Instant::now();
        if g.leader_since.map(|(t, _)| t) != Some(term) {
            g.leader_since = Some((term, now));
            for m in members {
                let applied = g.seen.get(m).map_or(0, |s| s.applied);
                g.seen.insert(*m, Seen { at: now, applied });
            }
            g.lost.clear();
        } else {
            for m in members {
                g.seen.entry(*m).or_insert(Seen { at: now, applied: 0 });
            }
        }
    }

    /// How long this node has been leader.
    pub fn leader_for(&self) -> Option<Duration> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.leader_since.map(|(_, t)| t.elapsed())
    }

    /// Last heartbeat of `node`.
    pub fn seen(&self, node: NodeId) -> Option<Seen> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .get(&node)
            .copied()
    }

    /// Marks `node` as declared lost; false if it already was.
    pub fn mark_lost(&self, node: NodeId) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lost
            .insert(node)
    }

    /// Whether `node` has been declared lost and not heard from since.
    pub fn is_lost(&self, node: NodeId) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lost
            .contains(&node)
    }
}

/// A running node's shared state.
pub struct NodeState {
    pub id: NodeId,
    pub config: Arc<Config>,
    /// The address other nodes reach this one at.
    pub advertise: String,
    pub raft: Raft,
    pub sm: StateMachine<SledEngine>,
    pub log: LogStore<SledEngine>,
    pub engine: SledEngine,
    pub peers: Peers,
    pub liveness: Liveness,
    /// Set when the cluster told this node it was removed.
    pub removed: std::sync::atomic::AtomicBool,
    /// Fires when storage failed outside Raft (sled reports a background I/O error on reads too).
    pub storage_failed: StorageFailure,
    /// This node's plugins, one per `[cluster]`.
    pub plugins: crate::plugins::Plugins,
    /// The job driver's bookkeeping (workers, plugin job ids).
    pub jobs: crate::plugins::bookkeeping::Bookkeeping,
    /// launcher-mounts, launcher-env, launcher-ports: applied by the leader at submit.
    pub filters: Arc<crate::filters::FilterFiles>,
    /// Event counters for `GET /metrics`.
    pub counters: crate::counters::Counters,
    /// The leader's proposal queue (group commit).
    pub proposer: crate::proposer::Proposer,
    /// When this node last heard from its leader on the leader watch (fast failover).
    pub leader_watch: Heard,
}

/// The first storage failure seen by a read, which stops the node like a Raft storage error.
#[derive(Default)]
pub struct StorageFailure {
    what: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl StorageFailure {
    /// Records a failure (the first one wins) and wakes the node's run loop.
    pub fn fail(&self, what: String) {
        let mut g = self.what.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            tracing::error!(error = %what, "storage failed; stopping the node");
            *g = Some(what);
        }
        self.notify.notify_one();
    }

    /// Waits for a failure and returns it.
    pub async fn wait(&self) -> String {
        loop {
            if let Some(w) = self.what.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return w;
            }
            self.notify.notified().await;
        }
    }
}

impl NodeState {
    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.peers.auth().cluster_id()
    }

    /// Current leader id, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Address of a member, from the Raft membership.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
    }

    /// The applied index of this node.
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// Raft voters and learners.
    pub fn members(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        let voters: Vec<NodeId> = mem.voter_ids().collect();
        let learners: Vec<NodeId> = mem.learner_ids().collect();
        (voters, learners)
    }

    /// Whether `node` counts as alive for the lost-member rule (a new leader grants every
    /// member a grace period, since it cannot have heard from anyone yet).
    pub fn is_alive(&self, node: NodeId) -> bool {
        if node == self.id {
            return true;
        }
        let limit = Duration::from_secs(self.config.node.node_lost_timeout_seconds);
        self.liveness.seen(node).is_some_and(|s| s.at.elapsed() < limit)
    }

    /// Whether a new job may be placed on `node`: a heartbeat actually arrived within
    /// node-lost-timeout-seconds (no grace: a node that just died must not get jobs).
    pub fn is_placeable(&self, node: NodeId) -> bool {
        if node == self.id {
            return true;
        }
        let limit = Duration::from_secs(self.config.node.node_lost_timeout_seconds);
        self.liveness.heard(node).is_some_and(|t| t.elapsed() < limit)
    }

    /// Whether `node`'s heartbeat arrived in the last few seconds (health as shown by Status).
    pub fn is_healthy(&self, node: NodeId) -> bool {
        if node == self.id {
            return true;
        }
        self.liveness
            .heard(node)
            .is_some_and(|t| t.elapsed() < crate::HEALTH_WINDOW)
    }

    /// The leader's address, or Unavailable.
    pub fn leader_addr(&self) -> NodeResult<(NodeId, String)> {
        let leader = self
            .leader()
            .ok_or_else(|| NodeError::unavailable("no leader elected right now; retry shortly"))?;
        let addr = self
            .addr_of(leader)
            .ok_or_else(|| NodeError::unavailable(format!("leader {leader} has no known address yet")))?;
        Ok((leader, addr))
    }

    /// The leader's address, waiting up to `within` for one to be elected (and its address
    /// known): a request that arrives during an election is served once it ends, as writes are,
    /// instead of failing at once.
    pub async fn await_leader_addr(&self, within: Duration) -> NodeResult<(NodeId, String)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut metrics = self.raft.metrics();
        loop {
            match self.leader_addr() {
                Ok(found) => return Ok(found),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    // Woken by the next change of Raft state, or after a bounded wait (the
                    // leader's address may arrive with the log, not with a metrics change).
                    let waited = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                        metrics.changed(),
                    )
                    .await;
                    if let Ok(Err(_)) = waited {
                        // Raft has shut down: no leader will be learned here.
                        return Err(NodeError::unavailable("this node is stopping"));
                    }
                }
            }
        }
    }

    /// Runs blocking job-table work off the async runtime.
    pub async fn table<R: Send + 'static>(
        &self,
        f: impl FnOnce(&StateMachine<SledEngine>) -> Result<R, launcher_storage::table::ApplyError>
            + Send
            + 'static,
    ) -> NodeResult<R> {
        let sm = self.sm.clone();
        match tokio::task::spawn_blocking(move || f(&sm))
            .await
            .map_err(NodeError::internal)?
        {
            Ok(r) => Ok(r),
            Err(ApplyError::Engine(e)) => {
                self.storage_failed.fail(e.to_string());
                Err(NodeError::unavailable(format!(
                    "storage failed on this node, which is stopping: {e}"
                )))
            }
            Err(e) => Err(NodeError::internal(e)),
        }
    }
}

/// When this node last heard from the leader it follows, on the leader watch (`failover`
/// records it and judges it).
#[derive(Debug, Default)]
pub struct Heard(Mutex<Option<(NodeId, Instant)>>);

impl Heard {
    /// Notes a notice from `leader` now.
    pub fn record(&self, leader: NodeId) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader, Instant::now()));
    }

    /// Whether the last notice came from `leader` less than `window` ago.
    pub fn within(&self, leader: NodeId, window: Duration) -> bool {
        let heard = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        heard.is_some_and(|(l, at)| l == leader && at.elapsed() < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member first seen in the membership mid-term (a learner that just joined) has a grace
    /// period from that moment, like every member at the start of a term: the dead-member and
    /// lost-member rules must not condemn it before it could send a heartbeat.
    #[test]
    fn a_member_joining_mid_term_gets_a_grace_period() {
        let l = Liveness::default();
        l.observe_term(true, 3, &[1, 2, 3]);
        let start = l.seen(2).expect("members at the start of the term").at;
        assert!(l.seen(4).is_none());
        l.observe_term(true, 3, &[1, 2, 3, 4]);
        let joined = l
            .seen(4)
            .expect("a member joining mid-term is given a grace period");
        assert!(joined.at >= start);
        assert_eq!(joined.applied, 0);
        // Later ticks keep the first sighting; a heartbeat moves it on.
        l.observe_term(true, 3, &[1, 2, 3, 4]);
        assert_eq!(l.seen(4).map(|s| s.at), Some(joined.at));
        l.record_heartbeat(4, 17);
        assert_eq!(l.seen(4).map(|s| s.applied), Some(17));
        // A follower keeps no grace bookkeeping of its own.
        l.observe_term(false, 4, &[1, 2, 3, 4, 5]);
        assert!(l.seen(5).is_none());
        assert!(l.leader_for().is_none());
    }
}
