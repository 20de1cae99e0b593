//! Loading and checking `launcher.conf` (docs/configuration.md).
//!
//! The file is INI as in the product: `[server]`, `[node]` (ours) and any number of `[cluster]`
//! sections, each of which is its own cluster. Lines are `key=value` (whitespace around both
//! trimmed), full-line comments starting with `#` or `;`, or blank. There are no inline comments,
//! quotes or escapes: everything after the first `=` is the value.
//!
//! The lines are read by `launcher-config`, which the gateway shares, against the key tables
//! below (one entry per key: parsing, environment overrides and `dump` use the same table). An
//! operator editing a file by hand gets `launcher.conf:12: [node] heartbeat-ms: ...` for every
//! problem at once, not the first one.
//!
//! Every problem is collected into [`ConfigErrors`]: syntax, unknown sections and keys, duplicate
//! keys, bad values and cross-field constraints. Container deployments override a few keys from
//! `LAUNCHER_*` environment variables (see [`ENV_OVERRIDES`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use launcher_config::{
    config_dir, config_dir_from, ConfigError, ConfigErrors, CONFIG_DIR_ENV, CONFIG_FILE_NAME,
    DEFAULT_CONFIG_DIR,
};
use launcher_config::{KeySpec, Open, Sections};
use serde::Serialize;

mod check;
mod keys;

use check::check;
use keys::{CLUSTER_KEYS, NODE_KEYS};
pub use launcher_config::server::ServerConfig;
use launcher_config::server::SERVER_KEYS;

type Origins = launcher_config::Origins<Sect>;

/// Environment overrides for containers: `(variable, section, key)`; a set, non-blank variable
/// replaces the key's value from the file.
pub const ENV_OVERRIDES: &[(&str, &str, &str)] = &[
    ("LAUNCHER_NODE_ID", "node", "id"),
    ("LAUNCHER_GRPC_ADDRESS", "node", "grpc-address"),
    ("LAUNCHER_ADVERTISE_ADDRESS", "node", "advertise-address"),
    ("LAUNCHER_DATA_DIR", "node", "data-dir"),
    ("LAUNCHER_JOIN", "node", "join"),
    ("LAUNCHER_BOOTSTRAP_EXPECT", "node", "bootstrap-expect"),
    ("LAUNCHER_PORT", "server", "port"),
    ("LAUNCHER_ADDRESS", "server", "address"),
];

/// Reads and checks the file at `path`; `Config::dir` becomes the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, |_| None)
}

/// Like [`load`], then applies [`ENV_OVERRIDES`] from `env` before the cross-field checks, so an
/// error caused by an override names the variable rather than a line of the file.
pub fn load_with_env(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    tracing::debug!(path = %file, "loading launcher configuration");
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError {
            file: file.clone(),
            line: None,
            section: String::new(),
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse_inner(&text, &file, &dir, &env)
}

/// Parses and checks `text`; `file_name` is used in error messages and `Config::dir` is
/// [`config_dir()`].
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    parse_with_dir(text, file_name, &config_dir())
}

/// Like [`parse`] with an explicit configuration directory (for defaults such as the
/// secure-cookie-key path).
pub fn parse_with_dir(text: &str, file_name: &str, dir: &Path) -> Result<Config, ConfigErrors> {
    parse_inner(text, file_name, dir, &|_| None)
}

fn parse_inner(
    text: &str,
    file: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let (mut config, mut origins, mut errors) = parse_text(text, file, dir);
    errors.extend(apply_env(&mut config, &mut origins, env));
    errors.extend(check(&config, &origins));
    ConfigErrors::result(errors).map(|()| config)
}

/// The whole effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// `[server]`: the HTTP side, authentication and plugin options.
    pub server: ServerConfig,
    /// `[node]`: Raft membership and storage of this node.
    pub node: NodeConfig,
    /// Every `[cluster]` section, in file order.
    pub clusters: Vec<ClusterConfig>,
    /// The configuration directory (holds secure-cookie-key, filter files, plugin configs).
    pub dir: PathBuf,
}

impl Default for Config {
    /// Documented defaults rooted in [`config_dir()`], with no clusters.
    fn default() -> Self {
        Config::new(config_dir())
    }
}

impl Config {
    /// Documented defaults rooted in `dir`, with no clusters.
    pub fn new(dir: PathBuf) -> Self {
        Config {
            server: ServerConfig::with_config_dir(&dir),
            node: NodeConfig::default(),
            clusters: Vec::new(),
            dir,
        }
    }

    /// Runs the cross-field and value checks on a configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        ConfigErrors::result(check(self, &Origins::new(self.default_file_name())))
    }

    /// Applies [`ENV_OVERRIDES`] read through `env`, then checks the result. Values that do not
    /// parse are reported and leave the key unchanged; blank variables are ignored.
    pub fn apply_env_overrides(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigErrors> {
        let mut origins = Origins::new(self.default_file_name());
        let mut errors = apply_env(self, &mut origins, &env);
        errors.extend(check(self, &origins));
        ConfigErrors::result(errors)
    }

    /// The effective configuration as `launcher.conf` text (every key, defaults included), for
    /// debug logs; parsing it again gives the same configuration.
    pub fn dump(&self) -> String {
        let mut out = format!("# effective configuration (config dir: {})\n", self.dir.display());
        KeySpec::write_section(&mut out, "server", SERVER_KEYS, &self.server);
        KeySpec::write_section(&mut out, "node", NODE_KEYS, &self.node);
        for cluster in &self.clusters {
            KeySpec::write_section(&mut out, "cluster", CLUSTER_KEYS, cluster);
        }
        out
    }

    /// The cluster with this exact name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The plugin's own config file, `<dir>/launcher.<plugin-name>.conf`.
    pub fn plugin_config_file(&self, cluster: &ClusterConfig) -> PathBuf {
        self.dir.join(format!("launcher.{}.conf", cluster.plugin_name))
    }

    fn default_file_name(&self) -> String {
        self.dir.join(CONFIG_FILE_NAME).display().to_string()
    }
}

/// `[node]` section (ours): membership, Raft timing and storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeConfig {
    /// Node id, positive (`id`); unset means the leader assigns one at join.
    pub id: Option<u64>,
    /// gRPC listen address, `host:port` (`grpc-address`, default `0.0.0.0:5560`).
    pub grpc_address: String,
    /// Address other nodes use to reach this one (`advertise-address`).
    pub advertise_address: Option<String>,
    /// Raft log, state machine and persisted ids (`data-dir`, default `/var/lib/rstudio-launcher/node`).
    pub data_dir: PathBuf,
    /// Addresses or DNS names of members to join (`join`, comma separated `host:port`).
    pub join: Vec<String>,
    /// Form a new cluster once this many empty nodes see each other (`bootstrap-expect`).
    pub bootstrap_expect: Option<usize>,
    /// A member unseen this long is lost (`node-lost-timeout-seconds`, default 30).
    pub node_lost_timeout_seconds: u64,
    /// A member down this long is removed (`dead-member-removal-seconds`, default 300; 0 disables).
    pub dead_member_removal_seconds: u64,
    /// Snapshot every this many log entries (`snapshot-log-entries`, default 10000).
    pub snapshot_log_entries: u64,
    /// Raft heartbeat period (`heartbeat-ms`, default 250).
    pub heartbeat_ms: u64,
    /// Raft election timeout lower bound (`election-timeout-min-ms`, default 1500).
    pub election_timeout_min_ms: u64,
    /// Raft election timeout upper bound (`election-timeout-max-ms`, default 3000).
    pub election_timeout_max_ms: u64,
    /// Call an election at once when the leader's process is gone (`fast-failover`, default 1):
    /// its port refuses connections after the watch on it broke; or when it is silent for three
    /// heartbeats, does not answer and no other follower hears it (`failover.rs`).
    pub fast_failover: bool,
    /// sled page cache (`cache-capacity-mb`, default 64).
    pub cache_capacity_mb: u64,
    /// Writes the leader holds in its proposal queue at most; more are refused as Overloaded
    /// (`max-pending-writes`, default 10000).
    pub max_pending_writes: usize,
    /// A write not committed within this many seconds is abandoned and answered Unavailable
    /// (`write-timeout-seconds`, default 10).
    pub write_timeout_seconds: u64,
    /// Expected cluster id (`cluster-id`); unset accepts whatever the data dir or join gives.
    pub cluster_id: Option<String>,
}

impl Default for NodeConfig {
    /// Documented defaults.
    fn default() -> Self {
        NodeConfig {
            id: None,
            grpc_address: "0.0.0.0:5560".to_string(),
            advertise_address: None,
            data_dir: PathBuf::from("/var/lib/rstudio-launcher/node"),
            join: Vec::new(),
            bootstrap_expect: None,
            node_lost_timeout_seconds: 30,
            dead_member_removal_seconds: 300,
            snapshot_log_entries: 10_000,
            heartbeat_ms: 250,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            fast_failover: true,
            cache_capacity_mb: 64,
            max_pending_writes: 10_000,
            write_timeout_seconds: 10,
            cluster_id: None,
        }
    }
}

/// Kind of a `[cluster]` (its `type` key, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum ClusterType {
    /// Jobs run on the node itself through our Local plugin.
    #[default]
    Local,
    /// Jobs go to Slurm, whose scheduler outlives any node.
    Slurm,
    /// Any third-party plugin binary named by `exe`.
    Plugin,
}

impl ClusterType {
    /// The name as written in the file: `Local`, `Slurm` or `Plugin`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::Local => "Local",
            ClusterType::Slurm => "Slurm",
            ClusterType::Plugin => "Plugin",
        }
    }

    /// Whether jobs outlive their node by default (`shared-scheduler`): only for Slurm.
    pub fn default_shared_scheduler(self) -> bool {
        matches!(self, ClusterType::Slurm)
    }
}

impl fmt::Display for ClusterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `type` that is not Local, Slurm or Plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cluster type '{0}' (expected Local, Slurm or Plugin)")]
pub struct UnknownClusterType(pub String);

impl FromStr for ClusterType {
    type Err = UnknownClusterType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ClusterType::Local, ClusterType::Slurm, ClusterType::Plugin]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownClusterType(s.to_string()))
    }
}

/// One `[cluster]` section: a plugin process this node hosts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// Cluster name seen by API users (`name`, required, unique).
    pub name: String,
    /// Kind of cluster (`type`, required).
    pub kind: ClusterType,
    /// Plugin binary (`exe`); required for `Plugin`, defaults to ours for `Local`.
    pub exe: Option<PathBuf>,
    /// Plugin name, used for `launcher.<plugin-name>.conf` (`plugin-name`, default: lowercased name).
    pub plugin_name: String,
    /// Extra `--name=value` options passed verbatim (`plugin-args`, whitespace separated).
    pub plugin_args: Vec<String>,
    /// Jobs outlive their node and are adopted elsewhere (`shared-scheduler`, default: Slurm only).
    pub shared_scheduler: bool,
    /// Host directories non-admin jobs may mount from (`allowed-mount-sources`, comma-separated
    /// absolute paths, `{USER}` replaced by the job's user), besides the `Host` entries of
    /// `launcher-mounts` (docs/security.md).
    pub allowed_mount_sources: Vec<String>,
    /// Smallest uid a job may run as (`min-uid`, default 1000; 0 allows root jobs).
    pub min_uid: u32,
    /// Largest `resourceLimits` a job may ask for (`max-cpu-count`, `max-cpu-time-seconds`,
    /// `max-memory-mb`, `max-memory-swap-mb`); unset: only the built-in ceiling applies.
    pub max_cpu_count: Option<f64>,
    pub max_cpu_time_seconds: Option<f64>,
    pub max_memory_mb: Option<f64>,
    pub max_memory_swap_mb: Option<f64>,
}

/// The default `min-uid`: the first ordinary account on Debian and most distributions.
pub const DEFAULT_MIN_UID: u32 = 1000;

impl Default for ClusterConfig {
    /// The product's default cluster: `name=Local`, `type=Local`.
    fn default() -> Self {
        ClusterConfig::new("Local", ClusterType::Local)
    }
}

impl ClusterConfig {
    /// A cluster with the documented defaults for its name and type.
    pub fn new(name: &str, kind: ClusterType) -> Self {
        ClusterConfig {
            name: name.to_string(),
            kind,
            exe: None,
            plugin_name: name.to_lowercase(),
            plugin_args: Vec::new(),
            shared_scheduler: kind.default_shared_scheduler(),
            allowed_mount_sources: Vec::new(),
            min_uid: DEFAULT_MIN_UID,
            max_cpu_count: None,
            max_cpu_time_seconds: None,
            max_memory_mb: None,
            max_memory_swap_mb: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where each value came from, so that checks on the typed config can still point at a line.

/// A section of the file: `[server]`, `[node]`, or the `i`-th `[cluster]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sect {
    Server,
    Node,
    Cluster(usize),
}

impl Sect {
    /// The section's name in the file.
    pub fn kind(self) -> &'static str {
        match self {
            Sect::Server => "server",
            Sect::Node => "node",
            Sect::Cluster(_) => "cluster",
        }
    }
}

impl Sections for Config {
    type Id = Sect;

    fn open(&mut self, name: &str) -> Option<Open<Sect>> {
        match name {
            "server" => Some(Open::Keys {
                section: Sect::Server,
                repeat: false,
            }),
            "node" => Some(Open::Keys {
                section: Sect::Node,
                repeat: false,
            }),
            "cluster" => {
                // Placeholder values; `finish_clusters` fills in what the section leaves unset.
                self.clusters.push(ClusterConfig::new("", ClusterType::Local));
                Some(Open::Keys {
                    section: Sect::Cluster(self.clusters.len() - 1),
                    repeat: true,
                })
            }
            _ => None,
        }
    }

    fn name(&self, id: Sect) -> &'static str {
        id.kind()
    }

    fn known_key(&self, id: Sect, key: &str) -> Option<&'static str> {
        known_key(id.kind(), key)
    }

    fn key_names(&self, id: Sect) -> Vec<&'static str> {
        key_names(id.kind())
    }

    fn home_of(&self, id: Sect, key: &str) -> Option<&'static str> {
        launcher_config::SECTION_NAMES
            .into_iter()
            .find(|s| *s != id.kind() && known_key(s, key).is_some())
    }

    fn set(&mut self, id: Sect, key: &'static str, value: &str) -> Result<(), String> {
        match id {
            Sect::Server => KeySpec::apply(SERVER_KEYS, &mut self.server, key, value),
            Sect::Node => KeySpec::apply(NODE_KEYS, &mut self.node, key, value),
            Sect::Cluster(i) => KeySpec::apply(CLUSTER_KEYS, &mut self.clusters[i], key, value),
        }
    }
}

/// Known key name in `'static` form, if `key` belongs to `section`.
fn known_key(section: &str, key: &str) -> Option<&'static str> {
    match section {
        "server" => KeySpec::find(SERVER_KEYS, key).map(|k| k.name),
        "node" => KeySpec::find(NODE_KEYS, key).map(|k| k.name),
        "cluster" => KeySpec::find(CLUSTER_KEYS, key).map(|k| k.name),
        _ => None,
    }
}

/// The keys `section` accepts, in table order.
fn key_names(section: &str) -> Vec<&'static str> {
    match section {
        "server" => KeySpec::names(SERVER_KEYS),
        "node" => KeySpec::names(NODE_KEYS),
        "cluster" => KeySpec::names(CLUSTER_KEYS),
        _ => Vec::new(),
    }
}

fn parse_text(text: &str, file: &str, dir: &Path) -> (Config, Origins, Vec<ConfigError>) {
    let mut config = Config::new(dir.to_path_buf());
    let mut origins = Origins::new(file);
    let mut errors = launcher_config::read(text, &mut origins, &mut config);
    finish_clusters(&mut config, &mut origins, &mut errors);
    (config, origins, errors)
}

/// Reports missing required keys and fills in defaults that depend on `name` and `type`.
fn finish_clusters(config: &mut Config, origins: &mut Origins, errors: &mut Vec<ConfigError>) {
    for (i, cluster) in config.clusters.iter_mut().enumerate() {
        let sect = Sect::Cluster(i);
        let header = origins.sections.get(&sect).copied().unwrap_or(0);
        for (key, what) in [("name", "the cluster's name"), ("type", "Local, Slurm or Plugin")] {
            if !origins.keys.contains_key(&(sect, key)) {
                let message = format!("missing required key '{key}' ({what})");
                errors.push(origins.at(header, "cluster", Some(key), message));
                origins.bad.insert((sect, key));
            }
        }
        if !origins.keys.contains_key(&(sect, "plugin-name")) {
            cluster.plugin_name = cluster.name.to_lowercase();
            if origins.bad.contains(&(sect, "name")) {
                origins.bad.insert((sect, "plugin-name"));
            }
        }
        if !origins.keys.contains_key(&(sect, "shared-scheduler")) {
            cluster.shared_scheduler = cluster.kind.default_shared_scheduler();
        }
    }
}

fn apply_env(
    config: &mut Config,
    origins: &mut Origins,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<ConfigError> {
    let overrides = ENV_OVERRIDES.iter().map(|&(var, section, key)| {
        let sect = if section == "server" {
            Sect::Server
        } else {
            Sect::Node
        };
        (var, sect, key)
    });
    launcher_config::apply_env(overrides, env, origins, config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const FILE: &str = "launcher.conf";

    fn parse_ok(text: &str) -> Config {
        match parse_with_dir(text, FILE, Path::new("/cfg")) {
            Ok(config) => config,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    fn parse_err(text: &str) -> ConfigErrors {
        match parse_with_dir(text, FILE, Path::new("/cfg")) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(e) => e,
        }
    }

    fn lines(errors: &ConfigErrors) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    /// Exactly one error, displayed as `expected`.
    fn assert_one_error(text: &str, expected: &str) {
        let errors = parse_err(text);
        assert_eq!(lines(&errors), vec![expected.to_string()], "for input:\n{text}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// Defaults are exactly those of docs/configuration.md.
    #[test]
    fn defaults_match_the_design() {
        let server = ServerConfig::with_config_dir(Path::new("/cfg"));
        assert_eq!(server.address, "0.0.0.0");
        assert_eq!(server.port, 5559);
        assert_eq!(server.unix_socket, None);
        assert!(!server.enable_ssl);
        assert_eq!(server.server_user, "rstudio-server");
        assert!(server.authorization_enabled);
        assert_eq!(server.admin_group, None);
        assert!(server.admin_users.is_empty());
        assert_eq!(
            server.secure_cookie_key_file,
            PathBuf::from("/cfg/secure-cookie-key")
        );
        assert_eq!(server.max_token_lifetime_seconds, 86_400);
        assert_eq!(server.max_request_body_bytes, 1024 * 1024);
        assert_eq!(server.thread_pool_size, None);
        assert_eq!(server.request_timeout_seconds, 120);
        assert_eq!(server.bootstrap_timeout_seconds, 120);
        assert_eq!(server.heartbeat_interval_seconds, 5);
        assert_eq!(server.job_expiry_hours, 24);
        assert!(!server.enable_debug_logging);
        assert_eq!(server.scratch_path, PathBuf::from("/var/lib/rstudio-launcher"));
        assert!(server.nodes.is_empty());

        let node = NodeConfig::default();
        assert_eq!(node.id, None);
        assert_eq!(node.grpc_address, "0.0.0.0:5560");
        assert_eq!(node.advertise_address, None);
        assert_eq!(node.data_dir, PathBuf::from("/var/lib/rstudio-launcher/node"));
        assert!(node.join.is_empty());
        assert_eq!(node.bootstrap_expect, None);
        assert_eq!(node.node_lost_timeout_seconds, 30);
        assert_eq!(node.dead_member_removal_seconds, 300);
        assert_eq!(node.snapshot_log_entries, 10_000);
        assert_eq!(node.heartbeat_ms, 250);
        assert_eq!(node.election_timeout_min_ms, 1500);
        assert_eq!(node.election_timeout_max_ms, 3000);
        assert_eq!(node.cache_capacity_mb, 64);
        assert_eq!(node.max_pending_writes, 10_000);
        assert_eq!(node.write_timeout_seconds, 10);
        assert_eq!(node.cluster_id, None);

        let local = ClusterConfig::default();
        assert_eq!(
            (local.name.as_str(), local.kind, local.plugin_name.as_str()),
            ("Local", ClusterType::Local, "local")
        );
        assert!(!local.shared_scheduler);
        let slurm = ClusterConfig::new("HPC", ClusterType::Slurm);
        assert_eq!(slurm.plugin_name, "hpc");
        assert!(slurm.shared_scheduler);
        assert!(!ClusterConfig::new("K", ClusterType::Plugin).shared_scheduler);

        let config = Config::new(PathBuf::from("/cfg"));
        assert_eq!(config.server, server);
        assert_eq!(config.node, node);
        config.validate().unwrap();
    }

    /// An empty file (or only sections without keys) gives the defaults.
    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse_ok(""), Config::new(PathBuf::from("/cfg")));
        assert_eq!(parse_ok("[server]\n[node]\n"), Config::new(PathBuf::from("/cfg")));
    }

    #[test]
    fn config_dir_comes_from_the_environment() {
        assert_eq!(config_dir_from(env_of(&[])), PathBuf::from("/etc/rstudio"));
        assert_eq!(
            config_dir_from(env_of(&[("RSTUDIO_CONFIG_DIR", "")])),
            PathBuf::from("/etc/rstudio")
        );
        assert_eq!(
            config_dir_from(env_of(&[("RSTUDIO_CONFIG_DIR", "/tmp/n1")])),
            PathBuf::from("/tmp/n1")
        );
    }

    const FULL: &str = "\
# launcher.conf for node 2
[server]
address=127.0.0.1
port=5600
unix-socket=/run/launcher.sock
enable-ssl=yes
certificate-file=/etc/ssl/launcher.pem
certificate-key-file=/etc/ssl/launcher.key
server-user=launcher
authorization-enabled=false
admin-group=rstudio-server
admin-users=alice, bob ,,carol
secure-cookie-key-file=/etc/keys/cookie
max-token-lifetime-seconds=600
max-request-body-bytes=2048
thread-pool-size=8
request-timeout-seconds=30
bootstrap-timeout-seconds=45
heartbeat-interval-seconds=0
job-expiry-hours=48
enable-debug-logging=1
scratch-path=/scratch
nodes=n1:5560,n2:5560

[node]
id=2
grpc-address=0.0.0.0:7000
advertise-address=n2.example:7000
data-dir=/data/node2
join=n1:7000, n3:7000
bootstrap-expect=3
node-lost-timeout-seconds=10
dead-member-removal-seconds=0
snapshot-log-entries=500
heartbeat-ms=100
election-timeout-min-ms=1000
election-timeout-max-ms=2000
fast-failover=no
cache-capacity-mb=16
max-pending-writes=500
write-timeout-seconds=4
cluster-id=prod-1

[cluster]
name=Local
type=local

[cluster]
name=HPC
type=SLURM
exe=/usr/lib/rstudio-server/bin/rstudio-slurm-launcher
plugin-args=--slurm-service-user=slurm   --max-output-stream-seconds=30
shared-scheduler=no
";

    /// Every key of a complete file lands in its field, and clusters keep file order.
    #[test]
    fn full_file_with_two_clusters() {
        let config = parse_ok(FULL);
        let s = &config.server;
        assert_eq!(s.address, "127.0.0.1");
        assert_eq!(s.port, 5600);
        assert_eq!(s.unix_socket, Some(PathBuf::from("/run/launcher.sock")));
        assert!(s.enable_ssl);
        assert_eq!(s.certificate_file, Some(PathBuf::from("/etc/ssl/launcher.pem")));
        assert_eq!(
            s.certificate_key_file,
            Some(PathBuf::from("/etc/ssl/launcher.key"))
        );
        assert_eq!(s.server_user, "launcher");
        assert!(!s.authorization_enabled);
        assert_eq!(s.admin_group.as_deref(), Some("rstudio-server"));
        assert_eq!(s.admin_users, ["alice", "bob", "carol"]);
        assert_eq!(s.secure_cookie_key_file, PathBuf::from("/etc/keys/cookie"));
        assert_eq!(s.max_token_lifetime_seconds, 600);
        assert_eq!(s.max_request_body_bytes, 2048);
        assert_eq!(s.thread_pool_size, Some(8));
        assert_eq!(s.request_timeout_seconds, 30);
        assert_eq!(s.bootstrap_timeout_seconds, 45);
        assert_eq!(s.heartbeat_interval_seconds, 0);
        assert_eq!(s.job_expiry_hours, 48);
        assert!(s.enable_debug_logging);
        assert_eq!(s.scratch_path, PathBuf::from("/scratch"));
        assert_eq!(s.nodes, ["n1:5560", "n2:5560"]);

        let n = &config.node;
        assert_eq!(n.id, Some(2));
        assert_eq!(n.grpc_address, "0.0.0.0:7000");
        assert_eq!(n.advertise_address.as_deref(), Some("n2.example:7000"));
        assert_eq!(n.data_dir, PathBuf::from("/data/node2"));
        assert_eq!(n.join, ["n1:7000", "n3:7000"]);
        assert_eq!(n.bootstrap_expect, Some(3));
        assert_eq!(n.node_lost_timeout_seconds, 10);
        assert_eq!(n.dead_member_removal_seconds, 0);
        assert_eq!(n.snapshot_log_entries, 500);
        assert_eq!(n.heartbeat_ms, 100);
        assert_eq!(n.election_timeout_min_ms, 1000);
        assert_eq!(n.election_timeout_max_ms, 2000);
        assert!(!n.fast_failover);
        assert_eq!(n.cache_capacity_mb, 16);
        assert_eq!(n.max_pending_writes, 500);
        assert_eq!(n.write_timeout_seconds, 4);
        assert_eq!(n.cluster_id.as_deref(), Some("prod-1"));

        assert_eq!(config.clusters.len(), 2);
        assert_eq!(
            config.clusters[0],
            ClusterConfig::new("Local", ClusterType::Local)
        );
        let hpc = &config.clusters[1];
        assert_eq!(hpc.name, "HPC");
        assert_eq!(hpc.kind, ClusterType::Slurm);
        assert_eq!(
            hpc.exe,
            Some(PathBuf::from(
                "/usr/lib/rstudio-server/bin/rstudio-slurm-launcher"
            ))
        );
        assert_eq!(hpc.plugin_name, "hpc");
        assert_eq!(
            hpc.plugin_args,
            ["--slurm-service-user=slurm", "--max-output-stream-seconds=30"]
        );
        assert!(
            !hpc.shared_scheduler,
            "explicit shared-scheduler=no wins over the Slurm default"
        );
        assert_eq!(config.cluster("HPC"), Some(hpc));
        assert_eq!(
            config.plugin_config_file(hpc),
            PathBuf::from("/cfg/launcher.hpc.conf")
        );
        assert_eq!(config.dir, PathBuf::from("/cfg"));
    }

    #[test]
    fn cluster_defaults_follow_name_and_type() {
        let config = parse_ok("[cluster]\ntype=Slurm\nname=Big HPC\nplugin-name=bighpc\n[cluster]\nname=K8s\ntype=plugin\nexe=/opt/k8s-plugin\n");
        assert_eq!(config.clusters[0].kind, ClusterType::Slurm);
        assert!(config.clusters[0].shared_scheduler);
        assert_eq!(config.clusters[0].plugin_name, "bighpc");
        assert_eq!(config.clusters[1].plugin_name, "k8s");
        assert!(!config.clusters[1].shared_scheduler);
        assert_eq!(config.clusters[1].exe, Some(PathBuf::from("/opt/k8s-plugin")));
    }

    /// Comments, blank lines, indentation, CRLF, a BOM and '=' inside values are all handled.
    #[test]
    fn comments_and_whitespace() {
        let text = "\u{feff}# leading comment\r\n\r\n  ; semicolon comment\r\n   [ server ]   \r\n\tport   =   6000  \r\n  # indented comment\r\naddress=\r\n[node]\nid = 7\njoin =  \n[cluster]\n name = Local \n type = Local\n plugin-args =  --a=b=c   --x=  \n";
        let errors = parse_err(text);
        // `address=` is empty: the only problem, on its own line.
        assert_eq!(
            lines(&errors),
            ["launcher.conf:7: [server] address: must not be empty (0.0.0.0 listens on every interface)"]
        );

        let config = parse_ok(&text.replace("address=\r\n", ""));
        assert_eq!(config.server.port, 6000);
        assert_eq!(config.node.id, Some(7));
        assert!(config.node.join.is_empty());
        assert_eq!(config.clusters[0].name, "Local");
        assert_eq!(config.clusters[0].plugin_args, ["--a=b=c", "--x="]);
    }

    /// Booleans accept 0/1, true/false and yes/no in any case.
    #[test]
    fn boolean_spellings() {
        for (value, expected) in [
            ("1", true),
            ("TRUE", true),
            ("Yes", true),
            ("0", false),
            ("false", false),
            ("NO", false),
        ] {
            let config = parse_ok(&format!("[server]\nenable-debug-logging={value}\n"));
            assert_eq!(config.server.enable_debug_logging, expected, "{value}");
        }
    }

    /// The brief's example error, with its exact wording.
    #[test]
    fn election_timeout_error_matches_the_documented_example() {
        let text = format!(
            "{}[node]\nelection-timeout-max-ms=1000\nelection-timeout-min-ms=1500\n",
            "#\n".repeat(9)
        );
        assert_one_error(
            &text,
            "launcher.conf:12: [node] election-timeout-min-ms: must be less than election-timeout-max-ms (1500 >= 1000)",
        );
    }

    /// Each kind of problem is reported with its line and key.
    #[test]
    fn every_error_kind_names_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("[server]\n[sever]\nport=1\n", "launcher.conf:2: unknown section [sever]; expected [server], [node] or [cluster]"),
            ("[Server]\n", "launcher.conf:1: unknown section [Server]; section names are lowercase: use [server]"),
            ("[server\n", "launcher.conf:1: malformed section header '[server': expected [name]"),
            ("port=1\n", "launcher.conf:1: port: key before any section header; put it under [server], [node] or [cluster]"),
            ("[server]\njust words\n", "launcher.conf:2: expected key=value, a [section] header or a # comment; got 'just words'"),
            ("[server]\n=5\n", "launcher.conf:2: [server] missing key before '=' in '=5'"),
            ("[server]\nprot=5559\n", "launcher.conf:2: [server] prot: unknown key; did you mean 'port'?"),
            ("[server]\nthread_pool_size=4\n", "launcher.conf:2: [server] thread_pool_size: unknown key; did you mean 'thread-pool-size'?"),
            ("[server]\nid=4\n", "launcher.conf:2: [server] id: unknown key in [server]; it belongs in [node]"),
            ("[node]\nid=1\n\nid=2\n", "launcher.conf:4: [node] id: duplicate key (first set on line 2); each key may appear once per section"),
            ("[server]\n[node]\n[server]\n", "launcher.conf:3: [server] section appears twice (first on line 1); merge them"),
            ("[server]\nport=abc\n", "launcher.conf:2: [server] port: expected a whole number, got 'abc'"),
            ("[server]\nport=70000\n", "launcher.conf:2: [server] port: 70000 is out of range (0 to 65535)"),
            ("[server]\nport=-1\n", "launcher.conf:2: [server] port: must not be negative, got '-1'"),
            ("[server]\nport=\n", "launcher.conf:2: [server] port: value is empty; expected a whole number"),
            ("[node]\nid=0\n", "launcher.conf:2: [node] id: must be a positive integer (node ids start at 1); leave it unset to have one assigned"),
            ("[node]\nelection-timeout-min-ms=3000\n", "launcher.conf:2: [node] election-timeout-min-ms: must be less than election-timeout-max-ms (3000 >= 3000)"),
            ("[node]\nheartbeat-ms=1500\n", "launcher.conf:2: [node] heartbeat-ms: must be less than election-timeout-min-ms (1500 >= 1500)"),
            ("[server]\nenable-ssl=maybe\n", "launcher.conf:2: [server] enable-ssl: expected a boolean (1/0, true/false, yes/no), got 'maybe'"),
            ("[cluster]\nname=A\ntype=Local\n[cluster]\nname=A\ntype=Local\nplugin-name=a2\n", "launcher.conf:5: [cluster] name: duplicate cluster name 'A' (first defined on line 1)"),
            ("[cluster]\nname=\ntype=Local\n", "launcher.conf:2: [cluster] name: must not be empty"),
            ("[cluster]\ntype=Local\n", "launcher.conf:1: [cluster] name: missing required key 'name' (the cluster's name)"),
            ("[cluster]\nname=A\n", "launcher.conf:1: [cluster] type: missing required key 'type' (Local, Slurm or Plugin)"),
            ("[cluster]\nname=A\ntype=Kubernetes\n", "launcher.conf:3: [cluster] type: unknown cluster type 'Kubernetes' (expected Local, Slurm or Plugin)"),
            ("[cluster]\nname=A\ntype=Local\nplugin-args=--ok=1 -x=1 --novalue\n", "launcher.conf:4: [cluster] plugin-args: each argument must have the form --name=value; not so: '-x=1', '--novalue'"),
            ("[cluster]\nname=A\ntype=Plugin\n", "launcher.conf:3: [cluster] exe: required for type=Plugin: the path of the plugin binary"),
            ("[cluster]\nname=My Cluster\ntype=Local\n", "launcher.conf:2: [cluster] plugin-name: 'my cluster' may hold only letters, digits, '-', '_' and '.' (derived from name; set plugin-name explicitly)"),
            ("[cluster]\nname=A\ntype=Local\n[cluster]\nname=B\ntype=Local\nplugin-name=a\n", "launcher.conf:7: [cluster] plugin-name: plugin name 'a' is also used by the cluster defined on line 1; plugins must not share config and scratch files"),
            ("[node]\nbootstrap-expect=0\n", "launcher.conf:2: [node] bootstrap-expect: must be at least 1 (the number of nodes that form the new cluster)"),
            ("[node]\nbootstrap-expect=3\n", "launcher.conf:2: [node] join: bootstrap-expect=3 needs join addresses to discover the other nodes"),
            ("[node]\njoin=n1:5560,n2\n", "launcher.conf:2: [node] join: expected host:port, got 'n2'"),
            ("[node]\ngrpc-address=http://x:1\n", "launcher.conf:2: [node] grpc-address: expected host:port without a scheme, got 'http://x:1'"),
            ("[node]\nadvertise-address=0.0.0.0:5560\n", "launcher.conf:2: [node] advertise-address: '0.0.0.0:5560' is a wildcard; give an address other nodes can reach"),
            ("[node]\nadvertise-address=::1:5560\n", "launcher.conf:2: [node] advertise-address: IPv6 addresses need brackets, as in [::1]:5560; got '::1:5560'"),
            ("[node]\ndead-member-removal-seconds=10\n", "launcher.conf:2: [node] dead-member-removal-seconds: must be 0 (disabled) or at least node-lost-timeout-seconds (10 < 30)"),
            ("[node]\nsnapshot-log-entries=0\n", "launcher.conf:2: [node] snapshot-log-entries: must be at least 1"),
            ("[server]\nenable-ssl=1\ncertificate-key-file=/k\n", "launcher.conf:2: [server] certificate-file: required when enable-ssl is on (a PEM file)"),
            ("[server]\nthread-pool-size=0\n", "launcher.conf:2: [server] thread-pool-size: must be at least 1 (leave it unset for one per CPU)"),
            ("[server]\nnodes=a:1, b:0\n", "launcher.conf:2: [server] nodes: port 0 cannot be dialled, got 'b:0'"),
            ("[server]\nscratch-path=\n", "launcher.conf:2: [server] scratch-path: value is empty; expected a path"),
        ];
        for (text, expected) in cases {
            assert_one_error(text, expected);
        }
    }

    /// All problems of a file come back together, in line order, one per line of the Display.
    #[test]
    fn multiple_errors_are_reported_together() {
        let text = "\
[server]
port=abc
bogus=1
port=1

[node]
id=0
election-timeout-min-ms=5000

[cluster]
name=X
type=Plugin
plugin-args=oops

[cluster]
name=X
type=Local
";
        let errors = parse_err(text);
        let expected = [
            "launcher.conf:2: [server] port: expected a whole number, got 'abc'",
            "launcher.conf:3: [server] bogus: unknown key; [server] accepts: address, port, unix-socket, enable-ssl, certificate-file, certificate-key-file, server-user, authorization-enabled, admin-group, admin-users, secure-cookie-key-file, max-token-lifetime-seconds, max-request-body-bytes, thread-pool-size, request-timeout-seconds, bootstrap-timeout-seconds, heartbeat-interval-seconds, job-expiry-hours, enable-debug-logging, enable-metrics, scratch-path, nodes",
            "launcher.conf:4: [server] port: duplicate key (first set on line 2); each key may appear once per section",
            "launcher.conf:7: [node] id: must be a positive integer (node ids start at 1); leave it unset to have one assigned",
            "launcher.conf:8: [node] election-timeout-min-ms: must be less than election-timeout-max-ms (5000 >= 3000)",
            "launcher.conf:12: [cluster] exe: required for type=Plugin: the path of the plugin binary",
            "launcher.conf:13: [cluster] plugin-args: each argument must have the form --name=value; not so: 'oops'",
            "launcher.conf:16: [cluster] name: duplicate cluster name 'X' (first defined on line 10)",
            "launcher.conf:16: [cluster] plugin-name: plugin name 'x' is also used by the cluster defined on line 10; plugins must not share config and scratch files",
        ];
        assert_eq!(lines(&errors), expected);
        assert_eq!(errors.len(), expected.len());
        assert_eq!(errors.to_string(), expected.join("\n"));
        let first = &errors.errors[0];
        assert_eq!(
            (
                first.file.as_str(),
                first.line,
                first.section.as_str(),
                first.key.as_deref()
            ),
            (FILE, Some(2), "server", Some("port"))
        );
    }

    /// A value that fails to parse does not also trigger cross-field errors against its default.
    #[test]
    fn bad_values_do_not_cascade() {
        assert_one_error(
            "[node]\nelection-timeout-min-ms=soon\nelection-timeout-max-ms=1000\n",
            "launcher.conf:2: [node] election-timeout-min-ms: expected a whole number, got 'soon'",
        );
        assert_one_error(
            "[cluster]\ntype=Plugin\nexe=/x\n",
            "launcher.conf:1: [cluster] name: missing required key 'name' (the cluster's name)",
        );
    }

    /// Keys of unknown sections are skipped: the section is reported once.
    #[test]
    fn unknown_section_is_reported_once() {
        let errors = parse_err("[kubernetes]\nfoo=1\nbar=2\n[server]\nport=1\n");
        assert_eq!(errors.len(), 1);
    }

    /// `LAUNCHER_*` variables override the file; blank ones are ignored.
    #[test]
    fn env_overrides_replace_keys() {
        let mut config = Config::new(PathBuf::from("/cfg"));
        let env = env_of(&[
            ("LAUNCHER_NODE_ID", "3"),
            ("LAUNCHER_GRPC_ADDRESS", "0.0.0.0:7003"),
            ("LAUNCHER_ADVERTISE_ADDRESS", "node3:7003"),
            ("LAUNCHER_DATA_DIR", "/data/3"),
            ("LAUNCHER_JOIN", "node1:7001,node2:7002"),
            ("LAUNCHER_BOOTSTRAP_EXPECT", "3"),
            ("LAUNCHER_PORT", "8080"),
            ("LAUNCHER_ADDRESS", "  "),
        ]);
        config.apply_env_overrides(env).unwrap();
        assert_eq!(config.node.id, Some(3));
        assert_eq!(config.node.grpc_address, "0.0.0.0:7003");
        assert_eq!(config.node.advertise_address.as_deref(), Some("node3:7003"));
        assert_eq!(config.node.data_dir, PathBuf::from("/data/3"));
        assert_eq!(config.node.join, ["node1:7001", "node2:7002"]);
        assert_eq!(config.node.bootstrap_expect, Some(3));
        assert_eq!(config.server.port, 8080);
        assert_eq!(
            config.server.address, "0.0.0.0",
            "a blank variable leaves the key alone"
        );

        config
            .apply_env_overrides(env_of(&[("LAUNCHER_ADDRESS", "127.0.0.1")]))
            .unwrap();
        assert_eq!(config.server.address, "127.0.0.1");
    }

    /// Bad variables are named in the error, all at once, and checked like file values.
    #[test]
    fn env_override_errors_name_the_variable() {
        let mut config = Config::new(PathBuf::from("/cfg"));
        let errors = config
            .apply_env_overrides(env_of(&[
                ("LAUNCHER_NODE_ID", "0"),
                ("LAUNCHER_PORT", "http"),
                ("LAUNCHER_BOOTSTRAP_EXPECT", "2"),
            ]))
            .unwrap_err();
        assert_eq!(
            lines(&errors),
            [
                "environment variable LAUNCHER_PORT: [server] port: expected a whole number, got 'http'",
                "environment variable LAUNCHER_NODE_ID: [node] id: must be a positive integer (node ids start at 1); leave it unset to have one assigned",
                "environment variable LAUNCHER_BOOTSTRAP_EXPECT: [node] join: bootstrap-expect=2 needs join addresses to discover the other nodes",
            ]
        );
    }

    /// `load_with_env` reads the file, roots defaults in its directory and applies overrides.
    #[test]
    fn load_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE_NAME);
        std::fs::write(
            &path,
            "[node]\nid=1\ndata-dir=/data/1\n[cluster]\nname=Local\ntype=Local\n",
        )
        .unwrap();

        let config = load(&path).unwrap();
        assert_eq!(config.dir, dir.path());
        assert_eq!(
            config.server.secure_cookie_key_file,
            dir.path().join("secure-cookie-key")
        );
        assert_eq!(config.node.id, Some(1));

        let config = load_with_env(&path, env_of(&[("LAUNCHER_NODE_ID", "5")])).unwrap();
        assert_eq!(config.node.id, Some(5));
        assert_eq!(config.node.data_dir, PathBuf::from("/data/1"));

        // An override that fixes a bad line still leaves the file's error reported.
        std::fs::write(&path, "[node]\nid=zero\n").unwrap();
        let errors = load_with_env(&path, env_of(&[("LAUNCHER_NODE_ID", "5")])).unwrap_err();
        let file = path.display().to_string();
        assert_eq!(
            lines(&errors),
            [format!(
                "{file}:2: [node] id: expected a whole number, got 'zero'"
            )]
        );

        let missing = dir.path().join("nope.conf");
        let errors = load(&missing).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors.to_string().starts_with(&format!(
            "{}: cannot read the configuration file",
            missing.display()
        )));
    }

    /// `validate` on a configuration built in code names clusters, since there are no lines.
    #[test]
    fn validate_programmatic_config() {
        let mut config = Config::new(PathBuf::from("/cfg"));
        config
            .clusters
            .push(ClusterConfig::new("Ext", ClusterType::Plugin));
        config.clusters.push(ClusterConfig {
            plugin_args: vec!["bad".into()],
            ..ClusterConfig::default()
        });
        config.clusters.push(ClusterConfig {
            plugin_name: String::new(),
            ..ClusterConfig::new("Z", ClusterType::Local)
        });
        config.node.heartbeat_ms = 0;
        let errors = config.validate().unwrap_err();
        assert_eq!(
            lines(&errors),
            [
                "/cfg/launcher.conf: [node] heartbeat-ms: must be at least 1",
                "/cfg/launcher.conf: [cluster \"Ext\"] exe: required for type=Plugin: the path of the plugin binary",
                "/cfg/launcher.conf: [cluster \"Local\"] plugin-args: each argument must have the form --name=value; not so: 'bad'",
                "/cfg/launcher.conf: [cluster \"Z\"] plugin-name: must not be empty",
            ]
        );
        config.clusters.pop();
        config.clusters[0].exe = Some(PathBuf::from("/opt/ext"));
        config.clusters[1].plugin_args.clear();
        config.node.heartbeat_ms = 250;
        config.validate().unwrap();
    }

    /// The dump lists every key and parses back to the same configuration.
    #[test]
    fn dump_round_trips() {
        for config in [parse_ok(FULL), Config::new(PathBuf::from("/cfg"))] {
            let text = config.dump();
            assert!(text.contains("[server]\naddress="), "{text}");
            assert_eq!(parse_ok(&text), config, "{text}");
        }
        let dump = parse_ok(FULL).dump();
        assert!(dump.contains("\n[cluster]\nname=HPC\ntype=Slurm\n"), "{dump}");
        assert!(dump.contains("shared-scheduler=0"), "{dump}");
    }

    /// Every key in the tables is accepted by the parser (no table/parser drift).
    #[test]
    fn every_documented_key_is_known() {
        for section in ["server", "node", "cluster"] {
            for key in key_names(section) {
                assert_eq!(known_key(section, key), Some(key));
            }
        }
        assert_eq!(key_names("server").len(), 22);
        assert_eq!(key_names("node").len(), 17);
        assert_eq!(key_names("cluster").len(), 12);
        for (var, section, key) in ENV_OVERRIDES {
            assert!(known_key(section, key).is_some(), "{var}");
        }
    }

    /// docs/configuration.md's reference lists exactly the keys of each table, and its
    /// environment table exactly the node's overrides (and the gateway's, marked so): the tables
    /// are the one declaration of the keys.
    #[test]
    fn the_configuration_reference_lists_exactly_the_tables_keys() {
        let doc = include_str!("../../../docs/configuration.md");
        let rows = |heading: &str| launcher_config::documented_keys(doc, heading);
        for section in ["server", "node", "cluster"] {
            let mut documented = rows(&format!("## [{section}]\n"));
            let mut declared: Vec<String> = key_names(section).into_iter().map(String::from).collect();
            documented.sort();
            declared.sort();
            assert_eq!(documented, declared, "[{section}]");
        }
        let documented = rows("## Environment overrides\n");
        for (var, _, _) in ENV_OVERRIDES {
            assert!(documented.iter().any(|d| d == var), "{var} is not documented");
        }
    }

    /// The submit policy keys of a cluster parse, default, and refuse bad values by name.
    #[test]
    fn cluster_policy_keys() {
        let c = parse_ok(
            "[cluster]\nname=Local\ntype=Local\nallowed-mount-sources=/srv/a, /home/{USER}\nmin-uid=500\n\
             max-cpu-count=4\nmax-memory-mb=1024.5\n",
        );
        let local = &c.clusters[0];
        assert_eq!(local.allowed_mount_sources, ["/srv/a", "/home/{USER}"]);
        assert_eq!(
            (local.min_uid, local.max_cpu_count, local.max_memory_mb),
            (500, Some(4.0), Some(1024.5))
        );
        assert_eq!(
            (local.max_cpu_time_seconds, local.max_memory_swap_mb),
            (None, None)
        );
        let d = parse_ok("[cluster]\nname=L\ntype=Local\n");
        assert_eq!(
            (d.clusters[0].min_uid, d.clusters[0].allowed_mount_sources.len()),
            (DEFAULT_MIN_UID, 0)
        );
        for (line, words) in [
            ("allowed-mount-sources=relative/dir", "not an absolute path"),
            ("allowed-mount-sources=/srv/../etc", "'..'"),
            ("min-uid=-1", "negative"),
            ("max-memory-mb=0", "above 0"),
            ("max-cpu-count=NaN", "above 0"),
        ] {
            let errors = lines(&parse_err(&format!("[cluster]\nname=L\ntype=Local\n{line}\n")));
            assert!(
                errors.len() == 1 && errors[0].contains(words),
                "{line}: {errors:?}"
            );
        }
    }

    #[test]
    fn cluster_type_parses_case_insensitively() {
        assert_eq!("local".parse::<ClusterType>(), Ok(ClusterType::Local));
        assert_eq!("SLURM".parse::<ClusterType>(), Ok(ClusterType::Slurm));
        assert_eq!(" Plugin ".parse::<ClusterType>(), Ok(ClusterType::Plugin));
        assert!("k8s".parse::<ClusterType>().is_err());
    }
}
