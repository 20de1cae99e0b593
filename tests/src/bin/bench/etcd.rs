//! etcd 3.4 side by side: three `etcd` members on 127.0.0.1 and a gRPC client of its v3 API.
//!
//! The client speaks etcd's own gRPC service (`etcdserverpb.KV`, `etcdserverpb.Maintenance`)
//! over the same tonic HTTP/2 stack the bench uses for our nodes, not the JSON gateway, so both
//! systems are driven the same way. The few messages it needs are declared here with prost's
//! derive, field numbers as in etcd's `rpc.proto` and `kv.proto`; unknown fields in answers are
//! skipped by prost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.PutRequest` (key, value; no lease).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.PutResponse` (the header only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.RangeRequest`: `[key, range_end)`, at most `limit` (0: all).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Served by the member alone, without a read index round (etcd's stale read).
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// `etcdserverpb.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `etcdserverpb.StatusResponse` (what the bench reads of it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
}

/// Largest answer the client takes (a range of 100 000 job-sized values is ~60 MB).
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// A client of one etcd member over one HTTP/2 connection (cheap to clone, clones share it).
#[derive(Clone)]
pub struct EtcdClient {
    channel: Channel,
}

impl EtcdClient {
    /// A client of `127.0.0.1:port`, configured like the bench's node clients (no Nagle).
    pub fn new(port: u16) -> anyhow::Result<EtcdClient> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(EtcdClient { channel })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("etcd connection: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let reply = grpc
            .unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
            .await?;
        Ok(reply.into_inner())
    }

    /// One put.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<PutResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Put", PutRequest { key, value })
            .await
    }

    /// A range read of `[key, range_end)`.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Range", req).await
    }

    /// The member's status (its id is in the header, and the leader it knows).
    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
            .await
    }
}

/// One etcd member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// Its process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Three etcd members on 127.0.0.1, each on two free ports, data in a temp dir.
pub struct EtcdCluster {
    pub bin: PathBuf,
    pub version: String,
    pub root: tempfile::TempDir,
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

/// Free TCP ports on 127.0.0.1, found by binding port 0 and letting go (etcd cannot bind 0).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// `etcd` from PATH, installed first by `tests/bench-etcd-setup.sh` when missing.
pub fn etcd_binary() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-etcd-setup.sh");
    let out = Command::new("sh")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(!path.is_empty(), "{} printed no etcd path", script.display());
    Ok(PathBuf::from(path))
}

impl EtcdCluster {
    /// Starts three members and waits until they agree on a leader.
    pub async fn start() -> anyhow::Result<EtcdCluster> {
        let bin = etcd_binary()?;
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim_start_matches("etcd Version:").trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let root = tempfile::Builder::new()
            .prefix("launcher-bench-etcd-")
            .tempdir()?;
        let ports = free_ports(6)?;
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(Member {
                name: format!("m{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: root.path().join(format!("m{}", i + 1)),
                log: root.path().join(format!("m{}.log", i + 1)),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            bin,
            version,
            root,
            members,
            initial_cluster,
            token: format!("launcher-bench-{}", std::process::id()),
        };
        for i in 0..3 {
            c.spawn(i)?;
        }
        c.wait_leader(Duration::from_secs(60)).await?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        // Defaults otherwise: WAL fsync on, heartbeat 100 ms, election timeout 1000 ms,
        // snapshot every 100 000 entries.
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        m.child = Some(child);
        Ok(())
    }

    /// A client of member `i` (0-based).
    pub fn client(&self, i: usize) -> anyhow::Result<EtcdClient> {
        EtcdClient::new(self.members[i].client_port)
    }

    /// Indexes of running members.
    pub fn running(&mut self) -> Vec<usize> {
        self.members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| {
                m.child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none())
                    .then_some(i)
            })
            .collect()
    }

    /// Waits until every running member names the same leader; returns the leader's index.
    pub async fn wait_leader(&mut self, deadline: Duration) -> anyhow::Result<usize> {
        let running = self.running();
        let end = Instant::now() + deadline;
        let mut last = String::new();
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for &i in &running {
                match tokio::time::timeout(Duration::from_secs(1), self.client(i)?.status()).await {
                    Ok(Ok(st)) => {
                        leaders.push(st.leader);
                        ids.push((i, st.header.map_or(0, |h| h.member_id)));
                    }
                    Ok(Err(e)) => last = format!("member {i}: {e}"),
                    Err(_) => last = format!("member {i}: status timed out"),
                }
            }
            if leaders.len() == running.len() && leaders[0] != 0 && leaders.iter().all(|&l| l == leaders[0]) {
                if let Some(&(i, _)) = ids.iter().find(|(_, id)| *id == leaders[0]) {
                    return Ok(i);
                }
            }
            if Instant::now() >= end {
                bail!(
                    "etcd has no agreed leader after {deadline:?} ({last})\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// The last lines of every member's log.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let t = std::fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                format!(
                    "--- etcd {} ---\n{}\n",
                    m.name,
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
