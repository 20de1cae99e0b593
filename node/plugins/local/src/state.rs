//! The plugin's shared state: the job table (the in-memory copy of every `job.json`), the open
//! status streams, the outgoing message queue, and the layout of the scratch directory.
//!
//! Every change of a job goes through [`Plugin::change`], which holds the table lock while it
//! persists the record and tells the status streams, so each job's changes reach disk and the
//! launcher in the order they happened, and a stream that opens sees each change exactly once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::JobStatusResponse;
use tokio::sync::{watch, Mutex};

use crate::config::Config;
use crate::error::RequestError;
use crate::host::Identity;
use crate::record::{allowed, now, JobRecord, Transition};
use launcher_plugin_api::streams::{ResourceStreams, StatusStreams, Target};

/// Name of the plugin's record in a job directory.
pub const JOB_FILE: &str = "job.json";

/// Where things live under the scratch path.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// `jobs/`: one state directory per job; holds secrets (environment, stdin), so only the
    /// plugin's own user may enter it.
    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// `jobs/<id>/`.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.jobs().join(id)
    }

    /// `output/<user>/`: default output files, owned by the user, mode 0700.
    pub fn output_dir(&self, user: &str) -> PathBuf {
        self.root.join("output").join(user)
    }

    /// `tmp/<id>`: the job's TMPDIR (created and removed by the supervisor).
    pub fn tmp_dir(&self, id: &str) -> PathBuf {
        self.root.join("tmp").join(id)
    }

    /// Creates the directories with their modes (existing ones get their mode set again).
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dirs: [(PathBuf, u32); 4] = [
            (self.root.clone(), 0o711),
            (self.jobs(), 0o700),
            (self.root.join("output"), 0o755),
            // Traversable only: each job's own directory below it is 0700 and owned by the job's user.
            (self.root.join("tmp"), 0o711),
        ];
        for (i, (d, mode)) in dirs.iter().enumerate() {
            let existed = d.is_dir();
            std::fs::create_dir_all(d)?;
            let mode = if i == 0 && existed {
                // The scratch path may be a directory the administrator made: keep its mode, but
                // jobs running as other users must be able to pass through to their own files.
                std::fs::metadata(d)?.permissions().mode() & 0o7777 | 0o111
            } else {
                *mode
            };
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

pub use launcher_plugin_api::outbox::{Outbox, Outgoing};

/// How to start a supervisor: `<exe> supervise <job-dir>`, optionally through a wrapper
/// (`LAUNCHER_LOCAL_PLUGIN_SUPERVISOR_WRAPPER`, for debugging and tests: `<wrapper> <exe> ...`).
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    pub exe: PathBuf,
    pub wrapper: Option<PathBuf>,
}

struct Entry {
    rec: JobRecord,
    watch: watch::Sender<JobRecord>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Entry>,
    status: StatusStreams,
}

/// Everything the request handlers and job tasks share.
pub struct LocalPlugin {
    pub cfg: Config,
    pub ident: Identity,
    /// Whether jobs get a mount namespace (probed once at start-up).
    pub namespace: bool,
    pub hostname: String,
    pub layout: Layout,
    pub supervisor: SupervisorCommand,
    pub out: Outbox,
    table: Mutex<Table>,
    /// Open GetJobOutput streams by request id.
    pub output_streams: launcher_plugin_api::serve::OutputStreams,
    pub resources: Mutex<ResourceStreams>,
    /// Held by recovery and expiry, so a job being expired is never loaded back from disk.
    pub upkeep: Mutex<()>,
}

/// Writes a record to its job directory (atomically), off the runtime threads.
async fn persist(dir: PathBuf, rec: JobRecord) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || crate::files::write_state(&dir, JOB_FILE, &rec))
        .await
        .map_err(std::io::Error::other)?
}

impl LocalPlugin {
    /// The shared state of a plugin.
    pub fn new(
        cfg: Config,
        ident: Identity,
        namespace: bool,
        supervisor: SupervisorCommand,
        out: Outbox,
    ) -> LocalPlugin {
        LocalPlugin {
            layout: Layout {
                root: cfg.scratch_path.clone(),
            },
            cfg,
            ident,
            namespace,
            hostname: crate::host::hostname(),
            supervisor,
            out,
            table: Mutex::new(Table::default()),
            output_streams: Default::default(),
            resources: Mutex::new(ResourceStreams::default()),
            upkeep: Mutex::new(()),
        }
    }

    /// A job's record.
    pub async fn get(&self, id: &str) -> Option<JobRecord> {
        self.table.lock().await.jobs.get(id).map(|e| e.rec.clone())
    }

    /// A job's record if `username` may see it, else JobNotFound (existence is not revealed).
    pub async fn get_visible(&self, id: &str, username: &str) -> Result<JobRecord, RequestError> {
        match self.get(id).await {
            Some(r) if r.visible_to(username) => Ok(r),
            _ => Err(RequestError::JobNotFound(id.to_string())),
        }
    }

    /// Follows a job's record as it changes.
    pub async fn subscribe(&self, id: &str) -> Option<watch::Receiver<JobRecord>> {
        self.table.lock().await.jobs.get(id).map(|e| e.watch.subscribe())
    }

    /// Every record for which `keep` holds, ordered by submission time, then id.
    pub async fn list(&self, keep: impl Fn(&JobRecord) -> bool) -> Vec<JobRecord> {
        let t = self.table.lock().await;
        let mut v: Vec<JobRecord> = t
            .jobs
            .values()
            .filter(|e| keep(&e.rec))
            .map(|e| e.rec.clone())
            .collect();
        v.sort_by(|a, b| {
            (a.job.submission_time.as_deref(), a.id()).cmp(&(b.job.submission_time.as_deref(), b.id()))
        });
        v
    }

    /// Adds a new job (persisting its record) and tells the status streams. False if it was known.
    pub async fn insert(&self, rec: JobRecord) -> bool {
        self.add(rec, true).await
    }

    /// Adds a job read from disk. False if it was known.
    pub async fn insert_loaded(&self, rec: JobRecord) -> bool {
        self.add(rec, false).await
    }

    async fn add(&self, rec: JobRecord, write: bool) -> bool {
        let mut t = self.table.lock().await;
        let id = rec.id().to_string();
        if t.jobs.contains_key(&id) {
            return false;
        }
        if write {
            if let Err(e) = persist(self.layout.job_dir(&id), rec.clone()).await {
                // The job's supervisor may exist already: keep following it, and say so.
                tracing::error!(job_id = %id, error = %e, "cannot write the job's record; check the scratch path");
            }
        }
        let (watch, _) = watch::channel(rec.clone());
        t.jobs.insert(
            id,
            Entry {
                rec: rec.clone(),
                watch,
            },
        );
        self.publish(&mut t, &rec).await;
        true
    }

    /// Drops a job from the table (expiry).
    pub async fn remove(&self, id: &str) -> Option<JobRecord> {
        self.table.lock().await.jobs.remove(id).map(|e| e.rec)
    }

    /// Changes a job's record with `f`, which returns whether it changed anything; a change is
    /// persisted, then published (status streams, watchers). Returns the record after the call,
    /// or None for an unknown job.
    pub async fn change(&self, id: &str, f: impl FnOnce(&mut JobRecord) -> bool) -> Option<JobRecord> {
        let mut t = self.table.lock().await;
        let entry = t.jobs.get(id)?;
        let mut rec = entry.rec.clone();
        let before = rec.status();
        if !f(&mut rec) {
            return Some(rec);
        }
        if let Err(e) = persist(self.layout.job_dir(id), rec.clone()).await {
            // The processes are what they are: keep the truth in memory and say so.
            tracing::error!(job_id = %id, error = %e, "cannot write the job's record; check the scratch path");
        }
        let entry = t.jobs.get_mut(id).expect("held under the lock");
        entry.rec = rec.clone();
        entry.watch.send_replace(rec.clone());
        if rec.status() != before {
            self.publish(&mut t, &rec).await;
        }
        Some(rec)
    }

    /// Like [`Plugin::change`] for control requests: `f` may refuse, and `after` runs once the
    /// change is on disk, still under the table lock, so nothing else changes the job in between
    /// (a stop is recorded before the signal is sent, and the job cannot end unseen in between).
    /// When `after` fails the record is put back as it was.
    pub async fn try_change(
        &self,
        id: &str,
        f: impl FnOnce(&mut JobRecord) -> Result<bool, RequestError>,
        after: impl FnOnce(&JobRecord) -> Result<(), RequestError>,
    ) -> Result<JobRecord, RequestError> {
        let mut t = self.table.lock().await;
        let entry = t
            .jobs
            .get(id)
            .ok_or_else(|| RequestError::JobNotFound(id.to_string()))?;
        let old = entry.rec.clone();
        let mut rec = old.clone();
        if !f(&mut rec)? {
            after(&rec)?;
            return Ok(rec);
        }
        let dir = self.layout.job_dir(id);
        persist(dir.clone(), rec.clone())
            .await
            .map_err(|e| RequestError::io(format!("cannot record the request for job {id}"), e))?;
        if let Err(e) = after(&rec) {
            if let Err(pe) = persist(dir, old).await {
                tracing::error!(job_id = %id, error = %pe, "cannot write the job's record; check the scratch path");
            }
            return Err(e);
        }
        let entry = t.jobs.get_mut(id).expect("held under the lock");
        entry.rec = rec.clone();
        entry.watch.send_replace(rec.clone());
        if rec.status() != old.status() {
            tracing::info!(job_id = %id, status = %rec.status().as_str(), "job status changed");
            self.publish(&mut t, &rec).await;
        }
        Ok(rec)
    }

    /// Moves a job to a new status if the lifecycle allows it (never out of a terminal status);
    /// `extra` may record more (pid, ...). Returns the record, and whether it moved.
    pub async fn transition(
        &self,
        id: &str,
        tr: Transition,
        extra: impl FnOnce(&mut JobRecord),
    ) -> Option<(JobRecord, bool)> {
        let mut moved = false;
        let rec = self
            .change(id, |r| {
                if !allowed(r.status(), tr.status) {
                    return false;
                }
                extra(r);
                r.job.status = Some(tr.status.as_str().to_string());
                r.job.status_message = tr.message;
                if tr.exit_code.is_some() {
                    r.job.exit_code = tr.exit_code;
                }
                r.job.last_update_time = Some(now());
                moved = true;
                true
            })
            .await?;
        if moved {
            tracing::info!(job_id = %id, status = %tr.status.as_str(), exit_code = ?rec.job.exit_code, "job status changed");
        }
        Some((rec, moved))
    }

    /// Sends a job's status to every stream it concerns (under the table lock).
    async fn publish(&self, t: &mut Table, rec: &JobRecord) {
        let seqs = t
            .status
            .on_change(rec.id(), rec.user(), rec.status().is_terminal());
        if seqs.is_empty() {
            return;
        }
        let msg = JobStatusResponse {
            sequences: seqs,
            ..rec.status_message()
        };
        self.out.send(ResponseType::JobStatus, 0, &msg).await;
    }

    /// Opens a status stream: sends the current status of the matching job(s) at once; later
    /// changes follow through [`Plugin::change`]. A stream on one job that is already terminal
    /// gets that status and ends.
    pub async fn open_status_stream(
        &self,
        request_id: u64,
        target: Target,
        username: &str,
    ) -> Result<(), RequestError> {
        let mut t = self.table.lock().await;
        let mut current: Vec<JobRecord> = match &target {
            Target::Job(id) => match t.jobs.get(id) {
                Some(e) if e.rec.visible_to(username) => vec![e.rec.clone()],
                _ => return Err(RequestError::JobNotFound(id.clone())),
            },
            Target::All => t
                .jobs
                .values()
                .filter(|e| e.rec.visible_to(username))
                .map(|e| e.rec.clone())
                .collect(),
        };
        current.sort_by(|a, b| {
            (a.job.submission_time.as_deref(), a.id()).cmp(&(b.job.submission_time.as_deref(), b.id()))
        });
        let one_terminal = matches!(&target, Target::Job(_)) && current[0].status().is_terminal();
        t.status.open(request_id, target, username);
        for rec in &current {
            let seq = t.status.next(request_id).expect("just opened");
            let msg = JobStatusResponse {
                sequences: vec![seq],
                ..rec.status_message()
            };
            self.out.send(ResponseType::JobStatus, 0, &msg).await;
        }
        if one_terminal {
            t.status.close(request_id);
        }
        Ok(())
    }

    /// Closes a status stream (nothing happens for an unknown one).
    pub async fn close_status_stream(&self, request_id: u64) -> bool {
        self.table.lock().await.status.close(request_id)
    }

    /// The directory of a job's state files.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.layout.job_dir(id)
    }
}

/// Reads every `jobs/*/job.json` (unreadable ones are logged and skipped).
pub fn load_records(jobs_dir: &Path) -> Vec<JobRecord> {
    let Ok(rd) = std::fs::read_dir(jobs_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        match crate::files::read_state::<JobRecord>(&dir, JOB_FILE) {
            Ok(Some(r)) if r.id() == e.file_name().to_string_lossy() => out.push(r),
            Ok(Some(_)) => tracing::warn!(dir = %dir.display(), "job.json names another job; skipped"),
            Ok(None) => {
                tracing::warn!(dir = %dir.display(), "job directory without job.json; skipped")
            }
            Err(err) => tracing::warn!(dir = %dir.display(), error = %err, "unreadable job.json; skipped"),
        }
    }
    out
}
