//! The HTTP client of the gateway: where it is (TCP with or without TLS, or a unix socket), the
//! bearer token, deadlines, and the one place where answers become [`CtlError`]s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::error::{chain, CtlError};

/// Default gateway URL (docs/api.md: port 5559).
pub const DEFAULT_URL: &str = "http://127.0.0.1:5559";
/// How long to wait for a connection (and TLS handshake) to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// CA bundles tried for https when no `--ca-file` is given (reqwest runs with manual roots).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Where the gateway listens, parsed from `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Base URL of requests (for a unix socket, `http://localhost`).
    pub base: Url,
    /// The unix socket to connect through, if any.
    pub unix_socket: Option<PathBuf>,
    /// The URL as the user should see it in messages.
    pub display: String,
}

/// Parses `http(s)://host[:port][/prefix]`, `host:port` (http) or `unix:/path/to/socket`.
pub fn parse_target(url: &str) -> Result<Target, CtlError> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("unix:") {
        // unix:///run/x.sock and unix:/run/x.sock are the same path.
        let path = if rest.starts_with("///") { &rest[2..] } else { rest };
        if path.is_empty() {
            return Err(CtlError::Usage(
                "--url unix: needs a socket path, e.g. unix:/run/launcher.sock".into(),
            ));
        }
        return Ok(Target {
            base: Url::parse("http://localhost/").expect("a valid URL"),
            unix_socket: Some(PathBuf::from(path)),
            display: format!("unix:{path}"),
        });
    }
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let mut base = Url::parse(&with_scheme).map_err(|e| {
        CtlError::Usage(format!(
            "--url '{url}' is not a URL ({e}); use http(s)://host:port or unix:/path/to/socket"
        ))
    })?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err(CtlError::Usage(format!(
            "--url '{url}': use http(s)://host:port or unix:/path/to/socket"
        )));
    }
    // Paths are appended to the base, so it must end with '/'.
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.set_query(None);
    base.set_fragment(None);
    let display = base.as_str().trim_end_matches('/').to_string();
    Ok(Target {
        base,
        unix_socket: None,
        display,
    })
}

/// A client of one gateway, with or without a token.
pub struct Api {
    http: reqwest::Client,
    target: Target,
    token: Option<String>,
    /// Deadline of one-shot requests (streams have none of their own).
    timeout: Duration,
}

impl Api {
    /// A client of `target`; `ca_file` adds trusted roots for https.
    pub fn new(
        target: Target,
        token: Option<String>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Api, CtlError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("launcherctl/", env!("CARGO_PKG_VERSION")));
        let https = target.base.scheme() == "https";
        let bundle = match ca_file {
            Some(f) => Some(f.to_path_buf()),
            None if https => std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .or_else(|| SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists())),
            None => None,
        };
        if let Some(file) = bundle {
            let pem = std::fs::read(&file)
                .map_err(|e| CtlError::Usage(format!("cannot read the CA file {}: {e}", file.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CtlError::Usage(format!(
                    "the CA file {} is not PEM: {}",
                    file.display(),
                    chain(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(CtlError::Usage(format!(
                    "the CA file {} holds no certificate",
                    file.display()
                )));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(sock) = &target.unix_socket {
            builder = builder.unix_socket(sock.as_path());
        }
        let http = builder
            .build()
            .map_err(|e| CtlError::Other(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Api {
            http,
            target,
            token,
            timeout,
        })
    }

    /// The gateway URL for messages.
    pub fn display_url(&self) -> &str {
        &self.target.display
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token requests carry.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of the path made of `segments`, each percent-encoded (job ids are user input).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.target.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request to `segments` with the token, without a deadline (for streams).
    pub fn stream_request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let r = self.http.request(method, self.url(segments));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// A request to `segments` with the token and the one-shot deadline.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.stream_request(method, segments).timeout(self.timeout)
    }

    /// Sends `req`; any answer but a success becomes the API's error.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, CtlError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CtlError::transport(&self.target.display, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(resp).await)
    }

    /// Sends `req` and reads the answer as JSON.
    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, CtlError> {
        let resp = self.send(req).await?;
        let url = resp.url().to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CtlError::transport(&self.target.display, &e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CtlError::Other(format!("the answer of {url} is not the expected JSON: {e}")))
    }

    /// The error a non-success answer stands for: the API's error body when it has one.
    async fn error_of(&self, resp: Response) -> CtlError {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let body = resp.bytes().await.unwrap_or_default();
        if let Some(e) = api_error(status, &body) {
            return e;
        }
        let text = String::from_utf8_lossy(&body);
        let mut text: String = text.trim().chars().take(300).collect();
        if text.is_empty() {
            text = "(empty body)".into();
        }
        CtlError::Http {
            status,
            url,
            body: text,
        }
    }
}

/// The API error in `body` (`{"error":{"code","name","message"}}`), if it is one.
pub fn api_error(status: u16, body: &[u8]) -> Option<CtlError> {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: i64,
        #[serde(default)]
        name: String,
        #[serde(default)]
        message: String,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    Some(CtlError::Api {
        status,
        code: b.error.code,
        name: b.error.name,
        message: b.error.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("127.0.0.1:5559").unwrap();
        assert_eq!(t.base.as_str(), "http://127.0.0.1:5559/");
        assert_eq!(t.display, "http://127.0.0.1:5559");
        let t = parse_target("https://gw.example:8443/launcher").unwrap();
        assert_eq!(t.base.as_str(), "https://gw.example:8443/launcher/");
        for u in ["unix:/run/l.sock", "unix:///run/l.sock"] {
            let t = parse_target(u).unwrap();
            assert_eq!(t.unix_socket.as_deref(), Some(Path::new("/run/l.sock")), "{u}");
            assert_eq!(t.display, "unix:/run/l.sock");
        }
        assert!(matches!(parse_target("unix:"), Err(CtlError::Usage(_))));
        assert!(matches!(parse_target("ftp://x"), Err(CtlError::Usage(_))));
        assert!(matches!(parse_target("http://"), Err(CtlError::Usage(_))));
    }

    #[test]
    fn segments_are_encoded() {
        let api = Api::new(
            parse_target("http://h:1/p").unwrap(),
            None,
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            api.url(&["jobs", "a/b c?"]).as_str(),
            "http://h:1/p/jobs/a%2Fb%20c%3F"
        );
        assert_eq!(api.url(&["status"]).as_str(), "http://h:1/p/status");
    }

    #[test]
    fn api_errors() {
        let e = api_error(
            404,
            br#"{"error":{"code":3,"name":"JobNotFound","message":"no job x"}}"#,
        )
        .unwrap();
        assert_eq!(e.to_string(), "no job x (JobNotFound, code 3, HTTP 404)");
        assert_eq!(e.exit_code(), 1);
        assert!(api_error(502, b"<html>bad gateway</html>").is_none());
    }
}
