//! The Launcher HTTP API (docs/api.md): routes, authentication, isolation hand-off to the nodes,
//! sticky routing with retries, and the headers every answer carries.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{Stream, StreamExt};
use launcher_proto::launcher::{
    self as pb, ClusterInfoRequest, ControlJobRequest, DrainRequest, GetJobRequest, JobRequest, LeaveRequest,
    ListJobsRequest, MembersRequest, OutputRequest, SaveSnapshotRequest, StatusRequest, SubmitJobRequest,
};
use serde::Deserialize;

use crate::context::{
    body_bytes, finish, first_on_node, for_request, json_bytes, on_node, request, AppState, Ctx,
    IDEMPOTENCY_HEADER, INDEX_HEADER,
};
use crate::error::{code, ApiError};

/// The router with every route of docs/api.md.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/metrics", get(metrics))
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

// ---------------------------------------------------------------------------------------------
// Routes.

/// `GET /metrics`, unauthenticated; 404 when `enable-metrics=0`.
async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    if !s.config.server.enable_metrics {
        return ApiError::new(
            code::NOT_FOUND,
            "metrics are disabled on this gateway (enable-metrics=0)",
        )
        .into_response();
    }
    let nodes = s.pool.nodes();
    let healthy = nodes.iter().filter(|n| n.healthy).count();
    let text = s.metrics.render(healthy, nodes.len() - healthy);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
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
            let r = for_request(
                &ctx,
                request(
                    ClusterInfoRequest {
                        caller: ctx.caller(),
                        cluster: String::new(),
                    },
                    Some(t),
                ),
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
            let r = for_request(
                &ctx,
                request(
                    SubmitJobRequest {
                        caller: ctx.caller(),
                        job: job.clone(),
                        idempotency_key: key.clone(),
                    },
                    Some(t),
                ),
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
    use crate::auth::Admins;
    use crate::config::GatewayConfig;
    use crate::routing::fake::{Answer, FakeNode};
    use crate::routing::Pool;

    /// A name that no longer resolves, as a killed container's.
    const GONE: &str = "no-such-node.invalid:5560";

    fn state(nodes: &[String], request_timeout_seconds: u64) -> AppState {
        let mut config = GatewayConfig::new(std::path::PathBuf::from("/etc/rstudio"));
        config.server.request_timeout_seconds = request_timeout_seconds;
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
