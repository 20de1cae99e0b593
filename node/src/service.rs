//! The launcher gRPC service (`proto/launcher.proto`): what the gateway calls.
//!
//! Isolation (docs/api.md) is enforced here, on the `{user, admin}` the gateway passes:
//! users see only their own jobs, and another user's job is "not found".

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use launcher_proto::launcher::launcher_server::Launcher;
use launcher_proto::launcher::{
    self as pb, ClusterInfoReply, ClusterInfoRequest, ControlJobReply, ControlJobRequest, DrainRequest,
    GetJobRequest, IndexReply, JobChunk, JobNetwork, JobReply, JobRequest, JoinReply, JoinRequest,
    LeaveRequest, ListJobsRequest, MembersReply, MembersRequest, OutputChunk, OutputRequest, ResourceUse,
    SaveSnapshotRequest, SnapshotPart, StatusEvent, StatusReply, StatusRequest, SubmitJobRequest,
};
use launcher_storage::command::ControlOp;
use launcher_storage::table::ListFilter;
use launcher_storage::{Command, CommandV1, ErrorCode, Job, JobStatus, Response as SmResponse};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::clock;
use crate::error::{NodeError, NodeResult};
use crate::raft_service::NodeCell;
use crate::reads::ReadMode;
use crate::state::NodeState;
use crate::writes::{Caller, WriteRequest};

/// Jobs per streamed listing chunk.
const LIST_CHUNK_JOBS: usize = 256;
/// Bytes per streamed listing chunk (well under the gRPC message limit).
const LIST_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Bytes per snapshot part.
const SNAPSHOT_PART_BYTES: usize = 1024 * 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The launcher service.
#[derive(Clone)]
pub struct LauncherService {
    cell: Arc<NodeCell>,
}

impl LauncherService {
    /// A service over `cell`.
    pub fn new(cell: Arc<NodeCell>) -> Self {
        LauncherService { cell }
    }

    fn enter<T>(&self, req: &Request<T>, allow_unbound: bool) -> Result<Arc<NodeState>, Status> {
        self.cell.auth.check(req, allow_unbound)?;
        self.cell.shared().cloned()
    }
}

fn caller(c: &Option<pb::Caller>) -> NodeResult<Caller> {
    match c {
        Some(c) if !c.user.is_empty() => Ok(Caller {
            user: c.user.clone(),
            admin: c.admin,
        }),
        _ => Err(NodeError::new(
            ErrorCode::Unauthorized,
            "the request names no calling user",
        )),
    }
}

fn read_mode(r: &Option<pb::ReadOptions>) -> ReadMode {
    match r {
        Some(r) => ReadMode {
            stale: r.consistency == pb::Consistency::Stale as i32,
            min_index: r.min_index,
        },
        None => ReadMode::default(),
    }
}

fn require_admin(c: &Caller, what: &str) -> NodeResult<()> {
    if c.admin {
        Ok(())
    } else {
        Err(NodeError::new(
            ErrorCode::Forbidden,
            format!("only admins may {what}"),
        ))
    }
}

/// Keeps `id` plus the requested fields of a job, in canonical order.
pub fn project(bytes: Vec<u8>, fields: &[String]) -> NodeResult<Vec<u8>> {
    if fields.is_empty() {
        return Ok(bytes);
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(NodeError::internal)?;
    map.retain(|k, _| k == "id" || fields.iter().any(|f| f == k));
    serde_json::to_vec(&map).map_err(NodeError::internal)
}

fn job_owner_user(bytes: &[u8]) -> NodeResult<Job> {
    Job::from_canonical(bytes).map_err(NodeError::internal)
}

fn visible(job: &Job, c: &Caller) -> bool {
    c.admin || job.user.as_deref() == Some(c.user.as_str())
}

impl NodeState {
    /// A job the caller may see, after a read barrier; others' jobs are "not found".
    pub async fn visible_job(
        &self,
        caller: &Caller,
        id: &str,
        mode: ReadMode,
    ) -> NodeResult<(u64, Vec<u8>, Job)> {
        self.read_barrier(mode).await?;
        let key = id.to_string();
        let (index, bytes) = self.table(move |sm| sm.get_job(&key)).await?;
        let bytes = bytes.ok_or_else(|| NodeError::job_not_found(id))?;
        let job = job_owner_user(&bytes)?;
        if !visible(&job, caller) {
            return Err(NodeError::job_not_found(id));
        }
        Ok((index, bytes, job))
    }

    fn list_filter(&self, req: &ListJobsRequest, caller: &Caller) -> NodeResult<ListFilter> {
        let user = match req.user.as_str() {
            "" => Some(caller.user.clone()),
            u if u == caller.user => Some(caller.user.clone()),
            "*" => {
                require_admin(caller, "list every user's jobs (user=*)")?;
                None
            }
            other => {
                require_admin(caller, &format!("list the jobs of user {other}"))?;
                Some(other.to_string())
            }
        };
        let statuses = req
            .statuses
            .iter()
            .map(|s| {
                JobStatus::parse(s).ok_or_else(|| {
                    NodeError::invalid(format!(
                        "unknown status '{s}'; use one of Pending, Running, Suspended, Finished, Failed, Killed, Canceled"
                    ))
                })
            })
            .collect::<NodeResult<Vec<_>>>()?;
        let time = |t: &str| -> NodeResult<Option<String>> {
            if t.is_empty() {
                Ok(None)
            } else {
                clock::normalize(t).map(Some).map_err(NodeError::invalid)
            }
        };
        Ok(ListFilter {
            user,
            statuses,
            tags: req.tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
            start_time: time(&req.start_time)?,
            end_time: time(&req.end_time)?,
            after: (!req.after.is_empty()).then(|| req.after.clone()),
            limit: (req.limit > 0).then_some(req.limit as usize),
        })
    }

    /// The cluster status as this node reports it (docs/api.md `GET /status`).
    pub async fn local_status(&self) -> StatusReply {
        // Table reads first, off the async threads; then one consistent look at Raft's metrics.
        let (records, ignored) = self
            .table(|sm| Ok((sm.nodes()?, sm.ignored_updates()?)))
            .await
            .unwrap_or_default();
        let m = self.raft.metrics();
        let m = m.borrow().clone();
        let membership = m.membership_config.membership();
        let leader = m.current_leader;
        let mut nodes = Vec::new();
        for (id, node) in membership.nodes() {
            let voter = membership.voter_ids().any(|v| v == *id);
            let role = if Some(*id) == leader {
                "leader"
            } else if !voter {
                "learner"
            } else if *id == self.id && m.state == openraft::ServerState::Candidate {
                "candidate"
            } else {
                "follower"
            };
            let i_lead = leader == Some(self.id);
            let healthy = if *id == self.id {
                leader.is_some()
            } else {
                i_lead && self.is_healthy(*id)
            };
            let applied = if *id == self.id {
                m.last_applied.map_or(0, |l| l.index)
            } else {
                self.liveness.seen(*id).map_or(0, |s| s.applied)
            };
            nodes.push(pb::NodeStatus {
                id: *id,
                address: node.addr.clone(),
                role: role.into(),
                healthy,
                applied_index: applied,
                draining: records.iter().any(|r| r.id == *id && r.draining),
                voter,
            });
        }
        // A leader without a recent quorum acknowledgement (alone in a minority: openraft 0.9
        // leaders do not step down by themselves) can neither write nor read: no quorum, Red.
        let quorum_lost = leader == Some(self.id)
            && m.millis_since_quorum_ack
                .is_none_or(|ms| ms > self.config.node.election_timeout_max_ms);
        let status = match leader {
            None => "Red",
            Some(_) if quorum_lost => "Red",
            Some(_) if nodes.iter().all(|n| n.healthy) => "Green",
            Some(_) => "Yellow",
        };
        StatusReply {
            status: status.into(),
            leader: leader.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            nodes,
            version: crate::state::VERSION.into(),
            node_id: self.id,
            cluster_id: self.cluster_id(),
            term: m.current_term,
            ignored_updates: ignored,
            membership_changing: membership.get_joint_config().len() > 1,
        }
    }
}

fn sm_error(resp: SmResponse) -> NodeError {
    match resp {
        SmResponse::Error { code, message } => NodeError::new(code, message),
        other => NodeError::internal(format!("unexpected state machine answer {other:?}")),
    }
}

#[tonic::async_trait]
impl Launcher for LauncherService {
    async fn submit_job(&self, req: Request<SubmitJobRequest>) -> Result<Response<JobReply>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let job = String::from_utf8(r.job).map_err(|_| NodeError::invalid("the job is not UTF-8 JSON"))?;
        let key = (!r.idempotency_key.is_empty()).then_some(r.idempotency_key);
        let (resp, index) = shared
            .write(WriteRequest::Submit {
                caller,
                job,
                idempotency_key: key,
            })
            .await?;
        match resp {
            SmResponse::Job { job, created } => Ok(Response::new(JobReply {
                job: job.into_bytes(),
                created,
                applied_index: index,
            })),
            other => Err(sm_error(other).into()),
        }
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<JobReply>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let (index, bytes, _) = shared.visible_job(&caller, &r.id, read_mode(&r.read)).await?;
        Ok(Response::new(JobReply {
            job: project(bytes, &r.fields)?,
            created: false,
            applied_index: index,
        }))
    }

    type ListJobsStream = BoxStream<JobChunk>;

    async fn list_jobs(
        &self,
        req: Request<ListJobsRequest>,
    ) -> Result<Response<Self::ListJobsStream>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let filter = shared.list_filter(&r, &caller)?;
        shared.read_barrier(read_mode(&r.read)).await?;
        let (index, jobs) = shared.table(move |sm| sm.list(&filter)).await?;
        let fields = r.fields;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut chunk = JobChunk {
                jobs: Vec::new(),
                applied_index: index,
            };
            let mut size = 0;
            for bytes in jobs {
                let bytes = match project(bytes, &fields) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                size += bytes.len();
                chunk.jobs.push(bytes);
                if chunk.jobs.len() >= LIST_CHUNK_JOBS || size >= LIST_CHUNK_BYTES {
                    let full = std::mem::replace(
                        &mut chunk,
                        JobChunk {
                            jobs: Vec::new(),
                            applied_index: index,
                        },
                    );
                    size = 0;
                    if tx.send(Ok(full)).await.is_err() {
                        return; // the caller went away
                    }
                }
            }
            // Always at least one chunk, so an empty listing still reports its index.
            let _ = tx.send(Ok(chunk)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn control_job(
        &self,
        req: Request<ControlJobRequest>,
    ) -> Result<Response<ControlJobReply>, Status> {
        let shared = self.enter(&req, false)?;
        let was_forwarded = crate::owner::is_forwarded(&req);
        let committed_at = crate::owner::committed_index(&req);
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let op = ControlOp::parse(&r.operation).ok_or_else(|| {
            NodeError::invalid(format!(
                "unknown operation '{}'; use suspend, resume, stop, kill or cancel",
                r.operation
            ))
        })?;
        if was_forwarded {
            // The entry node checked access and committed the request; carry it out.
            let reply = shared.control_at_owner(&r, op, true, committed_at).await?;
            return Ok(Response::new(reply));
        }
        shared.visible_job(&caller, &r.id, ReadMode::default()).await?;
        // The request is committed first (every change is a Raft command); a job that never
        // reached its plugin is canceled by the table alone.
        let (resp, index) = shared
            .write(WriteRequest::Control {
                id: r.id.clone(),
                operation: op,
            })
            .await?;
        match resp {
            SmResponse::Applied { count, .. } if count > 0 => Ok(Response::new(ControlJobReply {
                status_message: "Job canceled before it started".to_string(),
                operation_complete: true,
                applied_index: index,
            })),
            SmResponse::Applied { .. } => {
                shared.wait_applied(index).await?;
                match shared.control_at_owner(&r, op, false, index).await {
                    Ok(mut reply) => {
                        reply.applied_index = reply.applied_index.max(index);
                        Ok(Response::new(reply))
                    }
                    // Committed, so durable: the job's owner (or the node that adopts the job
                    // if the owner is gone) carries it out when it drives the job again. The
                    // caller hears that it was taken, not done (the API's operationComplete).
                    Err(e) if e.code == ErrorCode::Unavailable => {
                        tracing::info!(job_id = %r.id, operation = ?op, error = %e.message,
                            "control request committed; its owner cannot be reached now");
                        Ok(Response::new(ControlJobReply {
                            status_message: format!(
                                "The request was recorded, but the job's node cannot be reached now \
                                 ({}); it is carried out as soon as that node, or the node that takes \
                                 the job over, drives the job again",
                                e.message
                            ),
                            operation_complete: false,
                            applied_index: index,
                        }))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            other => Err(sm_error(other).into()),
        }
    }

    async fn delete_job(&self, req: Request<JobRequest>) -> Result<Response<IndexReply>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        shared.visible_job(&caller, &r.id, ReadMode::default()).await?;
        let (resp, index) = shared.write(WriteRequest::Delete { id: r.id }).await?;
        match resp {
            SmResponse::Applied { .. } => Ok(Response::new(IndexReply { applied_index: index })),
            other => Err(sm_error(other).into()),
        }
    }

    type StreamStatusStream = BoxStream<StatusEvent>;

    /// Status changes of one job, from the replicated state, until it ends or the caller leaves.
    async fn stream_status(
        &self,
        req: Request<JobRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let mode = read_mode(&r.read);
        shared.visible_job(&caller, &r.id, mode).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let id = r.id;
        tokio::spawn(async move {
            let mut metrics = shared.raft.metrics();
            let mut last: Option<(Option<JobStatus>, Option<String>)> = None;
            loop {
                let key = id.clone();
                let got = shared.table(move |sm| sm.get_job(&key)).await;
                let (index, job) = match got {
                    Ok((i, Some(b))) => (i, Job::from_canonical(&b).ok()),
                    Ok((_, None)) => return, // deleted: the stream ends
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let Some(job) = job else { return };
                let now = (job.status, job.status_message.clone());
                if last.as_ref() != Some(&now) {
                    let event = serde_json::json!({
                        "id": job.id, "status": job.status(), "statusMessage": job.status_message,
                        "lastUpdateTime": job.last_update_time,
                    });
                    let ev = StatusEvent {
                        event: event.to_string().into_bytes(),
                        applied_index: index,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                if job.status().is_terminal() {
                    return;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type StreamOutputStream = BoxStream<OutputChunk>;

    /// The job's output, served by its owner's plugin (forwarded there from other nodes).
    async fn stream_output(
        &self,
        req: Request<OutputRequest>,
    ) -> Result<Response<Self::StreamOutputStream>, Status> {
        let shared = self.enter(&req, false)?;
        let was_forwarded = crate::owner::is_forwarded(&req);
        let r = req.into_inner();
        shared
            .visible_job(&caller(&r.caller)?, &r.id, ReadMode::default())
            .await?;
        if !(r.follow && shared.not_launched_yet(&r.id).await?) {
            return Ok(Response::new(shared.output_at_owner(&r, was_forwarded).await?));
        }
        // Followed output of a job its plugin does not have yet: the stream starts now and
        // follows the output once the job is launched (or ends empty if it never is).
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            use futures::StreamExt;
            if !shared.until_launched(&r.id, &tx).await {
                return;
            }
            match shared.output_at_owner(&r, was_forwarded).await {
                Ok(mut chunks) => {
                    while let Some(chunk) = chunks.next().await {
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type StreamResourceUseStream = BoxStream<ResourceUse>;

    /// The job's resource use until it ends, from its owner's plugin.
    async fn stream_resource_use(
        &self,
        req: Request<JobRequest>,
    ) -> Result<Response<Self::StreamResourceUseStream>, Status> {
        let shared = self.enter(&req, false)?;
        let was_forwarded = crate::owner::is_forwarded(&req);
        let r = req.into_inner();
        shared
            .visible_job(&caller(&r.caller)?, &r.id, read_mode(&r.read))
            .await?;
        Ok(Response::new(
            shared.resource_use_at_owner(&r, was_forwarded).await?,
        ))
    }

    /// Where the job runs: host and addresses, from its owner's plugin.
    async fn get_job_network(&self, req: Request<JobRequest>) -> Result<Response<JobNetwork>, Status> {
        let shared = self.enter(&req, false)?;
        let was_forwarded = crate::owner::is_forwarded(&req);
        let r = req.into_inner();
        shared
            .visible_job(&caller(&r.caller)?, &r.id, read_mode(&r.read))
            .await?;
        Ok(Response::new(shared.network_at_owner(&r, was_forwarded).await?))
    }

    /// Every cluster's info, each from a plugin serving it: this node's own, or a hosting node's.
    async fn cluster_info(
        &self,
        req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoReply>, Status> {
        let shared = self.enter(&req, false)?;
        let was_forwarded = crate::owner::is_forwarded(&req);
        let r = req.into_inner();
        let caller = caller(&r.caller)?;
        let records = shared.table(|sm| sm.nodes()).await?;
        let mut names: Vec<String> = records
            .iter()
            .filter(|n| !n.removed)
            .flat_map(|n| n.clusters.iter().map(|c| c.name.clone()))
            .filter(|n| r.cluster.is_empty() || *n == r.cluster)
            .collect();
        names.sort();
        names.dedup();
        let mut clusters = Vec::with_capacity(names.len());
        for name in names {
            let hosts: Vec<String> = records
                .iter()
                .filter(|n| !n.removed && n.id != shared.id && n.hosts(&name).is_some())
                .filter_map(|n| shared.addr_of(n.id))
                .collect();
            let info = shared
                .cluster_info_of(&caller, &name, &hosts, was_forwarded)
                .await?;
            clusters.push(info);
        }
        let clusters = serde_json::to_vec(&clusters).map_err(NodeError::internal)?;
        Ok(Response::new(ClusterInfoReply { clusters }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let shared = self.enter(&req, true)?;
        Ok(Response::new(shared.cluster_status().await))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let shared = self.enter(&req, true)?;
        Ok(Response::new(shared.handle_join(req.into_inner()).await?))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<IndexReply>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        require_admin(&caller(&r.caller)?, "remove cluster members")?;
        let index = shared.remove_member(r.node_id).await?;
        Ok(Response::new(IndexReply { applied_index: index }))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<IndexReply>, Status> {
        let shared = self.enter(&req, false)?;
        let r = req.into_inner();
        require_admin(&caller(&r.caller)?, "drain cluster members")?;
        let cmd = Command::V1(CommandV1::SetDraining {
            node: r.node_id,
            draining: r.draining,
        });
        let (resp, index) = shared.write(WriteRequest::Command { command: cmd }).await?;
        match resp {
            SmResponse::Applied { .. } => Ok(Response::new(IndexReply { applied_index: index })),
            other => Err(sm_error(other).into()),
        }
    }

    async fn members(&self, req: Request<MembersRequest>) -> Result<Response<MembersReply>, Status> {
        let shared = self.enter(&req, false)?;
        require_admin(&caller(&req.get_ref().caller)?, "list cluster members")?;
        // The leader's view, as for Status: a follower alone hears no member's heartbeat.
        let status = shared.cluster_status().await;
        Ok(Response::new(MembersReply {
            members: status.nodes,
            applied_index: status.applied_index,
        }))
    }

    type SaveSnapshotStream = BoxStream<SnapshotPart>;

    async fn save_snapshot(
        &self,
        req: Request<SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let shared = self.enter(&req, false)?;
        require_admin(&caller(&req.get_ref().caller)?, "export snapshots")?;
        shared.read_barrier(ReadMode::default()).await?;
        let dir = shared.config.node.data_dir.clone();
        // Exported to a file that is unlinked at once and streamed from its open handle: the
        // snapshot of a large table never sits in memory, and nothing is left on disk.
        let file = shared
            .table(move |sm| {
                let tmp = tempfile_in(&dir);
                let exported = sm.export_snapshot(&tmp).map_err(|e| {
                    launcher_storage::table::ApplyError::Engine(std::io::Error::other(e.to_string()).into())
                });
                let file = exported.and_then(|_| {
                    std::fs::File::open(&tmp)
                        .map_err(|e| launcher_storage::table::ApplyError::Engine(e.into()))
                });
                let _ = std::fs::remove_file(&tmp);
                file
            })
            .await?;
        let parts = futures::stream::try_unfold(tokio::fs::File::from_std(file), |mut file| async move {
            use tokio::io::AsyncReadExt;
            // A full part, or what is left before the end of the file.
            let mut data = Vec::with_capacity(SNAPSHOT_PART_BYTES);
            (&mut file)
                .take(SNAPSHOT_PART_BYTES as u64)
                .read_to_end(&mut data)
                .await
                .map_err(|e| Status::internal(format!("reading the exported snapshot: {e}")))?;
            Ok((!data.is_empty()).then_some((SnapshotPart { data }, file)))
        });
        Ok(Response::new(Box::pin(parts)))
    }
}

impl NodeState {
    /// Whether job `id` is Pending without a plugin job id (this replica's view).
    async fn not_launched_yet(&self, id: &str) -> NodeResult<bool> {
        let key = id.to_string();
        let job = self.table(move |sm| sm.job_with_meta(&key)).await?;
        Ok(job.is_some_and(|(j, _)| {
            j.status() == JobStatus::Pending && j.plugin_job_id.is_none() && self.jobs.plugin_id(id).is_none()
        }))
    }

    /// Waits until job `id` has a plugin job id (true), or ended, vanished or the receiver of
    /// `tx` went away first (false). Wakes on every applied entry, like the status stream.
    async fn until_launched<T>(&self, id: &str, tx: &tokio::sync::mpsc::Sender<T>) -> bool {
        let mut metrics = self.raft.metrics();
        loop {
            match self.not_launched_yet(id).await {
                Ok(true) => {}
                Ok(false) => {
                    // Launched, or no longer Pending without a launch: let the owner answer.
                    return true;
                }
                Err(_) => return false,
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return false },
                _ = tx.closed() => return false,
            }
        }
    }

    /// The cluster's health as the leader sees it (only the leader hears every member's
    /// heartbeat): this node's own view on the leader, else the leader's, asked over gRPC with
    /// the internal credential; Red with what this node knows when no leader answers.
    async fn cluster_status(&self) -> StatusReply {
        if self.is_leader() {
            return self.local_status().await;
        }
        if let Ok((_, addr)) = self.leader_addr() {
            let mut call = Request::new(StatusRequest {});
            call.set_timeout(Duration::from_secs(2));
            if let Ok(reply) = self.peers.launcher(&addr).status(call).await {
                // The leader's view of the cluster, but this node's own applied index: the
                // reply names this node, and a caller routing reads by index must see what
                // this node has applied (a joining node may still be installing a snapshot).
                let mut reply = reply.into_inner();
                reply.node_id = self.id;
                reply.applied_index = self.applied_index();
                return reply;
            }
        }
        let mut local = self.local_status().await;
        local.status = "Red".into();
        local
    }

    /// One cluster's info: from this node's plugin, else from the first hosting node that answers.
    async fn cluster_info_of(
        &self,
        caller: &Caller,
        name: &str,
        hosts: &[String],
        was_forwarded: bool,
    ) -> NodeResult<serde_json::Value> {
        use launcher_plugin_api::messages as pm;
        if let Some(plugin) = self.plugins.get(name) {
            let req = pm::ClusterInfoRequest {
                request_username: caller.user.clone(),
                username: caller.user.clone(),
            };
            let info: pm::ClusterInfoResponse = plugin
                .call(launcher_plugin_api::envelope::RequestType::GetClusterInfo, &req)
                .await
                .map_err(|e| e.into_node_error(name))?;
            let mut v = serde_json::to_value(info).map_err(NodeError::internal)?;
            let mut obj = serde_json::Map::new();
            obj.insert("name".into(), name.into());
            if let serde_json::Value::Object(m) = &mut v {
                obj.append(m);
            }
            return Ok(serde_json::Value::Object(obj));
        }
        if !was_forwarded {
            for addr in hosts {
                let mut call = Request::new(ClusterInfoRequest {
                    caller: Some(pb::Caller {
                        user: caller.user.clone(),
                        admin: caller.admin,
                    }),
                    cluster: name.to_string(),
                });
                call.metadata_mut().insert(
                    crate::owner::FORWARDED_HEADER,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                call.set_timeout(Duration::from_secs(self.config.server.request_timeout_seconds));
                match self.peers.launcher(addr).cluster_info(call).await {
                    Ok(reply) => {
                        let list: Vec<serde_json::Value> =
                            serde_json::from_slice(&reply.into_inner().clusters)
                                .map_err(NodeError::internal)?;
                        if let Some(v) = list.into_iter().next() {
                            return Ok(v);
                        }
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "cluster info not available from this node"),
                }
            }
        }
        Err(NodeError::unavailable(format!(
            "no node hosting cluster '{name}' answered for its info; retry"
        )))
    }
}

fn tempfile_in(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(format!("export-{}.snap", uuid::Uuid::now_v7()))
}
