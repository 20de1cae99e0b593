//! SIGKILL of the leader under a recorded concurrent workload.

use rand::Rng;

use launcher_tests::chaos::phases::leader_kill;
use launcher_tests::chaos::run::Chaos;

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 120;

/// While five clients (three on nodes directly over gRPC, two through the gateway) submit
/// with and without Idempotency-Key, get, list, read statuses and control jobs, the leader is
/// SIGKILLed once and restarted with its data. The recorded history, with the plugin's launch
/// log, keeps every invariant of docs/guarantees.md as the checker verifies them: no acknowledged
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
    leader_kill(&mut run).await?;
    run.wait_green().await?;
    let target = MIN_ACKED.max(run.acked() + 40);
    run.wait_acked(target).await?;

    run.finish(MIN_ACKED).await?;
    Ok(())
}
