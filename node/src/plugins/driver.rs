//! The job driver: what a node does for the jobs it owns (DESIGN §1).
//!
//! A scanner follows the replicated state and gives every non-terminal job this node owns a
//! worker task. The worker launches the job at most once (commit a launch intent, submit to the
//! plugin tagged `launcher-job:<id>`, commit the plugin's job id; after a crash in between, adopt
//! by tag or fail as `launch interrupted`, never resubmit), then turns what the plugin reports on
//! its status stream into Raft updates carrying the owner epoch and a per-job sequence number,
//! carries out control requests, and ends when the job does. A job the cluster takes away from
//! this node (node lost, canceled before launch) is fenced: its process is killed.
//!
//! **Architecture Invariant:** only this module submits jobs to plugins, and only after its
//! launch intent was committed; a job with a committed intent is never submitted again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use launcher_plugin_api::envelope::RequestType;
use launcher_plugin_api::messages::{
    self as pm, launcher_job_tag, ControlJobRequest, ControlJobResponse, GetJobRequest, JobStateResponse,
    JobStatusResponse, JobStreamRequest, SubmitJobRequest, LAUNCHER_JOB_TAG_PREFIX,
};
use launcher_storage::command::{ControlOp, JobUpdate};
use launcher_storage::table::{ControlRecord, JobMeta};
use launcher_storage::{CommandV1, ErrorCode, Job, JobStatus, NodeId, Response};
use tokio::sync::{mpsc, oneshot, watch};

use super::{PluginError, PluginHost};
use crate::error::{NodeError, NodeResult};
use crate::reads::ReadMode;
use crate::state::NodeState;
use crate::writes::WriteRequest;

/// Status messages for plugin job ids nobody has claimed yet, kept briefly: a job's first
/// status can overtake the SubmitJob answer that tells us its plugin id.
const ORPHAN_LIMIT: usize = 10_000;
/// How often the scanner looks at the job table even without new entries.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How often the scanner looks for committed control requests nobody told the worker about
/// (the node that took the request crashed, or its hand-off to this node failed).
const CONTROLS_EVERY: Duration = Duration::from_secs(5);
/// How soon a worker tries again a control request its plugin could not take.
const CONTROL_RETRY: Duration = Duration::from_secs(2);
/// Answers a worker keeps for callers that come after their request was carried out.
const ANSWERS_KEPT: usize = 32;

/// What a worker hears about.
pub enum Event {
    /// The plugin reported a status.
    Status(JobStatusResponse),
    /// The plugin restarted: re-read the job from it.
    Reconcile,
    /// The job is no longer this node's active job (ended, owner changed, deleted).
    Gone,
    /// A caller waits for its committed control request `op`: carry out the job's committed
    /// requests, then answer with the plugin's reply to it.
    Control(ControlOp, oneshot::Sender<NodeResult<ControlJobResponse>>),
    /// Committed control requests wait for this job: carry them out.
    Controls,
}

/// In-memory bookkeeping of the driver on this node.
#[derive(Default)]
pub struct Bookkeeping {
    workers: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
    index: Mutex<PluginIndex>,
    /// Jobs canceled while their launch was in flight: canceled as soon as the plugin has them.
    cancel_requested: Mutex<std::collections::HashSet<String>>,
    /// Committed control requests this node took off its jobs' queues, by operation and outcome.
    controls: [[std::sync::atomic::AtomicU64; ControlOutcome::ALL.len()]; CONTROL_OPS.len()],
}

/// Every control operation, in the order of [`Local::control_counts`].
pub const CONTROL_OPS: [ControlOp; 5] = [
    ControlOp::Suspend,
    ControlOp::Resume,
    ControlOp::Stop,
    ControlOp::Kill,
    ControlOp::Cancel,
];

/// What became of a committed control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The plugin carried it out.
    CarriedOut,
    /// The plugin refused it (the job had moved on); the answer went to the caller.
    Refused,
    /// Its effect was already there (carried out before a crash): nothing was sent.
    AlreadyDone,
}

impl ControlOutcome {
    pub const ALL: [ControlOutcome; 3] = [
        ControlOutcome::CarriedOut,
        ControlOutcome::Refused,
        ControlOutcome::AlreadyDone,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ControlOutcome::CarriedOut => "carried_out",
            ControlOutcome::Refused => "refused",
            ControlOutcome::AlreadyDone => "already_done",
        }
    }
}

fn op_label(op: ControlOp) -> &'static str {
    match op {
        ControlOp::Suspend => "suspend",
        ControlOp::Resume => "resume",
        ControlOp::Stop => "stop",
        ControlOp::Kill => "kill",
        ControlOp::Cancel => "cancel",
    }
}

#[derive(Default)]
struct PluginIndex {
    /// (cluster, plugin job id) → our job id.
    ours: HashMap<(String, String), String>,
    /// our job id → plugin job id (known before the Update carrying it is committed).
    plugin_ids: HashMap<String, String>,
    orphans: HashMap<(String, String), JobStatusResponse>,
    orphan_order: VecDeque<(String, String)>,
}

impl Bookkeeping {
    /// Jobs this node drives now (one worker each).
    pub fn driven(&self) -> usize {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Control requests taken off the queue so far: (operation, outcome, count).
    pub fn control_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (i, op) in CONTROL_OPS.iter().enumerate() {
            for (j, outcome) in ControlOutcome::ALL.iter().enumerate() {
                let n = self.controls[i][j].load(std::sync::atomic::Ordering::Relaxed);
                out.push((op_label(*op), outcome.label(), n));
            }
        }
        out
    }

    fn count_control(&self, op: ControlOp, outcome: ControlOutcome) {
        let i = CONTROL_OPS.iter().position(|o| *o == op).unwrap_or_default();
        let j = ControlOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.controls[i][j].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The plugin's id of our job `id`, if this node launched or adopted it.
    pub fn plugin_id(&self, id: &str) -> Option<String> {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plugin_ids
            .get(id)
            .cloned()
    }

    /// Records the mapping; returns a status that arrived before it.
    fn claim(&self, cluster: &str, plugin_id: &str, id: &str) -> Option<JobStatusResponse> {
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let key = (cluster.to_string(), plugin_id.to_string());
        g.ours.insert(key.clone(), id.to_string());
        g.plugin_ids.insert(id.to_string(), plugin_id.to_string());
        g.orphans.remove(&key)
    }

    fn forget(&self, cluster: &str, id: &str) {
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = g.plugin_ids.remove(id) {
            g.ours.remove(&(cluster.to_string(), pid));
        }
    }

    /// Routes a status message to the worker of its job, or parks it.
    fn route_status(&self, cluster: &str, st: JobStatusResponse) {
        let key = (cluster.to_string(), st.id.clone());
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let Some(id) = g.ours.get(&key).cloned() else {
            if g.orphans.insert(key.clone(), st).is_none() {
                g.orphan_order.push_back(key);
                while g.orphan_order.len() > ORPHAN_LIMIT {
                    if let Some(old) = g.orphan_order.pop_front() {
                        g.orphans.remove(&old);
                    }
                }
            }
            return;
        };
        drop(g);
        if let Some(tx) = self.workers.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            let _ = tx.send(Event::Status(st));
        }
    }

    fn send(&self, id: &str, ev: Event) -> Result<(), Event> {
        match self.workers.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            Some(tx) => tx.send(ev).map_err(|e| e.0),
            None => Err(ev),
        }
    }
}

/// Runs the driver until `stop` fires.
pub async fn run(shared: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    // Work from an up-to-date table: a node that just restarted may not have applied its log yet.
    while !*stop.borrow() {
        if shared.read_barrier(ReadMode::default()).await.is_ok() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
    }
    for plugin in shared.plugins.iter() {
        tokio::spawn(feed(shared.clone(), plugin.clone(), stop.clone()));
    }
    let mut metrics = shared.raft.metrics();
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_applied = u64::MAX;
    let mut controls_checked = tokio::time::Instant::now();
    while !*stop.borrow() {
        let applied = shared.applied_index();
        if applied != last_applied {
            last_applied = applied;
            if let Err(e) = scan(&shared, &stop).await {
                tracing::warn!(error = %e, "cannot scan this node's jobs");
            }
        }
        if controls_checked.elapsed() >= CONTROLS_EVERY {
            controls_checked = tokio::time::Instant::now();
            nudge_pending_controls(&shared).await;
        }
        tokio::select! {
            _ = metrics.changed() => {}
            _ = tick.tick() => { last_applied = u64::MAX; }
            _ = stop.changed() => {}
        }
    }
}

/// Starts workers for new jobs of this node and tells workers whose job left it.
async fn scan(shared: &Arc<NodeState>, stop: &watch::Receiver<bool>) -> NodeResult<()> {
    let me = shared.id;
    let active: std::collections::HashSet<String> = shared
        .table(move |sm| sm.active_job_ids(me))
        .await?
        .into_iter()
        .collect();
    let mut workers = shared.jobs.workers.lock().unwrap_or_else(|p| p.into_inner());
    workers.retain(|id, tx| {
        if active.contains(id) {
            return true;
        }
        let _ = tx.send(Event::Gone);
        false
    });
    for id in active {
        if workers.contains_key(&id) {
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        workers.insert(id.clone(), tx.clone());
        tokio::spawn(worker(shared.clone(), id, tx, rx, stop.clone()));
    }
    Ok(())
}

/// Tells the workers of this node's jobs that have committed control requests waiting to
/// carry them out: a request is durable work, whether or not anyone handed it to us.
async fn nudge_pending_controls(shared: &Arc<NodeState>) {
    let me = shared.id;
    match shared.table(move |sm| sm.pending_controls(Some(me))).await {
        Ok(jobs) => {
            for (id, _) in jobs {
                let _ = shared.jobs.send(&id, Event::Controls);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for pending control requests"),
    }
}

/// Follows one plugin's `*` status stream across restarts, and reconciles after each restart.
async fn feed(shared: Arc<NodeState>, plugin: Arc<PluginHost>, mut stop: watch::Receiver<bool>) {
    let mut generations = plugin.generations();
    let cluster = plugin.cluster().to_string();
    let mut first = true;
    while !*stop.borrow() {
        let all = JobStreamRequest {
            request_username: "*".into(),
            username: "*".into(),
            job_id: pm::ALL_JOBS.into(),
            encoded_job_id: pm::ALL_JOBS.into(),
            cancel: false,
        };
        generations.borrow_and_update();
        match plugin.stream(RequestType::GetJobStatus, &all).await {
            Ok(mut stream) => {
                // Statuses from before the stream opened are fetched by each worker (Reconcile).
                if !first {
                    reconcile_all(&shared, &plugin).await;
                }
                first = false;
                fence_strays(&shared, &plugin).await;
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(Ok(body)) => match pm::decode::<JobStatusResponse>(&body) {
                                Ok(st) => shared.jobs.route_status(&cluster, st),
                                Err(e) => tracing::warn!(%cluster, error = %e, "unreadable status from the plugin"),
                            },
                            Some(Err(e)) => {
                                tracing::warn!(%cluster, error = %e, "the plugin's status stream failed");
                                break;
                            }
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(e) => tracing::debug!(%cluster, error = %e, "cannot open the status stream yet"),
        }
        // Wait for the plugin's next incarnation (or retry soon if it is the same one).
        tokio::select! {
            _ = generations.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Tells every worker of `plugin`'s cluster to re-read its job from the plugin.
async fn reconcile_all(shared: &Arc<NodeState>, plugin: &Arc<PluginHost>) {
    let cluster = plugin.cluster().to_string();
    let ids: Vec<String> = shared
        .jobs
        .index
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ours
        .iter()
        .filter(|((c, _), _)| *c == cluster)
        .map(|(_, id)| id.clone())
        .collect();
    for id in ids {
        let _ = shared.jobs.send(&id, Event::Reconcile);
    }
}

/// Fencing (DESIGN §1): kills what the plugin still runs for jobs this node no longer owns
/// (declared lost while it was away, deleted, ended). Shared-scheduler clusters are left alone:
/// their jobs belong to whichever node adopted them.
async fn fence_strays(shared: &Arc<NodeState>, plugin: &Arc<PluginHost>) {
    let cluster = plugin.cluster().to_string();
    let shared_scheduler = shared
        .config
        .cluster(&cluster)
        .is_some_and(|c| c.shared_scheduler);
    if shared_scheduler {
        return;
    }
    let req = GetJobRequest {
        request_username: "*".into(),
        username: "*".into(),
        job_id: pm::ALL_JOBS.into(),
        encoded_job_id: pm::ALL_JOBS.into(),
        statuses: Some(vec!["Pending".into(), "Running".into(), "Suspended".into()]),
        ..Default::default()
    };
    let jobs = match plugin
        .call::<_, JobStateResponse>(RequestType::GetJob, &req)
        .await
    {
        Ok(r) => r.jobs,
        Err(e) => {
            tracing::warn!(%cluster, error = %e, "cannot list the plugin's jobs to fence strays");
            return;
        }
    };
    for pj in jobs {
        let Some(ours) = pj
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(LAUNCHER_JOB_TAG_PREFIX))
            .map(str::to_string)
        else {
            continue;
        };
        let key = ours.clone();
        let record = match shared.table(move |sm| sm.job_with_meta(&key)).await {
            Ok(r) => r,
            Err(_) => return,
        };
        if taken_from(shared.id, None, record.as_ref().map(|(j, m)| (j, m))) == Some(true) {
            let Some(pid) = pj.id.clone() else { continue };
            tracing::warn!(job_id = %ours, plugin_job_id = %pid, %cluster,
                "fencing: the plugin still runs a job this node no longer owns; killing it");
            kill_in_plugin(
                plugin,
                &pid,
                pj.user.as_deref().unwrap_or("*"),
                pj.status.as_deref(),
            )
            .await;
        }
    }
}

/// Whether the cluster took the job in `record` away from node `me`, which drives it in owner
/// epoch `epoch` (`None`: no worker drives it, as when a plugin stream opens): another owner, a
/// later epoch, an end the table decided (node lost, launch interrupted), or the job deleted
/// (only ended jobs are). A shared-scheduler job belongs to whichever node adopted it: `None`
/// when another node did (nothing here may stop it), and not taken when this node adopted it
/// again in a later epoch (its new worker drives the same process).
fn taken_from(me: NodeId, epoch: Option<u64>, record: Option<(&Job, &JobMeta)>) -> Option<bool> {
    match record {
        None => Some(true),
        Some((_, meta)) if meta.shared && meta.owner != me => None,
        Some((job, meta)) if meta.shared => Some(job.status().is_terminal()),
        Some((job, meta)) => {
            Some(meta.owner != me || epoch.is_some_and(|e| e != meta.epoch) || job.status().is_terminal())
        }
    }
}

/// Whether a worker of node `me` that drove the job in `epoch` must stop its process as it
/// ends: the plugin has not reported the job's end, and the cluster took the job (judged from
/// the table as it is now, whatever order the events came in).
fn must_fence(
    me: NodeId,
    epoch: u64,
    plugin_status: Option<JobStatus>,
    record: Option<(&Job, &JobMeta)>,
) -> bool {
    !plugin_status.is_some_and(|s| s.is_terminal()) && taken_from(me, Some(epoch), record) == Some(true)
}

async fn kill_in_plugin(plugin: &PluginHost, plugin_id: &str, user: &str, status: Option<&str>) {
    let call = |op: pm::ControlOperation| {
        let req = ControlJobRequest {
            request_username: user.into(),
            username: user.into(),
            job_id: plugin_id.into(),
            encoded_job_id: plugin_id.into(),
            operation: op as i32,
        };
        async move {
            plugin
                .call::<_, ControlJobResponse>(RequestType::ControlJob, &req)
                .await
        }
    };
    // A job last seen Pending may have started since: then the cancel is refused, and it is
    // killed instead.
    if status == Some("Pending") && call(pm::ControlOperation::Cancel).await.is_ok() {
        return;
    }
    if let Err(e) = call(pm::ControlOperation::Kill).await {
        tracing::debug!(plugin_job_id = plugin_id, error = %e, "fencing kill not needed or failed");
    }
}

/// Waits until the owner-side worker of `id` (on this node) carried out the control request
/// `op` committed at log index `committed_at` (0: unknown, then everything committed so far
/// is waited for), and returns the plugin's answer to it.
pub async fn control(
    shared: &NodeState,
    id: &str,
    op: ControlOp,
    committed_at: u64,
) -> NodeResult<ControlJobResponse> {
    // The worker works from this node's table, which must hold the request first.
    if committed_at > 0 {
        shared.wait_applied(committed_at).await?;
    } else {
        shared.read_barrier(ReadMode::default()).await?;
    }
    let launching = shared.jobs.plugin_id(id).is_none()
        && shared
            .jobs
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
    if op == ControlOp::Cancel && launching {
        // Its worker is busy launching it: the cancel is carried out as soon as the plugin has it.
        shared
            .jobs
            .cancel_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        return Ok(ControlJobResponse {
            status_message:
                "Cancel requested: the job is being launched and will be canceled as soon as it is".into(),
            operation_complete: false,
        });
    }
    let (tx, rx) = oneshot::channel();
    let handed = shared.jobs.send(id, Event::Control(op, tx)).is_ok();
    if handed {
        if let Ok(answer) = rx.await {
            return answer;
        }
    }
    // No worker took it (between two workers, or the worker ended before answering). The
    // request is committed: it stays queued and is carried out when the job is driven again,
    // unless the job has ended, which clears its queue.
    let key = id.to_string();
    match shared.table(move |sm| sm.job_with_meta(&key)).await? {
        Some((job, _)) if !job.status().is_terminal() => Ok(recorded_not_done()),
        Some((job, _)) => Err(NodeError::new(
            ErrorCode::JobNotRunning,
            format!(
                "job {id} ended ({}) before the request was carried out",
                job.status()
            ),
        )),
        None => Err(NodeError::job_not_found(id)),
    }
}

/// The answer to a committed control request that is not carried out yet.
fn recorded_not_done() -> ControlJobResponse {
    ControlJobResponse {
        status_message:
            "The request was recorded; it is carried out as soon as the job's node drives the job again"
                .into(),
        operation_complete: false,
    }
}

/// The one request among `pending` (oldest first) whose effect decides the job's state, and
/// the highest sequence number among them (the whole batch is done once it is). A job that is
/// to end ends: a kill wins (a stop followed by a kill is an escalation), else the first stop
/// or cancel; otherwise the last suspend or resume, as carrying them all out in order would
/// leave the job as the last one says.
fn coalesce(pending: &[ControlRecord]) -> Option<(ControlRecord, u64)> {
    let last_seq = pending.iter().map(|c| c.seq).max()?;
    let ends = |op: ControlOp| matches!(op, ControlOp::Stop | ControlOp::Kill | ControlOp::Cancel);
    let chosen = pending
        .iter()
        .find(|c| c.operation == ControlOp::Kill)
        .or_else(|| pending.iter().find(|c| ends(c.operation)))
        .or_else(|| pending.last())?;
    Some((chosen.clone(), last_seq))
}

/// Whether the effect of `op` shows in `status`, so that it must not be sent again.
fn already_done(op: ControlOp, status: JobStatus) -> bool {
    match op {
        ControlOp::Suspend => status == JobStatus::Suspended,
        ControlOp::Resume => status == JobStatus::Running,
        ControlOp::Stop | ControlOp::Kill | ControlOp::Cancel => status.is_terminal(),
    }
}

fn parse_status(s: &str) -> Option<JobStatus> {
    JobStatus::parse(s)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The job as a plugin should see it: no launcher-internal fields, plus our tag.
fn plugin_job(job: &Job, id: &str) -> pm::Job {
    let mut pj: pm::Job = serde_json::from_slice(&job.to_canonical()).unwrap_or_default();
    pj.id = None;
    pj.status = None;
    pj.status_message = None;
    pj.status_code = None;
    pj.pid = None;
    pj.exit_code = None;
    pj.host = None;
    pj.last_update_time = None;
    pj.tags.push(launcher_job_tag(id));
    pj
}

/// What a worker knows about its job.
struct Worker {
    shared: Arc<NodeState>,
    id: String,
    job: Job,
    meta: JobMeta,
    plugin: Option<Arc<PluginHost>>,
    plugin_id: Option<String>,
    /// The last status the plugin itself reported for the job (None: not heard yet).
    plugin_status: Option<JobStatus>,
    /// The owner epoch this worker drives the job under; a later one means it was taken away.
    driving_epoch: u64,
    /// Next update sequence number.
    seq: u64,
    /// Last status (and exit code) reported through Raft.
    reported: Option<(JobStatus, Option<i32>)>,
    /// Log index of this worker's last committed change.
    last_index: u64,
    /// Control requests up to this sequence number were carried out by this worker (their
    /// ControlDone may still be on its way, or refused in a cluster with older members).
    controls_through: u64,
    /// The latest answers to control requests: (sequence number, operation, answer).
    answers: VecDeque<(u64, ControlOp, NodeResult<ControlJobResponse>)>,
    /// Callers waiting for their request, each with the highest sequence number the job had
    /// when it asked (its own request is at or below it).
    waiting: Vec<(ControlOp, u64, oneshot::Sender<NodeResult<ControlJobResponse>>)>,
    /// A control request could not reach the plugin: try again after [`CONTROL_RETRY`].
    controls_retry: bool,
    stop: watch::Receiver<bool>,
}

/// Drives one job this node owns until it ends or leaves this node.
async fn worker(
    shared: Arc<NodeState>,
    id: String,
    me: mpsc::UnboundedSender<Event>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    stop: watch::Receiver<bool>,
) {
    let key = id.clone();
    let loaded = shared.table(move |sm| sm.job_with_meta(&key)).await;
    let Ok(Some((job, meta))) = loaded else {
        shared
            .jobs
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        return;
    };
    let plugin = shared.plugins.get(&job.cluster).cloned();
    let mut w = Worker {
        plugin_status: None,
        driving_epoch: meta.epoch,
        seq: meta.seq + 1,
        reported: Some((job.status(), job.exit_code)),
        plugin_id: job.plugin_job_id.clone(),
        shared: shared.clone(),
        id: id.clone(),
        job,
        meta,
        plugin,
        last_index: 0,
        controls_through: 0,
        answers: VecDeque::new(),
        waiting: Vec::new(),
        controls_retry: false,
        stop,
    };
    w.drive(&mut rx).await;
    if !w.stopping() {
        // However the worker ended (the job's end, a Gone, an update refused as stale), a
        // process the cluster took away from this node is stopped: fencing must not depend on
        // which event arrived first.
        if let Some(plugin) = w.plugin.clone() {
            w.fence_if_taken(&plugin).await;
        }
    }
    w.answer_waiting(true);
    // Leave only once this node has applied our last change, so the scanner does not see the
    // job as still active here and start a second worker for it.
    let _ = shared.wait_applied(w.last_index).await;
    if let Some(p) = &w.plugin {
        shared.jobs.forget(p.cluster(), &id);
    }
    let mut workers = shared.jobs.workers.lock().unwrap_or_else(|p| p.into_inner());
    // Only remove our own entry: the scanner may already have replaced it.
    if workers.get(&id).is_some_and(|tx| tx.same_channel(&me)) {
        workers.remove(&id);
    }
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn drive(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) {
        let Some(plugin) = self.plugin.clone() else {
            // Placement only picks hosting nodes; a config change since could get us here.
            self.report(
                Some(JobStatus::Failed),
                Some(format!(
                    "this node no longer hosts cluster '{}'",
                    self.job.cluster
                )),
                None,
                None,
            )
            .await;
            return;
        };
        if self.job.status().is_terminal() {
            return;
        }
        // Launch, adopt, or pick up tracking.
        match (&self.meta.launch, &self.plugin_id) {
            (None, _) => {
                if !self.launch(&plugin).await {
                    return;
                }
            }
            (Some(_), None) => self.adopt(&plugin).await,
            (Some(_), Some(pid)) => {
                let pid = pid.clone();
                if let Some(st) = self.shared.jobs.claim(plugin.cluster(), &pid, &self.id) {
                    self.on_status(&plugin, st).await;
                }
                self.sync(&plugin).await;
            }
        }
        // Requests committed before this worker started (its node crashed, or the job was
        // just adopted) are carried out now.
        self.run_controls(&plugin).await;
        while !self.done() && !self.stopping() {
            let retry = self.controls_retry;
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = tokio::time::sleep(CONTROL_RETRY), if retry => Some(Event::Controls),
                _ = self.stop.changed() => None,
            };
            let Some(ev) = ev else { return };
            match ev {
                Event::Status(st) => self.on_status(&plugin, st).await,
                Event::Reconcile => {
                    self.sync(&plugin).await;
                    self.run_controls(&plugin).await;
                }
                Event::Control(op, reply) => {
                    self.reload().await;
                    let upto = self.meta.control_seq;
                    self.waiting.push((op, upto, reply));
                    self.run_controls(&plugin).await;
                    self.answer_waiting(false);
                }
                Event::Controls => {
                    self.run_controls(&plugin).await;
                    self.answer_waiting(false);
                }
                // Fenced by the caller of `drive` if the job was taken away.
                Event::Gone => return,
            }
            if self.plugin_id.is_none() && self.meta.launch.is_some() {
                // A launch whose outcome was unknown: keep trying to find it by tag.
                self.adopt(&plugin).await;
            }
        }
    }

    fn done(&self) -> bool {
        self.reported.is_some_and(|(s, _)| s.is_terminal())
    }

    async fn reload(&mut self) -> bool {
        let key = self.id.clone();
        match self.shared.table(move |sm| sm.job_with_meta(&key)).await {
            Ok(Some((job, meta))) => {
                self.seq = self.seq.max(meta.seq + 1);
                self.job = job;
                self.meta = meta;
                true
            }
            _ => false,
        }
    }

    /// Commits the launch intent, then submits. Returns false if the job must not be launched.
    async fn launch(&mut self, plugin: &Arc<PluginHost>) -> bool {
        let intent = CommandV1::LaunchIntent {
            id: self.id.clone(),
            node: self.shared.id,
            epoch: self.meta.epoch,
            time: String::new(),
        };
        match self.propose(intent).await {
            Some(Response::Job { .. }) => {}
            Some(Response::Error { code, message }) => {
                // A retried intent that had in fact been committed is ours; anything else
                // (canceled, owner changed) means this node must not launch. Judged from a
                // table that has caught up with the leader, not from this node's lagging one.
                if let Err(e) = self.shared.read_barrier(ReadMode::default()).await {
                    tracing::info!(job_id = %self.id, error = %e, "cannot catch up to judge the launch intent; not launching now");
                    return false;
                }
                let ours = self.reload().await
                    && self
                        .meta
                        .launch
                        .as_ref()
                        .is_some_and(|l| l.node == self.shared.id && l.epoch == self.meta.epoch);
                if !ours {
                    tracing::info!(job_id = %self.id, ?code, %message, "not launching");
                    return false;
                }
            }
            Some(_) => {}
            None => return false,
        }
        self.meta.launch = Some(launcher_storage::table::LaunchRecord {
            node: self.shared.id,
            epoch: self.meta.epoch,
            time: String::new(),
        });
        // A cancel committed once the intent was (it is recorded only then) is in the table
        // even if the node that took it could not tell us: then nothing is submitted at all.
        let cancel_committed = self.reload().await
            && self
                .meta
                .controls
                .iter()
                .any(|c| c.operation == ControlOp::Cancel);
        if self.take_cancel() || cancel_committed {
            self.report(
                Some(JobStatus::Canceled),
                Some("Canceled by user".into()),
                None,
                None,
            )
            .await;
            return true;
        }
        let user = self.job.user.clone().unwrap_or_default();
        let req = SubmitJobRequest {
            request_username: user.clone(),
            username: user,
            job: plugin_job(&self.job, &self.id),
        };
        loop {
            match plugin
                .call::<_, JobStateResponse>(RequestType::SubmitJob, &req)
                .await
            {
                Ok(r) => match r.jobs.into_iter().next() {
                    Some(pj) => {
                        self.adopted(plugin, pj).await;
                        return true;
                    }
                    None => {
                        self.report(
                            Some(JobStatus::Failed),
                            Some("launch failed: the plugin answered the submit without a job".into()),
                            None,
                            None,
                        )
                        .await;
                        return true;
                    }
                },
                Err(PluginError::Plugin { code, message }) => {
                    tracing::info!(job_id = %self.id, code, %message, "the plugin refused the job");
                    self.report(
                        Some(JobStatus::Failed),
                        Some(format!("launch failed: {message}")),
                        None,
                        None,
                    )
                    .await;
                    return true;
                }
                // Not sent at all: the plugin is restarting. Submitting later is still the first submit.
                Err(PluginError::Unavailable(_)) if !self.stopping() => {
                    self.wait_for_plugin(plugin).await;
                }
                Err(e) => {
                    // Sent, outcome unknown: never resubmit; find it by its tag instead.
                    tracing::warn!(job_id = %self.id, error = %e, "launch outcome unknown; looking the job up by tag");
                    self.adopt(plugin).await;
                    return true;
                }
            }
            if self.stopping() {
                return false;
            }
        }
    }

    async fn wait_for_plugin(&self, plugin: &Arc<PluginHost>) {
        let mut g = plugin.generations();
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = g.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }

    /// After a crash or an unknown outcome between intent and result: the plugin has the job
    /// (by its tag) → adopt it; it does not → the launch was interrupted.
    async fn adopt(&mut self, plugin: &Arc<PluginHost>) {
        let req = GetJobRequest {
            request_username: "*".into(),
            username: "*".into(),
            job_id: pm::ALL_JOBS.into(),
            encoded_job_id: pm::ALL_JOBS.into(),
            tags: Some(vec![launcher_job_tag(&self.id)]),
            ..Default::default()
        };
        loop {
            match plugin
                .call::<_, JobStateResponse>(RequestType::GetJob, &req)
                .await
            {
                Ok(r) => {
                    match r.jobs.into_iter().next() {
                        Some(pj) => {
                            tracing::info!(job_id = %self.id, "adopted the job the plugin already had");
                            self.adopted(plugin, pj).await;
                        }
                        None => {
                            self.report(
                                Some(JobStatus::Failed),
                                Some("launch interrupted".into()),
                                None,
                                None,
                            )
                            .await;
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::info!(job_id = %self.id, error = %e, "cannot look the job up in the plugin yet");
                    if self.stopping() {
                        return;
                    }
                    self.wait_for_plugin(plugin).await;
                }
            }
        }
    }

    /// The plugin knows the job as `pj`: remember its id and report what it says.
    async fn adopted(&mut self, plugin: &Arc<PluginHost>, pj: pm::Job) {
        let Some(pid) = pj.id.clone() else {
            self.report(
                Some(JobStatus::Failed),
                Some("launch failed: the plugin returned a job without an id".into()),
                None,
                None,
            )
            .await;
            return;
        };
        let early = self.shared.jobs.claim(plugin.cluster(), &pid, &self.id);
        self.plugin_id = Some(pid.clone());
        let status = pj.status.as_deref().and_then(parse_status);
        self.plugin_status = status.or(self.plugin_status);
        let update = JobUpdate {
            status: status.filter(|s| *s != JobStatus::Pending),
            status_message: pj.status_message.clone(),
            status_code: pj.status_code.clone(),
            pid: pj.pid,
            exit_code: pj.exit_code,
            plugin_job_id: Some(pid),
            host: Some(pj.host.clone().unwrap_or_else(hostname)),
            ..Default::default()
        };
        self.send_update(update).await;
        if let Some(st) = early {
            self.on_status(plugin, st).await;
        }
        if self.take_cancel() {
            // Canceled while launching: cancel it now, or kill it if it already started.
            let r = self.control(plugin, ControlOp::Cancel).await;
            if r.is_err() && !self.done() {
                let _ = self.control(plugin, ControlOp::Kill).await;
            }
        }
    }

    fn take_cancel(&self) -> bool {
        self.shared
            .jobs
            .cancel_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id)
    }

    /// Re-reads the job from the plugin (after a restart, or when taking it over).
    async fn sync(&mut self, plugin: &Arc<PluginHost>) {
        let Some(pid) = self.plugin_id.clone() else { return };
        let req = GetJobRequest {
            request_username: "*".into(),
            username: "*".into(),
            job_id: pid.clone(),
            encoded_job_id: pid.clone(),
            ..Default::default()
        };
        match plugin
            .call::<_, JobStateResponse>(RequestType::GetJob, &req)
            .await
        {
            Ok(r) => {
                if let Some(pj) = r.jobs.into_iter().next() {
                    self.apply_plugin_job(pj).await;
                }
            }
            Err(PluginError::Plugin { code: 3, .. }) => {
                self.report(
                    Some(JobStatus::Failed),
                    Some("the plugin no longer knows this job".into()),
                    None,
                    None,
                )
                .await;
            }
            Err(e) => {
                tracing::debug!(job_id = %self.id, error = %e, "cannot re-read the job from the plugin now")
            }
        }
    }

    async fn apply_plugin_job(&mut self, pj: pm::Job) {
        let Some(status) = pj.status.as_deref().and_then(parse_status) else {
            return;
        };
        self.plugin_status = Some(status);
        if self
            .reported
            .is_some_and(|(s, e)| s == status && (e.is_some() || pj.exit_code.is_none()))
        {
            return;
        }
        let update = JobUpdate {
            status: Some(status),
            status_message: pj.status_message,
            status_code: pj.status_code,
            pid: pj.pid,
            exit_code: pj.exit_code,
            host: pj.host,
            ..Default::default()
        };
        self.send_update(update).await;
    }

    async fn on_status(&mut self, plugin: &Arc<PluginHost>, st: JobStatusResponse) {
        let Some(status) = parse_status(&st.status) else {
            tracing::warn!(job_id = %self.id, status = %st.status, "the plugin reported an unknown status");
            return;
        };
        self.plugin_status = Some(status);
        if self.reported.is_some_and(|(s, _)| s == status) {
            return;
        }
        // Plugins need not put pid and exit code on status messages; fetch the job for them.
        let needs_details = (status.is_terminal() && st.exit_code.is_none())
            || (status == JobStatus::Running && st.pid.is_none());
        if needs_details {
            self.sync(plugin).await;
            if self.reported.is_some_and(|(s, _)| s == status) {
                return;
            }
        }
        let update = JobUpdate {
            status: Some(status),
            status_message: st.status_message,
            status_code: st.status_code,
            pid: st.pid,
            exit_code: st.exit_code,
            ..Default::default()
        };
        self.send_update(update).await;
    }

    async fn control(&mut self, plugin: &Arc<PluginHost>, op: ControlOp) -> NodeResult<ControlJobResponse> {
        if self.plugin_id.is_none() {
            return Err(NodeError::new(
                ErrorCode::JobNotRunning,
                format!("job {} has not reached its plugin yet; retry shortly", self.id),
            ));
        }
        self.send_control(plugin, op)
            .await
            .map_err(|e| e.into_node_error(plugin.cluster()))
    }

    /// Carries out the job's committed control requests, at most once each. The requests
    /// waiting at one time are coalesced into the one that decides the job's state (see
    /// [`coalesce`]): requests piled up while the owner was down or unreachable (a client
    /// retrying) cost one plugin call, not one each, so a live caller is answered in time. One
    /// whose effect is already there (carried out before a crash, its completion not yet
    /// committed) is not sent again. The batch is marked done in Raft before the next is sent,
    /// so at most one request can be in that state after a crash.
    async fn run_controls(&mut self, plugin: &Arc<PluginHost>) {
        self.controls_retry = false;
        let mut synced = false;
        loop {
            if self.stopping() || !self.reload().await {
                return;
            }
            if self.job.status().is_terminal() {
                // The job's end cleared its queue: nothing is left to carry out.
                self.controls_through = self.meta.control_seq;
                return;
            }
            let through = self.controls_through;
            let pending: Vec<_> = self
                .meta
                .controls
                .iter()
                .filter(|c| c.seq > through)
                .cloned()
                .collect();
            let Some((c, last_seq)) = coalesce(&pending) else {
                return;
            };
            if self.plugin_id.is_none() {
                // Still launching or being looked up by its tag: carried out once the plugin has it.
                self.controls_retry = true;
                return;
            }
            if !synced {
                // What the plugin shows now decides whether a request was already carried out.
                self.sync(plugin).await;
                synced = true;
                continue;
            }
            let (outcome, answer) = if already_done(c.operation, self.job.status()) {
                let answer = ControlJobResponse {
                    status_message: format!("The job is already {}", self.job.status()),
                    operation_complete: true,
                };
                (ControlOutcome::AlreadyDone, Ok(answer))
            } else {
                match self.send_control(plugin, c.operation).await {
                    Ok(r) => (ControlOutcome::CarriedOut, Ok(r)),
                    // Not sent, or its fate unknown: try again later; by then what the plugin
                    // shows tells whether it took effect.
                    Err(
                        e @ (PluginError::Unavailable(_) | PluginError::Restarted | PluginError::Timeout(_)),
                    ) => {
                        tracing::info!(job_id = %self.id, seq = c.seq, error = %e,
                            "cannot carry out the control request yet; trying again");
                        self.controls_retry = true;
                        return;
                    }
                    Err(e) if c.operation == ControlOp::Cancel => {
                        // Canceled while it was being launched, and it started meanwhile: the
                        // caller was told it would be canceled, so it is killed instead.
                        tracing::info!(job_id = %self.id, error = %e, "the job started before the cancel; killing it");
                        match self.send_control(plugin, ControlOp::Kill).await {
                            Ok(r) => (ControlOutcome::CarriedOut, Ok(r)),
                            Err(e) => (ControlOutcome::Refused, Err(e.into_node_error(plugin.cluster()))),
                        }
                    }
                    Err(e) => (ControlOutcome::Refused, Err(e.into_node_error(plugin.cluster()))),
                }
            };
            self.shared.jobs.count_control(c.operation, outcome);
            // The plugin answers once the operation took effect; its new status is committed
            // before the caller hears of it, so a read after the answer sees it.
            if answer.as_ref().is_ok_and(|a| a.operation_complete) && outcome != ControlOutcome::AlreadyDone {
                self.sync(plugin).await;
            }
            self.controls_through = last_seq;
            for other in pending.iter().filter(|p| p.seq != c.seq) {
                // Superseded: its caller (if it still waits) hears what was done instead.
                self.answers.push_back((
                    other.seq,
                    other.operation,
                    Ok(ControlJobResponse {
                        status_message: format!(
                            "Superseded by a later {} request, which was carried out instead; the job is {}",
                            op_label(c.operation),
                            self.job.status()
                        ),
                        operation_complete: false,
                    }),
                ));
            }
            self.answers.push_back((c.seq, c.operation, answer));
            self.answers.make_contiguous().sort_by_key(|(seq, _, _)| *seq);
            while self.answers.len() > ANSWERS_KEPT {
                self.answers.pop_front();
            }
            if !self.done() {
                self.control_done(last_seq).await;
            }
        }
    }

    /// Takes the control requests up to `seq` off the job's queue in Raft.
    async fn control_done(&mut self, seq: u64) {
        let done = CommandV1::ControlDone {
            id: self.id.clone(),
            node: self.shared.id,
            epoch: self.meta.epoch,
            seq,
        };
        match self.propose(done).await {
            Some(Response::Applied { .. }) | None => {}
            Some(Response::Error { code, message }) => {
                // An older member cannot apply it yet, or the job left this node: this worker
                // still remembers what it carried out.
                tracing::info!(job_id = %self.id, seq, ?code, %message, "control request not marked done");
            }
            Some(other) => tracing::warn!(job_id = %self.id, ?other, "unexpected answer to ControlDone"),
        }
    }

    /// Answers the callers whose request was carried out (or, at the end, never will be).
    fn answer_waiting(&mut self, ending: bool) {
        let through = self.controls_through;
        let terminal = self.job.status().is_terminal();
        let waiting = std::mem::take(&mut self.waiting);
        for (op, upto, reply) in waiting {
            if upto > through && !terminal {
                if ending || self.controls_retry {
                    // Committed but not carried out yet (the worker stops, or the plugin cannot
                    // take it now and it is tried again): it stays queued, and the caller hears
                    // that it was taken, not done.
                    let _ = reply.send(Ok(recorded_not_done()));
                } else {
                    self.waiting.push((op, upto, reply));
                }
                continue;
            }
            // Its own request is the latest of its kind at or below `upto`.
            let answer = self
                .answers
                .iter()
                .rev()
                .find(|(seq, o, _)| *o == op && *seq <= upto)
                .map(|(_, _, a)| a.clone());
            let answer = match answer {
                Some(a) => a,
                None if upto <= through && !terminal => Ok(ControlJobResponse {
                    status_message: "The request was carried out".into(),
                    operation_complete: true,
                }),
                None => Err(NodeError::new(
                    ErrorCode::JobNotRunning,
                    format!(
                        "job {} ended ({}) before the request was carried out",
                        self.id,
                        self.job.status()
                    ),
                )),
            };
            let _ = reply.send(answer);
        }
    }

    /// Sends `op` to the plugin.
    async fn send_control(
        &self,
        plugin: &Arc<PluginHost>,
        op: ControlOp,
    ) -> Result<ControlJobResponse, PluginError> {
        let Some(pid) = self.plugin_id.clone() else {
            return Err(PluginError::Unavailable(
                "the job has not reached its plugin yet".into(),
            ));
        };
        let user = self.job.user.clone().unwrap_or_else(|| "*".into());
        let operation = match op {
            ControlOp::Suspend => pm::ControlOperation::Suspend,
            ControlOp::Resume => pm::ControlOperation::Resume,
            ControlOp::Stop => pm::ControlOperation::Stop,
            ControlOp::Kill => pm::ControlOperation::Kill,
            ControlOp::Cancel => pm::ControlOperation::Cancel,
        };
        let req = ControlJobRequest {
            request_username: user.clone(),
            username: user,
            job_id: pid.clone(),
            encoded_job_id: pid,
            operation: operation as i32,
        };
        plugin
            .call::<_, ControlJobResponse>(RequestType::ControlJob, &req)
            .await
    }

    /// The worker is done with the job. If the plugin may still run it (it never reported
    /// the job ended) and the cluster took the job from this node (another owner, a later
    /// epoch: declared lost while this node was paused or cut off; or ended by the job table,
    /// e.g. `launch interrupted` while the plugin's answer to the submit was on its way), its
    /// process is stopped: fencing. Jobs of a shared scheduler that another node adopted are
    /// left alone: they run on for their new owner.
    async fn fence_if_taken(&mut self, plugin: &Arc<PluginHost>) {
        let Some(pid) = self.plugin_id.clone() else { return };
        let key = self.id.clone();
        let record = match self.shared.table(move |sm| sm.job_with_meta(&key)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job_id = %self.id, error = %e, "cannot read the job to decide on fencing");
                return;
            }
        };
        let fence = must_fence(
            self.shared.id,
            self.driving_epoch,
            self.plugin_status,
            record.as_ref().map(|(j, m)| (j, m)),
        );
        if let Some((job, meta)) = record {
            self.job = job;
            self.meta = meta;
        }
        if fence {
            tracing::warn!(job_id = %self.id, plugin_job_id = %pid, status = %self.job.status(),
                message = ?self.job.status_message,
                "fencing: the cluster ended or moved this job while the plugin runs it; stopping its process");
            let user = self.job.user.clone().unwrap_or_else(|| "*".into());
            let status = self.plugin_status.map(|s| s.to_string());
            kill_in_plugin(plugin, &pid, &user, status.as_deref()).await;
        }
    }

    async fn report(
        &mut self,
        status: Option<JobStatus>,
        message: Option<String>,
        pid: Option<i64>,
        exit_code: Option<i32>,
    ) {
        let update = JobUpdate {
            status,
            status_message: message,
            pid,
            exit_code,
            ..Default::default()
        };
        self.send_update(update).await;
    }

    /// Proposes an update with this owner's epoch and the next sequence number.
    async fn send_update(&mut self, mut u: JobUpdate) {
        u.id = self.id.clone();
        u.node = self.shared.id;
        u.epoch = self.meta.epoch;
        u.seq = self.seq;
        self.seq += 1;
        let status = u.status;
        let exit = u.exit_code;
        match self.propose(CommandV1::Update(u)).await {
            Some(Response::Applied { changed, .. }) => {
                if let Some(s) = status {
                    self.reported = Some((s, exit.or(self.reported.and_then(|r| r.1))));
                }
                if !changed {
                    // Ignored: stale epoch (the job was taken from us) or an older sequence.
                    self.reload().await;
                    if self.meta.owner != self.shared.id || self.job.status().is_terminal() {
                        self.reported = Some((self.job.status(), self.job.exit_code));
                    }
                }
            }
            Some(Response::Error { code, message }) => {
                tracing::warn!(job_id = %self.id, ?code, %message, "update refused");
                self.reported = Some((JobStatus::Failed, None));
            }
            _ => {}
        }
    }

    /// Proposes through Raft, retrying while the cluster has no leader; None when stopping.
    async fn propose(&mut self, cmd: CommandV1) -> Option<Response> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .shared
                .write(WriteRequest::Command {
                    command: cmd.clone().into(),
                })
                .await
            {
                Ok((r, index)) => {
                    self.last_index = self.last_index.max(index);
                    return Some(r);
                }
                // Overloaded: the leader's queue was full and nothing was written.
                Err(e) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Overloaded) => {
                    tracing::info!(job_id = %self.id, error = %e, "cannot commit the job's change yet; retrying");
                }
                Err(e) => {
                    tracing::warn!(job_id = %self.id, error = %e, "cannot commit the job's change");
                    return Some(Response::Error {
                        code: e.code,
                        message: e.message,
                    });
                }
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            if self.stopping() {
                return None;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ops: &[ControlOp]) -> Vec<ControlRecord> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| ControlRecord {
                seq: i as u64 + 10,
                operation: *op,
                time: String::new(),
            })
            .collect()
    }

    fn chosen(ops: &[ControlOp]) -> Option<(ControlOp, u64, u64)> {
        coalesce(&queue(ops)).map(|(c, last)| (c.operation, c.seq, last))
    }

    /// Requests piled up while the owner was away cost one plugin call; the job ends up as
    /// carrying them out one by one would leave it.
    #[test]
    fn a_queue_of_controls_coalesces_into_the_one_that_decides() {
        use ControlOp::*;
        assert_eq!(chosen(&[]), None);
        assert_eq!(chosen(&[Suspend]), Some((Suspend, 10, 10)));
        // Retries of one request: the last one, and all of them are done with it.
        assert_eq!(chosen(&[Suspend, Suspend, Suspend]), Some((Suspend, 12, 12)));
        // Toggles: the last word counts.
        assert_eq!(chosen(&[Suspend, Resume]), Some((Resume, 11, 11)));
        assert_eq!(
            chosen(&[Resume, Suspend, Resume, Suspend]),
            Some((Suspend, 13, 13))
        );
        // A job that is to end ends, whatever came after.
        assert_eq!(chosen(&[Suspend, Stop, Resume]), Some((Stop, 11, 12)));
        assert_eq!(chosen(&[Cancel, Suspend]), Some((Cancel, 10, 11)));
        // A kill is an escalation of a stop, in either order.
        assert_eq!(chosen(&[Stop, Kill]), Some((Kill, 11, 11)));
        assert_eq!(chosen(&[Kill, Stop, Suspend]), Some((Kill, 10, 12)));
    }

    /// What can happen to a job while a worker of node 1 drives it in epoch 5.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// The plugin reports a status; the worker's update is applied unless the job was taken.
        Plugin(JobStatus),
        /// The leader declares node 1 lost: the job fails ("node lost"), the epoch moves on.
        FailedAsLost,
        /// A launch intent judged interrupted: the job fails, the epoch moves on.
        LaunchInterrupted,
        /// A shared-scheduler cluster's job is adopted by node `n` (maybe node 1 again).
        AdoptedBy(NodeId),
        /// An ended job is deleted.
        Deleted,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            prop_oneof![
                Just(JobStatus::Running),
                Just(JobStatus::Suspended),
                Just(JobStatus::Finished),
                Just(JobStatus::Killed),
            ]
            .prop_map(Step::Plugin),
            Just(Step::FailedAsLost),
            Just(Step::LaunchInterrupted),
            (1u64..=3).prop_map(Step::AdoptedBy),
            Just(Step::Deleted),
        ]
    }

    proptest::proptest! {
        /// Fencing does not depend on the order of events: for every sequence of plugin
        /// reports and table changes, the worker that ends stops the process exactly when the
        /// cluster took the job (failed it, which also moves its epoch on, or deleted it) while
        /// the plugin has not reported its end, and never stops a shared scheduler's job that
        /// another node adopted, nor one this node adopted back in a later epoch.
        #[test]
        fn fencing_holds_for_every_order_of_events(
            shared_scheduler: bool,
            steps in proptest::collection::vec(step(), 0..12),
        ) {
            const ME: NodeId = 1;
            const EPOCH: u64 = 5;
            let mut job = Job { status: Some(JobStatus::Running), ..Job::default() };
            let mut meta = JobMeta { owner: ME, epoch: EPOCH, shared: shared_scheduler, ..JobMeta::default() };
            let mut exists = true;
            let mut plugin_status: Option<JobStatus> = None;
            let mut taken = false;
            for st in steps {
                let live = exists && !job.status().is_terminal();
                match st {
                    Step::Plugin(s) if !plugin_status.is_some_and(|p| p.is_terminal()) => {
                        plugin_status = Some(s);
                        // The update carries epoch 5: applied only while it is current.
                        if live && meta.epoch == EPOCH {
                            job.status = Some(s);
                        }
                    }
                    Step::FailedAsLost | Step::LaunchInterrupted if !shared_scheduler && live => {
                        job.status = Some(JobStatus::Failed);
                        meta.epoch += 1;
                        taken = true;
                    }
                    Step::AdoptedBy(n) if shared_scheduler && live => {
                        meta.owner = n;
                        meta.epoch += 1;
                        // Adopted back by this node, the job is its own again.
                        taken = n != ME;
                    }
                    Step::Deleted if exists && job.status().is_terminal() => exists = false,
                    _ => {}
                }
            }
            let record = exists.then_some((&job, &meta));
            let fenced = must_fence(ME, EPOCH, plugin_status, record);
            let ended_in_plugin = plugin_status.is_some_and(|s| s.is_terminal());
            // A job this node drove to its end and that was then deleted is not taken.
            let deleted_after_our_end = !exists && !taken;
            let adopted_elsewhere = shared_scheduler && exists && meta.owner != ME;
            let expected = !ended_in_plugin
                && (taken || deleted_after_our_end)
                && !adopted_elsewhere;
            proptest::prop_assert_eq!(fenced, expected, "job {:?} meta {:?} plugin {:?}", job.status, meta, plugin_status);
        }
    }
}
