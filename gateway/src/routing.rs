//! Which node serves a client (docs/api.md "Stickiness", "Routing").
//!
//! The gateway keeps only soft state: the node set (seeds from `nodes`, the rest learned from
//! any node's Status), each node's health from periodic Status calls, and each client's highest
//! seen applied index in a bounded map. A client is pinned by rendezvous hashing of its client
//! key over the node addresses: every gateway computes the same order, a node joining or leaving
//! moves only the clients whose first choice it is, and a client whose node is unhealthy moves
//! to the next node in its own order and back once that node is healthy again.
//!
//! Once a Status answered, clients are pinned over the members only: a seed that is not a
//! member address (a DNS name such as `node:5560` that stands for every replica of a compose
//! service) stays a discovery entry and a last resort, and learned members that left the
//! membership are forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use launcher_proto::launcher::launcher_client::LauncherClient;
use launcher_proto::launcher::{StatusReply, StatusRequest};
use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

/// gRPC messages the gateway sends or accepts (the nodes use the same cap).
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;
/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
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
    pub applied_index: u64,
    /// Why it is unhealthy, for `/status` and logs.
    pub last_error: Option<String>,
    /// Listed in the membership at the last refresh that reached a node.
    pub member: bool,
    /// From the `nodes` setting: kept even when it is no member address.
    seed: bool,
    channel: Channel,
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
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy()
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
                (
                    a.clone(),
                    NodeState {
                        addr: a.clone(),
                        id: 0,
                        // Optimistic until the first check: a fresh gateway should not refuse work.
                        healthy: true,
                        applied_index: 0,
                        last_error: None,
                        member: false,
                        seed: true,
                        channel: channel(a),
                    },
                )
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

    /// The nodes to try for `client`: healthy ones in its rendezvous order, then the others
    /// (a last resort when every node looks down: health may be stale). Once the membership is
    /// known, seeds that are no member address (a DNS name of several nodes) come last of all.
    pub fn candidates(&self, client: &str) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let known = nodes.values().any(|n| n.member);
        let (pinned, extra): (Vec<&NodeState>, Vec<&NodeState>) =
            nodes.values().partition(|n| n.member || !known);
        let order = rendezvous_order(client, pinned.iter().map(|n| n.addr.as_str()));
        let (healthy, down): (Vec<String>, Vec<String>) = order
            .into_iter()
            .partition(|a| nodes.get(a).is_some_and(|n| n.healthy));
        let extra = rendezvous_order(client, extra.iter().map(|n| n.addr.as_str()));
        healthy.into_iter().chain(down).chain(extra).collect()
    }

    /// Marks a node down after a failed call (until the next successful health check).
    pub fn mark_down(&self, addr: &str, why: &str) {
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

    /// Asks one node for its Status (no cluster id needed for Status).
    async fn probe(&self, addr: &str) -> Result<StatusReply, String> {
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(HEALTH_TIMEOUT);
        match tokio::time::timeout(HEALTH_TIMEOUT, self.client(addr).status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err(format!("no answer within {HEALTH_TIMEOUT:?}")),
        }
    }

    /// Checks every node once; learns the cluster id and members it did not know.
    pub async fn refresh(&self) {
        let addrs: Vec<String> = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let probes = addrs
            .iter()
            .map(|a| async move { (a.clone(), self.probe(a).await) });
        let results = futures::future::join_all(probes).await;
        self.absorb(results);
    }

    /// Takes in one round of health checks: health, the cluster id, and the membership (the
    /// union of what the nodes that answered list; unchanged when none answered).
    fn absorb(&self, results: Vec<(String, Result<StatusReply, String>)>) {
        let mut learned: Option<BTreeSet<String>> = None;
        {
            let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
            for (addr, r) in results {
                let Some(n) = nodes.get_mut(&addr) else { continue };
                match r {
                    Ok(st) => {
                        if !st.cluster_id.is_empty() && self.cred.cluster().as_deref() != Some(&st.cluster_id)
                        {
                            self.cred.set_cluster(&st.cluster_id);
                        }
                        if !n.healthy {
                            tracing::info!(node = %addr, "node healthy again");
                        }
                        n.id = st.node_id;
                        n.healthy = true;
                        n.applied_index = st.applied_index;
                        n.last_error = None;
                        if !st.nodes.is_empty() {
                            learned
                                .get_or_insert_with(BTreeSet::new)
                                .extend(st.nodes.iter().map(|m| m.address.clone()));
                        }
                    }
                    Err(e) => {
                        if n.healthy {
                            tracing::warn!(node = %addr, error = %e, "node failed its health check");
                        }
                        n.healthy = false;
                        n.last_error = Some(e);
                    }
                }
            }
            let Some(members) = learned else { return };
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
                nodes.insert(
                    addr.clone(),
                    NodeState {
                        addr: addr.clone(),
                        id: 0,
                        healthy: false,
                        applied_index: 0,
                        last_error: Some("not checked yet".into()),
                        member: true,
                        seed: false,
                        channel: channel(&addr),
                    },
                );
            }
        }
    }

    /// Refreshes health every `every` until `stop` fires.
    pub fn spawn_health_loop(
        self: &Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => pool.refresh().await,
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
            pool.absorb(vec![("node:5560".into(), Ok(status(1, &five)))]);
            let members: Vec<(String, Result<StatusReply, String>)> = five
                .iter()
                .map(|a| (a.to_string(), Ok(status(1, &five))))
                .collect();
            pool.absorb(members);
            let order = pool.candidates("client");
            assert_eq!(order.len(), 6);
            assert_eq!(order[..5], rendezvous_order("client", five)[..]);
            assert_eq!(order[5], "node:5560", "the seed name is tried last");
            // Scaled back to three: the two that left are forgotten, the seed stays.
            let three = &five[..3];
            pool.absorb(vec![("a:5560".into(), Ok(status(1, three)))]);
            let order = pool.candidates("client");
            assert_eq!(order[..3], rendezvous_order("client", three.iter().copied())[..]);
            assert_eq!(order[3..], ["node:5560".to_string()]);
            // Nobody answers: what is known stays.
            pool.absorb(vec![("a:5560".into(), Err("down".into()))]);
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
            pool.mark_down(&first, "test");
            let next = pool.candidates("c");
            assert_ne!(next[0], first);
            assert_eq!(next.last(), Some(&first), "a down node is the last resort");
            pool.remember_index("c", 7);
            pool.remember_index("c", 5);
            assert_eq!(pool.known_index("c"), 7);
            assert_eq!(pool.known_index("d"), 0);
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
