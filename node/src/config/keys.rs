//! The key tables of `[node]` and `[cluster]` (`[server]`'s is `launcher_config::server`'s): one entry per key (name, how it is
//! set from text, how it is shown), so that parsing, environment overrides, `dump` and the
//! reference in docs/configuration.md (checked by a test) cannot drift apart.

use launcher_config::values::{
    opt, opt_path, opt_string, parse_bool, parse_list, parse_u64, parse_uint, parse_usize, path, set,
    show_bool, show_opt, show_opt_path,
};
use launcher_config::KeySpec;

use super::{ClusterConfig, ClusterType, NodeConfig, UnknownClusterType};

pub(super) const NODE_KEYS: &[KeySpec<NodeConfig>] = &[
    KeySpec {
        name: "id",
        set: |n, v| set(&mut n.id, opt(v, parse_u64)?),
        get: |n| show_opt(&n.id),
    },
    KeySpec {
        name: "grpc-address",
        set: |n, v| set(&mut n.grpc_address, v.to_string()),
        get: |n| n.grpc_address.clone(),
    },
    KeySpec {
        name: "advertise-address",
        set: |n, v| set(&mut n.advertise_address, opt_string(v)),
        get: |n| n.advertise_address.clone().unwrap_or_default(),
    },
    KeySpec {
        name: "data-dir",
        set: |n, v| set(&mut n.data_dir, path(v)?),
        get: |n| n.data_dir.display().to_string(),
    },
    KeySpec {
        name: "join",
        set: |n, v| set(&mut n.join, parse_list(v)),
        get: |n| n.join.join(","),
    },
    KeySpec {
        name: "bootstrap-expect",
        set: |n, v| set(&mut n.bootstrap_expect, opt(v, parse_usize)?),
        get: |n| show_opt(&n.bootstrap_expect),
    },
    KeySpec {
        name: "node-lost-timeout-seconds",
        set: |n, v| set(&mut n.node_lost_timeout_seconds, parse_u64(v)?),
        get: |n| n.node_lost_timeout_seconds.to_string(),
    },
    KeySpec {
        name: "dead-member-removal-seconds",
        set: |n, v| set(&mut n.dead_member_removal_seconds, parse_u64(v)?),
        get: |n| n.dead_member_removal_seconds.to_string(),
    },
    KeySpec {
        name: "snapshot-log-entries",
        set: |n, v| set(&mut n.snapshot_log_entries, parse_u64(v)?),
        get: |n| n.snapshot_log_entries.to_string(),
    },
    KeySpec {
        name: "heartbeat-ms",
        set: |n, v| set(&mut n.heartbeat_ms, parse_u64(v)?),
        get: |n| n.heartbeat_ms.to_string(),
    },
    KeySpec {
        name: "election-timeout-min-ms",
        set: |n, v| set(&mut n.election_timeout_min_ms, parse_u64(v)?),
        get: |n| n.election_timeout_min_ms.to_string(),
    },
    KeySpec {
        name: "election-timeout-max-ms",
        set: |n, v| set(&mut n.election_timeout_max_ms, parse_u64(v)?),
        get: |n| n.election_timeout_max_ms.to_string(),
    },
    KeySpec {
        name: "fast-failover",
        set: |n, v| set(&mut n.fast_failover, parse_bool(v)?),
        get: |n| show_bool(n.fast_failover),
    },
    KeySpec {
        name: "cache-capacity-mb",
        set: |n, v| set(&mut n.cache_capacity_mb, parse_u64(v)?),
        get: |n| n.cache_capacity_mb.to_string(),
    },
    KeySpec {
        name: "max-pending-writes",
        set: |n, v| set(&mut n.max_pending_writes, parse_usize(v)?),
        get: |n| n.max_pending_writes.to_string(),
    },
    KeySpec {
        name: "write-timeout-seconds",
        set: |n, v| set(&mut n.write_timeout_seconds, parse_u64(v)?),
        get: |n| n.write_timeout_seconds.to_string(),
    },
    KeySpec {
        name: "cluster-id",
        set: |n, v| set(&mut n.cluster_id, opt_string(v)),
        get: |n| n.cluster_id.clone().unwrap_or_default(),
    },
];

pub(super) const CLUSTER_KEYS: &[KeySpec<ClusterConfig>] = &[
    KeySpec {
        name: "name",
        set: |c, v| set(&mut c.name, v.to_string()),
        get: |c| c.name.clone(),
    },
    KeySpec {
        name: "type",
        set: |c, v| set(&mut c.kind, parse_cluster_type(v)?),
        get: |c| c.kind.to_string(),
    },
    KeySpec {
        name: "exe",
        set: |c, v| set(&mut c.exe, opt_path(v)),
        get: |c| show_opt_path(&c.exe),
    },
    KeySpec {
        name: "plugin-name",
        set: |c, v| set(&mut c.plugin_name, v.to_string()),
        get: |c| c.plugin_name.clone(),
    },
    KeySpec {
        name: "plugin-args",
        set: |c, v| set(&mut c.plugin_args, parse_words(v)),
        get: |c| c.plugin_args.join(" "),
    },
    KeySpec {
        name: "shared-scheduler",
        set: |c, v| set(&mut c.shared_scheduler, parse_bool(v)?),
        get: |c| show_bool(c.shared_scheduler),
    },
    KeySpec {
        name: "allowed-mount-sources",
        set: |c, v| set(&mut c.allowed_mount_sources, parse_mount_sources(v)?),
        get: |c| c.allowed_mount_sources.join(","),
    },
    KeySpec {
        name: "min-uid",
        set: |c, v| set(&mut c.min_uid, parse_uint(v, u32::MAX.into())? as u32),
        get: |c| c.min_uid.to_string(),
    },
    KeySpec {
        name: "max-cpu-count",
        set: |c, v| set(&mut c.max_cpu_count, opt(v, parse_limit)?),
        get: |c| show_opt(&c.max_cpu_count),
    },
    KeySpec {
        name: "max-cpu-time-seconds",
        set: |c, v| set(&mut c.max_cpu_time_seconds, opt(v, parse_limit)?),
        get: |c| show_opt(&c.max_cpu_time_seconds),
    },
    KeySpec {
        name: "max-memory-mb",
        set: |c, v| set(&mut c.max_memory_mb, opt(v, parse_limit)?),
        get: |c| show_opt(&c.max_memory_mb),
    },
    KeySpec {
        name: "max-memory-swap-mb",
        set: |c, v| set(&mut c.max_memory_swap_mb, opt(v, parse_limit)?),
        get: |c| show_opt(&c.max_memory_swap_mb),
    },
];

/// A list of absolute directories without `.` or `..` components (`{USER}` allowed).
fn parse_mount_sources(v: &str) -> Result<Vec<String>, String> {
    let list = parse_list(v);
    for p in &list {
        let path = std::path::Path::new(p);
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)));
        if !path.is_absolute() || !plain {
            return Err(format!("'{p}' is not an absolute path without '.' or '..'"));
        }
    }
    Ok(list)
}

/// A resource maximum: a finite number above 0.
fn parse_limit(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("expected a number above 0, got '{v}'")),
    }
}

fn parse_words(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_string).collect()
}

fn parse_cluster_type(v: &str) -> Result<ClusterType, String> {
    v.parse().map_err(|e: UnknownClusterType| e.to_string())
}
