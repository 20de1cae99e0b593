//! Property tests of what the gateway reads from clients and from its configuration file: request
//! bodies (`POST /jobs`, `POST /jobs/{id}/control`, `POST /ui/login`), bearer tokens, and
//! `launcher.conf`. Whatever arrives, the gateway answers, never panics, and never blames itself
//! (5xx) for the client's bytes.
//!
//! The router is driven in process with no node configured, so every answer comes from the
//! gateway itself. A `POST /jobs` body is not decoded by the gateway (it is passed to a node,
//! which decodes and checks it), so a well-authenticated submit of any body within the size
//! limit gets 503 "no node" here; its decoding is covered by the node's own property tests.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use launcher_gateway::api::router;
use launcher_gateway::auth::{internal_credential, mint_token, Admins};
use launcher_gateway::config::{self, GatewayConfig};
use launcher_gateway::context::AppState;
use launcher_gateway::metrics::Metrics;
use launcher_gateway::routing::Pool;
use proptest::prelude::*;
use tower::ServiceExt;

const CASES: u32 = 256;
/// Room for JSON nested 10000 deep, so such bodies reach the decoder rather than the size limit.
const MAX_BODY: usize = 128 * 1024;
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The gateway's router with no node, authorization on, the body limit the server sets, and a
/// `max-request-body-bytes` of [`MAX_BODY`].
fn app() -> axum::Router {
    let mut config = GatewayConfig::new(std::env::temp_dir());
    config.server.max_request_body_bytes = MAX_BODY;
    let state = Arc::new(AppState {
        config,
        key: KEY.to_vec(),
        admins: Arc::new(Admins::new(Vec::new(), None)),
        pool: Pool::new(&[], &internal_credential(KEY)),
        metrics: Arc::new(Metrics::new()),
    });
    // As in the server's stack (server.rs): read one byte past the limit so it can be told apart.
    router(state).layer(DefaultBodyLimit::max(MAX_BODY + 1))
}

fn token() -> String {
    let expiry = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 3600;
    mint_token(KEY, "alice", expiry)
}

/// Sends one request and returns the status and the body.
fn send(req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = app().oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("the answer's body");
        (status, body.to_vec())
    })
}

fn post(path: &str, content_type: Option<&str>, auth: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::post(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    if let Some(t) = auth {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("request")
}

/// The answer is the gateway's error body with the status's own code.
fn error_code(body: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

/// JSON nested `depth` deep: arrays (kind 0), objects (1), or both in turn (2).
fn nested(depth: usize, kind: u8) -> String {
    let array = |i: usize| match kind {
        0 => true,
        1 => false,
        _ => i.is_multiple_of(2),
    };
    let mut s = String::new();
    for i in 0..depth {
        s.push_str(if array(i) { "[" } else { "{\"a\":" });
    }
    s.push('1');
    for i in (0..depth).rev() {
        s.push(if array(i) { ']' } else { '}' });
    }
    s
}

/// JSON values of every shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["stop", "kill", "suspend", "resume", "cancel", "", "x"])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![Just("operation".to_string()), any::<String>()], inner),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A body: raw bytes, text, or JSON of any shape.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        any::<String>().prop_map(String::into_bytes),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("a Value serialises")),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("application/problem+json; charset=utf-8"),
    ])
}

/// What the control route accepts: `{"operation": <string>}` and nothing else (not serde's
/// positional form of the same struct, `[<string>]`).
fn is_control_body(body: &[u8]) -> bool {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m.len() == 1 && m.get("operation").is_some_and(Value::is_string),
        _ => false,
    }
}

#[test]
fn a_control_body_is_an_object() {
    let (status, answer) = send(post(
        "/jobs/j1/control",
        None,
        Some(&token()),
        br#"["stop"]"#.to_vec(),
    ));
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(error_code(&answer), Some(2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn control_bodies_are_refused_as_the_clients_fault(body in body(), ct in content_type()) {
        let valid = is_control_body(&body);
        let (status, answer) = send(post("/jobs/j1/control", ct, Some(&token()), body));
        if valid {
            // Decoded and passed on: only the missing node stops it.
            prop_assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        } else {
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&answer));
            prop_assert_eq!(error_code(&answer), Some(2));
        }
    }

    #[test]
    fn login_bodies_are_refused_as_the_clients_fault(body in body(), ct in content_type()) {
        let (status, answer) = send(post("/ui/login", ct, None, body));
        prop_assert!(
            status.is_client_error(),
            "{status}: {}", String::from_utf8_lossy(&answer)
        );
        prop_assert!(error_code(&answer).is_some(), "not an error body: {}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn submit_bodies_never_make_the_gateway_fail(body in body(), ct in content_type()) {
        let (status, answer) = send(post("/jobs", ct, Some(&token()), body));
        // The body goes to a node unread; with none configured that is the only refusal.
        prop_assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&answer));
        prop_assert_eq!(error_code(&answer), Some(13));
    }

    #[test]
    fn deeply_nested_json_gets_a_4xx(depth in 10usize..10_000, kind in 0u8..3) {
        let deep = nested(depth, kind);
        for body in [deep.clone(), format!("{{\"operation\":{deep}}}")] {
            let (status, answer) =
                send(post("/jobs/j1/control", Some("application/json"), Some(&token()), body.clone().into_bytes()));
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&answer));
            let (status, answer) = send(post("/ui/login", Some("application/json"), None, body.clone().into_bytes()));
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&answer));
            // Unauthenticated, whatever the body: refused before it is read.
            let (status, answer) = send(post("/jobs", Some("application/json"), None, body.into_bytes()));
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&answer));
        }
    }

    #[test]
    fn bodies_over_the_limit_get_413(extra in 1usize..4096, byte in any::<u8>()) {
        let body = vec![byte; MAX_BODY + extra];
        for path in ["/jobs", "/jobs/j1/control", "/ui/login"] {
            let (status, answer) = send(post(path, Some("application/json"), Some(&token()), body.clone()));
            prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}: {}", path, String::from_utf8_lossy(&answer));
            prop_assert_eq!(error_code(&answer), Some(14));
        }
    }

    #[test]
    fn arbitrary_bearer_tokens_get_401(token in prop_oneof![
        any::<String>(),
        "[a-z]{0,8}\\|[0-9]{0,24}\\|[0-9a-f]{0,70}",
    ]) {
        let Ok(value) = header::HeaderValue::from_str(&format!("Bearer {token}")) else {
            // Not a header value at all: no client can send it.
            return Ok(());
        };
        let req = Request::get("/jobs")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .expect("request");
        let (status, answer) = send(req);
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn launcher_conf_never_panics_and_errors_name_lines_of_the_file(text in conf_text()) {
        let dir = std::env::temp_dir();
        match config::parse(&text, "launcher.conf", &dir, |_| None) {
            Ok(c) => {
                let _ = c.dump();
                let _ = c.validate();
            }
            Err(e) => {
                prop_assert!(!e.errors.is_empty());
                let lines = text.lines().count();
                for p in &e.errors {
                    prop_assert!(
                        p.line.is_none_or(|l| (1..=lines).contains(&l)),
                        "problem at line {:?} of a {lines}-line file: {p}", p.line
                    );
                }
            }
        }
    }
}

/// A line of `launcher.conf` as the gateway reads it (the `[server]` section; the nodes'
/// sections are skipped), or anything at all.
fn conf_line() -> impl Strategy<Value = String> {
    let headers = prop::sample::select(vec![
        "[server]",
        "[node]",
        "[cluster]",
        "[Server]",
        "[bogus]",
        "[server",
        "[]",
    ]);
    // The `[server]` keys, keys of the nodes' own section, and near misses.
    let mut fields: Vec<&str> = launcher_config::server::SERVER_KEYS
        .iter()
        .map(|k| k.name)
        .collect();
    fields.extend(["id", "grpc-address", "Port", "bogus", ""]);
    let keys = prop::sample::select(fields);
    let values = prop::sample::select(vec![
        "",
        "0",
        "1",
        "-1",
        "65535",
        "65536",
        "18446744073709551615",
        "18446744073709551616",
        "1.5",
        "true",
        "no",
        "maybe",
        "127.0.0.1:0",
        "[::1]:0",
        "a,b,,c",
        "/nonexistent/launcher-prop-test",
        "relative",
        "\u{0}",
    ]);
    prop_oneof![
        2 => headers.prop_map(str::to_string),
        6 => (keys, values, prop::sample::select(vec!["=", " = ", "=="]))
            .prop_map(|(k, v, eq)| format!("{k}{eq}{v}")),
        1 => Just(String::new()),
        1 => "\\PC{0,24}".prop_map(|j| format!("# {j}")),
        1 => any::<String>(),
    ]
}

fn conf_text() -> impl Strategy<Value = String> {
    let assembled = (
        prop::collection::vec(conf_line(), 0..30),
        prop::sample::select(vec!["\n", "\r\n"]),
    )
        .prop_map(|(lines, eol)| lines.join(eol));
    prop_oneof![3 => assembled, 1 => any::<String>()]
}
