//! Privilege separation of the `launcher-node` binary (a module of the binary only: dropping
//! privileges in a library would drop a whole test process's).
//!
//! Started as root with a `server-user` other than root, the node keeps root only for what needs
//! it, then gives it up for good: [`prepare`] (before the async runtime exists) starts the
//! privileged [`spawner`](launcher_node::plugins::spawner) and hands it the fixed plugin list;
//! [`Privsep::finish`], the hook `server::start_with` calls once the key is read and the gRPC
//! port bound, makes the data dir `server-user`'s, drops root, and returns the launcher that
//! starts plugins through the spawner. Storage and Raft only ever run as `server-user`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use launcher_node::config::Config;
use launcher_node::plugins::launcher::SpawnerClient;
use launcher_node::plugins::spawner::{Init, SpawnSpec};
use launcher_node::plugins::ProcessLauncher;
use nix::unistd::{self, Gid, Uid, User};

/// Directory of the data dir where the node accepts its plugins' connections (mode 0700).
const SOCKET_DIR: &str = "spawner";
const SOCKET_NAME: &str = "plugins.sock";
/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// A node that gives root up: its spawner, started, and what is left to do.
pub struct Privsep {
    user: User,
    socket: PathBuf,
    spawner: UnixStream,
    plugins: Vec<SpawnSpec>,
}

/// The account to run as: Some when running as root with a `server-user` other than root.
fn server_user(config: &Config) -> anyhow::Result<Option<User>> {
    if !unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = config.server.server_user.trim();
    let user = User::from_name(name)
        .with_context(|| format!("[server] server-user {name}: cannot look the user up"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "[server] server-user {name}: no such user; create it (e.g. useradd --system \
                 --no-create-home --shell /usr/sbin/nologin {name}), or set server-user=root to keep root"
            )
        })?;
    if user.uid.is_root() {
        tracing::warn!("server-user is root: the node keeps root privileges");
        return Ok(None);
    }
    Ok(Some(user))
}

/// Starts the spawner when the node is to give root up. Call before the async runtime starts,
/// from the main thread: the spawner's parent-death signal follows the thread that forked it.
pub fn prepare(config: &Config) -> anyhow::Result<Option<Privsep>> {
    let Some(user) = server_user(config)? else {
        return Ok(None);
    };
    let socket = config.node.data_dir.join(SOCKET_DIR).join(SOCKET_NAME);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        anyhow::bail!(
            "the plugins' socket {} is longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes): \
             use a shorter [node] data-dir",
            socket.display()
        );
    }
    let plugins = launcher_node::plugins::spawn_specs(config);
    let (mut node_end, spawner_end) = UnixStream::pair().context("cannot create the spawner's socket")?;
    let exe = std::env::current_exe().context("cannot find this binary to start the spawner")?;
    let child = Command::new(&exe)
        .arg("spawner")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .stdin(Stdio::from(OwnedFd::from(spawner_end)))
        .stdout(Stdio::null())
        // Out of the node's process group: a terminal's Ctrl-C is the node's to handle (a
        // graceful stop that stops the plugins through the spawner), not a kill of the spawner.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the plugin spawner ({} spawner)", exe.display()))?;
    // Written while still root: whatever this process becomes later, the list stays this one.
    let init = Init {
        socket: socket.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        plugins: plugins.clone(),
    };
    let mut line = serde_json::to_vec(&init)?;
    line.push(b'\n');
    node_end
        .write_all(&line)
        .context("cannot hand the plugin list to the spawner")?;
    tracing::info!(spawner_pid = child.id(), user = %user.name, "started the privileged plugin spawner");
    Ok(Some(Privsep {
        user,
        socket,
        spawner: node_end,
        plugins,
    }))
}

impl Privsep {
    /// The last steps as root, the drop, and the launcher that starts plugins through the
    /// spawner (the hook of `server::start_with`).
    pub fn finish(self, config: &Config) -> anyhow::Result<(ProcessLauncher, std::sync::Arc<SpawnerClient>)> {
        let (uid, gid) = (self.user.uid, self.user.gid);
        let data = &config.node.data_dir;
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the data dir {}", data.display()))?;
        let changed = own_tree(data, uid, gid).with_context(|| {
            format!(
                "cannot hand the data dir {} to {}",
                data.display(),
                self.user.name
            )
        })?;
        if changed > 0 {
            tracing::info!(data_dir = %data.display(), files = changed, user = %self.user.name, "handed the data dir to server-user");
        }
        let dir = self.socket.parent().expect("the socket lies in a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(dir, Some(uid.as_raw()), Some(gid.as_raw()))?;
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove the old {}", self.socket.display()))
            }
        }

        drop_privileges(&self.user)?;

        // Parents of the data dir are not ours to change: say so now rather than as a storage error.
        if let Err(e) = std::fs::read_dir(data) {
            anyhow::bail!(
                "server-user {} cannot open the data dir {} ({e}): every directory above it must let it pass (mode o+x)",
                self.user.name,
                data.display()
            );
        }
        let listener = UnixListener::bind(&self.socket)
            .with_context(|| format!("cannot listen on {}", self.socket.display()))?;
        let client = SpawnerClient::start(self.spawner, listener, self.plugins)
            .context("cannot talk to the plugin spawner")?;
        Ok((ProcessLauncher::Spawner(client.clone()), client))
    }
}

/// Makes `root` and everything under it owned by `uid` (group `gid`) where another user owns
/// it; never follows a link. Returns how many entries changed.
fn own_tree(root: &Path, uid: Uid, gid: Gid) -> std::io::Result<u64> {
    let mut changed = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        // The root itself may be a link to the real data dir; below it, links are left alone.
        let meta = if path == root {
            std::fs::metadata(&path)?
        } else {
            std::fs::symlink_metadata(&path)?
        };
        if meta.uid() != uid.as_raw() {
            std::os::unix::fs::lchown(&path, Some(uid.as_raw()), Some(gid.as_raw()))?;
            changed += 1;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                todo.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Gives root up for `user`, for good: supplementary groups, group, then user (after which
/// none of them can change), and checks that root cannot be taken back.
fn drop_privileges(user: &User) -> anyhow::Result<()> {
    let name = &user.name;
    let cname = std::ffi::CString::new(name.as_str()).context("[server] server-user: contains a NUL byte")?;
    unistd::initgroups(&cname, user.gid)
        .with_context(|| format!("[server] server-user {name}: cannot set its groups"))?;
    unistd::setgid(user.gid)
        .with_context(|| format!("[server] server-user {name}: cannot switch to group {}", user.gid))?;
    unistd::setuid(user.uid)
        .with_context(|| format!("[server] server-user {name}: cannot switch to uid {}", user.uid))?;
    let ids = unistd::getresuid()?;
    let gids = unistd::getresgid()?;
    let all_user = [ids.real, ids.effective, ids.saved]
        .iter()
        .all(|u| *u == user.uid);
    let all_group = [gids.real, gids.effective, gids.saved]
        .iter()
        .all(|g| *g == user.gid);
    if !all_user
        || !all_group
        || unistd::setuid(Uid::from_raw(0)).is_ok()
        || unistd::seteuid(Uid::from_raw(0)).is_ok()
    {
        anyhow::bail!("[server] server-user {name}: root privileges could be regained after setuid");
    }
    tracing::info!(user = %name, uid = %user.uid, gid = %user.gid, "dropped root privileges");
    Ok(())
}
