//! Starting and stopping the gateway: listeners, the middleware stack, the health loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{router, AppState};
use crate::auth::{internal_credential, load_key, Admins};
use crate::config::GatewayConfig;
use crate::routing::Pool;

/// How often every node's health is checked.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// A running gateway.
pub struct GatewayHandle {
    /// The bound TCP address.
    pub addr: SocketAddr,
    pub pool: Arc<Pool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl GatewayHandle {
    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        self.task.await.context("gateway task panicked")?
    }

    /// Waits until the gateway stops.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("gateway task panicked")?
    }

    /// A sender that asks the gateway to stop.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// The HTTP service with its middleware (outermost first).
fn app(state: Arc<AppState>) -> axum::Router {
    let limit = state.config.max_request_body_bytes;
    router(state)
        // Request bodies are read up to one byte past the limit, so a large body is refused
        // (413) without being buffered whole.
        .layer(DefaultBodyLimit::max(limit + 1))
        // One span per request with method, path and status, for the logs.
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Loads the key, binds the listener, checks the nodes once, and serves until stopped.
pub async fn start(config: GatewayConfig) -> anyhow::Result<GatewayHandle> {
    let key = load_key(&config.secure_cookie_key_file).map_err(anyhow::Error::msg)?;
    let pool = Pool::new(&config.nodes, &internal_credential(&key));
    let admins = Arc::new(Admins::new(
        config.admin_users.clone(),
        config.admin_group.clone(),
    ));
    let listen = format!("{}:{}", config.address, config.port);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (address/port in [server])"))?;
    let addr = listener.local_addr()?;
    pool.refresh().await;
    let (stop, stop_rx) = watch::channel(false);
    let health = pool.spawn_health_loop(HEALTH_EVERY, stop_rx.clone());
    let state = Arc::new(AppState {
        config,
        key,
        admins,
        pool: pool.clone(),
    });
    tracing::info!(%addr, "gateway listening");
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
        health.abort();
        served.context("the HTTP server failed")
    });
    Ok(GatewayHandle {
        addr,
        pool,
        stop,
        task,
    })
}
