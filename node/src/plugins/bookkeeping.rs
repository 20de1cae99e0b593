//! The job driver's in-memory bookkeeping (`crate::driver`): which jobs this node drives (one
//! worker each, reached by its event channel), which plugin job ids are ours, status messages
//! that arrived before their job's id was known, and the count of control requests carried
//! out. It lives here, below the node's state that holds it, so that the driver can build on
//! the state without the state depending on the driver.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use launcher_plugin_api::messages::{ControlJobResponse, JobStatusResponse};
use launcher_storage::command::ControlOp;
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeResult;

/// Status messages for plugin job ids nobody has claimed yet, kept briefly: a job's first
/// status can overtake the SubmitJob answer that tells us its plugin id.
const ORPHAN_LIMIT: usize = 10_000;
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
    pub(crate) workers: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
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

pub(crate) fn op_label(op: ControlOp) -> &'static str {
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

    pub(crate) fn count_control(&self, op: ControlOp, outcome: ControlOutcome) {
        let i = CONTROL_OPS.iter().position(|o| *o == op).unwrap_or_default();
        let j = ControlOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.controls[i][j].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Our jobs on `cluster` whose plugin job id is known.
    pub(crate) fn jobs_of_cluster(&self, cluster: &str) -> Vec<String> {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ours
            .iter()
            .filter(|((c, _), _)| c == cluster)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Notes that job `id` is to be canceled as soon as its launch hands it to the plugin.
    pub(crate) fn request_cancel(&self, id: &str) {
        self.cancel_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// Whether a cancel of job `id` waited for its launch; forgets it.
    pub(crate) fn take_cancel(&self, id: &str) -> bool {
        self.cancel_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
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
    pub(crate) fn claim(&self, cluster: &str, plugin_id: &str, id: &str) -> Option<JobStatusResponse> {
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let key = (cluster.to_string(), plugin_id.to_string());
        g.ours.insert(key.clone(), id.to_string());
        g.plugin_ids.insert(id.to_string(), plugin_id.to_string());
        g.orphans.remove(&key)
    }

    pub(crate) fn forget(&self, cluster: &str, id: &str) {
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = g.plugin_ids.remove(id) {
            g.ours.remove(&(cluster.to_string(), pid));
        }
    }

    /// Routes a status message to the worker of its job, or parks it.
    pub(crate) fn route_status(&self, cluster: &str, st: JobStatusResponse) {
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

    pub(crate) fn send(&self, id: &str, ev: Event) -> Result<(), Event> {
        match self.workers.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            Some(tx) => tx.send(ev).map_err(|e| e.0),
            None => Err(ev),
        }
    }
}
