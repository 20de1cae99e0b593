//! `launcher-bench`: commit throughput and leader-kill failover on a real 3-node cluster.
//!
//! Starts three `launcher-node` processes on 127.0.0.1 (fsync on, the same profile as this
//! binary), then
//!
//! 1. drives submits through one node (a follower, then the leader) with 1, 16 and 64
//!    concurrent tokio tasks sharing one `NodeClient` (one HTTP/2 connection), and with 64 tasks
//!    each owning its own client (one connection per task); every level runs a warm-up and then
//!    a fixed measuring window;
//! 2. SIGKILLs the leader N times and measures, from a surviving node, the time from the kill
//!    to the first acknowledged submit (and, watching Status, to the first survivor naming the
//!    new leader); the killed node is restarted and the cluster made Green again before the next
//!    repetition.
//!
//! 3. launches `true` jobs through the leader and the Local plugin: one at a time, timing each
//!    from the submit call to the first replicated status past Pending (Running, or Finished
//!    when the job ended before its Running was reported), and then in a burst from 16 tasks,
//!    timing until every job of the burst is terminal (jobs started per second).
//!
//! 4. puts an in-process `launcher-gateway` in front of the cluster and drives `POST /jobs` and
//!    `GET /jobs` over HTTP with 16 tasks, next to the same load sent by gRPC straight to the
//!    node the gateway routes the bench to, and prints the ratio.
//!
//! Prints a Markdown report on stdout, progress on stderr, and optionally writes JSON.
//!
//! ```text
//! cargo build --release -p launcher-tests --bin launcher-bench
//! target/release/launcher-bench [--seconds N] [--warmup N] [--failovers N] [--launches N] [--json FILE]
//! ```
//!
//! The node binary is `LAUNCHER_NODE_BIN` if set, else `launcher-node` next to this binary,
//! (re)built first with cargo in this binary's profile.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use launcher_tests::{job, wait_until, ClusterOpts, NodeClient, ProcessCluster, DEADLINE};
use serde_json::{json, Value};

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
/// Give up on a failover after this long.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

const USAGE: &str =
    "usage: launcher-bench [--seconds N] [--warmup N] [--failovers N] [--launches N] [--json FILE] [--keep-logs DIR]

  --seconds N    measuring window of each throughput level, seconds (default 5)
  --warmup N     warm-up before each window, seconds (default 1)
  --failovers N  leader-kill repetitions (default 5; 0 skips them)
  --launches N   jobs of the launch part, one at a time and again as a burst (default 200; 0 skips)
  --http-seconds N  window of each gateway-vs-direct level (default 3; 0 skips)
  --json FILE    also write the results as JSON to FILE
  --keep-logs D  copy the nodes' logs into directory D at the end (also on failure)";

struct Args {
    seconds: f64,
    warmup: f64,
    failovers: usize,
    launches: usize,
    http_seconds: f64,
    json: Option<PathBuf>,
    keep_logs: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 5.0,
        warmup: 1.0,
        failovers: 5,
        launches: 200,
        http_seconds: 3.0,
        json: None,
        keep_logs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
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
            "--failovers" => {
                let v = value()?;
                args.failovers = v
                    .parse()
                    .with_context(|| format!("--failovers: '{v}' is not a count"))?;
            }
            "--launches" => {
                let v = value()?;
                args.launches = v
                    .parse()
                    .with_context(|| format!("--launches: '{v}' is not a count"))?;
            }
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
    let clients: Vec<NodeClient> = all.iter().map(|&i| cluster.client(i)).collect();
    wait_until("every node to follow one leader", DEADLINE, || {
        let clients = clients.clone();
        async move {
            let mut leaders = Vec::new();
            for c in &clients {
                leaders.push(c.status().await?.leader);
            }
            Ok((leaders[0] != 0 && leaders.iter().all(|&l| l == leaders[0])).then_some(()))
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

    // Throughput.
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
    let mut levels = Vec::new();
    let all = cluster.running();
    for (k, &(target, clients, per_task)) in plan.iter().enumerate() {
        let (leader_before, leader_node) = leader_of(cluster, &all).await?;
        let node = if target == "leader" {
            leader_node
        } else {
            *all.iter().find(|&&i| i != leader_node).context("no follower")?
        };
        eprintln!(
            "[{}/{}] {clients} client{} to {target} (node {node}{}) ...",
            k + 1,
            plan.len(),
            if clients == 1 { "" } else { "s" },
            if per_task { ", one connection per task" } else { "" },
        );
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
        eprintln!(
            "      {:.0} commits/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors{}",
            level.rate(),
            level.lat.p50,
            level.lat.p99,
            level.lat.max,
            level.errors,
            if leader_before != leader_after {
                format!(" (leader changed {leader_before} -> {leader_after})")
            } else {
                String::new()
            }
        );
        levels.push(level);
    }

    // Launches through the Local plugin.
    let launched = if args.launches > 0 {
        eprintln!(
            "[launches] {} `true` jobs one at a time, then as a burst ...",
            args.launches
        );
        let l = launches(cluster, args.launches).await?;
        eprintln!(
            "      submit -> Running p50 {:.1} ms, p99 {:.1} ms; burst of {} from {} tasks: {:.0} jobs/s",
            l.lat.p50,
            l.lat.p99,
            l.burst_jobs,
            l.burst_tasks,
            l.burst_rate()
        );
        Some(l)
    } else {
        None
    };

    // The gateway against direct gRPC.
    let http = if args.http_seconds > 0.0 {
        eprintln!("[gateway] POST /jobs and GET /jobs over HTTP vs gRPC direct, {HTTP_TASKS} tasks ...");
        let h = gateway_vs_direct(cluster, warmup, Duration::from_secs_f64(args.http_seconds)).await?;
        for r in &h {
            eprintln!(
                "      {} via {}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors",
                r.op,
                r.path,
                r.rate(),
                r.lat.p50,
                r.lat.p99,
                r.errors
            );
        }
        h
    } else {
        Vec::new()
    };

    // Failover.
    let mut failovers = Vec::new();
    for rep in 1..=args.failovers {
        eprintln!("[failover {rep}/{}] killing the leader ...", args.failovers);
        let f = failover(cluster, rep).await?;
        eprintln!(
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
        );
        failovers.push(f);
    }
    let mut fo_samples: Vec<Duration> = failovers.iter().map(|f| f.elapsed).collect();
    let fo = latency(&mut fo_samples);

    // Report.
    let mut md = String::new();
    writeln!(md, "## launcher-bench")?;
    writeln!(md)?;
    writeln!(md, "| fact | value |")?;
    writeln!(md, "|---|---|")?;
    writeln!(md, "| command | `{command}` |")?;
    writeln!(md, "| nproc | {nproc} |")?;
    writeln!(md, "| uname -r | {kernel} |")?;
    writeln!(md, "| cpu | {cpu} |")?;
    writeln!(md, "| data dir fs | {fs_type} |")?;
    writeln!(
        md,
        "| commit | {commit}{} |",
        if dirty { " (dirty tree)" } else { "" }
    )?;
    writeln!(md, "| node | launcher-node {version}, `{}` |", bin.display())?;
    writeln!(
        md,
        "| cluster | 3 processes on 127.0.0.1, fsync on, bench client on the same machine |"
    )?;
    writeln!(
        md,
        "| window | {} s per level after {} s warm-up |",
        args.seconds, args.warmup
    )?;
    writeln!(
        md,
        "| bench wall time | {:.0} s from cluster start to report (launcher-node build excluded) |",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(md)?;
    writeln!(md, "### Commit throughput through one node")?;
    writeln!(md)?;
    writeln!(
        md,
        "| target | clients | connections | commits/s | p50 ms | p99 ms | max ms | commits | errors |"
    )?;
    writeln!(md, "|---|--:|---|--:|--:|--:|--:|--:|--:|")?;
    for l in &levels {
        writeln!(
            md,
            "| {} (node {}) | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
            l.target,
            l.node,
            l.clients,
            if l.per_task { "1 per task" } else { "1 shared" },
            l.rate(),
            l.lat.p50,
            l.lat.p99,
            l.lat.max,
            l.commits,
            l.errors
        )?;
    }
    let notes: Vec<String> = levels
        .iter()
        .filter_map(|l| {
            let mut n = Vec::new();
            if l.leader_before != l.leader_after {
                n.push(format!(
                    "leader changed {} -> {}",
                    l.leader_before, l.leader_after
                ));
            }
            if let Some(e) = &l.first_error {
                n.push(format!("first error: {e}"));
            }
            (!n.is_empty()).then(|| format!("- {} {} clients: {}", l.target, l.clients, n.join("; ")))
        })
        .collect();
    if !notes.is_empty() {
        writeln!(md)?;
        for n in &notes {
            writeln!(md, "{n}")?;
        }
    }
    if let Some(l) = &launched {
        writeln!(md)?;
        writeln!(
            md,
            "### Jobs through the Local plugin (`true`, submitted to the leader)"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| measure | jobs | p50 ms | p99 ms | max ms | jobs/s | not Finished |"
        )?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|--:|")?;
        writeln!(
            md,
            "| submit → first status past Pending, one at a time | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            l.serial, l.lat.p50, l.lat.p99, l.lat.max, l.serial_rate, l.serial_failed
        )?;
        writeln!(
            md,
            "| burst from {} tasks, first submit → all terminal | {} | | | | {:.0} | {} |",
            l.burst_tasks,
            l.burst_jobs,
            l.burst_rate(),
            l.burst_failed
        )?;
    }
    if !http.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Through the gateway (HTTP) vs straight to the node (gRPC), {HTTP_TASKS} tasks"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| request | path | req/s | p50 ms | p99 ms | errors | gateway / direct req/s |"
        )?;
        writeln!(md, "|---|---|--:|--:|--:|--:|--:|")?;
        for pair in http.chunks(2) {
            let ratio = pair[0].rate() / pair[1].rate().max(f64::MIN_POSITIVE);
            for (k, r) in pair.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} |",
                    r.op,
                    r.path,
                    r.rate(),
                    r.lat.p50,
                    r.lat.p99,
                    r.errors,
                    if k == 0 {
                        format!("{ratio:.2}")
                    } else {
                        String::new()
                    }
                )?;
            }
        }
    }
    if !failovers.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Leader-kill failover (SIGKILL → first acknowledged submit)"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| # | killed | submits to | new leader id | kill → leader seen ms | kill → ack ms | attempts \
             | errors before ack | back to Green s |"
        )?;
        writeln!(md, "|--:|---|---|--:|--:|--:|--:|---|--:|")?;
        for (k, f) in failovers.iter().enumerate() {
            writeln!(
                md,
                "| {} | node {} | node {} | {} | {} | {:.0} | {} | {} | {:.1} |",
                k + 1,
                f.killed_node,
                f.via,
                f.new_leader,
                f.elected.map_or("?".into(), |d| format!("{:.0}", ms(d))),
                ms(f.elapsed),
                f.attempts,
                if f.errors_seen.is_empty() {
                    "-".to_string()
                } else {
                    f.errors_seen.join(", ")
                },
                f.recover.as_secs_f64()
            )?;
        }
        writeln!(md)?;
        writeln!(
            md,
            "Failover over {} runs: p50 {:.0} ms, max {:.0} ms (attempt timeout {} ms; election timeout 1500–3000 ms).",
            failovers.len(),
            fo.p50,
            fo.max,
            ATTEMPT_TIMEOUT.as_millis()
        )?;
    }
    print!("{md}");

    if let Some(path) = &args.json {
        let out = json!({
            "command": command,
            "machine": {"nproc": nproc, "kernel": kernel, "cpu": cpu, "data_dir_fs": fs_type},
            "commit": commit,
            "dirty": dirty,
            "node_version": version,
            "node_binary": bin.display().to_string(),
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "throughput": levels.iter().map(|l| json!({
                "target": l.target,
                "node": l.node,
                "clients": l.clients,
                "connections": if l.per_task { "per_task" } else { "shared" },
                "commits": l.commits,
                "errors": l.errors,
                "first_error": l.first_error,
                "commits_per_s": l.rate(),
                "p50_ms": l.lat.p50,
                "p99_ms": l.lat.p99,
                "max_ms": l.lat.max,
                "leader_before": l.leader_before,
                "leader_after": l.leader_after,
            })).collect::<Vec<Value>>(),
            "launches": launched.as_ref().map(|l| json!({
                "serial_jobs": l.serial,
                "submit_to_running_p50_ms": l.lat.p50,
                "submit_to_running_p99_ms": l.lat.p99,
                "submit_to_running_max_ms": l.lat.max,
                "serial_jobs_per_s": l.serial_rate,
                "serial_not_finished": l.serial_failed,
                "burst_jobs": l.burst_jobs,
                "burst_tasks": l.burst_tasks,
                "burst_seconds": l.burst_elapsed.as_secs_f64(),
                "burst_jobs_per_s": l.burst_rate(),
                "burst_not_finished": l.burst_failed,
            })),
            "gateway_vs_direct": http.iter().map(|r| json!({
                "request": r.op, "path": r.path, "requests": r.count, "errors": r.errors,
                "req_per_s": r.rate(), "p50_ms": r.lat.p50, "p99_ms": r.lat.p99,
            })).collect::<Vec<Value>>(),
            "failover": {
                "runs": failovers.iter().map(|f| json!({
                    "killed_node": f.killed_node,
                    "killed_id": f.killed_id,
                    "submits_to": f.via,
                    "new_leader": f.new_leader,
                    "kill_to_ack_ms": ms(f.elapsed),
                    "kill_to_leader_seen_ms": f.elected.map(ms),
                    "attempts": f.attempts,
                    "errors_before_ack": f.errors_seen,
                    "back_to_green_s": f.recover.as_secs_f64(),
                })).collect::<Vec<Value>>(),
                "p50_ms": fo.p50,
                "max_ms": fo.max,
                "attempt_timeout_ms": ATTEMPT_TIMEOUT.as_millis() as u64,
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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
