//! A cluster of real `launcher-node` processes on loopback, each node on its own 127.a.b.c.
//!
//! Node `i` (1-based) gets `[node] id = i`, its own config dir and data dir. The first start
//! binds port 0; the harness reads the bound address from the data dir and reuses that port
//! on restart, so the member keeps its address.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::NodeClient;
use crate::{wait_until, write_key, DEADLINE};

/// Knobs of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub snapshot_log_entries: u64,
    pub node_lost_timeout_seconds: u64,
    pub dead_member_removal_seconds: u64,
    /// Extra `[cluster]` names each node hosts (besides `Local`).
    pub extra_clusters: Vec<String>,
    /// The plugin every cluster of the test runs.
    pub plugin: TestPlugin,
    /// `request-timeout-seconds` (deadline of plugin requests).
    pub request_timeout_seconds: u64,
    /// `heartbeat-interval-seconds` (plugin heartbeats).
    pub heartbeat_interval_seconds: u64,
    /// Extra files (name, text) written into every node's config dir (filter files).
    pub config_files: Vec<(String, String)>,
    /// The nodes' `RUST_LOG` (default: `LAUNCHER_NODE_LOG` if set, else `info,openraft=warn`).
    pub log_filter: Option<String>,
    /// Extra `key=value` lines of every node's `[node]` section.
    pub node_lines: Vec<String>,
    /// Extra `key=value` lines of every `[cluster]` section (policy keys).
    pub cluster_lines: Vec<String>,
}

/// Which plugin a test cluster's `[cluster]` sections run.
#[derive(Debug, Clone, Default)]
pub enum TestPlugin {
    /// Our `launcher-local-plugin` (`type=Local`): real processes.
    #[default]
    Local,
    /// The third-party style `tests/plugins/scripted-plugin.py` (`type=Plugin`), with these
    /// lines in its `launcher.<plugin-name>.conf` (e.g. `never-answer=2`).
    Scripted(String),
}

impl TestPlugin {
    /// The `[cluster]` section for `name`, and the plugin config file (name, text) it reads.
    pub fn section(&self, name: &str) -> (String, Option<(String, String)>) {
        let plugin_name = name.to_lowercase();
        match self {
            TestPlugin::Local => (
                format!(
                    "[cluster]\nname={name}\ntype=Local\nexe={}\n",
                    local_plugin_binary().display()
                ),
                None,
            ),
            TestPlugin::Scripted(conf) => (
                format!(
                    "[cluster]\nname={name}\ntype=Plugin\nexe={}\n",
                    scripted_plugin().display()
                ),
                Some((format!("launcher.{plugin_name}.conf"), conf.clone())),
            ),
        }
    }
}

/// The third-party style test plugin script.
pub fn scripted_plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/scripted-plugin.py")
}

/// `launcher-local-plugin` of the caller's cargo profile (built with the node binary).
pub fn local_plugin_binary() -> PathBuf {
    node_binary()
        .parent()
        .expect("binary dir")
        .join("launcher-local-plugin")
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            snapshot_log_entries: 10_000,
            node_lost_timeout_seconds: 30,
            dead_member_removal_seconds: 0,
            extra_clusters: vec![],
            plugin: TestPlugin::Local,
            request_timeout_seconds: 120,
            heartbeat_interval_seconds: 5,
            config_files: vec![],
            log_filter: None,
            node_lines: vec![],
            cluster_lines: vec![],
        }
    }
}

/// The `launcher-node` binary of the caller's cargo profile, built once per process together
/// with `launcher-local-plugin` (`LAUNCHER_NODE_BIN` overrides it; the plugin is then expected
/// next to it). Works from test binaries (`target/<profile>/deps/`)
/// and from binaries such as `launcher-bench` (`target/<profile>/`).
pub fn node_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("LAUNCHER_NODE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("own binary path");
        let mut profile_dir = exe.parent().expect("binary dir").to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let bin = profile_dir.join("launcher-node");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "launcher-node",
            "-p",
            "launcher-local-plugin",
            "--bins",
            "--manifest-path",
        ]);
        cmd.arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building launcher-node failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// One node process.
pub struct ProcNode {
    pub index: usize,
    pub dir: PathBuf,
    /// The node's own loopback address (see [`crate::unique_loopback`]).
    pub host: String,
    pub port: u16,
    child: Option<Child>,
}

impl ProcNode {
    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The node's gRPC address.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }
    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
    /// The process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Process ids of the node's child processes (its plugins).
    pub fn plugin_pids(&self) -> Vec<i32> {
        let Some(pid) = self.pid() else { return vec![] };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return vec![];
        };
        let mut out: Vec<i32> = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A cluster of node processes.
pub struct ProcessCluster {
    pub root: tempfile::TempDir,
    pub key: Vec<u8>,
    pub key_path: PathBuf,
    pub opts: ClusterOpts,
    pub nodes: Vec<ProcNode>,
    cluster_id: String,
}

impl ProcessCluster {
    /// A cluster directory with its key and no node yet.
    fn empty(opts: ClusterOpts) -> anyhow::Result<ProcessCluster> {
        crate::ensure_test_users();
        let root = tempfile::Builder::new().prefix("launcher-test-").tempdir()?;
        crate::traversable(root.path())?;
        let key_path = root.path().join("secure-cookie-key");
        let key = write_key(&key_path)?;
        Ok(ProcessCluster {
            root,
            key,
            key_path,
            opts,
            nodes: Vec::new(),
            cluster_id: String::new(),
        })
    }

    /// Starts `n` nodes: node 1 with `--init`, the others joining it; waits until every node is
    /// a voter and the cluster is Green.
    pub async fn start(n: usize, opts: ClusterOpts) -> anyhow::Result<ProcessCluster> {
        let mut c = Self::empty(opts)?;
        c.add_node(true).await?;
        for _ in 1..n {
            c.add_node(false).await?;
        }
        c.wait_green(n).await?;
        c.wait_registered(n).await?;
        Ok(c)
    }

    /// Waits until all `n` members registered their clusters in the job table (the first
    /// duty tick after start), so a submit can be placed.
    pub async fn wait_registered(&self, n: usize) -> anyhow::Result<()> {
        let c = self.client(1);
        wait_until("every member to register its clusters", DEADLINE, || {
            let c = c.clone();
            async move {
                let members = c
                    .rpc()
                    .members(launcher_proto::launcher::MembersRequest {
                        caller: Some(crate::client::admin()),
                    })
                    .await?
                    .into_inner()
                    .members;
                let info = c.cluster_info().await.unwrap_or_default();
                Ok((members.len() >= n && !info.is_empty()).then_some(()))
            }
        })
        .await
    }

    /// Starts `n` empty nodes that form the cluster themselves with `bootstrap-expect = n`,
    /// each knowing every address (as containers do through DNS).
    pub async fn start_bootstrap_expect(n: usize, opts: ClusterOpts) -> anyhow::Result<ProcessCluster> {
        let mut c = Self::empty(opts)?;
        // Every node must know the others' addresses up front: reserve ports by binding port 0.
        let hosts: Vec<String> = (0..n).map(|_| crate::unique_loopback()).collect();
        let listeners: Vec<std::net::TcpListener> = hosts
            .iter()
            .map(|h| std::net::TcpListener::bind(format!("{h}:0")))
            .collect::<Result<_, _>>()?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        drop(listeners);
        let join = hosts
            .iter()
            .zip(&ports)
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        for (i, (host, port)) in hosts.into_iter().zip(ports).enumerate() {
            let index = c.push_node(host, port)?;
            debug_assert_eq!(index, i + 1);
            let conf = c.write_config(index, port)?;
            let text: String = std::fs::read_to_string(&conf)?
                .lines()
                .filter(|l| !l.starts_with("join="))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .replace(
                    "[node]\n",
                    &format!("[node]\nbootstrap-expect={n}\njoin={join}\n"),
                );
            std::fs::write(&conf, text)?;
            c.spawn_raw(index, &[])?;
        }
        c.wait_green(n).await?;
        c.cluster_id = c.client(1).status().await?.cluster_id;
        Ok(c)
    }

    /// Creates the directory of node `len+1` (not started yet); returns its index.
    fn push_node(&mut self, host: String, port: u16) -> anyhow::Result<usize> {
        let index = self.nodes.len() + 1;
        let dir = self.root.path().join(format!("node{index}"));
        std::fs::create_dir_all(dir.join("data"))?;
        crate::traversable(&dir)?;
        self.nodes.push(ProcNode {
            index,
            dir,
            host,
            port,
            child: None,
        });
        Ok(index)
    }

    /// Adds node `len+1`; the first one initialises the cluster, later ones join node 1.
    pub async fn add_node(&mut self, init: bool) -> anyhow::Result<usize> {
        let index = self.push_node(crate::unique_loopback(), 0)?;
        self.spawn(index, init)?;
        let port = self.wait_port(index).await?;
        self.nodes[index - 1].port = port;
        if init {
            let client = NodeClient::new(&self.nodes[0].addr(), &self.key, "");
            let st = wait_until("node 1 to initialise", DEADLINE, || {
                let client = client.clone();
                async move { Ok(client.status().await.ok().filter(|s| !s.cluster_id.is_empty())) }
            })
            .await?;
            self.cluster_id = st.cluster_id;
        }
        Ok(index)
    }

    fn write_config(&self, index: usize, port: u16) -> anyhow::Result<PathBuf> {
        self.write_config_with_id(index, port, index as u64)
    }

    fn write_config_with_id(&self, index: usize, port: u16, id: u64) -> anyhow::Result<PathBuf> {
        let node = &self.nodes[index - 1];
        let join = if index == 1 {
            String::new()
        } else {
            format!("join={}\n", self.nodes[0].addr())
        };
        let mut clusters = String::new();
        for name in std::iter::once("Local").chain(self.opts.extra_clusters.iter().map(String::as_str)) {
            let (section, plugin_conf) = self.opts.plugin.section(name);
            clusters.push_str(&section);
            for line in &self.opts.cluster_lines {
                clusters.push_str(line);
                clusters.push('\n');
            }
            clusters.push('\n');
            if let Some((file, text)) = plugin_conf {
                std::fs::write(node.dir.join(file), text)?;
            }
        }
        for (name, text) in &self.opts.config_files {
            std::fs::write(node.dir.join(name), text)?;
        }
        if matches!(self.opts.plugin, TestPlugin::Local) {
            // The config dir (masked by default) holds the scratch path here, unlike
            // /etc/rstudio and /var/lib in production: hide the node's data and the key instead.
            let masked = format!(
                "masked-paths={},{}\n",
                node.data_dir().display(),
                self.key_path.display()
            );
            for name in std::iter::once("Local").chain(self.opts.extra_clusters.iter().map(String::as_str)) {
                std::fs::write(
                    node.dir.join(format!("launcher.{}.conf", name.to_lowercase())),
                    &masked,
                )?;
            }
        }
        let text = format!(
            "[server]\nsecure-cookie-key-file={key}\njob-expiry-hours=24\nserver-user={server_user}\n\
             request-timeout-seconds={request_timeout}\nheartbeat-interval-seconds={heartbeat}\n\
             scratch-path={scratch}\n\n[node]\nid={id}\n\
             grpc-address={host}:{port}\ndata-dir={data}\n{join}snapshot-log-entries={snap}\n\
             node-lost-timeout-seconds={lost}\ndead-member-removal-seconds={dead}\ncache-capacity-mb=16\n{extra}\n{clusters}",
            key = self.key_path.display(),
            server_user = crate::current_user(),
            request_timeout = self.opts.request_timeout_seconds,
            heartbeat = self.opts.heartbeat_interval_seconds,
            scratch = node.dir.join("scratch").display(),
            host = node.host,
            data = node.data_dir().display(),
            snap = self.opts.snapshot_log_entries,
            lost = self.opts.node_lost_timeout_seconds,
            dead = self.opts.dead_member_removal_seconds,
            extra = self.opts.node_lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        );
        let path = node.dir.join("launcher.conf");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn spawn(&mut self, index: usize, init: bool) -> anyhow::Result<()> {
        let port = self.nodes[index - 1].port;
        let conf = self.write_config(index, port)?;
        let node = &mut self.nodes[index - 1];
        let _ = std::fs::remove_file(node.data_dir().join(launcher_node::server::ADDR_FILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let mut cmd = Command::new(node_binary());
        cmd.arg("--config")
            .arg(&conf)
            .env("RSTUDIO_CONFIG_DIR", &node.dir)
            .env(
                "RUST_LOG",
                self.opts
                    .log_filter
                    .clone()
                    .or_else(|| std::env::var("LAUNCHER_NODE_LOG").ok())
                    .as_deref()
                    .unwrap_or("info,openraft=warn"),
            );
        if init {
            cmd.arg("--init");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    async fn wait_port(&mut self, index: usize) -> anyhow::Result<u16> {
        let file = self.nodes[index - 1]
            .data_dir()
            .join(launcher_node::server::ADDR_FILE);
        let node = &mut self.nodes[index - 1];
        let log = node.log_path();
        let r = wait_until(&format!("node {index} to listen"), DEADLINE, || {
            let file = file.clone();
            let alive = node.is_running();
            async move {
                if !alive {
                    anyhow::bail!("node exited");
                }
                let Ok(text) = std::fs::read_to_string(&file) else {
                    return Ok(None);
                };
                Ok(text.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
            }
        })
        .await;
        r.map_err(|e| anyhow::anyhow!("{e}\n--- node {index} log ---\n{}", tail(&log)))
    }

    /// Starts one more node configured with a member's id `claimed`; it must be refused.
    /// Returns its log.
    pub async fn add_node_expecting_failure(&mut self, claimed: u64) -> anyhow::Result<String> {
        let index = self.push_node(crate::unique_loopback(), 0)?;
        self.write_config_with_id(index, 0, claimed)?;
        self.spawn_raw(index, &[])?;
        let status = self.wait_exit(index).await?;
        let log = self.log(index);
        anyhow::ensure!(
            !status.success(),
            "a node claiming id {claimed} was accepted:\n{log}"
        );
        anyhow::ensure!(log.contains("already a member"), "unclear refusal:\n{log}");
        Ok(log)
    }

    /// A client of node `i`, bound to the cluster.
    pub fn client(&self, i: usize) -> NodeClient {
        NodeClient::new(&self.nodes[i - 1].addr(), &self.key, &self.cluster_id)
    }

    /// Re-reads the cluster id from node `i` (after a recovery started a new cluster).
    pub async fn rebind(&mut self, i: usize) -> anyhow::Result<()> {
        let port = self.wait_port(i).await?;
        self.nodes[i - 1].port = port;
        let c = NodeClient::new(&self.nodes[i - 1].addr(), &self.key, "");
        let st = wait_until("a cluster id", DEADLINE, || {
            let c = c.clone();
            async move {
                Ok(c.status()
                    .await
                    .ok()
                    .filter(|s| !s.cluster_id.is_empty() && s.leader != 0))
            }
        })
        .await?;
        self.cluster_id = st.cluster_id;
        Ok(())
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Indexes of nodes whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.index))
            .collect()
    }

    /// Waits until some running node reports `members` voters, all healthy, with a leader and no
    /// membership change in flight (a joint configuration needs both halves' quorums).
    pub async fn wait_green(&mut self, members: usize) -> anyhow::Result<u64> {
        let clients: Vec<NodeClient> = self.running().into_iter().map(|i| self.client(i)).collect();
        let r = wait_until(&format!("a Green cluster of {members} voters"), DEADLINE, || {
            let clients = clients.clone();
            async move {
                for c in &clients {
                    if let Ok(st) = c.status().await {
                        let voters = st.nodes.iter().filter(|n| n.voter).count();
                        let settled = !st.membership_changing;
                        if st.status == "Green" && settled && voters == members && st.nodes.len() == members {
                            return Ok(Some(st.leader));
                        }
                    }
                }
                Ok(None)
            }
        })
        .await;
        r.map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    /// Waits until a running node reports a leader, returning its node id.
    pub async fn wait_for_leader(&mut self) -> anyhow::Result<u64> {
        let clients: Vec<NodeClient> = self.running().into_iter().map(|i| self.client(i)).collect();
        wait_until("a leader", DEADLINE, || {
            let clients = clients.clone();
            async move {
                for c in &clients {
                    if let Ok(st) = c.status().await {
                        if st.leader != 0 && st.status != "Red" {
                            return Ok(Some(st.leader));
                        }
                    }
                }
                Ok(None)
            }
        })
        .await
    }

    /// Waits until every running node follows one and the same leader, returning its id (a
    /// node just restarted has heard from it; each follower watches it for fast failover).
    pub async fn wait_one_leader(&mut self) -> anyhow::Result<u64> {
        let clients: Vec<NodeClient> = self.running().into_iter().map(|i| self.client(i)).collect();
        wait_until("every node to follow one leader", DEADLINE, || {
            let clients = clients.clone();
            async move {
                let mut leaders = Vec::new();
                for c in &clients {
                    leaders.push(c.status().await?.leader);
                }
                Ok((leaders[0] != 0 && leaders.iter().all(|&l| l == leaders[0])).then_some(leaders[0]))
            }
        })
        .await
    }

    /// Waits until a running node reports a leader other than node id `excluding` (the one
    /// just killed or paused), returning its node id. Each node is asked with a short deadline
    /// of its own, so a paused (SIGSTOPped) node among them delays nothing.
    pub async fn wait_for_new_leader(&mut self, excluding: u64) -> anyhow::Result<u64> {
        self.wait_for_new_leader_within(excluding, DEADLINE).await
    }

    /// [`ProcessCluster::wait_for_new_leader`] with its own deadline.
    pub async fn wait_for_new_leader_within(
        &mut self,
        excluding: u64,
        deadline: std::time::Duration,
    ) -> anyhow::Result<u64> {
        use futures::StreamExt;
        let clients: Vec<NodeClient> = self.running().into_iter().map(|i| self.client(i)).collect();
        wait_until(&format!("a leader other than node {excluding}"), deadline, || {
            let clients = clients.clone();
            async move {
                let mut asks: futures::stream::FuturesUnordered<_> = clients
                    .iter()
                    // Short: a paused or cut-off node never answers, and a round waits for
                    // every ask, so a long timeout here would be measured as failover time.
                    .map(|c| tokio::time::timeout(std::time::Duration::from_millis(250), c.status()))
                    .collect();
                while let Some(answer) = asks.next().await {
                    if let Ok(Ok(st)) = answer {
                        if st.leader != 0 && st.leader != excluding && st.status != "Red" {
                            return Ok(Some(st.leader));
                        }
                    }
                }
                Ok(None)
            }
        })
        .await
    }

    /// SIGSTOP node `i` (a pause: a long GC, a frozen VM) and wait until the kernel shows it
    /// stopped; [`ProcessCluster::resume`] continues it. Its plugin keeps running.
    pub async fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.nodes[i - 1]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("node {i} not running"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
        wait_until(&format!("node {i} to stop"), DEADLINE, || async move {
            Ok((process_state(pid) == Some('T')).then_some(()))
        })
        .await
    }

    /// SIGCONT node `i` after [`ProcessCluster::pause`].
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.nodes[i - 1]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("node {i} not running"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT)?;
        Ok(())
    }

    /// Waits until node `i` applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) -> anyhow::Result<()> {
        let c = self.client(i);
        wait_until(&format!("node {i} to apply {index}"), DEADLINE, || {
            let c = c.clone();
            async move {
                let (applied, _) = c.list_stale(0).await?;
                Ok((applied >= index).then_some(()))
            }
        })
        .await
    }

    /// SIGKILL node `i` (a crash: nothing is flushed).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i` and wait for it to exit; returns its exit status.
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.nodes[i - 1]
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("node {i} not running"))?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        reap(child, &format!("node {i} to exit after SIGTERM")).await
    }

    /// Restarts node `i` with its data and port.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(!self.nodes[i - 1].is_running(), "node {i} still runs");
        self.spawn(i, false)?;
        let port = self.wait_port(i).await?;
        anyhow::ensure!(
            port == self.nodes[i - 1].port,
            "node {i} came back on another port"
        );
        Ok(())
    }

    /// Deletes node `i`'s data (it must be stopped).
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        let d = self.nodes[i - 1].data_dir();
        std::fs::remove_dir_all(&d)?;
        std::fs::create_dir_all(&d)?;
        Ok(())
    }

    /// Waits for node `i`'s process to exit by itself; returns its status.
    pub async fn wait_exit(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.nodes[i - 1]
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("node {i} not running"))?;
        reap(child, &format!("node {i} to exit")).await
    }

    /// Starts node `i` again without touching its config (for fault tests that edited it).
    pub fn spawn_raw(&mut self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let node = &mut self.nodes[i - 1];
        let conf = node.dir.join("launcher.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let child = Command::new(node_binary())
            .arg("--config")
            .arg(&conf)
            .args(args)
            .env("RSTUDIO_CONFIG_DIR", &node.dir)
            .env("LAUNCHER_EXIT_WITH_PARENT", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} log ---\n{}\n", n.index, tail(&n.log_path())))
            .collect()
    }

    /// The whole log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i - 1].log_path()).unwrap_or_default()
    }
}

/// Waits for `child` to exit; kills it if it does not within the deadline (never leaks it).
async fn reap(mut child: Child, what: &str) -> anyhow::Result<std::process::ExitStatus> {
    let r = wait_until(what, DEADLINE, || {
        let r = child.try_wait();
        async move { Ok(r?) }
    })
    .await;
    if r.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    r
}

/// The state letter of process `pid` in `/proc/<pid>/stat` (`T` = stopped), if it exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // On failure (or on request) the node logs go to the test's output.
        if std::thread::panicking() || std::env::var_os("LAUNCHER_TEST_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
        // On request the whole directory (configs, data, full logs) stays for a post-mortem.
        if std::env::var_os("LAUNCHER_KEEP_TEST_DIR").is_some() {
            self.root.disable_cleanup(true);
            eprintln!("kept the cluster's directory {}", self.root.path().display());
        }
    }
}
