//! The Slurm plugin's requests, under the shared Plugin API loop (`launcher_plugin_api::serve`).
//! Stream opens and cancels are handled in arrival order in the reader, so a cancel always
//! finds the stream it closes. A stream request
//! that cannot be read still closes the stream open under its `requestId` (the launcher is done
//! with it), so a cancel the plugin could not read never leaves a stream running.

use std::future::Future;
use std::sync::Arc;

use launcher_plugin_api::envelope::{RequestType, ResponseType};
use launcher_plugin_api::messages::{
    self, BootstrapRequest, BootstrapResponse, ClusterInfoRequest, ClusterInfoResponse, ControlJobRequest,
    GetJobRequest, JobNetworkRequest, JobNetworkResponse, JobStreamRequest, ResourceLimitInfo,
    SubmitJobRequest, API_VERSION,
};
use launcher_plugin_api::request::{check_version, decode, one_job, project};
use launcher_plugin_api::serve::{in_background, Plugin, Settings};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::RequestError;
use crate::parse::Status;
use crate::state::{Entry, Outbox, Outgoing, SlurmPlugin, Target};

/// Serves the Plugin API until the input ends or `shutdown` completes (the shared loop of
/// `launcher_plugin_api::serve`), polling Slurm meanwhile. Jobs live on in Slurm.
pub async fn serve<R, W>(
    p: Arc<SlurmPlugin>,
    out_rx: mpsc::Receiver<Outgoing>,
    input: R,
    output: W,
    shutdown: impl Future<Output = ()>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let settings = Settings {
        heartbeat_interval_seconds: p.cfg.options.heartbeat_interval_seconds,
        max_message_size: p.cfg.options.max_message_size,
    };
    let poller = tokio::spawn(crate::state::poller(p.clone()));
    launcher_plugin_api::serve::serve(p, out_rx, input, output, settings, vec![poller], shutdown).await;
}

impl Plugin for SlurmPlugin {
    fn outbox(&self) -> &Outbox {
        &self.out
    }

    async fn dispatch(
        p: &Arc<Self>,
        t: RequestType,
        rid: u64,
        body: Vec<u8>,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), RequestError> {
        match t {
            RequestType::GetJobStatus => match decode::<JobStreamRequest>(t, &body) {
                Err(e) => {
                    p.close_status_stream(rid).await;
                    Err(e)
                }
                Ok(req) if req.cancel => {
                    p.close_status_stream(rid).await;
                    Ok(())
                }
                Ok(req) => {
                    // Opening may ask Slurm about the job: off the reader, but registered in order.
                    p.opening.lock().expect("opening").insert(rid);
                    let p = p.clone();
                    tasks.spawn(async move {
                        let target = if req.job_id == messages::ALL_JOBS {
                            Target::All
                        } else {
                            Target::Job(req.job_id.clone())
                        };
                        if let Err(e) = p.open_status_stream(rid, target, &req.username).await {
                            p.still_opening(rid);
                            p.out.error(rid, e).await;
                        }
                    });
                    Ok(())
                }
            },
            RequestType::GetJobResourceUtil => match decode::<JobStreamRequest>(t, &body) {
                Err(e) => {
                    crate::resources::close(p, rid).await;
                    Err(e)
                }
                Ok(req) if req.cancel => {
                    crate::resources::close(p, rid).await;
                    Ok(())
                }
                Ok(req) => {
                    // Opening asks Slurm about the job: off the reader, registered as opening so a
                    // cancel that overtakes it still closes it.
                    p.opening.lock().expect("opening").insert(rid);
                    let p = p.clone();
                    tasks.spawn(async move {
                        if let Err(e) = crate::resources::open(&p, rid, req).await {
                            p.still_opening(rid);
                            p.out.error(rid, e).await;
                        }
                    });
                    Ok(())
                }
            },
            RequestType::GetJobOutput => {
                let stream = p.clone();
                p.output_streams
                    .request(&p.out, rid, &body, |req| crate::output::stream(stream, rid, req))
            }
            RequestType::SetLoadBalancerNodes | RequestType::ConfigReload | RequestType::Metrics => Err(
                RequestError::NotSupported(format!("{t:?} is not supported by the Slurm plugin")),
            ),
            _ => {
                let plugin = p.clone();
                in_background(
                    tasks,
                    &p.out,
                    rid,
                    async move { handle(&plugin, t, rid, &body).await },
                );
                Ok(())
            }
        }
    }
}

/// Whether a job passes GetJob's filters.
fn matches(e: &Entry, req: &GetJobRequest, statuses: &[Status]) -> Result<bool, RequestError> {
    if !e.visible_to(&req.username) {
        return Ok(false);
    }
    if let Some(tags) = &req.tags {
        if !tags.iter().all(|t| e.tags.contains(t)) {
            return Ok(false);
        }
    }
    if !statuses.is_empty() && !statuses.contains(&e.status()) {
        return Ok(false);
    }
    let bound = |name: &str, v: &Option<String>| -> Result<Option<i64>, RequestError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| Some(t.unix_timestamp()))
                .map_err(|_| RequestError::Invalid(format!("{name} {s:?} is not an RFC 3339 time"))),
        }
    };
    let submitted = e.sj.submit_time;
    if bound("startTime", &req.start_time)?.is_some_and(|s| submitted < s) {
        return Ok(false);
    }
    if bound("endTime", &req.end_time)?.is_some_and(|s| submitted > s) {
        return Ok(false);
    }
    Ok(true)
}

async fn handle(p: &Arc<SlurmPlugin>, t: RequestType, rid: u64, body: &[u8]) -> Result<(), RequestError> {
    match t {
        RequestType::Bootstrap => {
            let req: BootstrapRequest = decode(t, body)?;
            check_version(req.version)?;
            p.slurm
                .check()
                .await
                .map_err(|e| RequestError::Internal(format!("Slurm does not answer (sinfo): {e}")))?;
            p.refresh().await?;
            tracing::info!(version = ?req.version, "bootstrapped");
            p.out
                .send(
                    ResponseType::Bootstrap,
                    rid,
                    &BootstrapResponse { version: API_VERSION },
                )
                .await;
        }
        RequestType::SubmitJob => {
            let req: SubmitJobRequest = decode(t, body)?;
            crate::submit::submit(p, rid, req).await?;
        }
        RequestType::GetJob => {
            let req: GetJobRequest = decode(t, body)?;
            let statuses = req
                .statuses
                .iter()
                .flatten()
                .map(|s| {
                    Status::parse(s).ok_or_else(|| RequestError::Invalid(format!("unknown job status {s:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let entries = if req.job_id == messages::ALL_JOBS {
                // Fresh from Slurm: a launcher looking for its job by tag must see it.
                p.refresh().await?;
                let mut v = Vec::new();
                for e in p.list(|_| true).await {
                    if matches(&e, &req, &statuses)? {
                        v.push(e);
                    }
                }
                v
            } else {
                vec![p.find_visible(&req.job_id, &req.username).await?]
            };
            let fields = req.fields.as_deref();
            let jobs: Vec<serde_json::Value> = entries.iter().map(|e| project(&e.job(), fields)).collect();
            p.out
                .send(ResponseType::JobState, rid, &serde_json::json!({ "jobs": jobs }))
                .await;
        }
        RequestType::ControlJob => {
            let req: ControlJobRequest = decode(t, body)?;
            one_job(t, &req.job_id)?;
            let resp = crate::control::control(p, req).await?;
            p.out.send(ResponseType::ControlJob, rid, &resp).await;
        }
        RequestType::GetJobNetwork => {
            let req: JobNetworkRequest = decode(t, body)?;
            one_job(t, &req.job_id)?;
            let e = p.find_visible(&req.job_id, &req.username).await?;
            if e.sj.batch_host.is_empty() {
                return Err(RequestError::JobNotRunning(format!(
                    "job {} has no batch host yet",
                    e.sj.id
                )));
            }
            let host = e.sj.batch_host.clone();
            let h = host.clone();
            let ip_addresses = tokio::task::spawn_blocking(move || addresses(&h))
                .await
                .unwrap_or_default();
            p.out
                .send(
                    ResponseType::JobNetwork,
                    rid,
                    &JobNetworkResponse { host, ip_addresses },
                )
                .await;
        }
        RequestType::GetClusterInfo => {
            let _req: ClusterInfoRequest = decode(t, body)?;
            let info = cluster_info(p).await?;
            p.out.send(ResponseType::ClusterInfo, rid, &info).await;
        }
        other => {
            return Err(RequestError::NotSupported(format!(
                "{other:?} is not supported by the Slurm plugin"
            )))
        }
    }
    Ok(())
}

/// The addresses of a host, IPv4 first; loopback ones only when there is nothing else.
fn addresses(host: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut all: Vec<std::net::IpAddr> = (host, 0)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default();
    all.sort_by_key(|ip| (ip.is_loopback(), !ip.is_ipv4()));
    all.dedup();
    if all.iter().any(|ip| !ip.is_loopback()) {
        all.retain(|ip| !ip.is_loopback());
    }
    all.iter().map(|ip| ip.to_string()).collect()
}

/// Seconds of a Slurm time limit (`UNLIMITED`, `30`, `1:00:00`, `2-00:00:00`); `None` when unlimited.
pub fn limit_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty()
        || s.eq_ignore_ascii_case("UNLIMITED")
        || s.eq_ignore_ascii_case("INFINITE")
        || s == "NONE"
    {
        return None;
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, s),
    };
    let parts: Vec<u64> = rest.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (h, m, sec) = match (parts.len(), s.contains('-')) {
        (1, false) => (0, parts[0], 0),
        (1, true) => (parts[0], 0, 0),
        (2, false) => (0, parts[0], parts[1]),
        (2, true) => (parts[0], parts[1], 0),
        (3, _) => (parts[0], parts[1], parts[2]),
        _ => return None,
    };
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

/// Partitions as queues (the default first) and the largest limits they and their nodes allow.
async fn cluster_info(p: &Arc<SlurmPlugin>) -> Result<ClusterInfoResponse, RequestError> {
    let err = |e| RequestError::Internal(format!("Slurm: {e}"));
    let parts = p.slurm.show("partition").await.map_err(err)?;
    let nodes = p.slurm.show("node").await.map_err(err)?;
    let get = |kv: &Vec<(String, String)>, k: &str| {
        kv.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut queues: Vec<(bool, String)> = parts
        .iter()
        .filter(|kv| get(kv, "Hidden") != "YES")
        .map(|kv| (get(kv, "Default") != "YES", get(kv, "PartitionName")))
        .filter(|(_, n)| !n.is_empty())
        .collect();
    queues.sort_by_key(|(not_default, _)| *not_default);
    let max_time = parts
        .iter()
        .map(|kv| limit_seconds(&get(kv, "MaxTime")))
        .try_fold(0u64, |m, t| t.map(|t| m.max(t)));
    let max_cpus = nodes
        .iter()
        .filter_map(|kv| get(kv, "CPUTot").parse::<u64>().ok())
        .max();
    let max_mem = nodes
        .iter()
        .filter_map(|kv| get(kv, "RealMemory").parse::<u64>().ok())
        .max();
    let limit = |kind: &str, max: Option<u64>| ResourceLimitInfo {
        kind: kind.into(),
        max_value: max.map(|m| m.to_string()),
        default_value: None,
    };
    Ok(ClusterInfoResponse {
        supports_containers: false,
        queues: queues.into_iter().map(|(_, n)| n).collect(),
        resource_limits: vec![
            limit("cpuCount", max_cpus),
            limit("memory", max_mem),
            limit("cpuTime", max_time.filter(|t| *t > 0)),
        ],
        ..ClusterInfoResponse::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_limits_in_seconds() {
        assert_eq!(limit_seconds("UNLIMITED"), None);
        assert_eq!(limit_seconds("30"), Some(1800));
        assert_eq!(limit_seconds("1:30"), Some(90));
        assert_eq!(limit_seconds("1:00:00"), Some(3600));
        assert_eq!(limit_seconds("2-00:00:00"), Some(2 * 86400));
        assert_eq!(limit_seconds("1-2"), Some(86400 + 7200));
        assert_eq!(limit_seconds("x"), None);
    }

    #[test]
    fn addresses_of_localhost_are_loopback_only_when_nothing_else() {
        let a = addresses("localhost");
        assert!(
            !a.is_empty() && a.iter().all(|s| s == "127.0.0.1" || s == "::1"),
            "{a:?}"
        );
    }
}
