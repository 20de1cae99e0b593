//! The gateway's view of `launcher.conf` (docs/configuration.md).
//!
//! Gateways and nodes share one file. The gateway reads only `[server]` and skips the nodes'
//! `[node]` and `[cluster]` sections, but judges the file's syntax like the node does (same line
//! rules, same value grammar), so a file that one side accepts the other does not reject for
//! reasons it cannot see. Lines are `key=value` (whitespace around both trimmed), full-line
//! comments starting with `#` or `;`, or blank; everything after the first `=` is the value.
//!
//! Every problem is collected into one [`ConfigError`], each naming file, line and key, so an
//! operator fixes the file in one pass. Containers override a few keys from `LAUNCHER_*`
//! environment variables ([`ENV_OVERRIDES`]); errors they cause name the variable.
//!
//! The gateway does not depend on `launcher-node` (CONVENTIONS: it depends only on
//! `launcher-proto`), hence this smaller parser rather than the node's.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable naming the configuration directory, as RStudio itself uses it.
pub const CONFIG_DIR_ENV: &str = "RSTUDIO_CONFIG_DIR";
/// Configuration directory used when [`CONFIG_DIR_ENV`] is unset or empty.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rstudio";
/// Name of the launcher's configuration file inside the configuration directory.
pub const CONFIG_FILE_NAME: &str = "launcher.conf";

/// Environment overrides for containers: `(variable, [server] key)`; a set, non-blank variable
/// replaces the key's value from the file.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("LAUNCHER_ADDRESS", "address"),
    ("LAUNCHER_PORT", "port"),
    ("LAUNCHER_NODES", "nodes"),
    ("LAUNCHER_UNIX_SOCKET", "unix-socket"),
];

/// `[server]` keys the gateway uses, in dump order.
pub const GATEWAY_KEYS: &[&str] = &[
    "address",
    "port",
    "unix-socket",
    "enable-ssl",
    "certificate-file",
    "certificate-key-file",
    "server-user",
    "authorization-enabled",
    "admin-group",
    "admin-users",
    "secure-cookie-key-file",
    "max-token-lifetime-seconds",
    "max-request-body-bytes",
    "request-timeout-seconds",
    "enable-debug-logging",
    "nodes",
    "enable-metrics",
];

/// `[server]` keys of docs/configuration.md that only nodes use: accepted (one file serves both) and ignored.
const NODE_ONLY_KEYS: &[&str] = &[
    "thread-pool-size",
    "bootstrap-timeout-seconds",
    "heartbeat-interval-seconds",
    "job-expiry-hours",
    "scratch-path",
];

/// The configuration directory: `$RSTUDIO_CONFIG_DIR`, or `/etc/rstudio` when unset or empty.
pub fn config_dir() -> PathBuf {
    config_dir_from(|name| std::env::var(name).ok())
}

/// [`config_dir`] reading variables through `env`, so tests need not touch the process environment.
pub fn config_dir_from(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match env(CONFIG_DIR_ENV) {
        Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir.trim()),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

/// The `[server]` settings the gateway runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// HTTP listen address (`address`, default `0.0.0.0`).
    pub address: String,
    /// HTTP listen port (`port`, default 5559). In code 0 picks a free port; in the file 0 is
    /// only allowed with `unix-socket` and turns TCP off (see [`GatewayConfig::tcp`]).
    pub port: u16,
    /// Serve on TCP at all: false when the file sets `port=0` with `unix-socket`, so the
    /// gateway answers only on the socket.
    pub tcp: bool,
    /// Also listen on this unix socket (`unix-socket`).
    pub unix_socket: Option<PathBuf>,
    /// Serve HTTPS (`enable-ssl`, default off).
    pub enable_ssl: bool,
    /// PEM certificate chain (`certificate-file`), required with `enable-ssl`.
    pub certificate_file: Option<PathBuf>,
    /// PEM private key (`certificate-key-file`), required with `enable-ssl`.
    pub certificate_key_file: Option<PathBuf>,
    /// Check request tokens (`authorization-enabled`, default on).
    pub authorization_enabled: bool,
    /// Members of this group are launcher admins (`admin-group`).
    pub admin_group: Option<String>,
    /// Users who are launcher admins (`admin-users`, comma separated).
    pub admin_users: Vec<String>,
    /// Shared secret file (`secure-cookie-key-file`, default `<config dir>/secure-cookie-key`).
    pub secure_cookie_key_file: PathBuf,
    /// Longest accepted token lifetime (`max-token-lifetime-seconds`, default 86400).
    pub max_token_lifetime_seconds: u64,
    /// Largest accepted request body (`max-request-body-bytes`, default 1 MiB).
    pub max_request_body_bytes: usize,
    /// Deadline of a request to a node (`request-timeout-seconds`, default 120).
    pub request_timeout_seconds: u64,
    /// Seed node gRPC addresses, `host:port` (`nodes`, comma separated).
    pub nodes: Vec<String>,
    /// Debug logging (`enable-debug-logging`, default off).
    pub enable_debug_logging: bool,
    /// Unprivileged user the gateway runs as after binding (`server-user`, default `rstudio-server`).
    pub server_user: String,
    /// Serve `GET /metrics` (`enable-metrics`, default on).
    pub metrics_enabled: bool,
    /// The configuration directory (holds the secure-cookie-key by default).
    pub dir: PathBuf,
}

impl GatewayConfig {
    /// Documented defaults rooted in `dir`, with no nodes (so not valid until some are added).
    pub fn new(dir: PathBuf) -> Self {
        GatewayConfig {
            address: "0.0.0.0".to_string(),
            port: 5559,
            tcp: true,
            unix_socket: None,
            enable_ssl: false,
            certificate_file: None,
            certificate_key_file: None,
            authorization_enabled: true,
            admin_group: None,
            admin_users: Vec::new(),
            secure_cookie_key_file: dir.join("secure-cookie-key"),
            max_token_lifetime_seconds: 86_400,
            max_request_body_bytes: 1_048_576,
            request_timeout_seconds: 120,
            nodes: Vec::new(),
            enable_debug_logging: false,
            server_user: "rstudio-server".to_string(),
            metrics_enabled: true,
            dir,
        }
    }

    /// Checks values and cross-field constraints of a configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let file = self.dir.join(CONFIG_FILE_NAME).display().to_string();
        ConfigError::result(check(self, &Origins::new(file)))
    }

    /// The effective configuration as a `[server]` section (every key the gateway uses, defaults
    /// included), for the debug log; parsing it again gives the same configuration.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "# effective gateway configuration (config dir: {})\n[server]\n",
            self.dir.display()
        );
        for key in GATEWAY_KEYS {
            out.push_str(&format!("{key}={}\n", self.get(key)));
        }
        out
    }

    fn get(&self, key: &str) -> String {
        fn opt_path(p: &Option<PathBuf>) -> String {
            p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        }
        fn flag(b: bool) -> String {
            if b { "1" } else { "0" }.to_string()
        }
        match key {
            "address" => self.address.clone(),
            "port" => self.port.to_string(),
            "unix-socket" => opt_path(&self.unix_socket),
            "enable-ssl" => flag(self.enable_ssl),
            "certificate-file" => opt_path(&self.certificate_file),
            "certificate-key-file" => opt_path(&self.certificate_key_file),
            "server-user" => self.server_user.clone(),
            "authorization-enabled" => flag(self.authorization_enabled),
            "admin-group" => self.admin_group.clone().unwrap_or_default(),
            "admin-users" => self.admin_users.join(","),
            "secure-cookie-key-file" => self.secure_cookie_key_file.display().to_string(),
            "max-token-lifetime-seconds" => self.max_token_lifetime_seconds.to_string(),
            "max-request-body-bytes" => self.max_request_body_bytes.to_string(),
            "request-timeout-seconds" => self.request_timeout_seconds.to_string(),
            "enable-debug-logging" => flag(self.enable_debug_logging),
            "nodes" => self.nodes.join(","),
            "enable-metrics" => flag(self.metrics_enabled),
            _ => String::new(),
        }
    }

    /// Sets one `[server]` key from its text; node-only keys are accepted and ignored.
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "address" => self.address = v.to_string(),
            "port" => self.port = parse_port(v)?,
            "unix-socket" => self.unix_socket = opt_path(v),
            "enable-ssl" => self.enable_ssl = parse_bool(v)?,
            "certificate-file" => self.certificate_file = opt_path(v),
            "certificate-key-file" => self.certificate_key_file = opt_path(v),
            "server-user" => self.server_user = v.to_string(),
            "authorization-enabled" => self.authorization_enabled = parse_bool(v)?,
            "admin-group" => self.admin_group = (!v.is_empty()).then(|| v.to_string()),
            "admin-users" => self.admin_users = parse_list(v),
            "secure-cookie-key-file" => self.secure_cookie_key_file = path(v)?,
            "max-token-lifetime-seconds" => self.max_token_lifetime_seconds = parse_uint(v, u64::MAX)?,
            "max-request-body-bytes" => {
                self.max_request_body_bytes = parse_uint(v, usize::MAX as u64)? as usize
            }
            "request-timeout-seconds" => self.request_timeout_seconds = parse_uint(v, u64::MAX)?,
            "enable-debug-logging" => self.enable_debug_logging = parse_bool(v)?,
            "nodes" => self.nodes = parse_list(v),
            "enable-metrics" => self.metrics_enabled = parse_bool(v)?,
            k if NODE_ONLY_KEYS.contains(&k) => {}
            _ => return Err("unknown key".to_string()),
        }
        Ok(())
    }
}

/// One problem in the configuration, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file (or `environment variable NAME`) the problem is in.
    pub file: String,
    /// 1-based line, when the problem is tied to one.
    pub line: Option<usize>,
    /// Section name (`server`, ...); empty when the problem is outside any section.
    pub section: String,
    /// The key concerned, if any.
    pub key: Option<String>,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(":")?;
        if !self.section.is_empty() {
            write!(f, " [{}]", self.section)?;
        }
        if let Some(key) = &self.key {
            write!(f, " {key}:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in the configuration, in line order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems; never empty when returned as an error.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn result(mut problems: Vec<ConfigProblem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            return Ok(());
        }
        // Stable sort: problems without a line (environment, cross-field) stay last, in order.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(ConfigError { problems })
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads `path` (normally `<config dir>/launcher.conf`), applies [`ENV_OVERRIDES`] read through
/// `env`, and validates; `dir` becomes the file's directory.
pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<GatewayConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![ConfigProblem {
            file: file.clone(),
            line: None,
            section: String::new(),
            key: None,
            message: format!(
                "cannot read the configuration file: {e}; set {CONFIG_DIR_ENV} to the directory holding {CONFIG_FILE_NAME}"
            ),
        }],
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let config = parse(&text, &file, &dir, env)?;
    tracing::debug!(config = %config.dump(), "effective gateway configuration");
    Ok(config)
}

/// Like [`load`] on text already read; `file` names it in messages and `dir` is the config dir.
pub fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigError> {
    let mut config = GatewayConfig::new(dir.to_path_buf());
    let mut origins = Origins::new(file.to_string());
    let mut problems = parse_text(&mut config, &mut origins, text);
    problems.extend(apply_env(&mut config, &mut origins, &env));
    problems.extend(check(&config, &origins));
    config.tcp = !(config.port == 0 && config.unix_socket.is_some());
    ConfigError::result(problems).map(|()| config)
}

// ---------------------------------------------------------------------------------------------
// Where each value came from, so checks on the typed config can point at a line or variable.

#[derive(Debug, Clone, Copy)]
enum Origin {
    Line(usize),
    Env(&'static str),
}

struct Origins {
    file: String,
    /// Line of the `[server]` header.
    header: Option<usize>,
    keys: HashMap<&'static str, Origin>,
    /// Keys whose value did not parse (already reported): checks involving them are skipped.
    bad: HashSet<&'static str>,
}

impl Origins {
    fn new(file: String) -> Self {
        Origins {
            file,
            header: None,
            keys: HashMap::new(),
            bad: HashSet::new(),
        }
    }

    fn at(&self, line: usize, section: &str, key: Option<&str>, message: String) -> ConfigProblem {
        ConfigProblem {
            file: self.file.clone(),
            line: Some(line),
            section: section.to_string(),
            key: key.map(str::to_string),
            message,
        }
    }
}

fn known_key(key: &str) -> Option<&'static str> {
    GATEWAY_KEYS
        .iter()
        .chain(NODE_ONLY_KEYS)
        .find(|k| **k == key)
        .copied()
}

enum Current {
    /// Before the first section header.
    Start,
    /// `[node]`, `[cluster]` (the nodes' business) or an unknown section (already reported).
    Skip,
    Server,
}

fn parse_text(config: &mut GatewayConfig, origins: &mut Origins, text: &str) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut current = Current::Start;
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = if index == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        }
        .trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']').map(str::trim) else {
                let message = format!("malformed section header '{line}': expected [name]");
                problems.push(origins.at(n, "", None, message));
                current = Current::Skip;
                continue;
            };
            current = match name {
                "server" => {
                    if let Some(first) = origins.header {
                        let message = format!("section appears twice (first on line {first}); merge them");
                        problems.push(origins.at(n, "server", None, message));
                    } else {
                        origins.header = Some(n);
                    }
                    Current::Server
                }
                "node" | "cluster" => Current::Skip,
                other => {
                    let lower = other.to_ascii_lowercase();
                    let hint = if ["server", "node", "cluster"].contains(&lower.as_str()) {
                        format!("section names are lowercase: use [{lower}]")
                    } else {
                        "expected [server], [node] or [cluster]".to_string()
                    };
                    let message = format!("unknown section [{other}]; {hint}");
                    problems.push(origins.at(n, "", None, message));
                    Current::Skip
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            let message = format!("expected key=value, a [section] header or a # comment; got '{line}'");
            problems.push(origins.at(n, "", None, message));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match current {
            Current::Start => {
                let message = "key before any section header; put it under [server], [node] or [cluster]";
                problems.push(origins.at(n, "", Some(key), message.to_string()));
                continue;
            }
            Current::Skip => continue,
            Current::Server => {}
        }
        if key.is_empty() {
            let message = format!("missing key before '=' in '{line}'");
            problems.push(origins.at(n, "server", None, message));
            continue;
        }
        let Some(key) = known_key(key) else {
            problems.push(origins.at(n, "server", Some(key), unknown_key_message(key)));
            continue;
        };
        if let Some(Origin::Line(first)) = origins.keys.get(key) {
            let message =
                format!("duplicate key (first set on line {first}); each key may appear once per section");
            problems.push(origins.at(n, "server", Some(key), message));
            continue;
        }
        origins.keys.insert(key, Origin::Line(n));
        if let Err(message) = config.set(key, value) {
            problems.push(origins.at(n, "server", Some(key), message));
            origins.bad.insert(key);
        }
    }
    problems
}

fn unknown_key_message(key: &str) -> String {
    let wanted = key.to_ascii_lowercase().replace('_', "-");
    let best = GATEWAY_KEYS
        .iter()
        .chain(NODE_ONLY_KEYS)
        .map(|k| (edit_distance(&wanted, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("unknown key; did you mean '{k}'?"),
        None => format!(
            "unknown key; [server] accepts: {}",
            GATEWAY_KEYS
                .iter()
                .chain(NODE_ONLY_KEYS)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn apply_env(
    config: &mut GatewayConfig,
    origins: &mut Origins,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for &(var, key) in ENV_OVERRIDES {
        let Some(value) = env(var) else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        origins.keys.insert(key, Origin::Env(var));
        origins.bad.remove(key);
        if let Err(message) = config.set(key, value) {
            problems.push(ConfigProblem {
                file: format!("environment variable {var}"),
                line: None,
                section: "server".to_string(),
                key: Some(key.to_string()),
                message,
            });
            origins.bad.insert(key);
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Value parsers (the node's grammar). An empty value means "unset" for optional keys and lists.

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected a boolean (1/0, true/false, yes/no), got '{v}'")),
    }
}

fn parse_uint(v: &str, max: u64) -> Result<u64, String> {
    if v.is_empty() {
        return Err("value is empty; expected a whole number".to_string());
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match digits.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{v} is out of range (0 to {max})")),
        };
    }
    let negative = v
        .strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if negative {
        Err(format!("must not be negative, got '{v}'"))
    } else {
        Err(format!("expected a whole number, got '{v}'"))
    }
}

fn parse_port(v: &str) -> Result<u16, String> {
    parse_uint(v, u16::MAX.into()).map(|n| n as u16)
}

fn opt_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("value is empty; expected a path".to_string())
    } else {
        Ok(PathBuf::from(v))
    }
}

fn parse_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks a dialable `host:port` (IPv6 in brackets, no scheme), as the node checks `nodes`.
fn check_host_port(v: &str) -> Result<(), String> {
    if v.contains("://") {
        return Err(format!("expected host:port without a scheme, got '{v}'"));
    }
    if v.chars().any(char::is_whitespace) {
        return Err(format!(
            "expected host:port, got '{v}' (lists are comma separated)"
        ));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("expected host:port, got '{v}'"));
    };
    if host.is_empty() {
        return Err(format!("missing host in '{v}'"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "IPv6 addresses need brackets, as in [::1]:5560; got '{v}'"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!("port 0 cannot be dialled, got '{v}'")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("bad port in '{v}' (expected 1 to 65535)")),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on the typed configuration.

struct Checker<'a> {
    origins: &'a Origins,
    problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    /// True when none of `keys` failed to parse (their error is already reported).
    fn usable(&self, keys: &[&'static str]) -> bool {
        keys.iter().all(|k| !self.origins.bad.contains(k))
    }

    /// Reports `message` about `key` at the line (or variable) of the first of `key` and
    /// `related` that was set, else at the `[server]` header.
    fn report(&mut self, key: &'static str, related: &[&'static str], message: String) {
        let origin = std::iter::once(&key)
            .chain(related)
            .find_map(|k| self.origins.keys.get(k));
        let (file, line) = match origin {
            Some(Origin::Line(n)) => (self.origins.file.clone(), Some(*n)),
            Some(Origin::Env(var)) => (format!("environment variable {var}"), None),
            None => (self.origins.file.clone(), self.origins.header),
        };
        self.problems.push(ConfigProblem {
            file,
            line,
            section: "server".to_string(),
            key: Some(key.to_string()),
            message,
        });
    }

    fn at_least(&mut self, key: &'static str, value: u64, min: u64) {
        if value < min && self.usable(&[key]) {
            self.report(key, &[], format!("must be at least {min}, got {value}"));
        }
    }
}

fn check(config: &GatewayConfig, origins: &Origins) -> Vec<ConfigProblem> {
    let mut c = Checker {
        origins,
        problems: Vec::new(),
    };
    if config.address.trim().is_empty() && c.usable(&["address"]) {
        c.report(
            "address",
            &[],
            "must not be empty (0.0.0.0 listens on every interface)".into(),
        );
    }
    if config.port == 0 && config.unix_socket.is_none() && c.usable(&["port", "unix-socket"]) {
        let message = "must be 1 to 65535 (or set unix-socket to serve only on a unix socket)";
        c.report("port", &[], message.to_string());
    }
    if config.enable_ssl && c.usable(&["enable-ssl"]) {
        for key in ["certificate-file", "certificate-key-file"] {
            let missing = match key {
                "certificate-file" => config.certificate_file.is_none(),
                _ => config.certificate_key_file.is_none(),
            };
            if missing {
                let message = "required when enable-ssl is on (a PEM file)".to_string();
                c.report(key, &["enable-ssl"], message);
            }
        }
    }
    if config.server_user.trim().is_empty() && c.usable(&["server-user"]) {
        c.report("server-user", &[], "must not be empty".to_string());
    }
    if config.nodes.is_empty() && c.usable(&["nodes"]) {
        let message = "no node addresses: the gateway needs at least one node's gRPC address, \
                       e.g. nodes=127.0.0.1:5560,127.0.0.1:5561 (or LAUNCHER_NODES)";
        c.report("nodes", &[], message.to_string());
    }
    for node in &config.nodes {
        if let Err(message) = check_host_port(node) {
            c.report("nodes", &[], message);
        }
    }
    c.at_least("max-token-lifetime-seconds", config.max_token_lifetime_seconds, 1);
    c.at_least(
        "max-request-body-bytes",
        config.max_request_body_bytes as u64,
        1024,
    );
    c.at_least("request-timeout-seconds", config.request_timeout_seconds, 1);
    c.problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/etc/launcher-test";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_ok(text: &str) -> GatewayConfig {
        parse(text, "launcher.conf", Path::new(DIR), no_env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> ConfigError {
        parse(text, "launcher.conf", Path::new(DIR), no_env).unwrap_err()
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const MINIMAL: &str = "[server]\nnodes=127.0.0.1:5560\n";

    #[test]
    fn defaults_are_documented_ones() {
        let c = parse_ok(MINIMAL);
        let mut expected = GatewayConfig::new(PathBuf::from(DIR));
        expected.nodes = vec!["127.0.0.1:5560".into()];
        assert_eq!(c, expected);
        assert_eq!(c.address, "0.0.0.0");
        assert_eq!(c.port, 5559);
        assert!(c.authorization_enabled && c.metrics_enabled);
        assert!(!c.enable_ssl && !c.enable_debug_logging);
        assert_eq!(c.secure_cookie_key_file, Path::new(DIR).join("secure-cookie-key"));
        assert_eq!(c.max_token_lifetime_seconds, 86_400);
        assert_eq!(c.max_request_body_bytes, 1_048_576);
        assert_eq!(c.request_timeout_seconds, 120);
        assert_eq!(c.server_user, "rstudio-server");
    }

    #[test]
    fn config_dir_from_env_or_default() {
        assert_eq!(config_dir_from(no_env), PathBuf::from("/etc/rstudio"));
        let env = env_of(&[("RSTUDIO_CONFIG_DIR", "/tmp/n1")]);
        assert_eq!(config_dir_from(env), PathBuf::from("/tmp/n1"));
        let blank = env_of(&[("RSTUDIO_CONFIG_DIR", "  ")]);
        assert_eq!(config_dir_from(blank), PathBuf::from("/etc/rstudio"));
    }

    #[test]
    fn every_gateway_key_is_read() {
        let text = "\u{feff}# a comment\n; another\n\n[server]\n address = 127.0.0.1 \nport=8080\n\
            unix-socket=/run/l.sock\nenable-ssl=yes\ncertificate-file=/c.pem\n\
            certificate-key-file=/k.pem\nserver-user=svc\nauthorization-enabled=false\n\
            admin-group=wheel\nadmin-users= alice, bob ,\nsecure-cookie-key-file=/s/key\n\
            max-token-lifetime-seconds=60\nmax-request-body-bytes=2048\nrequest-timeout-seconds=5\n\
            enable-debug-logging=TRUE\nnodes=a:1, b:2\nenable-metrics=0\n";
        let c = parse_ok(text);
        assert_eq!(c.address, "127.0.0.1");
        assert_eq!(c.port, 8080);
        assert_eq!(c.unix_socket.as_deref(), Some(Path::new("/run/l.sock")));
        assert!(c.enable_ssl);
        assert_eq!(c.certificate_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(c.certificate_key_file.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(c.server_user, "svc");
        assert!(!c.authorization_enabled);
        assert_eq!(c.admin_group.as_deref(), Some("wheel"));
        assert_eq!(c.admin_users, ["alice", "bob"]);
        assert_eq!(c.secure_cookie_key_file, Path::new("/s/key"));
        assert_eq!(c.max_token_lifetime_seconds, 60);
        assert_eq!(c.max_request_body_bytes, 2048);
        assert_eq!(c.request_timeout_seconds, 5);
        assert!(c.enable_debug_logging);
        assert_eq!(c.nodes, ["a:1", "b:2"]);
        assert!(!c.metrics_enabled);
        assert!(c.tcp);
        // The dump parses back to the same configuration.
        assert_eq!(parse_ok(&c.dump()), c);
    }

    #[test]
    fn node_sections_and_node_only_keys_are_skipped() {
        let text = "[node]\nid=1\nanything-the-node-knows=x\n[server]\nnodes=n:5560\nscratch-path=/s\n\
            job-expiry-hours=24\nbootstrap-timeout-seconds=1\nheartbeat-interval-seconds=5\n\
            thread-pool-size=4\n[cluster]\nname=Local\ntype=Local\n[cluster]\nname=Other\n";
        let c = parse_ok(text);
        assert_eq!(c.nodes, ["n:5560"]);
    }

    #[test]
    fn unknown_section_and_key_are_errors_with_file_line_and_key() {
        let e = parse_err("[server]\nnodes=n:1\nprot=5559\nbogus-key=1\n[Server]\n[extra]\nx=1\n");
        let text = e.to_string();
        assert_eq!(e.problems.len(), 4, "{text}");
        assert!(
            text.contains("launcher.conf:3: [server] prot: unknown key; did you mean 'port'?"),
            "{text}"
        );
        assert!(
            text.contains("launcher.conf:4: [server] bogus-key: unknown key; [server] accepts:"),
            "{text}"
        );
        assert!(
            text.contains("launcher.conf:5: unknown section [Server]; section names are lowercase"),
            "{text}"
        );
        assert!(
            text.contains("launcher.conf:6: unknown section [extra]"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn syntax_errors_are_reported_everywhere() {
        let e = parse_err("port=1\n[server]\nnodes=n:1\njust words\n=3\n[node]\nnot a pair\n[oops\n");
        let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(1), Some(4), Some(5), Some(7), Some(8)], "{e}");
        assert!(e
            .to_string()
            .contains("launcher.conf:1: port: key before any section header"));
        assert!(e.to_string().contains("launcher.conf:4: expected key=value"));
    }

    #[test]
    fn all_bad_values_reported_at_once() {
        let e = parse_err(
            "[server]\nnodes=n:1\nport=70000\nenable-ssl=maybe\nmax-token-lifetime-seconds=-5\n\
             max-request-body-bytes=lots\nenable-metrics=2\nport=1\n",
        );
        let text = e.to_string();
        assert_eq!(e.problems.len(), 6, "{text}");
        assert!(
            text.contains(":3: [server] port: 70000 is out of range (0 to 65535)"),
            "{text}"
        );
        assert!(
            text.contains(":4: [server] enable-ssl: expected a boolean"),
            "{text}"
        );
        assert!(
            text.contains(":5: [server] max-token-lifetime-seconds: must not be negative"),
            "{text}"
        );
        assert!(
            text.contains(":6: [server] max-request-body-bytes: expected a whole number"),
            "{text}"
        );
        assert!(
            text.contains(":7: [server] enable-metrics: expected a boolean"),
            "{text}"
        );
        assert!(
            text.contains(":8: [server] port: duplicate key (first set on line 3)"),
            "{text}"
        );
    }

    #[test]
    fn booleans_accept_every_documented_spelling() {
        for (v, want) in [
            ("1", true),
            ("true", true),
            ("Yes", true),
            ("0", false),
            ("FALSE", false),
            ("no", false),
        ] {
            let c = parse_ok(&format!("[server]\nnodes=n:1\nenable-debug-logging={v}\n"));
            assert_eq!(c.enable_debug_logging, want, "{v}");
        }
    }

    #[test]
    fn env_overrides_win_and_errors_name_the_variable() {
        let env = env_of(&[
            ("LAUNCHER_ADDRESS", "10.0.0.1"),
            ("LAUNCHER_PORT", "6000"),
            ("LAUNCHER_NODES", "x:1,y:2"),
            ("LAUNCHER_UNIX_SOCKET", "/run/g.sock"),
        ]);
        let c = parse("[server]\nport=1\n", "f", Path::new(DIR), env).unwrap();
        assert_eq!((c.address.as_str(), c.port), ("10.0.0.1", 6000));
        assert_eq!(c.nodes, ["x:1", "y:2"]);
        assert_eq!(c.unix_socket.as_deref(), Some(Path::new("/run/g.sock")));

        let env = env_of(&[("LAUNCHER_PORT", "http"), ("LAUNCHER_NODES", "   ")]);
        let e = parse(MINIMAL, "f", Path::new(DIR), env).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(
            e.to_string(),
            "environment variable LAUNCHER_PORT: [server] port: expected a whole number, got 'http'"
        );

        // A cross-field error caused by an override points at the variable, not the file.
        let env = env_of(&[("LAUNCHER_NODES", "http://a:1")]);
        let e = parse(MINIMAL, "f", Path::new(DIR), env).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "environment variable LAUNCHER_NODES: [server] nodes: expected host:port without a scheme"
            ),
            "{e}"
        );
    }

    #[test]
    fn port_must_be_nonzero_unless_unix_socket() {
        let e = parse_err("[server]\nnodes=n:1\nport=0\n");
        assert!(
            e.to_string().contains(":3: [server] port: must be 1 to 65535"),
            "{e}"
        );
        let c = parse_ok("[server]\nnodes=n:1\nport=0\nunix-socket=/run/l.sock\n");
        assert_eq!(
            (c.port, c.tcp),
            (0, false),
            "port=0 with a socket serves on the socket only"
        );
        assert!(parse_ok("[server]\nnodes=n:1\nunix-socket=/run/l.sock\n").tcp);
    }

    #[test]
    fn ssl_requires_both_certificate_files() {
        let e = parse_err("[server]\nnodes=n:1\nenable-ssl=1\n");
        let text = e.to_string();
        assert_eq!(e.problems.len(), 2, "{text}");
        assert!(
            text.contains(":3: [server] certificate-file: required when enable-ssl is on"),
            "{text}"
        );
        assert!(
            text.contains(":3: [server] certificate-key-file: required when enable-ssl is on"),
            "{text}"
        );
        let e = parse_err("[server]\nnodes=n:1\nenable-ssl=1\ncertificate-file=/c.pem\n");
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].key.as_deref(), Some("certificate-key-file"));
        parse_ok("[server]\nnodes=n:1\nenable-ssl=1\ncertificate-file=/c\ncertificate-key-file=/k\n");
    }

    #[test]
    fn nodes_must_be_given_and_dialable() {
        let e = parse_err("[server]\nport=5559\n");
        let text = e.to_string();
        assert!(
            text.starts_with("launcher.conf:1: [server] nodes: no node addresses"),
            "{text}"
        );
        assert!(text.contains("nodes=127.0.0.1:5560,127.0.0.1:5561"), "{text}");
        // No [server] section at all: no line to point at.
        let e = parse_err("");
        assert_eq!(e.problems[0].line, None);
        assert!(e.to_string().starts_with("launcher.conf: [server] nodes:"), "{e}");
        let e = parse_err("[server]\nnodes=a:1,b,c:0,::1:5,[::1]:5560\n");
        assert_eq!(e.problems.len(), 3, "{e}");
        assert!(e.problems.iter().all(|p| p.line == Some(2)));
    }

    #[test]
    fn limits_are_checked() {
        let e = parse_err(
            "[server]\nnodes=n:1\nmax-token-lifetime-seconds=0\nmax-request-body-bytes=1023\n\
             request-timeout-seconds=0\n",
        );
        let text = e.to_string();
        assert_eq!(e.problems.len(), 3, "{text}");
        assert!(
            text.contains(":3: [server] max-token-lifetime-seconds: must be at least 1"),
            "{text}"
        );
        assert!(
            text.contains(":4: [server] max-request-body-bytes: must be at least 1024, got 1023"),
            "{text}"
        );
        assert!(
            text.contains(":5: [server] request-timeout-seconds: must be at least 1"),
            "{text}"
        );
        parse_ok("[server]\nnodes=n:1\nmax-request-body-bytes=1024\n");
    }

    #[test]
    fn validate_on_programmatic_config() {
        let mut c = GatewayConfig::new(PathBuf::from(DIR));
        let e = c.validate().unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].file, format!("{DIR}/launcher.conf"));
        c.nodes.push("127.0.0.1:5560".into());
        c.validate().unwrap();
    }

    #[test]
    fn load_reads_file_and_sets_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launcher.conf");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = load(&path, no_env).unwrap();
        assert_eq!(c.dir, dir.path());
        assert_eq!(c.secure_cookie_key_file, dir.path().join("secure-cookie-key"));
        let e = load(&dir.path().join("missing.conf"), no_env).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the configuration file"),
            "{e}"
        );
        std::fs::write(&path, "[server]\nport=x\nnodes=n:1\n").unwrap();
        let e = load(&path, no_env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: [server] port:", path.display())),
            "{e}"
        );
    }
}
