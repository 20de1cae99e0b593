//! What every route shares: the gateway's state ([`AppState`]), the caller of a request
//! ([`Ctx`]: user, admin, client key, index floor), the call to the client's node with failover
//! ([`AppState::call`]), the headers and cookies every answer carries ([`finish`]), and the
//! bounded request body ([`body_bytes`]). The routes themselves are in `api`, the web page's in
//! `ui`; both build on this module, and it on neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use launcher_proto::launcher::{self as pb, ReadOptions};

use crate::auth::{self, Admins};
use crate::config::GatewayConfig;
use crate::error::{code, ApiError, Failure};
use crate::routing::{NodeClient, Pool};

/// Response header with the applied index an answer reflects.
pub const INDEX_HEADER: &str = "x-launcher-index";
/// Request header: do not answer from a node that has not applied this index.
pub const MIN_INDEX_HEADER: &str = "x-launcher-min-index";
/// Response header naming the node (id) that answered.
pub const NODE_HEADER: &str = "x-launcher-node";
/// Request header making a submit idempotent.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Cookie pinning a client to its node (its client key).
pub const NODE_COOKIE: &str = "launcher-node";
/// Request id header: kept from the client, else set by the gateway; sent on to the node.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Cookie mirroring the highest index the client has seen.
pub const INDEX_COOKIE: &str = "launcher-index";

/// What every handler shares.
pub struct AppState {
    pub config: GatewayConfig,
    pub key: Vec<u8>,
    pub admins: Arc<Admins>,
    pub pool: Arc<Pool>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Who is calling and from where: the authenticated user, whether admin, and the client key.
pub struct Ctx {
    pub user: String,
    pub admin: bool,
    /// Rendezvous key: the `launcher-node` cookie, else the source address.
    pub client: String,
    /// Whether the client lacked the cookie (the answer sets it).
    pub new_client: bool,
    /// Highest index this client must see.
    pub min_index: u64,
    /// The node that answered (for the `X-Launcher-Node` header).
    pub(crate) served_by: std::sync::Mutex<Option<String>>,
    /// `X-Request-Id` (the client's, or the one the gateway gave the request), passed to nodes.
    pub request_id: String,
    /// The request came over TLS (the answer's cookies get `Secure`).
    pub over_tls: bool,
}

impl Ctx {
    pub(crate) fn caller(&self) -> Option<pb::Caller> {
        Some(pb::Caller {
            user: self.user.clone(),
            admin: self.admin,
        })
    }

    pub(crate) fn read(&self, stale: bool) -> Option<ReadOptions> {
        Some(ReadOptions {
            consistency: if stale {
                pb::Consistency::Stale as i32
            } else {
                pb::Consistency::Linearizable as i32
            },
            min_index: self.min_index,
        })
    }
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client key of a request without the cookie: its source address, hashed so the cookie
/// does not reveal it.
fn client_key(addr: Option<SocketAddr>) -> String {
    use sha2::Digest;
    let ip = addr.map(|a| a.ip().to_string()).unwrap_or_else(|| "unix".into());
    hex::encode(&sha2::Sha256::digest(ip.as_bytes())[..12])
}

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let token = request_token(headers);
        let (user, admin) = if state.config.server.authorization_enabled {
            let token = token
                .ok_or_else(|| ApiError::new(code::UNAUTHORIZED, auth::AuthError::Missing.to_string()))?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
            let user = auth::verify_token(
                &state.key,
                &token,
                now,
                state.config.server.max_token_lifetime_seconds,
            )
            .map_err(|e| ApiError::new(code::UNAUTHORIZED, e.to_string()))?;
            let admin = state.admins.is_admin_async(&user).await;
            (user, admin)
        } else {
            // Without authorization every caller acts as an admin (the product's behaviour).
            ("anonymous".to_string(), true)
        };
        let (client, new_client) = match cookie(headers, NODE_COOKIE)
            .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            Some(c) => (c.to_string(), false),
            None => {
                let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
                (client_key(addr), true)
            }
        };
        let asked = match headers.get(MIN_INDEX_HEADER) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        code::INVALID,
                        "X-Launcher-Min-Index must be a non-negative integer",
                    )
                })?,
            None => 0,
        };
        let cookie_index = cookie(headers, INDEX_COOKIE)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let min_index = asked.max(cookie_index).max(state.pool.known_index(&client));
        Ok(Ctx {
            user,
            admin,
            client,
            new_client,
            min_index,
            served_by: std::sync::Mutex::new(None),
            over_tls: over_tls(state, &parts.extensions),
            request_id: headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// How long a request that is safe to repeat keeps going round the nodes while each of them
/// fails in a way another try may cure: typically while the cluster elects a new leader after
/// losing one (followers answer Unavailable at once until then). As long as a node lets a write
/// wait for a leader (`WRITE_DEADLINE` in node/src/writes.rs), so reads ride out the elections
/// writes do; never longer than `request-timeout-seconds`.
const FAILOVER_WINDOW: Duration = Duration::from_secs(10);
/// Pause before going round the nodes again, doubled each round up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

impl AppState {
    /// Runs `call` on the client's node. With `retry`, a failure another node may not have
    /// ([`Failure::retryable`]: unreachable, Unavailable, no answer in time) moves it to the
    /// next node in the client's order at once; when every node failed so, it goes round them
    /// again after a short pause, until [`FAILOVER_WINDOW`] has passed. Without `retry` the
    /// first failure is the answer. A node that could not be reached, or gave no answer in
    /// time, is taken out of rotation at once, so the next request does not pay for it.
    pub(crate) async fn call<T, F, Fut>(&self, ctx: &Ctx, retry: bool, call: F) -> Result<T, ApiError>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let give_up = tokio::time::Instant::now() + FAILOVER_WINDOW.min(self.timeout());
        let mut pause = RETRY_PAUSE;
        let mut last = ApiError::new(code::UNAVAILABLE, "no launcher node is configured");
        let mut attempt = 0;
        // Nodes this request could not reach: later rounds leave them out while they are still
        // out of rotation (unless nothing else is left), instead of paying for them each round.
        let mut unreached: Vec<String> = Vec::new();
        loop {
            let mut candidates = self.pool.candidates(&ctx.client);
            if attempt > 0 {
                let others: Vec<String> = candidates
                    .iter()
                    .filter(|a| !unreached.contains(a) || self.pool.is_healthy(a))
                    .cloned()
                    .collect();
                if !others.is_empty() {
                    candidates = others;
                }
            }
            if candidates.is_empty() {
                return Err(last);
            }
            for addr in candidates {
                if attempt > 0 {
                    self.metrics.node_call("retried");
                }
                attempt += 1;
                match call(self.pool.client(&addr)).await {
                    Ok(r) => {
                        self.metrics
                            .node_call(if attempt > 1 { "failover" } else { "ok" });
                        *ctx.served_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
                        return Ok(r.into_inner());
                    }
                    Err(s) => {
                        self.metrics.node_call("error");
                        let failure = Failure::of(&s);
                        let unsent = crate::error::never_sent(&s);
                        match failure {
                            Failure::Unreachable => {
                                self.pool.mark_down(&addr, s.message(), true);
                                unreached.push(addr);
                            }
                            Failure::TimedOut => self.pool.mark_down(&addr, s.message(), false),
                            Failure::Unavailable | Failure::Answered => {}
                        }
                        last = ApiError::from(s);
                        // A request that never left may go elsewhere, safe to repeat or not.
                        let may_retry = unsent || (retry && failure.retryable());
                        if !may_retry {
                            return Err(last);
                        }
                    }
                }
            }
            // Every node failed, each in a way that may pass: try them again shortly.
            if tokio::time::Instant::now() + pause > give_up {
                return Err(last);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// [`Self::call`] for a server stream whose first item is part of the answer (a listing's
    /// first chunk carries its index): the first item is awaited inside the call, so a node
    /// that accepted the call and died before sending it is a failed call like any other.
    /// `None` when the node ended the stream without an item.
    pub(crate) async fn call_first<T, F, Fut>(
        &self,
        ctx: &Ctx,
        retry: bool,
        call: F,
    ) -> Result<(Option<T>, tonic::Streaming<T>), ApiError>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
    {
        self.call(ctx, retry, |c| {
            let opened = call(c);
            async move {
                let mut stream = opened.await?.into_inner();
                let first = stream.message().await?;
                Ok(tonic::Response::new((first, stream)))
            }
        })
        .await
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.server.request_timeout_seconds)
    }
}

/// Calls `$method` with a clone of `$req` on the client's node, retrying on the next node when
/// `$retry` allows (see [`AppState::call`]).
macro_rules! on_node {
    ($s:expr, $ctx:expr, $retry:expr, $method:ident, $req:expr, $timeout:expr) => {
        $s.call($ctx, $retry, |mut c| {
            let r = $crate::context::for_request($ctx, $crate::context::request($req.clone(), $timeout));
            async move { c.$method(r).await }
        })
    };
}

/// [`on_node!`] for a server stream, through [`AppState::call_first`]: the stream's first item
/// (or `None`) and the rest.
macro_rules! first_on_node {
    ($s:expr, $ctx:expr, $retry:expr, $method:ident, $req:expr, $timeout:expr) => {
        $s.call_first($ctx, $retry, |mut c| {
            let r = $crate::context::for_request($ctx, $crate::context::request($req.clone(), $timeout));
            async move { c.$method(r).await }
        })
    };
}

pub(crate) use {first_on_node, on_node};

pub(crate) fn request<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Carries the HTTP request's id to the node, whose log lines about it then name it.
pub(crate) fn for_request<T>(ctx: &Ctx, mut r: tonic::Request<T>) -> tonic::Request<T> {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(ctx.request_id.as_str()) {
        if !ctx.request_id.is_empty() {
            r.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
    }
    r
}

/// Adds the headers every answer carries: the applied index (also as a cookie) and, for a new
/// client, its `launcher-node` cookie.
pub(crate) fn finish(state: &AppState, ctx: &Ctx, index: u64, mut resp: Response) -> Response {
    // Answers that carry no index of their own (output, network...) report the highest index
    // the gateway has seen a node apply, never the client's requested floor.
    let index = if index == 0 {
        state.pool.highest_applied()
    } else {
        index
    };
    state.pool.remember_index(&ctx.client, index);
    let served = ctx.served_by.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let node_id = served.and_then(|a| state.pool.nodes().into_iter().find(|n| n.addr == a).map(|n| n.id));
    let h = resp.headers_mut();
    h.insert(INDEX_HEADER, HeaderValue::from(index));
    if let Some(id) = node_id.filter(|id| *id > 0) {
        h.insert(NODE_HEADER, HeaderValue::from(id));
    }
    // Over TLS the cookies never travel in clear text either.
    let secure = if ctx.over_tls { "; Secure" } else { "" };
    let mut cookies = vec![format!("{INDEX_COOKIE}={index}; Path=/; SameSite=Strict{secure}")];
    if ctx.new_client {
        cookies.push(format!(
            "{NODE_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
            ctx.client
        ));
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Gives every answer an `X-Launcher-Index`, including those no route produced (404, 405,
/// rejected requests, the OpenAPI document): the highest index a node was seen to apply.
pub async fn index_header(State(s): State<Arc<AppState>>, mut resp: Response) -> Response {
    if !resp.headers().contains_key(INDEX_HEADER) {
        resp.headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(s.pool.highest_applied()));
    }
    resp
}

/// How much of an oversize body is read and thrown away before the 413 is sent, so that a
/// client still writing its body reads the answer instead of a reset connection. Beyond this
/// (or [`DRAIN_DEADLINE`]) the connection is closed instead.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// How long an oversize body may take to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a request body of at most `max-request-body-bytes`: 413 beyond it (after draining up
/// to [`DRAIN_BYTES`] of the rest), 400 when the body cannot be read.
pub(crate) async fn body_bytes(s: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = s.config.server.max_request_body_bytes;
    let mut body = body.into_data_stream();
    let mut buf = Vec::new();
    let read_error =
        |e: axum::Error| ApiError::new(code::INVALID, format!("cannot read the request body: {e}"));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(read_error)?;
        if buf.len() + chunk.len() > limit {
            let mut seen = buf.len() + chunk.len();
            let drain = async {
                while let Some(Ok(c)) = body.next().await {
                    seen += c.len();
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
            return Err(too_large(s));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

pub(crate) fn too_large(s: &AppState) -> ApiError {
    ApiError::new(
        code::TOO_LARGE,
        format!(
            "the request body is larger than {} bytes (max-request-body-bytes)",
            s.config.server.max_request_body_bytes
        ),
    )
}

/// The token a request carries as the API reads it: `Authorization: Bearer`, else the cookie.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
        .map(str::to_string)
        .or_else(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(auth::token_from_cookies)
        })
}

/// Whether the request came over TLS: with `enable-ssl` every TCP connection is TLS, and only
/// TCP connections carry a peer address (the unix socket is plain).
pub(crate) fn over_tls(s: &AppState, ext: &Extensions) -> bool {
    s.config.server.enable_ssl && ext.get::<ConnectInfo<SocketAddr>>().is_some()
}
