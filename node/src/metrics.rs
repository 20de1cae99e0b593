//! `GET /metrics` on the node's gRPC port (HTTP/1.1, unauthenticated like the gateway's, off
//! with `enable-metrics=0`): Raft state, stored jobs by cluster and status, plugin restarts,
//! forwarded requests and the gRPC calls served, in the Prometheus text format.
//!
//! Counters are plain atomics where the events happen (`crate::counters`) or live in the node's own
//! [`RpcMetrics`] registry; everything else is read when scraped, into a registry built for that
//! one answer, so nothing here is process-global (several in-process nodes in one test never
//! mix).

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt as _;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::counters::Forward;
use crate::state::NodeState;

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) -> prometheus::Result<()> {
    let g = IntGauge::new(name, help)?;
    g.set(value);
    registry.register(Box::new(g))
}

/// gRPC services whose methods are counted by name; any other path counts as `other`.
const SERVICES: [&str; 2] = ["/launcher.v1.Launcher/", "/launcher.raft.Raft/"];

/// The gRPC calls this node served, by method and status code, and how long they took.
#[derive(Debug)]
pub struct RpcMetrics {
    registry: Registry,
    calls: IntCounterVec,
    duration: HistogramVec,
}

impl RpcMetrics {
    pub fn new() -> prometheus::Result<Arc<RpcMetrics>> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new(
                "launcher_node_rpc_requests_total",
                "gRPC calls served, by method and status code (Cancelled: the caller left \
                 before the end)",
            ),
            &["method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "launcher_node_rpc_duration_seconds",
                "Time from a gRPC call's arrival to its answer's headers (for a stream, its \
                 start)",
            ),
            &["method"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Arc::new(RpcMetrics {
            registry,
            calls,
            duration,
        }))
    }

    /// Middleware: times the call and counts it by the status it ends with, which arrives in
    /// the headers of an answer that is only an error, else in the body's trailers.
    pub async fn layer(
        axum::extract::State(metrics): axum::extract::State<Arc<RpcMetrics>>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let path = req.uri().path();
        let method = if SERVICES.iter().any(|s| path.starts_with(s)) {
            path.trim_start_matches('/').to_owned()
        } else {
            "other".to_owned()
        };
        let start = Instant::now();
        let response = next.run(req).await;
        let mut outcome = Outcome {
            metrics,
            method,
            recorded: false,
        };
        outcome
            .metrics
            .duration
            .with_label_values(&[&outcome.method])
            .observe(start.elapsed().as_secs_f64());
        if let Some(code) = grpc_code(response.headers()) {
            outcome.record(code);
            return response;
        }
        let (parts, body) = response.into_parts();
        let body = body.map_frame(move |frame| {
            if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                outcome.record(code);
            }
            frame
        });
        axum::response::Response::from_parts(parts, axum::body::Body::new(body))
    }

    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

/// The status of one call, counted once: when it is known, or as Cancelled when the answer is
/// dropped before its end (the caller went away).
struct Outcome {
    metrics: Arc<RpcMetrics>,
    method: String,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        // A path under our services that names no method would otherwise add a series per
        // made-up name.
        let method = if code == tonic::Code::Unimplemented {
            "other"
        } else {
            &self.method
        };
        self.metrics
            .calls
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

fn grpc_code(headers: &axum::http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

/// The text exposition of this node's metrics.
pub async fn render(shared: &NodeState, rpc: &RpcMetrics) -> prometheus::Result<String> {
    let registry = Registry::new();
    let m = shared.raft.metrics().borrow().clone();
    let id = shared.id as i64;
    gauge(&registry, "launcher_node_id", "This node's id", id)?;
    gauge(
        &registry,
        "launcher_node_raft_term",
        "Current Raft term",
        m.current_term as i64,
    )?;
    gauge(
        &registry,
        "launcher_node_raft_leader",
        "Id of the leader this node knows (0: none)",
        m.current_leader.map_or(0, |l| l as i64),
    )?;
    gauge(
        &registry,
        "launcher_node_raft_is_leader",
        "1 on the leader",
        i64::from(m.current_leader == Some(shared.id)),
    )?;
    gauge(
        &registry,
        "launcher_node_raft_last_log_index",
        "Index of the last entry in this node's log",
        m.last_log_index.map_or(0, |i| i as i64),
    )?;
    gauge(
        &registry,
        "launcher_node_raft_applied_index",
        "Index of the last entry applied to the job table",
        m.last_applied.map_or(0, |l| l.index as i64),
    )?;
    gauge(
        &registry,
        "launcher_node_raft_snapshot_index",
        "Index covered by the latest snapshot",
        m.snapshot.map_or(0, |l| l.index as i64),
    )?;
    gauge(
        &registry,
        "launcher_node_raft_log_entries",
        "Entries kept in the log (last index minus purged)",
        m.last_log_index
            .unwrap_or(0)
            .saturating_sub(m.purged.map_or(0, |l| l.index)) as i64,
    )?;
    gauge(
        &registry,
        "launcher_node_raft_voters",
        "Voters in the membership",
        m.membership_config.membership().voter_ids().count() as i64,
    )?;
    if let Some(progress) = &m.replication {
        // openraft 0.9 reports no commit index; the leader's own is the highest index that a
        // majority of the voters have stored (its replication progress includes itself).
        // Followers have no such figure: their applied index trails the commit by the apply.
        let matched = IntGaugeVec::new(
            Opts::new(
                "launcher_node_raft_matched_index",
                "On the leader: the last log index each member is known to have stored",
            ),
            &["member"],
        )?;
        for (member, log_id) in progress {
            matched
                .with_label_values(&[&member.to_string()])
                .set(log_id.map_or(0, |l| l.index as i64));
        }
        registry.register(Box::new(matched))?;
        let mut voters: Vec<u64> = m
            .membership_config
            .membership()
            .voter_ids()
            .map(|v| progress.get(&v).copied().flatten().map_or(0, |l| l.index))
            .collect();
        voters.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(commit) = voters.get(voters.len() / 2) {
            gauge(
                &registry,
                "launcher_node_raft_commit_index",
                "On the leader: the highest log index a majority of the voters have stored",
                *commit as i64,
            )?;
        }
    }
    if let Some(ack) = m.millis_since_quorum_ack {
        gauge(
            &registry,
            "launcher_node_raft_millis_since_quorum_ack",
            "On the leader: milliseconds since a quorum last acknowledged it",
            ack as i64,
        )?;
    }
    let size = launcher_storage::engine::KvEngine::size_on_disk(&shared.engine).unwrap_or(0);
    gauge(
        &registry,
        "launcher_node_storage_bytes",
        "Bytes the storage engine uses on disk (log and job table)",
        size as i64,
    )?;

    gauge(
        &registry,
        "launcher_node_snapshot_bytes",
        "Size of the latest snapshot file (0 before the first snapshot)",
        shared.sm.snapshot_bytes() as i64,
    )?;

    let jobs = IntGaugeVec::new(
        Opts::new(
            "launcher_node_jobs",
            "Stored jobs by cluster and status (this node's replica)",
        ),
        &["cluster", "status"],
    )?;
    if let Ok(counts) = shared.table(|sm| sm.job_counts()).await {
        for (cluster, status, n) in counts {
            jobs.with_label_values(&[&cluster, status.as_str()]).set(n as i64);
        }
    }
    registry.register(Box::new(jobs))?;

    let pending = shared
        .table(|sm| sm.pending_controls(None))
        .await
        .map_or(0, |jobs| jobs.iter().map(|(_, n)| *n).sum::<usize>());
    gauge(
        &registry,
        "launcher_node_pending_controls",
        "Control requests committed and not yet carried out by their job's owner (this node's replica)",
        pending as i64,
    )?;
    gauge(
        &registry,
        "launcher_node_driven_jobs",
        "Jobs this node owns and drives through its plugins now",
        shared.jobs.driven() as i64,
    )?;
    let controls = IntCounterVec::new(
        Opts::new(
            "launcher_node_controls_total",
            "Committed control requests this node, as the job's owner, took off the job's queue: \
             carried out by the plugin, refused by it, or found already done (after a crash)",
        ),
        &["operation", "outcome"],
    )?;
    for (op, outcome, n) in shared.jobs.control_counts() {
        controls.with_label_values(&[op, outcome]).inc_by(n);
    }
    registry.register(Box::new(controls))?;

    let restarts = IntCounterVec::new(
        Opts::new(
            "launcher_node_plugin_restarts_total",
            "Times each cluster's plugin was restarted after it died or stopped answering",
        ),
        &["cluster"],
    )?;
    let up = IntGaugeVec::new(
        Opts::new(
            "launcher_node_plugin_up",
            "1 while the cluster's plugin is bootstrapped and answering",
        ),
        &["cluster"],
    )?;
    for p in shared.plugins.iter() {
        restarts.with_label_values(&[p.cluster()]).inc_by(p.restarts());
        up.with_label_values(&[p.cluster()]).set(i64::from(p.is_up()));
    }
    registry.register(Box::new(restarts))?;
    registry.register(Box::new(up))?;

    let forwarded = IntCounterVec::new(
        Opts::new(
            "launcher_node_forwarded_requests_total",
            "Requests this node forwarded: to a job's owner, or writes to the leader",
        ),
        &["kind"],
    )?;
    for kind in Forward::ALL {
        forwarded
            .with_label_values(&[kind.label()])
            .inc_by(shared.counters.forwarded_count(kind));
    }
    registry.register(Box::new(forwarded))?;

    let fast = IntCounter::new(
        "launcher_node_fast_elections_total",
        "Elections this node called at once because its leader's port refused connections (fast-failover)",
    )?;
    fast.inc_by(shared.counters.fast_elections_count());
    registry.register(Box::new(fast))?;

    // Group commit: commands per Raft entry is the ratio of these two.
    let (entries, commands) = shared.proposer.stats();
    let proposed = IntCounterVec::new(
        Opts::new(
            "launcher_node_proposed_total",
            "What this node proposed to Raft as leader: entries, and the commands they carried (several per entry when batched)",
        ),
        &["kind"],
    )?;
    proposed.with_label_values(&["entries"]).inc_by(entries);
    proposed.with_label_values(&["commands"]).inc_by(commands);
    registry.register(Box::new(proposed))?;
    gauge(
        &registry,
        "launcher_node_pending_writes",
        "Writes in this node's proposal queue or in Raft, not answered yet (at most max-pending-writes)",
        shared.proposer.pending() as i64,
    )?;
    let (overloaded, dropped, timed_out) = shared.proposer.refusals();
    let refused = IntCounterVec::new(
        Opts::new(
            "launcher_node_write_refusals_total",
            "Writes this node, as leader, did not commit: refused with the queue full (overloaded), \
             dropped before proposing because their caller had left or their deadline passed \
             (dropped), or not committed by their deadline (timed_out)",
        ),
        &["reason"],
    )?;
    refused.with_label_values(&["overloaded"]).inc_by(overloaded);
    refused.with_label_values(&["dropped"]).inc_by(dropped);
    refused.with_label_values(&["timed_out"]).inc_by(timed_out);
    registry.register(Box::new(refused))?;
    gauge(
        &registry,
        "launcher_node_group_commit",
        "1 while this node, as leader, proposes concurrent writes together (every member applies batches)",
        i64::from(shared.proposer.batching()),
    )?;

    let mut families = registry.gather();
    families.extend(rpc.gather());
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The `/metrics` answer: the text, or 503 while the node is still starting.
pub async fn serve(
    cell: Arc<crate::raft_service::NodeCell>,
    rpc: Arc<RpcMetrics>,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let Some(shared) = cell.shared.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "this node is still starting\n").into_response();
    };
    match render(shared, &rpc).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The `/metrics` answer with `enable-metrics=0`.
pub async fn disabled() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "metrics are disabled on this node (enable-metrics=0)\n",
    )
}
