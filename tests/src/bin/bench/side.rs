//! Writes side by side: our submits (gRPC straight to the leader, HTTP through the gateway) and
//! etcd puts of a value the size of one of our stored job records, at the same concurrencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{latency, Lat};

/// Concurrency levels of the side-by-side writes.
pub const LEVELS: [usize; 4] = [1, 16, 64, 256];
/// Bound of one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which system and path a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Our `SubmitJob` by gRPC to the leader.
    Grpc,
    /// Our `POST /jobs` through the gateway.
    Http,
    /// etcd `Put` by gRPC to its leader.
    Etcd,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Grpc => "launcher SubmitJob, gRPC → leader",
            Path::Http => "launcher POST /jobs, HTTP → gateway",
            Path::Etcd => "etcd Put, gRPC → leader",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Path::Grpc => "launcher_grpc",
            Path::Http => "launcher_http",
            Path::Etcd => "etcd",
        }
    }
}

/// One level of one path.
pub struct Row {
    pub path: Path,
    pub clients: usize,
    pub ops: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub window: Duration,
    pub lat: Lat,
    /// Raft log entries per second over warm-up and window (ours: submits plus the launch
    /// entries each job causes; etcd: puts plus its own internal entries).
    pub entries_per_s: f64,
}

impl Row {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.window.as_secs_f64()
    }
}

/// Runs `op(task)` from `clients` tasks for `warmup` + `window`; what completes inside the
/// window counts. Returns acknowledged operations, errors, the first error and latencies.
pub async fn run_level<F, Fut>(
    clients: usize,
    warmup: Duration,
    window: Duration,
    op: F,
) -> (usize, usize, Option<String>, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let handles: Vec<_> = (0..clients)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors, mut first) = (Vec::new(), 0usize, None);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = tokio::time::timeout(OP_TIMEOUT, op(task)).await;
                    let t1 = Instant::now();
                    if t1 < measure_from || t1 >= end {
                        continue;
                    }
                    match r {
                        Ok(Ok(())) => lat.push(t1 - t0),
                        Ok(Err(e)) => {
                            errors += 1;
                            first.get_or_insert_with(|| format!("{e:#}"));
                        }
                        Err(_) => {
                            errors += 1;
                            first.get_or_insert_with(|| format!("timed out after {OP_TIMEOUT:?}"));
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let (mut all, mut errors, mut first) = (Vec::new(), 0, None);
    for h in futures::future::join_all(handles).await {
        let (lat, e, f) = h.unwrap_or_default();
        all.extend(lat);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    (all.len(), errors, first, all)
}

/// Makes a [`Row`] from a level's outcome and the raft index before and after it.
pub fn row(
    path: Path,
    clients: usize,
    window: Duration,
    (ops, errors, first_error, mut lat): (usize, usize, Option<String>, Vec<Duration>),
    index_delta: u64,
    elapsed: Duration,
) -> Row {
    Row {
        path,
        clients,
        ops,
        errors,
        first_error,
        window,
        lat: latency(&mut lat),
        entries_per_s: index_delta as f64 / elapsed.as_secs_f64(),
    }
}

/// Unique etcd keys of the same length as our `/jobs/<uuid>` ids.
pub struct Keys {
    next: AtomicU64,
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Arc<Keys> {
        Arc::new(Keys {
            next: AtomicU64::new(0),
            prefix: prefix.to_string(),
        })
    }
    /// Keys handed out so far.
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
    /// The next key: prefix and a 36-character zero-padded counter (a UUID's length).
    pub fn next(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:036}", self.prefix).into_bytes()
    }
}
