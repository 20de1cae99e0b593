//! The Plugin API loop: frames in from stdin, each request dispatched concurrently, one writer
//! putting responses on stdout with increasing `responseId`s, the plugin's own heartbeats.
//!
//! Stream opens and cancels are handled in the reader, in arrival order, so a cancel always
//! finds the stream it closes; everything else runs in its own task. A stream request that
//! cannot be read still closes the stream open under its `requestId`: a launcher that sends
//! anything more under that id is done with the stream, and a cancel the plugin could not read
//! must not leave output flowing.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::envelope::{self, EnvelopeError, RequestType, ResponseType};
use launcher_plugin_api::framing::{self, FrameError};
use launcher_plugin_api::messages::{
    self, BootstrapRequest, BootstrapResponse, ClusterInfoRequest, ClusterInfoResponse, ControlJobRequest,
    Empty, GetJobRequest, JobNetworkRequest, JobNetworkResponse, JobOutputRequest, JobStreamRequest,
    ResourceLimitInfo, SubmitJobRequest, API_VERSION,
};
use launcher_plugin_api::request::{check_version, decode, one_job, request_id_of};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};

use crate::error::RequestError;
use crate::query::{project, JobFilter};
use crate::state::{LocalPlugin, Outgoing};
use crate::streams::Target;

/// How long shutdown waits for requests being handled and for the writer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts requests being handled, so shutdown can let them finish.
#[derive(Default, Clone)]
struct InFlight(Arc<(AtomicUsize, Notify)>);

struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0 .0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0 .1.notify_waiters();
        }
    }
}

/// Writes queued messages in order, numbering responses from 1, until told to finish or stdout
/// fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(rx: mpsc::Receiver<Outgoing>, w: W) {
    if let Err(e) = launcher_plugin_api::outbox::write_loop(rx, w).await {
        tracing::warn!(error = %e, "cannot write to stdout; the launcher is gone");
    }
}

/// Serves the Plugin API on `input`/`output` until the input ends or `shutdown` completes;
/// then lets requests being handled finish and writes what is queued. Jobs keep running.
pub async fn serve<R, W>(
    p: Arc<LocalPlugin>,
    out_rx: mpsc::Receiver<Outgoing>,
    mut input: R,
    output: W,
    shutdown: impl Future<Output = ()>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer = tokio::spawn(write_loop(out_rx, output));
    let mut background = Vec::new();
    let every = p.cfg.options.heartbeat_interval_seconds;
    if every > 0 {
        let p = p.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                p.out.send(ResponseType::Heartbeat, 0, &Empty {}).await;
            }
        }));
    }
    {
        let p = p.clone();
        background.push(tokio::spawn(async move {
            loop {
                crate::follow::expire(&p).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }));
    }

    let inflight = InFlight::default();
    let cap = p.cfg.options.max_message_size;
    tokio::pin!(shutdown);
    loop {
        let frame = tokio::select! {
            f = framing::read_message_limited(&mut input, cap) => f,
            _ = &mut shutdown => { tracing::info!("asked to stop"); break; }
        };
        match frame {
            Ok(Some(body)) => dispatch(&p, body, &inflight).await,
            Ok(None) => {
                tracing::info!("stdin closed: the launcher is gone");
                break;
            }
            Err(FrameError::TooLarge { len, max }) => {
                tracing::warn!(len, max, "refused an oversize message");
                let msg = format!("message of {len} bytes refused: the limit is {max} bytes");
                p.out.error(0, RequestError::Invalid(msg)).await;
                let skipped = tokio::select! {
                    r = framing::discard(&mut input, len) => r,
                    _ = &mut shutdown => { tracing::info!("asked to stop"); break; }
                };
                if let Err(e) = skipped {
                    tracing::info!(error = %e, "stdin ended inside a refused message");
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read from stdin; stopping");
                break;
            }
        }
    }
    for b in background {
        b.abort();
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, inflight.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("requests still being handled at shutdown are abandoned");
    }
    // Bounded: a launcher that stopped reading must not keep the plugin from ending.
    if tokio::time::timeout(DRAIN_TIMEOUT, p.out.finish()).await.is_ok() {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    }
}

/// Dispatches one request.
async fn dispatch(p: &Arc<LocalPlugin>, body: Vec<u8>, inflight: &InFlight) {
    let (t, rid) = match envelope::parse_request(&body) {
        Ok(x) => x,
        Err(e) => {
            let rid = request_id_of(&body);
            let err = match e {
                EnvelopeError::Malformed(m) => RequestError::Invalid(format!("malformed request: {m}")),
                EnvelopeError::UnknownType(n) => {
                    RequestError::NotSupported(format!("request type {n} is not supported"))
                }
            };
            p.out.error(rid, err).await;
            return;
        }
    };
    tracing::debug!(request_id = rid, kind = ?t, "request");
    let r = match t {
        RequestType::Heartbeat => {
            p.out.send(ResponseType::Heartbeat, rid, &Empty {}).await;
            Ok(())
        }
        RequestType::GetJobStatus => status_stream(p, rid, &body).await,
        RequestType::GetJobResourceUtil => match decode::<JobStreamRequest>(t, &body) {
            Ok(req) if req.cancel => {
                crate::resources::close(p, rid).await;
                Ok(())
            }
            Ok(req) => crate::resources::open(p, rid, req).await,
            Err(e) => {
                crate::resources::close(p, rid).await;
                Err(e)
            }
        },
        RequestType::GetJobOutput => output_stream(p, rid, &body),
        RequestType::SetLoadBalancerNodes | RequestType::ConfigReload | RequestType::Metrics => Err(
            RequestError::NotSupported(format!("{t:?} is not supported by the Local plugin")),
        ),
        _ => {
            let (p, guard) = (p.clone(), inflight.enter());
            tokio::spawn(async move {
                if let Err(e) = handle(&p, t, rid, &body).await {
                    tracing::debug!(request_id = rid, error = %e, "request refused");
                    p.out.error(rid, e).await;
                }
                drop(guard);
            });
            Ok(())
        }
    };
    if let Err(e) = r {
        tracing::debug!(request_id = rid, error = %e, "request refused");
        p.out.error(rid, e).await;
    }
}

async fn status_stream(p: &Arc<LocalPlugin>, rid: u64, body: &[u8]) -> Result<(), RequestError> {
    let req: JobStreamRequest = match decode(RequestType::GetJobStatus, body) {
        Ok(req) => req,
        Err(e) => {
            p.close_status_stream(rid).await;
            return Err(e);
        }
    };
    if req.cancel {
        p.close_status_stream(rid).await;
        return Ok(());
    }
    let target = if req.job_id == messages::ALL_JOBS {
        Target::All
    } else {
        Target::Job(req.job_id)
    };
    p.open_status_stream(rid, target, &req.username).await
}

fn output_stream(p: &Arc<LocalPlugin>, rid: u64, body: &[u8]) -> Result<(), RequestError> {
    let req = decode::<JobOutputRequest>(RequestType::GetJobOutput, body);
    let mut tasks = p.output_tasks.lock().expect("output task table");
    if let Some(old) = tasks.remove(&rid) {
        old.abort();
    }
    let req = req?;
    if req.cancel {
        return Ok(());
    }
    let p2 = p.clone();
    // The task removes itself when done; it cannot before it is inserted (the lock is held).
    let h = tokio::spawn(async move {
        if let Err(e) = crate::output::stream(p2.clone(), rid, req).await {
            p2.out.error(rid, e).await;
        }
        p2.output_tasks.lock().expect("output task table").remove(&rid);
    });
    tasks.insert(rid, h.abort_handle());
    Ok(())
}

/// Handles a request that gets exactly one answer.
async fn handle(p: &Arc<LocalPlugin>, t: RequestType, rid: u64, body: &[u8]) -> Result<(), RequestError> {
    match t {
        RequestType::Bootstrap => {
            let req: BootstrapRequest = decode(t, body)?;
            check_version(req.version)?;
            let n = crate::follow::recover(p).await;
            tracing::info!(version = ?req.version, recovered = n, "bootstrapped");
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
            let filter = JobFilter::from_request(&req)?;
            let recs = if req.job_id == messages::ALL_JOBS {
                p.list(|r| filter.matches(r)).await
            } else {
                vec![p.get_visible(&req.job_id, &req.username).await?]
            };
            let fields = req.fields.as_deref();
            let jobs: Vec<serde_json::Value> = recs.iter().map(|r| project(&r.job, fields)).collect();
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
            p.get_visible(&req.job_id, &req.username).await?;
            let ip_addresses = tokio::task::spawn_blocking(crate::host::ip_addresses)
                .await
                .unwrap_or_default();
            let resp = JobNetworkResponse {
                host: p.hostname.clone(),
                ip_addresses,
            };
            p.out.send(ResponseType::JobNetwork, rid, &resp).await;
        }
        RequestType::GetClusterInfo => {
            let _req: ClusterInfoRequest = decode(t, body)?;
            p.out
                .send(ResponseType::ClusterInfo, rid, &cluster_info(&p.cfg))
                .await;
        }
        other => {
            return Err(RequestError::NotSupported(format!(
                "{other:?} is not supported by the Local plugin"
            )));
        }
    }
    Ok(())
}

/// The cluster info of this plugin's configuration.
pub fn cluster_info(cfg: &crate::config::Config) -> ClusterInfoResponse {
    let limit = |kind: &str, max: Option<f64>| ResourceLimitInfo {
        kind: kind.into(),
        max_value: max.map(|m| m.to_string()),
        default_value: None,
    };
    ClusterInfoResponse {
        supports_containers: false,
        queues: cfg.queues.clone(),
        resource_limits: vec![
            limit("cpuCount", cfg.max_cpu_count),
            limit("cpuTime", cfg.max_cpu_time_seconds),
            limit("memory", cfg.max_memory_mb),
            limit("memorySwap", None),
        ],
        placement_constraints: Vec::new(),
        images: Vec::new(),
        default_image: None,
        allow_unknown_images: false,
        config: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_reports_the_configured_limits() {
        let mut cfg = crate::config::load(
            crate::config::Options::new(crate::config::PLUGIN_NAME),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        cfg.max_cpu_count = Some(4.0);
        cfg.max_memory_mb = Some(1536.5);
        let ci = cluster_info(&cfg);
        assert_eq!(ci.queues, vec!["default"]);
        assert!(!ci.supports_containers && !ci.allow_unknown_images);
        let by_kind = |k: &str| {
            ci.resource_limits
                .iter()
                .find(|l| l.kind == k)
                .unwrap()
                .max_value
                .clone()
        };
        assert_eq!(by_kind("cpuCount").as_deref(), Some("4"));
        assert_eq!(by_kind("memory").as_deref(), Some("1536.5"));
        assert_eq!(by_kind("cpuTime"), None);
    }
}
