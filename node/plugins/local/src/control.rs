//! ControlJob: suspend, resume, stop, kill and cancel, as signals to the job's process group.
//! A pid is signalled only after checking, by its start time, that it is still the job's
//! process; a reused pid is never signalled.

use launcher_plugin_api::messages::{ControlJobRequest, ControlJobResponse, ControlOperation};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::error::RequestError;
use crate::record::{now, EndRequest, JobRecord, Status};
use crate::state::Shared;

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

/// Handles ControlJob.
pub async fn control(p: &Shared, req: ControlJobRequest) -> Result<ControlJobResponse, RequestError> {
    let op = ControlOperation::from_number(req.operation)
        .ok_or_else(|| RequestError::Invalid(format!("unknown control operation {}", req.operation)))?;
    let id = req.job_id.as_str();
    p.get_visible(id, &req.username).await?;
    let done = |m: &str| ControlJobResponse {
        status_message: m.to_string(),
        operation_complete: true,
    };
    match op {
        ControlOperation::Suspend => {
            p.try_change(
                id,
                |r| match r.status() {
                    Status::Running => {
                        set_status(r, Status::Suspended, "suspended at the launcher's request");
                        Ok(true)
                    }
                    Status::Suspended => Err(RequestError::InvalidState(format!(
                        "job {id} is already suspended"
                    ))),
                    _ => Err(not_running(r)),
                },
                |r| signal_job(r, Signal::SIGSTOP),
            )
            .await?;
            Ok(done("Job suspended"))
        }
        ControlOperation::Resume => {
            p.try_change(
                id,
                |r| match r.status() {
                    Status::Suspended => {
                        set_status(r, Status::Running, "resumed at the launcher's request");
                        Ok(true)
                    }
                    s => Err(RequestError::InvalidState(format!(
                        "job {id} is {}, not suspended",
                        s.as_str()
                    ))),
                },
                |r| signal_job(r, Signal::SIGCONT),
            )
            .await?;
            Ok(done("Job resumed"))
        }
        ControlOperation::Stop | ControlOperation::Kill => {
            let (end, sig) = if op == ControlOperation::Stop {
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
            Ok(done(if op == ControlOperation::Stop {
                "Job stopped"
            } else {
                "Job killed"
            }))
        }
        ControlOperation::Cancel => cancel(p, id).await.map(|()| done("Job canceled")),
    }
}

/// Cancels a job that has not started: Canceled at once, then its supervisor (and anything it
/// already started in its session) is killed.
async fn cancel(p: &Shared, id: &str) -> Result<(), RequestError> {
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
                r.end_request = Some(EndRequest::Cancel);
                set_status(r, Status::Canceled, "canceled at the launcher's request");
                Ok(true)
            },
            |_| Ok(()),
        )
        .await?;
    let dir = p.job_dir(id);
    if let (Some(pid), Some(ticks)) = (rec.supervisor_pid, rec.supervisor_start_ticks) {
        if crate::procfs::is_supervisor_of(pid, ticks, &dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // The supervisor leads its own session once it has set up: whatever it started is in it.
            let members = tokio::task::spawn_blocking(move || crate::procfs::session_members(pid))
                .await
                .unwrap_or_default();
            for m in members {
                let _ = kill(Pid::from_raw(m), Signal::SIGKILL);
            }
        }
    }
    tracing::info!(job_id = %id, "canceled before it started");
    Ok(())
}
