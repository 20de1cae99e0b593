//! What the plugin knows: a cache of the launcher jobs Slurm has (found by the comment marker),
//! refreshed by polling `squeue --json`, the open status streams, and the outgoing queue.
//!
//! Slurm is the only record: the plugin keeps no files of its own, so a restarted plugin, or
//! the plugin of another node adopting the jobs of a dead one (DESIGN §1, shared scheduler),
//! sees exactly the same jobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{Job, JobStatusResponse};
use tokio::sync::{watch, Mutex, Notify};

use crate::config::Config;
use crate::error::RequestError;
use crate::parse::{self, judge, Judged, SlurmJob, Status};
use crate::slurm::{Slurm, SlurmError};

/// How long an ended job the controller no longer lists stays in the cache.
const FORGET_AFTER: Duration = Duration::from_secs(600);

pub use launcher_plugin_api::outbox::{Outbox, Outgoing};
use launcher_plugin_api::streams::StatusStreams;
pub use launcher_plugin_api::streams::Target;

/// One launcher job in Slurm.
#[derive(Debug, Clone)]
pub struct Entry {
    pub sj: SlurmJob,
    pub cluster: String,
    pub tags: Vec<String>,
    pub judged: Judged,
    pub last_update: String,
    /// A stop or kill was asked for through this plugin.
    pub end_requested: bool,
    terminal_since: Option<Instant>,
}

impl Entry {
    /// The job's status.
    pub fn status(&self) -> Status {
        self.judged.status
    }

    /// Whether `username` (of a request) may see the job.
    pub fn visible_to(&self, username: &str) -> bool {
        username.is_empty() || username == "*" || username == self.sj.user
    }

    /// The expanded stdout and stderr paths.
    pub fn output_paths(&self) -> (String, String) {
        let out = parse::expand_pattern(&self.sj.stdout, &self.sj);
        // Without --error Slurm writes stderr into the stdout file.
        let err = if self.sj.stderr.is_empty() {
            out.clone()
        } else {
            parse::expand_pattern(&self.sj.stderr, &self.sj)
        };
        (out, err)
    }

    /// The job as the Plugin API shows it.
    pub fn job(&self) -> Job {
        let (out, err) = self.output_paths();
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Job {
            id: Some(self.sj.id.clone()),
            name: self.sj.name.clone(),
            cluster: self.cluster.clone(),
            user: some(&self.sj.user),
            group: some(&self.sj.group),
            tags: self.tags.clone(),
            queues: some(&self.sj.partition).into_iter().collect(),
            working_directory: some(&self.sj.workdir),
            stdout_file: some(&out),
            stderr_file: some(&err),
            host: some(&self.sj.batch_host),
            status: Some(self.status().as_str().to_string()),
            status_message: Some(self.judged.message.clone()),
            status_code: some(&self.sj.state),
            exit_code: self.judged.exit_code,
            submission_time: parse::rfc3339(self.sj.submit_time),
            last_update_time: Some(self.last_update.clone()),
            ..Job::default()
        }
    }

    /// The JobStatus payload (without sequences).
    pub fn status_message(&self) -> JobStatusResponse {
        JobStatusResponse {
            sequences: Vec::new(),
            id: self.sj.id.clone(),
            name: self.sj.name.clone(),
            status: self.status().as_str().to_string(),
            status_message: Some(self.judged.message.clone()),
            status_code: Some(self.sj.state.clone()),
            last_update_time: Some(self.last_update.clone()),
            pid: None,
            exit_code: self.judged.exit_code,
        }
    }
}

/// Whether a job may move from `from` to `to`: forward only, never out of a terminal status.
pub fn allowed(from: Status, to: Status) -> bool {
    if from.is_terminal() {
        return false;
    }
    match to {
        Status::Pending => false,
        Status::Running => matches!(from, Status::Pending | Status::Suspended),
        Status::Suspended => from == Status::Running,
        _ => true,
    }
}

struct Known {
    entry: Entry,
    watch: watch::Sender<Status>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Known>,
    subs: StatusStreams,
}

/// Everything the request handlers and the poller share.
pub struct SlurmPlugin {
    pub cfg: Config,
    pub slurm: Slurm,
    pub out: Outbox,
    /// Whether the plugin can run commands as other users (root and not `unprivileged=1`).
    pub switch_user: bool,
    /// The plugin's own account.
    pub own_user: String,
    table: Mutex<Table>,
    /// One refresh at a time.
    refreshing: Mutex<()>,
    /// Asks the poller for a refresh now (after a submit or a control).
    pub poke: Notify,
    /// Open GetJobOutput streams by request id.
    pub output_streams: launcher_plugin_api::serve::OutputStreams,
    /// Open GetJobResourceUtil streams, by job.
    pub resources: Mutex<launcher_plugin_api::streams::ResourceStreams>,
    /// Status and resource streams being opened (their job is looked up off the reader): a
    /// cancel that arrives meanwhile takes the request id out, and the stream is then never
    /// registered. Changed only under the lock of the stream table concerned.
    pub opening: std::sync::Mutex<HashSet<u64>>,
}

/// The current time in the launcher's format.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

fn slurm_error(e: SlurmError) -> RequestError {
    RequestError::Internal(format!("Slurm: {e}"))
}

impl SlurmPlugin {
    /// The shared state.
    pub fn new(cfg: Config, out: Outbox, switch_user: bool, own_user: String) -> SlurmPlugin {
        SlurmPlugin {
            slurm: Slurm {
                bin: cfg.slurm_bin_path.clone(),
                conf: cfg.slurm_conf.clone(),
                timeout: cfg.command_timeout,
            },
            cfg,
            out,
            switch_user,
            own_user,
            table: Mutex::new(Table::default()),
            refreshing: Mutex::new(()),
            poke: Notify::new(),
            output_streams: Default::default(),
            resources: Mutex::new(Default::default()),
            opening: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Takes in what Slurm says of a job: updates the cache and tells the status streams when
    /// the status changed. `launcher` = (cluster, tags) from the comment, when known.
    async fn observe(&self, sj: SlurmJob, launcher: Option<(String, Vec<String>)>) {
        let mut t = self.table.lock().await;
        let id = sj.id.clone();
        let existing = t.jobs.get(&id).map(|k| k.entry.clone());
        let Some(mut e) = existing.or_else(|| {
            let (cluster, tags) = launcher.clone()?;
            // A job first seen while COMPLETING (or in a state we do not map) counts as
            // Running until its final state shows.
            let judged = judge(&sj, false).unwrap_or_else(|| Judged {
                status: Status::Running,
                message: format!("Slurm: {}", sj.state),
                exit_code: None,
            });
            Some(Entry {
                sj: sj.clone(),
                cluster,
                tags,
                terminal_since: judged.status.is_terminal().then(Instant::now),
                judged,
                last_update: now(),
                end_requested: false,
            })
        }) else {
            return;
        };
        let fresh = !t.jobs.contains_key(&id);
        // A row from the job completion file lacks the comment and paths: keep what we had.
        let keep = e.sj.clone();
        e.sj = SlurmJob {
            comment: if sj.comment.is_empty() {
                keep.comment
            } else {
                sj.comment.clone()
            },
            stdout: if sj.stdout.is_empty() {
                keep.stdout
            } else {
                sj.stdout.clone()
            },
            stderr: if sj.stdout.is_empty() {
                keep.stderr
            } else {
                sj.stderr.clone()
            },
            workdir: if sj.workdir.is_empty() {
                keep.workdir
            } else {
                sj.workdir.clone()
            },
            batch_host: if sj.batch_host.is_empty() {
                keep.batch_host
            } else {
                sj.batch_host.clone()
            },
            group: if sj.group.is_empty() {
                keep.group
            } else {
                sj.group.clone()
            },
            name: if sj.name.is_empty() {
                keep.name
            } else {
                sj.name.clone()
            },
            ..sj
        };
        if let Some((cluster, tags)) = launcher {
            e.cluster = cluster;
            e.tags = tags;
        }
        let before = e.status();
        let mut moved = fresh;
        if let Some(j) = judge(&e.sj, e.end_requested) {
            if allowed(before, j.status) {
                tracing::info!(job_id = %id, status = j.status.as_str(), exit_code = ?j.exit_code, "job status changed");
                if j.status.is_terminal() {
                    e.terminal_since = Some(Instant::now());
                }
                e.judged = j;
                e.last_update = now();
                moved = true;
            }
        }
        self.store(&mut t, e, moved).await;
    }

    /// Puts an entry in the table; publishes it when `moved`.
    async fn store(&self, t: &mut Table, e: Entry, moved: bool) {
        let id = e.sj.id.clone();
        let status = e.status();
        match t.jobs.get_mut(&id) {
            Some(k) => {
                k.entry = e.clone();
                k.watch.send_replace(status);
            }
            None => {
                let (watch, _) = watch::channel(status);
                t.jobs.insert(
                    id,
                    Known {
                        entry: e.clone(),
                        watch,
                    },
                );
            }
        }
        if moved {
            self.publish(t, &e).await;
        }
    }

    /// Sends a job's status to every stream it concerns (under the table lock).
    async fn publish(&self, t: &mut Table, e: &Entry) {
        let seqs = t.subs.on_change(&e.sj.id, &e.sj.user, e.status().is_terminal());
        if !seqs.is_empty() {
            let msg = JobStatusResponse {
                sequences: seqs,
                ..e.status_message()
            };
            self.out.send(ResponseType::JobStatus, 0, &msg).await;
        }
    }

    /// Holds refreshes off while a control changes a job's status in Slurm and in the cache: a
    /// `squeue` answer read before `scontrol suspend` returned would otherwise, taken in after
    /// it, put back the status the control just changed (and the launcher would see Suspended,
    /// then Running, then Suspended again).
    pub async fn hold_refreshes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refreshing.lock().await
    }

    /// Asks Slurm for every job now and takes in what changed. Jobs that left the controller
    /// are looked up once more (`scontrol`, then the job completion file).
    pub async fn refresh(&self) -> Result<(), RequestError> {
        let _one = self.refreshing.lock().await;
        let jobs = self.slurm.squeue().await.map_err(slurm_error)?;
        let mut seen = HashSet::new();
        for sj in jobs {
            if let Some(l) = parse::read_comment(&sj.comment) {
                seen.insert(sj.id.clone());
                self.observe(sj, Some(l)).await;
            }
        }
        let (missing, forget): (Vec<String>, Vec<String>) = {
            let t = self.table.lock().await;
            let missing = t
                .jobs
                .values()
                .filter(|k| !seen.contains(&k.entry.sj.id) && !k.entry.status().is_terminal())
                .map(|k| k.entry.sj.id.clone())
                .collect();
            let forget = t
                .jobs
                .values()
                .filter(|k| !seen.contains(&k.entry.sj.id))
                .filter(|k| k.entry.terminal_since.is_some_and(|s| s.elapsed() > FORGET_AFTER))
                .map(|k| k.entry.sj.id.clone())
                .collect();
            (missing, forget)
        };
        for id in missing {
            match self.slurm.lookup(&id).await {
                Ok(Some(sj)) => self.observe(sj, None).await,
                Ok(None) => self.lost(&id).await,
                Err(e) => tracing::warn!(job_id = %id, error = %e, "cannot look a job up in Slurm"),
            }
        }
        if !forget.is_empty() {
            let mut t = self.table.lock().await;
            for id in forget {
                t.jobs.remove(&id);
            }
        }
        Ok(())
    }

    /// Slurm has no trace of a job it had: Failed.
    async fn lost(&self, id: &str) {
        let mut t = self.table.lock().await;
        let Some(mut e) = t.jobs.get(id).map(|k| k.entry.clone()) else {
            return;
        };
        if e.status().is_terminal() {
            return;
        }
        tracing::warn!(job_id = %id, "Slurm no longer knows the job");
        e.judged = Judged {
            status: Status::Failed,
            message: "Slurm no longer knows this job (ended past MinJobAge, no job completion record)".into(),
            exit_code: None,
        };
        e.terminal_since = Some(Instant::now());
        e.last_update = now();
        self.store(&mut t, e, true).await;
    }

    /// A job by Slurm id: from the cache, else from Slurm. Only launcher jobs are known.
    pub async fn find(&self, id: &str) -> Result<Entry, RequestError> {
        if let Some(k) = self.table.lock().await.jobs.get(id) {
            return Ok(k.entry.clone());
        }
        match self.slurm.lookup(id).await.map_err(slurm_error)? {
            Some(sj) => {
                let l = parse::read_comment(&sj.comment);
                if l.is_none() && !sj.comment.is_empty() {
                    return Err(RequestError::JobNotFound(id.to_string()));
                }
                // A row of the job completion file has no comment: it is served as it is.
                let l = l.or_else(|| Some((self.cfg.options.plugin_name.clone(), Vec::new())));
                self.observe(sj, l).await;
                self.table
                    .lock()
                    .await
                    .jobs
                    .get(id)
                    .map(|k| k.entry.clone())
                    .ok_or_else(|| RequestError::JobNotFound(id.to_string()))
            }
            None => Err(RequestError::JobNotFound(id.to_string())),
        }
    }

    /// A job `username` may see, else JobNotFound.
    pub async fn find_visible(&self, id: &str, username: &str) -> Result<Entry, RequestError> {
        match self.find(id).await? {
            e if e.visible_to(username) => Ok(e),
            _ => Err(RequestError::JobNotFound(id.to_string())),
        }
    }

    /// Adds a job just submitted.
    pub async fn add_submitted(&self, sj: SlurmJob, cluster: String, tags: Vec<String>) -> Entry {
        let e = Entry {
            judged: Judged {
                status: Status::Pending,
                message: "Slurm: submitted".into(),
                exit_code: None,
            },
            sj,
            cluster,
            tags,
            last_update: now(),
            end_requested: false,
            terminal_since: None,
        };
        let mut t = self.table.lock().await;
        if let Some(k) = t.jobs.get(&e.sj.id) {
            // The poller saw it first.
            return k.entry.clone();
        }
        self.store(&mut t, e.clone(), true).await;
        e
    }

    /// Changes a cached job with `f` (a control that Slurm carried out), publishing a status
    /// change at once rather than at the next poll.
    pub async fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        let mut t = self.table.lock().await;
        let Some(mut e) = t.jobs.get(id).map(|k| k.entry.clone()) else {
            return;
        };
        let before = e.status();
        f(&mut e);
        let moved = e.status() != before;
        if moved {
            e.last_update = now();
            if e.status().is_terminal() {
                e.terminal_since = Some(Instant::now());
            }
        }
        self.store(&mut t, e, moved).await;
    }

    /// Every cached job for which `keep` holds, by submission time then id.
    pub async fn list(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let t = self.table.lock().await;
        let mut v: Vec<Entry> = t
            .jobs
            .values()
            .map(|k| &k.entry)
            .filter(|e| keep(e))
            .cloned()
            .collect();
        v.sort_by_key(|e| (e.sj.submit_time, e.sj.id.parse::<u64>().unwrap_or(0)));
        v
    }

    /// Follows a job's status.
    pub async fn subscribe(&self, id: &str) -> Option<watch::Receiver<Status>> {
        self.table.lock().await.jobs.get(id).map(|k| k.watch.subscribe())
    }

    /// Opens a status stream registered in `opening` by the reader: the current status of the
    /// matching jobs at once, changes later.
    pub async fn open_status_stream(
        &self,
        rid: u64,
        target: Target,
        username: &str,
    ) -> Result<(), RequestError> {
        if let Target::Job(id) = &target {
            // Known to the cache before the stream is registered.
            self.find_visible(id, username).await?;
        }
        let mut t = self.table.lock().await;
        if !self.still_opening(rid) {
            // Canceled while its job was looked up.
            return Ok(());
        }
        let mut current: Vec<Entry> = t
            .jobs
            .values()
            .map(|k| &k.entry)
            .filter(|e| e.visible_to(username))
            .filter(|e| match &target {
                Target::All => true,
                Target::Job(id) => e.sj.id == *id,
            })
            .cloned()
            .collect();
        current.sort_by_key(|e| (e.sj.submit_time, e.sj.id.parse::<u64>().unwrap_or(0)));
        let one_terminal =
            matches!(target, Target::Job(_)) && current.first().is_some_and(|e| e.status().is_terminal());
        t.subs.open(rid, target, username);
        for e in &current {
            let seq = t.subs.next(rid).expect("just opened");
            let msg = JobStatusResponse {
                sequences: vec![seq],
                ..e.status_message()
            };
            self.out.send(ResponseType::JobStatus, 0, &msg).await;
        }
        if one_terminal {
            t.subs.close(rid);
        }
        Ok(())
    }

    /// Closes a status stream, or keeps one being opened from opening.
    pub async fn close_status_stream(&self, rid: u64) {
        let mut t = self.table.lock().await;
        self.opening.lock().expect("opening").remove(&rid);
        t.subs.close(rid);
    }

    /// Whether the stream `rid`, being opened, is still wanted (no cancel came meanwhile); it
    /// counts as opened from now on. Call under the lock of the stream's table.
    pub fn still_opening(&self, rid: u64) -> bool {
        self.opening.lock().expect("opening").remove(&rid)
    }
}

/// How long the poller polls fast after a submit or control, and how fast.
const BURST: (Duration, Duration) = (Duration::from_secs(3), Duration::from_millis(150));

/// Polls Slurm every `poll` until the task is dropped. A poke (a submit, a control) polls at
/// once and then every 150 ms for 3 s: Slurm starts and ends short jobs within a second, and
/// the launcher should hear of it without waiting a whole `poll-seconds`.
pub async fn poller(p: Arc<SlurmPlugin>) {
    let mut failing = false;
    let mut fast_until = Instant::now();
    loop {
        match p.refresh().await {
            Ok(()) if failing => {
                tracing::info!("Slurm answers again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot read job states from Slurm; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        let wait = if Instant::now() < fast_until {
            p.cfg.poll.min(BURST.1)
        } else {
            p.cfg.poll
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = p.poke.notified() => fast_until = Instant::now() + BURST.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use Status::*;
        assert!(allowed(Pending, Running) && allowed(Running, Suspended) && allowed(Suspended, Running));
        assert!(allowed(Pending, Canceled) && allowed(Suspended, Killed));
        assert!(!allowed(Running, Pending) && !allowed(Finished, Running) && !allowed(Killed, Failed));
        assert!(!allowed(Pending, Suspended));
    }
}
