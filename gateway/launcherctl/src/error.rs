//! What can go wrong in a command, and the exit code each failure gets.

/// Exit code of an error answer from the API (and of any other failure of a command).
pub const EXIT_API: i32 = 1;
/// Exit code of a usage error (clap uses the same for its own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the gateway cannot be reached.
pub const EXIT_CONNECT: i32 = 3;
/// Exit code of `jobs wait` when its `--timeout` passes (as coreutils' `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;

/// A failed command; [`CtlError::exit_code`] says how the process ends.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The API answered with its error body `{"error":{code,name,message}}`.
    #[error("{message} ({name}, code {code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Launcher error code (docs/api.md).
        code: i64,
        /// Launcher error name, e.g. `JobNotFound`.
        name: String,
        /// What the gateway said.
        message: String,
    },
    /// A non-success answer without the API's error body (a proxy in between, say).
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The request's URL.
        url: String,
        /// The start of the body.
        body: String,
    },
    /// No connection to the gateway (refused, unresolvable, TLS handshake failed, timed out).
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        /// The gateway URL.
        url: String,
        /// Why, with the causes.
        detail: String,
    },
    /// The command line or a file it names is unusable.
    #[error("{0}")]
    Usage(String),
    /// `jobs wait --timeout` passed.
    #[error("{0}")]
    Timeout(String),
    /// Anything else: a broken stream, an unreadable answer, a local file that cannot be written.
    #[error("{0}")]
    Other(String),
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Api { .. } | CtlError::Http { .. } | CtlError::Other(_) => EXIT_API,
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Connect { .. } => EXIT_CONNECT,
            CtlError::Timeout(_) => EXIT_TIMEOUT,
        }
    }

    /// A transport failure of a request to `url`: no connection at all, or a broken exchange.
    pub fn transport(url: &str, e: &reqwest::Error) -> CtlError {
        let detail = chain(e);
        if e.is_connect() || (e.is_timeout() && !e.is_body()) {
            CtlError::Connect {
                url: url.to_string(),
                detail,
            }
        } else {
            CtlError::Other(format!("request to {url} failed: {detail}"))
        }
    }
}

/// An error and its causes on one line (reqwest's own message alone says little).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Result of a command: the exit code on success (`jobs wait` passes the job's through).
pub type CmdResult = Result<i32, CtlError>;
