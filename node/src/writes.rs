//! The write path: every change goes to the leader, which stamps it (ids, times, owner,
//! ARCHITECTURE.md) and proposes it through Raft. A follower forwards the *unstamped* request.

use std::time::Duration;

use tokio::time::Instant;

use launcher_proto::raft::ForwardedWrite;
use launcher_storage::command::{applies_control_done, ControlOp, Idempotency};
use launcher_storage::job::RawJson;
use launcher_storage::{Command, CommandV1, ErrorCode, Job, NodeId, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock;
use crate::error::{NodeError, NodeResult};
use crate::proposer::Refused;
use crate::state::NodeState;

/// Who asked, as decided by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
}

/// A write before the leader stamped it.
// Externally tagged: it carries `Command`s, which must not be buffered (see `Command`'s decoder).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteRequest {
    /// A job as the client sent it.
    Submit {
        caller: Caller,
        job: String,
        idempotency_key: Option<String>,
    },
    /// A control operation (authorisation was checked by the receiving node).
    Control { id: String, operation: ControlOp },
    /// Delete a terminal job.
    Delete { id: String },
    /// A complete command from a node (updates, registration, bookkeeping); the leader re-stamps its time.
    Command { command: Command },
}

impl WriteRequest {
    /// Whether proposing this twice is harmless, so a retry after an unknown outcome is safe.
    fn retry_safe(&self) -> bool {
        match self {
            WriteRequest::Submit { idempotency_key, .. } => idempotency_key.is_some(),
            WriteRequest::Control { .. } => false,
            WriteRequest::Delete { .. } => true,
            WriteRequest::Command { command } => {
                !matches!(command, Command::V1(CommandV1::AllocateNodeId { .. }))
            }
        }
    }
}

/// Hash of what a submit asked for, so a reused Idempotency-Key with another body is detected.
fn fingerprint(user: &str, job: &Job) -> String {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(job.to_canonical());
    hex::encode(h.finalize())
}

/// Decodes a submitted job body as the leader does before stamping it: the size limit, the
/// nesting limit (before parsing: nothing deeper may be stored, or re-serialising it would fail
/// later), a typed [`Job`] and the submission checks. Every failure is the client's.
pub fn decode_submission(body: &str, limit: usize) -> NodeResult<Job> {
    if body.len() > limit {
        return Err(NodeError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the job is {} bytes; the limit is {limit} (max-request-body-bytes)",
                body.len()
            ),
        ));
    }
    crate::admission::check_depth(body)?;
    let job: Job =
        serde_json::from_str(body).map_err(|e| NodeError::invalid(format!("the job is not valid: {e}")))?;
    job.validate_submission().map_err(NodeError::invalid)?;
    Ok(job)
}

/// The answer to a write while this node's Raft is shut down: no change of leader will come.
fn stopping() -> NodeError {
    NodeError::unavailable("this node is stopping; retry on another node")
}

impl NodeState {
    /// Applies `req` through Raft, from any node. Returns the state machine's response and the
    /// log index it was applied at.
    pub async fn write(&self, req: WriteRequest) -> NodeResult<(Response, u64)> {
        let deadline = Instant::now() + self.write_timeout();
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            match leader {
                Some(l) if l == self.id => match self.propose(&req, deadline).await {
                    Err(Retry::Elsewhere) => {}
                    Err(Retry::Fatal(e)) => return Err(e),
                    Ok(r) => return Ok(r),
                },
                Some(l) => {
                    // A leader that is replaced while the write waits there (paused, cut off)
                    // will not answer before the deadline: give up on it at once.
                    let mut watch = self.raft.metrics();
                    // False when Raft has shut down.
                    let replaced = async {
                        watch
                            .wait_for(|m| m.current_leader.is_some_and(|n| n != l))
                            .await
                            .is_ok()
                    };
                    tokio::select! {
                        r = self.forward(l, &req, deadline) => match r {
                            Ok(r) => return Ok(r),
                            Err((e, Sent::Maybe)) if !req.retry_safe() => return Err(e),
                            Err((e, _)) if e.code != ErrorCode::Unavailable => return Err(e),
                            Err(_) => {}
                        },
                        running = replaced => if !running {
                            return Err(stopping());
                        } else if !req.retry_safe() {
                            return Err(NodeError::unavailable(format!(
                                "leader {l} was replaced while this write waited there: its outcome \
                                 is unknown; read before retrying, or send an Idempotency-Key so a \
                                 retry is safe"
                            )));
                        },
                    }
                }
                None => {}
            }
            // No leader, or it moved: wait for the next change of Raft state, bounded.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NodeError::unavailable(
                    "no leader accepted the write in time: the cluster has no quorum or is electing; retry",
                ));
            }
            if let Ok(Err(_)) =
                tokio::time::timeout(left.min(Duration::from_millis(200)), metrics.changed()).await
            {
                // Raft has shut down: no change will come (this used to spin to the deadline).
                return Err(stopping());
            }
        }
    }

    /// Proposes `req` on this node while it leads, never elsewhere: a decision this node took
    /// from its own view as leader (a member lost) must not be carried out by another leader.
    pub async fn write_as_leader(&self, req: WriteRequest) -> NodeResult<(Response, u64)> {
        let not_leader = || NodeError::unavailable("this node does not lead (any more)");
        if !self.is_leader() {
            return Err(not_leader());
        }
        match self.propose(&req, Instant::now() + self.write_timeout()).await {
            Ok(r) => Ok(r),
            Err(Retry::Elsewhere) => Err(not_leader()),
            Err(Retry::Fatal(e)) => Err(e),
        }
    }

    /// How long a write may take end to end (`write-timeout-seconds`).
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.config.node.write_timeout_seconds.max(1))
    }

    /// How long this node, as leader, has gone without a majority acknowledging it, when that
    /// is longer than any election takes: openraft 0.9 leaders do not step down by themselves,
    /// so a leader cut off in a minority would otherwise accept writes it cannot commit.
    fn quorum_lost_for(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let ms = m.millis_since_quorum_ack?;
        (m.current_leader == Some(self.id) && ms > self.config.node.election_timeout_max_ms).then_some(ms)
    }

    /// Stamps and proposes on this node, which believes it is the leader; the write is
    /// abandoned at `deadline`.
    async fn propose(&self, req: &WriteRequest, deadline: Instant) -> Result<(Response, u64), Retry> {
        if let Some(ms) = self.quorum_lost_for() {
            return Err(Retry::Fatal(NodeError::unavailable(format!(
                "no quorum: this leader has not heard from a majority for {ms} ms; nothing was written"
            ))));
        }
        let cmd = self.stamp(req.clone()).await.map_err(Retry::Fatal)?;
        let limits = crate::proposer::Limits {
            max_pending: self.config.node.max_pending_writes,
            deadline,
        };
        match self.proposer.propose(cmd, limits).await {
            Ok(r) => Ok(r),
            Err(Refused::NotLeader) => Err(Retry::Elsewhere),
            Err(Refused::Failed(why)) => Err(Retry::Fatal(NodeError::unavailable(why))),
            Err(Refused::Overloaded) => Err(Retry::Fatal(NodeError::new(
                ErrorCode::Overloaded,
                format!(
                    "the leader already has {} writes waiting (max-pending-writes); nothing was written, retry shortly",
                    self.config.node.max_pending_writes
                ),
            ))),
            Err(Refused::TimedOut) => Err(Retry::Fatal(NodeError::unavailable(format!(
                "the write was not committed within {} s (write-timeout-seconds): the cluster may \
                 have lost its quorum; its outcome is unknown",
                self.write_timeout().as_secs()
            )))),
        }
    }

    /// Sends `req` to the leader; a failure says whether the request may have reached it.
    async fn forward(
        &self,
        leader: NodeId,
        req: &WriteRequest,
        deadline: Instant,
    ) -> Result<(Response, u64), (NodeError, Sent)> {
        let addr = self.addr_of(leader).ok_or_else(|| {
            (
                NodeError::unavailable(format!("leader {leader} has no known address")),
                Sent::Never,
            )
        })?;
        let body = serde_json::to_vec(req).map_err(|e| (NodeError::internal(e), Sent::Never))?;
        let mut call = tonic::Request::new(ForwardedWrite { request: body });
        crate::request_id::pass_on(&mut call);
        // The leader gives up no later than this node: the caller's deadline holds end to end.
        call.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
        self.counters.forwarded(crate::counters::Forward::Write);
        match self.peers.raft(&addr).client_write(call).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let resp: Response = serde_json::from_slice(&reply.response)
                    .map_err(|e| (NodeError::internal(e), Sent::Maybe))?;
                Ok((resp, reply.log_index))
            }
            Err(status) => Err((NodeError::from(&status), sent(&status))),
        }
    }

    /// Serves a forwarded write on the leader.
    pub async fn serve_forwarded(&self, req: WriteRequest) -> Result<(Response, u64), tonic::Status> {
        // The forwarding node's own deadline ends the call sooner, and then the proposal is
        // dropped if it has not reached Raft yet.
        match self.propose(&req, Instant::now() + self.write_timeout()).await {
            Ok(r) => Ok(r),
            Err(Retry::Elsewhere) => Err(not_leader_status()),
            Err(Retry::Fatal(e)) => Err(e.into()),
        }
    }

    /// Turns a request into a command: the leader's ids, times, owner and checks (ARCHITECTURE.md).
    pub async fn stamp(&self, req: WriteRequest) -> NodeResult<CommandV1> {
        if let WriteRequest::Command {
            command: Command::V1(CommandV1::ControlDone { .. }),
        } = &req
        {
            // During a rolling upgrade an older member could not decode it and would stop.
            if !self.every_member_applies(applies_control_done).await? {
                return Err(NodeError::new(
                    ErrorCode::UnsupportedVersion,
                    "not every member applies control_done yet (a rolling upgrade is in progress)",
                ));
            }
        }
        let now = clock::now();
        Ok(match req {
            WriteRequest::Submit {
                caller,
                job,
                idempotency_key,
            } => {
                let (job, owner, idempotency) =
                    self.stamp_submit(&caller, &job, idempotency_key, &now).await?;
                CommandV1::Submit {
                    job: Box::new(job),
                    owner,
                    idempotency,
                }
            }
            WriteRequest::Control { id, operation } => CommandV1::Control {
                id,
                operation,
                time: now,
            },
            WriteRequest::Delete { id } => CommandV1::Delete { id },
            WriteRequest::Command {
                command: Command::V1(CommandV1::Batch(_)),
            } => {
                return Err(NodeError::invalid(
                    "batches are formed by the leader's proposal queue, not sent to it",
                ))
            }
            WriteRequest::Command {
                command: Command::V1(mut c),
            } => {
                match &mut c {
                    CommandV1::Update(u) => u.time = now,
                    CommandV1::LaunchIntent { time, .. } => *time = now,
                    CommandV1::NodeLost { time, .. } => *time = now,
                    _ => {}
                }
                c
            }
            WriteRequest::Command {
                command: Command::Unknown { version, .. },
            } => {
                return Err(NodeError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("command version {version} is not supported by the leader"),
                ))
            }
        })
    }

    async fn stamp_submit(
        &self,
        caller: &Caller,
        body: &str,
        idempotency_key: Option<String>,
        now: &str,
    ) -> NodeResult<(Job, NodeId, Option<Idempotency>)> {
        let mut job = decode_submission(body, self.config.server.max_request_body_bytes)?;
        let user = match job.user.take().filter(|u| !u.is_empty()) {
            Some(u) if u != caller.user && !caller.admin => {
                return Err(NodeError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "user {} may not submit jobs on behalf of {u}; only admins may",
                        caller.user
                    ),
                ))
            }
            Some(u) => u,
            None => caller.user.clone(),
        };
        if user.is_empty() {
            return Err(NodeError::invalid("the submitting user is unknown"));
        }
        // Whatever the client put in system fields is replaced.
        job.id = None;
        job.status = None;
        job.status_message = None;
        job.status_code = None;
        job.pid = None;
        job.exit_code = None;
        job.host = None;
        job.submission_time = None;
        job.last_update_time = None;
        job.plugin_job_id = None;
        job.instance_id = None;
        job.metadata = job
            .metadata
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(m.0.get())
                    .and_then(|v| RawJson::normalized(&v))
                    .map_err(|e| NodeError::invalid(format!("job field 'metadata' is not valid: {e}")))
            })
            .transpose()?;
        job.user = Some(user.clone());
        let idempotency = idempotency_key
            .filter(|k| !k.is_empty())
            .map(|key| -> NodeResult<Idempotency> {
                if key.len() > 256 {
                    return Err(NodeError::invalid(
                        "Idempotency-Key is longer than 256 characters",
                    ));
                }
                Ok(Idempotency {
                    key,
                    fingerprint: fingerprint(&user, &job),
                    expires_at: clock::seconds_ahead(self.config.server.job_expiry_hours * 3600),
                })
            })
            .transpose()?;
        // What is knowable now is refused now (docs/security.md); then the filter files apply
        // once, here, and their result is stored with the job (docs/configuration.md).
        let filters = self.filters.clone();
        let cluster = self
            .config
            .clusters
            .iter()
            .find(|c| c.name == job.cluster)
            .cloned();
        let admin = caller.admin;
        let mut stamped = job;
        job = tokio::task::spawn_blocking(move || -> NodeResult<Job> {
            let groups = crate::admission::admit(&stamped, admin, cluster.as_ref(), &filters)?;
            filters.apply(&mut stamped, &groups);
            Ok(stamped)
        })
        .await
        .map_err(NodeError::internal)??;
        let owner = self.place(&job.cluster).await?;
        let id = uuid::Uuid::now_v7().to_string();
        // Inside the call's span: ties the gateway's request id to the job id (runbook).
        tracing::debug!(job_id = %id, user = %user, owner, cluster = %job.cluster, "submit stamped");
        job.id = Some(id);
        job.submission_time = Some(now.to_string());
        job.last_update_time = Some(now.to_string());
        Ok((job, owner, idempotency))
    }

    /// Whether every member (voter or learner) registered a version for which `applies` holds;
    /// one that has not registered yet counts as older.
    async fn every_member_applies(&self, applies: fn(&str) -> bool) -> NodeResult<bool> {
        let (voters, learners) = self.members();
        let members: Vec<NodeId> = voters.into_iter().chain(learners).collect();
        let records = self.table(|sm| sm.nodes()).await?;
        Ok(members
            .iter()
            .all(|id| records.iter().any(|r| r.id == *id && applies(&r.version))))
    }

    /// Picks the owner of a new job: a non-draining member hosting the cluster, heard from
    /// within node-lost-timeout-seconds, with the fewest active jobs, ties by node id (ARCHITECTURE.md).
    async fn place(&self, cluster: &str) -> NodeResult<NodeId> {
        let (voters, learners) = self.members();
        let members: Vec<NodeId> = voters.into_iter().chain(learners).collect();
        // One read of the table: the member records and the active-job count of each host.
        let wanted = cluster.to_string();
        let (records, hosting) = self
            .table(move |sm| {
                sm.read(|t, _| {
                    let records = launcher_storage::table::nodes(t)?;
                    let mut hosting = Vec::new();
                    for n in records
                        .iter()
                        .filter(|n| !n.removed && members.contains(&n.id) && n.hosts(&wanted).is_some())
                    {
                        hosting.push((n.clone(), launcher_storage::table::active_job_ids(t, n.id)?.len()));
                    }
                    Ok((records, hosting))
                })
            })
            .await?;
        if hosting.is_empty() {
            let mut known: Vec<String> = records
                .iter()
                .filter(|n| !n.removed)
                .flat_map(|n| n.clusters.iter().map(|c| c.name.clone()))
                .collect();
            known.sort();
            known.dedup();
            return Err(NodeError::invalid(format!(
                "no node hosts cluster '{cluster}'; configured clusters: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let best = hosting
            .iter()
            .filter(|(n, _)| !n.draining && self.is_placeable(n.id))
            .map(|(n, active)| (*active, n.id))
            .min();
        best.map(|(_, id)| id).ok_or_else(|| {
            NodeError::unavailable(format!(
                "every node hosting cluster '{cluster}' is draining or unreachable; retry later"
            ))
        })
    }
}

/// Outcome of a proposal that did not succeed here.
enum Retry {
    /// Leadership moved before anything was proposed.
    Elsewhere,
    Fatal(NodeError),
}

/// Metadata marking a refusal because the callee is not the leader (nothing was proposed).
pub const NOT_LEADER_HEADER: &str = "launcher-not-leader";

fn not_leader_status() -> tonic::Status {
    let mut s: tonic::Status = NodeError::unavailable("this node is no longer the leader").into();
    s.metadata_mut().insert(
        NOT_LEADER_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    s
}

/// Whether a failed call to another node may have reached it: what decides if a write that
/// must not be proposed twice can be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The request never left this node, or the callee refused it before acting on it.
    Never,
    /// It may have been received and acted on.
    Maybe,
}

/// Classifies a failed call to another node.
pub fn sent(status: &tonic::Status) -> Sent {
    if status.metadata().get(NOT_LEADER_HEADER).is_some() {
        return Sent::Never;
    }
    // Only the transport's own errors tell: a status the callee sent, whatever its code and
    // message, came after the callee had the request. Connecting happens before any byte of
    // the request is written, so a failure to connect (tonic marks it; a refused connection
    // is one even when it reaches us unwrapped) means the request never left.
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            return Sent::Never;
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return Sent::Never;
        }
        cause = e.source();
    }
    Sent::Maybe
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use launcher_proto::raft::raft_client::RaftClient;
    use launcher_proto::raft::ForwardedWrite;
    use tokio::io::AsyncReadExt;
    use tonic::transport::Endpoint;

    use super::*;

    /// Calls `client_write` on `addr` the way `forward` does and returns the failure.
    async fn failed_call(addr: std::net::SocketAddr) -> tonic::Status {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let mut call = tonic::Request::new(ForwardedWrite {
            request: b"{}".to_vec(),
        });
        call.set_timeout(Duration::from_secs(5));
        RaftClient::new(channel)
            .client_write(call)
            .await
            .expect_err("nothing answers there")
    }

    /// A port nobody listens on refuses the connection: the request was never sent.
    #[tokio::test]
    async fn a_refused_connection_was_never_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let status = failed_call(port).await;
        assert_eq!(sent(&status), Sent::Never, "{status:?}");
    }

    /// A server that reads the request and then resets the connection may have acted on it:
    /// the request may have been sent, whatever the error's message says.
    #[tokio::test]
    async fn a_reset_after_the_request_arrived_may_have_been_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            // Read until the request's frames (headers and body) are in, then reset.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(2).any(|w| w == b"{}") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed first");
                got.extend_from_slice(&buf[..n]);
            }
            conn.set_linger(Some(Duration::ZERO)).unwrap();
            drop(conn);
        });
        let status = failed_call(addr).await;
        server.await.unwrap();
        assert_eq!(sent(&status), Sent::Maybe, "{status:?}");
    }

    /// A server that answers only `client_write`, with `answer`, after counting the call.
    struct Answers {
        answer: tonic::Status,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl launcher_proto::raft::raft_server::Raft for Answers {
        type WatchLeaderStream = crate::raft_service::LeaderWatch;
        async fn watch_leader(
            &self,
            _: tonic::Request<launcher_proto::raft::WatchLeaderRequest>,
        ) -> Result<tonic::Response<Self::WatchLeaderStream>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn append_entries(
            &self,
            _: tonic::Request<launcher_proto::raft::RaftPayload>,
        ) -> Result<tonic::Response<launcher_proto::raft::RaftReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn vote(
            &self,
            _: tonic::Request<launcher_proto::raft::RaftPayload>,
        ) -> Result<tonic::Response<launcher_proto::raft::RaftReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn install_snapshot(
            &self,
            _: tonic::Request<launcher_proto::raft::SnapshotChunk>,
        ) -> Result<tonic::Response<launcher_proto::raft::RaftReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn client_write(
            &self,
            _: tonic::Request<ForwardedWrite>,
        ) -> Result<tonic::Response<launcher_proto::raft::ForwardedWriteReply>, tonic::Status> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(self.answer.clone())
        }
        async fn read_index(
            &self,
            _: tonic::Request<launcher_proto::raft::ReadIndexRequest>,
        ) -> Result<tonic::Response<launcher_proto::raft::ReadIndexReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn heartbeat(
            &self,
            _: tonic::Request<launcher_proto::raft::NodeHeartbeat>,
        ) -> Result<tonic::Response<launcher_proto::raft::NodeHeartbeatReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn discover(
            &self,
            _: tonic::Request<launcher_proto::raft::DiscoverRequest>,
        ) -> Result<tonic::Response<launcher_proto::raft::DiscoverReply>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
    }

    /// Serves `answer` to every forwarded write; returns the address and the call counter.
    async fn answering(
        answer: tonic::Status,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = std::sync::Arc::default();
        let svc = launcher_proto::raft::raft_server::RaftServer::new(Answers {
            answer,
            calls: std::sync::Arc::clone(&calls),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, calls)
    }

    /// An Unavailable answer from the callee itself came after it received (and may have acted
    /// on) the request, even when its message talks about connections.
    #[tokio::test]
    async fn an_answer_from_the_callee_may_have_been_acted_on() {
        let (addr, calls) = answering(tonic::Status::unavailable(
            "lost the connection to a follower while committing",
        ))
        .await;
        let status = failed_call(addr).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(sent(&status), Sent::Maybe, "{status:?}");
    }

    /// A leader that refused the write because it no longer leads proposed nothing.
    #[test]
    fn a_not_leader_refusal_was_never_acted_on() {
        assert_eq!(sent(&not_leader_status()), Sent::Never);
        assert_eq!(sent(&NodeError::unavailable("x").into()), Sent::Maybe);
    }
}
