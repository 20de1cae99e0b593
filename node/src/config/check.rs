//! Checks on the typed configuration: values and constraints across keys, each reported at the
//! line (or environment variable) that set the value.

use std::collections::HashMap;

use launcher_config::values::check_host_port;
use launcher_config::ConfigError;

use super::{ClusterType, Config, Origins, Sect};

pub(super) fn check(config: &Config, origins: &Origins) -> Vec<ConfigError> {
    let mut checker = Checker {
        config,
        origins,
        errors: Vec::new(),
    };
    checker.server();
    checker.node();
    checker.clusters();
    checker.errors
}

struct Checker<'a> {
    config: &'a Config,
    origins: &'a Origins,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// True when none of `keys` failed to parse (their error is already reported).
    fn usable(&self, sect: Sect, keys: &[&'static str]) -> bool {
        self.origins.usable(sect, keys)
    }

    fn label(&self, sect: Sect) -> String {
        match sect {
            Sect::Cluster(i) if !self.origins.sections.contains_key(&sect) => {
                let name = &self.config.clusters[i].name;
                if name.is_empty() {
                    format!("cluster #{}", i + 1)
                } else {
                    format!("cluster \"{name}\"")
                }
            }
            _ => sect.kind().to_string(),
        }
    }

    /// Reports `message` about `key`, at the line (or variable) of the first of `key` and `related`
    /// that was set, else at the section header.
    fn report(&mut self, sect: Sect, key: &'static str, related: &[&'static str], message: String) {
        let section = self.label(sect);
        let error = self.origins.about(sect, &section, key, related, message);
        self.errors.push(error);
    }

    fn positive(&mut self, sect: Sect, key: &'static str, value: u64) {
        if value == 0 && self.usable(sect, &[key]) {
            self.report(sect, key, &[], "must be at least 1".to_string());
        }
    }

    fn not_empty(&mut self, sect: Sect, key: &'static str, value: &str) {
        if value.trim().is_empty() && self.usable(sect, &[key]) {
            self.report(sect, key, &[], "must not be empty".to_string());
        }
    }

    fn addresses(&mut self, sect: Sect, key: &'static str, values: &[String], allow_port_0: bool) {
        for value in values {
            if let Err(message) = check_host_port(value, allow_port_0) {
                self.report(sect, key, &[], message);
            }
        }
    }

    /// The checks every program makes of `[server]` (`launcher_config::server::check`).
    fn server(&mut self) {
        let s = Sect::Server;
        let mut found = Vec::new();
        launcher_config::server::check(
            &self.config.server,
            |keys| self.usable(s, keys),
            |key, related, message| found.push((key, related.to_vec(), message)),
        );
        for (key, related, message) in found {
            self.report(s, key, &related, message);
        }
    }

    fn node(&mut self) {
        let s = Sect::Node;
        let node = &self.config.node;
        if node.id == Some(0) {
            let message =
                "must be a positive integer (node ids start at 1); leave it unset to have one assigned";
            self.report(s, "id", &[], message.to_string());
        }
        if self.usable(s, &["grpc-address"]) {
            if let Err(message) = check_host_port(&node.grpc_address, true) {
                self.report(s, "grpc-address", &[], message);
            }
        }
        if let Some(addr) = &node.advertise_address {
            if let Err(message) = check_host_port(addr, false) {
                self.report(s, "advertise-address", &[], message);
            } else if is_wildcard_host(addr) {
                let message = format!("'{addr}' is a wildcard; give an address other nodes can reach");
                self.report(s, "advertise-address", &[], message);
            }
        }
        self.not_empty(s, "data-dir", &node.data_dir.to_string_lossy());
        self.addresses(s, "join", &node.join, false);
        match node.bootstrap_expect {
            Some(0) => {
                let message = "must be at least 1 (the number of nodes that form the new cluster)";
                self.report(s, "bootstrap-expect", &[], message.to_string());
            }
            Some(n) if n > 1 && node.join.is_empty() && self.usable(s, &["join"]) => {
                let message =
                    format!("bootstrap-expect={n} needs join addresses to discover the other nodes");
                self.report(s, "join", &["bootstrap-expect"], message);
            }
            _ => {}
        }
        self.positive(s, "node-lost-timeout-seconds", node.node_lost_timeout_seconds);
        let (removal, lost) = (node.dead_member_removal_seconds, node.node_lost_timeout_seconds);
        if removal != 0
            && removal < lost
            && self.usable(s, &["dead-member-removal-seconds", "node-lost-timeout-seconds"])
        {
            let message =
                format!("must be 0 (disabled) or at least node-lost-timeout-seconds ({removal} < {lost})");
            self.report(
                s,
                "dead-member-removal-seconds",
                &["node-lost-timeout-seconds"],
                message,
            );
        }
        self.positive(s, "snapshot-log-entries", node.snapshot_log_entries);
        self.positive(s, "heartbeat-ms", node.heartbeat_ms);
        self.positive(s, "cache-capacity-mb", node.cache_capacity_mb);
        self.positive(s, "max-pending-writes", node.max_pending_writes as u64);
        self.positive(s, "write-timeout-seconds", node.write_timeout_seconds);
        let (min, max) = (node.election_timeout_min_ms, node.election_timeout_max_ms);
        if min >= max && self.usable(s, &["election-timeout-min-ms", "election-timeout-max-ms"]) {
            let message = format!("must be less than election-timeout-max-ms ({min} >= {max})");
            self.report(
                s,
                "election-timeout-min-ms",
                &["election-timeout-max-ms"],
                message,
            );
        }
        let heartbeat = node.heartbeat_ms;
        if heartbeat != 0 && heartbeat >= min && self.usable(s, &["heartbeat-ms", "election-timeout-min-ms"])
        {
            let message = format!("must be less than election-timeout-min-ms ({heartbeat} >= {min})");
            self.report(s, "heartbeat-ms", &["election-timeout-min-ms"], message);
        }
        if let Some(id) = &node.cluster_id {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.report(
                    s,
                    "cluster-id",
                    &[],
                    format!("'{id}' must be non-empty without spaces"),
                );
            }
        }
    }

    fn clusters(&mut self) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut plugin_names: HashMap<&str, usize> = HashMap::new();
        for (i, cluster) in self.config.clusters.iter().enumerate() {
            let s = Sect::Cluster(i);
            if self.usable(s, &["name"]) {
                if cluster.name.trim().is_empty() {
                    self.report(s, "name", &[], "must not be empty".to_string());
                } else if let Some(&first) = names.get(cluster.name.as_str()) {
                    let message = format!(
                        "duplicate cluster name '{}' (first {})",
                        cluster.name,
                        self.place(first)
                    );
                    self.report(s, "name", &[], message);
                } else {
                    names.insert(&cluster.name, i);
                }
            }
            if cluster.kind == ClusterType::Plugin && cluster.exe.is_none() && self.usable(s, &["type"]) {
                let message = "required for type=Plugin: the path of the plugin binary".to_string();
                self.report(s, "exe", &["type"], message);
            }
            let bad_args: Vec<&str> = cluster
                .plugin_args
                .iter()
                .map(String::as_str)
                .filter(|a| !is_plugin_arg(a))
                .collect();
            if !bad_args.is_empty() {
                let message = format!(
                    "each argument must have the form --name=value; not so: '{}'",
                    bad_args.join("', '")
                );
                self.report(s, "plugin-args", &[], message);
            }
            // Built in code (no section line) counts as explicit: nothing was derived.
            let explicit = self.origins.keys.contains_key(&(s, "plugin-name"))
                || !self.origins.sections.contains_key(&s);
            if self.usable(s, &["plugin-name"]) && !cluster.plugin_name.is_empty() {
                if !is_file_name_safe(&cluster.plugin_name) {
                    let derived = if explicit {
                        ""
                    } else {
                        " (derived from name; set plugin-name explicitly)"
                    };
                    let message = format!(
                        "'{}' may hold only letters, digits, '-', '_' and '.'{derived}",
                        cluster.plugin_name
                    );
                    self.report(s, "plugin-name", &["name"], message);
                } else if let Some(&first) = plugin_names.get(cluster.plugin_name.as_str()) {
                    let message = format!(
                        "plugin name '{}' is also used by the cluster {}; plugins must not share config and scratch files",
                        cluster.plugin_name,
                        self.place(first)
                    );
                    self.report(s, "plugin-name", &["name"], message);
                } else {
                    plugin_names.insert(&cluster.plugin_name, i);
                }
            } else if cluster.plugin_name.is_empty() && explicit {
                // An empty name is reported on its own; only an explicit empty plugin-name is news.
                self.report(s, "plugin-name", &["name"], "must not be empty".to_string());
            }
        }
    }

    /// Where cluster `i` was defined, for messages about duplicates.
    fn place(&self, i: usize) -> String {
        match self.origins.sections.get(&Sect::Cluster(i)) {
            Some(line) => format!("defined on line {line}"),
            None => format!("#{}", i + 1),
        }
    }
}

fn is_wildcard_host(addr: &str) -> bool {
    matches!(
        addr.rsplit_once(':').map(|(h, _)| h),
        Some("0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]")
    )
}

fn is_plugin_arg(arg: &str) -> bool {
    let Some((name, _value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
        return false;
    };
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_file_name_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
