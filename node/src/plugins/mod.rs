//! The plugin host (DESIGN §5): the node's plugins, one per `[cluster]`, which the job driver
//! (`crate::driver`) uses for the jobs this node owns.
//!
//! * [`host`]: one plugin process, its protocol, heartbeats and restarts.
//! * [`launcher`]: how a plugin process is started and stopped: directly, or through the
//!   privileged [`spawner`] when the node has given root up for `server-user`.
//! * [`bookkeeping`]: the driver's in-memory record of the jobs it drives, held by the node's
//!   state.

pub mod bookkeeping;
pub mod host;
pub mod launcher;
pub mod spawner;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClusterConfig, ClusterType, Config};
pub use host::{PluginError, PluginHost, PluginSpec, PluginStream};
pub use launcher::ProcessLauncher;

/// How long a plugin gets between SIGTERM and SIGKILL when the node stops.
pub const PLUGIN_STOP_GRACE: Duration = Duration::from_secs(5);

/// The binary a cluster's plugin runs: `exe`, or ours for Local and Slurm (next to this
/// binary, else on PATH).
pub fn plugin_exe(cluster: &ClusterConfig) -> PathBuf {
    if let Some(exe) = &cluster.exe {
        return exe.clone();
    }
    let name = match cluster.kind {
        ClusterType::Local => "launcher-local-plugin",
        ClusterType::Slurm => "launcher-slurm-plugin",
        // validate() requires exe for Plugin clusters.
        ClusterType::Plugin => "launcher-plugin",
    };
    std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The standard plugin options of DESIGN §5, from the node's config, plus `plugin-args`.
pub fn plugin_args(config: &Config, cluster: &ClusterConfig) -> Vec<String> {
    let s = &config.server;
    let unprivileged = !nix::unistd::geteuid().is_root();
    let mut args = vec![
        format!("--enable-debug-logging={}", u8::from(s.enable_debug_logging)),
        format!(
            "--log-level={}",
            if s.enable_debug_logging { "debug" } else { "info" }
        ),
        format!("--heartbeat-interval-seconds={}", s.heartbeat_interval_seconds),
        format!("--job-expiry-hours={}", s.job_expiry_hours),
        format!(
            "--launcher-config-file={}",
            config.dir.join(crate::config::CONFIG_FILE_NAME).display()
        ),
        format!("--plugin-name={}", cluster.plugin_name),
        format!(
            "--max-message-size={}",
            launcher_plugin_api::framing::MAX_MESSAGE_BYTES
        ),
        format!(
            "--scratch-path={}",
            s.scratch_path.join(&cluster.plugin_name).display()
        ),
        format!("--server-user={}", s.server_user),
        format!("--unprivileged={}", u8::from(unprivileged)),
    ];
    if let Some(n) = s.thread_pool_size {
        args.push(format!("--thread-pool-size={n}"));
    }
    args.extend(cluster.plugin_args.iter().cloned());
    args
}

/// How the node starts `cluster`'s plugin.
pub fn plugin_spec(config: &Config, cluster: &ClusterConfig) -> PluginSpec {
    let s = &config.server;
    PluginSpec {
        cluster: cluster.name.clone(),
        exe: plugin_exe(cluster),
        args: plugin_args(config, cluster),
        // Several nodes on one machine each have their own config dir; plugins read theirs from it.
        env: vec![(
            crate::config::CONFIG_DIR_ENV.to_string(),
            config.dir.display().to_string(),
        )],
        request_timeout: Duration::from_secs(s.request_timeout_seconds),
        bootstrap_timeout: Duration::from_secs(s.bootstrap_timeout_seconds),
        heartbeat: (s.heartbeat_interval_seconds > 0)
            .then(|| Duration::from_secs(s.heartbeat_interval_seconds)),
        stop_grace: PLUGIN_STOP_GRACE,
        launcher: ProcessLauncher::Direct,
    }
}

/// What the privileged spawner may start: every cluster's plugin as [`plugin_spec`] has it,
/// computed while the node is still root (so the plugins are told they run privileged).
pub fn spawn_specs(config: &Config) -> Vec<spawner::SpawnSpec> {
    config
        .clusters
        .iter()
        .map(|c| {
            let s = plugin_spec(config, c);
            spawner::SpawnSpec {
                cluster: s.cluster,
                exe: s.exe,
                args: s.args,
                env: s.env,
            }
        })
        .collect()
}

/// The node's plugins by cluster name.
#[derive(Clone, Default)]
pub struct Plugins {
    by_cluster: HashMap<String, Arc<PluginHost>>,
}

impl Plugins {
    /// Starts (through `launcher`) and bootstraps every configured plugin; any failure stops
    /// the others and names the cluster and what went wrong (the node must not start then,
    /// DESIGN §5).
    pub async fn start_with(
        config: &Config,
        launcher: ProcessLauncher,
    ) -> crate::error::StartResult<Plugins> {
        let starts = config.clusters.iter().map(|c| {
            let mut spec = plugin_spec(config, c);
            // What the spawner was given is what runs; the log and errors name that.
            if let Some(fixed) = launcher.fixed_spec(&c.name) {
                spec.exe = fixed.exe.clone();
                spec.args = fixed.args.clone();
                spec.env = fixed.env.clone();
            }
            spec.launcher = launcher.clone();
            async move {
                (
                    spec.cluster.clone(),
                    spec.exe.clone(),
                    PluginHost::start(spec).await,
                )
            }
        });
        let results = futures::future::join_all(starts).await;
        let mut plugins = Plugins::default();
        let mut errors = Vec::new();
        for (cluster, exe, r) in results {
            match r {
                Ok(p) => {
                    plugins.by_cluster.insert(cluster, p);
                }
                Err(e) => errors.push(format!("cluster '{cluster}' (plugin {}): {e}", exe.display())),
            }
        }
        if !errors.is_empty() {
            plugins.shutdown().await;
            return Err(crate::error::StartError::Plugin(format!(
                "plugins failed to start, so the node does not start:\n  {}",
                errors.join("\n  ")
            )));
        }
        Ok(plugins)
    }

    /// The plugin of `cluster`, if this node hosts it.
    pub fn get(&self, cluster: &str) -> Option<&Arc<PluginHost>> {
        self.by_cluster.get(cluster)
    }

    /// Every plugin.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PluginHost>> {
        self.by_cluster.values()
    }

    /// SIGTERM every plugin, wait a bounded time, then SIGKILL (DESIGN §1 ordered stop).
    pub async fn shutdown(&self) {
        futures::future::join_all(self.by_cluster.values().map(|p| p.shutdown())).await;
    }
}
