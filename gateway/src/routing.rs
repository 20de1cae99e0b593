//! Which node serves a client (docs/api.md "Stickiness", "Routing").
//!
//! The gateway keeps only soft state: the node set (seeds from `nodes`, the rest learned from
//! any node's Status), each node's health from periodic Status calls, and each client's highest
//! seen applied index in a bounded map. A client is pinned by rendezvous hashing of its client
//! key over the node addresses: every gateway computes the same order, a node joining or leaving
//! moves only the clients whose first choice it is, and a client whose node is unhealthy moves
//! to the next node in its own order and back once that node is healthy again.
//!
//! Each node is checked on its own: a check that hangs (a follower's Status waits up to 2 s for
//! a leader that just died) delays neither the verdict on the others nor their next check. A
//! node that could not be reached at all, by a check or by a client's call, is tried after every
//! node that is merely slow or not serving, so requests stop paying for it at once; and a check
//! that was on its way before such a failure cannot put the node back in rotation.
//!
//! Once a Status answered, clients are pinned over the members only: a seed that is not a
//! member address (a DNS name such as `node:5560` that stands for every replica of a compose
//! service) stays a discovery entry and a last resort, and learned members that left the
//! membership are forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use launcher_proto::launcher::launcher_client::LauncherClient;
use launcher_proto::launcher::{StatusReply, StatusRequest};
use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Failure;

/// gRPC messages the gateway sends or accepts (the nodes use the same cap).
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;
/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a connection to a node may take, name resolution included.
const CONNECT_DEADLINE: Duration = Duration::from_secs(1);
/// Clients whose highest seen index the gateway remembers.
const INDEX_MEMORY: usize = 100_000;

/// Adds the internal credential and the cluster id to every call (ARCHITECTURE.md).
#[derive(Clone)]
pub struct Credential {
    token: MetadataValue<Ascii>,
    cluster: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
}

impl Credential {
    /// A credential from the `authorization` value nodes expect.
    pub fn new(token: &str) -> Self {
        Credential {
            token: token.parse().expect("the credential is ASCII hex"),
            cluster: Arc::new(RwLock::new(None)),
        }
    }

    fn set_cluster(&self, id: &str) {
        if let Ok(v) = id.parse() {
            *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = Some(v);
        }
    }

    /// The cluster id learned from the nodes, if any yet.
    pub fn cluster(&self) -> Option<String> {
        self.cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|v| v.to_str().ok().map(str::to_string))
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.token.clone());
        if let Some(c) = self.cluster.read().unwrap_or_else(|p| p.into_inner()).clone() {
            req.metadata_mut().insert(crate::auth::CLUSTER_ID_HEADER, c);
        }
        Ok(req)
    }
}

/// A client of one node's launcher service.
pub type NodeClient = LauncherClient<InterceptedService<Channel, Credential>>;

/// What the gateway knows of one node.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub addr: String,
    /// Node id, once its Status answered (0 before).
    pub id: u64,
    pub healthy: bool,
    /// False once a check or call could not connect to the node, or lost its connection, until
    /// the node answers again. Such a node is tried after the ones that are merely slow.
    pub reachable: bool,
    pub applied_index: u64,
    /// Why it is unhealthy, for `/status` and logs.
    pub last_error: Option<String>,
    /// Listed in the membership at the last refresh that reached a node.
    pub member: bool,
    /// From the `nodes` setting: kept even when it is no member address.
    seed: bool,
    channel: Channel,
    /// When a failed call last took the node out of rotation: the answer of a check sent before
    /// that may predate the failure and does not put it back.
    failed_at: Option<Instant>,
}

impl NodeState {
    fn new(addr: &str, seed: bool) -> NodeState {
        NodeState {
            addr: addr.to_string(),
            id: 0,
            healthy: false,
            reachable: true,
            applied_index: 0,
            last_error: None,
            member: false,
            seed,
            channel: channel(addr),
            failed_at: None,
        }
    }

    /// Order of preference among nodes: healthy, then reachable, then the rest.
    fn rank(&self) -> u8 {
        match (self.healthy, self.reachable) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        }
    }
}

/// The outcome of one health check of one node.
struct Check {
    addr: String,
    /// When the check was sent.
    started: Instant,
    /// The node's Status, else whether it was unreachable and why the check failed.
    result: Result<StatusReply, (bool, String)>,
}

/// The node set, its health, and the clients' highest seen indexes.
pub struct Pool {
    cred: Credential,
    nodes: RwLock<BTreeMap<String, NodeState>>,
    indexes: Mutex<IndexMemory>,
}

/// A bounded map of client key → highest applied index returned to it; when full, the client
/// answered least recently is forgotten (an LRU, as docs/api.md says).
#[derive(Default)]
struct IndexMemory {
    /// Client → (highest index, stamp of its last answer).
    map: HashMap<String, (u64, u64)>,
    /// Stamp → client, oldest first.
    by_use: BTreeMap<u64, String>,
    next_stamp: u64,
}

impl IndexMemory {
    /// Records an answer at `index` to `client`, keeping at most `capacity` clients.
    fn remember(&mut self, client: &str, index: u64, capacity: usize) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        match self.map.get_mut(client) {
            Some((known, used)) => {
                *known = (*known).max(index);
                self.by_use.remove(used);
                *used = stamp;
            }
            None => {
                self.map.insert(client.to_string(), (index, stamp));
            }
        }
        self.by_use.insert(stamp, client.to_string());
        while self.map.len() > capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    fn get(&self, client: &str) -> u64 {
        self.map.get(client).map_or(0, |(index, _)| *index)
    }
}

fn channel(addr: &str) -> Channel {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)
        .unwrap_or_else(|_| Endpoint::from_static("http://invalid.invalid:1"))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(Connect)
}

/// Opens the TCP connection of a node's channel, resolving its name and connecting under one
/// deadline. hyper's connector bounds only the connect: a name lookup that hangs (the name of
/// a removed container is passed on to the upstream DNS servers, which may not answer) would
/// hold every call queued on the channel, health checks included, for as long as it takes.
/// The channel reports a failure here as a connection that could not be made (tonic's
/// `ConnectError`, Unavailable): the request never left the gateway.
#[derive(Clone, Copy)]
struct Connect;

impl tower::Service<Uri> for Connect {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
            let what = |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("cannot connect to {host}:{port}: {e}"))
            };
            let stream = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    what(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {CONNECT_DEADLINE:?}"),
                    ))
                })?
                .map_err(what)?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Rendezvous score of `addr` for `client`: the same on every gateway.
fn score(client: &str, addr: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(client.as_bytes());
    h.update([0]);
    h.update(addr.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `addrs` in `client`'s rendezvous order (highest score first).
pub fn rendezvous_order<'a>(client: &str, addrs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(u64, &str)> = addrs.into_iter().map(|a| (score(client, a), a)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, a)| a.to_string()).collect()
}

impl Pool {
    /// A pool over the seed addresses.
    pub fn new(seeds: &[String], credential: &str) -> Arc<Pool> {
        let nodes = seeds
            .iter()
            .map(|a| {
                let mut n = NodeState::new(a, true);
                // Optimistic until the first check: a fresh gateway should not refuse work.
                n.healthy = true;
                (a.clone(), n)
            })
            .collect();
        Arc::new(Pool {
            cred: Credential::new(credential),
            nodes: RwLock::new(nodes),
            indexes: Mutex::new(IndexMemory::default()),
        })
    }

    /// The credential interceptor (with the learned cluster id).
    pub fn credential(&self) -> &Credential {
        &self.cred
    }

    /// A client of the node at `addr`.
    pub fn client(&self, addr: &str) -> NodeClient {
        let ch = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .map(|n| n.channel.clone())
            .unwrap_or_else(|| channel(addr));
        LauncherClient::with_interceptor(ch, self.cred.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// Every known node.
    pub fn nodes(&self) -> Vec<NodeState> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The nodes to try for `client`: healthy ones in its rendezvous order, then those that
    /// are reachable but did not answer their last check or call, then those that could not be
    /// reached (a last resort when every node looks down: health may be stale). Once the
    /// membership is known, seeds that are no member address (a DNS name of several nodes) come
    /// last of all.
    pub fn candidates(&self, client: &str) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let known = nodes.values().any(|n| n.member);
        let (pinned, extra): (Vec<&NodeState>, Vec<&NodeState>) =
            nodes.values().partition(|n| n.member || !known);
        let mut order = rendezvous_order(client, pinned.iter().map(|n| n.addr.as_str()));
        // Stable: the client's own order within each rank.
        order.sort_by_key(|a| nodes.get(a).map_or(u8::MAX, NodeState::rank));
        let extra = rendezvous_order(client, extra.iter().map(|n| n.addr.as_str()));
        order.into_iter().chain(extra).collect()
    }

    /// Whether the node at `addr` passed its last check and no call failed on it since.
    pub fn is_healthy(&self, addr: &str) -> bool {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .is_some_and(|n| n.healthy)
    }

    /// Takes a node out of rotation after a call on it failed without an answer (until a
    /// check sent after this succeeds); `unreachable` when no connection could be made or it
    /// broke, which puts the node behind the ones that are merely slow.
    pub fn mark_down(&self, addr: &str, why: &str, unreachable: bool) {
        if let Some(n) = self
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
        {
            if n.healthy {
                tracing::warn!(node = %addr, error = %why, "node marked unhealthy");
            }
            n.healthy = false;
            n.reachable &= !unreachable;
            n.failed_at = Some(Instant::now());
            n.last_error = Some(why.to_string());
        }
    }

    /// The highest applied index any node reported in its last health check.
    pub fn highest_applied(&self) -> u64 {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|n| n.applied_index)
            .max()
            .unwrap_or(0)
    }

    /// Remembers the highest index returned to `client`.
    pub fn remember_index(&self, client: &str, index: u64) {
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remember(client, index, INDEX_MEMORY);
    }

    /// The highest index returned to `client` (0 when unknown).
    pub fn known_index(&self, client: &str) -> u64 {
        self.indexes.lock().unwrap_or_else(|p| p.into_inner()).get(client)
    }

    /// Addresses of every known node.
    fn addrs(&self) -> Vec<String> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Asks one node for its Status (no cluster id needed for Status), within its own deadline.
    async fn check(&self, addr: String) -> Check {
        let started = Instant::now();
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(HEALTH_TIMEOUT);
        let result = match tokio::time::timeout(HEALTH_TIMEOUT, self.client(&addr).status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err((Failure::of(&s) == Failure::Unreachable, s.message().to_string())),
            Err(_) => Err((false, format!("no answer within {HEALTH_TIMEOUT:?}"))),
        };
        Check {
            addr,
            started,
            result,
        }
    }

    /// Checks every node once, all at the same time, taking in each verdict as it comes; then
    /// learns the cluster's members from the answers.
    pub async fn refresh(&self) {
        let mut checks: FuturesUnordered<_> = self.addrs().into_iter().map(|a| self.check(a)).collect();
        let mut learned: Option<BTreeSet<String>> = None;
        while let Some(c) = checks.next().await {
            if let Some(members) = self.absorb(c) {
                learned.get_or_insert_with(BTreeSet::new).extend(members);
            }
        }
        if let Some(members) = learned {
            self.learn_members(members);
        }
    }

    /// Takes in one check: the node's health, its id and applied index, and the cluster id.
    /// Returns the member addresses the answer lists, if any.
    fn absorb(&self, c: Check) -> Option<Vec<String>> {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let n = nodes.get_mut(&c.addr)?;
        match c.result {
            Ok(st) => {
                if !st.cluster_id.is_empty() && self.cred.cluster().as_deref() != Some(&st.cluster_id) {
                    self.cred.set_cluster(&st.cluster_id);
                }
                n.id = st.node_id;
                n.applied_index = st.applied_index;
                if n.failed_at.is_some_and(|failed| failed >= c.started) {
                    // A call failed on the node while this check was on its way: the answer
                    // may be older than the failure. The next check decides.
                } else if st.status == "Red" {
                    // It answers, but knows no leader or leads without a quorum (a lone leader
                    // cut off from the others): writes and linearizable reads there fail or
                    // wait. Its clients go to the other nodes until it is in a quorum again.
                    if n.healthy {
                        tracing::warn!(node = %c.addr, "node reports Red (no leader, or no quorum): its clients go elsewhere");
                    }
                    n.healthy = false;
                    n.reachable = true;
                    n.last_error =
                        Some("the node reports Red: it knows no leader, or leads without a quorum".into());
                } else {
                    if !n.healthy {
                        tracing::info!(node = %c.addr, "node healthy again");
                    }
                    n.healthy = true;
                    n.reachable = true;
                    n.last_error = None;
                }
                (!st.nodes.is_empty()).then(|| st.nodes.into_iter().map(|m| m.address).collect())
            }
            Err((unreachable, e)) => {
                if n.healthy {
                    tracing::warn!(node = %c.addr, error = %e, "node failed its health check");
                }
                n.healthy = false;
                n.reachable = !unreachable;
                n.last_error = Some(e);
                None
            }
        }
    }

    /// Takes in the membership (the union of what the nodes that answered listed): members
    /// not known yet are added, learned members that left are forgotten; seeds stay.
    fn learn_members(&self, members: BTreeSet<String>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|addr, n| {
            let keep = n.seed || members.contains(addr);
            if !keep {
                tracing::info!(node = %addr, "forgot a node that left the membership");
            }
            keep
        });
        for n in nodes.values_mut() {
            n.member = members.contains(&n.addr);
        }
        for addr in members {
            if addr.is_empty() || nodes.contains_key(&addr) {
                continue;
            }
            tracing::info!(node = %addr, "learned a member from the cluster");
            let mut n = NodeState::new(&addr, false);
            n.member = true;
            n.last_error = Some("not checked yet".into());
            nodes.insert(addr, n);
        }
    }

    /// Checks every node every `every` until `stop` fires. Each node's check runs on its own:
    /// a node whose check is still out is skipped at the next tick, the others are not held up
    /// by it, and each verdict counts as soon as it arrives. The membership is learned at each
    /// tick from the answers since the previous one.
    pub fn spawn_health_loop(
        self: &Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            let pool = &pool;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut checks = FuturesUnordered::new();
            let mut out: HashSet<String> = HashSet::new();
            let mut learned: Option<BTreeSet<String>> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(members) = learned.take() {
                            pool.learn_members(members);
                        }
                        for addr in pool.addrs() {
                            if out.insert(addr.clone()) {
                                checks.push(pool.check(addr));
                            }
                        }
                    }
                    Some(c) = checks.next(), if !checks.is_empty() => {
                        out.remove(&c.addr);
                        if let Some(members) = pool.absorb(c) {
                            learned.get_or_insert_with(BTreeSet::new).extend(members);
                        }
                    }
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-process node for the gateway's unit tests: the launcher service over real gRPC on
    //! loopback, answering Status, GetJob, SubmitJob, ControlJob and ListJobs as it is told.

    use std::sync::{Arc, Mutex};

    use futures::stream::BoxStream;
    use launcher_proto::launcher as pb;
    use launcher_proto::launcher::launcher_server::{Launcher, LauncherServer};
    use tonic::{Request, Response, Status};

    use crate::error::ERROR_CODE_HEADER;

    /// How a fake node answers its next calls.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Answer {
        /// At once, successfully.
        Ok,
        /// Never: the call waits until its caller gives up.
        Hang,
        /// Unavailable with launcher code 13, as a node does while it knows no leader.
        NoLeader,
        /// Streams fail before their first item; other calls answer Unavailable without a
        /// launcher code: the connection broke under the call.
        Broken,
    }

    struct State {
        answer: Answer,
        /// Calls still to answer with [`Answer::NoLeader`] before `answer` applies.
        no_leader_for: usize,
        members: Vec<String>,
        calls: usize,
    }

    /// A running fake node; stops when dropped.
    pub struct FakeNode {
        pub addr: String,
        state: Arc<Mutex<State>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakeNode {
        pub async fn start(answer: Answer) -> FakeNode {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let state = Arc::new(Mutex::new(State {
                answer,
                no_leader_for: 0,
                members: Vec::new(),
                calls: 0,
            }));
            let svc = LauncherServer::new(Svc(state.clone()));
            let task = tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await;
            });
            FakeNode { addr, state, task }
        }

        /// Answers the next `calls` calls as a node without a leader does.
        pub fn no_leader_for(&self, calls: usize) {
            self.state.lock().unwrap().no_leader_for = calls;
        }

        /// The member addresses its Status lists.
        pub fn set_members(&self, members: &[String]) {
            self.state.lock().unwrap().members = members.to_vec();
        }

        /// Calls it received, of any kind.
        pub fn calls(&self) -> usize {
            self.state.lock().unwrap().calls
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    struct Svc(Arc<Mutex<State>>);

    fn no_leader() -> Status {
        let mut s = Status::unavailable("no leader elected right now; retry shortly");
        s.metadata_mut().insert(
            ERROR_CODE_HEADER,
            tonic::metadata::MetadataValue::from_static("13"),
        );
        s
    }

    impl Svc {
        /// Counts the call and answers `ok` as the current answer says.
        async fn answer<T>(&self, ok: T) -> Result<Response<T>, Status> {
            let answer = {
                let mut st = self.0.lock().unwrap();
                st.calls += 1;
                if st.no_leader_for > 0 {
                    st.no_leader_for -= 1;
                    Answer::NoLeader
                } else {
                    st.answer
                }
            };
            match answer {
                Answer::Ok => Ok(Response::new(ok)),
                Answer::Hang => futures::future::pending().await,
                Answer::NoLeader => Err(no_leader()),
                Answer::Broken => Err(Status::unavailable("connection reset by peer")),
            }
        }
    }

    fn job() -> pb::JobReply {
        pb::JobReply {
            job: br#"{"id":"j1"}"#.to_vec(),
            created: true,
            applied_index: 7,
        }
    }

    type Stream<T> = BoxStream<'static, Result<T, Status>>;

    #[tonic::async_trait]
    impl Launcher for Svc {
        async fn submit_job(
            &self,
            _: Request<pb::SubmitJobRequest>,
        ) -> Result<Response<pb::JobReply>, Status> {
            self.answer(job()).await
        }
        async fn get_job(&self, _: Request<pb::GetJobRequest>) -> Result<Response<pb::JobReply>, Status> {
            self.answer(job()).await
        }
        type ListJobsStream = Stream<pb::JobChunk>;
        async fn list_jobs(
            &self,
            _: Request<pb::ListJobsRequest>,
        ) -> Result<Response<Self::ListJobsStream>, Status> {
            let broken = self.0.lock().unwrap().answer == Answer::Broken;
            let chunk = pb::JobChunk {
                jobs: vec![br#"{"id":"j1"}"#.to_vec()],
                applied_index: 7,
            };
            let items: Self::ListJobsStream = if broken {
                Box::pin(futures::stream::iter([Err(Status::unavailable(
                    "connection reset by peer",
                ))]))
            } else {
                Box::pin(futures::stream::iter([Ok(chunk)]))
            };
            if broken {
                self.0.lock().unwrap().calls += 1;
                return Ok(Response::new(items));
            }
            self.answer(items).await
        }
        async fn control_job(
            &self,
            _: Request<pb::ControlJobRequest>,
        ) -> Result<Response<pb::ControlJobReply>, Status> {
            self.answer(pb::ControlJobReply {
                status_message: String::new(),
                operation_complete: true,
                applied_index: 7,
            })
            .await
        }
        async fn delete_job(&self, _: Request<pb::JobRequest>) -> Result<Response<pb::IndexReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type StreamStatusStream = Stream<pb::StatusEvent>;
        async fn stream_status(
            &self,
            _: Request<pb::JobRequest>,
        ) -> Result<Response<Self::StreamStatusStream>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type StreamOutputStream = Stream<pb::OutputChunk>;
        async fn stream_output(
            &self,
            _: Request<pb::OutputRequest>,
        ) -> Result<Response<Self::StreamOutputStream>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type StreamResourceUseStream = Stream<pb::ResourceUse>;
        async fn stream_resource_use(
            &self,
            _: Request<pb::JobRequest>,
        ) -> Result<Response<Self::StreamResourceUseStream>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn get_job_network(
            &self,
            _: Request<pb::JobRequest>,
        ) -> Result<Response<pb::JobNetwork>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn cluster_info(
            &self,
            _: Request<pb::ClusterInfoRequest>,
        ) -> Result<Response<pb::ClusterInfoReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
            let members = self.0.lock().unwrap().members.clone();
            self.answer(pb::StatusReply {
                status: "Green".into(),
                leader: 1,
                applied_index: 7,
                node_id: 1,
                cluster_id: "c".into(),
                nodes: members
                    .iter()
                    .enumerate()
                    .map(|(i, a)| pb::NodeStatus {
                        id: i as u64 + 1,
                        address: a.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
        }
        async fn join(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn leave(&self, _: Request<pb::LeaveRequest>) -> Result<Response<pb::IndexReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn drain(&self, _: Request<pb::DrainRequest>) -> Result<Response<pb::IndexReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn members(
            &self,
            _: Request<pb::MembersRequest>,
        ) -> Result<Response<pb::MembersReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type SaveSnapshotStream = Stream<pb::SnapshotPart>;
        async fn save_snapshot(
            &self,
            _: Request<pb::SaveSnapshotRequest>,
        ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
            Err(Status::unimplemented("fake"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_removed_nodes_clients() {
        let nodes = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
        let mut firsts = std::collections::HashMap::new();
        for c in 0..300 {
            let client = format!("client-{c}");
            let order = rendezvous_order(&client, nodes);
            assert_eq!(order, rendezvous_order(&client, nodes.iter().rev().copied()));
            *firsts.entry(order[0].clone()).or_insert(0) += 1;
            // Dropping a node that is not the client's first choice keeps it where it was.
            let without: Vec<&str> = nodes.iter().copied().filter(|n| *n != order[2]).collect();
            assert_eq!(rendezvous_order(&client, without)[0], order[0]);
        }
        // Many clients spread over every node.
        assert_eq!(firsts.len(), 3);
        assert!(firsts.values().all(|n| *n > 50), "{firsts:?}");
    }

    fn status(node_id: u64, members: &[&str]) -> StatusReply {
        StatusReply {
            node_id,
            leader: 1,
            cluster_id: "c".into(),
            nodes: members
                .iter()
                .enumerate()
                .map(|(i, a)| launcher_proto::launcher::NodeStatus {
                    id: i as u64 + 1,
                    address: a.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Takes in one round of check results, as [`Pool::refresh`] does.
    fn take(pool: &Pool, results: Vec<(String, Result<StatusReply, String>)>) {
        let mut learned: Option<BTreeSet<String>> = None;
        for (addr, result) in results {
            let c = Check {
                addr,
                started: Instant::now(),
                result: result.map_err(|e| (false, e)),
            };
            if let Some(m) = pool.absorb(c) {
                learned.get_or_insert_with(BTreeSet::new).extend(m);
            }
        }
        if let Some(m) = learned {
            pool.learn_members(m);
        }
    }

    #[test]
    fn a_seed_standing_for_several_nodes_is_a_last_resort_and_departed_members_are_forgotten() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(&["node:5560".to_string()], "Launcher-Internal abc");
            assert_eq!(pool.candidates("c"), vec!["node:5560".to_string()]);
            let five = ["a:5560", "b:5560", "c:5560", "d:5560", "e:5560"];
            take(&pool, vec![("node:5560".into(), Ok(status(1, &five)))]);
            let members: Vec<(String, Result<StatusReply, String>)> = five
                .iter()
                .map(|a| (a.to_string(), Ok(status(1, &five))))
                .collect();
            take(&pool, members);
            let order = pool.candidates("client");
            assert_eq!(order.len(), 6);
            assert_eq!(order[..5], rendezvous_order("client", five)[..]);
            assert_eq!(order[5], "node:5560", "the seed name is tried last");
            // Scaled back to three: the two that left are forgotten, the seed stays.
            let three = &five[..3];
            take(&pool, vec![("a:5560".into(), Ok(status(1, three)))]);
            let order = pool.candidates("client");
            assert_eq!(order[..3], rendezvous_order("client", three.iter().copied())[..]);
            assert_eq!(order[3..], ["node:5560".to_string()]);
            // Nobody answers: what is known stays.
            take(&pool, vec![("a:5560".into(), Err("down".into()))]);
            assert_eq!(pool.candidates("client").len(), 4);
        });
    }

    #[test]
    fn unhealthy_nodes_go_last_and_indexes_are_remembered_within_bounds() {
        let seeds: Vec<String> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(&seeds, "Launcher-Internal abc");
            let first = pool.candidates("c")[0].clone();
            pool.mark_down(&first, "test", false);
            let next = pool.candidates("c");
            assert_ne!(next[0], first);
            assert_eq!(next.last(), Some(&first), "a down node is the last resort");
            pool.remember_index("c", 7);
            pool.remember_index("c", 5);
            assert_eq!(pool.known_index("c"), 7);
            assert_eq!(pool.known_index("d"), 0);
        });
    }

    /// A name that does not resolve and a port that refuses: both fail within the connect
    /// deadline as unreachable (never sent), which the gateway retries for reads and
    /// idempotent submits and takes the node out of rotation for.
    #[tokio::test]
    async fn connections_that_cannot_be_made_fail_fast_as_unreachable() {
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let seeds = vec!["no-such-node.invalid:5560".to_string(), closed];
        let pool = Pool::new(&seeds, "Launcher-Internal abc");
        for addr in &seeds {
            let started = std::time::Instant::now();
            let mut req = tonic::Request::new(StatusRequest {});
            req.set_timeout(Duration::from_secs(30));
            let s = pool.client(addr).status(req).await.unwrap_err();
            assert_eq!(Failure::of(&s), Failure::Unreachable, "{addr}: {s:?}");
            assert!(Failure::of(&s).retryable());
            assert!(s.message().contains(addr.as_str()), "{addr}: {}", s.message());
            let took = started.elapsed();
            assert!(
                took < CONNECT_DEADLINE + Duration::from_millis(900),
                "{addr}: {took:?}"
            );
        }
    }

    /// The checks of the nodes run side by side, each with its own deadline: a node whose
    /// Status hangs (a follower asking a leader that just died) holds up neither the verdict
    /// on a node that answers nor its next check; a name that no longer resolves is out at
    /// once, behind the node that is merely slow.
    #[tokio::test]
    async fn a_hanging_check_holds_up_no_other_node() {
        let answers = fake::FakeNode::start(fake::Answer::Ok).await;
        let hangs = fake::FakeNode::start(fake::Answer::Hang).await;
        let gone = "no-such-node.invalid:5560".to_string();
        let all = vec![answers.addr.clone(), hangs.addr.clone(), gone.clone()];
        answers.set_members(&all);
        let pool = Pool::new(&all, "Launcher-Internal abc");
        for a in &all {
            pool.mark_down(a, "before the test", false);
        }
        let state = |a: &str| {
            let n = pool.nodes().into_iter().find(|n| n.addr == a).unwrap();
            (n.healthy, n.reachable)
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let health = pool.spawn_health_loop(Duration::from_millis(100), stop_rx);
        // Each condition must hold well before the hanging node's check reaches its deadline.
        let deadline = started + HEALTH_TIMEOUT - Duration::from_millis(300);
        for (what, cond) in [
            (
                "the answering node in rotation",
                &(|| state(&answers.addr) == (true, true)) as &dyn Fn() -> bool,
            ),
            ("the unresolvable node unreachable", &|| {
                state(&gone) == (false, false)
            }),
            ("three checks of the answering node", &|| answers.calls() >= 3),
        ] {
            while !cond() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: not after {:?}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(hangs.calls(), 1, "one check of the hanging node is out, no more");
        // Past its deadline the hanging node is out of rotation, but ahead of the gone one, and
        // its next check goes out.
        tokio::time::timeout(Duration::from_secs(10), async {
            while state(&hangs.addr) != (false, true) || hangs.calls() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the hanging node's check ends at its deadline");
        assert_eq!(pool.candidates("any client"), all);
        let _ = stop.send(true);
        health.await.unwrap();
    }

    /// A call that failed on a node takes it out of rotation even when a check that was sent
    /// before the failure answers after it: only a later check puts it back.
    #[test]
    fn a_check_sent_before_a_failed_call_does_not_put_the_node_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(
                &["a:5560".to_string(), "b:5560".to_string()],
                "Launcher-Internal abc",
            );
            let sent = Instant::now();
            pool.mark_down("a:5560", "dns error", true);
            let late = Check {
                addr: "a:5560".into(),
                started: sent,
                result: Ok(status(1, &[])),
            };
            assert_eq!(pool.absorb(late), None);
            assert!(!pool.is_healthy("a:5560"));
            assert_eq!(pool.candidates("c").last().map(String::as_str), Some("a:5560"));
            let fresh = Check {
                addr: "a:5560".into(),
                started: Instant::now(),
                result: Ok(status(1, &[])),
            };
            pool.absorb(fresh);
            assert!(pool.is_healthy("a:5560"));
        });
    }

    /// A node that answers its check but reports Red (a lone leader without a quorum, or no
    /// leader known) is no longer a first choice: its clients go to the other nodes, and come
    /// back once it reports a leader with a quorum again.
    #[test]
    fn a_node_without_a_quorum_is_no_first_choice() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(
                &["a:5560".to_string(), "b:5560".to_string()],
                "Launcher-Internal abc",
            );
            let check = |addr: &str, health: &str| Check {
                addr: addr.into(),
                started: Instant::now(),
                result: Ok(StatusReply {
                    status: health.into(),
                    ..status(1, &[])
                }),
            };
            pool.absorb(check("b:5560", "Green"));
            pool.absorb(check("a:5560", "Red"));
            assert!(!pool.is_healthy("a:5560") && pool.is_healthy("b:5560"));
            for client in ["c1", "c2", "c3", "c4"] {
                assert_eq!(pool.candidates(client), ["b:5560", "a:5560"], "{client}");
            }
            pool.absorb(check("a:5560", "Yellow"));
            assert!(pool.is_healthy("a:5560"));
        });
    }

    #[test]
    fn candidates_go_healthy_then_slow_then_unreachable_each_in_the_clients_order() {
        let seeds: Vec<String> = (1..=6).map(|i| format!("n{i}:5560")).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = Pool::new(&seeds, "Launcher-Internal abc");
            let order = rendezvous_order("c", seeds.iter().map(String::as_str));
            // The client's first and fourth choice are unreachable, the second slow.
            pool.mark_down(&order[0], "dns error", true);
            pool.mark_down(&order[3], "connection refused", true);
            pool.mark_down(&order[1], "no answer within 2s", false);
            let want: Vec<String> = [2, 4, 5, 1, 0, 3].iter().map(|i| order[*i].clone()).collect();
            assert_eq!(pool.candidates("c"), want);
        });
    }

    #[test]
    fn the_index_memory_forgets_the_client_answered_least_recently() {
        let mut m = IndexMemory::default();
        m.remember("a", 5, 2);
        m.remember("b", 6, 2);
        m.remember("a", 3, 2); // a answered again: b is now the least recent
        m.remember("c", 9, 2);
        assert_eq!((m.get("a"), m.get("b"), m.get("c")), (5, 0, 9));
        assert_eq!(m.map.len(), 2);
        assert_eq!(m.by_use.len(), 2);
    }
}
