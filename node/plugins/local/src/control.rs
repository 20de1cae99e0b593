//! ControlJob: suspend, resume, stop, kill and cancel, as signals to the job's process group.
//! A pid is signalled only after checking, by its start time, that it is still the job's
//! process; a reused pid is never signalled.
//!
//! The answer comes once the processes are in the state the job's status says, never before,
//! so a launcher that reads after the answer sees what is true:
//! * kill: SIGKILL to the group; answered when the job is Killed, which it becomes only once
//!   nothing of its group runs any more (the supervisor reaped it; `follow::conclude` kills and
//!   waits out what is left);
//! * stop: SIGTERM (and SIGCONT, to a suspended job); if the job has not ended within
//!   `stop-grace-seconds`, SIGKILL; answered like kill;
//! * suspend / resume: SIGSTOP / SIGCONT; answered once every process of the group is stopped
//!   / no longer stopped;
//! * cancel: the supervisor and its session are killed; Canceled, and answered, once they are
//!   gone.
//!
//! Until then the job's `statusMessage` says which signal was sent. When the processes do not
//! get there in time (a process stuck in the kernel), the answer says so with
//! `operationComplete: false`, and the status follows when they do.

use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::messages::{ControlJobRequest, ControlJobResponse, ControlOperation};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::error::RequestError;
use crate::record::{now, EndRequest, JobRecord, Status, Transition};
use crate::state::LocalPlugin;

/// How long the processes of a job sent SIGKILL may take to be gone before the answer says the
/// kill is not complete.
pub const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a suspend or resume waits for every process of the job to be stopped or continued.
const STATE_WAIT: Duration = Duration::from_secs(5);
/// How often the processes are looked at while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Sends `sig` to the job's process group, once sure the job's process is still the one that
/// started (by its start time).
fn signal_job(rec: &JobRecord, sig: Signal) -> Result<(), RequestError> {
    let (Some(pid), Some(ticks)) = (rec.job.pid, rec.pid_start_ticks) else {
        return Err(RequestError::JobNotRunning(format!(
            "job {} has no process yet",
            rec.id()
        )));
    };
    let pid = pid as i32;
    if !crate::spec::process_alive(pid, ticks) {
        return Err(RequestError::JobNotRunning(format!(
            "the process of job {} has ended",
            rec.id()
        )));
    }
    // The pid came from the supervisor's report, which the job's user can write: only ever
    // signal a process of that user.
    if let Some(uid) = rec.uid {
        if crate::files::process_uid(pid) != Some(uid) {
            return Err(RequestError::ControlFailed(format!(
                "process {pid} does not run as the user of job {}; not signalling it",
                rec.id()
            )));
        }
    }
    match killpg(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err(RequestError::JobNotRunning(format!(
            "the process of job {} has ended",
            rec.id()
        ))),
        Err(e) => Err(RequestError::ControlFailed(format!(
            "cannot send {} to the process group {pid} of job {}: {e}",
            sig.as_str(),
            rec.id()
        ))),
    }
}

fn not_running(rec: &JobRecord) -> RequestError {
    RequestError::JobNotRunning(format!(
        "job {} is {}, not running",
        rec.id(),
        rec.status().as_str()
    ))
}

fn set_status(rec: &mut JobRecord, s: Status, message: &str) {
    rec.job.status = Some(s.as_str().to_string());
    rec.job.status_message = Some(message.to_string());
    rec.job.last_update_time = Some(now());
}

/// Waits until job `id` has a terminal status (or left the table); false at `deadline`.
async fn wait_terminal(p: &Arc<LocalPlugin>, id: &str, deadline: Instant) -> bool {
    let Some(mut watch) = p.subscribe(id).await else {
        return true;
    };
    loop {
        if watch.borrow_and_update().status().is_terminal() {
            return true;
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

/// Waits until `done` holds for the live processes of group `pgid`; false at `deadline`.
async fn wait_group(pgid: i32, done: fn(&[crate::procfs::ProcStat]) -> bool, deadline: Instant) -> bool {
    loop {
        let members = tokio::task::spawn_blocking(move || crate::procfs::group_members(pgid))
            .await
            .unwrap_or_default();
        if done(&members) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

fn all_stopped(members: &[crate::procfs::ProcStat]) -> bool {
    members.iter().all(|m| matches!(m.state, 'T' | 't'))
}

fn none_stopped(members: &[crate::procfs::ProcStat]) -> bool {
    !members.iter().any(|m| m.state == 'T')
}

/// Kills, with SIGKILL, whatever still runs in the process group `pgid` of a job the launcher
/// ended, and waits until nothing of it runs; false if something still does at `deadline`.
/// Only processes of the job's user (`uid`, when known) are signalled, one by one: the group id
/// is the job's pid, which, once the group is empty, another process could get.
pub async fn kill_leftovers(pgid: i32, uid: Option<u32>, deadline: Instant) -> bool {
    let mut told = false;
    loop {
        let left = tokio::task::spawn_blocking(move || {
            crate::procfs::group_members(pgid)
                .into_iter()
                .filter(|m| uid.is_none() || crate::files::process_uid(m.pid) == uid)
                .map(|m| m.pid)
                .collect::<Vec<i32>>()
        })
        .await
        .unwrap_or_default();
        if left.is_empty() {
            return true;
        }
        if !told {
            tracing::info!(
                pgid,
                processes = left.len(),
                "killing what is left of the job's process group"
            );
            told = true;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            tracing::warn!(pgid, pids = ?left, "processes of an ended job do not die");
            return false;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Notes in the job's statusMessage (status unchanged) what was done, until its status says more.
async fn note(p: &Arc<LocalPlugin>, id: &str, message: String) {
    p.change(id, |r| {
        if r.status().is_terminal() {
            return false;
        }
        r.job.status_message = Some(message);
        true
    })
    .await;
}

fn not_complete(message: String) -> ControlJobResponse {
    ControlJobResponse {
        status_message: message,
        operation_complete: false,
    }
}

/// Handles ControlJob.
pub async fn control(
    p: &Arc<LocalPlugin>,
    req: ControlJobRequest,
) -> Result<ControlJobResponse, RequestError> {
    let op = ControlOperation::from_number(req.operation)
        .ok_or_else(|| RequestError::Invalid(format!("unknown control operation {}", req.operation)))?;
    let id = req.job_id.as_str();
    p.get_visible(id, &req.username).await?;
    let done = |m: &str| ControlJobResponse {
        status_message: m.to_string(),
        operation_complete: true,
    };
    match op {
        ControlOperation::Suspend | ControlOperation::Resume => {
            let suspend = op == ControlOperation::Suspend;
            let rec = p
                .try_change(
                    id,
                    |r| match (suspend, r.status()) {
                        (true, Status::Running) => {
                            set_status(r, Status::Suspended, "suspended at the launcher's request");
                            Ok(true)
                        }
                        (true, Status::Suspended) => Err(RequestError::InvalidState(format!(
                            "job {id} is already suspended"
                        ))),
                        (true, _) => Err(not_running(r)),
                        (false, Status::Suspended) => {
                            set_status(r, Status::Running, "resumed at the launcher's request");
                            Ok(true)
                        }
                        (false, s) => Err(RequestError::InvalidState(format!(
                            "job {id} is {}, not suspended",
                            s.as_str()
                        ))),
                    },
                    |r| signal_job(r, if suspend { Signal::SIGSTOP } else { Signal::SIGCONT }),
                )
                .await?;
            let pgid = rec.job.pid.unwrap_or_default() as i32;
            let settled = if suspend { all_stopped } else { none_stopped };
            if !wait_group(pgid, settled, Instant::now() + STATE_WAIT).await {
                return Ok(not_complete(format!(
                    "{} sent, but not every process of the job has {} within {STATE_WAIT:?}",
                    if suspend { "SIGSTOP" } else { "SIGCONT" },
                    if suspend { "stopped" } else { "continued" }
                )));
            }
            Ok(done(if suspend { "Job suspended" } else { "Job resumed" }))
        }
        ControlOperation::Stop | ControlOperation::Kill => {
            let stop = op == ControlOperation::Stop;
            let (end, sig) = if stop {
                (EndRequest::Stop, Signal::SIGTERM)
            } else {
                (EndRequest::Kill, Signal::SIGKILL)
            };
            p.try_change(
                id,
                |r| {
                    if !matches!(r.status(), Status::Running | Status::Suspended) {
                        return Err(not_running(r));
                    }
                    // Recorded (on disk) before the signal: the job's end is then ours, not a mystery.
                    r.end_request = Some(end);
                    r.job.status_message = Some(format!(
                        "{} sent at the launcher's request; the job is ending",
                        sig.as_str()
                    ));
                    Ok(true)
                },
                |r| {
                    signal_job(r, sig)?;
                    if r.status() == Status::Suspended && sig == Signal::SIGTERM {
                        // A stopped process that handles SIGTERM would never see it.
                        let _ = signal_job(r, Signal::SIGCONT);
                    }
                    Ok(())
                },
            )
            .await?;
            let first_wait = if stop { p.cfg.stop_grace } else { KILL_WAIT };
            let mut ended = wait_terminal(p, id, Instant::now() + first_wait).await;
            if !ended && stop {
                let grace = p.cfg.stop_grace;
                if let Some(rec) = p.get(id).await.filter(|r| !r.status().is_terminal()) {
                    match signal_job(&rec, Signal::SIGKILL) {
                        Ok(()) => {
                            tracing::info!(job_id = %id, "SIGKILL sent: the job outlived its stop grace")
                        }
                        // The job's process ended: what is left of its group goes with its end.
                        Err(RequestError::JobNotRunning(_)) => {}
                        Err(e) => {
                            tracing::warn!(job_id = %id, error = %e, "cannot send SIGKILL after SIGTERM")
                        }
                    }
                    note(
                        p,
                        id,
                        format!("SIGKILL sent: the job did not end within {grace:?} of SIGTERM"),
                    )
                    .await;
                }
                ended = wait_terminal(p, id, Instant::now() + KILL_WAIT).await;
            }
            if !ended {
                return Ok(not_complete(format!(
                    "{} sent, but the job's processes have not all ended yet; its status changes when they have",
                    if stop { "SIGTERM and SIGKILL" } else { "SIGKILL" }
                )));
            }
            Ok(done(if stop { "Job stopped" } else { "Job killed" }))
        }
        ControlOperation::Cancel => cancel(p, id).await.map(|complete| {
            if complete {
                done("Job canceled")
            } else {
                not_complete("the job's supervisor was sent SIGKILL but is not gone yet".into())
            }
        }),
    }
}

/// Cancels a job that has not started: its supervisor (and anything it already started in its
/// session) is killed, then the job is Canceled. Returns whether they are gone.
async fn cancel(p: &Arc<LocalPlugin>, id: &str) -> Result<bool, RequestError> {
    let dir = p.job_dir(id);
    let started = tokio::task::spawn_blocking(move || crate::follow::read_reports(&dir).started)
        .await
        .map_err(|e| RequestError::Internal(e.to_string()))?;
    let rec = p
        .try_change(
            id,
            |r| {
                if r.status() != Status::Pending || started.is_some() {
                    let s = if started.is_some() && r.status() == Status::Pending {
                        Status::Running
                    } else {
                        r.status()
                    };
                    return Err(RequestError::InvalidState(format!(
                        "job {id} is {}: only a Pending job can be canceled",
                        s.as_str()
                    )));
                }
                // Recorded first: a supervisor that dies from here on is this cancel's doing.
                r.end_request = Some(EndRequest::Cancel);
                r.job.status_message = Some("canceling: the job's supervisor is being killed".into());
                Ok(true)
            },
            |_| Ok(()),
        )
        .await?;
    let dir = p.job_dir(id);
    let mut gone = true;
    if let (Some(pid), Some(ticks)) = (rec.supervisor_pid, rec.supervisor_start_ticks) {
        if crate::procfs::is_supervisor_of(pid, ticks, &dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // The supervisor leads its own session once it has set up: whatever it started is in it.
            let deadline = Instant::now() + KILL_WAIT;
            gone = loop {
                let d = dir.clone();
                let left = tokio::task::spawn_blocking(move || {
                    let members = crate::procfs::session_members(pid);
                    for m in &members {
                        let _ = kill(Pid::from_raw(*m), Signal::SIGKILL);
                    }
                    !members.is_empty() || crate::procfs::is_supervisor_of(pid, ticks, &d)
                })
                .await
                .unwrap_or(true);
                if !left {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(LOOK_EVERY).await;
            };
        }
    }
    if gone {
        let tr = Transition::new(Status::Canceled, "canceled at the launcher's request");
        p.transition(id, tr, |_| {}).await;
        tracing::info!(job_id = %id, "canceled before it started");
    }
    Ok(gone)
}
