//! Scale: load 10^3..10^5 (10^6 on request) jobs, time listings of 10^3, 10^4, 10^5 of them
//! (linearizable and stale), resident memory per stored job, snapshot build and install; and
//! the same loads and range reads against etcd.
//!
//! Job `k` of the load carries the tag `s<N>` for every size N with `k < N`, so
//! `GET /jobs?tags=s<N>` returns exactly the first N loaded jobs through the tag index however
//! many other jobs the table holds; etcd's range `[/scale/0…0, /scale/<N>)` likewise returns
//! exactly N keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use launcher_proto::launcher::{ListJobsRequest, ReadOptions, SaveSnapshotRequest};
use launcher_tests::{NodeClient, ProcessCluster};
use serde_json::json;

use super::etcd::{EtcdClient, EtcdCluster, RangeRequest};
use super::{latency, ms, progress, Lat};

/// Concurrent submitters while loading.
pub const LOAD_TASKS: usize = 64;

/// One listing measurement.
pub struct ListRow {
    pub system: &'static str,
    pub consistency: &'static str,
    pub size: usize,
    pub returned: usize,
    pub bytes: usize,
    pub reps: usize,
    pub lat: Lat,
}

/// Memory of one process at one load.
pub struct MemRow {
    pub system: &'static str,
    /// Items loaded by the scale phase so far.
    pub loaded: usize,
    /// Items stored in all (ours: jobs the table holds; etcd: keys).
    pub stored: u64,
    pub rss_kib: u64,
    pub base_rss_kib: u64,
    pub base_loaded: usize,
}

impl MemRow {
    /// Resident bytes added per item loaded since the baseline.
    pub fn per_item(&self) -> f64 {
        (self.rss_kib as f64 - self.base_rss_kib as f64) * 1024.0
            / (self.loaded - self.base_loaded).max(1) as f64
    }
    /// Resident bytes over all stored items (includes the process's fixed cost).
    pub fn per_stored(&self) -> f64 {
        self.rss_kib as f64 * 1024.0 / self.stored.max(1) as f64
    }
}

/// Loading time of one tranche.
pub struct LoadRow {
    pub system: &'static str,
    pub from: usize,
    pub to: usize,
    pub elapsed: Duration,
    /// Time after the last acknowledgement until the cluster stopped committing (our launch
    /// follow-ups of the loaded jobs).
    pub settle: Duration,
}

impl LoadRow {
    pub fn rate(&self) -> f64 {
        (self.to - self.from) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Snapshot figures at the largest load.
pub struct SnapshotFig {
    pub jobs: u64,
    /// `SaveSnapshot` on the leader: capture under the read lock, fsynced file, streamed back.
    pub export: Duration,
    pub export_bytes: usize,
    /// Snapshot file size on the leader after its last automatic build.
    pub leader_snapshot_bytes: u64,
    /// A new node joining: start → "installed snapshot" in its log (`None`: it caught up from
    /// the log, no snapshot needed).
    pub install: Option<Duration>,
    /// Start → the new node reports (Status) the leader's index at its start as applied.
    pub caught_up: Duration,
    /// Jobs the new node's table held at that moment (its `/metrics`).
    pub visible_at_caught_up: u64,
    /// Start → the new node's table holds every job the leader's did.
    pub populated: Option<Duration>,
    /// Peak resident size (VmHWM) of the new node once its table holds every job, KiB.
    pub newcomer_peak_rss_kib: Option<u64>,
    /// Peak resident size (VmHWM) of the leader after sending the snapshot, KiB.
    pub leader_peak_rss_kib: Option<u64>,
}

/// Tags of loaded job `k`.
fn tags_of(k: usize, sizes: &[usize]) -> Vec<String> {
    sizes
        .iter()
        .filter(|&&s| k < s)
        .map(|s| format!("s{s}"))
        .collect()
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// VmHWM (the peak resident size since it started) of a process, KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} for process {pid}"))
}

/// A node's `/metrics`, summed by metric name (labels dropped).
pub async fn node_metrics(addr: &str) -> anyhow::Result<HashMap<String, f64>> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name).to_string();
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

/// Waits until the leader's applied index stops moving for a second (launch follow-ups of
/// loaded jobs drained), at most `max`.
pub async fn settle(client: &NodeClient, max: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut last = client.status().await?.applied_index;
    let mut still = 0;
    while t0.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = client.status().await?.applied_index;
        if now == last {
            still += 1;
            if still >= 4 {
                break;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    Ok(t0.elapsed())
}

/// Runs `put(k)` for every `k` in `from..to` from [`LOAD_TASKS`] tasks, each try bounded by 30 s
/// and retried up to 10 times; `what` names the load on the progress bar and in errors.
async fn load<F, Fut>(what: String, from: usize, to: usize, put: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let bar = progress::counter((to - from) as u64, &format!("{what} {from}..{to}"));
    let next = Arc::new(AtomicUsize::new(from));
    let t0 = Instant::now();
    let tasks = (0..LOAD_TASKS).map(|_| {
        let (put, next, bar, what) = (put.clone(), next.clone(), bar.clone(), what.clone());
        tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= to {
                    return anyhow::Ok(());
                }
                let mut tries = 0;
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), put(k)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) if tries < 10 => {
                            tries += 1;
                            tracing::debug!("{what} {k} failed, retrying: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(Err(e)) => bail!("{what} {k}: {e}"),
                        Err(_) if tries < 10 => tries += 1,
                        Err(_) => bail!("{what} {k}: timed out 10 times"),
                    }
                }
                bar.inc(1);
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.context("a load task panicked")??;
    }
    progress::finish(bar);
    Ok(t0.elapsed())
}

/// Submits jobs `from..to` of the scale load to `client` from [`LOAD_TASKS`] tasks.
pub async fn load_ours(
    client: &NodeClient,
    from: usize,
    to: usize,
    sizes: &[usize],
) -> anyhow::Result<Duration> {
    let (client, sizes) = (client.clone(), Arc::new(sizes.to_vec()));
    load("launcher: jobs".into(), from, to, move |k| {
        let (client, sizes) = (client.clone(), sizes.clone());
        async move {
            let body = json!({
                "name": format!("scale-{k}"),
                "cluster": "Local",
                "command": "echo hello",
                "tags": tags_of(k, &sizes),
            });
            client.submit(&body).await?;
            Ok(())
        }
    })
    .await
}

/// Puts keys `from..to` of the etcd scale load, each with `value`.
pub async fn load_etcd(
    client: &EtcdClient,
    from: usize,
    to: usize,
    value: &[u8],
) -> anyhow::Result<Duration> {
    let (client, value) = (client.clone(), Arc::new(value.to_vec()));
    load("etcd: keys".into(), from, to, move |k| {
        let (client, value) = (client.clone(), value.clone());
        async move {
            client.put(scale_key(k), value.to_vec()).await?;
            Ok(())
        }
    })
    .await
}

fn scale_key(k: usize) -> Vec<u8> {
    format!("/scale/{k:012}").into_bytes()
}

/// Repetitions of a listing of `size` jobs.
pub fn reps_for(size: usize) -> usize {
    match size {
        0..=1_000 => 20,
        1_001..=10_000 => 10,
        10_001..=100_000 => 5,
        _ => 3,
    }
}

/// Times `reps` calls of `op` (which returns items and bytes) one after another.
async fn timed<F, Fut>(reps: usize, op: F) -> anyhow::Result<(usize, usize, Lat)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(usize, usize)>>,
{
    // One untimed call first: connections set up, caches as a steady reader would find them.
    let (mut items, mut bytes) = op().await?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        (items, bytes) = op().await?;
        samples.push(t0.elapsed());
    }
    Ok((items, bytes, latency(&mut samples)))
}

/// Our listings of the `size` first loaded jobs, gRPC to `node` and HTTP through the gateway,
/// linearizable and stale.
pub async fn list_ours(
    node: &NodeClient,
    node_label: &'static str,
    http: &launcher_tests::Http,
    size: usize,
) -> anyhow::Result<Vec<ListRow>> {
    let reps = reps_for(size);
    let tag = format!("s{size}");
    let mut out = Vec::new();
    for stale in [false, true] {
        let (n, t) = (node.clone(), tag.clone());
        let (returned, bytes, lat) = timed(reps, move || {
            let (n, t) = (n.clone(), t.clone());
            async move {
                let (_, jobs) = n
                    .list(ListJobsRequest {
                        user: "*".into(),
                        tags: vec![t],
                        read: Some(ReadOptions {
                            consistency: i32::from(stale),
                            min_index: 0,
                        }),
                        ..Default::default()
                    })
                    .await?;
                Ok((jobs.len(), jobs.iter().map(Vec::len).sum()))
            }
        })
        .await?;
        out.push(ListRow {
            system: node_label,
            consistency: if stale { "stale" } else { "linearizable" },
            size,
            returned,
            bytes,
            reps,
            lat,
        });
        let path = format!(
            "/jobs?user=*&tags={tag}{}",
            if stale { "&consistency=stale" } else { "" }
        );
        let h = http.clone();
        let (_, bytes, lat) = timed(reps, move || {
            let (h, path) = (h.clone(), path.clone());
            async move {
                let r = h.req(reqwest::Method::GET, &path).send().await?;
                anyhow::ensure!(r.status() == 200, "GET {path}: status {}", r.status());
                let body = r.bytes().await?;
                Ok((0, body.len()))
            }
        })
        .await?;
        // Counted outside the timed calls: parsing 10^5 jobs here is the client's cost.
        let (code, body) = http
            .get(&format!(
                "/jobs?user=*&tags={tag}{}&fields=id",
                if stale { "&consistency=stale" } else { "" }
            ))
            .await?;
        anyhow::ensure!(code == 200, "GET /jobs?fields=id: {code}");
        let returned = body.as_array().map_or(0, Vec::len);
        out.push(ListRow {
            system: "launcher GET /jobs, HTTP → gateway",
            consistency: if stale { "stale" } else { "linearizable" },
            size,
            returned,
            bytes,
            reps,
            lat,
        });
    }
    Ok(out)
}

/// etcd range reads of the first `size` loaded keys, linearizable and serializable.
pub async fn list_etcd(client: &EtcdClient, size: usize) -> anyhow::Result<Vec<ListRow>> {
    let reps = reps_for(size);
    let mut out = Vec::new();
    for serializable in [false, true] {
        let c = client.clone();
        let (returned, bytes, lat) = timed(reps, move || {
            let c = c.clone();
            async move {
                let r = c
                    .range(RangeRequest {
                        key: scale_key(0),
                        range_end: scale_key(size),
                        limit: 0,
                        serializable,
                    })
                    .await?;
                Ok((
                    r.kvs.len(),
                    r.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum(),
                ))
            }
        })
        .await?;
        out.push(ListRow {
            system: "etcd Range, gRPC → leader",
            consistency: if serializable { "stale" } else { "linearizable" },
            size,
            returned,
            bytes,
            reps,
            lat,
        });
    }
    Ok(out)
}

/// Snapshot export on the leader, then a new node installs the leader's snapshot.
pub async fn snapshot(cluster: &mut ProcessCluster, leader: usize) -> anyhow::Result<SnapshotFig> {
    use futures::StreamExt;
    let lc = cluster.client(leader);
    let laddr = cluster.nodes[leader - 1].addr();
    let m = node_metrics(&laddr).await?;
    let jobs = m.get("launcher_node_jobs").copied().unwrap_or(0.0) as u64;
    let leader_snapshot_bytes = m.get("launcher_node_snapshot_bytes").copied().unwrap_or(0.0) as u64;

    progress::log("      snapshot export (SaveSnapshot) on the leader ...");
    let t0 = Instant::now();
    let mut stream = lc
        .rpc()
        .save_snapshot(SaveSnapshotRequest {
            caller: Some(launcher_tests::client::admin()),
        })
        .await?
        .into_inner();
    let mut export_bytes = 0;
    while let Some(part) = stream.next().await {
        export_bytes += part?.data.len();
    }
    let export = t0.elapsed();
    progress::log(format!(
        "      exported {export_bytes} bytes in {:.0} ms",
        ms(export)
    ));

    // A node joining now starts with an empty log; the leader's log is purged behind its
    // snapshot, so the newcomer must install that snapshot. (A member that was merely down
    // does not: openraft postpones purging while a replication to it is in flight, so it
    // catches up from the log.)
    let target = lc.status().await?.applied_index;
    let r0 = Instant::now();
    let wall0 = std::time::SystemTime::now();
    progress::log(format!(
        "      adding a 4th node; the leader is at index {target}, snapshot at {}",
        m.get("launcher_node_raft_snapshot_index").copied().unwrap_or(0.0)
    ));
    let newcomer = cluster.add_node(false).await?;
    let nc = cluster.client(newcomer);
    let log_path = cluster.nodes[newcomer - 1].log_path();
    let naddr = cluster.nodes[newcomer - 1].addr();
    let (caught_up, visible) = loop {
        if let Ok(st) = nc.status().await {
            if st.applied_index >= target {
                let at = r0.elapsed();
                // What its table holds at that moment (counters `apply` maintains).
                let visible = node_metrics(&naddr)
                    .await
                    .ok()
                    .and_then(|m| m.get("launcher_node_jobs").copied())
                    .unwrap_or(0.0) as u64;
                break (at, visible);
            }
        }
        if r0.elapsed() > Duration::from_secs(300) {
            bail!(
                "the new node {newcomer} did not catch up within 5 minutes\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Until its table really holds every job (the Status index can run ahead of an
    // install in progress), then the install's own log line (written a little later).
    let mut populated = None;
    while r0.elapsed() < Duration::from_secs(300) {
        let held = node_metrics(&naddr)
            .await
            .ok()
            .and_then(|m| m.get("launcher_node_jobs").copied())
            .unwrap_or(0.0) as u64;
        if held >= jobs {
            populated = Some(r0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut install = None;
    let wait_log = Instant::now();
    while install.is_none() && wait_log.elapsed() < Duration::from_secs(5) {
        install = logged_at(&log_path, "installed snapshot").map(|t| since(wall0, t));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newcomer_peak_rss_kib = cluster.nodes[newcomer - 1]
        .pid()
        .and_then(|p| peak_rss_kib(p).ok());
    let leader_peak_rss_kib = cluster.nodes[leader - 1].pid().and_then(|p| peak_rss_kib(p).ok());
    // Back to three voters for what follows.
    let new_id = nc.status().await?.node_id;
    wait_until_ok("removing the 4th node", || lc.remove_member(new_id)).await?;
    cluster.kill(newcomer);
    cluster.wait_green(3).await?;
    Ok(SnapshotFig {
        jobs,
        export,
        export_bytes,
        leader_snapshot_bytes,
        install,
        caught_up,
        visible_at_caught_up: visible,
        populated,
        newcomer_peak_rss_kib,
        leader_peak_rss_kib,
    })
}

/// Retries `op` (a membership change may be in flight) for up to a minute.
async fn wait_until_ok<T, F, Fut>(what: &str, op: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let t0 = Instant::now();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                tracing::debug!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

/// Seconds since the Unix epoch of the first log line containing `needle` (tracing's
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` prefix, UTC).
fn logged_at(path: &std::path::Path, needle: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.contains(needle))?;
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let (y, mo) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s)
}

fn since(start: std::time::SystemTime, at: f64) -> Duration {
    let s = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    Duration::from_secs_f64((at - s).max(0.0))
}

/// The etcd cluster's leader index and a client of it.
pub async fn etcd_leader(etcd: &mut EtcdCluster) -> anyhow::Result<(usize, EtcdClient)> {
    let i = etcd.wait_leader(Duration::from_secs(30)).await?;
    Ok((i, etcd.client(i)?))
}
