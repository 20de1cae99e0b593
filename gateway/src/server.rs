//! Starting and stopping the gateway: listeners (see [`crate::listeners`]), the middleware
//! stack, the health loop, and dropping root privileges.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StartError;
use axum::extract::DefaultBodyLimit;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::router;
use crate::auth::{internal_credential, load_key, Admins};
use crate::config::GatewayConfig;
use crate::context::AppState;
use crate::listeners;
use crate::routing::Pool;

/// How often every node's health is checked.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// A running gateway.
pub struct GatewayHandle {
    /// The bound TCP address (none when serving only on the unix socket).
    pub addr: Option<SocketAddr>,
    /// The unix socket also served, if any (removed again on stop).
    pub unix_socket: Option<PathBuf>,
    pub pool: Arc<Pool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), StartError>>,
}

impl GatewayHandle {
    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.stop.send_replace(true);
        self.task
            .await
            .map_err(|e| StartError::Fatal(format!("gateway task panicked: {e}")))?
    }

    /// Waits until the gateway stops.
    pub async fn wait(self) -> Result<(), StartError> {
        self.task
            .await
            .map_err(|e| StartError::Fatal(format!("gateway task panicked: {e}")))?
    }

    /// A sender that asks the gateway to stop.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// The HTTP service with its middleware (outermost first).
fn app(state: Arc<AppState>) -> axum::Router {
    let limit = state.config.server.max_request_body_bytes;
    router(state.clone())
        // Counts every answer by route template (inside the router, where the template is
        // known), including the index header and body-limit answers below.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::record,
        ))
        // Every answer carries X-Launcher-Index (docs/api.md), also those no handler made.
        .layer(axum::middleware::map_response_with_state(
            state,
            crate::context::index_header,
        ))
        // Bodies taken by axum's own extractors are read up to one byte past the limit, so a
        // large body is refused (413) without being buffered whole; the job, control and login
        // bodies go through `context::body_bytes`, which also drains an oversize body first.
        .layer(DefaultBodyLimit::max(limit + 1))
        // One span per request with method, path and request id, for the logs...
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                // 5xx answers (no leader during a failover, a node timing out) are worth a
                // warning; the error body already tells the client what happened.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        // ... which the client may give (X-Request-Id), else gets one; echoed on the answer.
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
}

/// The span of one HTTP request: method, path and request id (never the query, which may carry
/// user names).
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(crate::context::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// Loads the key and the TLS files, binds every listener, checks the nodes once, and serves until
/// stopped, with the caller's privileges. The binary uses [`start_with`] and
/// [`drop_privileges`] instead.
pub async fn start(config: GatewayConfig) -> Result<GatewayHandle, StartError> {
    start_with(config, |_| Ok(())).await
}

/// Like [`start`], but runs `before_serving` once every listener is bound and every key and
/// certificate file read, before the first request is accepted: the place to give up root, so
/// that no request is ever served with it. Its failure closes the listeners and is returned.
pub async fn start_with(
    config: GatewayConfig,
    before_serving: impl FnOnce(&GatewayConfig) -> Result<(), StartError>,
) -> Result<GatewayHandle, StartError> {
    let key = load_key(&config.server.secure_cookie_key_file).map_err(StartError::Config)?;
    // The TLS files are read here, once (no reload): before privileges are dropped.
    let tls = listeners::tls_acceptor(
        config.server.enable_ssl,
        config.server.certificate_file.as_deref(),
        config.server.certificate_key_file.as_deref(),
    )?;
    let tcp = if config.tcp {
        Some(listeners::bind_tcp(&config.server.address, config.server.port, tls).await?)
    } else {
        None
    };
    let addr = match &tcp {
        Some(l) => Some(
            l.local_addr()
                .ok_or_else(|| StartError::Fatal("the TCP listener has no local address".into()))?,
        ),
        None => None,
    };
    let unix = match &config.server.unix_socket {
        Some(path) => Some(listeners::bind_unix(path).await?),
        None => None,
    };
    let unix_socket = config.server.unix_socket.clone();
    if tcp.is_none() && unix.is_none() {
        return Err(StartError::Config(
            "[server] nothing to listen on: set port, or unix-socket with port=0".into(),
        ));
    }
    before_serving(&config)?;
    let pool = Pool::new(&config.server.nodes, &internal_credential(&key));
    let admins = Arc::new(Admins::new(
        config.server.admin_users.clone(),
        config.server.admin_group.clone(),
    ));
    pool.refresh().await;
    let (stop, stop_rx) = watch::channel(false);
    let health = pool.spawn_health_loop(HEALTH_EVERY, stop_rx.clone());
    let state = Arc::new(AppState {
        config,
        key,
        admins,
        pool: pool.clone(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    });
    let app = app(state);
    let mut servers = Vec::new();
    for listener in tcp.into_iter().chain(unix) {
        tracing::info!(listener = %listener.describe(), "gateway listening");
        servers.push(tokio::spawn(listener.serve(app.clone(), stop_rx.clone())));
    }
    let task = tokio::spawn(async move {
        // Every listener stops on the same signal and drains on its own (bounded).
        let mut panicked = None;
        for server in servers {
            if let Err(e) = server.await {
                panicked.get_or_insert(e);
            }
        }
        health.abort();
        match panicked {
            Some(e) => Err(StartError::Fatal(format!("a listener failed: {e}"))),
            None => Ok(()),
        }
    });
    Ok(GatewayHandle {
        addr,
        unix_socket,
        pool,
        stop,
        task,
    })
}

/// Gives up root for `server-user` (docs/security.md: the gateway binds its listeners and then runs as
/// `server-user`). Pass it to [`start_with`], which calls it once every listener is bound and
/// the key and TLS files are read, before any request is served. Does nothing unless running as root with a `server-user` other than root.
///
/// The unix socket is handed to `server-user` and its primary group first, so that with mode
/// 0660 that group may connect. Not for the in-process test gateway: it would drop the whole
/// test process's privileges.
pub fn drop_privileges(config: &GatewayConfig) -> Result<(), StartError> {
    let failed = |what: String| move |e: nix::Error| StartError::Privileges(format!("{what}: {e}"));
    use nix::unistd::{self, Uid, User};
    if !unistd::geteuid().is_root() {
        tracing::debug!("not running as root: keeping the current user");
        return Ok(());
    }
    let name = config.server.server_user.trim();
    let user = User::from_name(name)
        .map_err(failed(format!(
            "[server] server-user {name}: cannot look the user up"
        )))?
        .ok_or_else(|| {
            StartError::Privileges(format!(
                "[server] server-user {name}: no such user; create it, or name an existing \
                 unprivileged user in server-user (server-user=root keeps root)"
            ))
        })?;
    if user.uid.is_root() {
        tracing::warn!("server-user is root: the gateway keeps root privileges");
        return Ok(());
    }
    if let Some(socket) = &config.server.unix_socket {
        unistd::chown(socket.as_path(), Some(user.uid), Some(user.gid)).map_err(failed(format!(
            "[server] unix-socket {}: cannot hand it to {name}",
            socket.display()
        )))?;
    }
    let cname = std::ffi::CString::new(name)
        .map_err(|_| StartError::Privileges("[server] server-user: contains a NUL byte".into()))?;
    // Supplementary groups first, then the group, then the user: afterwards none can change.
    unistd::initgroups(&cname, user.gid).map_err(failed(format!(
        "[server] server-user {name}: cannot set its groups"
    )))?;
    unistd::setgid(user.gid).map_err(failed(format!(
        "[server] server-user {name}: cannot switch to group {}",
        user.gid
    )))?;
    unistd::setuid(user.uid).map_err(failed(format!(
        "[server] server-user {name}: cannot switch to uid {}",
        user.uid
    )))?;
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(StartError::Privileges(format!(
            "[server] server-user {name}: root privileges could be regained after setuid"
        )));
    }
    tracing::info!(user = name, uid = %user.uid, gid = %user.gid, "dropped root privileges");
    Ok(())
}
