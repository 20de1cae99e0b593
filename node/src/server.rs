//! Starting and stopping a node: storage, identity, gRPC server, Raft, background duties,
//! and the ordered graceful stop of ARCHITECTURE.md (which keeps membership).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{StartError, StartResult};
use launcher_proto::launcher::launcher_server::LauncherServer;
use launcher_proto::raft::raft_server::RaftServer;
use launcher_storage::command::HostedCluster;
use launcher_storage::engine::{KvEngine, SledEngine, SledOptions};
use launcher_storage::{LogStore, Raft, StateMachine};
use openraft::storage::RaftLogStorage;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{load_key, InternalAuth};
use crate::config::Config;
use crate::membership::{data_paths, form, Formation, Identity};
use crate::network::{NetworkFactory, Peers, MAX_GRPC_MESSAGE};
use crate::plugins::{Plugins, ProcessLauncher};
use crate::raft_service::{NodeCell, RaftService};
use crate::service::LauncherService;
use crate::state::{Liveness, NodeState};

/// How often members send liveness heartbeats to the leader, and the leader runs its duties.
pub const TICK: Duration = Duration::from_secs(1);
/// File in the data dir holding the bound gRPC address (`host:port`).
pub const ADDR_FILE: &str = "grpc.addr";
/// Longest each step of a stop (Raft shutdown, final flush) may take.
const STOP_STEP: Duration = Duration::from_secs(10);
/// How long an in-flight request may take to finish during a graceful stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Options that do not live in `launcher.conf`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Form a new one-node cluster if the data dir is empty.
    pub init: bool,
    /// Calls to other nodes pass through this plan (fault-injection tests only).
    pub faults: Option<Arc<dyn crate::faults::FaultPlan>>,
}

/// A running node.
pub struct NodeHandle {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The address other nodes use.
    pub advertise: String,
    cell: Arc<NodeCell>,
    stop: watch::Sender<bool>,
    task: JoinHandle<StartResult<()>>,
}

impl NodeHandle {
    /// The node's shared state, once Raft is up.
    pub fn shared(&self) -> Option<Arc<NodeState>> {
        self.cell.shared.get().cloned()
    }

    /// Whether the node stopped by itself (fatal error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Graceful stop: stop serving, drain, stop Raft, flush storage. Keeps membership.
    pub async fn shutdown(self) -> StartResult<()> {
        let _ = self.stop.send_replace(true);
        self.task
            .await
            .map_err(|e| StartError::Fatal(format!("node task panicked: {e}")))?
    }

    /// Waits until the node stops (after a fatal error or a stop request).
    pub async fn wait(&mut self) -> StartResult<()> {
        (&mut self.task)
            .await
            .map_err(|e| StartError::Fatal(format!("node task panicked: {e}")))?
    }

    /// A sender that asks the node to stop gracefully.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// The span of a call that carries the gateway's `x-request-id`: its log lines (and those of the
/// plugin requests it makes) name the HTTP request they serve. Calls without one (Raft traffic)
/// get no span.
fn rpc_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    match req
        .headers()
        .get(crate::request_id::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => tracing::info_span!("rpc", path = %req.uri().path(), request_id = %id),
        None => tracing::Span::none(),
    }
}

fn advertise_for(config: &Config, bound: SocketAddr) -> String {
    if let Some(a) = &config.node.advertise_address {
        return a.clone();
    }
    if bound.ip().is_unspecified() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        return format!("{host}:{}", bound.port());
    }
    bound.to_string()
}

fn openraft_config(config: &Config, cluster_id: &str) -> StartResult<openraft::Config> {
    let n = &config.node;
    let c = openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: n.heartbeat_ms,
        election_timeout_min: n.election_timeout_min_ms,
        election_timeout_max: n.election_timeout_max_ms,
        install_snapshot_timeout: 10_000,
        // Entries are at most max-request-body-bytes each; keep a payload well inside the gRPC cap.
        max_payload_entries: ((MAX_GRPC_MESSAGE / 2) / config.server.max_request_body_bytes.max(1))
            .clamp(1, 300) as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(n.snapshot_log_entries),
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        max_in_snapshot_log_to_keep: n.snapshot_log_entries.min(1000),
        ..Default::default()
    };
    c.validate()
        .map_err(|e| StartError::Config(format!("invalid Raft timers: {e}")))
}

/// Opens storage, checking that the data dir is usable and consistent with its identity.
fn open_storage(
    config: &Config,
) -> StartResult<(SledEngine, LogStore<SledEngine>, StateMachine<SledEngine>)> {
    let dir = &config.node.data_dir;
    std::fs::create_dir_all(dir).map_err(StartError::io(format!(
        "cannot create the data dir {}",
        dir.display()
    )))?;
    let (db, snaps) = data_paths(dir);
    let opts = SledOptions {
        cache_capacity_bytes: config.node.cache_capacity_mb * 1024 * 1024,
    };
    let engine = SledEngine::open(&db, &opts).map_err(|e| {
        StartError::Storage(format!(
            "{e}. The data dir {} may be corrupt, truncated or in use by another launcher-node; \
             it is not reset automatically: restore it from a backup or wipe it to rejoin under a new id",
            dir.display()
        ))
    })?;
    let log = LogStore::open(engine.clone())
        .map_err(|e| StartError::Storage(format!("data dir {}: {e}", dir.display())))?;
    let sm = StateMachine::open(engine.clone(), snaps)
        .map_err(|e| StartError::Storage(format!("data dir {}: {e}", dir.display())))?;
    Ok((engine, log, sm))
}

async fn bind_grpc(config: &Config) -> StartResult<TcpListener> {
    TcpListener::bind(&config.node.grpc_address)
        .await
        .map_err(StartError::io(format!(
            "cannot listen on grpc-address {}",
            config.node.grpc_address
        )))
}

/// Starts a node: binds its gRPC port and brings it into its cluster in the background.
pub async fn start(config: Config, opts: StartOptions) -> StartResult<NodeHandle> {
    start_inner(config, opts, None::<fn(&Config) -> StartResult<ProcessLauncher>>).await
}

/// Like [`start`], but binds the gRPC port before storage is opened, then runs `before_storage`
/// once the key and filter files are read and the port is bound, before any data file is
/// opened or any plugin started: the place where the binary gives up root (privilege
/// separation). It says how plugins are started; its failure stops the start.
pub async fn start_with(
    config: Config,
    opts: StartOptions,
    before_storage: impl FnOnce(&Config) -> StartResult<ProcessLauncher>,
) -> StartResult<NodeHandle> {
    start_inner(config, opts, Some(before_storage)).await
}

async fn start_inner(
    config: Config,
    opts: StartOptions,
    before_storage: Option<impl FnOnce(&Config) -> StartResult<ProcessLauncher>>,
) -> StartResult<NodeHandle> {
    config
        .validate()
        .map_err(|e| StartError::Config(format!("invalid configuration:\n{e}")))?;
    let key = load_key(&config.server.secure_cookie_key_file).map_err(StartError::Config)?;
    let filters = Arc::new(
        crate::filters::FilterFiles::load(&config.dir)
            .map_err(|e| StartError::Config(format!("invalid filter file: {e}")))?,
    );
    // Without a hook the port is bound only once the node can serve, as it always was: until
    // then peers (and fast failover's probe) see it refuse.
    let (early_listener, launcher) = match before_storage {
        Some(hook) => {
            let listener = bind_grpc(&config).await?;
            (Some(listener), hook(&config)?)
        }
        None => (None, ProcessLauncher::Direct),
    };
    let (engine, log, sm) = open_storage(&config)?;
    // Every plugin must bootstrap before the node serves anything (docs/plugin-protocol.md).
    let plugins = Plugins::start_with(&config, launcher).await?;
    let identity = Identity::load(&config.node.data_dir).map_err(StartError::Storage)?;
    let mut log_probe = log.clone();
    let has_raft_data = log_probe.read_vote().await?.is_some() || sm.applied()?.is_some();
    if identity.is_none() && has_raft_data {
        return Err(StartError::Storage(format!(
            "the data dir {} holds Raft data but no identity.json: it is damaged; restore it or wipe it",
            config.node.data_dir.display()
        )));
    }
    if let (Some(id), Some(want)) = (&identity, &config.node.cluster_id) {
        if &id.cluster_id != want {
            return Err(StartError::Config(format!(
                "the data dir {} belongs to cluster {}, but the configuration names cluster {want}: refusing to start",
                config.node.data_dir.display(),
                id.cluster_id
            )));
        }
    }
    let listener = match early_listener {
        Some(l) => l,
        None => bind_grpc(&config).await?,
    };
    let addr = listener
        .local_addr()
        .map_err(StartError::io("cannot read the bound gRPC address"))?;
    let advertise = advertise_for(&config, addr);
    let auth = InternalAuth::new(
        &key,
        identity
            .as_ref()
            .map(|i| i.cluster_id.clone())
            .unwrap_or_default(),
    );
    // The server stops on its own signal: the run loop fires it first, so in-flight requests
    // drain while Raft still runs (they may need it to finish).
    let (serve_stop, serve_stop_rx) = watch::channel(false);
    let cell = Arc::new(NodeCell {
        auth: auth.clone(),
        advertise: advertise.clone(),
        bootstrap_expect: config.node.bootstrap_expect.unwrap_or(0) as u64,
        node_id: Mutex::new(identity.as_ref().map(|i| i.node_id).or(config.node.id)),
        shared: OnceLock::new(),
        serving_stopped: serve_stop_rx.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let server = {
        let mut stop_rx = serve_stop_rx;
        let rpc_metrics = crate::metrics::RpcMetrics::new()
            .map_err(|e| StartError::Fatal(format!("cannot register the RPC metrics: {e}")))?;
        let raft_svc = RaftServer::new(RaftService::new(cell.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let launcher_svc = LauncherServer::new(LauncherService::new(cell.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        // Our own listener (bound before the server, so port 0 works), hence our own nodelay:
        // the builder's tcp_nodelay only reaches sockets it binds itself, and without it every
        // small reply waits out Nagle against delayed ACKs (~40 ms per call).
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)));
        // gRPC for nodes and gateways; plain HTTP/1.1 `GET /metrics` on the same port.
        let mut router = tonic::service::Routes::new(raft_svc)
            .add_service(launcher_svc)
            .into_axum_router()
            .layer(axum::middleware::from_fn(crate::request_id::scope))
            .layer(axum::middleware::from_fn_with_state(
                rpc_metrics.clone(),
                crate::metrics::RpcMetrics::layer,
            ));
        router = if config.server.enable_metrics {
            let cell = cell.clone();
            router.route(
                "/metrics",
                axum::routing::get(move || crate::metrics::serve(cell.clone(), rpc_metrics.clone())),
            )
        } else {
            router.route("/metrics", axum::routing::get(crate::metrics::disabled))
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .accept_http1(true)
                .layer(
                    tower_http::trace::TraceLayer::new_for_grpc()
                        .make_span_with(rpc_span)
                        // An error answer (not found, invalid, unavailable while starting) is
                        // the caller's news, not a fault of this node: debug, not ERROR.
                        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                )
                .add_routes(router.into())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                }),
        )
    };
    tracing::info!(grpc = %addr, advertise = %advertise, data_dir = %config.node.data_dir.display(), "node listening");
    // Scripts and test harnesses that asked for port 0 learn the real address here.
    let addr_file = config.node.data_dir.join(ADDR_FILE);
    std::fs::write(&addr_file, format!("{addr}\n"))
        .map_err(StartError::io(format!("cannot write {}", addr_file.display())))?;
    let config = Arc::new(config);
    let task = {
        let cell = cell.clone();
        let advertise = advertise.clone();
        tokio::spawn(async move {
            let mut server = Some(server);
            let stopping = Stopping {
                serve_stop,
                server: &mut server,
            };
            let result = run(
                config,
                opts,
                identity,
                cell,
                advertise,
                engine,
                log,
                sm,
                plugins.clone(),
                filters,
                stop_rx,
                stopping,
            )
            .await;
            // Whatever happened, no plugin outlives the node.
            plugins.shutdown().await;
            // If run failed before draining, its dropped sender has told the server to stop.
            if let Some(server) = server.take() {
                let _ = tokio::time::timeout(DRAIN, server).await;
            }
            result
        })
    };
    Ok(NodeHandle {
        addr,
        advertise,
        cell,
        stop,
        task,
    })
}

/// The first step of an ordered stop: stop accepting and let in-flight calls finish (bounded).
struct Stopping<'a> {
    serve_stop: watch::Sender<bool>,
    server: &'a mut Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Stopping<'_> {
    async fn drain(self) {
        let _ = self.serve_stop.send_replace(true);
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(DRAIN, server).await.is_err() {
                tracing::warn!("in-flight requests did not finish within {DRAIN:?}; stopping anyway");
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    config: Arc<Config>,
    opts: StartOptions,
    identity: Option<Identity>,
    cell: Arc<NodeCell>,
    advertise: String,
    engine: SledEngine,
    log: LogStore<SledEngine>,
    sm: StateMachine<SledEngine>,
    plugins: Plugins,
    filters: Arc<crate::filters::FilterFiles>,
    mut stop_rx: watch::Receiver<bool>,
    stopping: Stopping<'_>,
) -> StartResult<()> {
    let listen_ip = config
        .node
        .grpc_address
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip());
    let peers = Peers::new(cell.auth.clone())
        .with_source(listen_ip)
        .with_faults(opts.faults.clone());
    let (identity, initial_voters) = match identity {
        Some(id) => {
            check_store_mark(&engine, &id, &config.node.data_dir)?;
            refuse_foreign_cluster(&id, &config.node.join, &advertise, &peers).await?;
            if let Some(cfg_id) = config.node.id.filter(|c| *c != id.node_id) {
                tracing::warn!(
                    configured = cfg_id,
                    actual = id.node_id,
                    "[node] id is ignored: this data dir belongs to node {} (it rejoined under a new id)",
                    id.node_id
                );
            }
            (id, None)
        }
        None => {
            let how = if opts.init {
                Formation::Init
            } else if let Some(expect) = config.node.bootstrap_expect {
                Formation::BootstrapExpect {
                    expect,
                    join: config.node.join.clone(),
                }
            } else if !config.node.join.is_empty() {
                Formation::Join(config.node.join.clone())
            } else {
                return Err(StartError::Config(format!(
                    "the data dir {} is empty and there is no way to form a cluster: start with --init, \
                     or set [node] bootstrap-expect or join",
                    config.node.data_dir.display()
                )));
            };
            let formed = form(
                how,
                config.node.id,
                config.node.cluster_id.clone(),
                &advertise,
                &peers,
                stop_rx.clone(),
            )
            .await?;
            mark_store(&engine, &formed.identity)?;
            formed
                .identity
                .store(&config.node.data_dir)
                .map_err(StartError::Storage)?;
            (formed.identity, formed.initial_voters)
        }
    };
    cell.auth.set_cluster_id(&identity.cluster_id);
    *cell.node_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(identity.node_id);
    let raft_config = Arc::new(openraft_config(&config, &identity.cluster_id)?);
    let raft = Raft::new(
        identity.node_id,
        raft_config,
        NetworkFactory::new(peers.clone()),
        log.clone(),
        sm.clone(),
    )
    .await
    .map_err(|e| StartError::Fatal(format!("cannot start Raft: {e}")))?;
    if let Some(voters) = initial_voters {
        match raft.initialize(voters).await {
            Ok(()) => tracing::info!(cluster = %identity.cluster_id, "initialised a new cluster"),
            Err(e) => tracing::info!(error = %e, "cluster already initialised"),
        }
    }
    let shared = Arc::new(NodeState {
        id: identity.node_id,
        config: config.clone(),
        advertise,
        raft: raft.clone(),
        sm,
        log,
        engine: engine.clone(),
        peers,
        liveness: Liveness::default(),
        removed: Default::default(),
        storage_failed: Default::default(),
        plugins: plugins.clone(),
        jobs: Default::default(),
        filters,
        counters: Default::default(),
        proposer: crate::proposer::Proposer::start(raft.clone(), config.server.max_request_body_bytes),
        leader_watch: Default::default(),
    });
    let _ = cell.shared.set(shared.clone());
    tracing::info!(node_id = shared.id, cluster = %identity.cluster_id, "node running");

    let clusters: Vec<HostedCluster> = config
        .clusters
        .iter()
        .map(|c| HostedCluster {
            name: c.name.clone(),
            shared: c.shared_scheduler,
        })
        .collect();
    let duties = tokio::spawn(duties(shared.clone(), clusters, stop_rx.clone()));
    let failover = tokio::spawn(crate::failover::run(shared.clone(), stop_rx.clone()));
    let (driver_stop, driver_stop_rx) = watch::channel(false);
    let driver = tokio::spawn(crate::driver::run(shared.clone(), driver_stop_rx));

    let mut metrics = raft.metrics();
    // Created once: re-creating it on every metrics change would restart its clock.
    let removed = wait_removed(shared.clone());
    tokio::pin!(removed);
    let fatal = |metrics: &watch::Receiver<openraft::RaftMetrics<_, _>>| -> Option<StartError> {
        match &metrics.borrow().running_state {
            Err(fatal) => Some(StartError::Fatal(format!(
                "Raft stopped with a fatal error: {fatal}. If the disk is full, free space and restart the \
                 node: acknowledged data is intact"
            ))),
            Ok(()) => None,
        }
    };
    let outcome: StartResult<()> = loop {
        if let Some(e) = fatal(&metrics) {
            break Err(e);
        }
        tokio::select! {
            _ = stop_rx.wait_for(|s| *s) => break Ok(()),
            changed = metrics.changed() => if changed.is_err() {
                break Err(fatal(&metrics).unwrap_or_else(|| StartError::Fatal("Raft stopped unexpectedly".into())));
            },
            r = &mut removed => break r,
            what = shared.storage_failed.wait() => break Err(StartError::Fatal(format!(
                "storage failed with a fatal error: {what}. If the disk is full, free space and restart the \
                 node: acknowledged data is intact"
            ))),
        }
    };
    tracing::info!("stopping: requests, background duties, job driver, plugins, Raft, storage");
    stopping.drain().await;
    duties.abort();
    failover.abort();
    let _ = driver_stop.send_replace(true);
    let _ = tokio::time::timeout(STOP_STEP, driver).await;
    plugins.shutdown().await;
    // Bounded: after a fatal storage error (a full disk) neither may ever finish.
    match tokio::time::timeout(STOP_STEP, raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "Raft shutdown reported an error"),
        Err(_) => tracing::error!("Raft did not shut down in time"),
    }
    let flushed = tokio::time::timeout(STOP_STEP, tokio::task::spawn_blocking(move || engine.flush())).await;
    match flushed {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "final flush of storage failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "final flush of storage panicked"),
        Err(_) => tracing::error!("final flush of storage did not finish in time (is the disk full?)"),
    }
    tracing::info!("node stopped");
    outcome
}

const MARK_TREE: &str = "node_identity";

/// Records the identity inside the store too, durably. sled recovers a damaged log by
/// truncating it, which can silently hand back an empty or older store; the mark tells.
fn mark_store(engine: &SledEngine, id: &Identity) -> StartResult<()> {
    use launcher_storage::engine::{KvTree, WriteBatch};
    let tree = engine.open_tree(MARK_TREE)?;
    let mut b = WriteBatch::default();
    b.put(b"identity".to_vec(), serde_json::to_vec(id)?);
    tree.write(b)?;
    engine.flush()?;
    Ok(())
}

fn check_store_mark(engine: &SledEngine, id: &Identity, dir: &Path) -> StartResult<()> {
    use launcher_storage::engine::KvTree;
    let stored = engine.open_tree(MARK_TREE)?.get(b"identity")?;
    let stored: Option<Identity> = stored.and_then(|b| serde_json::from_slice(&b).ok());
    if stored.as_ref() != Some(id) {
        return Err(StartError::Storage(format!(
            "the data dir {} says it is node {} of cluster {}, but its Raft store does not carry that identity \
             (found {stored:?}): the store was lost or damaged. Refusing to start rather than run on a reset store; \
             restore the data dir from a backup, or wipe it so the node rejoins under a new id",
            dir.display(),
            id.node_id,
            id.cluster_id
        )));
    }
    Ok(())
}

/// A data dir of one cluster pointed at the nodes of another must not start: it would only be
/// refused call by call. Best effort: peers that do not answer prove nothing.
async fn refuse_foreign_cluster(
    id: &Identity,
    join: &[String],
    advertise: &str,
    peers: &Peers,
) -> StartResult<()> {
    for addr in crate::membership::resolve(join)
        .await
        .into_iter()
        .filter(|a| a != advertise)
    {
        if let Some(reply) = crate::membership::discover(peers, &addr).await {
            if !reply.cluster_id.is_empty() && reply.cluster_id != id.cluster_id {
                return Err(StartError::Cluster(format!(
                    "this data dir belongs to cluster {}, but the node at {addr} (from [node] join) belongs to cluster {}: \
                     refusing to start. Point join at this node's own cluster, or wipe the data dir to join the other one",
                    id.cluster_id,
                    reply.cluster_id
                )));
            }
        }
    }
    Ok(())
}

/// Ends with an error if this node learns it was removed from the cluster.
async fn wait_removed(shared: Arc<NodeState>) -> StartResult<()> {
    loop {
        tokio::time::sleep(TICK).await;
        let id = shared.id;
        let tombstone = shared
            .table(move |sm| Ok(sm.nodes()?.iter().any(|n| n.id == id && n.removed)))
            .await;
        if tombstone.unwrap_or(false) || shared.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StartError::Cluster(format!(
                "this node (id {id}) was removed from the cluster; wipe its data dir to join again under a new id"
            )));
        }
    }
}

/// Registration, liveness heartbeats and the leader's duties, once per tick.
async fn duties(shared: Arc<NodeState>, clusters: Vec<HostedCluster>, stop_rx: watch::Receiver<bool>) {
    let mut registered = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop_rx.borrow() {
        tick.tick().await;
        if !registered {
            match shared.register(clusters.clone()).await {
                Ok(()) => {
                    registered = true;
                    tracing::info!(node_id = shared.id, "registered in the job table");
                }
                Err(e) => tracing::info!(error = %e, "registration not done yet; retrying"),
            }
        }
        shared.send_heartbeat().await;
        shared.maintain().await;
    }
}

/// Loads a snapshot file into an empty data dir and prepares a fresh one-node cluster from it
/// (`recover --from FILE --force-new-cluster`). The node then starts with `--init`.
pub fn recover_into(config: &Config, from: &Path) -> StartResult<()> {
    let dir = &config.node.data_dir;
    if Identity::load(dir).map_err(StartError::Storage)?.is_some() {
        return Err(StartError::Storage(format!(
            "the data dir {} already belongs to a cluster; recovery needs an empty data dir (move the old one away)",
            dir.display()
        )));
    }
    let (engine, _log, sm) = open_storage(config)?;
    let meta = sm
        .import_for_recovery(from)
        .map_err(|e| StartError::Storage(format!("cannot load {}: {e}", from.display())))?;
    engine.flush()?;
    tracing::warn!(
        snapshot = %meta.snapshot_id,
        "recovered the job table from {}: starting a NEW one-node cluster; add nodes by joining them",
        from.display()
    );
    Ok(())
}
