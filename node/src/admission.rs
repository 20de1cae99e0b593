//! What a submit must satisfy before the leader stamps it: everything knowable at submit is
//! refused at submit, with a stable code, so nothing is stored that fails later, breaks a
//! listing, or reaches past the trust boundary (docs/security.md).
//!
//! - JSON nested deeper than [`MAX_JSON_DEPTH`]: 400 (a stored job must always re-serialise).
//! - `resourceLimits`: known types, finite numbers ≥ 0, under the cluster's maxima: 400.
//! - The job's user must be in the user database (400 `UnknownUser`) at or above the cluster's
//!   `min-uid` (403), and may enter its `workingDirectory` (400), for clusters whose jobs run as
//!   host users (Local, Slurm).
//! - The mount policy: a job's `mounts` are honoured only when an admin submitted them, or when
//!   every one is a host mount from under an allowed source of the cluster onto a path outside
//!   the system directories (403 `MountNotAllowed`, naming the mount).
//!
//! The checks run on the leader against its own user database, file system and configuration:
//! every node of a cluster must share those (as they share `launcher-mounts`).

use std::path::{Component, Path};

use launcher_plugin_api::userfs;
use launcher_storage::job::{Job, Mount};
use launcher_storage::ErrorCode;

use crate::config::{ClusterConfig, ClusterType};
use crate::error::{NodeError, NodeResult};
use crate::filters::FilterFiles;

/// Deepest nesting of arrays and objects a submitted job may have (documented in docs/api.md).
pub const MAX_JSON_DEPTH: usize = 32;

/// Mount targets a non-admin job may not cover: the system's own directories. `lib*` is any
/// top-level directory whose name starts with `lib` (`/lib`, `/lib64`, `/libx32`, ...).
const SYSTEM_TARGETS: &[&str] = &[
    "/etc", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/boot", "/run", "/var/run",
];

/// Largest value of each resource limit, whatever the cluster says: beyond these a number is a
/// mistake (or `1e308`), not a request.
const CEILINGS: &[(&str, f64, &str)] = &[
    ("cpuCount", 65_536.0, "max-cpu-count"),
    ("cpuTime", 3_155_760_000.0, "max-cpu-time-seconds"),
    ("memory", 1_099_511_627_776.0, "max-memory-mb"),
    ("memorySwap", 1_099_511_627_776.0, "max-memory-swap-mb"),
];

/// Refuses JSON text nested deeper than [`MAX_JSON_DEPTH`], without parsing it (so without
/// recursion): brackets are counted outside strings.
pub fn check_depth(text: &str) -> NodeResult<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(NodeError::invalid(format!(
                        "the job is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects; \
                         flatten its metadata"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a job whose `user` is set (blocking: it reads the user database and the file system)
/// and returns the names of its user's groups, for the filter files.
pub fn admit(
    job: &Job,
    admin: bool,
    cluster: Option<&ClusterConfig>,
    filters: &FilterFiles,
) -> NodeResult<Vec<String>> {
    check_limits(job, cluster)?;
    let user = job.user.as_deref().unwrap_or_default();
    let kind = cluster.map(|c| c.kind);
    // A third-party scheduler maps users itself; ours run jobs as host accounts.
    if kind != Some(ClusterType::Plugin) {
        let (creds, home) = host_user(user, &job.cluster, cluster)?;
        if kind != Some(ClusterType::Slurm) {
            match job.working_directory.as_deref().filter(|w| !w.is_empty()) {
                Some(wd) => check_working_directory(wd, &creds)?,
                // Without one the job starts in its user's home.
                None => userfs::check_dir_enterable(&home, &creds).map_err(|e| {
                    NodeError::invalid(format!(
                        "the job has no workingDirectory and its user's home cannot be entered ({e}); \
                         set workingDirectory"
                    ))
                })?,
            }
        }
    }
    let groups = crate::filters::groups_of(user);
    if !admin {
        let mut allowed = filters.allowed_host_sources(job, &groups);
        if let Some(c) = cluster {
            allowed.extend(c.allowed_mount_sources.iter().map(|p| p.replace("{USER}", user)));
        }
        for (index, mount) in job.mounts.iter().enumerate() {
            check_user_mount(index, mount, &job.cluster, &allowed)?;
        }
    }
    // An admin's mounts are taken as given; the plugin still refuses what it cannot bind safely.
    Ok(groups)
}

/// The job user's credentials and home, refused when unknown or below the cluster's `min-uid`.
fn host_user(
    user: &str,
    cluster_name: &str,
    cluster: Option<&ClusterConfig>,
) -> NodeResult<(userfs::Creds, std::path::PathBuf)> {
    let entry = nix::unistd::User::from_name(user)
        .map_err(|e| NodeError::internal(format!("cannot read the user database: {e}")))?
        .ok_or_else(|| {
            NodeError::new(
                ErrorCode::UnknownUser,
                format!(
                    "user '{user}' does not exist on this host; jobs run as their user's account, \
                     so submit as (or on behalf of) an existing user"
                ),
            )
        })?;
    let min_uid = cluster.map_or(crate::config::DEFAULT_MIN_UID, |c| c.min_uid);
    if entry.uid.as_raw() < min_uid {
        return Err(NodeError::new(
            ErrorCode::Forbidden,
            format!(
                "jobs of cluster '{cluster_name}' may not run as '{user}' (uid {}): the cluster's \
                 min-uid is {min_uid}; an administrator can lower it in [cluster]",
                entry.uid
            ),
        ));
    }
    let creds = userfs::Creds::of_user(user)
        .map_err(|e| NodeError::internal(format!("cannot read the groups of '{user}': {e}")))?
        .ok_or_else(|| {
            NodeError::new(
                ErrorCode::UnknownUser,
                format!("user '{user}' does not exist on this host"),
            )
        })?;
    Ok((creds, entry.dir))
}

/// The working directory must be one the job's user may enter (checked as that user).
fn check_working_directory(wd: &str, creds: &userfs::Creds) -> NodeResult<()> {
    plain_absolute(wd).map_err(|why| NodeError::invalid(format!("workingDirectory {why}")))?;
    userfs::check_dir_enterable(Path::new(wd), creds).map_err(|e| {
        NodeError::invalid(format!(
            "workingDirectory cannot be entered by the job's user: {e}"
        ))
    })
}

/// Known limit types with sane values, under the cluster's maxima.
fn check_limits(job: &Job, cluster: Option<&ClusterConfig>) -> NodeResult<()> {
    let ours = cluster.is_none_or(|c| c.kind != ClusterType::Plugin);
    for limit in &job.resource_limits {
        let bad = |why: String| {
            NodeError::invalid(format!("resourceLimits {}={:?}: {why}", limit.kind, limit.value))
        };
        let value = match plain_decimal(&limit.value) {
            Some(v) => v,
            None => {
                return Err(bad(
                    "expected a plain decimal number of at least 0 (up to 12 digits, 6 after the point)"
                        .into(),
                ))
            }
        };
        let Some(&(_, ceiling, key)) = CEILINGS.iter().find(|(k, _, _)| *k == limit.kind) else {
            if ours {
                return Err(bad(
                    "unknown type (known: cpuCount, cpuTime, memory, memorySwap)".into()
                ));
            }
            continue;
        };
        let configured = cluster.and_then(|c| match key {
            "max-cpu-count" => c.max_cpu_count,
            "max-cpu-time-seconds" => c.max_cpu_time_seconds,
            "max-memory-mb" => c.max_memory_mb,
            _ => c.max_memory_swap_mb,
        });
        match configured {
            Some(max) if value > max => {
                return Err(bad(format!(
                    "above the cluster's maximum of {max} ({key} in [cluster] {})",
                    job.cluster
                )))
            }
            _ if value > ceiling => return Err(bad(format!("above the largest value accepted, {ceiling}"))),
            _ => {}
        }
    }
    Ok(())
}

/// `text` as a number when it is a plain decimal, `^[0-9]{1,12}(\.[0-9]{1,6})?$` (the pattern the
/// OpenAPI document gives): no sign, exponent, spaces, NaN or infinity.
fn plain_decimal(text: &str) -> Option<f64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole, 12) || fraction.is_some_and(|f| !digits(f, 6)) {
        return None;
    }
    text.parse().ok()
}

/// The mount policy for a user's own mount (see the module doc).
fn check_user_mount(index: usize, mount: &Mount, cluster: &str, allowed: &[String]) -> NodeResult<()> {
    let Some(source) = host_source(mount) else {
        return Err(refused(
            index,
            mount,
            format!(
                "users may submit only host mounts (this is {:?}); other mounts come from launcher-mounts",
                mount.mount_source.kind
            ),
        ));
    };
    plain_absolute(source).map_err(|why| refused(index, mount, why))?;
    plain_absolute(&mount.mount_path).map_err(|why| refused(index, mount, why))?;
    if is_system_target(Path::new(&mount.mount_path)) {
        return Err(refused(
            index,
            mount,
            format!(
                "{} covers a system directory ({}, /lib*); only admins may mount there",
                mount.mount_path,
                SYSTEM_TARGETS.join(", ")
            ),
        ));
    }
    if !allowed.iter().any(|a| Path::new(source).starts_with(a)) {
        let list = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        return Err(refused(
            index,
            mount,
            format!(
                "{source} is not under a mount source allowed for cluster '{cluster}' (allowed: {list}); \
                 an administrator allows sources with Host entries in launcher-mounts or \
                 allowed-mount-sources in [cluster]"
            ),
        ));
    }
    Ok(())
}

/// The `path` of a host mount; `None` for other types.
fn host_source(mount: &Mount) -> Option<&str> {
    if mount.mount_source.kind != "host" {
        return None;
    }
    Some(
        mount
            .mount_source
            .source
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or_default(),
    )
}

/// An absolute path without `.`, `..` or empty components, so that its text is where it leads
/// (symbolic links are refused when the plugin resolves it).
fn plain_absolute(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if p.contains('\0') || !path.is_absolute() || !plain || p.contains("/./") || p.ends_with("/.") {
        return Err(format!("{p:?} is not an absolute path without '.' or '..'"));
    }
    Ok(())
}

/// Whether `target` is `/`, a system directory, or inside one.
fn is_system_target(target: &Path) -> bool {
    let mut parts = target.components().skip(1);
    let Some(Component::Normal(first)) = parts.next() else {
        return true;
    };
    first.to_string_lossy().starts_with("lib") || SYSTEM_TARGETS.iter().any(|s| target.starts_with(s))
}

fn describe(mount: &Mount) -> String {
    match host_source(mount) {
        Some(source) => format!("{source} on {}", mount.mount_path),
        None => format!("{} mount on {}", mount.mount_source.kind, mount.mount_path),
    }
}

fn refused(index: usize, mount: &Mount, why: String) -> NodeError {
    NodeError::new(
        ErrorCode::MountNotAllowed,
        format!("mount #{index} ({}) is not allowed: {why}", describe(mount)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str, target: &str) -> Mount {
        serde_json::from_value(serde_json::json!({
            "mountPath": target,
            "mountSource": {"type": "host", "source": {"path": source}}
        }))
        .unwrap()
    }

    fn code(r: NodeResult<()>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(&nested(MAX_JSON_DEPTH)).is_ok());
        assert_eq!(
            code(check_depth(&nested(MAX_JSON_DEPTH + 1))),
            Some(ErrorCode::InvalidRequest)
        );
        assert!(check_depth(&format!("{{\"a\":\"{}\"}}", "[".repeat(1000))).is_ok());
        assert!(check_depth(&format!("{{\"a\":\"\\\"{}\"}}", "{".repeat(1000))).is_ok());
        assert!(check_depth(&format!("{{\"m\":{}}}", nested(200))).is_err());
    }

    #[test]
    fn user_mounts_need_an_allowed_source_and_a_non_system_target() {
        let allowed = vec!["/srv/data".to_string(), "/home/alice".to_string()];
        let check = |s: &str, t: &str| code(check_user_mount(0, &mount(s, t), "Local", &allowed));
        assert_eq!(check("/srv/data/x", "/data"), None);
        assert_eq!(check("/home/alice", "/opt/a/deep/dir"), None);
        assert_eq!(
            check("/home/alice/fakeetc", "/etc"),
            Some(ErrorCode::MountNotAllowed)
        );
        assert_eq!(
            check("/home/alice", "/etc/cron.d/x"),
            Some(ErrorCode::MountNotAllowed)
        );
        assert_eq!(check("/home/alice", "/lib64"), Some(ErrorCode::MountNotAllowed));
        assert_eq!(check("/home/alice", "/"), Some(ErrorCode::MountNotAllowed));
        assert_eq!(
            check("/home/alice", "/var/run/x"),
            Some(ErrorCode::MountNotAllowed)
        );
        assert_eq!(check("/home/alicebob", "/data"), Some(ErrorCode::MountNotAllowed));
        assert_eq!(
            check("/home/alice/../bob", "/data"),
            Some(ErrorCode::MountNotAllowed)
        );
        assert_eq!(
            check("/home/alice", "/data/../etc"),
            Some(ErrorCode::MountNotAllowed)
        );
        assert_eq!(check("/root", "/data"), Some(ErrorCode::MountNotAllowed));
        assert_eq!(check("home/alice", "/data"), Some(ErrorCode::MountNotAllowed));
        let nfs: Mount = serde_json::from_value(serde_json::json!({
            "mountPath": "/data",
            "mountSource": {"type": "nfs", "source": {"host": "h", "path": "/srv/data"}}
        }))
        .unwrap();
        let e = check_user_mount(3, &nfs, "Local", &allowed).unwrap_err();
        assert_eq!(e.code, ErrorCode::MountNotAllowed);
        assert!(
            e.message.starts_with("mount #3 (nfs mount on /data)"),
            "{}",
            e.message
        );
        let e = check_user_mount(1, &mount("/home/alice/fakeetc", "/etc"), "Local", &allowed).unwrap_err();
        assert!(
            e.message
                .starts_with("mount #1 (/home/alice/fakeetc on /etc) is not allowed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn limits_are_numbers_under_the_maxima() {
        let job = |kind: &str, value: &str| -> Job {
            serde_json::from_value(serde_json::json!({
                "name": "j", "cluster": "Local", "command": "true",
                "resourceLimits": [{"type": kind, "value": value}]
            }))
            .unwrap()
        };
        let mut local = ClusterConfig::new("Local", ClusterType::Local);
        local.max_memory_mb = Some(1024.0);
        let check = |j: &Job| code(check_limits(j, Some(&local)));
        assert_eq!(check(&job("memory", "512")), None);
        assert_eq!(check(&job("cpuCount", "4")), None);
        for bad in [
            "-1",
            "NaN",
            "abc",
            "inf",
            "",
            "1e308",
            " 1",
            "1e3",
            "+1",
            "1.",
            "1234567890123",
        ] {
            assert_eq!(
                check(&job("cpuTime", bad)),
                Some(ErrorCode::InvalidRequest),
                "{bad}"
            );
        }
        let e = check_limits(&job("memory", "2048"), Some(&local)).unwrap_err();
        assert!(e.message.contains("max-memory-mb"), "{}", e.message);
        assert_eq!(check(&job("gpus", "1")), Some(ErrorCode::InvalidRequest));
        let plugin = ClusterConfig::new("K8s", ClusterType::Plugin);
        assert_eq!(code(check_limits(&job("gpus", "1"), Some(&plugin))), None);
        assert_eq!(
            code(check_limits(&job("gpus", "-1"), Some(&plugin))),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn system_targets() {
        for t in [
            "/",
            "/etc",
            "/etc/x",
            "/usr/local",
            "/lib",
            "/lib64/x",
            "/proc/1",
            "/dev/shm",
            "/boot",
        ] {
            assert!(is_system_target(Path::new(t)), "{t}");
        }
        for t in ["/opt/x", "/data", "/home/a", "/tmp/x", "/var/tmp", "/etcetera"] {
            assert!(!is_system_target(Path::new(t)), "{t}");
        }
    }
}
