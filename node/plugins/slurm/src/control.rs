//! ControlJob through Slurm: cancel, stop and kill with `scancel` run as the requesting user
//! (Slurm decides who may: its refusal comes back as error 9 with its message); suspend and
//! resume with `scontrol`, which only Slurm operators may run, so the plugin runs it itself
//! after checking that the requester owns the job.
//!
//! Stop, kill and cancel are answered once Slurm reports the job ended (it does so only when
//! the job's processes are gone: until then it shows COMPLETING), so a launcher that reads
//! after the answer sees the ended status; until then the job's statusMessage says that
//! `scancel` was sent. A job that Slurm has not ended within [`END_WAIT`] is answered with
//! `operationComplete: false`.

use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::messages::{ControlJobRequest, ControlJobResponse, ControlOperation};

use crate::error::RequestError;
use crate::parse::Status;
use crate::slurm::{As, SlurmError};
use crate::state::{Entry, SlurmPlugin};

/// How long a stop, kill or cancel waits for Slurm to end the job (a stop may take Slurm's
/// `KillWait` and more).
pub const END_WAIT: Duration = Duration::from_secs(60);

/// Waits until job `id` has a terminal status; false at the deadline.
async fn wait_ended(p: &Arc<SlurmPlugin>, id: &str) -> bool {
    let Some(mut watch) = p.subscribe(id).await else {
        return true;
    };
    let deadline = tokio::time::Instant::now() + END_WAIT;
    loop {
        if watch.borrow_and_update().is_terminal() {
            return true;
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

/// The answer to a stop, kill or cancel that Slurm carried out: complete once the job ended.
async fn answer_end(p: &Arc<SlurmPlugin>, id: &str, done: &str, sent: &str) -> ControlJobResponse {
    p.update(id, |e| {
        if !e.status().is_terminal() {
            e.judged.message = format!("{sent}; Slurm is ending the job");
        }
    })
    .await;
    p.poke.notify_one();
    let ended = wait_ended(p, id).await;
    ControlJobResponse {
        status_message: if ended {
            done.to_string()
        } else {
            format!("{sent}, but Slurm has not ended the job within {END_WAIT:?}")
        },
        operation_complete: ended,
    }
}

fn not_running(e: &Entry) -> RequestError {
    RequestError::JobNotRunning(format!("job {} is {}, not running", e.sj.id, e.status().as_str()))
}

fn control_error(e: SlurmError) -> RequestError {
    match e {
        SlurmError::Refused(m) if m.contains("already completing or completed") => {
            RequestError::JobNotRunning(format!("Slurm: {m}"))
        }
        SlurmError::Refused(m) if m.contains("Invalid job id") => RequestError::JobNotFound(m),
        SlurmError::Refused(m) | SlurmError::Unavailable(m) => RequestError::ControlFailed(m),
    }
}

/// Handles ControlJob.
pub async fn control(
    p: &Arc<SlurmPlugin>,
    req: ControlJobRequest,
) -> Result<ControlJobResponse, RequestError> {
    let op = ControlOperation::from_number(req.operation)
        .ok_or_else(|| RequestError::Invalid(format!("unknown control operation {}", req.operation)))?;
    let e = p.find(&req.job_id).await?;
    let id = e.sj.id.clone();
    let requester = launcher_plugin_api::request::acting_for(&req.username, &req.request_username);
    // Who scancel runs as: the requester (Slurm checks them), or the plugin for `*`.
    let requester_info = match requester {
        Some(name) if p.switch_user => {
            let n = name.to_string();
            let u = tokio::task::spawn_blocking(move || crate::slurm::lookup_user(&n))
                .await
                .map_err(|e| RequestError::Internal(e.to_string()))?
                .map_err(RequestError::Internal)?
                .ok_or_else(|| RequestError::ControlFailed(format!("user {name} does not exist")))?;
            Some(u)
        }
        _ => None,
    };
    let who = || match &requester_info {
        Some(u) => As::User(u),
        None => As::Plugin,
    };
    let owner_check = || match requester {
        Some(r) if r != e.sj.user => Err(RequestError::ControlFailed(format!(
            "Access/permission denied for job {id}: it belongs to {}, not {r}",
            e.sj.user
        ))),
        _ => Ok(()),
    };
    let done = |m: &str| ControlJobResponse {
        status_message: m.to_string(),
        operation_complete: true,
    };
    let scontrol = |verb: &str| [verb.to_string(), id.clone()];
    match op {
        ControlOperation::Suspend => {
            owner_check()?;
            let _no_refresh = p.hold_refreshes().await;
            let e = p.find(&id).await?;
            match e.status() {
                Status::Running => {}
                Status::Suspended => {
                    return Err(RequestError::InvalidState(format!(
                        "job {id} is already suspended"
                    )))
                }
                _ => return Err(not_running(&e)),
            }
            p.slurm
                .run("scontrol", &scontrol("suspend"), As::Plugin, None, None)
                .await
                .map_err(control_error)?;
            p.update(&id, |e| {
                e.judged.status = Status::Suspended;
                e.judged.message = "suspended at the launcher's request".into();
            })
            .await;
            Ok(done("Job suspended"))
        }
        ControlOperation::Resume => {
            owner_check()?;
            let _no_refresh = p.hold_refreshes().await;
            let e = p.find(&id).await?;
            if e.status() != Status::Suspended {
                return Err(RequestError::InvalidState(format!(
                    "job {id} is {}, not suspended",
                    e.status().as_str()
                )));
            }
            p.slurm
                .run("scontrol", &scontrol("resume"), As::Plugin, None, None)
                .await
                .map_err(control_error)?;
            p.update(&id, |e| {
                e.judged.status = Status::Running;
                e.judged.message = "resumed at the launcher's request".into();
            })
            .await;
            Ok(done("Job resumed"))
        }
        ControlOperation::Stop | ControlOperation::Kill => {
            if !matches!(e.status(), Status::Running | Status::Suspended) {
                return Err(not_running(&e));
            }
            // Stop: Slurm's own cancel (SIGCONT, SIGTERM, SIGKILL after KillWait); kill: SIGKILL
            // to the batch shell and every step.
            let args: Vec<String> = if op == ControlOperation::Stop {
                vec![id.clone()]
            } else {
                vec!["--signal=KILL".into(), "--full".into(), id.clone()]
            };
            p.update(&id, |e| e.end_requested = true).await;
            p.slurm
                .run("scancel", &args, who(), None, None)
                .await
                .map_err(control_error)?;
            Ok(if op == ControlOperation::Stop {
                answer_end(p, &id, "Job stopped", "scancel (SIGTERM, then SIGKILL) sent").await
            } else {
                answer_end(p, &id, "Job killed", "scancel --signal=KILL sent").await
            })
        }
        ControlOperation::Cancel => {
            if e.status() != Status::Pending {
                return Err(RequestError::InvalidState(format!(
                    "job {id} is {}: only a Pending job can be canceled",
                    e.status().as_str()
                )));
            }
            p.slurm
                .run("scancel", std::slice::from_ref(&id), who(), None, None)
                .await
                .map_err(control_error)?;
            Ok(answer_end(p, &id, "Job canceled", "scancel sent").await)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Arc;

    use launcher_plugin_api::outbox::Outbox;

    use super::*;
    use crate::state::SlurmPlugin;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    async fn wait_for(path: &Path) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A `squeue` read that started before `scontrol suspend` (it still says RUNNING) and
    /// ends after it must not put the job back to Running: the control and the refresh take
    /// turns, so the job stays Suspended as Slurm has it (the CI failure of
    /// `slurm_jobs_are_suspended_resumed_and_killed`: Suspended, then Running for one poll).
    #[tokio::test]
    async fn a_refresh_read_before_a_suspend_does_not_undo_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let state = dir.join("state");
        std::fs::write(&state, "RUNNING").unwrap();
        script(
            dir,
            "squeue",
            &format!(
                r#"d={dir}
s=$(cat $d/state)
if [ -e $d/slow ]; then rm $d/slow; touch $d/started; sleep 1; fi
echo '{{"errors":[],"jobs":[{{"batch_host":"n1","comment":"rstudio-launcher;cluster=Slurm;tags=","exit_code":0,"job_id":7,"job_state":"'$s'","name":"j","partition":"debug","standard_output":"/o/%j.out","submit_time":1795679562,"start_time":1795679563,"user_id":1004,"user_name":"u"}}]}}'
"#,
                dir = dir.display()
            ),
        );
        script(
            dir,
            "scontrol",
            &format!(
                "case $1 in suspend) echo SUSPENDED > {s};; resume) echo RUNNING > {s};; esac\n",
                s = state.display()
            ),
        );
        let opts = crate::config::parse_args(Vec::<String>::new()).unwrap();
        let mut cfg = crate::config::load(opts, dir).unwrap();
        cfg.slurm_bin_path = Some(dir.to_path_buf());
        let (out, _rx) = Outbox::new(64);
        let p = Arc::new(SlurmPlugin::new(cfg, out, false, "root".into()));
        p.refresh().await.unwrap();
        assert_eq!(p.find("7").await.unwrap().status(), Status::Running);

        std::fs::write(dir.join("slow"), "").unwrap();
        let refresh = tokio::spawn({
            let p = p.clone();
            async move { p.refresh().await }
        });
        wait_for(&dir.join("started")).await;
        let req = |operation: ControlOperation| ControlJobRequest {
            request_username: String::new(),
            username: "*".into(),
            job_id: "7".into(),
            encoded_job_id: String::new(),
            operation: operation as i32,
        };
        let answer = control(&p, req(ControlOperation::Suspend)).await.unwrap();
        assert!(answer.operation_complete);
        refresh.await.unwrap().unwrap();
        assert_eq!(p.find("7").await.unwrap().status(), Status::Suspended);

        // And the other way round: a read from before the resume does not suspend it again.
        std::fs::remove_file(dir.join("started")).unwrap();
        std::fs::write(dir.join("slow"), "").unwrap();
        let refresh = tokio::spawn({
            let p = p.clone();
            async move { p.refresh().await }
        });
        wait_for(&dir.join("started")).await;
        control(&p, req(ControlOperation::Resume)).await.unwrap();
        refresh.await.unwrap().unwrap();
        assert_eq!(p.find("7").await.unwrap().status(), Status::Running);
    }
}
