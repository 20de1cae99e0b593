//! One plugin child process per `[cluster]`, spoken to over the Launcher Plugin API (DESIGN §5).
//!
//! A [`Plugin`] owns the process across restarts. Each incarnation is a [`Conn`]: a writer task
//! feeding the plugin's stdin, a reader task routing its stdout to waiting callers (by
//! `requestId`) and streams (by `requestId`, or by the `sequences` of multiplexed replies), and a
//! stderr task that copies the plugin's log lines into ours, tagged with the cluster. A
//! supervisor task restarts a plugin that died or stopped answering heartbeats, with back-off,
//! failing every waiter with error 4 PluginRestarted, and bumps the generation so the job
//! driver re-bootstraps its view (reconciles) afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use launcher_plugin_api::envelope::{parse_response, RequestType, ResponseType};
use launcher_plugin_api::framing::{read_message, write_message};
use launcher_plugin_api::messages::{
    decode, encode, BootstrapRequest, BootstrapResponse, ErrorResponse, Sequence, API_VERSION,
};
use launcher_storage::ErrorCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::launcher::{PluginProcess, ProcessLauncher, Spawned};
use super::spawner::StopSignal;
use crate::error::NodeError;

/// How a plugin is started and timed.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The `[cluster]` name (for logs and errors).
    pub cluster: String,
    pub exe: PathBuf,
    /// Every command-line option, `--name=value`.
    pub args: Vec<String>,
    /// Extra environment (the node's own is inherited).
    pub env: Vec<(String, String)>,
    /// Deadline of every request (`request-timeout-seconds`).
    pub request_timeout: Duration,
    /// Deadline of Bootstrap (`bootstrap-timeout-seconds`).
    pub bootstrap_timeout: Duration,
    /// Heartbeat period (`heartbeat-interval-seconds`; None disables).
    pub heartbeat: Option<Duration>,
    /// How long a stopping plugin gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How its process is started, signalled and waited for.
    pub launcher: ProcessLauncher,
}

/// Why a plugin request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The plugin answered with an Error message.
    #[error("{message}")]
    Plugin { code: i32, message: String },
    /// No answer within the request deadline; the plugin keeps running.
    #[error("the plugin did not answer within {0:?}")]
    Timeout(Duration),
    /// The plugin died or was restarted while the request waited.
    #[error("the plugin restarted while the request was in flight")]
    Restarted,
    /// The plugin is not running right now (starting or restarting).
    #[error("the plugin is not running: {0}")]
    Unavailable(String),
    /// The plugin answered something we cannot read.
    #[error("the plugin sent an unreadable answer: {0}")]
    BadResponse(String),
}

impl PluginError {
    /// The launcher error code (DESIGN §2).
    pub fn code(&self) -> ErrorCode {
        match self {
            PluginError::Plugin { code, .. } => {
                // Plugins speak codes 0–10 only; anything else is theirs to explain, not ours to trust.
                let c = ErrorCode::from_code(*code);
                if (0..=10).contains(code) {
                    c
                } else {
                    ErrorCode::Unknown
                }
            }
            PluginError::Timeout(_) => ErrorCode::Timeout,
            PluginError::Restarted => ErrorCode::PluginRestarted,
            PluginError::Unavailable(_) => ErrorCode::PluginRestarted,
            PluginError::BadResponse(_) => ErrorCode::Unknown,
        }
    }

    /// As a node error naming the cluster.
    pub fn into_node_error(self, cluster: &str) -> NodeError {
        let code = self.code();
        NodeError::new(code, format!("cluster '{cluster}': {self}"))
    }
}

type Reply = Result<Vec<u8>, PluginError>;

/// One incarnation of the plugin process.
struct Conn {
    writer: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    streams: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    last_heard: Mutex<Instant>,
    /// Fires when this incarnation is over (process gone, pipe broken, heartbeats missed).
    /// Set with `send_replace`: a plain `send` stores nothing while nobody subscribes yet.
    dead: watch::Sender<bool>,
}

impl Conn {
    fn heard(&self) {
        *self.last_heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.last_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Fails every waiter and stream with `why`.
    fn fail_all(&self, why: PluginError) {
        let pending: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(why.clone()));
        }
        let streams: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, tx) in streams {
            let _ = tx.try_send(Err(why.clone()));
        }
    }

    fn to_stream(&self, id: u64, reply: Reply, last: bool) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = streams.get(&id) else { return };
        // A consumer too slow to keep up loses its stream rather than stalling every other caller.
        let overflow = match tx.try_send(reply) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        };
        if last || overflow {
            streams.remove(&id);
        }
    }

    /// Routes one message from the plugin.
    fn route(&self, body: Vec<u8>) {
        self.heard();
        let (kind, request_id, _) = match parse_response(&body) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable message from the plugin");
                return;
            }
        };
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Routing {
            sequences: Vec<Sequence>,
            complete: bool,
        }
        match kind {
            ResponseType::Heartbeat if request_id == 0 => {}
            ResponseType::Error => {
                let err: ErrorResponse = decode(&body).unwrap_or_default();
                let e = PluginError::Plugin {
                    code: err.error_code,
                    message: err.error_message,
                };
                if let Some(tx) = self.take_pending(request_id) {
                    let _ = tx.send(Err(e));
                } else if request_id != 0 {
                    self.to_stream(request_id, Err(e), true);
                } else {
                    tracing::warn!(code = err.error_code, error = %e, "the plugin reported an error");
                }
            }
            ResponseType::JobStatus | ResponseType::JobResourceUtil | ResponseType::JobOutput => {
                let r: Routing = decode(&body).unwrap_or_default();
                if let Some(tx) = self.take_pending(request_id) {
                    let _ = tx.send(Ok(body));
                    return;
                }
                if r.sequences.is_empty() {
                    self.to_stream(request_id, Ok(body), r.complete);
                } else {
                    for s in &r.sequences {
                        self.to_stream(s.request_id, Ok(body.clone()), r.complete);
                    }
                }
            }
            _ => {
                if let Some(tx) = self.take_pending(request_id) {
                    let _ = tx.send(Ok(body));
                } else if kind != ResponseType::Heartbeat {
                    tracing::debug!(request_id, ?kind, "a late answer to a request nobody waits for");
                }
            }
        }
    }

    fn take_pending(&self, id: u64) -> Option<oneshot::Sender<Reply>> {
        if id == 0 {
            return None;
        }
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }
}

/// A plugin process, kept running across restarts.
pub struct PluginHost {
    spec: PluginSpec,
    conn: Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    generation: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    child: tokio::sync::Mutex<Option<PluginProcess>>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A stream the plugin feeds (status, output, resource use). Dropping it cancels it.
pub struct PluginStream {
    id: u64,
    rx: mpsc::Receiver<Reply>,
    conn: std::sync::Weak<Conn>,
    cancel: Option<Vec<u8>>,
}

impl PluginStream {
    /// The next message, or None when the stream ended.
    pub async fn next(&mut self) -> Option<Reply> {
        self.rx.recv().await
    }
}

impl Drop for PluginStream {
    fn drop(&mut self) {
        let Some(conn) = self.conn.upgrade() else { return };
        let open = conn
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id)
            .is_some();
        if open {
            if let Some(cancel) = self.cancel.take() {
                let _ = conn.writer.try_send(cancel);
            }
        }
    }
}

/// Reply backlog per stream before a slow consumer loses it.
const STREAM_BACKLOG: usize = 1024;
/// Restart back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An incarnation that ran this long was healthy: the next restart starts from the minimum.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Missed heartbeat periods before a plugin counts as hung.
const MISSED_HEARTBEATS: u32 = 3;

impl PluginHost {
    /// Starts the plugin and bootstraps it; fails if it does not bootstrap in time.
    pub async fn start(spec: PluginSpec) -> Result<Arc<PluginHost>, String> {
        let (generation, _) = watch::channel(0);
        let (stop, _) = watch::channel(false);
        let plugin = Arc::new(PluginHost {
            spec,
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
            generation,
            stop,
            child: tokio::sync::Mutex::new(None),
            supervisor: Mutex::new(None),
        });
        let conn = plugin.incarnate().await?;
        let task = tokio::spawn(plugin.clone().supervise(conn));
        *plugin.supervisor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(plugin)
    }

    /// The cluster this plugin serves.
    pub fn cluster(&self) -> &str {
        &self.spec.cluster
    }

    /// Times the plugin was restarted after its first bootstrap.
    pub fn restarts(&self) -> u64 {
        self.generation.borrow().saturating_sub(1)
    }

    /// Whether the plugin is bootstrapped and its current incarnation alive.
    pub fn is_up(&self) -> bool {
        self.current().is_ok_and(|c| !*c.dead.borrow())
    }

    /// Bumped after every successful (re)bootstrap: watchers reconcile their jobs then.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Spawns the process, wires its streams, and bootstraps it.
    async fn incarnate(&self) -> Result<Arc<Conn>, String> {
        let s = &self.spec;
        let Spawned {
            process: child,
            stdin,
            stdout,
            stderr,
        } = s.launcher.spawn(s).await?;
        let pid = child.id();
        tracing::info!(cluster = %s.cluster, pid, exe = %s.exe.display(), via = ?s.launcher, "plugin started");

        let (writer, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
        let (dead, _) = watch::channel(false);
        let conn = Arc::new(Conn {
            writer,
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            last_heard: Mutex::new(Instant::now()),
            dead,
        });
        {
            let conn = Arc::downgrade(&conn);
            let cluster = s.cluster.clone();
            tokio::spawn(async move {
                let mut stdin = stdin;
                while let Some(msg) = wrx.recv().await {
                    if let Err(e) = write_message(&mut stdin, &msg).await {
                        tracing::warn!(%cluster, error = %e, "cannot write to the plugin");
                        if let Some(c) = conn.upgrade() {
                            let _ = c.dead.send_replace(true);
                            c.fail_all(PluginError::Restarted);
                        }
                        return;
                    }
                }
                // Every sender is gone: closing stdin tells the plugin to shut down.
            });
        }
        {
            let conn = conn.clone();
            let cluster = s.cluster.clone();
            tokio::spawn(async move {
                let mut stdout = stdout;
                loop {
                    match read_message(&mut stdout).await {
                        Ok(Some(body)) => conn.route(body),
                        Ok(None) => break,
                        // A socket (through the spawner) ends so when the plugin exits
                        // leaving our requests unread; a pipe would just end.
                        Err(launcher_plugin_api::framing::FrameError::Io(e))
                            if e.kind() == std::io::ErrorKind::ConnectionReset =>
                        {
                            break
                        }
                        Err(e) => {
                            tracing::warn!(%cluster, error = %e, "the plugin broke the protocol");
                            break;
                        }
                    }
                }
                // Nobody can answer the waiters any more (Bootstrap included). Mark the
                // incarnation dead first: a waiter registering after fail_all sees the mark.
                let _ = conn.dead.send_replace(true);
                conn.fail_all(PluginError::Restarted);
            });
        }
        {
            let cluster = s.cluster.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "plugin", %cluster, "{line}");
                }
            });
        }
        *self.child.lock().await = Some(child);

        let boot = BootstrapRequest { version: API_VERSION };
        let reply: Result<BootstrapResponse, PluginError> = self
            .call_on(&conn, RequestType::Bootstrap, &boot, s.bootstrap_timeout)
            .await;
        match reply {
            Ok(b) if b.version.compatible_with(API_VERSION) => {}
            Ok(b) => {
                self.kill_child().await;
                return Err(format!(
                    "plugin speaks Plugin API {}.{}.{}, this node speaks {}.{}.{}",
                    b.version.major,
                    b.version.minor,
                    b.version.patch,
                    API_VERSION.major,
                    API_VERSION.minor,
                    API_VERSION.patch
                ));
            }
            Err(e) => {
                self.kill_child().await;
                let e = match e {
                    PluginError::Timeout(d) => format!("Bootstrap did not succeed within {d:?}"),
                    PluginError::Restarted => "the plugin exited during Bootstrap".to_string(),
                    other => format!("Bootstrap failed: {other}"),
                };
                return Err(e);
            }
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(cluster = %s.cluster, "plugin bootstrapped");
        Ok(conn)
    }

    async fn kill_child(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            child.signal(StopSignal::Kill);
            let _ = child.wait().await;
        }
    }

    /// Watches an incarnation; when it ends, fails its waiters and starts the next one.
    async fn supervise(self: Arc<Self>, mut conn: Arc<Conn>) {
        let mut stop = self.stop.subscribe();
        // Grows while incarnations keep dying young (a crash loop), so a broken plugin is not
        // restarted flat out; resets once one has run for a while.
        let mut backoff = BACKOFF_MIN;
        loop {
            let born = Instant::now();
            let why = self.watch_conn(&conn, &mut stop).await;
            if born.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            conn.fail_all(PluginError::Restarted);
            if *stop.borrow() {
                return;
            }
            tracing::warn!(cluster = %self.spec.cluster, reason = %why, "plugin lost; restarting it");
            self.kill_child().await;
            conn = loop {
                tracing::info!(cluster = %self.spec.cluster, after = ?backoff, "restarting the plugin");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wait_true(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match self.incarnate().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::error!(cluster = %self.spec.cluster, error = %e, "plugin restart failed");
                    }
                }
            };
        }
    }

    /// Returns why the incarnation ended: process exit, broken pipe, or missed heartbeats.
    async fn watch_conn(&self, conn: &Arc<Conn>, stop: &mut watch::Receiver<bool>) -> String {
        let mut dead = conn.dead.subscribe();
        let period = self.spec.heartbeat;
        let mut beat = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = wait_true(stop) => return "stopping".into(),
                _ = wait_true(&mut dead) => {
                    let status = match self.child.lock().await.as_mut() {
                        Some(c) => tokio::time::timeout(Duration::from_secs(2), c.wait()).await.ok().flatten(),
                        None => None,
                    };
                    return match status {
                        Some(s) => format!("the plugin exited ({s})"),
                        None => "the plugin closed its output".into(),
                    };
                }
                _ = beat.tick(), if period.is_some() => {
                    let p = period.expect("guarded");
                    if conn.silent_for() > p * MISSED_HEARTBEATS {
                        return format!("no heartbeat for {:?}", conn.silent_for());
                    }
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.writer.try_send(encode(RequestType::Heartbeat.number(), id, None, &serde_json::Map::new()));
                }
            }
        }
    }

    fn current(&self) -> Result<Arc<Conn>, PluginError> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PluginError::Unavailable("it is restarting; retry shortly".into()))
    }

    async fn call_on<T: Serialize, R: DeserializeOwned>(
        &self,
        conn: &Arc<Conn>,
        kind: RequestType,
        payload: &T,
        deadline: Duration,
    ) -> Result<R, PluginError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // In the span of the call being served, so the log ties its request id to this one.
        tracing::debug!(cluster = %self.spec.cluster, plugin_request_id = id, kind = ?kind, "plugin request");
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if *conn.dead.borrow() {
            // The plugin already went away (maybe before we registered): nobody will answer.
            conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(PluginError::Restarted);
        }
        let body = encode(kind.number(), id, None, payload);
        if conn.writer.send(body).await.is_err() {
            conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(PluginError::Restarted);
        }
        let body = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(PluginError::Restarted),
            Err(_) => {
                conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return Err(PluginError::Timeout(deadline));
            }
        };
        decode(&body).map_err(|e| PluginError::BadResponse(e.to_string()))
    }

    /// A request with one answer, under the request deadline (error 5 when it passes).
    pub async fn call<T: Serialize, R: DeserializeOwned>(
        &self,
        kind: RequestType,
        payload: &T,
    ) -> Result<R, PluginError> {
        let conn = self.current()?;
        self.call_on(&conn, kind, payload, self.spec.request_timeout)
            .await
    }

    /// Opens a stream; `payload` must carry `cancel: false` and is resent with `cancel: true`
    /// when the stream is dropped.
    pub async fn stream<T: Serialize>(
        &self,
        kind: RequestType,
        payload: &T,
    ) -> Result<PluginStream, PluginError> {
        let conn = self.current()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(cluster = %self.spec.cluster, plugin_request_id = id, kind = ?kind, "plugin stream");
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        conn.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if *conn.dead.borrow() {
            conn.streams.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(PluginError::Restarted);
        }
        let mut value = serde_json::to_value(payload).map_err(|e| PluginError::BadResponse(e.to_string()))?;
        let open = encode(kind.number(), id, None, &value);
        value["cancel"] = serde_json::Value::Bool(true);
        let cancel = encode(kind.number(), id, None, &value);
        let stream = PluginStream {
            id,
            rx,
            conn: Arc::downgrade(&conn),
            cancel: Some(cancel),
        };
        if conn.writer.send(open).await.is_err() {
            return Err(PluginError::Restarted);
        }
        Ok(stream)
    }

    /// Graceful stop: close stdin and SIGTERM, then SIGKILL after the grace period.
    pub async fn shutdown(&self) {
        let _ = self.stop.send_replace(true);
        let task = self.supervisor.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let Some(mut child) = self.child.lock().await.take() else {
            return;
        };
        child.signal(StopSignal::Term);
        match tokio::time::timeout(self.spec.stop_grace, child.wait()).await {
            Ok(status) => {
                tracing::info!(cluster = %self.spec.cluster, status = ?status, "plugin stopped")
            }
            Err(_) => {
                tracing::warn!(cluster = %self.spec.cluster, grace = ?self.spec.stop_grace, "plugin ignored SIGTERM; killing it");
                child.signal(StopSignal::Kill);
                let _ = child.wait().await;
            }
        }
    }

    /// The running process id (tests kill it to check restarts).
    pub async fn pid(&self) -> Option<u32> {
        self.child.lock().await.as_ref().and_then(|c| c.id())
    }
}

/// Waits until a flag turns true (or its sender is gone), holding no borrow across the await.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
