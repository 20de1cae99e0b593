//! SIGKILL of the leader under a recorded concurrent workload.

use std::time::Instant;

use launcher_tests::checker::{self, Linearizability};
use launcher_tests::history::{History, Outcome, Read};
use launcher_tests::{
    init_tracing, wait_until, ClusterOpts, NodeClient, ProcessCluster, TestGateway, TestPlugin, DEADLINE,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::{record_list, Client, Shared, Target};

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 120;
/// Process id of the test's own final reads and clean-up in the history.
const FINAL: u32 = 100;

/// The run's seed: `LAUNCHER_CHAOS_SEED` replays a run, else a fresh one.
fn seed() -> u64 {
    match std::env::var("LAUNCHER_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("LAUNCHER_CHAOS_SEED must be an unsigned integer"),
        Err(_) => rand::random(),
    }
}

/// Writes the history where a failing run can be replayed from: `LAUNCHER_CHAOS_HISTORY`, else
/// the temp dir.
fn dump(history: &History, seed: u64) -> String {
    let path = std::env::var_os("LAUNCHER_CHAOS_HISTORY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("launcher-chaos-{seed}.jsonl")));
    match history.save(&path) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(could not write {}: {e})", path.display()),
    }
}

fn terminal(status: &str) -> bool {
    matches!(status, "Finished" | "Failed" | "Killed" | "Canceled")
}

/// While five clients (three on nodes directly over gRPC, two through the gateway) submit
/// with and without Idempotency-Key, get, list, read statuses and control jobs, the leader is
/// SIGKILLed once and restarted with its data. The recorded history, with the plugin's launch
/// log, keeps every invariant of DESIGN.md §7 as the checker verifies them: no acknowledged
/// job is lost, statuses only move forward and terminal ones never change, listings at one
/// applied index are identical, no job is launched twice, no Idempotency-Key maps to two jobs,
/// no read answers below its floor or goes back in time, and submit/get/list are linearizable.
/// Seeded: the seed is printed, `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_load_keeps_every_invariant() -> anyhow::Result<()> {
    init_tracing();
    let seed = seed();
    eprintln!("chaos seed {seed} (replay with LAUNCHER_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let logdir = tempfile::Builder::new().prefix("launcher-chaos-").tempdir()?;
    let launch_log = logdir.path().join("launches.log");
    let opts = ClusterOpts {
        // Every node's plugin appends one line per job it launches to the same log.
        plugin: TestPlugin::Scripted(format!("run-seconds=1\nlaunch-log={}\n", launch_log.display())),
        ..Default::default()
    };
    let started = Instant::now();
    let mut cluster = ProcessCluster::start(3, opts).await?;
    eprintln!("chaos: cluster up in {:?}", started.elapsed());
    let gw = TestGateway::start(&cluster, |c| c.request_timeout_seconds = 10).await?;
    let shared = Shared::new(seed);
    let nodes: Vec<NodeClient> = (1..=3).map(|i| cluster.client(i)).collect();
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
    let acked_at_least = |n: usize| {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move { Ok((shared.acked() >= n).then_some(())) }
        }
    };

    // The fault: SIGKILL the leader once the workload is under way.
    let kill_after = rng.gen_range(25..45);
    wait_until(
        &format!("{kill_after} acknowledged submits"),
        DEADLINE,
        acked_at_least(kill_after),
    )
    .await?;
    let leader = cluster.wait_for_leader().await?;
    let acked_at_kill = shared.acked();
    shared
        .recorder
        .note(format!("nemesis: SIGKILL node {leader}, the leader"));
    let killed = Instant::now();
    cluster.kill(leader as usize);
    let others: Vec<NodeClient> = (1..=3)
        .filter(|&i| i != leader as usize)
        .map(|i| cluster.client(i))
        .collect();
    let new_leader = wait_until("a new leader", DEADLINE, || {
        let others = others.clone();
        async move {
            for c in &others {
                if let Ok(st) = c.status().await {
                    if st.leader != 0 && st.leader != leader {
                        return Ok(Some(st.leader));
                    }
                }
            }
            Ok(None)
        }
    })
    .await?;
    let elected = killed.elapsed();
    shared
        .recorder
        .note(format!("node {new_leader} leads, {elected:?} after the kill"));
    wait_until(
        "a submit acknowledged after the kill",
        DEADLINE,
        acked_at_least(acked_at_kill + 1),
    )
    .await?;
    let failover = killed.elapsed();
    cluster.restart(leader as usize).await?;
    cluster.wait_green(3).await?;
    shared
        .recorder
        .note(format!("nemesis: node {leader} restarted with its data; Green"));
    let target = MIN_ACKED.max(shared.acked() + 40);
    wait_until(
        &format!("{target} acknowledged submits"),
        DEADLINE,
        acked_at_least(target),
    )
    .await?;
    shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        // Each stops within one operation's client-side deadline.
        c.await?;
    }
    shared.recorder.note("clients stopped");

    // Every job ends (runs last at most 2 s; jobs left suspended are killed), as recorded
    // linearizable listings show.
    let now_leader = cluster.wait_for_leader().await? as usize;
    let lc = cluster.client(now_leader);
    wait_until("every job to end", DEADLINE, || {
        let (shared, lc) = (shared.clone(), lc.clone());
        async move {
            let label = lc.addr.clone();
            let Some(Outcome::Listed { jobs, .. }) =
                record_list(&shared, FINAL, &lc, &label, Read::linearizable()).await
            else {
                return Ok(None);
            };
            let mut finisher = Client::new(
                FINAL,
                Target::Direct {
                    nodes: vec![lc.clone()],
                    at: 0,
                },
                shared.clone(),
            );
            for j in jobs.iter().filter(|j| j.status == "Suspended") {
                finisher.control_job(&j.id, "kill").await;
            }
            Ok(jobs.iter().all(|j| terminal(&j.status)).then_some(()))
        }
    })
    .await?;
    // Then the nodes settle on one applied index, where their stale listings must agree.
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
    for n in &nodes {
        record_list(&shared, FINAL, n, &n.addr, Read::linearizable()).await;
    }

    shared
        .recorder
        .add_launch_log(&std::fs::read_to_string(&launch_log).unwrap_or_default());
    let history = shared.recorder.history();
    let checked = Instant::now();
    let report = checker::check(&history);
    eprintln!(
        "chaos seed {seed}: node {leader} killed; new leader after {elected:?}, first ack after {failover:?}; checked in {:?}: {report}",
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
    if let Linearizability::Unknown { reason, .. } = &report.linearizability {
        eprintln!("chaos seed {seed}: linearizability not decided: {reason}");
    }
    anyhow::ensure!(
        shared.acked() >= MIN_ACKED,
        "only {} acknowledged submits",
        shared.acked()
    );
    anyhow::ensure!(
        report.stats.launches > 0 && report.stats.listings > 0,
        "the run recorded no launches or no listings: {report}"
    );
    Ok(())
}
