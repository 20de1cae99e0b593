//! Crashes under a recorded concurrent workload: a plugin killed under running jobs, a node
//! restarted with wiped data, and the whole cluster killed at once.

use std::collections::BTreeSet;
use std::time::Instant;

use launcher_tests::history::{Outcome, Read};
use launcher_tests::{wait_until, DEADLINE};
use rand::Rng;

use launcher_tests::chaos::phases::plugin_kill;
use launcher_tests::chaos::run::{Chaos, NEMESIS, NODES};
use launcher_tests::chaos::workload::record_list;

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 100;
/// Long jobs submitted per round (placement spreads them over the nodes).
const LONG_JOBS: usize = 6;

/// While five clients keep submitting, reading and controlling jobs, and the test keeps a few
/// long jobs of its own running:
/// 1. the scripted plugin of a node that runs long jobs is SIGKILLed: the node restarts it and
///    reconciles, its long jobs still run there (a kill reaches them through the new plugin);
/// 2. a node (index 2 or 3, seeded) that runs long jobs is SIGKILLed, its data wiped and it
///    is restarted: it rejoins under a new node id, its old id leaves the membership, and the
///    jobs its old incarnation owned end `Failed` with `node lost` (the scripted plugin's
///    cluster is not a shared scheduler);
/// 3. all three nodes are SIGKILLed at once and restarted with their data: every job
///    acknowledged before the crash is listed after it.
///
/// Throughout, the history and the launch log keep every invariant of docs/guarantees.md as the
/// checker verifies them, in particular no acknowledged job is lost and no job is launched
/// twice (not by the restarted plugin, the wiped node or the restarted cluster). Seeded: the
/// seed is printed, `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_kill_wiped_node_and_full_crash_keep_every_invariant() -> anyhow::Result<()> {
    let mut run = Chaos::start("crashes", |_| {}).await?;
    let first = run.rng.gen_range(15..30);
    run.wait_acked(first).await?;
    run.submit_long_jobs(LONG_JOBS).await?;
    let by_node = run.long_jobs_by_node();
    run.note(format!("long jobs by node index: {by_node:?}"));

    // 1. The plugin of a node running long jobs is killed.
    plugin_kill(&mut run, &by_node).await?;
    let more = run.rng.gen_range(10..20);
    run.wait_more_acked(more).await?;

    // 2. A node running long jobs is wiped and comes back as a new member.
    let mut by_node = run.long_jobs_by_node();
    for _ in 0..2 {
        if by_node.keys().any(|i| *i >= 2) {
            break;
        }
        // Index 1 has no join address to come back through; make 2 or 3 run long jobs too.
        run.submit_long_jobs(LONG_JOBS).await?;
        by_node = run.long_jobs_by_node();
    }
    let candidates: Vec<usize> = by_node.keys().copied().filter(|i| *i >= 2).collect();
    anyhow::ensure!(
        !candidates.is_empty(),
        "nodes 2 and 3 run no long job: {by_node:?}"
    );
    let vi = candidates[run.rng.gen_range(0..candidates.len())];
    let doomed = by_node[&vi].clone();
    let (leader, _) = run.leader().await?;
    let old_id = run
        .status_of(vi)
        .await
        .map(|st| st.node_id)
        .ok_or_else(|| anyhow::anyhow!("node index {vi} does not answer"))?;
    let role = if old_id == leader { ", the leader," } else { "" };
    run.note(format!(
        "nemesis: SIGKILL node {old_id}{role} (index {vi}) and wipe its data; it runs long jobs {doomed:?}"
    ));
    let wiped = Instant::now();
    run.kill(vi);
    run.wipe(vi)?;
    run.restart(vi).await?;
    let c = run.cluster.client(vi);
    let new_id = wait_until("the wiped node to rejoin under a new id", DEADLINE, || {
        let c = c.clone();
        async move {
            let st = tokio::time::timeout(std::time::Duration::from_secs(1), c.status()).await;
            let Ok(Ok(st)) = st else { return Ok(None) };
            let ids: BTreeSet<u64> = st.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
            let back = st.node_id != 0
                && st.node_id != old_id
                && st.status == "Green"
                && ids.len() == NODES
                && ids.contains(&st.node_id)
                && !ids.contains(&old_id);
            Ok(back.then_some(st.node_id))
        }
    })
    .await?;
    let rejoined = wiped.elapsed();
    run.rejoined(vi, new_id);
    run.note(format!(
        "node index {vi} rejoined as node {new_id} after {rejoined:?}; node {old_id} left the membership"
    ));
    for id in &doomed {
        run.wait_status(id, |s, m| s == "Failed" && m == "node lost")
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "chaos seed {}: job {id} of node {old_id}, wiped and rejoined as node {new_id}, did not end \
                     Failed \"node lost\": {e}",
                    run.seed
                )
            })?;
    }
    let lost_after = wiped.elapsed();
    run.figure(format!(
        "node {old_id}{role} wiped: rejoined as node {new_id} after {rejoined:.1?}; its {} long jobs Failed \
         \"node lost\" {lost_after:.1?} after the kill",
        doomed.len()
    ));
    run.wait_green().await?;

    // 3. The whole cluster crashes and restarts with its data.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let acked_before: Vec<String> = {
        let mut ids = run.shared.known.lock().expect("known ids").clone();
        ids.extend(run.long_jobs.iter().cloned());
        ids
    };
    let acked = run.acked();
    run.note("nemesis: SIGKILL all three nodes");
    let crashed = Instant::now();
    for i in 1..=NODES {
        run.kill(i);
    }
    for i in 1..=NODES {
        run.restart(i).await?;
    }
    run.wait_green().await?;
    let green = crashed.elapsed();
    let (_, li) = run.leader().await?;
    let lc = run.cluster.client(li);
    let listed = record_list(&run.shared, NEMESIS, &lc, &lc.addr, Read::linearizable()).await;
    let Some(Outcome::Listed { jobs, index, .. }) = listed else {
        anyhow::bail!("chaos seed {}: no listing after the cluster restarted", run.seed);
    };
    let ids: BTreeSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let missing: Vec<&String> = acked_before
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "chaos seed {}: acknowledged jobs missing after the full-cluster crash (listing at index {index}): {missing:?}",
        run.seed
    );
    run.wait_acked(acked + 1).await?;
    let first_ack = crashed.elapsed();
    run.figure(format!(
        "full crash: Green after {green:.1?}, first ack after {first_ack:.1?}; all {} jobs acknowledged before \
         it listed after it",
        acked_before.len()
    ));

    let target = MIN_ACKED.max(run.acked() + 20);
    run.wait_acked(target).await?;
    run.finish(MIN_ACKED).await?;
    Ok(())
}
