//! SIGSTOP/SIGCONT pauses under a recorded concurrent workload: the leader, a follower, and
//! both followers at once (a minority leader, isolated without any network fault).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use launcher_tests::history::{Call, EventType};
use launcher_tests::{wait_until, DEADLINE};
use rand::Rng;

use super::run::{terminal, Chaos};
use super::workload::{record_get, Client, Target, Visibility};

/// Acknowledged submits a run must reach.
const MIN_ACKED: usize = 100;
/// `node-lost-timeout-seconds` of the run: short, so a paused follower is declared lost.
const NODE_LOST_SECONDS: u64 = 3;
/// Long jobs submitted per round (placement spreads them over the nodes).
const LONG_JOBS: usize = 4;
/// History processes of the test's probes of the minority leader: writers and a reader.
const PROBE_WRITERS: [u32; 2] = [96, 97];
const PROBE_READER: u32 = 98;

/// Sleeps until `at`: the end of a seeded pause the nemesis injects (not a wait for a state).
async fn hold_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

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
/// Throughout, the history keeps every invariant of DESIGN.md §7 as the checker verifies
/// them: in particular the paused leader acknowledges no write that the new leader lacks (an
/// acknowledged job missing from a later listing is a lost job). Seeded: the seed is printed,
/// `LAUNCHER_CHAOS_SEED` replays the run's choices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_follower_pauses_and_a_minority_leader_keep_every_invariant() -> anyhow::Result<()> {
    let mut run = Chaos::start("pauses", |o| o.node_lost_timeout_seconds = NODE_LOST_SECONDS).await?;

    // 1. The leader pauses for longer than the election timeout.
    let first = run.rng.gen_range(20..35);
    run.wait_acked(first).await?;
    let (old, oi) = run.leader().await?;
    let min_pause = Duration::from_millis(run.rng.gen_range(6000..9000));
    let acked = run.acked();
    run.note(format!(
        "nemesis: SIGSTOP node {old}, the leader, for at least {min_pause:?}"
    ));
    let stopped = Instant::now();
    run.pause(oi).await?;
    let new = run.cluster.wait_for_new_leader(old).await?;
    let elected = stopped.elapsed();
    run.note(format!("node {new} leads, {elected:?} after the pause began"));
    run.wait_acked(acked + 1).await?;
    let first_ack = stopped.elapsed();
    hold_until(stopped + min_pause).await;
    let paused_for = stopped.elapsed();
    run.note(format!("nemesis: SIGCONT node {old} after {paused_for:?}"));
    run.resume(oi)?;
    let resumed = Instant::now();
    let c = run.cluster.client(oi);
    let sees = wait_until(&format!("node {old} to step down"), DEADLINE, || {
        let c = c.clone();
        async move {
            let st = tokio::time::timeout(Duration::from_secs(1), c.status()).await;
            Ok(st
                .ok()
                .and_then(Result::ok)
                .filter(|st| st.leader != 0 && st.leader != old)
                .map(|st| st.leader))
        }
    })
    .await?;
    let stepped = resumed.elapsed();
    run.figure(format!(
        "leader {old} paused {paused_for:.1?}: node {new} elected after {elected:.1?}, first ack after \
         {first_ack:.1?}; after SIGCONT it stepped down within {stepped:.1?} (sees leader {sees})"
    ));
    run.wait_green().await?;

    // 2. A follower running long jobs pauses for longer than node-lost-timeout-seconds; the
    // other two keep a quorum and declare it lost.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let (leader, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=3).filter(|i| *i != li).collect();
    let mut by_node = Default::default();
    let mut candidates = Vec::new();
    for _ in 0..3 {
        run.submit_long_jobs(LONG_JOBS).await?;
        by_node = run.long_jobs_by_node();
        candidates = followers
            .iter()
            .copied()
            .filter(|f| by_node.contains_key(f))
            .collect();
        if !candidates.is_empty() {
            break;
        }
    }
    anyhow::ensure!(!candidates.is_empty(), "no follower runs a long job: {by_node:?}");
    let fi = candidates[run.rng.gen_range(0..candidates.len())];
    let doomed = by_node[&fi].clone();
    let fid = run
        .status_of(fi)
        .await
        .map(|st| st.node_id)
        .ok_or_else(|| anyhow::anyhow!("follower at index {fi} does not answer"))?;
    let min_pause = Duration::from_millis(run.rng.gen_range(3000..6000));
    let acked = run.acked();
    run.note(format!(
        "nemesis: SIGSTOP node {fid}, a follower running long jobs {doomed:?}, for at least {min_pause:?} and \
         until they are lost (node-lost-timeout-seconds={NODE_LOST_SECONDS})"
    ));
    let stopped = Instant::now();
    run.pause(fi).await?;
    for id in &doomed {
        run.wait_status(id, |s, m| s == "Failed" && m == "node lost")
            .await?;
    }
    let lost_after = stopped.elapsed();
    hold_until(stopped + min_pause).await;
    let paused_for = stopped.elapsed();
    let during = run.acked() - acked;
    run.note(format!("nemesis: SIGCONT node {fid} after {paused_for:?}"));
    run.resume(fi)?;
    let resumed = Instant::now();
    // Fencing: back, the node stops what its plugin still runs for the jobs taken from it.
    let this = &run;
    let doomed_ref = &doomed;
    wait_until(
        &format!("node {fid} to fence its lost jobs"),
        DEADLINE,
        || async move {
            let plugin = this.plugin_jobs(fi);
            let running: Vec<&(String, String)> = plugin
                .iter()
                .filter(|(id, status)| doomed_ref.contains(id) && !terminal(status))
                .collect();
            Ok(running.is_empty().then_some(()))
        },
    )
    .await?;
    let fenced = resumed.elapsed();
    run.wait_green().await?;
    let (after, _) = run.leader().await?;
    run.figure(format!(
        "follower {fid} paused {paused_for:.1?}: {during} submits acknowledged meanwhile; its {} long jobs \
         Failed \"node lost\" after {lost_after:.1?}; after SIGCONT it fenced them within {fenced:.1?}; leader \
         {leader} before, {after} after",
        doomed.len()
    ));

    // 3. Both followers pause: the leader is alone (a minority) while clients write to it.
    let more = run.rng.gen_range(15..25);
    run.wait_more_acked(more).await?;
    let (leader, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=3).filter(|i| *i != li).collect();
    let isolation = Duration::from_millis(run.rng.gen_range(4000..6000));
    run.note(format!(
        "nemesis: SIGSTOP both followers (indexes {followers:?}) for {isolation:?}: leader {leader} is alone"
    ));
    let stopped = Instant::now();
    for &f in &followers {
        run.pause(f).await?;
    }
    // From here on the leader cannot reach a quorum: nothing invoked now may be acknowledged
    // until the followers continue.
    let alone_from = run.shared.recorder.now_us();
    run.note("minority: both followers stopped");
    // The test's own probes write and read at the lone leader directly until it has company
    // again: two submitters (short client-side deadlines, so each gives up and tries again)
    // and a reader of linearizable gets.
    let probing = Arc::new(AtomicBool::new(true));
    let mut probes = Vec::new();
    for (n, p) in PROBE_WRITERS.into_iter().enumerate() {
        let target = Target::Direct {
            nodes: vec![run.cluster.client(li)],
            at: 0,
        };
        let mut probe = Client::new(p, target, run.shared.clone());
        let probing = probing.clone();
        probes.push(tokio::spawn(async move {
            let mut acked = 0;
            let mut k = 0;
            while probing.load(Ordering::SeqCst) {
                k += 1;
                let name = format!("minority-probe-{n}-{k}");
                let timeout = Duration::from_millis(1500);
                acked += usize::from(
                    probe
                        .submit_within(&name, "exit 0", 1, timeout, Visibility::Private)
                        .await
                        .is_some(),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        }));
    }
    let reader = {
        let (shared, node, probing) = (run.shared.clone(), run.cluster.client(li), probing.clone());
        let known = run.shared.known.lock().expect("known ids").first().cloned();
        tokio::spawn(async move {
            let mut found = 0;
            while let (Some(id), true) = (&known, probing.load(Ordering::SeqCst)) {
                found += usize::from(record_get(&shared, PROBE_READER, &node, id).await.is_some());
                // Think time, as the clients have.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found
        })
    };
    hold_until(stopped + isolation).await;
    let health = run
        .status_of(li)
        .await
        .map_or_else(|| "no answer".to_string(), |st| st.status);
    let alone_until = run.shared.recorder.now_us();
    run.note(format!(
        "nemesis: SIGCONT both followers; the lone leader reported {health}"
    ));
    for &f in &followers {
        run.resume(f)?;
    }
    let resumed = Instant::now();
    run.wait_green().await?;
    let healed = resumed.elapsed();
    probing.store(false, Ordering::SeqCst);
    let mut probes_acked = 0;
    for p in probes {
        // A probe stops within its own client-side deadline.
        probes_acked += p.await?;
    }
    let probe_reads = reader.await?;
    anyhow::ensure!(
        health == "Red",
        "chaos seed {}: a leader without a quorum for {isolation:?} reported itself {health}, not Red",
        run.seed
    );

    let target = MIN_ACKED.max(run.acked() + 20);
    run.wait_acked(target).await?;
    let verdict = run.finish(MIN_ACKED).await?;

    // No false ack: an operation that needs a quorum (a write, a linearizable read) invoked
    // while the leader was alone must not have succeeded before the followers continued.
    let ops = verdict.history.operations();
    let alone: Vec<_> = ops
        .iter()
        .filter(|o| o.invoked_at() >= alone_from && o.invoked_at() < alone_until)
        .collect();
    let writes = alone
        .iter()
        .filter(|o| matches!(o.call, Call::Submit { .. } | Call::Control { .. }))
        .count();
    let false_acks: Vec<_> = alone
        .iter()
        .filter(|o| o.kind() == EventType::Ok && o.completed_at().is_some_and(|t| t < alone_until))
        .filter(|o| match o.call {
            Call::Submit { .. } | Call::Control { .. } => true,
            other => other.read().is_some_and(|r| r.is_linearizable()),
        })
        .collect();
    if !false_acks.is_empty() {
        let excerpt: Vec<_> = false_acks.iter().flat_map(|o| o.events()).collect();
        return Err(verdict.violation(
            &format!(
                "{} operations needing a quorum were acknowledged by leader {leader} while both followers were stopped",
                false_acks.len()
            ),
            &excerpt,
        ));
    }
    let probed = alone
        .iter()
        .filter(|o| PROBE_WRITERS.contains(&o.process) || o.process == PROBE_READER)
        .count();
    eprintln!(
        "chaos pauses seed {}: minority leader {leader} for {isolation:.1?} (reported {health}): {} operations \
         invoked while alone ({writes} writes; {probed} of them probes sent to it directly), none needing a \
         quorum acknowledged before the followers continued; {probes_acked} probe submits acknowledged after, \
         {probe_reads} probe reads answered; Green again {healed:.1?} after SIGCONT",
        verdict.seed,
        alone.len()
    );
    Ok(())
}
