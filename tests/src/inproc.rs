//! Nodes running inside the test's own runtime, for logic tests that propose raw commands.
//! Not for durability: stopping an in-process node lets storage flush.

use std::sync::Arc;

use launcher_node::config::{ClusterConfig, ClusterType, Config};
use launcher_node::state::NodeState;
use launcher_node::{NodeHandle, StartOptions};

use crate::client::NodeClient;
use crate::{wait_until, write_key, DEADLINE};

/// A cluster of in-process nodes, each on its own loopback address, port 0.
pub struct InProcCluster {
    pub root: tempfile::TempDir,
    pub key: Vec<u8>,
    pub nodes: Vec<Option<NodeHandle>>,
    configs: Vec<Config>,
    /// The fault plan every node's calls to the others pass through.
    pub faults: Option<Arc<crate::faults::Plan>>,
}

impl InProcCluster {
    /// Starts `n` nodes (node 1 initialises, the others join) and waits for them all to be voters.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with_plugin(n, crate::TestPlugin::Local).await
    }

    /// Like [`InProcCluster::start`], with `plugin` serving cluster `Local`.
    pub async fn start_with_plugin(n: usize, plugin: crate::TestPlugin) -> anyhow::Result<Self> {
        Self::start_with(n, plugin, None).await
    }

    /// Like [`InProcCluster::start`], every call between nodes passing through `plan`
    /// (deterministic fault injection, [`crate::faults`]).
    pub async fn start_with_faults(n: usize, plan: Arc<crate::faults::Plan>) -> anyhow::Result<Self> {
        Self::start_with(n, crate::TestPlugin::Local, Some(plan)).await
    }

    async fn start_with(
        n: usize,
        plugin: crate::TestPlugin,
        faults: Option<Arc<crate::faults::Plan>>,
    ) -> anyhow::Result<Self> {
        crate::ensure_test_users();
        let root = tempfile::Builder::new().prefix("launcher-inproc-").tempdir()?;
        crate::traversable(root.path())?;
        let key_path = root.path().join("secure-cookie-key");
        let key = write_key(&key_path)?;
        let mut c = InProcCluster {
            root,
            key,
            nodes: Vec::new(),
            configs: Vec::new(),
            faults,
        };
        for i in 1..=n {
            let dir = c.root.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir)?;
            crate::traversable(&dir)?;
            let mut cfg = Config::new(dir.clone());
            cfg.server.secure_cookie_key_file = key_path.clone();
            cfg.node.id = Some(i as u64);
            cfg.node.grpc_address = format!("{}:0", crate::unique_loopback());
            cfg.node.data_dir = dir.join("data");
            cfg.node.cache_capacity_mb = 16;
            if i > 1 {
                cfg.node.join = vec![c.nodes[0].as_ref().expect("node 1").addr.to_string()];
            }
            cfg.server.server_user = crate::current_user();
            cfg.server.scratch_path = dir.join("scratch");
            let local = match &plugin {
                crate::TestPlugin::Local => {
                    let mut c = ClusterConfig::new("Local", ClusterType::Local);
                    c.exe = Some(crate::process::local_plugin_binary());
                    // The config dir (masked by default) holds the scratch path here.
                    let masked = format!(
                        "masked-paths={},{}\n",
                        dir.join("data").display(),
                        key_path.display()
                    );
                    std::fs::write(dir.join("launcher.local.conf"), masked)?;
                    c
                }
                crate::TestPlugin::Scripted(conf) => {
                    let mut c = ClusterConfig::new("Local", ClusterType::Plugin);
                    c.exe = Some(crate::process::scripted_plugin());
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join(format!("launcher.{}.conf", c.plugin_name)), conf)?;
                    c
                }
            };
            cfg.clusters = vec![local];
            let handle = launcher_node::start(cfg.clone(), c.options(i == 1)).await?;
            // Keep the bound port for restarts.
            cfg.node.grpc_address = handle.addr.to_string();
            c.configs.push(cfg);
            c.nodes.push(Some(handle));
        }
        let client = c.client(1).await?;
        wait_until(&format!("{n} voters"), DEADLINE, || {
            let client = client.clone();
            async move {
                let st = client.status().await?;
                let voters = st.nodes.iter().filter(|x| x.voter).count();
                Ok((st.status == "Green" && !st.membership_changing && voters == n).then_some(()))
            }
        })
        .await?;
        // The leader reports the last membership change of the formation as soon as it holds
        // it, maybe before it is committed and before the others have it: a test that starts
        // a change of its own then would meet "already undergoing a configuration change", or a
        // follower still in the joint configuration before it. Every node applies it first.
        wait_until("every node to apply the same membership", DEADLINE, || {
            let views: Vec<_> = (1..=n)
                .map(|i| {
                    let m = c.shared(i).raft.metrics();
                    let m = m.borrow();
                    let at = *m.membership_config.log_id();
                    let applied = at.is_some_and(|at| m.last_applied.is_some_and(|a| a.index >= at.index));
                    (at, applied)
                })
                .collect();
            async move { Ok(views.iter().all(|v| v.1 && v.0 == views[0].0).then_some(())) }
        })
        .await?;
        Ok(c)
    }

    fn options(&self, init: bool) -> StartOptions {
        StartOptions {
            init,
            faults: self
                .faults
                .clone()
                .map(|p| p as Arc<dyn launcher_node::faults::FaultPlan>),
        }
    }

    /// Node `i`'s own loopback address (the one its calls to other nodes come from).
    pub fn ip(&self, i: usize) -> std::net::IpAddr {
        self.configs[i - 1]
            .node
            .grpc_address
            .parse::<std::net::SocketAddr>()
            .expect("bound address")
            .ip()
    }

    /// Node `i`'s shared state.
    pub fn shared(&self, i: usize) -> Arc<NodeState> {
        self.nodes[i - 1]
            .as_ref()
            .and_then(|h| h.shared())
            .expect("node running")
    }

    /// A client of node `i`, bound to the cluster.
    pub async fn client(&self, i: usize) -> anyhow::Result<NodeClient> {
        let addr = self.nodes[i - 1].as_ref().expect("node running").addr.to_string();
        let c = NodeClient::new(&addr, &self.key, "");
        let probe = c.clone();
        wait_until("cluster id", DEADLINE, || {
            let probe = probe.clone();
            async move { Ok(probe.bind().await.ok()) }
        })
        .await?;
        Ok(c)
    }

    /// Waits until node `i` knows a leader; returns its id.
    pub async fn wait_for_leader(&self, i: usize) -> anyhow::Result<u64> {
        let s = self.shared(i);
        wait_until("a leader", DEADLINE, || {
            let s = s.clone();
            async move { Ok(s.leader()) }
        })
        .await
    }

    /// Waits until node `i` is up (Raft running) and applied `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) -> anyhow::Result<()> {
        let handle = self.nodes[i - 1]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {i} is stopped"))?;
        wait_until(&format!("node {i} to apply {index}"), DEADLINE, || {
            let s = handle.shared();
            async move {
                match s {
                    Some(s) => Ok(s.wait_applied(index).await.ok()),
                    None => Ok(None),
                }
            }
        })
        .await
    }

    /// Stops node `i` (in-process: storage is flushed, so this is no crash test).
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop(i).await
    }

    /// Gracefully stops node `i`.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(h) = self.nodes[i - 1].take() {
            h.shutdown().await?;
        }
        Ok(())
    }

    /// Restarts node `i` with its data and address.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let h = launcher_node::start(self.configs[i - 1].clone(), self.options(false)).await?;
        self.nodes[i - 1] = Some(h);
        Ok(())
    }
}
