//! GetJobResourceUtil from Slurm's job accounting: while a job runs, every
//! `resource-poll-seconds` what `sstat` says its running steps use (CPU time so far, memory held
//! now), to every open stream on that job, multiplexed like statuses, in the Local plugin's units
//! (cpuTime in seconds, cpuPercent over the last interval, memory in MB); one final message with
//! `complete: true` when the job ends. For a job that has already ended, one final message from
//! `sacct` when Slurm keeps accounting, else error 6.
//!
//! Slurm gathers these figures only with a `JobAcctGatherType` other than
//! `jobacct_gather/none`, and only every `JobAcctGatherFrequency`; CPU time comes in whole
//! seconds.

use std::sync::Arc;
use std::time::Instant;

use launcher_plugin_api::envelope::{RequestType, ResponseType};
use launcher_plugin_api::messages::{JobStreamRequest, ResourceUtilResponse, Sequence};

use crate::error::RequestError;
use crate::parse::{Status, Usage};
use crate::slurm::SlurmError;
use crate::state::SlurmPlugin;

const MB: f64 = 1024.0 * 1024.0;

fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One report from two samples: CPU time so far, CPU use over the interval, memory now.
pub fn report(prev: Option<(Usage, Instant)>, now: (Usage, Instant)) -> ResourceUtilResponse {
    let (u, t) = now;
    let cpu_percent = match prev {
        Some((pu, pt)) if t > pt => {
            // A step that ended takes its time with it: never below zero.
            (u.cpu_seconds - pu.cpu_seconds).max(0.0) / (t - pt).as_secs_f64() * 100.0
        }
        _ => 0.0,
    };
    ResourceUtilResponse {
        sequences: Vec::new(),
        cpu_percent: Some(tenth(cpu_percent)),
        cpu_time: Some(u.cpu_seconds),
        virtual_memory: Some(tenth(u.vmem_bytes / MB)),
        resident_memory: Some(tenth(u.rss_bytes / MB)),
        complete: false,
    }
}

/// Opens a resource stream on one job (registered in `opening` by the reader; an error is
/// answered only while it still is).
pub async fn open(p: &Arc<SlurmPlugin>, rid: u64, req: JobStreamRequest) -> Result<(), RequestError> {
    launcher_plugin_api::request::one_job(RequestType::GetJobResourceUtil, &req.job_id)?;
    let e = p.find_visible(&req.job_id, &req.username).await?;
    let id = e.sj.id.clone();
    if e.status().is_terminal() {
        if !p.still_opening(rid) {
            return Ok(());
        }
        return ended(p, rid, &id, e.status()).await;
    }
    let start = {
        let mut r = p.resources.lock().await;
        if !p.still_opening(rid) {
            // Canceled while the job was looked up.
            return Ok(());
        }
        r.open(rid, &id)
    };
    if start {
        let p = p.clone();
        tokio::spawn(async move { poll(p, id).await });
    }
    Ok(())
}

/// Closes a resource stream, or keeps one being opened from opening.
pub async fn close(p: &Arc<SlurmPlugin>, rid: u64) -> bool {
    let mut r = p.resources.lock().await;
    p.opening.lock().expect("opening").remove(&rid);
    r.close(rid)
}

/// The whole use of an ended job, as one final message, when Slurm's accounting has it.
async fn ended(p: &Arc<SlurmPlugin>, rid: u64, id: &str, status: Status) -> Result<(), RequestError> {
    let not_running =
        |why: String| RequestError::JobNotRunning(format!("job {id} has ended ({}): {why}", status.as_str()));
    match p.slurm.accounted_usage(id).await {
        Ok(Some(u)) => {
            let msg = ResourceUtilResponse {
                sequences: vec![Sequence {
                    request_id: rid,
                    seq_id: 1,
                }],
                cpu_percent: None,
                complete: true,
                ..report(None, (u, Instant::now()))
            };
            p.out.send(ResponseType::JobResourceUtil, 0, &msg).await;
            Ok(())
        }
        Ok(None) => Err(not_running("Slurm's accounting has no record of it".into())),
        Err(SlurmError::Refused(m)) => Err(not_running(format!("no accounting to ask ({m})"))),
        Err(SlurmError::Unavailable(m)) => Err(RequestError::Internal(format!("Slurm: {m}"))),
    }
}

/// Sends one report to every stream on the job; false when none is left (the poller stops).
async fn send(p: &Arc<SlurmPlugin>, id: &str, mut msg: ResourceUtilResponse, last: bool) -> bool {
    let mut r = p.resources.lock().await;
    msg.sequences = if last { r.finish(id) } else { r.report(id) };
    msg.complete = last;
    if msg.sequences.is_empty() {
        return !r.poller_idle(id);
    }
    // Under the lock: each stream's sequence numbers reach the launcher in order.
    p.out.send(ResponseType::JobResourceUtil, 0, &msg).await;
    true
}

/// The poller of one job's resource streams: samples while the job runs, reports each sample,
/// and sends the last one as final when the job ends.
async fn poll(p: Arc<SlurmPlugin>, id: String) {
    let every = p.cfg.resource_poll;
    let Some(mut watch) = p.subscribe(&id).await else {
        send(&p, &id, ResourceUtilResponse::default(), true).await;
        return;
    };
    let mut prev: Option<(Usage, Instant)> = None;
    let mut last: Option<ResourceUtilResponse> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        let status = *watch.borrow_and_update();
        if status.is_terminal() {
            send(&p, &id, last.unwrap_or_default(), true).await;
            return;
        }
        if tokio::time::Instant::now() >= next {
            next = tokio::time::Instant::now() + every;
            if matches!(status, Status::Running | Status::Suspended) {
                match p.slurm.step_usage(&id).await {
                    Ok(Some(u)) => {
                        let now = (u, Instant::now());
                        last = Some(report(prev, now));
                        prev = Some(now);
                    }
                    // No step runs yet (the batch step is starting) or any more.
                    Ok(None) => {}
                    Err(e) => tracing::debug!(job_id = %id, error = %e, "sstat cannot tell"),
                }
            }
            let alive = match &last {
                Some(m) => send(&p, &id, m.clone(), false).await,
                None => !p.resources.lock().await.poller_idle(&id),
            };
            if !alive {
                return;
            }
        }
        tokio::select! {
            r = watch.changed() => if r.is_err() {
                send(&p, &id, last.unwrap_or_default(), true).await;
                return;
            },
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn reports_are_in_seconds_percent_and_megabytes() {
        let t0 = Instant::now();
        let a = Usage {
            cpu_seconds: 10.0,
            rss_bytes: 3.0 * MB,
            vmem_bytes: 100.0 * MB,
        };
        let b = Usage {
            cpu_seconds: 14.0,
            rss_bytes: 2.5 * MB,
            ..a
        };
        let r = report(Some((a, t0)), (b, t0 + Duration::from_secs(2)));
        assert_eq!(
            (r.cpu_time, r.cpu_percent),
            (Some(14.0), Some(200.0)),
            "two busy CPUs"
        );
        assert_eq!((r.virtual_memory, r.resident_memory), (Some(100.0), Some(2.5)));
        assert!(!r.complete);
        let r = report(Some((b, t0)), (a, t0 + Duration::from_secs(1)));
        assert_eq!(r.cpu_percent, Some(0.0), "a step that ended is not negative use");
        assert_eq!(report(None, (a, t0)).cpu_percent, Some(0.0));
    }
}
