//! SIGKILL of the leader under a recorded concurrent workload.

use std::time::Instant;

use rand::Rng;

use super::run::Chaos;

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 120;

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
    let mut run = Chaos::start("leader-kill", |_| {}).await?;

    // The fault: SIGKILL the leader once the workload is under way.
    let kill_after = run.rng.gen_range(25..45);
    run.wait_acked(kill_after).await?;
    let (leader, li) = run.leader().await?;
    let acked_at_kill = run.acked();
    run.note(format!("nemesis: SIGKILL node {leader}, the leader"));
    let killed = Instant::now();
    run.kill(li);
    let new_leader = run.cluster.wait_for_new_leader(leader).await?;
    let elected = killed.elapsed();
    run.note(format!("node {new_leader} leads, {elected:?} after the kill"));
    run.wait_acked(acked_at_kill + 1).await?;
    let failover = killed.elapsed();
    run.figure(format!(
        "node {leader} killed: new leader after {elected:?}, first ack after {failover:?}"
    ));
    run.restart(li).await?;
    run.wait_green().await?;
    run.note(format!("nemesis: node {leader} restarted with its data; Green"));
    let target = MIN_ACKED.max(run.acked() + 40);
    run.wait_acked(target).await?;

    run.finish(MIN_ACKED).await?;
    Ok(())
}
