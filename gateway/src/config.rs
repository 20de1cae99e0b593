//! The gateway's view of `launcher.conf` (docs/configuration.md).
//!
//! Gateways and nodes share one file. The gateway reads only `[server]` and skips the nodes'
//! `[node]` and `[cluster]` sections, but its lines go through the same reader as the node's
//! (`launcher-config`: same line rules, same value grammar, same problem reports), so a file
//! that one side accepts the other does not reject for reasons it cannot see.
//!
//! Every problem is collected into one [`ConfigErrors`], each naming file, line and key, so an
//! operator fixes the file in one pass. Containers override a few keys from `LAUNCHER_*`
//! environment variables ([`ENV_OVERRIDES`]); errors they cause name the variable.

use std::path::{Path, PathBuf};

pub use launcher_config::server::ServerConfig;
use launcher_config::server::SERVER_KEYS;
pub use launcher_config::{
    config_dir, config_dir_from, ConfigError, ConfigErrors, CONFIG_DIR_ENV, CONFIG_FILE_NAME,
    DEFAULT_CONFIG_DIR,
};
use launcher_config::{KeySpec, Open, Sections};

/// The one section the gateway reads, `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Server;

type Origins = launcher_config::Origins<Server>;

/// Environment overrides for containers: `(variable, [server] key)`; a set, non-blank variable
/// replaces the key's value from the file.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("LAUNCHER_ADDRESS", "address"),
    ("LAUNCHER_PORT", "port"),
    ("LAUNCHER_NODES", "nodes"),
    ("LAUNCHER_UNIX_SOCKET", "unix-socket"),
];

/// The settings the gateway runs with: the `[server]` section (the gateway uses the keys whose
/// "used by" column in docs/configuration.md says gateway or both, and accepts the nodes' ones),
/// and what follows from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    /// Serve on TCP at all: false when the file sets `port=0` with `unix-socket`, so the
    /// gateway answers only on the socket. (In code a port of 0 picks a free port.)
    pub tcp: bool,
    /// The configuration directory (holds the secure-cookie-key by default).
    pub dir: PathBuf,
}

impl GatewayConfig {
    /// Documented defaults rooted in `dir`, with no nodes (so not valid until some are added).
    pub fn new(dir: PathBuf) -> Self {
        GatewayConfig {
            server: ServerConfig::with_config_dir(&dir),
            tcp: true,
            dir,
        }
    }

    /// Checks values and cross-field constraints of a configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let file = self.dir.join(CONFIG_FILE_NAME).display().to_string();
        ConfigErrors::result(check(self, &Origins::new(file)))
    }

    /// The effective configuration as a `[server]` section (every key, defaults included), for
    /// the debug log; parsing it again gives the same configuration.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "# effective gateway configuration (config dir: {})\n",
            self.dir.display()
        );
        KeySpec::write_section(&mut out, "server", SERVER_KEYS, &self.server);
        out
    }
}

impl Sections for GatewayConfig {
    type Id = Server;

    fn open(&mut self, name: &str) -> Option<Open<Server>> {
        match name {
            "server" => Some(Open::Keys {
                section: Server,
                repeat: false,
            }),
            // The nodes' business.
            "node" | "cluster" => Some(Open::Skip),
            _ => None,
        }
    }

    fn name(&self, _: Server) -> &'static str {
        "server"
    }

    fn known_key(&self, _: Server, key: &str) -> Option<&'static str> {
        KeySpec::find(SERVER_KEYS, key).map(|k| k.name)
    }

    fn key_names(&self, _: Server) -> Vec<&'static str> {
        KeySpec::names(SERVER_KEYS)
    }

    /// Sets one `[server]` key from its text (the nodes' keys too: one file serves both).
    fn set(&mut self, _: Server, key: &'static str, value: &str) -> Result<(), String> {
        KeySpec::apply(SERVER_KEYS, &mut self.server, key, value)
    }
}

/// Reads `path` (normally `<config dir>/launcher.conf`), applies [`ENV_OVERRIDES`] read through
/// `env`, and validates; `dir` becomes the file's directory.
pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<GatewayConfig, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError {
            file: file.clone(),
            line: None,
            section: String::new(),
            key: None,
            message: format!(
                "cannot read the configuration file: {e}; set {CONFIG_DIR_ENV} to the directory holding {CONFIG_FILE_NAME}"
            ),
        })
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
) -> Result<GatewayConfig, ConfigErrors> {
    let mut config = GatewayConfig::new(dir.to_path_buf());
    let mut origins = Origins::new(file);
    let mut problems = launcher_config::read(text, &mut origins, &mut config);
    let overrides = ENV_OVERRIDES.iter().map(|&(var, key)| (var, Server, key));
    problems.extend(launcher_config::apply_env(
        overrides,
        &env,
        &mut origins,
        &mut config,
    ));
    problems.extend(check(&config, &origins));
    config.tcp = !(config.server.port == 0 && config.server.unix_socket.is_some());
    ConfigErrors::result(problems).map(|()| config)
}

// ---------------------------------------------------------------------------------------------
// Checks on the typed configuration.

/// The shared checks of `[server]` (`launcher_config::server::check`), and the gateway's own:
/// it needs nodes, and a port of 0 only turns TCP off next to a unix socket.
fn check(config: &GatewayConfig, origins: &Origins) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let usable = |keys: &[&'static str]| origins.usable(Server, keys);
    let mut report = |key: &'static str, related: &[&'static str], message: String| {
        problems.push(origins.about(Server, "server", key, related, message));
    };
    let server = &config.server;
    launcher_config::server::check(server, usable, &mut report);
    if server.port == 0 && server.unix_socket.is_none() && usable(&["port", "unix-socket"]) {
        let message = "must be 1 to 65535 (or set unix-socket to serve only on a unix socket)";
        report("port", &[], message.to_string());
    }
    if server.nodes.is_empty() && usable(&["nodes"]) {
        let message = "no node addresses: the gateway needs at least one node's gRPC address, \
                       e.g. nodes=127.0.0.1:5560,127.0.0.1:5561 (or LAUNCHER_NODES)";
        report("nodes", &[], message.to_string());
    }
    problems
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

    fn parse_err(text: &str) -> ConfigErrors {
        parse(text, "launcher.conf", Path::new(DIR), no_env).unwrap_err()
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const MINIMAL: &str = "[server]\nnodes=127.0.0.1:5560\n";

    /// The gateway accepts exactly the `[server]` keys docs/configuration.md lists (the ones it
    /// uses, and the nodes' it ignores), and its overrides are documented.
    #[test]
    fn the_configuration_reference_lists_exactly_the_server_keys() {
        let doc = include_str!("../../docs/configuration.md");
        let rows = |heading: &str| launcher_config::documented_keys(doc, heading);
        let mut documented = rows("## [server]\n");
        let mut accepted: Vec<String> = GatewayConfig::new(PathBuf::from(DIR))
            .key_names(Server)
            .into_iter()
            .map(String::from)
            .collect();
        documented.sort();
        accepted.sort();
        assert_eq!(documented, accepted);
        let documented = rows("## Environment overrides\n");
        for (var, _) in ENV_OVERRIDES {
            assert!(documented.iter().any(|d| d == var), "{var} is not documented");
        }
    }

    #[test]
    fn defaults_are_documented_ones() {
        let c = parse_ok(MINIMAL);
        let mut expected = GatewayConfig::new(PathBuf::from(DIR));
        expected.server.nodes = vec!["127.0.0.1:5560".into()];
        assert_eq!(c, expected);
        assert_eq!(c.server.address, "0.0.0.0");
        assert_eq!(c.server.port, 5559);
        assert!(c.server.authorization_enabled && c.server.enable_metrics);
        assert!(!c.server.enable_ssl && !c.server.enable_debug_logging);
        assert_eq!(
            c.server.secure_cookie_key_file,
            Path::new(DIR).join("secure-cookie-key")
        );
        assert_eq!(c.server.max_token_lifetime_seconds, 86_400);
        assert_eq!(c.server.max_request_body_bytes, 1_048_576);
        assert_eq!(c.server.request_timeout_seconds, 120);
        assert_eq!(c.server.server_user, "rstudio-server");
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
        assert_eq!(c.server.address, "127.0.0.1");
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.unix_socket.as_deref(), Some(Path::new("/run/l.sock")));
        assert!(c.server.enable_ssl);
        assert_eq!(c.server.certificate_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(
            c.server.certificate_key_file.as_deref(),
            Some(Path::new("/k.pem"))
        );
        assert_eq!(c.server.server_user, "svc");
        assert!(!c.server.authorization_enabled);
        assert_eq!(c.server.admin_group.as_deref(), Some("wheel"));
        assert_eq!(c.server.admin_users, ["alice", "bob"]);
        assert_eq!(c.server.secure_cookie_key_file, Path::new("/s/key"));
        assert_eq!(c.server.max_token_lifetime_seconds, 60);
        assert_eq!(c.server.max_request_body_bytes, 2048);
        assert_eq!(c.server.request_timeout_seconds, 5);
        assert!(c.server.enable_debug_logging);
        assert_eq!(c.server.nodes, ["a:1", "b:2"]);
        assert!(!c.server.enable_metrics);
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
        assert_eq!(c.server.nodes, ["n:5560"]);
    }

    #[test]
    fn unknown_section_and_key_are_errors_with_file_line_and_key() {
        let e = parse_err("[server]\nnodes=n:1\nprot=5559\nbogus-key=1\n[Server]\n[extra]\nx=1\n");
        let text = e.to_string();
        assert_eq!(e.errors.len(), 4, "{text}");
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
        let lines: Vec<_> = e.errors.iter().map(|p| p.line).collect();
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
        assert_eq!(e.errors.len(), 6, "{text}");
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
            assert_eq!(c.server.enable_debug_logging, want, "{v}");
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
        assert_eq!((c.server.address.as_str(), c.server.port), ("10.0.0.1", 6000));
        assert_eq!(c.server.nodes, ["x:1", "y:2"]);
        assert_eq!(c.server.unix_socket.as_deref(), Some(Path::new("/run/g.sock")));

        let env = env_of(&[("LAUNCHER_PORT", "http"), ("LAUNCHER_NODES", "   ")]);
        let e = parse(MINIMAL, "f", Path::new(DIR), env).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
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
            (c.server.port, c.tcp),
            (0, false),
            "port=0 with a socket serves on the socket only"
        );
        assert!(parse_ok("[server]\nnodes=n:1\nunix-socket=/run/l.sock\n").tcp);
    }

    #[test]
    fn ssl_requires_both_certificate_files() {
        let e = parse_err("[server]\nnodes=n:1\nenable-ssl=1\n");
        let text = e.to_string();
        assert_eq!(e.errors.len(), 2, "{text}");
        assert!(
            text.contains(":3: [server] certificate-file: required when enable-ssl is on"),
            "{text}"
        );
        assert!(
            text.contains(":3: [server] certificate-key-file: required when enable-ssl is on"),
            "{text}"
        );
        let e = parse_err("[server]\nnodes=n:1\nenable-ssl=1\ncertificate-file=/c.pem\n");
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].key.as_deref(), Some("certificate-key-file"));
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
        assert_eq!(e.errors[0].line, None);
        assert!(e.to_string().starts_with("launcher.conf: [server] nodes:"), "{e}");
        let e = parse_err("[server]\nnodes=a:1,b,c:0,::1:5,[::1]:5560\n");
        assert_eq!(e.errors.len(), 3, "{e}");
        assert!(e.errors.iter().all(|p| p.line == Some(2)));
    }

    #[test]
    fn limits_are_checked() {
        let e = parse_err(
            "[server]\nnodes=n:1\nmax-token-lifetime-seconds=0\nmax-request-body-bytes=1023\n\
             request-timeout-seconds=0\n",
        );
        let text = e.to_string();
        assert_eq!(e.errors.len(), 3, "{text}");
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
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].file, format!("{DIR}/launcher.conf"));
        c.server.nodes.push("127.0.0.1:5560".into());
        c.validate().unwrap();
    }

    #[test]
    fn load_reads_file_and_sets_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launcher.conf");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = load(&path, no_env).unwrap();
        assert_eq!(c.dir, dir.path());
        assert_eq!(
            c.server.secure_cookie_key_file,
            dir.path().join("secure-cookie-key")
        );
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
