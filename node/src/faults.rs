//! A hook for fault injection between nodes, for tests (in the spirit of TiKV's transport
//! filters): every gRPC call one node makes to another passes through the [`FaultPlan`] the
//! node was started with ([`crate::StartOptions::faults`]), which may deliver it, drop it,
//! delay it or deliver it twice. Without a plan (always, outside tests) calls go straight to
//! the channel.
//!
//! The hook sits on the channel, under tonic, so it sees every kind of message ([`Kind`], from
//! the gRPC method) of both services: Raft replication, votes and snapshots, and the launcher's
//! own forwarded writes, read-index requests, heartbeats and forwarded job requests. The plan
//! itself (seeded, per pair of nodes and per kind) lives with the tests.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// What kind of message a call between nodes carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Raft log replication (and leader heartbeats, which are empty appends).
    Append,
    /// Raft votes.
    Vote,
    /// Raft snapshot chunks.
    Snapshot,
    /// A write forwarded to the leader.
    Forward,
    /// A follower asking the leader for a read index.
    ReadIndex,
    /// A member's liveness heartbeat to the leader.
    Heartbeat,
    /// A follower's watch on its leader (fast failover).
    WatchLeader,
    /// Any other call: requests forwarded to a job's owner, joins, status, discovery.
    Other,
}

impl Kind {
    /// The kind of the gRPC method at `path` (`/package.Service/Method`).
    pub fn of_path(path: &str) -> Kind {
        match path.rsplit('/').next().unwrap_or_default() {
            "AppendEntries" => Kind::Append,
            "Vote" => Kind::Vote,
            "InstallSnapshot" => Kind::Snapshot,
            "ClientWrite" => Kind::Forward,
            "ReadIndex" => Kind::ReadIndex,
            "Heartbeat" => Kind::Heartbeat,
            "WatchLeader" => Kind::WatchLeader,
            _ => Kind::Other,
        }
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Sent as it is.
    Deliver,
    /// Lost on the way: the caller hears nothing until its deadline (or `DROP_WAIT`).
    Drop,
    /// Sent after this long (different delays reorder messages).
    Delay(Duration),
    /// Sent twice (the first answer is discarded): the receiver must be idempotent.
    Duplicate,
}

/// Decides the fate of each call between nodes. `from` is the caller's own address (nodes
/// under test each listen on an address of their own), `to` the address it calls.
pub trait FaultPlan: Send + Sync + std::fmt::Debug + 'static {
    fn decide(&self, from: Option<IpAddr>, to: &str, kind: Kind) -> Fault;
}

/// How long a dropped call without a deadline waits before it fails.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// A channel to one peer, through the node's fault plan if it has one.
#[derive(Clone)]
pub struct Link {
    inner: Channel,
    plan: Option<Ends>,
}

/// The plan a link consults, and the two ends it names to it.
#[derive(Clone)]
struct Ends {
    plan: Arc<dyn FaultPlan>,
    from: Option<IpAddr>,
    to: Arc<str>,
}

impl Link {
    /// A link to `to` over `inner`; calls pass through `plan` when there is one.
    pub fn new(inner: Channel, plan: Option<Arc<dyn FaultPlan>>, from: Option<IpAddr>, to: &str) -> Link {
        Link {
            inner,
            plan: plan.map(|plan| Ends {
                plan,
                from,
                to: Arc::from(to),
            }),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<http::Request<Body>> for Link {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let Some(Ends { plan, from, to }) = &self.plan else {
            let call = self.inner.call(req);
            return Box::pin(async move { call.await.map_err(Into::into) });
        };
        let fault = plan.decide(*from, to, Kind::of_path(req.uri().path()));
        // The channel that was made ready goes with this call (tower's rule); a clone stays.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            match fault {
                Fault::Deliver => inner.call(req).await.map_err(Into::into),
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    inner.ready().await?.call(req).await.map_err(Into::into)
                }
                Fault::Drop => {
                    tokio::time::sleep(grpc_timeout(&req).unwrap_or(DROP_WAIT)).await;
                    Err(Box::new(tonic::Status::deadline_exceeded(
                        "the call was dropped by the test's fault plan",
                    )) as BoxError)
                }
                Fault::Duplicate => {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect().await?.to_bytes();
                    let copy = http::Request::from_parts(
                        parts.clone(),
                        Body::new(http_body_util::Full::new(bytes.clone())),
                    );
                    let mut twin = inner.clone();
                    let _ = twin.ready().await?.call(copy).await;
                    let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
                    inner.ready().await?.call(req).await.map_err(Into::into)
                }
            }
        })
    }
}

/// The deadline a gRPC request carries (`grpc-timeout`, e.g. `500m`, `2S`).
fn grpc_timeout<B>(req: &http::Request<B>) -> Option<Duration> {
    let v = req.headers().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_grpc_method() {
        assert_eq!(Kind::of_path("/launcher.raft.Raft/AppendEntries"), Kind::Append);
        assert_eq!(Kind::of_path("/launcher.raft.Raft/Vote"), Kind::Vote);
        assert_eq!(
            Kind::of_path("/launcher.raft.Raft/InstallSnapshot"),
            Kind::Snapshot
        );
        assert_eq!(Kind::of_path("/launcher.raft.Raft/ClientWrite"), Kind::Forward);
        assert_eq!(Kind::of_path("/launcher.raft.Raft/ReadIndex"), Kind::ReadIndex);
        assert_eq!(Kind::of_path("/launcher.raft.Raft/Heartbeat"), Kind::Heartbeat);
        assert_eq!(
            Kind::of_path("/launcher.raft.Raft/WatchLeader"),
            Kind::WatchLeader
        );
        assert_eq!(Kind::of_path("/launcher.v1.Launcher/ControlJob"), Kind::Other);
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let with = |v: &str| {
            let req = http::Request::builder()
                .header("grpc-timeout", v)
                .body(())
                .unwrap();
            grpc_timeout(&req)
        };
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("500m"), Some(Duration::from_millis(500)));
        assert_eq!(with("1M"), Some(Duration::from_secs(60)));
        assert_eq!(with("x"), None);
        assert_eq!(with(""), None);
    }
}
