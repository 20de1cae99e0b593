//! Network partitions between node processes on loopback (iptables drops the packets between
//! the nodes' own 127.a.b.c addresses; see `launcher_tests::netfault`) under a recorded
//! concurrent workload: a lone leader, a partial partition, an isolated follower.

use std::time::Duration;

use rand::Rng;

use launcher_tests::chaos::phases::{lone_leader, lost_follower, partial_partition, Cut};
use launcher_tests::chaos::run::Chaos;

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 100;
/// `node-lost-timeout-seconds` of the run: short, so an isolated follower is declared lost.
const NODE_LOST_SECONDS: u64 = 3;
/// Long jobs submitted for the isolated-follower phase.
const LONG_JOBS: usize = 4;
/// Submits the cluster must acknowledge while a partial partition lasts.
const PARTIAL_PROGRESS: usize = 5;

/// While five clients keep submitting, reading and controlling jobs (three directly on the
/// nodes, two through the gateway):
/// 1. the leader is partitioned off from both followers for at least a seeded 6–9 s while the
///    clients and the test's probes keep writing to it and reading from it: the followers elect
///    a new leader and acknowledge writes; nothing needing a quorum that was invoked at the
///    lone leader is acknowledged while it is alone, its health (its last quorum
///    acknowledgement) reads Red, and a probe whose submit timed out there is acknowledged by
///    the majority under its Idempotency-Key (one job per key, as the checker verifies); after
///    the partition heals the old leader follows the new one and the cluster is Green;
/// 2. a partial partition: the leader and a seeded follower cannot reach each other while both
///    still reach the third node, for a seeded 4–7 s: the cluster keeps acknowledging submits
///    meanwhile (whoever leads has a majority through the third node), and is Green after;
/// 3. a follower running long jobs is partitioned off for at least a seeded 3–6 s and until
///    the other two (a quorum) declare it lost (`node-lost-timeout-seconds` is 3 here): its
///    jobs end `Failed` with `node lost`, and after the partition heals it fences them (its
///    plugin, which ran on meanwhile, stops them) while their status stays terminal.
///
/// Throughout, the history keeps every invariant of docs/guarantees.md as the checker verifies
/// them. Seeded: the seed is printed, `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_keep_every_invariant() -> anyhow::Result<()> {
    let mut run = Chaos::start("partitions", |o| o.node_lost_timeout_seconds = NODE_LOST_SECONDS).await?;

    // 1. A lone leader.
    let first = run.rng.gen_range(20..35);
    run.wait_acked(first).await?;
    let hold = Duration::from_millis(run.rng.gen_range(6000..9000));
    let alone = lone_leader(&mut run, Cut::Partition, hold).await?;

    // 2. A partial partition: the leader and one follower lose each other, the third node
    // still reaches both.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    partial_partition(&mut run, PARTIAL_PROGRESS).await?;

    // 3. An isolated follower running long jobs is declared lost and fences them once back.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let min_for = Duration::from_millis(run.rng.gen_range(3000..6000));
    lost_follower(&mut run, Cut::Partition, LONG_JOBS, min_for).await?;

    let target = MIN_ACKED.max(run.acked() + 20);
    run.wait_acked(target).await?;
    let verdict = run.finish(MIN_ACKED).await?;
    let summary = alone.check(&verdict)?;
    eprintln!("chaos partitions seed {}: {summary}", verdict.seed);
    Ok(())
}
