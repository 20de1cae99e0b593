//! The gateway's `x-request-id`, carried through a node: the call being served keeps it at
//! hand (a task-local set by [`scope`]), and every call this node makes on its behalf (a write
//! forwarded to the leader, a request forwarded to a job's owner) passes it on, so the lines
//! of every node about one request carry the same `request_id`.

/// The request id header the gateway sets and nodes pass on.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The gateway's `x-request-id` of the call being served, if it had one.
    static REQUEST_ID: String;
}

/// Middleware: serves the call with its `x-request-id` at hand.
pub async fn scope(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match id {
        Some(id) => REQUEST_ID.scope(id, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// Puts the id of the call being served, if any, on `req`.
pub fn pass_on<T>(req: &mut tonic::Request<T>) {
    if let Ok(Ok(v)) = REQUEST_ID.try_with(|id| tonic::metadata::MetadataValue::try_from(id.as_str())) {
        req.metadata_mut().insert(REQUEST_ID_HEADER, v);
    }
}
