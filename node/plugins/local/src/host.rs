//! Facts about this machine and the plugin's own account: who the plugin runs as, whether jobs
//! can get a mount namespace, the host name and network addresses, and user database lookups.

use std::net::IpAddr;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// Who the plugin runs as and whether it can start jobs as other users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The plugin's own account name.
    pub user: String,
    pub uid: u32,
    /// Whether jobs switch to their own user: running as root and not `unprivileged=1`.
    pub switch_user: bool,
}

impl Identity {
    /// The identity of this process, given the `unprivileged` option.
    pub fn current(unprivileged: bool) -> Result<Identity, String> {
        let uid = Uid::current();
        let user = match User::from_uid(uid) {
            Ok(Some(u)) => u.name,
            Ok(None) => return Err(format!("the plugin's own uid {uid} is not in the user database")),
            Err(e) => return Err(format!("cannot look up the plugin's own uid {uid}: {e}")),
        };
        Ok(Identity {
            user,
            uid: uid.as_raw(),
            switch_user: Uid::effective().is_root() && !unprivileged,
        })
    }
}

/// Checks once whether a job could get a private mount namespace. `Err` says why not.
pub fn probe_mount_namespace() -> Result<(), String> {
    for unshare in ["/usr/bin/unshare", "/bin/unshare"] {
        if Path::new(unshare).exists() {
            // util-linux makes the new namespace's mounts private, as the supervisor must.
            let out = std::process::Command::new(unshare)
                .args(["--mount", "true"])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("{unshare} could not be run: {e}"))?;
            return if out.status.success() {
                Ok(())
            } else {
                let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                Err(format!("{unshare} --mount failed: {msg}"))
            };
        }
    }
    // No unshare(1): try in a short-lived thread of our own. Unsharing CLONE_NEWNS gives only the
    // calling thread a new namespace, which disappears with it.
    std::thread::spawn(|| -> Result<(), String> {
        use nix::mount::{mount, MsFlags};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))
    })
    .join()
    .map_err(|_| "the probe thread panicked".to_string())?
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The machine's addresses that other hosts could reach: IPv4 first, then IPv6, without
/// loopback and IPv6 link-local ones; `127.0.0.1` when there is nothing else.
pub fn ip_addresses() -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(s) = sa.as_sockaddr_in() {
                IpAddr::V4(s.ip())
            } else if let Some(s) = sa.as_sockaddr_in6() {
                IpAddr::V6(s.ip())
            } else {
                continue;
            };
            let local_v6 = matches!(ip, IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80);
            if ip.is_loopback() || ip.is_unspecified() || local_v6 {
                continue;
            }
            let s = ip.to_string();
            let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            if !list.contains(&s) {
                list.push(s);
            }
        }
    }
    v4.extend(v6);
    if v4.is_empty() {
        v4.push("127.0.0.1".into());
    }
    v4
}

/// A user from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

/// Looks up `name`. `Ok(None)` when there is no such user. May block (NSS).
pub fn lookup_user(name: &str) -> Result<Option<UserInfo>, String> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Some(UserInfo {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot look up user {name}: {e}")),
    }
}

/// Whether `user` may run with group `group` (its primary group or one it is a member of).
/// `Ok(None)` when there is no such group. May block (NSS).
pub fn user_in_group(user: &UserInfo, group: &str) -> Result<Option<bool>, String> {
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(
            g.gid == Gid::from_raw(user.gid) || g.mem.contains(&user.name),
        )),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot look up group {group}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_never_empty_and_never_loopback() {
        let a = ip_addresses();
        assert!(!a.is_empty());
        if a != ["127.0.0.1"] {
            assert!(a.iter().all(|s| s != "127.0.0.1" && s != "::1"));
        }
        // IPv4 before IPv6.
        let first_v6 = a.iter().position(|s| s.contains(':')).unwrap_or(a.len());
        assert!(a[first_v6..].iter().all(|s| s.contains(':')));
    }

    #[test]
    fn users_and_groups_are_looked_up() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("no-such-user-xyz-42").unwrap(), None);
        assert_eq!(user_in_group(&root, "root").unwrap(), Some(true));
        assert_eq!(user_in_group(&root, "no-such-group-xyz-42").unwrap(), None);
        assert!(!Identity::current(false).unwrap().user.is_empty());
        assert!(!Identity::current(true).unwrap().switch_user);
    }
}
