//! Following jobs: from Pending to Running when the supervisor reports the job's process, and
//! to a terminal status when the supervisor is gone, judged from the files it left (spec.rs).
//! Also recovery of jobs after a plugin restart, and expiry of old terminal jobs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::record::{parse_time, EndRequest, JobRecord, Status, Transition};
use crate::spec::{self, Exited, SetupFailed, Started};
use crate::state::LocalPlugin;

/// How often a job whose supervisor is not our child is checked.
const RECOVERED_POLL: Duration = Duration::from_millis(250);
/// Longest wait between looks for `started.json` of our own child.
const STARTED_POLL_MAX: Duration = Duration::from_millis(250);

/// How the plugin learned that a job's supervisor is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// While the plugin was following it.
    Followed,
    /// It was already gone when the plugin (re)started.
    FoundGone,
}

/// The files a supervisor leaves in the job directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    pub started: Option<Started>,
    pub exited: Option<Exited>,
    pub failed: Option<SetupFailed>,
}

/// Reads the supervisor's reports (unreadable files count as absent, and are logged).
pub fn read_reports(dir: &Path) -> Reports {
    fn read<T: for<'de> serde::Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
        crate::files::read_state(dir, name)
            .inspect_err(
                |e| tracing::warn!(dir = %dir.display(), file = name, error = %e, "unreadable report"),
            )
            .ok()
            .flatten()
    }
    Reports {
        started: read(dir, spec::STARTED_FILE),
        exited: read(dir, spec::EXIT_FILE),
        failed: read(dir, spec::FAILED_FILE),
    }
}

async fn reports(dir: PathBuf) -> Reports {
    tokio::task::spawn_blocking(move || read_reports(&dir))
        .await
        .unwrap_or_default()
}

/// The name of signal `n` (`SIGSEGV`), or `signal n`.
pub fn signal_name(n: i32) -> String {
    Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}

/// The terminal status of a job whose supervisor is gone, from what it left behind.
pub fn judge(end: Option<EndRequest>, r: &Reports, ending: Ending) -> Transition {
    if let Some(f) = &r.failed {
        return Transition::new(Status::Failed, f.message.clone());
    }
    if let Some(e) = &r.exited {
        return match (end, e.signal) {
            (Some(EndRequest::Stop), _) => {
                Transition::new(Status::Killed, "stopped at the launcher's request")
            }
            (Some(EndRequest::Kill), _) => {
                Transition::new(Status::Killed, "killed at the launcher's request")
            }
            (Some(EndRequest::Cancel), _) => {
                Transition::new(Status::Canceled, "canceled at the launcher's request")
            }
            (None, Some(sig)) => Transition::new(
                Status::Failed,
                format!(
                    "the job was ended by {} ({sig}), which the launcher did not send",
                    signal_name(sig)
                ),
            ),
            (None, None) => Transition {
                status: Status::Finished,
                message: None,
                exit_code: None,
            },
        }
        .with_exit(e.exit_code);
    }
    if end == Some(EndRequest::Cancel) {
        // Killed by the cancel before the job could end on its own.
        return Transition::new(Status::Canceled, "canceled at the launcher's request");
    }
    let msg = match (ending, r.started.is_some()) {
        (Ending::Followed, _) => "the job's supervisor died unexpectedly",
        (Ending::FoundGone, true) => "the job's process vanished while the plugin was down",
        (Ending::FoundGone, false) => "the plugin stopped before the job started",
    };
    Transition::new(Status::Failed, msg)
}

/// Pending → Running once `started.json` is there. Returns whether it is.
async fn note_started(p: &Arc<LocalPlugin>, id: &str, s: &Started) {
    let tr = Transition {
        status: Status::Running,
        message: None,
        exit_code: None,
    };
    p.transition(id, tr, |r| {
        r.job.pid = Some(s.pid as i64);
        r.pid_start_ticks = Some(s.pid_start_ticks);
        // What the plugin saw when it spawned the supervisor beats what a report claims.
        if r.supervisor_pid.is_none() || r.supervisor_start_ticks.is_none() {
            r.supervisor_pid = Some(s.supervisor_pid);
            r.supervisor_start_ticks = Some(s.supervisor_start_ticks);
        }
    })
    .await;
}

/// Records the end of a job whose supervisor is gone. A job the launcher stopped or killed is
/// recorded as ended only once nothing of its process group runs any more.
pub async fn conclude(p: &Arc<LocalPlugin>, id: &str, ending: Ending) {
    let dir = p.job_dir(id);
    let r = reports(dir.clone()).await;
    let Some(rec) = p.get(id).await else { return };
    let ended_by_us = matches!(rec.end_request, Some(EndRequest::Stop | EndRequest::Kill));
    if !rec.status().is_terminal() && ended_by_us {
        let pgid = r
            .started
            .as_ref()
            .map(|s| s.pid)
            .or(rec.job.pid.map(|p| p as i32));
        if let Some(pgid) = pgid {
            let deadline = tokio::time::Instant::now() + crate::control::KILL_WAIT;
            crate::control::kill_leftovers(pgid, rec.uid, deadline).await;
        }
    } else if !rec.status().is_terminal() && r.exited.is_none() && r.failed.is_none() {
        // No supervisor, yet the job's process may be there: it must not run unwatched.
        if let Some(s) = &r.started {
            let users = rec
                .uid
                .is_some_and(|u| crate::files::process_uid(s.pid) == Some(u));
            if users && spec::process_alive(s.pid, s.pid_start_ticks) {
                tracing::warn!(
                    job_id = %id,
                    pid = s.pid,
                    "killing the job's processes: their supervisor is gone"
                );
                let _ = nix::sys::signal::killpg(Pid::from_raw(s.pid), Signal::SIGKILL);
            }
        }
    }
    // The supervisor empties the job's TMPDIR; removing it is the plugin's part (the user cannot,
    // in the root-owned tmp/). Done before the end is announced, so an ended job left nothing.
    let tmp = p.layout.tmp_dir(id);
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove the job's TMPDIR")
        }
        _ => {}
    })
    .await;
    if !rec.status().is_terminal() {
        if let (Some(s), Status::Pending) = (&r.started, rec.status()) {
            // Even a job that ended at once was Running first: streams see every step.
            note_started(p, id, s).await;
        }
        p.transition(id, judge(rec.end_request, &r, ending), |_| {}).await;
    }
}

/// Follows a job whose supervisor is our child.
pub async fn follow_child(p: Arc<LocalPlugin>, id: String, mut child: tokio::process::Child) {
    let dir = p.job_dir(&id);
    let mut delay = Duration::from_millis(5);
    loop {
        tokio::select! {
            _ = child.wait() => break,
            _ = tokio::time::sleep(delay) => {
                if let Some(s) = reports(dir.clone()).await.started {
                    note_started(&p, &id, &s).await;
                    let _ = child.wait().await;
                    break;
                }
                delay = (delay * 2).min(STARTED_POLL_MAX);
            }
        }
    }
    conclude(&p, &id, Ending::Followed).await;
}

/// Follows a job found on disk whose supervisor is not our child (the plugin restarted).
pub async fn follow_recovered(p: Arc<LocalPlugin>, id: String) {
    let dir = p.job_dir(&id);
    let mut first = true;
    loop {
        let Some(rec) = p.get(&id).await else { return };
        if rec.status().is_terminal() {
            return;
        }
        let r = reports(dir.clone()).await;
        if let (Some(s), Status::Pending) = (&r.started, rec.status()) {
            note_started(&p, &id, s).await;
        }
        let mut sup = r
            .started
            .as_ref()
            .map(|s| (s.supervisor_pid, s.supervisor_start_ticks))
            .or(rec.supervisor_pid.zip(rec.supervisor_start_ticks));
        if sup.is_none() && first {
            // Spawned, but the plugin stopped before it could write the supervisor's pid down.
            let d = dir.clone();
            sup = tokio::task::spawn_blocking(move || crate::procfs::find_supervisor(&d))
                .await
                .ok()
                .flatten();
            if let Some((pid, ticks)) = sup {
                p.change(&id, |r| {
                    r.supervisor_pid = Some(pid);
                    r.supervisor_start_ticks = Some(ticks);
                    true
                })
                .await;
            }
        }
        let alive = sup.is_some_and(|(pid, ticks)| crate::procfs::is_supervisor_of(pid, ticks, &dir));
        if !alive {
            let ending = if first {
                Ending::FoundGone
            } else {
                Ending::Followed
            };
            conclude(&p, &id, ending).await;
            return;
        }
        first = false;
        tokio::time::sleep(RECOVERED_POLL).await;
    }
}

/// Loads every job on disk that the table does not know yet, and follows the unfinished ones.
/// Called at start-up and on Bootstrap; never starts anything.
pub async fn recover(p: &Arc<LocalPlugin>) -> usize {
    let _upkeep = p.upkeep.lock().await;
    let jobs_dir = p.layout.jobs();
    let recs = tokio::task::spawn_blocking(move || crate::state::load_records(&jobs_dir))
        .await
        .unwrap_or_default();
    let mut n = 0;
    for mut rec in recs {
        let id = rec.id().to_string();
        if !rec.status().is_terminal() && !trustworthy(p, &rec) {
            tracing::warn!(job_id = %id, "the job's record does not match its directory's owner; not following it");
            rec.job.status = Some(Status::Failed.as_str().into());
            rec.job.status_message =
                Some("the job's state files were changed by someone other than the plugin".into());
            rec.job.last_update_time = Some(crate::record::now());
            rec.end_request = None;
            if let Err(e) = crate::files::write_state(&p.job_dir(&id), crate::state::JOB_FILE, &rec) {
                tracing::error!(job_id = %id, error = %e, "cannot write the job's record");
            }
        }
        let open = !rec.status().is_terminal();
        match p.insert_loaded(rec).await {
            true if open => {
                n += 1;
                tracing::info!(job_id = %id, "following a job found on disk");
                let p = p.clone();
                tokio::spawn(async move { follow_recovered(p, id).await });
            }
            _ => {}
        }
    }
    n
}

/// Whether a job record read from disk can be believed: once the supervisor has handed the job
/// directory to the job's user, that user could have rewritten the record, so a record naming
/// another uid than the directory's owner is not the plugin's.
fn trustworthy(p: &Arc<LocalPlugin>, rec: &JobRecord) -> bool {
    match crate::files::owner(&p.job_dir(rec.id())) {
        Ok(owner) => owner == p.ident.uid || Some(owner) == rec.uid,
        Err(_) => false,
    }
}

/// Whether a terminal job last changed before `cutoff` (the record's times are RFC 3339).
pub fn expired(rec: &JobRecord, cutoff: time::OffsetDateTime) -> bool {
    rec.status().is_terminal()
        && rec
            .job
            .last_update_time
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|t| t < cutoff)
}

/// Removes terminal jobs older than `job-expiry-hours` (their state, not their output files).
pub async fn expire(p: &Arc<LocalPlugin>) {
    let hours = p.cfg.options.job_expiry_hours;
    if hours == 0 {
        return;
    }
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::hours(hours as i64);
    let _upkeep = p.upkeep.lock().await;
    for rec in p.list(|r| expired(r, cutoff)).await {
        let id = rec.id().to_string();
        p.remove(&id).await;
        let (dir, tmp) = (p.job_dir(&id), p.layout.tmp_dir(&id));
        tracing::info!(job_id = %id, "expired");
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::remove_dir_all(tmp);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Started {
        Started {
            supervisor_pid: 10,
            supervisor_start_ticks: 1,
            pid: 11,
            pid_start_ticks: 2,
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn exited(code: i32, signal: Option<i32>) -> Option<Exited> {
        Some(Exited {
            exit_code: code,
            signal,
            finished_at: "2026-01-01T00:00:01Z".into(),
        })
    }

    #[test]
    fn endings_are_judged_from_the_reports() {
        let ran = |e| Reports {
            started: Some(started()),
            exited: e,
            failed: None,
        };
        let j = judge(None, &ran(exited(3, None)), Ending::Followed);
        assert_eq!(
            (j.status, j.exit_code, j.message),
            (Status::Finished, Some(3), None)
        );
        let j = judge(None, &ran(exited(139, Some(11))), Ending::Followed);
        assert_eq!((j.status, j.exit_code), (Status::Failed, Some(139)));
        assert!(j.message.unwrap().contains("SIGSEGV (11)"));
        let j = judge(
            Some(EndRequest::Stop),
            &ran(exited(143, Some(15))),
            Ending::Followed,
        );
        assert_eq!((j.status, j.exit_code), (Status::Killed, Some(143)));
        let j = judge(
            Some(EndRequest::Kill),
            &ran(exited(137, Some(9))),
            Ending::FoundGone,
        );
        assert_eq!((j.status, j.exit_code), (Status::Killed, Some(137)));
        // A job that handles SIGTERM and exits is still ended by the launcher.
        let j = judge(Some(EndRequest::Stop), &ran(exited(0, None)), Ending::Followed);
        assert_eq!((j.status, j.exit_code), (Status::Killed, Some(0)));
        let failed = Reports {
            failed: Some(SetupFailed {
                message: "no such dir".into(),
            }),
            ..Reports::default()
        };
        // A supervisor killed by a cancel left nothing: the job is Canceled, started or not.
        for r in [Reports::default(), ran(None)] {
            let j = judge(Some(EndRequest::Cancel), &r, Ending::Followed);
            assert_eq!((j.status, j.exit_code), (Status::Canceled, None));
        }
        let j = judge(None, &failed, Ending::Followed);
        assert_eq!(
            (j.status, j.exit_code, j.message.as_deref()),
            (Status::Failed, None, Some("no such dir"))
        );
    }

    #[test]
    fn a_vanished_supervisor_is_a_failure_that_says_when() {
        let msg = |r: &Reports, e| judge(None, r, e).message.unwrap();
        assert_eq!(
            msg(&Reports::default(), Ending::Followed),
            "the job's supervisor died unexpectedly"
        );
        assert_eq!(
            msg(&Reports::default(), Ending::FoundGone),
            "the plugin stopped before the job started"
        );
        let ran = Reports {
            started: Some(started()),
            ..Reports::default()
        };
        assert_eq!(
            msg(&ran, Ending::FoundGone),
            "the job's process vanished while the plugin was down"
        );
        assert_eq!(judge(None, &ran, Ending::FoundGone).exit_code, None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(200), "signal 200");
    }

    #[test]
    fn only_old_terminal_jobs_expire() {
        let mut rec: JobRecord = serde_json::from_value(serde_json::json!({
            "job": {"id": "a", "status": "Finished", "lastUpdateTime": "2026-01-01T00:00:00.000000Z"},
            "stdoutPath": "/o", "stderrPath": "/e"
        }))
        .unwrap();
        let cutoff = time::macros::datetime!(2026-01-02 00:00 UTC);
        assert!(expired(&rec, cutoff));
        assert!(!expired(&rec, time::macros::datetime!(2025-12-31 00:00 UTC)));
        rec.job.status = Some("Running".into());
        assert!(!expired(&rec, cutoff));
    }
}
