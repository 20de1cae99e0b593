//! `GET /openapi.json`: the OpenAPI 3 document of the whole HTTP API, shipped in the binary.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document (kept true by the conformance test in tests/).
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Serves the document.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
