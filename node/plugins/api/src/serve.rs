//! The Plugin API loop every plugin runs: frames in from stdin, each request handed to the
//! plugin in arrival order, one writer putting responses on stdout with increasing
//! `responseId`s, and the plugin's own heartbeats. A plugin writes only what is its own: how it
//! handles each request ([`Plugin::dispatch`]) and the background work it needs.
//!
//! Requests are dispatched in arrival order, so a stream's cancel always finds the stream it
//! closes; a request that takes long goes into the loop's task set, which shutdown lets finish
//! (bounded). On shutdown, or when stdin ends, the loop stops reading, lets the requests being
//! handled finish, writes what is queued and returns; the jobs live on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::envelope::{self, EnvelopeError, RequestType, ResponseType};
use crate::error::RequestError;
use crate::framing::{self, FrameError};
use crate::messages::{Empty, JobOutputRequest};
use crate::outbox::{Outbox, Outgoing};
use crate::request::{decode, request_id_of};

/// How long shutdown waits for the requests being handled, and for the writer.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The requests of one plugin, and where its answers go.
pub trait Plugin: Send + Sync + 'static {
    /// The queue of this plugin's responses.
    fn outbox(&self) -> &Outbox;

    /// Handles request `t` (`request_id`, its whole `body`), called in arrival order. A request
    /// that does not answer at once runs in `tasks`; an error is answered as the request's
    /// Error message. Heartbeats never reach here: the loop answers them.
    fn dispatch(
        plugin: &Arc<Self>,
        t: RequestType,
        request_id: u64,
        body: Vec<u8>,
        tasks: &mut JoinSet<()>,
    ) -> impl Future<Output = Result<(), RequestError>> + Send;
}

/// The loop's settings, from the plugin's standard options.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Seconds between the plugin's own heartbeats; 0 sends none.
    pub heartbeat_interval_seconds: u64,
    /// Largest message accepted; a larger one is refused and skipped.
    pub max_message_size: usize,
}

/// The runtime a plugin serves on: multi-threaded, with `thread-pool-size` workers when the
/// options set it.
pub fn runtime(options: &crate::options::Options) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = options.thread_pool_size {
        rt.worker_threads(n);
    }
    rt.enable_all().build()
}

/// Writes queued messages in order, numbering responses from 1, until told to finish or stdout
/// fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(rx: mpsc::Receiver<Outgoing>, w: W) {
    if let Err(e) = crate::outbox::write_loop(rx, w).await {
        tracing::warn!(error = %e, "cannot write to stdout; the launcher is gone");
    }
}

/// Serves the Plugin API on `input`/`output` until the input ends or `shutdown` completes,
/// with `background` work (pollers, expiry) that stops with it.
pub async fn serve<P, R, W>(
    plugin: Arc<P>,
    out_rx: mpsc::Receiver<Outgoing>,
    mut input: R,
    output: W,
    settings: Settings,
    mut background: Vec<JoinHandle<()>>,
    shutdown: impl Future<Output = ()>,
) where
    P: Plugin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer = tokio::spawn(write_loop(out_rx, output));
    let every = settings.heartbeat_interval_seconds;
    if every > 0 {
        let plugin = plugin.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                plugin.outbox().send(ResponseType::Heartbeat, 0, &Empty {}).await;
            }
        }));
    }
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let frame = tokio::select! {
            f = framing::read_message_limited(&mut input, settings.max_message_size) => f,
            _ = &mut shutdown => { tracing::info!("asked to stop"); break; }
        };
        match frame {
            Ok(Some(body)) => dispatch(&plugin, body, &mut tasks).await,
            Ok(None) => {
                tracing::info!("stdin closed: the launcher is gone");
                break;
            }
            Err(FrameError::TooLarge { len, max }) => {
                tracing::warn!(len, max, "refused an oversize message");
                let msg = format!("message of {len} bytes refused: the limit is {max} bytes");
                plugin.outbox().error(0, RequestError::Invalid(msg)).await;
                let skipped = tokio::select! {
                    r = framing::discard(&mut input, len) => r,
                    _ = &mut shutdown => { tracing::info!("asked to stop"); break; }
                };
                if let Err(e) = skipped {
                    tracing::info!(error = %e, "stdin ended inside a refused message");
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read from stdin; stopping");
                break;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    for b in background {
        b.abort();
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still being handled at shutdown are abandoned");
    }
    // Bounded: a launcher that stopped reading must not keep the plugin from ending.
    if tokio::time::timeout(DRAIN_TIMEOUT, plugin.outbox().finish())
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    }
}

/// Reads one request's envelope and hands it to the plugin; answers what the plugin cannot:
/// an unreadable envelope, an unknown type, a heartbeat.
async fn dispatch<P: Plugin>(plugin: &Arc<P>, body: Vec<u8>, tasks: &mut JoinSet<()>) {
    let (t, rid) = match envelope::parse_request(&body) {
        Ok(x) => x,
        Err(e) => {
            let err = match e {
                EnvelopeError::Malformed(m) => RequestError::Invalid(format!("malformed request: {m}")),
                EnvelopeError::UnknownType(n) => {
                    RequestError::NotSupported(format!("request type {n} is not supported"))
                }
            };
            plugin.outbox().error(request_id_of(&body), err).await;
            return;
        }
    };
    tracing::debug!(request_id = rid, kind = ?t, "request");
    if t == RequestType::Heartbeat {
        plugin
            .outbox()
            .send(ResponseType::Heartbeat, rid, &Empty {})
            .await;
        return;
    }
    if let Err(e) = P::dispatch(plugin, t, rid, body, tasks).await {
        refuse(plugin.outbox(), rid, e).await;
    }
}

/// Answers request `rid` with its error.
async fn refuse(outbox: &Outbox, rid: u64, e: RequestError) {
    tracing::debug!(request_id = rid, error = %e, "request refused");
    outbox.error(rid, e).await;
}

/// Runs request `rid`'s `work` in `tasks` (off the reader, drained at shutdown), answering its
/// error; the work sends its own answer when it succeeds.
pub fn in_background(
    tasks: &mut JoinSet<()>,
    outbox: &Outbox,
    rid: u64,
    work: impl Future<Output = Result<(), RequestError>> + Send + 'static,
) {
    let outbox = outbox.clone();
    tasks.spawn(async move {
        if let Err(e) = work.await {
            refuse(&outbox, rid, e).await;
        }
    });
}

/// The GetJobOutput streams a plugin is serving, by request id. A request under an id closes
/// the stream open under it (a cancel only closes it); a stream ends by itself when its
/// output is complete or it fails, answering its error.
#[derive(Debug, Default, Clone)]
pub struct OutputStreams(Arc<Mutex<HashMap<u64, AbortHandle>>>);

impl OutputStreams {
    /// Handles GetJobOutput request `rid` (`body`): closes the stream open under `rid`; unless
    /// the request cancels, runs `stream(request)` in its place, answering its error on `outbox`.
    /// A request that cannot be read still closes the stream (the launcher is done with it).
    pub fn request<Fut>(
        &self,
        outbox: &Outbox,
        rid: u64,
        body: &[u8],
        stream: impl FnOnce(JobOutputRequest) -> Fut,
    ) -> Result<(), RequestError>
    where
        Fut: Future<Output = Result<(), RequestError>> + Send + 'static,
    {
        let req = decode::<JobOutputRequest>(RequestType::GetJobOutput, body);
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = open.remove(&rid) {
            old.abort();
        }
        let req = req?;
        if req.cancel {
            return Ok(());
        }
        let (outbox, streams, running) = (outbox.clone(), self.clone(), stream(req));
        // The task removes itself when done; it cannot before it is inserted (the lock is held).
        let task = tokio::spawn(async move {
            if let Err(e) = running.await {
                outbox.error(rid, e).await;
            }
            streams.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&rid);
        });
        open.insert(rid, task.abort_handle());
        Ok(())
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
