//! The `[server]` section, which the gateway and every node read from one `launcher.conf`:
//! its settings with their documented defaults, its key table (parsing, environment
//! overrides and dumps go through it), and the checks of its values. Declared once so that a
//! file one program accepts the other does not reject.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::values::{
    check_host_port, opt, opt_path, opt_string, parse_bool, parse_list, parse_port, parse_u64, parse_usize,
    path, set, show_bool, show_opt, show_opt_path,
};
use crate::KeySpec;

/// The `[server]` section: every key docs/configuration.md lists there. Each program uses the
/// keys that concern it (the "used by" column) and accepts the others, so one file serves both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    /// HTTP listen address (`address`, default `0.0.0.0`).
    pub address: String,
    /// HTTP listen port (`port`, default 5559; 0 picks a free port, for tests).
    pub port: u16,
    /// Also listen on this unix socket (`unix-socket`).
    pub unix_socket: Option<PathBuf>,
    /// Serve HTTPS (`enable-ssl`, default off).
    pub enable_ssl: bool,
    /// PEM certificate chain (`certificate-file`), required with `enable-ssl`.
    pub certificate_file: Option<PathBuf>,
    /// PEM private key (`certificate-key-file`), required with `enable-ssl`.
    pub certificate_key_file: Option<PathBuf>,
    /// Unprivileged user the services run as (`server-user`, default `rstudio-server`).
    pub server_user: String,
    /// Check request authorization (`authorization-enabled`, default on).
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
    /// Worker threads (`thread-pool-size`, default: the number of CPUs).
    pub thread_pool_size: Option<usize>,
    /// Deadline of every plugin request (`request-timeout-seconds`, default 120).
    pub request_timeout_seconds: u64,
    /// Deadline of a plugin's Bootstrap (`bootstrap-timeout-seconds`, default 120).
    pub bootstrap_timeout_seconds: u64,
    /// Plugin heartbeat period (`heartbeat-interval-seconds`, default 5; 0 disables).
    pub heartbeat_interval_seconds: u64,
    /// Finished jobs are removed after this long (`job-expiry-hours`, default 24).
    pub job_expiry_hours: u64,
    /// Debug logging for the launcher and its plugins (`enable-debug-logging`, default off).
    pub enable_debug_logging: bool,
    /// Serve `GET /metrics` (`enable-metrics`, default on): the gateway on its port, a node on
    /// its gRPC port (HTTP/1.1).
    pub enable_metrics: bool,
    /// Working directory for plugins (`scratch-path`, default `/var/lib/rstudio-launcher`).
    pub scratch_path: PathBuf,
    /// Gateway only: seed node gRPC addresses (`nodes`, comma separated `host:port`).
    pub nodes: Vec<String>,
}

impl Default for ServerConfig {
    /// Documented defaults, with the secure-cookie-key under [`crate::config_dir()`].
    fn default() -> Self {
        ServerConfig::with_config_dir(&crate::config_dir())
    }
}

impl ServerConfig {
    /// Documented defaults, with the secure-cookie-key under `dir`.
    pub fn with_config_dir(dir: &Path) -> Self {
        ServerConfig {
            address: "0.0.0.0".to_string(),
            port: 5559,
            unix_socket: None,
            enable_ssl: false,
            certificate_file: None,
            certificate_key_file: None,
            server_user: "rstudio-server".to_string(),
            authorization_enabled: true,
            admin_group: None,
            admin_users: Vec::new(),
            secure_cookie_key_file: dir.join("secure-cookie-key"),
            max_token_lifetime_seconds: 86_400,
            max_request_body_bytes: 1_048_576,
            thread_pool_size: None,
            request_timeout_seconds: 120,
            bootstrap_timeout_seconds: 120,
            heartbeat_interval_seconds: 5,
            job_expiry_hours: 24,
            enable_debug_logging: false,
            enable_metrics: true,
            scratch_path: PathBuf::from("/var/lib/rstudio-launcher"),
            nodes: Vec::new(),
        }
    }
}

/// How each `[server]` key is set from text and shown, in dump order.
pub const SERVER_KEYS: &[KeySpec<ServerConfig>] = &[
    KeySpec {
        name: "address",
        set: |s, v| set(&mut s.address, v.to_string()),
        get: |s| s.address.clone(),
    },
    KeySpec {
        name: "port",
        set: |s, v| set(&mut s.port, parse_port(v)?),
        get: |s| s.port.to_string(),
    },
    KeySpec {
        name: "unix-socket",
        set: |s, v| set(&mut s.unix_socket, opt_path(v)),
        get: |s| show_opt_path(&s.unix_socket),
    },
    KeySpec {
        name: "enable-ssl",
        set: |s, v| set(&mut s.enable_ssl, parse_bool(v)?),
        get: |s| show_bool(s.enable_ssl),
    },
    KeySpec {
        name: "certificate-file",
        set: |s, v| set(&mut s.certificate_file, opt_path(v)),
        get: |s| show_opt_path(&s.certificate_file),
    },
    KeySpec {
        name: "certificate-key-file",
        set: |s, v| set(&mut s.certificate_key_file, opt_path(v)),
        get: |s| show_opt_path(&s.certificate_key_file),
    },
    KeySpec {
        name: "server-user",
        set: |s, v| set(&mut s.server_user, v.to_string()),
        get: |s| s.server_user.clone(),
    },
    KeySpec {
        name: "authorization-enabled",
        set: |s, v| set(&mut s.authorization_enabled, parse_bool(v)?),
        get: |s| show_bool(s.authorization_enabled),
    },
    KeySpec {
        name: "admin-group",
        set: |s, v| set(&mut s.admin_group, opt_string(v)),
        get: |s| s.admin_group.clone().unwrap_or_default(),
    },
    KeySpec {
        name: "admin-users",
        set: |s, v| set(&mut s.admin_users, parse_list(v)),
        get: |s| s.admin_users.join(","),
    },
    KeySpec {
        name: "secure-cookie-key-file",
        set: |s, v| set(&mut s.secure_cookie_key_file, path(v)?),
        get: |s| s.secure_cookie_key_file.display().to_string(),
    },
    KeySpec {
        name: "max-token-lifetime-seconds",
        set: |s, v| set(&mut s.max_token_lifetime_seconds, parse_u64(v)?),
        get: |s| s.max_token_lifetime_seconds.to_string(),
    },
    KeySpec {
        name: "max-request-body-bytes",
        set: |s, v| set(&mut s.max_request_body_bytes, parse_usize(v)?),
        get: |s| s.max_request_body_bytes.to_string(),
    },
    KeySpec {
        name: "thread-pool-size",
        set: |s, v| set(&mut s.thread_pool_size, opt(v, parse_usize)?),
        get: |s| show_opt(&s.thread_pool_size),
    },
    KeySpec {
        name: "request-timeout-seconds",
        set: |s, v| set(&mut s.request_timeout_seconds, parse_u64(v)?),
        get: |s| s.request_timeout_seconds.to_string(),
    },
    KeySpec {
        name: "bootstrap-timeout-seconds",
        set: |s, v| set(&mut s.bootstrap_timeout_seconds, parse_u64(v)?),
        get: |s| s.bootstrap_timeout_seconds.to_string(),
    },
    KeySpec {
        name: "heartbeat-interval-seconds",
        set: |s, v| set(&mut s.heartbeat_interval_seconds, parse_u64(v)?),
        get: |s| s.heartbeat_interval_seconds.to_string(),
    },
    KeySpec {
        name: "job-expiry-hours",
        set: |s, v| set(&mut s.job_expiry_hours, parse_u64(v)?),
        get: |s| s.job_expiry_hours.to_string(),
    },
    KeySpec {
        name: "enable-debug-logging",
        set: |s, v| set(&mut s.enable_debug_logging, parse_bool(v)?),
        get: |s| show_bool(s.enable_debug_logging),
    },
    KeySpec {
        name: "enable-metrics",
        set: |s, v| set(&mut s.enable_metrics, parse_bool(v)?),
        get: |s| show_bool(s.enable_metrics),
    },
    KeySpec {
        name: "scratch-path",
        set: |s, v| set(&mut s.scratch_path, path(v)?),
        get: |s| s.scratch_path.display().to_string(),
    },
    KeySpec {
        name: "nodes",
        set: |s, v| set(&mut s.nodes, parse_list(v)),
        get: |s| s.nodes.join(","),
    },
];

/// The smallest `max-request-body-bytes`: an error body or a small job must fit.
pub const MIN_REQUEST_BODY_BYTES: usize = 1024;

/// Checks the values of `server` that every program checks alike. `usable(keys)` says whether
/// none of `keys` failed to parse (their error is already reported); `report(key, related,
/// message)` records a problem at the line of the first of `key` and `related` that was set.
/// What only one program cares about (the gateway's `nodes`, a port of 0) it checks itself.
pub fn check(
    server: &ServerConfig,
    usable: impl Fn(&[&'static str]) -> bool,
    mut report: impl FnMut(&'static str, &[&'static str], String),
) {
    for (key, value) in [("address", &server.address), ("server-user", &server.server_user)] {
        if value.trim().is_empty() && usable(&[key]) {
            let message = match key {
                "address" => "must not be empty (0.0.0.0 listens on every interface)",
                _ => "must not be empty",
            };
            report(key, &[], message.to_string());
        }
    }
    if server.enable_ssl && usable(&["enable-ssl"]) {
        for (key, missing) in [
            ("certificate-file", server.certificate_file.is_none()),
            ("certificate-key-file", server.certificate_key_file.is_none()),
        ] {
            if missing {
                report(
                    key,
                    &["enable-ssl"],
                    "required when enable-ssl is on (a PEM file)".to_string(),
                );
            }
        }
    }
    let at_least = [
        ("max-token-lifetime-seconds", server.max_token_lifetime_seconds, 1),
        (
            "max-request-body-bytes",
            server.max_request_body_bytes as u64,
            MIN_REQUEST_BODY_BYTES as u64,
        ),
        ("request-timeout-seconds", server.request_timeout_seconds, 1),
        ("bootstrap-timeout-seconds", server.bootstrap_timeout_seconds, 1),
        ("job-expiry-hours", server.job_expiry_hours, 1),
    ];
    for (key, value, min) in at_least {
        if value < min && usable(&[key]) {
            report(key, &[], format!("must be at least {min}, got {value}"));
        }
    }
    if server.thread_pool_size == Some(0) && usable(&["thread-pool-size"]) {
        report(
            "thread-pool-size",
            &[],
            "must be at least 1 (leave it unset for one per CPU)".to_string(),
        );
    }
    for node in &server.nodes {
        if let Err(message) = check_host_port(node, false) {
            report("nodes", &[], message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(edit: impl FnOnce(&mut ServerConfig)) -> Vec<String> {
        let mut server = ServerConfig::with_config_dir(Path::new("/etc/rstudio"));
        edit(&mut server);
        let mut found = Vec::new();
        check(
            &server,
            |_| true,
            |key, _, message| found.push(format!("{key}: {message}")),
        );
        found
    }

    #[test]
    fn the_documented_defaults_pass_and_each_bad_value_is_named() {
        assert!(problems(|_| {}).is_empty());
        assert_eq!(
            problems(|s| s.max_request_body_bytes = 1023),
            ["max-request-body-bytes: must be at least 1024, got 1023"]
        );
        assert_eq!(
            problems(|s| {
                s.address = " ".into();
                s.job_expiry_hours = 0;
                s.nodes = vec!["a:0".into()];
            }),
            [
                "address: must not be empty (0.0.0.0 listens on every interface)",
                "job-expiry-hours: must be at least 1, got 0",
                "nodes: port 0 cannot be dialled, got 'a:0'",
            ]
        );
        assert_eq!(
            problems(|s| s.enable_ssl = true),
            [
                "certificate-file: required when enable-ssl is on (a PEM file)",
                "certificate-key-file: required when enable-ssl is on (a PEM file)",
            ]
        );
    }

    #[test]
    fn a_key_that_did_not_parse_is_not_reported_again() {
        let mut server = ServerConfig::with_config_dir(Path::new("/etc/rstudio"));
        server.request_timeout_seconds = 0;
        let mut found = Vec::new();
        check(
            &server,
            |keys| !keys.contains(&"request-timeout-seconds"),
            |key, _, _| found.push(key),
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
