//! The gateway's own figures in the Prometheus text format (docs/api.md; `api` serves them at
//! `GET /metrics`), kept in one registry per gateway so that several gateways in one process
//! (tests) never mix.
//!
//! * `launcher_gateway_requests_total{route,method,code}` and
//!   `launcher_gateway_request_duration_seconds{route,method}`: every answer, by route template
//!   (`/jobs/{id}`, never the id itself, so the label set stays small).
//! * `launcher_gateway_open_streams{kind}`: streaming answers still being sent.
//! * `launcher_gateway_node_calls_total{outcome}`: calls to nodes, including retries on another
//!   node (`retried`) and answers from a node that was not the client's first choice (`failover`).
//! * `launcher_gateway_nodes{state}`: known nodes by health.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    streams: IntGaugeVec,
    node_calls: IntCounterVec,
    nodes: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "launcher_gateway_requests_total",
                "HTTP answers by route, method and status code",
            ),
            &["route", "method", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "launcher_gateway_request_duration_seconds",
                "Time until the answer's status line, by route and method (streams: until they start)",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let streams = IntGaugeVec::new(
            Opts::new(
                "launcher_gateway_open_streams",
                "Streaming answers still being sent",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let node_calls = IntCounterVec::new(
            Opts::new(
                "launcher_gateway_node_calls_total",
                "Calls to nodes by outcome (ok, error, retried, failover)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let nodes = IntGaugeVec::new(
            Opts::new(
                "launcher_gateway_nodes",
                "Known nodes by health (healthy, unhealthy)",
            ),
            &["state"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(streams.clone()),
            Box::new(node_calls.clone()),
            Box::new(nodes.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            streams,
            node_calls,
            nodes,
        }
    }

    /// Counts one call to a node by `outcome`.
    pub fn node_call(&self, outcome: &str) {
        self.node_calls.with_label_values(&[outcome]).inc();
    }

    /// Marks one stream of `kind` open until the returned guard is dropped (the client left or
    /// the stream ended).
    pub fn open_stream(self: &Arc<Self>, kind: &'static str) -> StreamGuard {
        self.streams.with_label_values(&[kind]).inc();
        StreamGuard {
            metrics: self.clone(),
            kind,
        }
    }

    /// Streams of `kind` open now.
    pub fn open_streams(&self, kind: &str) -> i64 {
        self.streams.with_label_values(&[kind]).get()
    }

    /// The text exposition of every metric.
    pub fn render(&self, healthy: usize, unhealthy: usize) -> String {
        self.nodes.with_label_values(&["healthy"]).set(healthy as i64);
        self.nodes.with_label_values(&["unhealthy"]).set(unhealthy as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Keeps one stream counted as open; see [`Metrics::open_stream`].
pub struct StreamGuard {
    metrics: Arc<Metrics>,
    kind: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams.with_label_values(&[self.kind]).dec();
    }
}

/// Middleware counting every answer by route template, method and status.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics
        .duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_guards_count_open_streams_until_dropped() {
        let m = Arc::new(Metrics::new());
        let a = m.open_stream("status");
        let b = m.open_stream("status");
        assert_eq!(m.open_streams("status"), 2);
        drop(a);
        assert_eq!(m.open_streams("status"), 1);
        drop(b);
        assert_eq!(m.open_streams("status"), 0);
    }

    #[test]
    fn the_text_format_names_every_family() {
        let m = Arc::new(Metrics::new());
        m.node_call("ok");
        m.requests.with_label_values(&["/jobs", "GET", "200"]).inc();
        m.duration.with_label_values(&["/jobs", "GET"]).observe(0.003);
        let text = m.render(2, 1);
        for needle in [
            "launcher_gateway_requests_total{code=\"200\",method=\"GET\",route=\"/jobs\"} 1",
            "launcher_gateway_node_calls_total{outcome=\"ok\"} 1",
            "launcher_gateway_nodes{state=\"healthy\"} 2",
            "launcher_gateway_nodes{state=\"unhealthy\"} 1",
            "# TYPE launcher_gateway_request_duration_seconds histogram",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
