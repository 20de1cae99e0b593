//! Requests that need the running job: control, output, resource use, network (ARCHITECTURE.md).
//! Any node accepts them; the job's owner carries them out with its plugin, and every other
//! node forwards them to the owner over gRPC, marked so they are never forwarded twice.

use crate::counters::Forward;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use launcher_plugin_api::envelope::RequestType;
use launcher_plugin_api::messages::{
    self as pm, JobNetworkRequest, JobNetworkResponse, JobOutputRequest, JobOutputResponse, JobStreamRequest,
    ResourceUtilResponse,
};
use launcher_proto::launcher::{self as pb, ControlJobReply, JobNetwork, OutputChunk, ResourceUse};
use launcher_storage::command::ControlOp;
use launcher_storage::table::JobMeta;
use launcher_storage::{ErrorCode, Job, JobStatus};
use tonic::{Request, Status};

use crate::error::{NodeError, NodeResult};
use crate::plugins::PluginHost;
use crate::state::NodeState;

/// Metadata on a request a node forwarded to the job's owner.
pub const FORWARDED_HEADER: &str = "launcher-forwarded";

/// Metadata on a forwarded control request: the log index its Control command was committed
/// at, which the owner applies before it looks for the request.
pub const COMMITTED_INDEX_HEADER: &str = "launcher-committed-index";

/// The committed index a forwarded control request carries (0: none, from an older node).
pub fn committed_index<T>(req: &Request<T>) -> u64 {
    req.metadata()
        .get(COMMITTED_INDEX_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Output requests without `follow` end once the plugin has been quiet this long.
const OUTPUT_SNAPSHOT_IDLE: Duration = Duration::from_millis(500);

/// A stream of replies for the gateway.
pub type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Whether a request was forwarded by another node.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

/// Marks a request as forwarded (and passes the request id on).
fn forwarded<T>(msg: T, timeout: Option<Duration>) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    crate::request_id::pass_on(&mut r);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Where a request for a running job goes.
pub enum Route {
    /// This node owns the job: use this plugin, with the plugin's job id (if launched).
    Here {
        plugin: Arc<PluginHost>,
        plugin_id: Option<String>,
        job: Box<Job>,
    },
    /// Another node owns it: forward to this address.
    There(String),
}

impl NodeState {
    /// Decides where a request for job `id` is served. A forwarded request must be served here.
    pub async fn route(&self, id: &str, was_forwarded: bool) -> NodeResult<Route> {
        let key = id.to_string();
        let (job, meta): (Job, JobMeta) = self
            .table(move |sm| sm.job_with_meta(&key))
            .await?
            .ok_or_else(|| NodeError::job_not_found(id))?;
        if meta.owner == self.id {
            let plugin = self.plugins.get(&job.cluster).cloned().ok_or_else(|| {
                NodeError::unavailable(format!(
                    "this node owns job {id} but no longer hosts its cluster '{}'",
                    job.cluster
                ))
            })?;
            let plugin_id = job.plugin_job_id.clone().or_else(|| self.jobs.plugin_id(id));
            return Ok(Route::Here {
                plugin,
                plugin_id,
                job: Box::new(job),
            });
        }
        if was_forwarded {
            return Err(NodeError::unavailable(format!(
                "job {id} moved to node {} meanwhile; retry",
                meta.owner
            )));
        }
        let addr = self.addr_of(meta.owner).ok_or_else(|| {
            NodeError::unavailable(format!(
                "job {id} belongs to node {}, whose address is unknown",
                meta.owner
            ))
        })?;
        Ok(Route::There(addr))
    }

    /// Waits on the owner until it carried out a control operation whose Control command was
    /// committed at `committed_at` (0: not known).
    pub async fn control_at_owner(
        &self,
        req: &pb::ControlJobRequest,
        op: ControlOp,
        was_forwarded: bool,
        committed_at: u64,
    ) -> NodeResult<ControlJobReply> {
        match self.route(&req.id, was_forwarded).await? {
            Route::Here { .. } => {
                let r = crate::driver::control(self, &req.id, op, committed_at).await?;
                Ok(ControlJobReply {
                    status_message: r.status_message,
                    operation_complete: r.operation_complete,
                    applied_index: self.applied_index(),
                })
            }
            Route::There(addr) => {
                self.counters.forwarded(Forward::Control);
                let timeout = Duration::from_secs(self.config.server.request_timeout_seconds + 5);
                let mut call = forwarded(req.clone(), Some(timeout));
                call.metadata_mut().insert(
                    COMMITTED_INDEX_HEADER,
                    tonic::metadata::MetadataValue::from(committed_at),
                );
                self.peers
                    .launcher(&addr)
                    .control_job(call)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| NodeError::from(&s))
            }
        }
    }

    /// The job's network location, from its owner's plugin.
    pub async fn network_at_owner(
        &self,
        req: &pb::JobRequest,
        was_forwarded: bool,
    ) -> NodeResult<JobNetwork> {
        match self.route(&req.id, was_forwarded).await? {
            Route::Here {
                plugin,
                plugin_id,
                job,
            } => {
                let pid = launched(&req.id, plugin_id, &job)?;
                let user = job.user.clone().unwrap_or_default();
                let r: JobNetworkResponse = plugin
                    .call(
                        RequestType::GetJobNetwork,
                        &JobNetworkRequest {
                            request_username: user.clone(),
                            username: user,
                            job_id: pid.clone(),
                            encoded_job_id: pid,
                        },
                    )
                    .await
                    .map_err(|e| e.into_node_error(plugin.cluster()))?;
                Ok(JobNetwork {
                    host: if r.host.is_empty() {
                        job.host.clone().unwrap_or_default()
                    } else {
                        r.host
                    },
                    ip_addresses: r.ip_addresses,
                })
            }
            Route::There(addr) => {
                self.counters.forwarded(Forward::Network);
                self.peers
                    .launcher(&addr)
                    .get_job_network(forwarded(req.clone(), Some(Duration::from_secs(30))))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| NodeError::from(&s))
            }
        }
    }

    /// The job's output, from its owner's plugin (following it while the job runs if asked).
    pub async fn output_at_owner(
        &self,
        req: &pb::OutputRequest,
        was_forwarded: bool,
    ) -> NodeResult<ReplyStream<OutputChunk>> {
        let output_type = match req.output_type.as_str() {
            "" | "stdout" => pm::OutputType::Stdout,
            "stderr" => pm::OutputType::Stderr,
            "both" => pm::OutputType::Both,
            other => {
                return Err(NodeError::invalid(format!(
                    "unknown output type '{other}'; use stdout, stderr or both"
                )))
            }
        };
        match self.route(&req.id, was_forwarded).await? {
            Route::Here {
                plugin,
                plugin_id,
                job,
            } => {
                let pid = launched(&req.id, plugin_id, &job)?;
                let user = job.user.clone().unwrap_or_default();
                let open = JobOutputRequest {
                    request_username: user.clone(),
                    username: user,
                    job_id: pid.clone(),
                    encoded_job_id: pid,
                    output_type: output_type as i32,
                    cancel: false,
                };
                let stream = plugin
                    .stream(RequestType::GetJobOutput, &open)
                    .await
                    .map_err(|e| e.into_node_error(plugin.cluster()))?;
                let cluster = plugin.cluster().to_string();
                let follow = req.follow;
                let out = futures::stream::unfold(Some(stream), move |state| {
                    let cluster = cluster.clone();
                    async move {
                        let mut stream = state?;
                        let next = if follow {
                            stream.next().await
                        } else {
                            tokio::time::timeout(OUTPUT_SNAPSHOT_IDLE, stream.next())
                                .await
                                .unwrap_or_default()
                        };
                        match next? {
                            Ok(body) => {
                                let r: JobOutputResponse = match pm::decode(&body) {
                                    Ok(r) => r,
                                    Err(e) => {
                                        let e = NodeError::internal(format!("unreadable output chunk: {e}"));
                                        return Some((Err(e.into()), None));
                                    }
                                };
                                let done = r.complete;
                                let chunk = OutputChunk {
                                    output: r.output,
                                    output_type: r.output_type,
                                    complete: r.complete,
                                };
                                Some((Ok(chunk), (!done).then_some(stream)))
                            }
                            Err(e) => Some((Err(e.into_node_error(&cluster).into()), None)),
                        }
                    }
                });
                Ok(Box::pin(out))
            }
            Route::There(addr) => {
                self.counters.forwarded(Forward::Output);
                let s = self
                    .peers
                    .launcher(&addr)
                    .stream_output(forwarded(req.clone(), None))
                    .await
                    .map_err(|s| NodeError::from(&s))?
                    .into_inner();
                Ok(Box::pin(s))
            }
        }
    }

    /// The job's resource use, from its owner's plugin, until the job ends.
    pub async fn resource_use_at_owner(
        &self,
        req: &pb::JobRequest,
        was_forwarded: bool,
    ) -> NodeResult<ReplyStream<ResourceUse>> {
        match self.route(&req.id, was_forwarded).await? {
            Route::Here {
                plugin,
                plugin_id,
                job,
            } => {
                if job.status().is_terminal() {
                    return Err(NodeError::new(
                        ErrorCode::JobNotRunning,
                        format!("job {} has ended ({})", req.id, job.status()),
                    ));
                }
                let pid = launched(&req.id, plugin_id, &job)?;
                let user = job.user.clone().unwrap_or_default();
                let open = JobStreamRequest {
                    request_username: user.clone(),
                    username: user,
                    job_id: pid.clone(),
                    encoded_job_id: pid,
                    cancel: false,
                };
                let stream = plugin
                    .stream(RequestType::GetJobResourceUtil, &open)
                    .await
                    .map_err(|e| e.into_node_error(plugin.cluster()))?;
                let cluster = plugin.cluster().to_string();
                let out = futures::stream::unfold(Some(stream), move |state| {
                    let cluster = cluster.clone();
                    async move {
                        let mut stream = state?;
                        match stream.next().await? {
                            Ok(body) => {
                                let r: ResourceUtilResponse = match pm::decode(&body) {
                                    Ok(r) => r,
                                    Err(e) => {
                                        let e = NodeError::internal(format!("unreadable resource use: {e}"));
                                        return Some((Err(e.into()), None));
                                    }
                                };
                                let usage = serde_json::json!({
                                    "cpuPercent": r.cpu_percent, "cpuTime": r.cpu_time,
                                    "virtualMemory": r.virtual_memory, "residentMemory": r.resident_memory,
                                });
                                let item = ResourceUse {
                                    usage: usage.to_string().into_bytes(),
                                };
                                Some((Ok(item), (!r.complete).then_some(stream)))
                            }
                            Err(e) => Some((Err(e.into_node_error(&cluster).into()), None)),
                        }
                    }
                });
                Ok(Box::pin(out))
            }
            Route::There(addr) => {
                self.counters.forwarded(Forward::ResourceUse);
                let s = self
                    .peers
                    .launcher(&addr)
                    .stream_resource_use(forwarded(req.clone(), None))
                    .await
                    .map_err(|s| NodeError::from(&s))?
                    .into_inner();
                Ok(Box::pin(s))
            }
        }
    }
}

/// The plugin's id of a launched job, or why there is none.
fn launched(id: &str, plugin_id: Option<String>, job: &Job) -> NodeResult<String> {
    plugin_id.ok_or_else(|| {
        if job.status() == JobStatus::Pending {
            NodeError::new(
                ErrorCode::JobNotRunning,
                format!("job {id} has not been launched yet; retry shortly"),
            )
        } else {
            NodeError::new(
                ErrorCode::JobOutputNotFound,
                format!("job {id} never reached its plugin ({})", job.status()),
            )
        }
    })
}
