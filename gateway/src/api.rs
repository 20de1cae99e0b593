//! The Launcher HTTP API (docs/api.md): routes, authentication, isolation hand-off to the nodes,
//! sticky routing with retries, and the headers every answer carries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{Stream, StreamExt};
use launcher_proto::launcher::{
    self as pb, ClusterInfoRequest, ControlJobRequest, DrainRequest, GetJobRequest, JobRequest, LeaveRequest,
    ListJobsRequest, MembersRequest, OutputRequest, ReadOptions, SaveSnapshotRequest, StatusRequest,
    SubmitJobRequest,
};
use serde::Deserialize;

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

/// The router with every route of docs/api.md.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/metrics", get(crate::metrics::serve))
        .route("/clusters", get(clusters))
        .route("/jobs", get(list_jobs).post(submit_job))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/control", post(control_job))
        .route("/jobs/{id}/status", get(job_status))
        .route("/jobs/{id}/output", get(job_output))
        .route("/jobs/{id}/resource-utilization", get(resource_use))
        .route("/jobs/{id}/network", get(job_network))
        .route("/members", get(members))
        .route("/members/{id}/drain", post(drain_member))
        .route("/members/{id}", axum::routing::delete(remove_member))
        .route("/snapshot", get(save_snapshot))
        // The web status page (ui.rs): static files unauthenticated, data through the routes above.
        .route("/", get(crate::ui::page))
        .route("/ui", get(crate::ui::page))
        .route("/ui/{file}", get(crate::ui::asset))
        .route("/ui/login", post(crate::ui::login))
        .route("/ui/logout", post(crate::ui::logout))
        .route("/ui/session", get(crate::ui::session))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        code::NOT_FOUND,
        "no such route; see GET /openapi.json for the API",
    )
}

async fn method_not_allowed(method: Method) -> Response {
    let e = ApiError::new(
        code::INVALID,
        format!("method {method} is not allowed on this route"),
    );
    let mut r = e.into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
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
    served_by: std::sync::Mutex<Option<String>>,
    /// `X-Request-Id` (the client's, or the one the gateway gave the request), passed to nodes.
    pub request_id: String,
    /// The request came over TLS (the answer's cookies get `Secure`).
    pub over_tls: bool,
}

impl Ctx {
    fn caller(&self) -> Option<pb::Caller> {
        Some(pb::Caller {
            user: self.user.clone(),
            admin: self.admin,
        })
    }

    fn read(&self, stale: bool) -> Option<ReadOptions> {
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

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
        let token = crate::ui::request_token(headers);
        let (user, admin) = if state.config.authorization_enabled {
            let token = token
                .ok_or_else(|| ApiError::new(code::UNAUTHORIZED, auth::AuthError::Missing.to_string()))?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
            let user = auth::verify_token(&state.key, &token, now, state.config.max_token_lifetime_seconds)
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
            over_tls: crate::ui::over_tls(state, &parts.extensions),
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
    async fn call<T, F, Fut>(&self, ctx: &Ctx, retry: bool, call: F) -> Result<T, ApiError>
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
    async fn call_first<T, F, Fut>(
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

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_timeout_seconds)
    }
}

/// Calls `$method` with a clone of `$req` on the client's node, retrying on the next node when
/// `$retry` allows (see [`AppState::call`]).
macro_rules! on_node {
    ($s:expr, $ctx:expr, $retry:expr, $method:ident, $req:expr, $timeout:expr) => {
        $s.call($ctx, $retry, |mut c| {
            let r = for_request($ctx, request($req.clone(), $timeout));
            async move { c.$method(r).await }
        })
    };
}

/// [`on_node!`] for a server stream, through [`AppState::call_first`]: the stream's first item
/// (or `None`) and the rest.
macro_rules! first_on_node {
    ($s:expr, $ctx:expr, $retry:expr, $method:ident, $req:expr, $timeout:expr) => {
        $s.call_first($ctx, $retry, |mut c| {
            let r = for_request($ctx, request($req.clone(), $timeout));
            async move { c.$method(r).await }
        })
    };
}

fn request<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Carries the HTTP request's id to the node, whose log lines about it then name it.
fn for_request<T>(ctx: &Ctx, mut r: tonic::Request<T>) -> tonic::Request<T> {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(ctx.request_id.as_str()) {
        if !ctx.request_id.is_empty() {
            r.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
    }
    r
}

/// Adds the headers every answer carries: the applied index (also as a cookie) and, for a new
/// client, its `launcher-node` cookie.
fn finish(state: &AppState, ctx: &Ctx, index: u64, mut resp: Response) -> Response {
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

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---------------------------------------------------------------------------------------------
// Routes.

/// Gives every answer an `X-Launcher-Index`, including those no route produced (404, 405,
/// rejected requests, the OpenAPI document): the highest index a node was seen to apply.
pub async fn index_header(State(s): State<Arc<AppState>>, mut resp: Response) -> Response {
    if !resp.headers().contains_key(INDEX_HEADER) {
        resp.headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(s.pool.highest_applied()));
    }
    resp
}

/// `GET /status`: cluster health, unauthenticated.
async fn status(State(s): State<Arc<AppState>>) -> Response {
    let nodes = s.pool.nodes();
    let mut reply = None;
    // Ask healthy nodes first; any answer describes the whole cluster (it asks the leader).
    let mut order: Vec<_> = nodes.iter().collect();
    order.sort_by_key(|n| !n.healthy);
    for n in order {
        let r = s
            .pool
            .client(&n.addr)
            .status(request(StatusRequest {}, Some(Duration::from_secs(2))))
            .await;
        if let Ok(r) = r {
            reply = Some(r.into_inner());
            break;
        }
    }
    let body = match reply {
        Some(st) => serde_json::json!({
            "status": st.status,
            "leader": st.leader,
            "appliedIndex": st.applied_index,
            "nodes": st.nodes.iter().map(|n| serde_json::json!({
                "id": n.id, "address": n.address, "role": n.role, "healthy": n.healthy,
                "appliedIndex": n.applied_index, "voter": n.voter, "draining": n.draining,
            })).collect::<Vec<_>>(),
            "version": st.version,
        }),
        None => serde_json::json!({
            "status": "Red",
            "leader": 0,
            "appliedIndex": 0,
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "id": n.id, "address": n.addr, "role": "unknown", "healthy": false,
                "appliedIndex": n.applied_index,
            })).collect::<Vec<_>>(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    };
    let index = body["appliedIndex"].as_u64().unwrap_or(0);
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(INDEX_HEADER, HeaderValue::from(index));
    r
}

/// `GET /clusters`.
async fn clusters(State(s): State<Arc<AppState>>, ctx: Ctx) -> Result<Response, ApiError> {
    let t = s.timeout();
    let reply = s
        .call(&ctx, true, |mut c| {
            let r = request(
                ClusterInfoRequest {
                    caller: ctx.caller(),
                    cluster: String::new(),
                },
                Some(t),
            );
            async move { c.cluster_info(r).await }
        })
        .await?;
    Ok(finish(&s, &ctx, 0, json_bytes(StatusCode::OK, reply.clusters)))
}

/// `POST /jobs`: submit. The gateway gives every submit an Idempotency-Key (the client's, else
/// its own), so retrying it on another node never creates a second job.
async fn submit_job(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body_bytes(&s, body).await?;
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::new(code::INVALID, "Idempotency-Key must be visible ASCII"))?
            .trim()
            .to_string(),
        None => String::new(),
    };
    // An empty key is no key: the gateway's own makes its retries safe either way.
    let key = if key.is_empty() {
        format!("gw-{}", uuid::Uuid::new_v4())
    } else {
        key
    };
    let job = body.to_vec();
    let t = s.timeout();
    let reply = s
        .call(&ctx, true, |mut c| {
            let r = request(
                SubmitJobRequest {
                    caller: ctx.caller(),
                    job: job.clone(),
                    idempotency_key: key.clone(),
                },
                Some(t),
            );
            async move { c.submit_job(r).await }
        })
        .await?;
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        json_bytes(StatusCode::CREATED, reply.job),
    ))
}

/// The request body, or 413 with our error body when it is over `max-request-body-bytes`
/// (the limit layer stops reading there).
/// How much of an oversize body is read and thrown away before the 413 is sent, so that a
/// client still writing its body reads the answer instead of a reset connection. Beyond this
/// (or [`DRAIN_DEADLINE`]) the connection is closed instead.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// How long an oversize body may take to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a request body of at most `max-request-body-bytes`: 413 beyond it (after draining up
/// to [`DRAIN_BYTES`] of the rest), 400 when the body cannot be read.
pub(crate) async fn body_bytes(s: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = s.config.max_request_body_bytes;
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

fn too_large(s: &AppState) -> ApiError {
    ApiError::new(
        code::TOO_LARGE,
        format!(
            "the request body is larger than {} bytes (max-request-body-bytes)",
            s.config.max_request_body_bytes
        ),
    )
}

/// Query parameters of `GET /jobs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    tags: Option<String>,
    statuses: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    fields: Option<String>,
    user: Option<String>,
    consistency: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

fn split(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn stale(consistency: &Option<String>) -> Result<bool, ApiError> {
    match consistency.as_deref() {
        None | Some("") | Some("linearizable") => Ok(false),
        Some("stale") => Ok(true),
        Some(other) => Err(ApiError::new(
            code::INVALID,
            format!("consistency must be 'stale' or 'linearizable', not '{other}'"),
        )),
    }
}

fn query<T: serde::de::DeserializeOwned + Default>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(code::INVALID, format!("bad query parameters: {}", e.body_text())))
}

/// `GET /jobs`: the listing, streamed as one JSON array, all at one applied index.
async fn list_jobs(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = ListJobsRequest {
        caller: ctx.caller(),
        user: q.user.clone().unwrap_or_default(),
        tags: split(&q.tags),
        statuses: split(&q.statuses),
        start_time: q.start_time.clone().unwrap_or_default(),
        end_time: q.end_time.clone().unwrap_or_default(),
        fields: split(&q.fields),
        read: ctx.read(stale(&q.consistency)?),
        after: q.after.clone().unwrap_or_default(),
        limit: q.limit.unwrap_or(0),
    };
    let t = s.timeout();
    // The first chunk carries the index; the rest streams behind it.
    let (first, stream) = first_on_node!(s, &ctx, true, list_jobs, req, Some(t)).await?;
    let first = first.ok_or_else(|| ApiError::new(code::UNAVAILABLE, "the node ended the listing early"))?;
    let index = first.applied_index;
    let body = listing_body(first.jobs, stream);
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response();
    Ok(finish(&s, &ctx, index, resp))
}

/// The JSON array of a listing: the jobs of the first chunk, then those of each chunk the node
/// streams behind it.
fn listing_body(
    first: Vec<Vec<u8>>,
    stream: impl Stream<Item = Result<pb::JobChunk, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut started = false;
    let mut sep = move || {
        let s = if started { "," } else { "" };
        started = true;
        s
    };
    // The jobs of the first chunk went with the status line's index; they open the array.
    let first = futures::stream::iter([Ok(pb::JobChunk {
        jobs: first,
        applied_index: 0,
    })]);
    // The status line has gone out: a failure midway aborts the body (HTTP/1.1 ends without
    // its last chunk, HTTP/2 resets the stream), so the client sees an incomplete answer
    // instead of a well-formed but truncated listing.
    let jobs = first.chain(stream).map(move |chunk| match chunk {
        Ok(c) => {
            let mut out = Vec::new();
            for j in c.jobs {
                out.extend_from_slice(sep().as_bytes());
                out.extend_from_slice(&j);
            }
            Ok(Bytes::from(out))
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing stream failed midway; aborting the answer");
            Err(std::io::Error::other(ApiError::from(e).message))
        }
    });
    futures::stream::iter([Ok(Bytes::from_static(b"["))])
        .chain(jobs)
        .chain(futures::stream::iter([Ok(Bytes::from_static(b"]"))]))
}

/// Query of single-job reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    fields: Option<String>,
    consistency: Option<String>,
}

/// `GET /jobs/{id}`.
async fn get_job(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = GetJobRequest {
        caller: ctx.caller(),
        id,
        fields: split(&q.fields),
        read: ctx.read(stale(&q.consistency)?),
    };
    let t = s.timeout();
    let reply = on_node!(s, &ctx, true, get_job, req, Some(t)).await?;
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        json_bytes(StatusCode::OK, reply.job),
    ))
}

/// `DELETE /jobs/{id}`.
async fn delete_job(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let req = JobRequest {
        caller: ctx.caller(),
        id,
        read: ctx.read(false),
    };
    let t = s.timeout();
    // Deleting twice is harmless, so a retry on another node is safe.
    let reply = on_node!(s, &ctx, true, delete_job, req, Some(t)).await?;
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// Body of `POST /jobs/{id}/control`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    operation: String,
}

/// `POST /jobs/{id}/control`. Never retried on another node.
async fn control_job(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body_bytes(&s, body).await?;
    // An object only: serde would also read the struct from an array (`["stop"]`).
    let b: ControlBody = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        .and_then(|map| serde_json::from_value(serde_json::Value::Object(map)))
        .map_err(|e| {
            ApiError::new(
                code::INVALID,
                format!("the body must be {{\"operation\":\"suspend|resume|stop|kill|cancel\"}}: {e}"),
            )
        })?;
    let req = ControlJobRequest {
        caller: ctx.caller(),
        id,
        operation: b.operation,
    };
    let t = s.timeout() + Duration::from_secs(10);
    let reply = on_node!(s, &ctx, false, control_job, req, Some(t)).await?;
    let body = serde_json::json!({
        "statusMessage": reply.status_message,
        "operationComplete": reply.operation_complete,
    });
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        axum::Json(body).into_response(),
    ))
}

/// Query of the streaming routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    stream: Option<bool>,
}

/// `GET /jobs/{id}/status[?stream=true]`: one JSON object, or Server-Sent Events until the job
/// ends or the client goes away (dropping the response drops the node stream).
async fn job_status(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = JobRequest {
        caller: ctx.caller(),
        id,
        read: ctx.read(false),
    };
    // The node sends the job's current status at once, so waiting for it costs nothing and
    // gives the answer its index.
    let (first, stream) = first_on_node!(s, &ctx, true, stream_status, req, None).await?;
    let first = first.ok_or_else(|| ApiError::new(code::NOT_FOUND, "the job is gone"))?;
    let index = first.applied_index;
    Ok(if q.stream.unwrap_or(false) {
        let items = futures::stream::iter([Ok(first)]).chain(stream);
        events(&s, &ctx, index, items, "status", |ev| &ev.event)
    } else {
        one(&s, &ctx, index, &first.event)
    })
}

/// One JSON object as the whole answer.
fn one(s: &AppState, ctx: &Ctx, index: u64, json: &[u8]) -> Response {
    finish(s, ctx, index, json_bytes(StatusCode::OK, json.to_vec()))
}

/// Server-Sent Events named `name`, one per item, until the node ends the stream or the client
/// leaves: dropping the response drops the node stream, which cancels it at the node and the
/// plugin. The status line and headers go out at once, before any item: a stream of a job that
/// has nothing to report yet is open, not hanging. A failure after that is an `error` event
/// with the usual error body.
fn events<T: Send + 'static>(
    s: &AppState,
    ctx: &Ctx,
    index: u64,
    items: impl Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    name: &'static str,
    data: fn(&T) -> &[u8],
) -> Response {
    let open = s.metrics.open_stream(name);
    let events = items.map(move |item| -> Result<Event, Infallible> {
        let _open = &open;
        Ok(match item {
            Ok(item) => Event::default()
                .event(name)
                .data(String::from_utf8_lossy(data(&item))),
            Err(e) => Event::default()
                .event("error")
                .data(ApiError::from(e).body().to_string()),
        })
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    finish(s, ctx, index, sse.into_response())
}

/// Query of `GET /jobs/{id}/output`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    follow: Option<bool>,
}

/// `GET /jobs/{id}/output?type=stdout|stderr|both&follow=true`: text/plain chunks.
async fn job_output(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = OutputRequest {
        caller: ctx.caller(),
        id,
        output_type: q.kind.unwrap_or_else(|| "stdout".into()),
        follow: q.follow.unwrap_or(false),
    };
    let follow = req.follow;
    // Without `follow` the node sends what there is and ends the stream soon after, so the
    // answer waits for the first chunk: a failure there (the plugin has no output for the job)
    // is the answer's status. With `follow` the job may print nothing for hours; the headers
    // go out at once and later failures abort the body.
    let (first, stream) = if follow {
        (None, on_node!(s, &ctx, true, stream_output, req, None).await?)
    } else {
        first_on_node!(s, &ctx, true, stream_output, req, None).await?
    };
    let open = s.metrics.open_stream("output");
    let chunks =
        futures::stream::iter(first.map(Ok))
            .chain(stream)
            .map(move |c| -> Result<Bytes, std::io::Error> {
                let _open = &open;
                // A failure midway must not look like the end of the output: the error ends the
                // body without its final chunk, so the client sees an incomplete answer.
                c.map(|c| Bytes::from(c.output)).map_err(|e| {
                    tracing::warn!(error = %e, "output stream failed midway");
                    std::io::Error::other(ApiError::from(e).message)
                })
            });
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(chunks),
    )
        .into_response();
    Ok(finish(&s, &ctx, 0, resp))
}

/// `GET /jobs/{id}/resource-utilization[?stream=true]`.
async fn resource_use(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = JobRequest {
        caller: ctx.caller(),
        id,
        read: ctx.read(false),
    };
    if q.stream.unwrap_or(false) {
        let stream = on_node!(s, &ctx, true, stream_resource_use, req, None).await?;
        return Ok(events(&s, &ctx, 0, stream, "resourceUtilization", |u| &u.usage));
    }
    // One sample: a job that has not started has none to give, and waiting for it could take
    // as long as the job stays queued.
    let t = s.timeout();
    let get = GetJobRequest {
        caller: req.caller.clone(),
        id: req.id.clone(),
        fields: vec!["status".into()],
        read: req.read,
    };
    let job = on_node!(s, &ctx, true, get_job, get, Some(t)).await?;
    let current = serde_json::from_slice::<serde_json::Value>(&job.job)
        .ok()
        .and_then(|j| j.get("status").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    if current == "Pending" {
        return Err(ApiError::new(
            code::JOB_NOT_RUNNING,
            format!(
                "job {} is Pending: it reports resource use once it runs (add stream=true to wait for it)",
                req.id
            ),
        ));
    }
    let (sample, _) = first_on_node!(s, &ctx, true, stream_resource_use, req, None).await?;
    let sample = sample.ok_or_else(|| ApiError::new(code::NOT_FOUND, "no resource use was reported"))?;
    Ok(one(&s, &ctx, 0, &sample.usage))
}

/// `GET /jobs/{id}/network`.
async fn job_network(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let req = JobRequest {
        caller: ctx.caller(),
        id,
        read: ctx.read(false),
    };
    let t = s.timeout();
    let reply = on_node!(s, &ctx, true, get_job_network, req, Some(t)).await?;
    let body = serde_json::json!({"host": reply.host, "ipAddresses": reply.ip_addresses});
    Ok(finish(&s, &ctx, 0, axum::Json(body).into_response()))
}

/// `GET /members` (admins).
async fn members(State(s): State<Arc<AppState>>, ctx: Ctx) -> Result<Response, ApiError> {
    let t = s.timeout();
    let reply = s
        .call(&ctx, true, |mut c| {
            let r = for_request(&ctx, request(MembersRequest { caller: ctx.caller() }, Some(t)));
            async move { c.members(r).await }
        })
        .await?;
    let body: Vec<serde_json::Value> = reply
        .members
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id, "address": n.address, "role": n.role, "healthy": n.healthy,
                "appliedIndex": n.applied_index, "voter": n.voter, "draining": n.draining,
            })
        })
        .collect();
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        axum::Json(body).into_response(),
    ))
}

/// Query of `POST /members/{id}/drain`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainQuery {
    /// `false` puts a drained node back in rotation.
    draining: Option<bool>,
}

fn member_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            code::INVALID,
            format!("'{id}' is not a node id (a positive integer)"),
        )
    })
}

/// `POST /members/{id}/drain[?draining=false]` (admins).
async fn drain_member(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Result<Query<DrainQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = DrainRequest {
        caller: ctx.caller(),
        node_id: member_id(&id)?,
        draining: q.draining.unwrap_or(true),
    };
    let t = s.timeout();
    let reply = on_node!(s, &ctx, true, drain, req, Some(t)).await?;
    let body = serde_json::json!({"id": req.node_id, "draining": req.draining});
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        axum::Json(body).into_response(),
    ))
}

/// `DELETE /members/{id}` (admins).
async fn remove_member(
    State(s): State<Arc<AppState>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let req = LeaveRequest {
        caller: ctx.caller(),
        node_id: member_id(&id)?,
    };
    let t = s.timeout();
    let reply = on_node!(s, &ctx, true, leave, req, Some(t)).await?;
    Ok(finish(
        &s,
        &ctx,
        reply.applied_index,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// `GET /snapshot` (admins): a consistent snapshot of the job table, as `snapshot save` writes it
/// (`launcher-node recover --from FILE` restores one). The node exports it at a linearizable
/// index and the gateway passes the parts through as they come; a failure midway aborts the
/// body, so a truncated download never looks complete.
async fn save_snapshot(State(s): State<Arc<AppState>>, ctx: Ctx) -> Result<Response, ApiError> {
    let req = SaveSnapshotRequest { caller: ctx.caller() };
    let stream = on_node!(s, &ctx, true, save_snapshot, req, None).await?;
    let parts = stream.map(|p| {
        p.map(|p| Bytes::from(p.data))
            .map_err(|e| std::io::Error::other(ApiError::from(e).message))
    });
    let resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"launcher-snapshot.bin\"",
            ),
        ],
        Body::from_stream(parts),
    )
        .into_response();
    Ok(finish(&s, &ctx, 0, resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::fake::{Answer, FakeNode};

    /// A name that no longer resolves, as a killed container's.
    const GONE: &str = "no-such-node.invalid:5560";

    fn state(nodes: &[String], request_timeout_seconds: u64) -> AppState {
        let mut config = GatewayConfig::new(std::path::PathBuf::from("/etc/rstudio"));
        config.request_timeout_seconds = request_timeout_seconds;
        AppState {
            config,
            key: vec![7; 32],
            admins: Arc::new(Admins::new(Vec::new(), None)),
            pool: Pool::new(nodes, "Launcher-Internal abc"),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    /// A client whose rendezvous order over `nodes` starts with `first`.
    fn client_first(nodes: &[String], first: &str) -> Ctx {
        let client = (0..)
            .map(|i| format!("client{i}"))
            .find(|c| crate::routing::rendezvous_order(c, nodes.iter().map(String::as_str))[0] == first)
            .unwrap();
        Ctx {
            user: "alice".into(),
            admin: false,
            client,
            new_client: false,
            min_index: 0,
            served_by: std::sync::Mutex::new(None),
            request_id: String::new(),
            over_tls: false,
        }
    }

    fn reachable(s: &AppState, addr: &str) -> bool {
        s.pool.nodes().iter().any(|n| n.addr == addr && n.reachable)
    }

    fn get(ctx: &Ctx) -> GetJobRequest {
        GetJobRequest {
            caller: ctx.caller(),
            id: "j1".into(),
            fields: Vec::new(),
            read: ctx.read(false),
        }
    }

    /// While the cluster elects (every node answers Unavailable), a read and a keyed submit
    /// pass the node that no longer resolves at once and go round the others until one
    /// answers: the client sees the answer, not the election.
    #[tokio::test]
    async fn reads_and_keyed_submits_ride_out_an_election_past_a_vanished_node() {
        let (a, b) = (
            FakeNode::start(Answer::Ok).await,
            FakeNode::start(Answer::Ok).await,
        );
        let nodes = vec![GONE.to_string(), a.addr.clone(), b.addr.clone()];
        let s = state(&nodes, 120);
        let ctx = client_first(&nodes, GONE);
        a.no_leader_for(3);
        b.no_leader_for(3);
        let req = get(&ctx);
        let reply = on_node!(s, &ctx, true, get_job, req, Some(Duration::from_secs(5)))
            .await
            .expect("the read outlives the election");
        assert_eq!(reply.job, br#"{"id":"j1"}"#);
        assert_eq!(
            a.calls() + b.calls(),
            7,
            "three rounds of Unavailable, then one answer"
        );
        assert!(!reachable(&s, GONE), "the vanished node is out of rotation");
        assert_eq!(
            s.pool.candidates(&ctx.client).last().map(String::as_str),
            Some(GONE)
        );

        a.no_leader_for(2);
        b.no_leader_for(2);
        let submit = SubmitJobRequest {
            caller: ctx.caller(),
            job: br#"{"name":"x"}"#.to_vec(),
            idempotency_key: "k1".into(),
        };
        let reply = on_node!(s, &ctx, true, submit_job, submit, Some(Duration::from_secs(5)))
            .await
            .expect("the submit outlives the election");
        assert!(reply.created);
    }

    /// A listing whose node fails before the first chunk (it died after taking the call) is
    /// a failed call like any other: the next node answers it.
    #[tokio::test]
    async fn a_stream_that_breaks_before_its_first_item_is_retried() {
        let (a, b) = (
            FakeNode::start(Answer::Broken).await,
            FakeNode::start(Answer::Ok).await,
        );
        let nodes = vec![a.addr.clone(), b.addr.clone()];
        let s = state(&nodes, 120);
        let ctx = client_first(&nodes, &a.addr);
        let req = ListJobsRequest {
            caller: ctx.caller(),
            read: ctx.read(false),
            ..Default::default()
        };
        let (first, _) = first_on_node!(s, &ctx, true, list_jobs, req, Some(Duration::from_secs(5)))
            .await
            .expect("the listing comes from the other node");
        assert_eq!(first.map(|c| c.applied_index), Some(7));
        assert_eq!((a.calls(), b.calls()), (1, 1));
        assert!(!reachable(&s, &a.addr), "the broken node is out of rotation");
    }

    /// Control requests are not retried once a node may have seen them (docs/api.md): an
    /// Unavailable answer does not move them to another node. One that could not be sent at
    /// all (its node's name does not resolve) goes to the next node.
    #[tokio::test]
    async fn control_requests_are_retried_only_when_never_sent() {
        let (a, b) = (
            FakeNode::start(Answer::Ok).await,
            FakeNode::start(Answer::Ok).await,
        );
        let nodes = vec![GONE.to_string(), a.addr.clone(), b.addr.clone()];
        let s = state(&nodes, 120);
        let control = |ctx: &Ctx| ControlJobRequest {
            caller: ctx.caller(),
            id: "j1".into(),
            operation: "kill".into(),
        };
        let ctx = client_first(&nodes, &a.addr);
        a.no_leader_for(1);
        let req = control(&ctx);
        let e = on_node!(s, &ctx, false, control_job, req, Some(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(e.code, code::UNAVAILABLE);
        assert_eq!((a.calls(), b.calls()), (1, 0));
        let ctx = client_first(&nodes, GONE);
        let req = control(&ctx);
        on_node!(s, &ctx, false, control_job, req, Some(Duration::from_secs(5)))
            .await
            .expect("the next node takes a request that never left");
        assert_eq!(
            a.calls() + b.calls(),
            2,
            "exactly one more node was tried ({} {})",
            a.calls(),
            b.calls()
        );
    }

    /// A cluster that stays without a leader gets an answer within the failover window
    /// (here the request timeout, 1 s): Unavailable, after more than one round.
    #[tokio::test]
    async fn retries_end_with_the_failover_window() {
        let (a, b) = (
            FakeNode::start(Answer::NoLeader).await,
            FakeNode::start(Answer::NoLeader).await,
        );
        let nodes = vec![a.addr.clone(), b.addr.clone()];
        let s = state(&nodes, 1);
        let ctx = client_first(&nodes, &a.addr);
        let started = std::time::Instant::now();
        let req = get(&ctx);
        let e = on_node!(s, &ctx, true, get_job, req, Some(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(e.code, code::UNAVAILABLE);
        assert!(a.calls() > 2 && b.calls() > 2, "{} {}", a.calls(), b.calls());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // Unavailable answers come from live nodes: they stay in rotation.
        assert!(reachable(&s, &a.addr) && reachable(&s, &b.addr));
    }

    fn chunk(jobs: &[&str]) -> Result<pb::JobChunk, tonic::Status> {
        Ok(pb::JobChunk {
            jobs: jobs.iter().map(|j| j.as_bytes().to_vec()).collect(),
            applied_index: 7,
        })
    }

    async fn collect(
        body: impl Stream<Item = Result<Bytes, std::io::Error>>,
    ) -> (Vec<u8>, Option<std::io::Error>) {
        let mut out = Vec::new();
        let mut body = std::pin::pin!(body);
        while let Some(part) = body.next().await {
            match part {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_listing_is_one_array_over_every_chunk() {
        let rest = futures::stream::iter([chunk(&["{\"id\":2}"]), chunk(&[]), chunk(&["{\"id\":3}"])]);
        let (bytes, err) = collect(listing_body(vec![b"{\"id\":1}".to_vec()], rest)).await;
        assert!(err.is_none());
        assert_eq!(bytes, b"[{\"id\":1},{\"id\":2},{\"id\":3}]");
        let (bytes, _) = collect(listing_body(vec![], futures::stream::iter([]))).await;
        assert_eq!(bytes, b"[]");
    }

    #[tokio::test]
    async fn a_listing_that_fails_midway_is_aborted_not_closed() {
        let rest = futures::stream::iter([
            chunk(&["{\"id\":2}"]),
            Err(tonic::Status::unavailable("node went away")),
            chunk(&["{\"id\":3}"]),
        ]);
        let (bytes, err) = collect(listing_body(vec![b"{\"id\":1}".to_vec()], rest)).await;
        assert!(err.is_some(), "the body must end in an error");
        assert_eq!(
            bytes, b"[{\"id\":1},{\"id\":2}",
            "no closing bracket after a failure"
        );
    }
}
