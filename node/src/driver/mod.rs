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

use std::collections::VecDeque;
use std::sync::Arc;
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
use tracing::Instrument;

use crate::error::{NodeError, NodeResult};
use crate::plugins::bookkeeping::op_label;
pub use crate::plugins::bookkeeping::{Bookkeeping, ControlOutcome, Event, CONTROL_OPS};
use crate::plugins::{PluginError, PluginHost};
use crate::reads::ReadMode;
use crate::state::NodeState;
use crate::writes::WriteRequest;

mod controls;
mod fencing;
mod launch;

pub use controls::control;
use fencing::fence_strays;

/// How often the scanner looks at the job table even without new entries.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How often the scanner looks for committed control requests nobody told the worker about
/// (the node that took the request crashed, or its hand-off to this node failed).
const CONTROLS_EVERY: Duration = Duration::from_secs(5);
/// How soon a worker tries again a control request its plugin could not take.
const CONTROL_RETRY: Duration = Duration::from_secs(2);
/// Times an update the table ignored for an old sequence number is sent again.
const UPDATE_ATTEMPTS: usize = 3;
/// Answers a worker keeps for callers that come after their request was carried out.
const ANSWERS_KEPT: usize = 32;

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
        // Every line the worker logs names the job and this node (runbook: one job's story).
        let span = tracing::info_span!("job", job_id = %id, node = shared.id);
        tokio::spawn(worker(shared.clone(), id, tx, rx, stop.clone()).instrument(span));
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
    let ids = shared.jobs.jobs_of_cluster(&cluster);
    for id in ids {
        let _ = shared.jobs.send(&id, Event::Reconcile);
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

    /// Proposes an update with this owner's epoch and the next sequence number. An update the
    /// table ignores although this node still owns the job in this epoch carried a sequence
    /// number the table had already seen (this worker started from a lagging table, or another
    /// worker of the job wrote meanwhile): it is sent again with a number past the table's,
    /// never dropped, since the plugin reports each change once.
    async fn send_update(&mut self, mut u: JobUpdate) {
        u.id = self.id.clone();
        u.node = self.shared.id;
        u.epoch = self.meta.epoch;
        let status = u.status;
        let exit = u.exit_code;
        for _ in 0..UPDATE_ATTEMPTS {
            u.seq = self.seq;
            self.seq += 1;
            match self.propose(CommandV1::Update(u.clone())).await {
                Some(Response::Applied { changed: true, .. }) => {
                    if let Some(s) = status {
                        self.reported = Some((s, exit.or(self.reported.and_then(|r| r.1))));
                    }
                    return;
                }
                Some(Response::Applied { .. }) => {
                    // Ignored: a stale epoch (the job was taken from us), an ended job, a status
                    // the job cannot move to from where it is, or an old sequence number.
                    self.reload().await;
                    let current = self.job.status();
                    let taken = self.meta.owner != self.shared.id || self.meta.epoch != u.epoch;
                    let backwards = status.is_some_and(|next| next != current && !current.may_become(next));
                    if taken || current.is_terminal() || backwards {
                        self.reported = Some((current, self.job.exit_code));
                        return;
                    }
                    tracing::info!(job_id = %self.id, seq = u.seq, table_seq = self.meta.seq,
                        "update ignored for an old sequence number; sending it again");
                }
                Some(Response::Error { code, message }) => {
                    tracing::warn!(job_id = %self.id, ?code, %message, "update refused");
                    self.reported = Some((JobStatus::Failed, None));
                    return;
                }
                _ => return,
            }
        }
        tracing::warn!(job_id = %self.id, "update ignored {UPDATE_ATTEMPTS} times; the next report or reconcile carries it");
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
