//! `launcher-bench`: our cluster measured side by side with etcd 3.4 on the same machine.
//!
//! Starts three `launcher-node` processes on loopback (fsync on, the same profile as this
//! binary) and an in-process `launcher-gateway`, then
//!
//! 1. submits from 1, 16, 64 and 256 concurrent tasks, by gRPC straight to the leader and by
//!    HTTP through the gateway: acknowledgements per second, p50/p99/p999 latency, and the Raft
//!    entries per second the cluster committed meanwhile;
//! 2. launches `true` jobs through the Local plugin (submit → Running latency, burst jobs/s);
//! 3. loads 10^3, 10^4, 10^5 jobs (10^6 with `--max-jobs 1000000`) from 64 clients and, at
//!    each size, times `GET /jobs` returning exactly those jobs (gRPC to the leader and HTTP
//!    through the gateway, linearizable and stale) and reads the leader's resident memory;
//! 4. at the largest size, times a snapshot export on the leader and a follower that must
//!    install a snapshot after a restart;
//! 5. SIGKILLs the leader N times (default 20): kill → first acknowledged submit on a survivor;
//! 6. stops our cluster, starts three etcd members on 127.0.0.1 (Debian's `etcd-server`,
//!    installed by `tests/bench-etcd-setup.sh` when missing) and runs the same shapes: puts of
//!    a value the size of one of our stored job records at the same concurrencies, the same
//!    loads, range reads of the same sizes (linearizable and serializable), leader kills.
//!
//! Prints a Markdown report on stdout with every figure of ours next to etcd's as a ratio, a
//! progress bar on stderr, and optionally writes JSON. `--follower-levels` and `--http-seconds`
//! add the older commit-throughput and gateway-vs-direct tables.
//!
//! ```text
//! cargo build --release -p launcher-tests --bin launcher-bench
//! target/release/launcher-bench [--seconds N] [--failovers N] [--max-jobs N] [--json FILE] ...
//! ```
//!
//! The node binary is `LAUNCHER_NODE_BIN` if set, else `launcher-node` next to this binary,
//! (re)built first with cargo in this binary's profile.

// The modules live in `bench/` beside this file (a crate root looks for them next to itself).
#[path = "bench/etcd.rs"]
mod etcd;
#[path = "bench/progress.rs"]
mod progress;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/side.rs"]
mod side;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use launcher_tests::{job, wait_until, ClusterOpts, NodeClient, ProcessCluster, DEADLINE};
use serde_json::Value;

/// Concurrency levels of the throughput part, with one shared client.
const SHARED_LEVELS: [usize; 3] = [1, 16, 64];
/// Concurrency levels run again with one client (one connection) per task.
const PER_TASK_LEVELS: [usize; 1] = [64];
/// Bound of one submit during the throughput part (the node's own write deadline is 10 s).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of one submit attempt during failover.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// An attempt that fails faster than this is followed by a pause up to it, so a node that
/// answers "unavailable" at once is not hammered while the survivors elect on 2 cores.
const MIN_ATTEMPT: Duration = Duration::from_millis(10);
/// Longest wait for the owners to work off the launches queued by the earlier parts.
const PENDING_DRAINED: Duration = Duration::from_secs(600);
/// Give up on a failover after this long.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: launcher-bench [options]

  --seconds N       measuring window of each write level, seconds (default 5)
  --warmup N        warm-up before each window, seconds (default 1)
  --failovers N     leader-kill repetitions (default 20; 0 skips them)
  --etcd-failovers N  etcd leader-kill repetitions (default: as --failovers)
  --launches N      jobs of the launch part, one at a time and again as a burst (default 200; 0 skips)
  --max-jobs N      largest scale load: listings and memory at 1000, 10000, 100000 up to N
                    (default 100000; 1000000 adds the 10^6 step; 0 skips the scale part)
  --no-etcd         skip etcd (no side-by-side ratios)
  --follower-levels also run the older commit-throughput table (follower and leader, 1/16/64
                    clients, shared and per-task connections)
  --http-seconds N  window of the older gateway-vs-direct part at 16 tasks (default 0: skipped;
                    the side-by-side table covers the gateway)
  --e2e-seconds N   end-to-end part: `true` jobs submitted from 16 tasks for N seconds, counted
                    when Finished within the window (default 0: skipped)
  --quick           a run of about 3 minutes: --seconds 15, 1 and 64 clients, no failovers, no
                    launch or scale part, --e2e-seconds 30; its last lines are machine-readable
                    (ratio_grpc_64=, ratio_http_64=, jobs_per_s=, jobs_lost=)
  --json FILE       also write the results as JSON to FILE
  --keep-logs D     copy the nodes' logs into directory D at the end (also on failure)";

struct Args {
    seconds: f64,
    warmup: f64,
    failovers: usize,
    etcd_failovers: Option<usize>,
    launches: usize,
    max_jobs: usize,
    etcd: bool,
    follower_levels: bool,
    http_seconds: f64,
    json: Option<PathBuf>,
    keep_logs: Option<PathBuf>,
    /// Concurrency levels of the side-by-side writes.
    levels: Vec<usize>,
    /// Window of the end-to-end part (0: skipped).
    e2e_seconds: f64,
    /// `--quick`: print the machine-readable summary lines last.
    quick: bool,
}

fn count(name: &str, v: &str) -> anyhow::Result<usize> {
    v.parse().with_context(|| format!("{name}: '{v}' is not a count"))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 5.0,
        warmup: 1.0,
        failovers: 20,
        etcd_failovers: None,
        launches: 200,
        max_jobs: 100_000,
        etcd: true,
        follower_levels: false,
        http_seconds: 0.0,
        json: None,
        keep_logs: None,
        levels: side::LEVELS.to_vec(),
        e2e_seconds: 0.0,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        match flag.as_str() {
            "--no-etcd" => {
                args.etcd = false;
                continue;
            }
            "--follower-levels" => {
                args.follower_levels = true;
                continue;
            }
            "--quick" => {
                // About three minutes: 1 and 64 clients, gRPC and HTTP, a sustained window
                // each (the jobs launch meanwhile), a 30 s end-to-end run, etcd side by side.
                args.quick = true;
                args.seconds = 15.0;
                args.warmup = 1.0;
                args.failovers = 0;
                args.etcd_failovers = Some(0);
                args.launches = 0;
                args.max_jobs = 0;
                args.levels = vec![1, 64];
                args.e2e_seconds = 30.0;
                continue;
            }
            _ => {}
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => bail!("{name} needs a value\n{USAGE}"),
            }
        };
        match name.as_str() {
            "--seconds" => args.seconds = positive(&name, &value()?)?,
            "--warmup" => {
                let v = value()?;
                args.warmup = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .with_context(|| format!("--warmup: '{v}' is not a number of seconds >= 0"))?;
            }
            "--failovers" => args.failovers = count(&name, &value()?)?,
            "--etcd-failovers" => args.etcd_failovers = Some(count(&name, &value()?)?),
            "--launches" => args.launches = count(&name, &value()?)?,
            "--e2e-seconds" => {
                let v = value()?;
                args.e2e_seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .with_context(|| format!("--e2e-seconds: '{v}' is not a number of seconds >= 0"))?;
            }
            "--max-jobs" => args.max_jobs = count(&name, &value()?)?,
            "--http-seconds" => {
                let v = value()?;
                args.http_seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| *x >= 0.0)
                    .with_context(|| format!("--http-seconds: '{v}' is not a number of seconds >= 0"))?;
            }
            "--json" => args.json = Some(PathBuf::from(value()?)),
            "--keep-logs" => args.keep_logs = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument '{flag}'\n{USAGE}"),
        }
    }
    Ok(args)
}

fn positive(name: &str, v: &str) -> anyhow::Result<f64> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .with_context(|| format!("{name}: '{v}' is not a positive number of seconds"))
}

/// A fresh `launcher-node` of this binary's profile, built before the runtime starts.
fn prepare_node_binary() -> anyhow::Result<PathBuf> {
    Ok(launcher_tests::process::node_binary())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    let result = prepare_node_binary().and_then(|bin| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        rt.block_on(run(&args, &bin))
    });
    if let Err(e) = result {
        eprintln!("launcher-bench failed: {e:#}");
        std::process::exit(1);
    }
}

/// Latency figures of one set of samples, in milliseconds.
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn latency(samples: &mut [Duration]) -> Lat {
    samples.sort_unstable();
    Lat {
        p50: ms(percentile(samples, 50.0)),
        p99: ms(percentile(samples, 99.0)),
        p999: ms(percentile(samples, 99.9)),
        max: ms(samples.last().copied().unwrap_or_default()),
    }
}

struct Level {
    target: &'static str,
    node: usize,
    clients: usize,
    per_task: bool,
    window: Duration,
    commits: usize,
    errors: usize,
    first_error: Option<String>,
    lat: Lat,
    leader_before: u64,
    leader_after: u64,
}

impl Level {
    fn rate(&self) -> f64 {
        self.commits as f64 / self.window.as_secs_f64()
    }
}

/// Runs one throughput level against node `node`: commits, errors, first error, latencies.
async fn throughput(
    cluster: &ProcessCluster,
    node: usize,
    clients: usize,
    per_task: bool,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<(usize, usize, Option<String>, Vec<Duration>)> {
    let shared = cluster.client(node);
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        handles.push(if per_task {
            cluster.client(node)
        } else {
            shared.clone()
        });
    }
    // Connect before the clock starts (one status per connection).
    shared.status().await.context("status before the level")?;
    if per_task {
        for c in &handles {
            c.status().await.context("status of a per-task client")?;
        }
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let body = job("bench", &["bench"]);
    let mut tasks = Vec::with_capacity(clients);
    for client in handles {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = tokio::time::timeout(SUBMIT_TIMEOUT, client.submit(&body)).await;
                let t1 = Instant::now();
                // Count what completes inside the window; in-flight work at the end is dropped.
                if t1 < measure_from || t1 >= end {
                    continue;
                }
                match r {
                    Ok(Ok(_)) => lat.push(t1 - t0),
                    Ok(Err(status)) => {
                        errors += 1;
                        first_error
                            .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("timed out after {SUBMIT_TIMEOUT:?}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in futures::future::join_all(tasks).await {
        let (lat, e, fe) = t.context("a client task panicked")?;
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    Ok((all.len(), errors, first_error, all))
}

/// The node id of the leader as node `via` sees it, and the harness index holding it.
async fn leader_of(cluster: &ProcessCluster, via: &[usize]) -> anyhow::Result<(u64, usize)> {
    let mut last = None;
    for &i in via {
        match cluster.client(i).status().await {
            Ok(st) if st.leader != 0 => {
                let addr = st
                    .nodes
                    .iter()
                    .find(|n| n.id == st.leader)
                    .map(|n| n.address.clone())
                    .with_context(|| format!("leader {} is not among the members", st.leader))?;
                let index = cluster
                    .nodes
                    .iter()
                    .find(|n| n.addr() == addr)
                    .map(|n| n.index)
                    .with_context(|| format!("no harness node listens on {addr}"))?;
                return Ok((st.leader, index));
            }
            Ok(_) => last = Some(format!("node {i} knows no leader")),
            Err(e) => last = Some(format!("node {i}: {e}")),
        }
    }
    bail!("no leader found: {}", last.unwrap_or_default())
}

struct Failover {
    killed_node: usize,
    killed_id: u64,
    via: usize,
    elapsed: Duration,
    /// When a survivor first named the new leader.
    elected: Option<Duration>,
    attempts: usize,
    new_leader: u64,
    recover: Duration,
    errors_seen: Vec<String>,
}

async fn failover(cluster: &mut ProcessCluster, rep: usize) -> anyhow::Result<Failover> {
    let all: Vec<usize> = cluster.running();
    // Start from a steady state: every node follows the same leader (a node just restarted
    // has heard from it), so each repetition sees the same timers.
    cluster.wait_one_leader().await?;
    let clients: Vec<NodeClient> = all.iter().map(|&i| cluster.client(i)).collect();
    // ...and an idle one: right after the write levels the owners are still launching (and
    // failing) thousands of queued jobs, each a write through the leader, and a submit made
    // just after the kill would queue behind that backlog on the new leader.
    wait_until("every submitted job to leave Pending", PENDING_DRAINED, || {
        let c = clients[0].clone();
        async move {
            let pending = launcher_proto::launcher::ListJobsRequest {
                statuses: vec!["Pending".into()],
                fields: vec!["id".into()],
                limit: 1,
                ..Default::default()
            };
            Ok(c.list(pending).await?.1.is_empty().then_some(()))
        }
    })
    .await?;
    let (killed_id, killed) = leader_of(cluster, &all).await?;
    let via = *all.iter().find(|&&i| i != killed).context("no surviving node")?;
    let client: NodeClient = cluster.client(via);
    // Connect before the clock starts.
    client.status().await.context("status of the surviving node")?;
    let body = job("bench-failover", &["bench"]);
    let key = format!("bench-failover-{}-{rep}", std::process::id());

    // Watches the survivors for the first one to name a new leader.
    let watchers: Vec<NodeClient> = all
        .iter()
        .filter(|&&i| i != killed)
        .map(|&i| cluster.client(i))
        .collect();
    let t0 = Instant::now();
    let mut watch = tokio::spawn(async move {
        loop {
            for w in &watchers {
                if let Ok(st) = w.status().await {
                    if st.leader != 0 && st.leader != killed_id {
                        return (t0.elapsed(), st.leader);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    cluster.kill(killed);
    let mut attempts = 0;
    let mut errors_seen: Vec<String> = Vec::new();
    let elapsed = loop {
        let a0 = Instant::now();
        attempts += 1;
        let r = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            client.submit_as(launcher_tests::client::user("alice"), &body, Some(&key)),
        )
        .await;
        let err = match r {
            Ok(Ok(_)) => break t0.elapsed(),
            Ok(Err(status)) => format!("{:?}", status.code()),
            Err(_) => "attempt timeout".to_string(),
        };
        if !errors_seen.contains(&err) {
            errors_seen.push(err);
        }
        if t0.elapsed() > FAILOVER_DEADLINE {
            watch.abort();
            bail!(
                "no submit acknowledged by node {via} within {FAILOVER_DEADLINE:?} of killing node {killed} \
                 (errors: {errors_seen:?})\n{}",
                cluster.logs()
            );
        }
        let spent = a0.elapsed();
        if spent < MIN_ATTEMPT {
            tokio::time::sleep(MIN_ATTEMPT - spent).await;
        }
    };
    let seen = tokio::time::timeout(Duration::from_secs(5), &mut watch).await;
    watch.abort();
    let (elected, new_leader) = match seen {
        Ok(Ok((t, l))) => (Some(t), l),
        _ => (None, client.status().await.map(|s| s.leader).unwrap_or(0)),
    };

    let r0 = Instant::now();
    cluster.restart(killed).await?;
    cluster.wait_green(3).await?;
    Ok(Failover {
        killed_node: killed,
        killed_id,
        via,
        elapsed,
        elected,
        attempts,
        new_leader,
        recover: r0.elapsed(),
        errors_seen,
    })
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

async fn run(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let command = std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");

    eprintln!("starting a 3-node cluster ({})", bin.display());
    let started = Instant::now();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    eprintln!(
        "cluster Green in {:.1} s, data under {}",
        started.elapsed().as_secs_f64(),
        cluster.root.path().display()
    );
    let result = measure(args, bin, &mut cluster, &command, started).await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for n in &cluster.nodes {
            let to = dir.join(format!("node{}.log", n.index));
            std::fs::copy(n.log_path(), &to).with_context(|| format!("copying to {}", to.display()))?;
        }
        eprintln!("node logs copied to {}", dir.display());
    }
    result
}

/// Everything measured, for the report.
struct Results {
    facts: Vec<(String, String)>,
    record_bytes: usize,
    levels: Vec<Level>,
    side: Vec<side::Row>,
    gateway_node: Option<(usize, bool)>,
    launched: Option<Launches>,
    http: Vec<HttpLevel>,
    loads: Vec<scale::LoadRow>,
    lists: Vec<scale::ListRow>,
    mem: Vec<scale::MemRow>,
    snapshot: Option<scale::SnapshotFig>,
    failovers: Vec<Failover>,
    etcd_failovers: Vec<Duration>,
    etcd_version: Option<String>,
    /// Concurrency levels of the side-by-side writes.
    side_levels: Vec<usize>,
    e2e: Option<EndToEnd>,
}

/// The scale sizes up to `max` (10^3, 10^4, 10^5, then `max` itself if larger).
fn scale_sizes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [1_000, 10_000, 100_000]
        .into_iter()
        .filter(|&s| s <= max)
        .collect();
    if max > 100_000 || (max > 0 && sizes.is_empty()) {
        sizes.push(max);
    }
    sizes
}

/// Everything after the cluster is up.
async fn measure(
    args: &Args,
    bin: &Path,
    cluster: &mut ProcessCluster,
    command: &str,
    started: Instant,
) -> anyhow::Result<()> {
    let nproc = sh("nproc", &[]);
    let kernel = sh("uname", &["-r"]);
    let cpu = cpu_model();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.to_string_lossy();
    let commit = sh("git", &["-C", &repo, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh("git", &["-C", &repo, "status", "--porcelain"]).is_empty();
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.seconds);
    let fs_type = sh(
        "stat",
        &["-f", "-c", "%T", &cluster.root.path().to_string_lossy()],
    );
    let version = cluster
        .client(1)
        .status()
        .await
        .map(|s| s.version)
        .unwrap_or_default();
    let sizes = scale_sizes(args.max_jobs);
    let etcd_failovers = args.etcd_failovers.unwrap_or(args.failovers);

    // Steps of the progress bar.
    let old_levels = if args.follower_levels {
        2 * SHARED_LEVELS.len() + 2 * PER_TASK_LEVELS.len()
    } else {
        0
    };
    let mut steps = old_levels + 2 * args.levels.len() + args.failovers;
    steps += usize::from(args.launches > 0) + usize::from(args.http_seconds > 0.0);
    steps += usize::from(args.e2e_seconds > 0.0);
    if !sizes.is_empty() {
        steps += 2 * sizes.len() + 1;
    }
    if args.etcd {
        steps += 1 + args.levels.len() + etcd_failovers + 2 * sizes.len();
    }
    progress::set_steps(steps as u64);

    let mut levels = Vec::new();
    let all = cluster.running();
    if args.follower_levels {
        let mut plan: Vec<(&'static str, usize, bool)> = Vec::new();
        for target in ["follower", "leader"] {
            for c in SHARED_LEVELS {
                plan.push((target, c, false));
            }
        }
        for target in ["follower", "leader"] {
            for c in PER_TASK_LEVELS {
                plan.push((target, c, true));
            }
        }
        for &(target, clients, per_task) in &plan {
            let (leader_before, leader_node) = leader_of(cluster, &all).await?;
            let node = if target == "leader" {
                leader_node
            } else {
                *all.iter().find(|&&i| i != leader_node).context("no follower")?
            };
            progress::step(format!(
                "commit throughput: {clients} client{} to {target} (node {node}{})",
                if clients == 1 { "" } else { "s" },
                if per_task { ", one connection per task" } else { "" },
            ));
            let (commits, errors, first_error, mut samples) =
                throughput(cluster, node, clients, per_task, warmup, window).await?;
            let (leader_after, _) = leader_of(cluster, &all).await?;
            let lat = latency(&mut samples);
            let level = Level {
                target,
                node,
                clients,
                per_task,
                window,
                commits,
                errors,
                first_error,
                lat,
                leader_before,
                leader_after,
            };
            progress::log(format!(
                "      {:.0} commits/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors",
                level.rate(),
                level.lat.p50,
                level.lat.p99,
                level.lat.max,
                level.errors,
            ));
            levels.push(level);
        }
    }

    // Submits side by side: gRPC to the leader, HTTP through the gateway.
    let (_, leader) = leader_of(cluster, &all).await?;
    let lc = cluster.client(leader);
    let sample = lc.submit(&job("bench", &["bench"])).await?.job;
    let record_bytes = sample.len();
    let mut side_rows = Vec::new();
    let body = job("bench", &["bench"]);
    for &clients in &args.levels {
        progress::step(format!(
            "submits: {clients} client(s), gRPC to the leader (node {leader})"
        ));
        let (c, b) = (lc.clone(), body.clone());
        let r = submit_level(&lc, side::Path::Grpc, clients, warmup, window, move |_| {
            let (c, b) = (c.clone(), b.clone());
            async move {
                c.submit(&b).await?;
                Ok(())
            }
        })
        .await?;
        side_rows.push(r);
    }
    let gw = launcher_tests::TestGateway::start(cluster, |_| {}).await?;
    let http_user = gw.client("alice");
    let http_admin = gw.client("admin");
    let probe = http_admin
        .req(reqwest::Method::GET, "/jobs?limit=1")
        .send()
        .await?;
    let gw_node: usize = probe
        .headers()
        .get("x-launcher-node")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the gateway names the node that answered")?;
    for &clients in &args.levels {
        progress::step(format!(
            "submits: {clients} client(s), HTTP through the gateway (to node {gw_node})"
        ));
        let (h, b) = (http_user.clone(), body.clone());
        let r = submit_level(&lc, side::Path::Http, clients, warmup, window, move |_| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                let r = h.req(reqwest::Method::POST, "/jobs").json(&b).send().await?;
                anyhow::ensure!(r.status() == 201, "status {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
        side_rows.push(r);
    }

    // Launches through the Local plugin.
    let launched = if args.launches > 0 {
        progress::step(format!(
            "launches: {} `true` jobs one at a time, then as a burst",
            args.launches
        ));
        let l = launches(cluster, args.launches).await?;
        progress::log(format!(
            "      submit -> Running p50 {:.1} ms, p99 {:.1} ms; burst of {} from {} tasks: {:.0} jobs/s",
            l.lat.p50,
            l.lat.p99,
            l.burst_jobs,
            l.burst_tasks,
            l.burst_rate()
        ));
        Some(l)
    } else {
        None
    };

    // End to end: `true` jobs submitted for a window, counted when Finished within it.
    let e2e = if args.e2e_seconds > 0.0 {
        progress::step(format!(
            "end to end: `true` jobs from {E2E_TASKS} tasks for {} s, counted when Finished",
            args.e2e_seconds
        ));
        let e = end_to_end(cluster, Duration::from_secs_f64(args.e2e_seconds)).await?;
        progress::log(format!(
            "      {} submitted, {} Finished within the window: {:.0} jobs/s; {} not Finished in the end",
            e.submitted,
            e.finished_in_window,
            e.rate(),
            e.lost
        ));
        Some(e)
    } else {
        None
    };

    // The older gateway-vs-direct part.
    let http = if args.http_seconds > 0.0 {
        progress::step(format!(
            "gateway: POST /jobs and GET /jobs over HTTP vs gRPC direct, {HTTP_TASKS} tasks"
        ));
        gateway_vs_direct(cluster, warmup, Duration::from_secs_f64(args.http_seconds)).await?
    } else {
        Vec::new()
    };

    // Scale: loads, listings, memory, snapshot.
    let (mut loads, mut lists, mut mem) = (Vec::new(), Vec::new(), Vec::new());
    let mut snapshot = None;
    if !sizes.is_empty() {
        let (_, leader) = leader_of(cluster, &all).await?;
        let lc = cluster.client(leader);
        scale::settle(&lc, Duration::from_secs(60)).await?;
        let pid = cluster.nodes[leader - 1].pid().context("leader pid")?;
        let laddr = cluster.nodes[leader - 1].addr();
        let stored_now = |addr: String| async move {
            anyhow::Ok(
                scale::node_metrics(&addr)
                    .await?
                    .get("launcher_node_jobs")
                    .copied()
                    .unwrap_or(0.0) as u64,
            )
        };
        let base_rss = scale::rss_kib(pid)?;
        mem.push(scale::MemRow {
            system: "launcher-node (leader)",
            loaded: 0,
            stored: stored_now(laddr.clone()).await?,
            rss_kib: base_rss,
            base_rss_kib: base_rss,
            base_loaded: 0,
        });
        let mut loaded = 0;
        for &size in &sizes {
            progress::step(format!("launcher: loading jobs {loaded}..{size}"));
            let elapsed = scale::load_ours(&lc, loaded, size, &sizes).await?;
            let settle = scale::settle(&lc, Duration::from_secs(120)).await?;
            let row = scale::LoadRow {
                system: "launcher",
                from: loaded,
                to: size,
                elapsed,
                settle,
            };
            progress::log(format!(
                "      {} jobs in {:.1} s ({:.0} jobs/s), then {:.1} s until no more commits",
                size - loaded,
                elapsed.as_secs_f64(),
                row.rate(),
                settle.as_secs_f64()
            ));
            loads.push(row);
            loaded = size;
            let m = scale::MemRow {
                system: "launcher-node (leader)",
                loaded,
                stored: stored_now(laddr.clone()).await?,
                rss_kib: scale::rss_kib(pid)?,
                base_rss_kib: base_rss,
                base_loaded: 0,
            };
            progress::log(format!(
                "      leader RSS {:.1} MiB: {:.0} bytes per loaded job ({} jobs stored)",
                m.rss_kib as f64 / 1024.0,
                m.per_item(),
                m.stored
            ));
            mem.push(m);
            progress::step(format!("launcher: listing {size} jobs"));
            let rows = scale::list_ours(&lc, "launcher ListJobs, gRPC → leader", &http_admin, size).await?;
            for r in &rows {
                log_list(r);
            }
            lists.extend(rows);
        }
        gw.handle.shutdown().await?;
        progress::step(format!(
            "launcher: snapshot export and install at {} jobs",
            sizes.last().copied().unwrap_or(0)
        ));
        let s = scale::snapshot(cluster, leader).await?;
        progress::log(format!(
            "      export {:.0} ms ({} bytes); new node: installed {}, caught up {:.0} ms",
            ms(s.export),
            s.export_bytes,
            s.install
                .map_or("nothing (caught up from the log)".into(), |d| format!(
                    "after {:.0} ms",
                    ms(d)
                )),
            ms(s.caught_up)
        ));
        snapshot = Some(s);
    } else {
        gw.handle.shutdown().await?;
    }

    // Failover.
    let mut failovers = Vec::new();
    for rep in 1..=args.failovers {
        progress::step(format!(
            "launcher failover {rep}/{}: killing the leader",
            args.failovers
        ));
        let f = failover(cluster, rep).await?;
        progress::log(format!(
            "      node {} (id {}) killed: new leader {} seen after {}, first ack from node {} after \
             {:.0} ms ({} attempts); back to Green in {:.1} s",
            f.killed_node,
            f.killed_id,
            f.new_leader,
            f.elected.map_or("?".into(), |d| format!("{:.0} ms", ms(d))),
            f.via,
            ms(f.elapsed),
            f.attempts,
            f.recover.as_secs_f64()
        ));
        failovers.push(f);
    }

    // Memory of nodes that restarted after the load (the failovers restart killed leaders):
    // the same table, without the history of the writes that built it.
    if !sizes.is_empty() && !failovers.is_empty() {
        for i in cluster.running() {
            let Some(pid) = cluster.nodes[i - 1].pid() else {
                continue;
            };
            let up: u64 = sh("ps", &["-o", "etimes=", "-p", &pid.to_string()])
                .parse()
                .unwrap_or(0);
            let stored = scale::node_metrics(&cluster.nodes[i - 1].addr())
                .await
                .ok()
                .and_then(|m| m.get("launcher_node_jobs").copied())
                .unwrap_or(0.0) as usize;
            let rss = scale::rss_kib(pid)?;
            progress::log(format!(
                "      node {i}: up {up} s, RSS {:.1} MiB for {stored} jobs",
                rss as f64 / 1024.0
            ));
            mem.push(scale::MemRow {
                system: if failovers.iter().any(|f| f.killed_node == i) {
                    "launcher-node restarted during the failovers (whole RSS ÷ stored)"
                } else {
                    "launcher-node running since the start (whole RSS ÷ stored)"
                },
                loaded: stored,
                stored: stored as u64,
                rss_kib: rss,
                base_rss_kib: 0,
                base_loaded: 0,
            });
        }
    }

    // etcd, with our cluster stopped so the two never share the cores.
    let mut etcd_version = None;
    let mut etcd_fo = Vec::new();
    if args.etcd {
        for i in cluster.running() {
            cluster.kill(i);
        }
        progress::step("etcd: installing if missing, starting 3 members on 127.0.0.1");
        let mut etcd = etcd::EtcdCluster::start().await?;
        etcd_version = Some(etcd.version.clone());
        progress::log(format!(
            "      etcd {} up, data under {}",
            etcd.version,
            etcd.root.path().display()
        ));
        let (eleader, ec) = scale::etcd_leader(&mut etcd).await?;
        let keys = side::Keys::new("/jobs/");
        for &clients in &args.levels {
            progress::step(format!(
                "etcd puts: {clients} client(s), gRPC to the leader (member {})",
                etcd.members[eleader].name
            ));
            let i0 = ec.status().await?.raft_index;
            let t0 = Instant::now();
            let (c, k, v) = (ec.clone(), keys.clone(), sample.clone());
            let out = side::run_level(clients, warmup, window, move |_| {
                let (c, key, v) = (c.clone(), k.next(), v.clone());
                async move {
                    c.put(key, v).await?;
                    Ok(())
                }
            })
            .await;
            let i1 = ec.status().await?.raft_index;
            let r = side::row(
                side::Path::Etcd,
                clients,
                window,
                out,
                i1.saturating_sub(i0),
                t0.elapsed(),
            );
            log_row(&r);
            side_rows.push(r);
        }
        if !sizes.is_empty() {
            let pid = etcd.members[eleader].pid().context("etcd leader pid")?;
            let base_rss = scale::rss_kib(pid)?;
            let base_keys = keys.issued();
            let mut loaded = 0;
            for &size in &sizes {
                progress::step(format!("etcd: loading keys {loaded}..{size}"));
                let elapsed = scale::load_etcd(&ec, loaded, size, &sample).await?;
                let row = scale::LoadRow {
                    system: "etcd",
                    from: loaded,
                    to: size,
                    elapsed,
                    settle: Duration::ZERO,
                };
                progress::log(format!(
                    "      {} keys in {:.1} s ({:.0} puts/s)",
                    size - loaded,
                    elapsed.as_secs_f64(),
                    row.rate()
                ));
                loads.push(row);
                loaded = size;
                mem.push(scale::MemRow {
                    system: "etcd (leader)",
                    loaded,
                    stored: base_keys + loaded as u64,
                    rss_kib: scale::rss_kib(pid)?,
                    base_rss_kib: base_rss,
                    base_loaded: 0,
                });
                progress::step(format!("etcd: range reads of {size} keys"));
                let rows = scale::list_etcd(&ec, size).await?;
                for r in &rows {
                    log_list(r);
                }
                lists.extend(rows);
            }
        }
        for rep in 1..=etcd_failovers {
            progress::step(format!(
                "etcd failover {rep}/{etcd_failovers}: killing the leader"
            ));
            let d = etcd_failover(&mut etcd, rep).await?;
            progress::log(format!(
                "      first put acknowledged {:.0} ms after the kill",
                ms(d)
            ));
            etcd_fo.push(d);
        }
    }

    let mut facts = vec![
        ("command".to_string(), format!("`{command}`")),
        ("nproc".into(), nproc),
        ("uname -r".into(), kernel),
        ("cpu".into(), cpu),
        ("data dir fs".into(), fs_type),
        (
            "commit".into(),
            format!("{commit}{}", if dirty { " (dirty tree)" } else { "" }),
        ),
        (
            "node".into(),
            format!("launcher-node {version}, `{}`", bin.display()),
        ),
        (
            "cluster".into(),
            "3 launcher-node processes on 127.0.0.1 (own 127.a.b.c each), fsync on; bench client, \
             in-process gateway and etcd on the same machine; etcd runs after our cluster is stopped"
                .into(),
        ),
        (
            "window".into(),
            format!(
                "{} s per write level after {} s warm-up",
                args.seconds, args.warmup
            ),
        ),
        (
            "job record".into(),
            format!(
                "{record_bytes} bytes (a stored job's canonical JSON; etcd values are these bytes, keys \
                 `/jobs/` + 36 characters)"
            ),
        ),
    ];
    if let Some(v) = &etcd_version {
        facts.push((
            "etcd".into(),
            format!("{v} (Debian etcd-server), 3 members, default durability and timeouts"),
        ));
    }
    facts.push((
        "bench wall time".into(),
        format!(
            "{:.0} s from cluster start to report (launcher-node build excluded)",
            started.elapsed().as_secs_f64()
        ),
    ));
    progress::done();
    let results = Results {
        facts,
        record_bytes,
        levels,
        side: side_rows,
        gateway_node: Some((gw_node, gw_node == leader)),
        launched,
        http,
        loads,
        lists,
        mem,
        snapshot,
        failovers,
        etcd_failovers: etcd_fo,
        etcd_version,
        side_levels: args.levels.clone(),
        e2e,
    };
    print!("{}", report::markdown(&results));
    if args.quick {
        // Last, one figure per line, for scripts comparing runs.
        let ratio = |path: side::Path| {
            let ours = results.side.iter().find(|r| r.path == path && r.clients == 64);
            let etcd = results
                .side
                .iter()
                .find(|r| r.path == side::Path::Etcd && r.clients == 64);
            match (ours, etcd) {
                (Some(o), Some(e)) if e.rate() > 0.0 => format!("{:.3}", o.rate() / e.rate()),
                _ => "n/a".to_string(),
            }
        };
        println!("ratio_grpc_64={}", ratio(side::Path::Grpc));
        println!("ratio_http_64={}", ratio(side::Path::Http));
        match &results.e2e {
            Some(e) => {
                println!("jobs_per_s={:.1}", e.rate());
                println!("jobs_lost={}", e.lost);
            }
            None => println!("jobs_per_s=n/a"),
        }
    }
    if let Some(path) = &args.json {
        let out = report::json(&results, args);
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One level of the side-by-side write table: `op` from `clients` tasks for `window` after
/// `warmup`, with the Raft entries the cluster committed meanwhile (read on the leader `lc`).
async fn submit_level<F, Fut>(
    lc: &NodeClient,
    path: side::Path,
    clients: usize,
    warmup: Duration,
    window: Duration,
    op: F,
) -> anyhow::Result<side::Row>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let i0 = lc.status().await?.applied_index;
    let t0 = Instant::now();
    let out = side::run_level(clients, warmup, window, op).await;
    let i1 = lc.status().await?.applied_index;
    let r = side::row(path, clients, window, out, i1.saturating_sub(i0), t0.elapsed());
    log_row(&r);
    Ok(r)
}

fn log_row(r: &side::Row) {
    progress::log(format!(
        "      {:.0} acks/s, p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, {} errors{}; {:.0} raft entries/s",
        r.rate(),
        r.lat.p50,
        r.lat.p99,
        r.lat.p999,
        r.errors,
        r.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        r.entries_per_s
    ));
}

fn log_list(r: &scale::ListRow) {
    progress::log(format!(
        "      {} {}: {} items, {:.1} MB, p50 {:.1} ms, max {:.1} ms",
        r.system,
        r.consistency,
        r.returned,
        r.bytes as f64 / 1e6,
        r.lat.p50,
        r.lat.max
    ));
}

/// SIGKILL the etcd leader; time until another member acknowledges a put; restart it.
async fn etcd_failover(etcd: &mut etcd::EtcdCluster, rep: usize) -> anyhow::Result<Duration> {
    let leader = etcd.wait_leader(DEADLINE).await?;
    let via = (leader + 1) % etcd.members.len();
    let client = etcd.client(via)?;
    client.status().await.context("status of the surviving member")?;
    let key = format!("/failover/{rep}").into_bytes();
    let t0 = Instant::now();
    etcd.kill(leader);
    let elapsed = loop {
        let a0 = Instant::now();
        let r = tokio::time::timeout(ATTEMPT_TIMEOUT, client.put(key.clone(), b"x".to_vec())).await;
        if let Ok(Ok(_)) = r {
            break t0.elapsed();
        }
        if t0.elapsed() > FAILOVER_DEADLINE {
            bail!(
                "no etcd put acknowledged within {FAILOVER_DEADLINE:?} of killing the leader\n{}",
                etcd.logs()
            );
        }
        let spent = a0.elapsed();
        if spent < MIN_ATTEMPT {
            tokio::time::sleep(MIN_ATTEMPT - spent).await;
        }
    };
    etcd.restart(leader)?;
    etcd.wait_leader(DEADLINE).await?;
    Ok(elapsed)
}

/// Figures of the launch part.
struct Launches {
    serial: usize,
    lat: Lat,
    serial_rate: f64,
    serial_failed: usize,
    burst_jobs: usize,
    burst_tasks: usize,
    burst_elapsed: Duration,
    burst_failed: usize,
}

impl Launches {
    fn burst_rate(&self) -> f64 {
        self.burst_jobs as f64 / self.burst_elapsed.as_secs_f64()
    }
}

/// Tasks of the launch burst.
const BURST_TASKS: usize = 16;

/// Status of job `id` as it changes, from node `c`, until `done` says stop; returns the status.
async fn watch_status(c: &NodeClient, id: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    use futures::StreamExt;
    let req = launcher_proto::launcher::JobRequest {
        caller: Some(launcher_tests::client::admin()),
        id: id.to_string(),
        read: None,
    };
    let mut stream = c.rpc().stream_status(req).await?.into_inner();
    while let Some(ev) = stream.next().await {
        let ev: Value = serde_json::from_slice(&ev?.event)?;
        let status = ev["status"].as_str().unwrap_or_default().to_string();
        if done(&status) {
            return Ok(status);
        }
    }
    bail!("the status stream of {id} ended early")
}

fn is_terminal(s: &str) -> bool {
    matches!(s, "Finished" | "Failed" | "Killed" | "Canceled")
}

/// Launches `n` `true` jobs one at a time, then `n` more as a burst.
async fn launches(cluster: &mut ProcessCluster, n: usize) -> anyhow::Result<Launches> {
    let all = cluster.running();
    let (_, leader) = leader_of(cluster, &all).await?;
    let c = cluster.client(leader);
    let admin = launcher_tests::client::admin;
    let mut samples = Vec::with_capacity(n);
    let mut serial_failed = 0;
    let serial_start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let body = launcher_tests::shell_job(&format!("serial-{i}"), "true");
        let id = launcher_tests::client::job_id(&c.submit_as(admin(), &body, None).await?.job);
        watch_status(&c, &id, |s| s != "Pending").await?;
        samples.push(t0.elapsed());
        if watch_status(&c, &id, is_terminal).await? != "Finished" {
            serial_failed += 1;
        }
    }
    let serial_rate = n as f64 / serial_start.elapsed().as_secs_f64();
    let lat = latency(&mut samples);

    let burst_start = Instant::now();
    let per_task = n.div_ceil(BURST_TASKS);
    let tasks = (0..BURST_TASKS).map(|t| {
        let c = c.clone();
        async move {
            let mut ids = Vec::new();
            for i in (t * per_task)..((t + 1) * per_task).min(n) {
                let body = launcher_tests::shell_job(&format!("burst-{i}"), "true");
                ids.push(launcher_tests::client::job_id(
                    &c.submit_as(admin(), &body, None).await?.job,
                ));
            }
            let mut failed = 0;
            for id in &ids {
                if watch_status(&c, id, is_terminal).await? != "Finished" {
                    failed += 1;
                }
            }
            anyhow::Ok((ids.len(), failed))
        }
    });
    let done = futures::future::try_join_all(tasks).await?;
    let burst_elapsed = burst_start.elapsed();
    Ok(Launches {
        serial: n,
        lat,
        serial_rate,
        serial_failed,
        burst_jobs: done.iter().map(|d| d.0).sum(),
        burst_tasks: BURST_TASKS,
        burst_elapsed,
        burst_failed: done.iter().map(|d| d.1).sum(),
    })
}

/// Tasks of the end-to-end part.
const E2E_TASKS: usize = 16;

/// Figures of the end-to-end part.
struct EndToEnd {
    window: Duration,
    submitted: usize,
    finished_in_window: usize,
    /// Acknowledged jobs that did not end Finished.
    lost: usize,
}

impl EndToEnd {
    fn rate(&self) -> f64 {
        self.finished_in_window as f64 / self.window.as_secs_f64()
    }
}

/// `true` jobs submitted by gRPC to the leader from [`E2E_TASKS`] tasks, one after another,
/// for `window`; a job counts when its Finished status was stamped within the window (the
/// launch path sets the pace, not the submits). Then waits for every submitted job to end:
/// one that ends otherwise than Finished is counted as lost.
async fn end_to_end(cluster: &mut ProcessCluster, window: Duration) -> anyhow::Result<EndToEnd> {
    let all = cluster.running();
    let (_, leader) = leader_of(cluster, &all).await?;
    let c = cluster.client(leader);
    let start = std::time::SystemTime::now();
    let end = Instant::now() + window;
    let tasks = (0..E2E_TASKS).map(|t| {
        let c = c.clone();
        async move {
            let mut ids = Vec::new();
            while Instant::now() < end {
                let body = launcher_tests::shell_job(&format!("e2e-{t}-{}", ids.len()), "true");
                let r = tokio::time::timeout(
                    SUBMIT_TIMEOUT,
                    c.submit_as(launcher_tests::client::admin(), &body, None),
                )
                .await
                .context("a submit timed out")??;
                ids.push(launcher_tests::client::job_id(&r.job));
            }
            anyhow::Ok(ids)
        }
    });
    let ids: Vec<String> = futures::future::try_join_all(tasks)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let window_end = start + window;
    let drained = Instant::now() + PENDING_DRAINED;
    let (mut finished_in_window, mut lost) = (0, 0);
    for id in &ids {
        let job = loop {
            let j = c.job(id).await?;
            if is_terminal(j["status"].as_str().unwrap_or_default()) {
                break j;
            }
            anyhow::ensure!(
                Instant::now() < drained,
                "job {id} did not end within {PENDING_DRAINED:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if job["status"] != "Finished" {
            lost += 1;
            continue;
        }
        let at = job["lastUpdateTime"]
            .as_str()
            .and_then(parse_utc)
            .context("lastUpdateTime")?;
        if at <= window_end {
            finished_in_window += 1;
        }
    }
    Ok(EndToEnd {
        window,
        submitted: ids.len(),
        finished_in_window,
        lost,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (the launcher's timestamps) as a system time.
fn parse_utc(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Tasks of the gateway-vs-direct part.
const HTTP_TASKS: usize = 16;

/// One gateway-vs-direct measurement.
struct HttpLevel {
    op: &'static str,
    path: &'static str,
    count: usize,
    errors: usize,
    window: Duration,
    lat: Lat,
}

impl HttpLevel {
    fn rate(&self) -> f64 {
        self.count as f64 / self.window.as_secs_f64()
    }
}

/// Runs `op` from `tasks` tasks for `warmup` + `window`; counts what completes in the window.
async fn windowed<F, Fut>(
    tasks: usize,
    warmup: Duration,
    window: Duration,
    op: F,
) -> (usize, usize, Vec<Duration>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = tokio::time::timeout(SUBMIT_TIMEOUT, op()).await;
                    let t1 = Instant::now();
                    if t1 < measure_from || t1 >= end {
                        continue;
                    }
                    match r {
                        Ok(Ok(())) => lat.push(t1 - t0),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for h in futures::future::join_all(handles).await {
        let (lat, e) = h.unwrap_or_default();
        all.extend(lat);
        errors += e;
    }
    (all.len(), errors, all)
}

/// `POST /jobs` and `GET /jobs` through an in-process gateway, and the same calls by gRPC to
/// the node the gateway routes this client to.
async fn gateway_vs_direct(
    cluster: &ProcessCluster,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Vec<HttpLevel>> {
    let gw = launcher_tests::TestGateway::start(cluster, |_| {}).await?;
    let http = gw.client("admin");
    let probe = http.req(reqwest::Method::GET, "/jobs").send().await?;
    let node: usize = probe
        .headers()
        .get("x-launcher-node")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the gateway names the node that answered")?;
    let direct = cluster.client(node);
    let body = job("bench-http", &["bench"]);
    let mut out = Vec::new();
    let mut level = |op, path, (count, errors, mut lat): (usize, usize, Vec<Duration>)| {
        out.push(HttpLevel {
            op,
            path,
            count,
            errors,
            window,
            lat: latency(&mut lat),
        });
    };
    let (h, b) = (http.clone(), body.clone());
    level(
        "POST /jobs",
        "gateway (HTTP)",
        windowed(HTTP_TASKS, warmup, window, move || {
            let (h, b) = (h.clone(), b.clone());
            async move {
                let r = h.req(reqwest::Method::POST, "/jobs").json(&b).send().await?;
                anyhow::ensure!(r.status() == 201, "status {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
        .await,
    );
    let (d, b) = (direct.clone(), body.clone());
    level(
        "POST /jobs",
        "node (gRPC)",
        windowed(HTTP_TASKS, warmup, window, move || {
            let (d, b) = (d.clone(), b.clone());
            async move {
                d.submit_as(launcher_tests::client::admin(), &b, None).await?;
                Ok(())
            }
        })
        .await,
    );
    // Listings of a fixed page, so both sides move the same bytes whatever the table holds.
    let h = http.clone();
    level(
        "GET /jobs?limit=100",
        "gateway (HTTP)",
        windowed(HTTP_TASKS, warmup, window, move || {
            let h = h.clone();
            async move {
                let r = h
                    .req(reqwest::Method::GET, "/jobs?user=*&limit=100")
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
        .await,
    );
    let d = direct.clone();
    level(
        "GET /jobs?limit=100",
        "node (gRPC)",
        windowed(HTTP_TASKS, warmup, window, move || {
            let d = d.clone();
            async move {
                d.list(launcher_proto::launcher::ListJobsRequest {
                    user: "*".into(),
                    limit: 100,
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
        })
        .await,
    );
    gw.handle.shutdown().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_timestamps_parse_to_the_right_instant() {
        let at = |s: &str| parse_utc(s).map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(
            at("2026-12-07T16:45:00Z"),
            Some(Duration::from_secs(1_796_661_900))
        );
        assert_eq!(
            at("2000-02-29T23:59:59.25Z"),
            Some(Duration::from_secs(951_868_799) + Duration::from_millis(250))
        );
        assert_eq!(at("2026-12-07 16:45:00"), None);
        assert_eq!(at("garbage"), None);
    }
}
