//! The gateway's listeners (docs/api.md, §4 `[server]`): TCP, plain or TLS (rustls with the ring
//! provider; HTTP/1.1 and HTTP/2 chosen by ALPN), and an optional unix socket. Each listener has
//! its own accept loop and stops gracefully: it stops accepting, lets open connections finish
//! their in-flight requests for up to [`DRAIN_TIMEOUT`], then closes what is left.
//!
//! A TCP connection's peer address reaches the handlers as `ConnectInfo<SocketAddr>`. A
//! unix-socket connection has no such address and gets no `ConnectInfo` at all, so the client key
//! falls back to the `launcher-node` cookie or the fixed key of unix-socket clients (`context.rs`).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a stopping listener waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1 client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle HTTP/2 connection is pinged.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long an HTTP/2 ping may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Permissions of the unix socket: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why a listener could not be set up; each names the `[server]` key and file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// `enable-ssl` is on but a file key is unset.
    #[error("[server] {0}: required when enable-ssl is on (a PEM file)")]
    Missing(&'static str),
    /// A certificate or key file cannot be read or holds nothing usable.
    #[error("[server] {key} {}: {what}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    /// The TCP address cannot be bound.
    #[error("cannot listen on {addr} (address/port in [server]): {source}")]
    Tcp { addr: String, source: io::Error },
    /// The unix socket cannot be set up.
    #[error("[server] unix-socket {}: {what}", path.display())]
    Unix { path: PathBuf, what: String },
}

const CERT_KEY: &str = "certificate-file";
const KEY_KEY: &str = "certificate-key-file";

fn file_error(key: &'static str, path: &Path, what: impl Into<String>) -> ListenError {
    ListenError::File {
        key,
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ListenError> {
    std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read it: {e}")))
}

/// The rustls server configuration for `enable-ssl`: the PEM certificate chain and private key
/// are read once, here (no reload), so they may be readable by root only.
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, ListenError> {
    let pem = read_file(CERT_KEY, cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(CERT_KEY, cert_file, format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        let what = "no certificate in it (expected a PEM chain: -----BEGIN CERTIFICATE----- blocks, \
                    the server's own certificate first)";
        return Err(file_error(CERT_KEY, cert_file, what));
    }
    let key_pem = read_file(KEY_KEY, key_file)?;
    if let Ok(meta) = std::fs::metadata(key_file) {
        if meta.mode() & 0o004 != 0 {
            tracing::warn!(
                file = %key_file.display(),
                "certificate-key-file is readable by every user; chmod 600 it"
            );
        }
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let what = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
                    .to_string()
            }
            other => format!("not valid PEM: {other}"),
        };
        file_error(KEY_KEY, key_file, what)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Load the key on its own first, so an unusable key is reported against its own file.
    if let Err(e) = provider.key_provider.load_private_key(key.clone_key()) {
        return Err(file_error(
            KEY_KEY,
            key_file,
            format!("unusable private key: {e}"),
        ));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(CERT_KEY, cert_file, format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let what = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the private key in {} does not belong to this certificate",
                    key_file.display()
                ),
                other => format!("cannot be used with {}: {other}", key_file.display()),
            };
            file_error(CERT_KEY, cert_file, what)
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS acceptor when `enable-ssl` is on, else `None`.
pub fn tls_acceptor(
    enable_ssl: bool,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Option<TlsAcceptor>, ListenError> {
    if !enable_ssl {
        return Ok(None);
    }
    let cert = cert_file.ok_or(ListenError::Missing(CERT_KEY))?;
    let key = key_file.ok_or(ListenError::Missing(KEY_KEY))?;
    Ok(Some(TlsAcceptor::from(tls_config(cert, key)?)))
}

/// A bound listener, not yet serving.
pub struct Listener {
    inner: Inner,
    tls: Option<TlsAcceptor>,
}

enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// One accepted connection.
enum Conn {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// The socket file this gateway created; removed on stop, and on drop if still there.
struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the file we created: another process's socket at the same path
    /// (a gateway started after us) is never removed.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn remove(&mut self) {
        let Some(id) = self.id.take() else { return };
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot remove the unix socket; the next start removes it"
                    );
                }
            }
            _ => {}
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds the TCP listener on `address:port` (port 0: any free port); `tls` makes it HTTPS.
pub async fn bind_tcp(address: &str, port: u16, tls: Option<TlsAcceptor>) -> Result<Listener, ListenError> {
    let addr = format!("{address}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ListenError::Tcp { addr, source })?;
    Ok(Listener {
        inner: Inner::Tcp(listener),
        tls,
    })
}

/// Binds the unix socket at `path` with mode [`SOCKET_MODE`]. A stale socket file (nobody
/// listening) is removed first; a live one, or a path that is not a socket, is an error.
pub async fn bind_unix(path: &Path) -> Result<Listener, ListenError> {
    let err = |what: String| ListenError::Unix {
        path: path.to_path_buf(),
        what,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(err(
                    "another process is listening on it (is another gateway running?)".into(),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
                tracing::info!(path = %path.display(), "removed a stale unix socket");
            }
            Err(e) => return Err(err(format!("cannot tell whether the socket is in use: {e}"))),
        },
        Ok(meta) => {
            let kind = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a file"
            };
            return Err(err(format!(
                "exists and is {kind}, not a socket; remove it or choose another path"
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot inspect it: {e}"))),
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot listen on it: {e}")))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(format!("cannot inspect it: {e}")))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: Some((meta.dev(), meta.ino())),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| err(format!("cannot set its mode to {SOCKET_MODE:o}: {e}")))?;
    Ok(Listener {
        inner: Inner::Unix(listener, file),
        tls: None,
    })
}

impl Listener {
    /// The bound TCP address (`None` for the unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().ok(),
            Inner::Unix(..) => None,
        }
    }

    /// What the logs call this listener: `https://addr`, `http://addr` or `unix:path`.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Tcp(l) => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                match l.local_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => format!("{scheme}://?"),
                }
            }
            Inner::Unix(_, f) => format!("unix:{}", f.path.display()),
        }
    }

    async fn accept(&self) -> io::Result<Conn> {
        match &self.inner {
            Inner::Tcp(l) => l.accept().await.map(|(s, a)| Conn::Tcp(s, a)),
            Inner::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        }
    }

    /// Serves `app` until `stop` turns true (or its sender is dropped), then stops accepting,
    /// removes the unix socket file, and waits up to [`DRAIN_TIMEOUT`] for open connections.
    pub async fn serve(self, app: axum::Router, stop: watch::Receiver<bool>) {
        let name = self.describe();
        let mut conns = JoinSet::new();
        let mut stopping = stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stopping) => break,
                Some(done) = conns.join_next(), if !conns.is_empty() => reap(done),
                accepted = self.accept() => match accepted {
                    Ok(conn) => {
                        conns.spawn(connection(conn, self.tls.clone(), app.clone(), stop.clone()));
                    }
                    // The client gave up before we took the connection: nothing to do.
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // Typically out of file descriptors: pause, so as not to spin, and retry.
                        tracing::error!(listener = %name, error = %e, "accept failed; retrying in 1 s");
                        tokio::select! {
                            _ = stopped(&mut stopping) => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        }
        let Listener { inner, .. } = self;
        match inner {
            Inner::Tcp(l) => drop(l),
            Inner::Unix(l, mut file) => {
                drop(l);
                file.remove();
            }
        }
        tracing::info!(listener = %name, open = conns.len(), "stopped accepting; draining");
        let drain = async {
            while let Some(done) = conns.join_next().await {
                reap(done);
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(
                listener = %name,
                left = conns.len(),
                "connections still busy after {DRAIN_TIMEOUT:?}; closing them"
            );
            conns.shutdown().await;
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a connection task panicked");
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One connection: the TLS handshake if any, then HTTP until the client leaves or we stop.
async fn connection(conn: Conn, tls: Option<TlsAcceptor>, app: axum::Router, stop: watch::Receiver<bool>) {
    match conn {
        Conn::Tcp(stream, peer) => {
            // Answers are small and latency matters more than packet count.
            let _ = stream.set_nodelay(true);
            let Some(acceptor) = tls else {
                return http(stream, Some(peer), app, stop).await;
            };
            let mut stopping = stop.clone();
            let handshake = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                // A handshake is not a request in flight: a stopping gateway drops it.
                _ = stopped(&mut stopping) => return,
            };
            match handshake {
                Ok(Ok(stream)) => http(stream, Some(peer), app, stop).await,
                // One client's broken handshake concerns only that client.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        Conn::Unix(stream) => http(stream, None, app, stop).await,
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io`; on stop, finishes the requests in flight and closes.
async fn http<I>(io: I, peer: Option<SocketAddr>, app: axum::Router, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // Only TCP peers have an address; unix-socket requests carry no ConnectInfo at all.
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        app.clone().oneshot(req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // HTTP/2 peers that stop answering pings are dropped, streams and all (HTTP/1 idle
    // connections end by the header read timeout; a stream to a vanished HTTP/1 peer ends at
    // the first failed write, at the latest with the next SSE keep-alive).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = stop;
    let mut draining = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stopped(&mut stopping), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(?peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn err_text(r: Result<Arc<rustls::ServerConfig>, ListenError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    /// A certificate and its key load, and the server offers h2 and http/1.1.
    #[test]
    fn loads_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let c = tls_config(&cert, &key).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    /// Every unusable file is an error naming the key, the file, and what is wrong with it.
    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let (_, other_key) = self_signed(dir.path(), "b");
        let missing = dir.path().join("missing.pem");
        let e = err_text(tls_config(&missing, &key));
        assert!(
            e.contains("certificate-file") && e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = err_text(tls_config(&cert, &missing));
        assert!(
            e.contains("certificate-key-file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = err_text(tls_config(&key, &key));
        assert!(
            e.contains("certificate-file") && e.contains("no certificate"),
            "{e}"
        );
        let e = err_text(tls_config(&cert, &cert));
        assert!(
            e.contains("certificate-key-file") && e.contains("no private key"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err_text(tls_config(&garbage, &key));
        assert!(e.contains("garbage.pem") && e.contains("not valid PEM"), "{e}");
        let e = err_text(tls_config(&cert, &other_key));
        assert!(e.contains("does not belong to this certificate"), "{e}");
        match tls_acceptor(true, None, Some(&key)) {
            Err(e) => assert!(e.to_string().contains("certificate-file: required"), "{e}"),
            Ok(_) => panic!("a missing certificate-file must be an error"),
        }
    }

    async fn raw_get(mut stream: impl AsyncRead + AsyncWrite + Unpin, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    /// TCP requests carry the peer's `ConnectInfo`; unix-socket requests carry none (not a
    /// made-up address); both listeners stop on the signal and the socket file goes with them.
    #[tokio::test]
    async fn connect_info_only_for_tcp() {
        let app = axum::Router::new().route(
            "/peer",
            axum::routing::get(|req: Request<axum::body::Body>| async move {
                match req.extensions().get::<ConnectInfo<SocketAddr>>() {
                    Some(ConnectInfo(a)) => format!("peer={}", a.ip()),
                    None => "peer=none".to_string(),
                }
            }),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let tcp = bind_tcp("127.0.0.1", 0, None).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let unix = bind_unix(&path).await.unwrap();
        let (stop, rx) = watch::channel(false);
        let servers = [
            tokio::spawn(tcp.serve(app.clone(), rx.clone())),
            tokio::spawn(unix.serve(app, rx)),
        ];
        let over_tcp = raw_get(TcpStream::connect(addr).await.unwrap(), "/peer").await;
        assert!(
            over_tcp.starts_with("HTTP/1.1 200") && over_tcp.ends_with("peer=127.0.0.1"),
            "{over_tcp}"
        );
        let over_unix = raw_get(UnixStream::connect(&path).await.unwrap(), "/peer").await;
        assert!(
            over_unix.starts_with("HTTP/1.1 200") && over_unix.ends_with("peer=none"),
            "{over_unix}"
        );
        stop.send_replace(true);
        for s in servers {
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(!path.exists(), "the socket file is removed on stop");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the TCP listener is closed"
        );
    }

    /// A stale socket file is replaced; a live socket or a non-socket path is refused untouched;
    /// the socket has mode 0660 and is gone once the listener is dropped.
    #[tokio::test]
    async fn unix_socket_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a stale socket file stays behind");
        let l = bind_unix(&path).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        let e = bind_unix(&path).await.err().expect("a live socket is refused");
        assert!(e.to_string().contains("another process is listening"), "{e}");
        drop(l);
        assert!(!path.exists(), "the socket file is removed with its listener");

        let file = dir.path().join("plain");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind_unix(&file).await.err().expect("a plain file is refused");
        assert!(e.to_string().contains("is a file, not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
