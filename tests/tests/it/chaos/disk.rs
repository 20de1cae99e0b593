//! A full disk under a recorded concurrent workload: one node's data dir is a small tmpfs that
//! fills up while the cluster runs.

use std::time::Instant;

use launcher_tests::diskfault::{dir_size, Tmpfs};
use rand::Rng;

use launcher_tests::chaos::run::{Chaos, NODES};

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 100;
/// Room the tmpfs leaves the node beyond what its data used when it moved there.
const HEADROOM: u64 = 8 << 20;
/// What the filler leaves free: a few of the workload's writes, then the disk is full.
const LEAVE_FREE: u64 = 32 << 10;
/// Submits the other two nodes must acknowledge while the full node is down.
const PROGRESS_WITHOUT_IT: usize = 15;

/// While five clients keep submitting, reading and controlling jobs (three directly on the
/// nodes, two through the gateway), a seeded node (leader or follower) is moved onto a small
/// tmpfs and another process fills that disk: the node stops by itself with a plain fatal
/// storage error naming the full disk (no hang, no panic), the other two keep acknowledging
/// submits (electing a new leader if it led), and once space returns the node restarts with
/// its data, catches up and the cluster is Green; the final listings of every node agree at one
/// applied index and the history keeps every invariant of docs/guarantees.md (no acknowledged job
/// lost, none launched twice). Seeded: `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_one_node_plainly_and_it_recovers() -> anyhow::Result<()> {
    let mut run = Chaos::start("disk", |_| {}).await?;
    let first = run.rng.gen_range(20..35);
    run.wait_acked(first).await?;

    let i = run.rng.gen_range(1..=NODES);
    let id = run
        .status_of(i)
        .await
        .map(|st| st.node_id)
        .ok_or_else(|| anyhow::anyhow!("node at index {i} does not answer"))?;
    run.note(format!("nemesis: move node {id} (index {i}) onto a small tmpfs"));
    run.stop(i).await?;
    let data = run.cluster.nodes[i - 1].data_dir();
    let used = dir_size(&data)?;
    let disk = Tmpfs::mount_over(&data, used + HEADROOM)?;
    run.restart(i).await?;
    run.wait_green().await?;

    let more = run.rng.gen_range(10..20);
    run.wait_more_acked(more).await?;
    let free = disk.free()?;
    run.note(format!(
        "nemesis: fill node {id}'s disk ({} KiB used, {} KiB free) down to {} KiB free",
        disk.used()? >> 10,
        free >> 10,
        LEAVE_FREE >> 10
    ));
    let filled = Instant::now();
    let filler = disk.fill("filler", LEAVE_FREE)?;
    let status = run.wait_exit(i).await?;
    let stopped_after = filled.elapsed();
    anyhow::ensure!(!status.success(), "node {id} exited with {status} on a full disk");
    let log = run.cluster.log(i);
    anyhow::ensure!(
        log.contains("fatal") && log.contains("disk is full"),
        "chaos seed {}: node {id} stopped without the plain full-disk message:\n{}",
        run.seed,
        log.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    run.note(format!(
        "node {id} stopped by itself {stopped_after:.1?} after the disk filled"
    ));

    let acked = run.acked();
    let down = Instant::now();
    run.wait_acked(acked + PROGRESS_WITHOUT_IT).await?;
    let progress = down.elapsed();

    // Space returns: the filler goes, and the disk grows too, for what the node missed.
    std::fs::remove_file(&filler)?;
    disk.resize(disk.used()? + 4 * HEADROOM)?;
    run.note(format!("nemesis: space is back on node {id}'s disk; restart it"));
    let back = Instant::now();
    run.restart(i).await?;
    run.wait_green().await?;
    run.figure(format!(
        "node {id} (index {i}) stopped {stopped_after:.1?} after its disk filled; the others acknowledged \
         {PROGRESS_WITHOUT_IT} submits within {progress:.1?}; with space back it restarted and the cluster was \
         Green {:.1?} later",
        back.elapsed()
    ));

    let target = MIN_ACKED.max(run.acked() + 20);
    run.wait_acked(target).await?;
    let verdict = run.finish(MIN_ACKED).await?;
    eprintln!("chaos disk seed {}: passed", verdict.seed);
    drop(disk);
    Ok(())
}
