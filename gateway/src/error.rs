//! The one place failures become HTTP responses: `{"error":{"code","name","message"}}` with the
//! status of docs/api.md.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Metadata key carrying the launcher error code on a failed node call.
pub const ERROR_CODE_HEADER: &str = "launcher-error-code";

/// Error codes of docs/api.md: (code, name, HTTP status). The numbers are a public contract.
const CODES: [(i32, &str, u16); 18] = [
    (0, "Unknown", 500),
    (1, "RequestNotSupported", 501),
    (2, "InvalidRequest", 400),
    (3, "JobNotFound", 404),
    (4, "PluginRestarted", 503),
    (5, "Timeout", 504),
    (6, "JobNotRunning", 409),
    (7, "JobOutputNotFound", 404),
    (8, "InvalidJobState", 409),
    (9, "JobControlFailure", 500),
    (10, "UnsupportedVersion", 400),
    (11, "Unauthorized", 401),
    (12, "Forbidden", 403),
    (13, "Unavailable", 503),
    (14, "PayloadTooLarge", 413),
    (15, "MountNotAllowed", 403),
    (16, "UnknownUser", 400),
    (17, "Overloaded", 503),
];

/// Stable codes the gateway itself uses.
pub mod code {
    pub const UNKNOWN: i32 = 0;
    pub const NOT_SUPPORTED: i32 = 1;
    pub const INVALID: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const JOB_NOT_RUNNING: i32 = 6;
    pub const UNAUTHORIZED: i32 = 11;
    pub const FORBIDDEN: i32 = 12;
    pub const UNAVAILABLE: i32 = 13;
    pub const TOO_LARGE: i32 = 14;
    pub const OVERLOADED: i32 = 17;
}

/// Seconds an Overloaded answer asks the client to wait (`Retry-After`): long enough for the
/// leader's queue to drain a batch, short enough not to idle a client needlessly.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u32 = 1;

/// A failure with a stable code and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i32,
    pub message: String,
}

impl ApiError {
    /// An error with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The name and HTTP status of the code.
    pub fn parts(&self) -> (&'static str, StatusCode) {
        let (_, name, status) = CODES
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .copied()
            .unwrap_or(CODES[0]);
        (
            name,
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
    }

    /// The JSON error body.
    pub fn body(&self) -> serde_json::Value {
        let (name, _) = self.parts();
        serde_json::json!({"error": {"code": self.code, "name": name, "message": self.message}})
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        match s
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        {
            Some(code) => ApiError::new(code, s.message()),
            // No launcher code: the node was not reached or failed below our service.
            None => match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    ApiError::new(
                        code::UNAVAILABLE,
                        format!("no node could answer: {}", s.message()),
                    )
                }
                tonic::Code::ResourceExhausted => ApiError::new(code::TOO_LARGE, s.message()),
                _ if broken_connection(&s) => ApiError::new(
                    code::UNAVAILABLE,
                    format!(
                        "the connection to the node broke during the request (its outcome is unknown: \
                         retry it, a submit under the same Idempotency-Key): {}",
                        s.message()
                    ),
                ),
                _ => ApiError::new(code::UNKNOWN, format!("node error: {}", s.message())),
            },
        }
    }
}

/// Whether `s` is a failure of the connection to the node (it died or reset the connection
/// mid-call), which tonic reports as Unknown or Internal with the transport error as source.
pub fn broken_connection(s: &tonic::Status) -> bool {
    if s.metadata().get(ERROR_CODE_HEADER).is_some() {
        return false;
    }
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a failed node call never left the gateway: the connection could not be made
/// (tonic's `ConnectError`: refused, unreachable, name lookup failed, connect deadline). Such a
/// request may go to another node even when it is not safe to repeat (a control request): no
/// node saw it.
pub fn never_sent(s: &tonic::Status) -> bool {
    if s.metadata().get(ERROR_CODE_HEADER).is_some() {
        return false;
    }
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// What a failed node call says about the node, which decides whether the gateway may try
/// another node and whether it takes this one out of rotation (docs/api.md, "Routing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The node could not be reached: its name did not resolve, its port refused or did not
    /// accept within the connect deadline, or the connection died under the call. A request
    /// that could not connect never left the gateway; one whose connection broke may have been
    /// acted on, which is why only requests safe to repeat are retried.
    Unreachable,
    /// The node answered Unavailable (code 13: no leader, no quorum, a read floor not reached):
    /// it did not act on the request, and another node may do better.
    Unavailable,
    /// No answer within the call's deadline.
    TimedOut,
    /// An answer: the request's result, whatever it says.
    Answered,
}

impl Failure {
    /// Classifies a failed node call.
    pub fn of(s: &tonic::Status) -> Failure {
        if let Some(code) = s
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        {
            return if code == code::UNAVAILABLE {
                Failure::Unavailable
            } else {
                Failure::Answered
            };
        }
        match s.code() {
            // tonic reports a connection that could not be made (name resolution included) as
            // Unavailable without a launcher code, as it does a connection whose keep-alive
            // pings went unanswered and a stream refused by a node that is going away.
            tonic::Code::Unavailable => Failure::Unreachable,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Failure::TimedOut,
            _ if broken_connection(s) => Failure::Unreachable,
            _ => Failure::Answered,
        }
    }

    /// Whether a request that is safe to repeat may go to another node.
    pub fn retryable(self) -> bool {
        self != Failure::Answered
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, status) = self.parts();
        let mut r = (status, axum::Json(self.body())).into_response();
        if self.code == code::OVERLOADED {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(OVERLOADED_RETRY_AFTER_SECONDS),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call to a port nobody listens on never left; an answer, or a plain status, may have.
    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let status = launcher_proto::launcher::launcher_client::LauncherClient::new(channel)
            .status(launcher_proto::launcher::StatusRequest {})
            .await
            .expect_err("nothing listens there");
        assert!(never_sent(&status), "{status:?}");
        assert!(!never_sent(&tonic::Status::unavailable("no leader")));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        assert!(!never_sent(&tonic::Status::from_error(Box::new(reset))));
    }

    #[test]
    fn codes_map_to_names_and_statuses() {
        let e = ApiError::new(3, "job x not found");
        assert_eq!(e.parts(), ("JobNotFound", StatusCode::NOT_FOUND));
        assert_eq!(e.body()["error"]["name"], "JobNotFound");
        assert_eq!(ApiError::new(14, "").parts().1, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::new(99, "").parts().0, "Unknown");
        let overloaded = ApiError::new(17, "queue full").into_response();
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overloaded.headers()[axum::http::header::RETRY_AFTER], "1");
        assert!(ApiError::new(13, "")
            .into_response()
            .headers()
            .get("retry-after")
            .is_none());
        for (i, (c, _, _)) in CODES.iter().enumerate() {
            assert_eq!(*c, i as i32, "codes are dense and ordered");
        }
    }

    #[test]
    fn node_statuses_keep_their_launcher_code() {
        let mut s = tonic::Status::not_found("job 7 not found");
        s.metadata_mut().insert(
            ERROR_CODE_HEADER,
            tonic::metadata::MetadataValue::from_static("3"),
        );
        assert_eq!(ApiError::from(s), ApiError::new(3, "job 7 not found"));
        let e = ApiError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(e.code, code::UNAVAILABLE);
    }

    #[test]
    fn failures_are_classified_by_what_they_say_of_the_node() {
        let coded = |code: &'static str, s: tonic::Status| {
            let mut s = s;
            s.metadata_mut().insert(
                ERROR_CODE_HEADER,
                tonic::metadata::MetadataValue::from_static(code),
            );
            s
        };
        // The node answered: Unavailable (13) may pass on another node, anything else is final.
        let no_leader = coded("13", tonic::Status::unavailable("no leader elected right now"));
        assert_eq!(Failure::of(&no_leader), Failure::Unavailable);
        assert!(Failure::of(&no_leader).retryable());
        let not_found = coded("3", tonic::Status::not_found("job j not found"));
        assert_eq!(Failure::of(&not_found), Failure::Answered);
        assert!(!Failure::of(&not_found).retryable());
        assert_eq!(
            Failure::of(&coded("5", tonic::Status::deadline_exceeded("plugin timeout"))),
            Failure::Answered,
            "a plugin's timeout is the node's answer"
        );
        // No connection (tonic's ConnectError, a DNS error included) or a broken one.
        let dns =
            tonic::Status::unavailable("cannot connect to node_1:5560: failed to lookup address information");
        assert_eq!(Failure::of(&dns), Failure::Unreachable);
        assert!(Failure::of(&dns).retryable());
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        assert_eq!(
            Failure::of(&tonic::Status::from_error(Box::new(reset))),
            Failure::Unreachable
        );
        // No answer in time: the gateway's own deadline (Cancelled) or the node's.
        assert_eq!(
            Failure::of(&tonic::Status::cancelled("Timeout expired")),
            Failure::TimedOut
        );
        assert_eq!(
            Failure::of(&tonic::Status::deadline_exceeded("deadline")),
            Failure::TimedOut
        );
        assert_eq!(Failure::of(&tonic::Status::unknown("a bug")), Failure::Answered);
        // Each class keeps the HTTP answer it had: retryable ones are 503 (code 13).
        for s in [no_leader, dns, tonic::Status::cancelled("Timeout expired")] {
            assert_eq!(ApiError::from(s).code, code::UNAVAILABLE);
        }
    }

    #[test]
    fn a_connection_broken_mid_call_is_unavailable_not_unknown() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let s = tonic::Status::from_error(Box::new(reset));
        assert_eq!(s.code(), tonic::Code::Unknown, "what tonic makes of it");
        assert!(broken_connection(&s));
        let e = ApiError::from(s);
        assert_eq!(e.code, code::UNAVAILABLE);
        assert!(e.message.contains("Idempotency-Key"), "{}", e.message);
        // An Unknown answer the node's service gave stays Unknown.
        assert!(!broken_connection(&tonic::Status::unknown("a bug")));
        assert_eq!(
            ApiError::from(tonic::Status::unknown("a bug")).code,
            code::UNKNOWN
        );
    }
}

/// Why the gateway could not start, or stopped: for the operator to act on (the binary prints
/// it and exits non-zero). Requests' own failures are [`ApiError`]s.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, the key or the TLS files cannot be used.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound or failed while serving.
    #[error(transparent)]
    Listen(#[from] crate::listeners::ListenError),
    /// Giving up root for `server-user` failed.
    #[error("{0}")]
    Privileges(String),
    /// The gateway stopped unexpectedly.
    #[error("{0}")]
    Fatal(String),
}

/// Why the health probe (`launcher-gateway health`) got no HTTP status from the gateway.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> Self {
        ProbeError(format!("talking to the gateway: {e}"))
    }
}
