//! Reads: linearizable on any node by default, stale on request (ARCHITECTURE.md).
//!
//! In openraft 0.9 only the leader can establish a read index, so a follower asks the
//! leader for it over gRPC and then waits until its own state machine has applied it.

use std::time::Duration;

use tokio::time::Instant;

use launcher_proto::raft::ReadIndexRequest;
use launcher_storage::ErrorCode;

use crate::error::{NodeError, NodeResult};
use crate::state::NodeState;

/// Longest a read waits for a read index or for this node to catch up.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// How a read wants to be served.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadMode {
    /// Serve from the local state machine without asking the leader.
    pub stale: bool,
    /// Wait until at least this index is applied (`X-Launcher-Min-Index`).
    pub min_index: u64,
}

impl NodeState {
    /// Makes the local state machine fit to answer a read in `mode`.
    pub async fn read_barrier(&self, mode: ReadMode) -> NodeResult<()> {
        let mut target = mode.min_index;
        if !mode.stale {
            target = target.max(self.read_index().await?);
        }
        self.wait_applied(target).await
    }

    /// The index a linearizable read must see: the leader's confirmed commit index.
    ///
    /// A follower asks the leader it knows. If that leader is replaced while the question waits
    /// there (paused, cut off), the answer would come only at the deadline, so the follower asks
    /// the new leader at once; a read changes nothing, so asking again is always safe.
    pub async fn read_index(&self) -> NodeResult<u64> {
        let deadline = Instant::now() + READ_DEADLINE;
        let mut metrics = self.raft.metrics();
        loop {
            if self.is_leader() {
                return self.leader_read_index().await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (leader, addr) = self.await_leader_addr(left).await?;
            let mut req = tonic::Request::new(ReadIndexRequest {});
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let mut watch = self.raft.metrics();
            let replaced = async { watch.wait_for(|m| m.current_leader != Some(leader)).await.is_ok() };
            let mut client = self.peers.raft(&addr);
            tokio::select! {
                r = client.read_index(req) => match r {
                    Ok(reply) => return Ok(reply.into_inner().read_index),
                    Err(s) => {
                        let e = NodeError::from(&s);
                        if e.code != ErrorCode::Unavailable || Instant::now() >= deadline {
                            return Err(e);
                        }
                        // The leader moved or is not reachable: wait for the next change of
                        // Raft state, bounded, and ask whoever leads then.
                        let left = deadline.saturating_duration_since(Instant::now());
                        if let Ok(Err(_)) =
                            tokio::time::timeout(left.min(Duration::from_millis(200)), metrics.changed()).await
                        {
                            return Err(NodeError::unavailable("this node is stopping"));
                        }
                    }
                },
                seen = replaced => if !seen {
                    return Err(NodeError::unavailable("this node is stopping"));
                },
            }
        }
    }

    /// On the leader: confirm leadership with a quorum and return the read log index.
    pub async fn leader_read_index(&self) -> NodeResult<u64> {
        match tokio::time::timeout(READ_DEADLINE, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(e)) => Err(NodeError::unavailable(format!(
                "cannot confirm leadership for a read: {e}"
            ))),
            Err(_) => Err(NodeError::unavailable(
                "no quorum confirmed leadership in time for a linearizable read",
            )),
        }
    }

    /// Waits (bounded) until this node applied `index`.
    pub async fn wait_applied(&self, index: u64) -> NodeResult<()> {
        if index == 0 || self.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(READ_DEADLINE))
            .applied_index_at_least(Some(index), "read")
            .await
            .map(|_| ())
            .map_err(|e| {
                NodeError::unavailable(format!(
                    "this node has not applied index {index} yet (applied {}): {e}",
                    self.applied_index()
                ))
            })
    }
}
