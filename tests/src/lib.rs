//! Test harnesses for the launcher cluster.
//!
//! * [`ProcessCluster`] runs real `launcher-node` processes and kills them with SIGKILL:
//!   everything about durability is tested with it (an in-process "kill" lets sled flush
//!   on drop and proves nothing about crashes).
//! * [`InProcCluster`] runs nodes inside the test's runtime for logic that needs direct
//!   access to a node (proposing raw commands).
//!
//! Every wait has a deadline; nothing sleeps blindly.

pub mod client;
pub mod inproc;
pub mod process;

pub use client::NodeClient;
pub use inproc::InProcCluster;
pub use process::{ClusterOpts, ProcessCluster};

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
