//! GetJobResourceUtil: while a job runs, every `resource-poll-seconds` the use of every process
//! in its process group, to every open stream on that job (multiplexed like statuses); one
//! final message with `complete: true` when the job ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use launcher_plugin_api::envelope::{RequestType, ResponseType};
use launcher_plugin_api::messages::{JobStreamRequest, ResourceUtilResponse};

use crate::error::RequestError;
use crate::procfs::{clock_ticks_per_second, group_usage, page_size, GroupUsage};
use crate::record::Status;
use crate::state::LocalPlugin;

const MB: f64 = 1024.0 * 1024.0;

/// One report from two samples of a group: CPU time so far, CPU use over the interval, memory.
pub fn report(prev: Option<(GroupUsage, Instant)>, now: (GroupUsage, Instant)) -> ResourceUtilResponse {
    let tck = clock_ticks_per_second();
    let (u, t) = now;
    let cpu_percent = match prev {
        Some((pu, pt)) if t > pt => {
            // Processes that exit unwaited take their time with them: never report below zero.
            let d = u.cpu_ticks.saturating_sub(pu.cpu_ticks) as f64 / tck;
            d / (t - pt).as_secs_f64() * 100.0
        }
        _ => 0.0,
    };
    ResourceUtilResponse {
        sequences: Vec::new(),
        cpu_percent: Some((cpu_percent * 10.0).round() / 10.0),
        cpu_time: Some(u.cpu_ticks as f64 / tck),
        virtual_memory: Some(((u.vsize_bytes as f64 / MB) * 10.0).round() / 10.0),
        resident_memory: Some((((u.rss_pages * page_size()) as f64 / MB) * 10.0).round() / 10.0),
        complete: false,
    }
}

async fn sample(pgrp: i32) -> (GroupUsage, Instant) {
    let u = tokio::task::spawn_blocking(move || group_usage(pgrp))
        .await
        .unwrap_or_default();
    (u, Instant::now())
}

/// Opens a resource stream on one job.
pub async fn open(p: &Arc<LocalPlugin>, request_id: u64, req: JobStreamRequest) -> Result<(), RequestError> {
    launcher_plugin_api::request::one_job(RequestType::GetJobResourceUtil, &req.job_id)?;
    let rec = p.get_visible(&req.job_id, &req.username).await?;
    if rec.status().is_terminal() {
        return Err(RequestError::JobNotRunning(format!(
            "job {} has ended ({})",
            req.job_id,
            rec.status().as_str()
        )));
    }
    let start = p.resources.lock().await.open(request_id, &req.job_id);
    if start {
        let p = p.clone();
        let id = req.job_id.clone();
        tokio::spawn(async move { poll(p, id).await });
    }
    Ok(())
}

/// Closes a resource stream.
pub async fn close(p: &Arc<LocalPlugin>, request_id: u64) -> bool {
    p.resources.lock().await.close(request_id)
}

/// Sends one report to every stream on the job; false when none is left (the poller stops).
async fn send(p: &Arc<LocalPlugin>, job_id: &str, mut msg: ResourceUtilResponse, last: bool) -> bool {
    let mut r = p.resources.lock().await;
    msg.sequences = if last { r.finish(job_id) } else { r.report(job_id) };
    msg.complete = last;
    if msg.sequences.is_empty() {
        return !r.poller_idle(job_id);
    }
    // Under the lock: each stream's sequence numbers reach the launcher in order.
    p.out.send(ResponseType::JobResourceUtil, 0, &msg).await;
    true
}

/// The poller of one job's resource streams.
async fn poll(p: Arc<LocalPlugin>, job_id: String) {
    let interval = p.cfg.resource_poll;
    let final_empty = ResourceUtilResponse::default();
    let Some(mut watch) = p.subscribe(&job_id).await else {
        send(&p, &job_id, final_empty, true).await;
        return;
    };
    // Wait for the job's process.
    let pgrp = loop {
        let rec = watch.borrow_and_update().clone();
        match (rec.status(), rec.job.pid) {
            (Status::Running | Status::Suspended, Some(pid)) => break pid as i32,
            (s, _) if s.is_terminal() => {
                send(&p, &job_id, final_empty, true).await;
                return;
            }
            _ => {}
        }
        if p.resources.lock().await.poller_idle(&job_id) {
            return;
        }
        tokio::select! {
            r = watch.changed() => if r.is_err() { send(&p, &job_id, final_empty, true).await; return; },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    let mut prev = sample(pgrp).await;
    let mut last = report(None, prev);
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        let ended = tokio::select! {
            r = watch.changed() => r.is_err() || watch.borrow_and_update().status().is_terminal(),
            _ = tokio::time::sleep_until(next) => false,
        };
        if ended {
            send(&p, &job_id, last, true).await;
            return;
        }
        if tokio::time::Instant::now() < next {
            continue;
        }
        next += interval;
        let now = sample(pgrp).await;
        if now.0.processes > 0 {
            last = report(Some(prev), now);
            prev = now;
        }
        if !send(&p, &job_id, last.clone(), false).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_turn_ticks_and_pages_into_seconds_percent_and_megabytes() {
        let tck = clock_ticks_per_second() as u64;
        let t0 = Instant::now();
        let a = GroupUsage {
            processes: 1,
            cpu_ticks: tck,
            vsize_bytes: 100 * 1024 * 1024,
            rss_pages: 0,
        };
        let b = GroupUsage {
            cpu_ticks: 3 * tck,
            rss_pages: 2 * 1024 * 1024 / page_size(),
            ..a
        };
        let r = report(Some((a, t0)), (b, t0 + Duration::from_secs(4)));
        assert_eq!(r.cpu_time, Some(3.0));
        assert_eq!(r.cpu_percent, Some(50.0));
        assert_eq!((r.virtual_memory, r.resident_memory), (Some(100.0), Some(2.0)));
        // Time that vanished with an exited process does not make the percentage negative.
        let r = report(Some((b, t0)), (a, t0 + Duration::from_secs(1)));
        assert_eq!(r.cpu_percent, Some(0.0));
        assert_eq!(report(None, (a, t0)).cpu_percent, Some(0.0));
    }
}
