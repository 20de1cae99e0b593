//! SIGSTOP/SIGCONT pauses under a recorded concurrent workload: the leader, a follower, and
//! both followers at once (a minority leader, isolated without any network fault).

use std::time::Duration;

use rand::Rng;

use launcher_tests::chaos::phases::{leader_pause, lone_leader, lost_follower, Cut};
use launcher_tests::chaos::run::Chaos;

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 100;
/// `node-lost-timeout-seconds` of the run: short, so a paused follower is declared lost.
const NODE_LOST_SECONDS: u64 = 3;
/// Long jobs submitted per round (placement spreads them over the nodes).
const LONG_JOBS: usize = 4;

/// While five clients keep submitting, reading and controlling jobs (three directly on the
/// nodes, two through the gateway):
/// 1. the leader is SIGSTOPped for longer than the election timeout (at least a seeded 6–9 s,
///    and until another node leads and acknowledged a write): after SIGCONT it steps down
///    and reports the new leader;
/// 2. a follower (seeded among those running the test's long jobs) is SIGSTOPped for at least
///    a seeded 3–6 s and until the other two, which keep a quorum, declare it lost
///    (`node-lost-timeout-seconds` is 3 here): its long jobs end `Failed` with `node lost`,
///    and after SIGCONT it fences them (its plugin stops running them) while their status
///    stays terminal;
/// 3. both followers are SIGSTOPped for a seeded 4–6 s, leaving the leader alone with clients
///    (and the test's own probes) writing to and reading from it: no write and no
///    linearizable read invoked while it is alone is acknowledged before the followers
///    continue (unknown outcomes and timeouts only, never a false ack), and its health,
///    which follows its last quorum acknowledgement, is Red.
///
/// Throughout, the history keeps every invariant of docs/guarantees.md as the checker verifies
/// them: in particular the paused leader acknowledges no write that the new leader lacks (an
/// acknowledged job missing from a later listing is a lost job). Seeded: the seed is printed,
/// `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_follower_pauses_and_a_minority_leader_keep_every_invariant() -> anyhow::Result<()> {
    let mut run = Chaos::start("pauses", |o| o.node_lost_timeout_seconds = NODE_LOST_SECONDS).await?;

    // 1. The leader pauses for longer than the election timeout.
    let first = run.rng.gen_range(20..35);
    run.wait_acked(first).await?;
    leader_pause(&mut run).await?;
    run.wait_green().await?;

    // 2. A follower running long jobs pauses for longer than node-lost-timeout-seconds; the
    // other two keep a quorum and declare it lost.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let min_pause = Duration::from_millis(run.rng.gen_range(3000..6000));
    lost_follower(&mut run, Cut::Pause, LONG_JOBS, min_pause).await?;

    // 3. Both followers pause: the leader is alone (a minority) while clients write to it.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let hold = Duration::from_millis(run.rng.gen_range(4000..6000));
    let alone = lone_leader(&mut run, Cut::Pause, hold).await?;

    let target = MIN_ACKED.max(run.acked() + 20);
    run.wait_acked(target).await?;
    let verdict = run.finish(MIN_ACKED).await?;
    let summary = alone.check(&verdict)?;
    eprintln!("chaos pauses seed {}: {summary}", verdict.seed);
    Ok(())
}
