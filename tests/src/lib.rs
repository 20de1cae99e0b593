//! Test harnesses for the launcher cluster.
//!
//! * [`ProcessCluster`] runs real `launcher-node` processes and kills them with SIGKILL:
//!   everything about durability is tested with it (an in-process "kill" lets sled flush
//!   on drop and proves nothing about crashes).
//! * [`InProcCluster`] runs nodes inside the test's runtime for logic that needs direct
//!   access to a node (proposing raw commands).
//!
//! Every wait has a deadline; nothing sleeps blindly.

pub mod browser;
pub mod chaos;
pub mod checker;
pub mod client;
pub mod diskfault;
pub mod faults;
pub mod gateway;
pub mod history;
pub mod inproc;
pub mod netfault;
pub mod process;
pub mod slurm;

pub use client::NodeClient;
pub use gateway::{Http, TestGateway};
pub use inproc::InProcCluster;
pub use process::{ClusterOpts, ProcessCluster, TestPlugin};

use std::future::Future;
use std::time::{Duration, Instant};

/// Generous deadline for cluster-level conditions on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` until it yields `Some`, failing after `deadline` with `what` and the last error.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut cond: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let end = Instant::now() + deadline;
    let mut last_err = None;
    loop {
        match cond().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= end {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}; last error: {last_err:?}");
        }
        // Poll interval of a condition wait, not a sleep standing in for one.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback address of its own for one test node (127.a.b.c, never 127.0.0.1).
///
/// Nodes bind port 0 on it. A node restarted on its old port cannot then collide with the
/// ephemeral source port of some other test's outgoing connection, since those all leave from
/// 127.0.0.1; and parallel tests practically never pick the same address.
pub fn unique_loopback() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let r = h.finish();
    let byte = |shift: u32| ((r >> shift) % 254 + 1) as u8;
    let (a, b, c) = (byte(0), byte(8), byte(16));
    if (a, b, c) == (0, 0, 1) {
        return unique_loopback();
    }
    format!("127.{a}.{b}.{c}")
}

/// Writes a 48-byte secure-cookie-key with mode 0600.
pub fn write_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let key: Vec<u8> = (0..48u32).map(|i| b'a' + ((i * 7 + 3) % 26) as u8).collect();
    std::fs::write(path, &key)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(key)
}

/// Installs a test tracing subscriber once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A minimal valid job body.
pub fn job(name: &str, tags: &[&str]) -> serde_json::Value {
    serde_json::json!({"name": name, "cluster": "Local", "command": "echo hello", "tags": tags})
}

/// The user this test process runs as (the plugins' `server-user`).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// An unprivileged account jobs can run as: `launcher-it`, created (once) when the tests run
/// as root; otherwise the current user, since an unprivileged plugin runs every job as itself.
pub fn job_user() -> String {
    use std::sync::OnceLock;
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return current_user();
        }
        const NAME: &str = "launcher-it";
        ensure_account(NAME);
        NAME.to_string()
    })
    .clone()
}

/// The accounts the tests submit as (callers and job users): a node refuses a job whose user is
/// not in the user database (`UnknownUser`), as a production launcher must.
pub const TEST_USERS: [&str; 4] = ["alice", "bob", "carol", "admin"];

/// Creates [`TEST_USERS`] (once per process) when missing. Cluster tests run as root, as CI
/// does: without root the accounts cannot be made, and the test fails saying so.
pub fn ensure_test_users() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in TEST_USERS {
            ensure_account(name);
        }
    });
}

/// Creates the ordinary account `name` (uid from the normal range) if it does not exist.
fn ensure_account(name: &str) {
    if nix::unistd::User::from_name(name).ok().flatten().is_some() {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the test account {name} is missing and only root can create it: run the tests as root, as CI does"
    );
    let out = std::process::Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", name])
        .output()
        .expect("useradd runs");
    // Parallel test processes may race to create it; only its existence matters.
    assert!(
        out.status.success() || nix::unistd::User::from_name(name).ok().flatten().is_some(),
        "cannot create the test user {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job body that runs `command` as the test job user.
pub fn shell_job(name: &str, command: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "cluster": "Local", "command": command, "user": job_user()})
}

/// Lets other users pass through `dir` (mode 0711): jobs run as the test job user and must
/// reach their output and TMPDIR under the node's scratch path, as under /var/lib in production.
pub fn traversable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}
