//! How the plugin host starts, signals and waits for a plugin process: directly as a child of
//! the node (unprivileged mode, or a node that keeps root), or through the privileged
//! [`spawner`](super::spawner) once the node runs as `server-user`. The host's logic (bootstrap,
//! heartbeats, restarts, the ordered stop) is the same over both.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use super::host::PluginSpec;
use super::spawner::{self, Event, Request, SpawnSpec, StopSignal};

/// How long a start through the spawner may take until the plugin's streams are connected.
const SPAWN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a connection may take to say which start and stream it is.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Starts plugin processes.
#[derive(Clone, Default)]
pub enum ProcessLauncher {
    /// As children of this process, with its privileges.
    #[default]
    Direct,
    /// Through the privileged spawner, from the list it was given while the node was root.
    Spawner(Arc<SpawnerClient>),
}

impl std::fmt::Debug for ProcessLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessLauncher::Direct => f.write_str("Direct"),
            ProcessLauncher::Spawner(_) => f.write_str("Spawner"),
        }
    }
}

/// A started plugin: its process and its three streams.
pub struct Spawned {
    pub process: PluginProcess,
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
}

impl ProcessLauncher {
    /// Starts `spec`'s plugin.
    pub async fn spawn(&self, spec: &PluginSpec) -> Result<Spawned, String> {
        match self {
            ProcessLauncher::Direct => spawn_direct(spec),
            ProcessLauncher::Spawner(client) => client.spawn(&spec.cluster).await,
        }
    }

    /// What the spawner runs for `cluster` (None when plugins are started directly).
    pub fn fixed_spec(&self, cluster: &str) -> Option<&SpawnSpec> {
        match self {
            ProcessLauncher::Direct => None,
            ProcessLauncher::Spawner(client) => client.plugins.iter().find(|p| p.cluster == cluster),
        }
    }
}

fn spawn_direct(s: &PluginSpec) -> Result<Spawned, String> {
    let mut cmd = Command::new(&s.exe);
    cmd.args(&s.args)
        .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start plugin {}: {e}", s.exe.display()))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok(Spawned {
        process: PluginProcess(Process::Direct(child)),
        stdin: Box::new(stdin),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
    })
}

/// A running plugin process. Dropping it kills the process, as `kill_on_drop` does.
pub struct PluginProcess(Process);

enum Process {
    Direct(Child),
    Spawned {
        id: u64,
        pid: u32,
        exit: watch::Receiver<Option<String>>,
        client: Arc<SpawnerClient>,
    },
}

impl PluginProcess {
    /// The process id, until its exit has been seen.
    pub fn id(&self) -> Option<u32> {
        match &self.0 {
            Process::Direct(c) => c.id(),
            Process::Spawned { pid, exit, .. } => exit.borrow().is_none().then_some(*pid),
        }
    }

    /// Sends SIGTERM or SIGKILL (nothing once the process has been waited for).
    pub fn signal(&mut self, signal: StopSignal) {
        match &mut self.0 {
            Process::Direct(c) => match signal {
                StopSignal::Kill => {
                    let _ = c.start_kill();
                }
                StopSignal::Term => {
                    if let Some(pid) = c.id() {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    }
                }
            },
            Process::Spawned { id, exit, client, .. } => {
                if exit.borrow().is_none() {
                    client.request(Request::Signal { id: *id, signal });
                }
            }
        }
    }

    /// Waits for the exit; how it ended (`exit status: 0`, `signal: 9 (SIGKILL)`), or None
    /// when that cannot be known.
    pub async fn wait(&mut self) -> Option<String> {
        match &mut self.0 {
            Process::Direct(c) => c.wait().await.ok().map(|s| s.to_string()),
            // Without the spawner, nobody reports it any more.
            Process::Spawned { exit, .. } => {
                exit.wait_for(Option::is_some).await.ok().and_then(|s| s.clone())
            }
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Process::Spawned { .. } = self.0 {
            self.signal(StopSignal::Kill);
        }
    }
}

/// A start waiting for the spawner's answer and the plugin's two connections.
#[derive(Default)]
struct Waiting {
    started: Option<oneshot::Sender<Result<u32, String>>>,
    stdio: Option<oneshot::Sender<UnixStream>>,
    stderr: Option<oneshot::Sender<UnixStream>>,
}

/// The node's side of the spawner: requests out, events in, plugin connections accepted.
pub struct SpawnerClient {
    plugins: Vec<SpawnSpec>,
    requests: mpsc::UnboundedSender<Request>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    exits: Mutex<HashMap<u64, watch::Sender<Option<String>>>>,
    gone: watch::Sender<bool>,
}

impl SpawnerClient {
    /// Takes over the node's end of the spawner's socket (the [`spawner::Init`] already
    /// written) and the listener the spawner connects plugins to. Must run inside the runtime.
    pub fn start(
        socket: std::os::unix::net::UnixStream,
        listener: std::os::unix::net::UnixListener,
        plugins: Vec<SpawnSpec>,
    ) -> std::io::Result<Arc<SpawnerClient>> {
        socket.set_nonblocking(true)?;
        listener.set_nonblocking(true)?;
        let socket = UnixStream::from_std(socket)?;
        let listener = UnixListener::from_std(listener)?;
        let (requests, mut rx) = mpsc::unbounded_channel::<Request>();
        let (gone, _) = watch::channel(false);
        let client = Arc::new(SpawnerClient {
            plugins,
            requests,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
            gone,
        });
        let (read, mut write) = socket.into_split();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let mut line = serde_json::to_vec(&req).expect("requests serialize");
                line.push(b'\n');
                if write.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(client.clone().read_events(read));
        tokio::spawn(client.clone().accept(listener));
        Ok(client)
    }

    /// Resolves when the spawner has gone away: no plugin can be started or signalled after.
    pub async fn gone(&self) {
        let _ = self.gone.subscribe().wait_for(|g| *g).await;
    }

    fn request(&self, req: Request) {
        let _ = self.requests.send(req);
    }

    async fn read_events(self: Arc<Self>, read: tokio::net::unix::OwnedReadHalf) {
        let mut lines = tokio::io::BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(Event::Started { id, pid }) => self.answer(id, Ok(pid)),
                Ok(Event::Failed { id, error }) => self.answer(id, Err(error)),
                Ok(Event::Exited { id, status }) => {
                    let tx = self.exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(tx) = tx {
                        tx.send_replace(Some(status));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable message from the plugin spawner"),
            }
        }
        tracing::error!("the privileged plugin spawner exited: plugins can no longer be started or stopped");
        self.gone.send_replace(true);
        // Dropping the senders wakes everyone waiting on a start or an exit.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn answer(&self, id: u64, r: Result<u32, String>) {
        let tx = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
            .and_then(|w| w.started.take());
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    }

    async fn accept(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a plugin connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                let mut h = [0u8; spawner::HEADER_LEN];
                let mut stream = stream;
                if !matches!(
                    tokio::time::timeout(HANDSHAKE_DEADLINE, stream.read_exact(&mut h)).await,
                    Ok(Ok(_))
                ) {
                    return;
                }
                let (id, kind) = spawner::parse_header(&h);
                let tx = {
                    let mut waiting = me.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    waiting.get_mut(&id).and_then(|w| match kind {
                        spawner::STDIO => w.stdio.take(),
                        spawner::STDERR => w.stderr.take(),
                        _ => None,
                    })
                };
                match tx {
                    Some(tx) => {
                        let _ = tx.send(stream);
                    }
                    None => tracing::debug!(id, kind, "a plugin connection nobody waits for"),
                }
            });
        }
    }

    async fn spawn(self: &Arc<Self>, cluster: &str) -> Result<Spawned, String> {
        const GONE: &str = "the privileged plugin spawner has exited; restart the node";
        if *self.gone.borrow() {
            return Err(GONE.into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started, started_rx) = oneshot::channel();
        let (stdio, stdio_rx) = oneshot::channel();
        let (stderr, stderr_rx) = oneshot::channel();
        let (exit_tx, exit) = watch::channel(None);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Waiting {
                started: Some(started),
                stdio: Some(stdio),
                stderr: Some(stderr),
            },
        );
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, exit_tx);
        self.request(Request::Start {
            id,
            cluster: cluster.to_string(),
        });
        let connected = tokio::time::timeout(SPAWN_DEADLINE, async {
            let pid = started_rx.await.map_err(|_| GONE.to_string())??;
            let io = stdio_rx.await.map_err(|_| GONE.to_string())?;
            let err = stderr_rx.await.map_err(|_| GONE.to_string())?;
            Ok::<_, String>((pid, io, err))
        })
        .await;
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let (pid, io, err) = match connected {
            Ok(Ok(x)) => x,
            failed => {
                self.exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                // It may have started without its streams reaching us: not left running.
                self.request(Request::Signal {
                    id,
                    signal: StopSignal::Kill,
                });
                return Err(match failed {
                    Ok(Err(e)) => e,
                    _ => format!("the plugin spawner did not start the plugin within {SPAWN_DEADLINE:?}"),
                });
            }
        };
        let (stdout, stdin) = io.into_split();
        Ok(Spawned {
            process: PluginProcess(Process::Spawned {
                id,
                pid,
                exit,
                client: self.clone(),
            }),
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: Box::new(err),
        })
    }
}
