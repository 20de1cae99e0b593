//! The frame every chaos test shares: a seeded run of three node processes with the scripted
//! plugin (every launch goes to one launch log) and a gateway, five recording clients (three
//! direct over gRPC, two through the gateway), the nemesis' own helpers (notes, pauses, leader
//! look-ups that a paused node cannot stall), and the end of a run: stop the clients, let every
//! job end, take final listings, check the history and report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checker::{self, Linearizability};
use crate::history::{Event, History, Outcome, Read};
use crate::netfault::Firewall;
use crate::{
    init_tracing, wait_until, ClusterOpts, NodeClient, ProcessCluster, TestGateway, TestPlugin, DEADLINE,
};
use launcher_proto::launcher::StatusReply;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::task::JoinHandle;

use super::workload::{record_list, Client, RunState, Target};

/// Process id of the test's own final reads and clean-up in the history.
pub const FINAL: u32 = 100;
/// Process id of the test's own submits, gets and controls while faults run.
pub const NEMESIS: u32 = 99;
/// Deadline of one status request in the nemesis' polls: a paused node must not stall them.
const ASK: Duration = Duration::from_secs(1);
/// Nodes of every chaos cluster.
pub const NODES: usize = 3;

/// The run's seed: `LAUNCHER_CHAOS_SEED` replays a run, else a fresh one.
pub fn seed() -> u64 {
    match std::env::var("LAUNCHER_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("LAUNCHER_CHAOS_SEED must be an unsigned integer"),
        Err(_) => rand::random(),
    }
}

/// Whether a status is terminal.
pub fn terminal(status: &str) -> bool {
    matches!(status, "Finished" | "Failed" | "Killed" | "Canceled")
}

/// Writes the history where a failing run can be replayed from: `LAUNCHER_CHAOS_HISTORY`, else
/// the temp dir.
fn dump(history: &History, seed: u64) -> String {
    let path = std::env::var_os("LAUNCHER_CHAOS_HISTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("launcher-chaos-{seed}.jsonl")));
    match history.save(&path) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(could not write {}: {e})", path.display()),
    }
}

/// Seconds from `start` to the time stamp (`…THH:MM:SS.ffffffZ`, UTC) a node log line begins
/// with, within one day.
fn since_start(line: &str, start: std::time::SystemTime) -> Option<f64> {
    let clock = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    let start = start.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() % 86_400.0;
    Some((h * 3600.0 + m * 60.0 + s - start).rem_euclid(86_400.0))
}

/// One chaos run.
pub struct Chaos {
    pub name: &'static str,
    pub seed: u64,
    /// The nemesis' choices (which node, how long); the clients have their own streams.
    pub rng: StdRng,
    pub cluster: ProcessCluster,
    /// The gateway two of the clients go through (held so it keeps serving).
    _gw: TestGateway,
    pub shared: Arc<RunState>,
    /// Clients of the nodes by process index (a node keeps its address across restarts).
    pub nodes: Vec<NodeClient>,
    /// The test's own recording client (process [`NEMESIS`]), direct to the nodes.
    pub own: Client,
    /// Jobs the test submitted for itself that run until it kills them (or a fault ends them).
    pub long_jobs: Vec<String>,
    /// Nodes (by index) SIGSTOPped right now.
    paused: BTreeSet<usize>,
    /// The partitions between nodes (made at the first cut).
    firewall: Option<Firewall>,
    /// Nodes (by index) counted down while cut off by the firewall.
    cut_off: BTreeSet<usize>,
    /// The node id each process index runs under now (`None` after a wipe, until it rejoins).
    ids: BTreeMap<usize, Option<u64>>,
    /// When each node id was down (paused, killed; wiped for good), for the liveness check.
    down: Vec<Down>,
    clients: Vec<JoinHandle<()>>,
    launch_log: PathBuf,
    _logdir: tempfile::TempDir,
    started: Instant,
    started_wall: std::time::SystemTime,
    /// What the faults showed (failover times, …), for the final report line.
    figures: Vec<String>,
}

/// A stretch of time (seconds since the run began) a node id was not running: paused or
/// killed; `to: None` while it lasts, or forever for the id of a wiped node.
#[derive(Debug, Clone, Copy)]
struct Down {
    id: u64,
    from: f64,
    to: Option<f64>,
}

/// How long after a node came back it may still be declared lost: its heartbeats reach the
/// leader within a second or two, unless its return sets off an election first (a paused
/// follower wakes up with its election timer expired), which takes a few seconds more.
const LOST_GRACE_SECONDS: f64 = 6.0;

/// A checked run (every invariant held): its seed and history.
pub struct Verdict {
    pub seed: u64,
    pub history: History,
    /// The checker's report (valid: a run with a violation ends in an error instead).
    pub report: checker::Report,
}

impl Verdict {
    /// A failure of a property the test checks on top of the checker's: dumps the history and
    /// names the seed.
    pub fn violation(&self, what: &str, excerpt: &[&Event]) -> anyhow::Error {
        let path = dump(&self.history, self.seed);
        let lines: Vec<String> = excerpt
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        anyhow::anyhow!(
            "chaos seed {seed}: {what} (replay with LAUNCHER_CHAOS_SEED={seed}; history in {path}):\n{}",
            lines.join("\n"),
            seed = self.seed
        )
    }
}

impl Chaos {
    /// Starts a run: the cluster (`tweak` may adjust its options), the gateway and the clients.
    pub async fn start(name: &'static str, tweak: impl FnOnce(&mut ClusterOpts)) -> anyhow::Result<Chaos> {
        Chaos::start_seeded(name, seed(), tweak).await
    }

    /// [`Chaos::start`] with the given seed.
    pub async fn start_seeded(
        name: &'static str,
        seed: u64,
        tweak: impl FnOnce(&mut ClusterOpts),
    ) -> anyhow::Result<Chaos> {
        init_tracing();
        eprintln!("chaos {name}: seed {seed} (replay with LAUNCHER_CHAOS_SEED={seed})");
        let logdir = tempfile::Builder::new().prefix("launcher-chaos-").tempdir()?;
        let launch_log = logdir.path().join("launches.log");
        let mut opts = ClusterOpts {
            // Every node's plugin appends one line per job it launches to the same log.
            plugin: TestPlugin::Scripted(format!("run-seconds=1\nlaunch-log={}\n", launch_log.display())),
            ..Default::default()
        };
        tweak(&mut opts);
        let started = Instant::now();
        let cluster = ProcessCluster::start(NODES, opts).await?;
        eprintln!("chaos {name}: cluster up in {:?}", started.elapsed());
        let gw = TestGateway::start(&cluster, |c| c.server.request_timeout_seconds = 10).await?;
        let shared = RunState::new(seed);
        let nodes: Vec<NodeClient> = (1..=NODES).map(|i| cluster.client(i)).collect();
        let mut clients = Vec::new();
        for p in 1..=3u32 {
            let target = Target::Direct {
                nodes: nodes.clone(),
                at: p as usize - 1,
            };
            clients.push(tokio::spawn(Client::new(p, target, shared.clone()).run()));
        }
        for p in 4..=5u32 {
            let target = Target::Gateway(gw.client("admin"));
            clients.push(tokio::spawn(Client::new(p, target, shared.clone()).run()));
        }
        let own = Client::new(
            NEMESIS,
            Target::Direct {
                nodes: nodes.clone(),
                at: 0,
            },
            shared.clone(),
        );
        Ok(Chaos {
            name,
            seed,
            rng: StdRng::seed_from_u64(seed),
            cluster,
            _gw: gw,
            shared,
            nodes,
            own,
            long_jobs: Vec::new(),
            paused: BTreeSet::new(),
            firewall: None,
            cut_off: BTreeSet::new(),
            ids: (1..=NODES).map(|i| (i, Some(i as u64))).collect(),
            down: Vec::new(),
            clients,
            launch_log,
            _logdir: logdir,
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            figures: Vec::new(),
        })
    }

    /// Records a note in the history (a fault, a phase) and prints it with the run's time.
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("chaos {} +{:.1?}: {text}", self.name, self.started.elapsed());
        self.shared.recorder.note(text);
    }

    /// Records a note that also goes into the final report line.
    pub fn figure(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.note(text.clone());
        self.figures.push(text);
    }

    /// Acknowledged submits so far.
    pub fn acked(&self) -> usize {
        self.shared.acked()
    }

    /// Waits until `n` submits were acknowledged in all.
    pub async fn wait_acked(&self, n: usize) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        wait_until(&format!("{n} acknowledged submits"), DEADLINE, || {
            let shared = shared.clone();
            async move { Ok((shared.acked() >= n).then_some(())) }
        })
        .await
    }

    /// Waits until `k` more submits were acknowledged.
    pub async fn wait_more_acked(&self, k: usize) -> anyhow::Result<()> {
        self.wait_acked(self.acked() + k).await
    }

    /// Node `i`'s status, if it answers within a second.
    pub async fn status_of(&self, i: usize) -> Option<StatusReply> {
        tokio::time::timeout(ASK, self.cluster.client(i).status())
            .await
            .ok()?
            .ok()
    }

    /// The process index of node id `id`, from a status that lists the members' addresses.
    pub fn index_of(&self, st: &StatusReply, id: u64) -> Option<usize> {
        let addr = &st.nodes.iter().find(|n| n.id == id)?.address;
        self.cluster
            .nodes
            .iter()
            .find(|n| &n.addr() == addr)
            .map(|n| n.index)
    }

    /// Indexes of the nodes that run and are not paused.
    pub fn live(&mut self) -> Vec<usize> {
        let paused = self.paused.clone();
        self.cluster
            .running()
            .into_iter()
            .filter(|i| !paused.contains(i))
            .collect()
    }

    /// The leader as a live node reports it: (node id, process index); never a paused node.
    pub async fn leader(&mut self) -> anyhow::Result<(u64, usize)> {
        let live = self.live();
        let this = &*self;
        wait_until("a leader that is not paused", DEADLINE, || {
            let live = live.clone();
            async move {
                for i in live {
                    if let Some(st) = this.status_of(i).await {
                        if st.leader == 0 || st.status == "Red" {
                            continue;
                        }
                        if let Some(at) = this.index_of(&st, st.leader) {
                            if !this.paused.contains(&at) {
                                return Ok(Some((st.leader, at)));
                            }
                        }
                    }
                }
                Ok(None)
            }
        })
        .await
    }

    fn went_down(&mut self, i: usize) {
        if let Some(id) = self.ids[&i] {
            let from = self.started.elapsed().as_secs_f64();
            self.down.push(Down { id, from, to: None });
        }
    }

    fn came_back(&mut self, i: usize) {
        let now = self.started.elapsed().as_secs_f64();
        if let Some(id) = self.ids[&i] {
            for d in self.down.iter_mut().filter(|d| d.id == id && d.to.is_none()) {
                d.to = Some(now);
            }
        }
    }

    /// SIGSTOP node `i` (returns once the kernel shows it stopped).
    pub async fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.went_down(i);
        self.cluster.pause(i).await?;
        self.paused.insert(i);
        Ok(())
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster.resume(i)?;
        self.paused.remove(&i);
        self.came_back(i);
        Ok(())
    }

    /// Drops every packet between node `i` and each of `others`, both ways, for as long as
    /// the run lasts or until [`Chaos::heal`]. The nodes in `down` count as down meanwhile (the
    /// ones that may lose the leader and be declared lost).
    pub fn cut(&mut self, i: usize, others: &[usize], down: &[usize]) -> anyhow::Result<()> {
        let fw = match &mut self.firewall {
            Some(fw) => fw,
            none => none.insert(Firewall::new()?),
        };
        let host = |n: usize| self.cluster.nodes[n - 1].host.clone();
        for &j in others {
            fw.cut(&host(i), &host(j))?;
        }
        for &n in down {
            if self.cut_off.insert(n) {
                self.went_down(n);
            }
        }
        Ok(())
    }

    /// Node `i` can reach no other node, nor they it (clients still reach every node).
    pub fn isolate(&mut self, i: usize) -> anyhow::Result<()> {
        let others: Vec<usize> = (1..=NODES).filter(|n| *n != i).collect();
        self.cut(i, &others, &[i])
    }

    /// Ends every partition.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(fw) = &mut self.firewall {
            fw.heal()?;
        }
        for n in std::mem::take(&mut self.cut_off) {
            self.came_back(n);
        }
        Ok(())
    }

    /// Stops node `i` gracefully (SIGTERM).
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        self.went_down(i);
        self.cluster.terminate(i).await?;
        Ok(())
    }

    /// Waits until node `i` exits by itself (a fatal error); returns how it exited.
    pub async fn wait_exit(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        let status = self.cluster.wait_exit(i).await;
        self.went_down(i);
        status
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.went_down(i);
        self.cluster.kill(i);
    }

    /// Deletes the data of node `i` (killed): the id it ran under is gone for good.
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster.wipe(i)?;
        self.ids.insert(i, None);
        Ok(())
    }

    /// Restarts node `i` (killed) with whatever data it has.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster.restart(i).await?;
        self.came_back(i);
        Ok(())
    }

    /// Node `i` (wiped) rejoined under node id `id`.
    pub fn rejoined(&mut self, i: usize, id: u64) {
        self.ids.insert(i, Some(id));
    }

    /// Waits until every node is a healthy voter again (no node may be paused).
    pub async fn wait_green(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.paused.is_empty(), "nodes {:?} are paused", self.paused);
        anyhow::ensure!(self.cut_off.is_empty(), "nodes {:?} are cut off", self.cut_off);
        self.cluster.wait_green(NODES).await?;
        Ok(())
    }

    /// Submits `n` jobs that run until the test kills them (`sleep 600`), privately (the
    /// random clients never control them), and waits until each runs. Returns their ids.
    pub async fn submit_long_jobs(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let name = format!("long-{}", self.long_jobs.len() + 1);
            let id = self
                .own
                .submit_command(&name, "sleep 600", 6, super::workload::Visibility::Private)
                .await
                .ok_or_else(|| anyhow::anyhow!("the long job {name} was never acknowledged"))?;
            self.long_jobs.push(id.clone());
            ids.push(id);
        }
        for id in &ids {
            self.wait_status(id, |s, _| s == "Running").await?;
        }
        Ok(ids)
    }

    /// Waits until job `id` satisfies `want(status, statusMessage)` in a recorded linearizable
    /// get from a live node; returns the job.
    pub async fn wait_status(
        &mut self,
        id: &str,
        want: impl Fn(&str, &str) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let live = self.live();
        let (shared, nodes) = (self.shared.clone(), self.nodes.clone());
        let want = &want;
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let last = &last;
        let r = wait_until(
            &format!("job {id} to reach the expected status"),
            DEADLINE,
            || {
                let (shared, nodes, live) = (shared.clone(), nodes.clone(), live.clone());
                async move {
                    for i in live {
                        if let Some(job) =
                            super::workload::record_get(&shared, NEMESIS, &nodes[i - 1], id).await
                        {
                            let status = job["status"].as_str().unwrap_or_default().to_string();
                            let message = job["statusMessage"].as_str().unwrap_or_default().to_string();
                            let ok = want(&status, &message);
                            *last.lock().expect("last job") = job.clone();
                            return Ok(ok.then_some(job));
                        }
                    }
                    Ok(None)
                }
            },
        )
        .await;
        r.map_err(|e| anyhow::anyhow!("{e}; last seen: {}", last.lock().expect("last job")))
    }

    /// Jobs of ours (`launcher-job:<id>` tags) the scripted plugin of node `i` holds, with their
    /// status there, from the plugin's own state file.
    pub fn plugin_jobs(&self, i: usize) -> Vec<(String, String)> {
        // The node gives each cluster's plugin a scratch path of its own: `<scratch>/<plugin>`.
        let path = self.cluster.nodes[i - 1]
            .dir
            .join("scratch/local/scripted-plugin-local.json");
        let state: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        for rec in state["jobs"].as_array().into_iter().flatten() {
            let job = &rec["job"];
            let tag = job["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .find_map(|t| t.strip_prefix("launcher-job:"));
            if let Some(id) = tag {
                out.push((
                    id.to_string(),
                    job["status"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }

    /// Which node (by index) runs each of the test's long jobs that its plugin still runs.
    pub fn long_jobs_by_node(&self) -> BTreeMap<usize, Vec<String>> {
        let mut by = BTreeMap::new();
        for i in 1..=NODES {
            for (id, status) in self.plugin_jobs(i) {
                if self.long_jobs.contains(&id) && status == "Running" {
                    by.entry(i).or_insert_with(Vec::new).push(id);
                }
            }
        }
        by
    }

    /// The process id of node `i`'s scripted plugin.
    pub fn plugin_pid(&self, i: usize) -> Option<i32> {
        self.cluster.nodes[i - 1].plugin_pids().into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("scripted-plugin"))
                .unwrap_or(false)
        })
    }

    /// Ends the run: stops the clients, kills the long jobs, waits until every job ended and
    /// the nodes agree on one applied index, takes final listings from every node, adds the
    /// launch log and checks the history. Fails on any violation (printing the seed and the
    /// excerpts) or when fewer than `min_acked` submits were acknowledged.
    pub async fn finish(mut self, min_acked: usize) -> anyhow::Result<Verdict> {
        anyhow::ensure!(self.paused.is_empty(), "nodes {:?} are still paused", self.paused);
        anyhow::ensure!(
            self.cut_off.is_empty(),
            "nodes {:?} are still cut off",
            self.cut_off
        );
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in std::mem::take(&mut self.clients) {
            // Each stops within one operation's client-side deadline.
            c.await?;
        }
        self.note("clients stopped");
        let (_, li) = self.leader().await?;
        let lc = self.cluster.client(li);
        let mut finisher = Client::new(
            FINAL,
            Target::Direct {
                nodes: vec![lc.clone()],
                at: 0,
            },
            self.shared.clone(),
        );
        // Every job ends: runs last at most 2 s; the test's long jobs and jobs left suspended
        // are killed; recorded linearizable listings show it.
        let (shared, long) = (self.shared.clone(), self.long_jobs.clone());
        let finisher = &tokio::sync::Mutex::new(&mut finisher);
        wait_until("every job to end", DEADLINE, || {
            let (shared, lc, long) = (shared.clone(), lc.clone(), long.clone());
            async move {
                let label = lc.addr.clone();
                let Some(Outcome::Listed { jobs, .. }) =
                    record_list(&shared, FINAL, &lc, &label, Read::linearizable()).await
                else {
                    return Ok(None);
                };
                let mut finisher = finisher.lock().await;
                for j in &jobs {
                    if j.status == "Suspended"
                        || (long.iter().any(|l| l == j.id.as_str()) && !terminal(&j.status))
                    {
                        let _ = finisher.control_job(&j.id, "kill").await;
                    }
                }
                Ok(jobs.iter().all(|j| terminal(&j.status)).then_some(()))
            }
        })
        .await?;
        // Then the nodes settle on one applied index, where their stale listings must agree.
        let (shared, nodes) = (self.shared.clone(), self.nodes.clone());
        wait_until("every node at one applied index", DEADLINE, || {
            let (shared, nodes) = (shared.clone(), nodes.clone());
            async move {
                let mut indexes = Vec::new();
                for n in &nodes {
                    if let Some(o) = record_list(&shared, FINAL, n, &n.addr, Read::stale(0)).await {
                        indexes.push(o.index());
                    }
                }
                Ok((indexes.len() == nodes.len() && indexes.windows(2).all(|w| w[0] == w[1])).then_some(()))
            }
        })
        .await?;
        for n in &self.nodes {
            record_list(&self.shared, FINAL, n, &n.addr, Read::linearizable()).await;
        }

        // Which members were declared lost (their jobs failed `node lost`), from the node logs;
        // only a member that was down (paused, killed, wiped) shortly before may be.
        let mut lost = Vec::new();
        let mut wrongly = Vec::new();
        for i in 1..=NODES {
            let log = self.cluster.log(i);
            let lines: Vec<&str> = log.lines().collect();
            for (at, l) in lines.iter().enumerate() {
                if !l.contains("member lost: its local jobs failed") {
                    continue;
                }
                let field = |k: &str| l.split(k).nth(1).and_then(|r| r.split_whitespace().next());
                let node: Option<u64> = field(" node=").and_then(|n| n.parse().ok());
                let t = since_start(l, self.started_wall);
                let text = format!(
                    "node {} ({} jobs) at +{}, written by node index {i}",
                    node.map_or("?".into(), |n| n.to_string()),
                    field(" jobs=").unwrap_or("?"),
                    t.map_or("?".into(), |t| format!("{t:.1}s"))
                );
                let was_down = |n: u64, t: f64| {
                    self.down.iter().any(|d| {
                        d.id == n && d.from <= t + 0.5 && d.to.is_none_or(|to| to + LOST_GRACE_SECONDS >= t)
                    })
                };
                if let (Some(n), Some(t)) = (node, t) {
                    if !was_down(n, t) {
                        let context = lines[at.saturating_sub(12)..=at].join("\n");
                        wrongly.push(format!("{text}; node index {i}'s log up to it:\n{context}"));
                    }
                }
                lost.push(text);
            }
        }
        self.figures.push(format!("declared lost: {lost:?}"));
        if !wrongly.is_empty() {
            let history = self.shared.recorder.history();
            let path = dump(&history, self.seed);
            anyhow::bail!(
                "chaos seed {seed}: members declared lost that were up (down: {:?}; replay with \
                 LAUNCHER_CHAOS_SEED={seed}; history in {path}):\n{}",
                self.down,
                wrongly.join("\n---\n"),
                seed = self.seed
            );
        }
        self.shared
            .recorder
            .add_launch_log(&std::fs::read_to_string(&self.launch_log).unwrap_or_default());
        // The clients have stopped and the final listings are in: nothing more is recorded.
        let history = self.shared.recorder.take();
        let checked = Instant::now();
        let report = checker::check(&history);
        let seed = self.seed;
        eprintln!(
            "chaos {} seed {seed}: ran {:.1?}; {}; checked in {:?}: {report}",
            self.name,
            self.started.elapsed(),
            self.figures.join("; "),
            checked.elapsed()
        );
        if std::env::var_os("LAUNCHER_CHAOS_HISTORY").is_some() {
            eprintln!("chaos seed {seed}: history in {}", dump(&history, seed));
        }
        if !report.is_valid() {
            let path = dump(&history, seed);
            anyhow::bail!(
                "chaos seed {seed}: invariants violated (replay with LAUNCHER_CHAOS_SEED={seed}; history in {path}):\n{report}"
            );
        }
        // Whatever fails under the gateway, it says so with a code a client can act on (13,
        // retry): a 500 is a fault of ours.
        let internal: Vec<&Event> = history
            .events
            .iter()
            .filter(|e| {
                matches!(&e.outcome, Some(Outcome::Error { message, .. }) if message.starts_with("HTTP 500"))
            })
            .collect();
        if !internal.is_empty() {
            let path = dump(&history, seed);
            let lines: Vec<String> = internal
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default())
                .collect();
            anyhow::bail!(
                "chaos seed {seed}: the gateway answered {} requests with 500 Internal Server Error (replay with \
                 LAUNCHER_CHAOS_SEED={seed}; history in {path}):\n{}",
                internal.len(),
                lines.join("\n")
            );
        }
        if let Linearizability::Unknown { reason, .. } = &report.linearizability {
            eprintln!("chaos seed {seed}: linearizability not decided: {reason}");
        }
        anyhow::ensure!(
            self.shared.acked() >= min_acked,
            "chaos seed {seed}: only {} acknowledged submits (want {min_acked})",
            self.shared.acked()
        );
        anyhow::ensure!(
            report.stats.launches > 0 && report.stats.listings > 0,
            "chaos seed {seed}: the run recorded no launches or no listings: {report}"
        );
        Ok(Verdict {
            seed,
            history,
            report,
        })
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        // A failed run must not leave nodes stopped behind (the cluster's own drop kills them,
        // which works on stopped processes too) nor clients running.
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in &self.clients {
            c.abort();
        }
    }
}
