//! The supervisor's privileged steps: the job's TMPDIR, its mount namespace, resource limits,
//! handing the job directory over and dropping root. All through nix's safe wrappers.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{chown, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid, Gid, Uid, User};
use tracing::info;

use launcher_plugin_api::userfs::Creds;

use super::SetupError;
use crate::spec::BindMount;

/// The job's `resource_limits`, checked.
#[derive(Debug, Default)]
pub(super) struct Limits {
    /// RLIMIT_CPU, seconds.
    cpu_seconds: Option<u64>,
    /// RLIMIT_AS, bytes.
    address_space: Option<u64>,
}

impl Limits {
    /// Parses `(kind, value)` pairs: `cpuTime` in seconds (fractions round up), `memory` in MB
    /// (MiB, 1 048 576 bytes), `cpuCount` and `memorySwap` checked but not enforced (rlimits
    /// cannot express them). A value of 0 means no limit: a job allowed nothing could not run.
    pub(super) fn parse(limits: &[(String, String)]) -> Result<Limits, SetupError> {
        let mut out = Limits::default();
        for (kind, value) in limits {
            let bad = || SetupError::BadLimit {
                kind: kind.clone(),
                value: value.clone(),
            };
            let number: f64 = value.trim().parse().map_err(|_| bad())?;
            if !number.is_finite() || number < 0.0 {
                return Err(bad());
            }
            let set = |n: u64| (n > 0).then_some(n);
            match kind.as_str() {
                "cpuTime" => out.cpu_seconds = set(number.ceil() as u64),
                "memory" => out.address_space = set((number * 1024.0 * 1024.0) as u64),
                "cpuCount" | "memorySwap" => {
                    info!("resource limit {kind}={value} is recorded but not enforced (no rlimit for it)")
                }
                _ => return Err(SetupError::UnknownLimit(kind.clone())),
            }
        }
        Ok(out)
    }

    /// Sets the limits, soft and hard alike, on this process; the job inherits them. They bind
    /// the supervisor too, which needs only a few MB of address space from here on.
    pub(super) fn apply(&self) -> Result<(), SetupError> {
        if let Some(seconds) = self.cpu_seconds {
            setrlimit(Resource::RLIMIT_CPU, seconds, seconds).map_err(|e| SetupError::SetLimit {
                kind: "cpuTime",
                source: e.into(),
            })?;
            info!("RLIMIT_CPU set to {seconds} s");
        }
        if let Some(bytes) = self.address_space {
            setrlimit(Resource::RLIMIT_AS, bytes, bytes).map_err(|e| SetupError::SetLimit {
                kind: "memory",
                source: e.into(),
            })?;
            info!("RLIMIT_AS set to {bytes} bytes");
        }
        Ok(())
    }
}

/// Creates the job's TMPDIR with mode 0700 (its parents as needed, left as they are), owned by
/// `owner` when given. An existing directory is reused; anything else in the way is an error.
pub(super) fn create_tmpdir(path: &Path, owner: Option<(Uid, Gid)>) -> Result<(), SetupError> {
    let err = |source| SetupError::TmpDir {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Not a symlink: chown and chmod below must act on the directory itself.
            if !std::fs::symlink_metadata(path).map_err(err)?.is_dir() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a directory",
                )));
            }
        }
        Err(e) => return Err(err(e)),
    }
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid)).map_err(|e| err(e.into()))?;
    }
    // The umask may have taken bits off the mode given at creation.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Gives the job directory `dir` to the job's user, mode 0700, so the supervisor can still write
/// its state files there once it runs as that user (see the module doc of `supervisor`).
pub(super) fn hand_over_job_dir(dir: &Path, uid: Uid, gid: Gid) -> Result<(), SetupError> {
    let err = SetupError::JobDir;
    chown(dir, Some(uid), Some(gid)).map_err(|e| err(e.into()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Moves this process into a new mount namespace (which the job inherits), hides each existing
/// `masked` path under an empty directory (or empty file) of its own kept in `<dir>/masked/`
/// (`dir` is the job directory, best given relative to the current directory so that masking
/// one of its parents cannot hide it), then binds each of `mounts` as a job run with `creds`
/// may have it (see `mounts`).
pub(super) fn enter_mount_namespace(
    dir: &Path,
    masked: &[std::path::PathBuf],
    mounts: &[BindMount],
    creds: &Creds,
) -> Result<(), SetupError> {
    let ns = |what: String| {
        move |e: nix::errno::Errno| SetupError::Namespace {
            what,
            source: e.into(),
        }
    };
    let io_ns = |what: String| move |source: io::Error| SetupError::Namespace { what, source };

    unshare(CloneFlags::CLONE_NEWNS).map_err(ns("cannot create a mount namespace (unshare)".into()))?;
    // Nothing we mount may propagate back to the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(ns("cannot make / private in the new mount namespace".into()))?;
    info!("entered a new mount namespace");

    let empties = dir.join("masked");
    if !masked.is_empty() {
        match DirBuilder::new().mode(0o755).create(&empties) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_ns(format!("cannot create {}", empties.display()))(e));
            }
            _ => {}
        }
    }
    for (index, path) in masked.iter().enumerate() {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                info!(path = %path.display(), "masked path does not exist on this host; nothing to hide");
                continue;
            }
            Err(e) => return Err(io_ns(format!("cannot inspect masked path {}", path.display()))(e)),
        };
        // One empty stand-in per path, so a mount target created under one masked path does
        // not show up under the others. Owned by root and read-only: the job cannot fill it.
        let empty = empties.join(index.to_string());
        let made = if meta.is_dir() {
            DirBuilder::new().mode(0o555).create(&empty)
        } else {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&empty)
                .map(drop)
        };
        match made {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_ns(format!("cannot create {}", empty.display()))(e));
            }
            _ => {}
        }
        mount(Some(&empty), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(ns(format!("cannot mask {}", path.display())))?;
        info!(path = %path.display(), "masked");
    }

    for m in mounts {
        super::mounts::bind(dir, m, creds)?;
    }
    Ok(())
}

/// Becomes `user` for good: the supplementary groups of `creds`, then gid, then uid; then checks
/// that real and effective ids are the user's and that root cannot be regained.
///
/// The groups were read from the group database before the mount namespace was set up: read now
/// (`initgroups`), they would come from whatever a mount put over `/etc`.
pub(super) fn drop_privileges(user: &User, creds: &Creds) -> Result<(), SetupError> {
    let err = |what: String| SetupError::DropPrivileges {
        user: user.name.clone(),
        what,
    };
    if !geteuid().is_root() && geteuid() == user.uid && getuid() == user.uid {
        // Already the user (a plugin running as them with switch_user set): nothing to drop.
        return Ok(());
    }
    let groups: Vec<Gid> = creds.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|e| err(format!("setgroups: {e}")))?;
    setgid(user.gid).map_err(|e| err(format!("setgid({}): {e}", user.gid)))?;
    setuid(user.uid).map_err(|e| err(format!("setuid({}): {e}", user.uid)))?;
    if getuid() != user.uid || geteuid() != user.uid || getgid() != user.gid || getegid() != user.gid {
        return Err(err(format!(
            "ids are uid {}/{} gid {}/{} after the switch",
            getuid(),
            geteuid(),
            getgid(),
            getegid()
        )));
    }
    if !user.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(err("root privileges could be regained after setuid".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, &str)]) -> Result<Limits, SetupError> {
        Limits::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn limits_parse_units_and_refuse_garbage() {
        let l = limits(&[
            ("cpuTime", "1.5"),
            ("memory", "512"),
            ("cpuCount", "2"),
            ("memorySwap", "0"),
        ])
        .unwrap();
        assert_eq!(l.cpu_seconds, Some(2));
        assert_eq!(l.address_space, Some(512 * 1024 * 1024));
        assert_eq!(
            limits(&[("memory", "0")]).unwrap().address_space,
            None,
            "0 is no limit"
        );
        for bad in ["lots", "-1", "NaN", "inf", ""] {
            let e = limits(&[("memory", bad)]).unwrap_err();
            assert!(e.to_string().contains("memory"), "{e}");
        }
        assert!(matches!(
            limits(&[("gpus", "1")]),
            Err(SetupError::UnknownLimit(_))
        ));
    }
}
