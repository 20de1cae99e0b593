//! The Local plugin's requests, under the shared Plugin API loop (`launcher_plugin_api::serve`).
//!
//! Stream opens and cancels are handled in the reader, in arrival order, so a cancel always
//! finds the stream it closes; everything else runs in its own task. A stream request that
//! cannot be read still closes the stream open under its `requestId`: a launcher that sends
//! anything more under that id is done with the stream, and a cancel the plugin could not read
//! must not leave output flowing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::envelope::{RequestType, ResponseType};
use launcher_plugin_api::messages::{
    self, BootstrapRequest, BootstrapResponse, ClusterInfoRequest, ClusterInfoResponse, ControlJobRequest,
    GetJobRequest, JobNetworkRequest, JobNetworkResponse, JobStreamRequest, ResourceLimitInfo,
    SubmitJobRequest, API_VERSION,
};
use launcher_plugin_api::request::{check_version, decode, one_job};
use launcher_plugin_api::serve::{in_background, Plugin, Settings};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::RequestError;
use crate::query::{project, JobFilter};
use crate::state::{LocalPlugin, Outbox, Outgoing};
use launcher_plugin_api::streams::Target;

/// Serves the Plugin API on `input`/`output` until the input ends or `shutdown` completes
/// (the shared loop of `launcher_plugin_api::serve`), expiring old jobs meanwhile. Jobs keep
/// running.
pub async fn serve<R, W>(
    p: Arc<LocalPlugin>,
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
    let expiry = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                crate::follow::expire(&p).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        })
    };
    launcher_plugin_api::serve::serve(p, out_rx, input, output, settings, vec![expiry], shutdown).await;
}

impl Plugin for LocalPlugin {
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
            RequestType::GetJobOutput => {
                let stream = p.clone();
                p.output_streams
                    .request(&p.out, rid, &body, |req| crate::output::stream(stream, rid, req))
            }
            RequestType::SetLoadBalancerNodes | RequestType::ConfigReload | RequestType::Metrics => Err(
                RequestError::NotSupported(format!("{t:?} is not supported by the Local plugin")),
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
