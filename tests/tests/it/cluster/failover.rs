//! Fast failover (ARCHITECTURE.md): a crashed leader is replaced at once, a hung one is not deposed.
//!
//! The clusters here run with election timers of 30–31 s, so an election that the ordinary
//! timers cause cannot happen before the leader lease (31 s) plus an election timeout (≥ 30 s)
//! have passed: a new leader within [`FAST`] can only come from the fast path.

use std::time::{Duration, Instant};

use launcher_tests::client::job_id;
use launcher_tests::{init_tracing, job, ClusterOpts, ProcessCluster, TestPlugin};

/// Well under the 61 s the election timers need at the least.
const FAST: Duration = Duration::from_secs(20);

fn slow_timers() -> ClusterOpts {
    ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        node_lines: vec![
            "election-timeout-min-ms=30000".into(),
            "election-timeout-max-ms=31000".into(),
        ],
        ..Default::default()
    }
}

/// How the leader goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: the kernel closes its connections, its port refuses.
    Kill,
    /// SIGTERM: the graceful stop drains requests (ending the watches), stops Raft and exits.
    Terminate,
}

/// Stops the leader while a client submits through a survivor, then checks that a new leader
/// came from the fast path, that every submit was acknowledged and that nothing acknowledged
/// is lost once the old leader is back as a follower.
async fn replaced_at_once(stop: Stop) -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, slow_timers()).await?;
    let old = cluster.wait_one_leader().await?;
    let mut ids = Vec::new();
    for i in 0..6 {
        let reply = cluster
            .client(1 + i % 3)
            .submit(&job(&format!("before-{i}"), &["ff"]))
            .await?;
        ids.push(job_id(&reply.job));
    }
    let stopped = old as usize;
    let survivor = (1..=3).find(|&i| i != stopped).unwrap();
    // Submits through a survivor all along, each under an Idempotency-Key: the survivor's write
    // loop waits for a leader, and may re-send one whose forward to a dying leader had an
    // unknown outcome (without a key that is the client's error to see, by design).
    let writer = {
        let c = cluster.client(survivor);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let key = format!("during-{i}");
                let reply = c
                    .submit_as(
                        launcher_tests::client::user("alice"),
                        &job(&key, &["ff"]),
                        Some(&key),
                    )
                    .await?;
                ids.push(job_id(&reply.job));
            }
            anyhow::Ok(ids)
        })
    };
    // A follower whose watch is not open yet finds the port refusing when it opens it: the
    // same path.
    let t0 = Instant::now();
    match stop {
        Stop::Kill => cluster.kill(stopped),
        Stop::Terminate => {
            let status = cluster.terminate(stopped).await?;
            assert!(
                status.success(),
                "node {stopped} exited with {status} after SIGTERM"
            );
        }
    }
    let new = cluster
        .wait_for_new_leader_within(old, FAST)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    tracing::info!(old, new, elapsed = ?t0.elapsed(), ?stop, "new leader");
    ids.extend(writer.await??);
    let reply = cluster.client(survivor).submit(&job("after", &["ff"])).await?;
    ids.push(job_id(&reply.job));
    let log: String = (1..=3)
        .filter(|&i| i != stopped)
        .map(|i| cluster.log(i))
        .collect();
    assert!(
        log.contains("calling an election now"),
        "no survivor used the fast path:\n{log}"
    );

    cluster.restart(stopped).await?;
    cluster.wait_green(3).await?;
    assert_eq!(
        cluster.wait_one_leader().await?,
        new,
        "the restarted node deposed the new leader"
    );
    let (_, jobs) = cluster.client(stopped).list_all().await?;
    let got: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
    for id in &ids {
        assert!(
            got.contains(id),
            "job {id} acknowledged but missing on the restarted node"
        );
    }
    assert_eq!(
        got.len(),
        ids.len(),
        "a submit was applied twice or a stray job appeared"
    );
    Ok(())
}

/// SIGKILL of the leader: the survivors see its watch break and its port refuse connections,
/// call an election at once and elect one of themselves long before any election timer could
/// fire; submits through a survivor meanwhile are all acknowledged, each exactly once, nothing
/// acknowledged before is lost, and the killed node, restarted, follows the new leader with
/// every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_without_waiting_for_the_timers() -> anyhow::Result<()> {
    replaced_at_once(Stop::Kill).await
}

/// SIGTERM of the leader: its drain ends the watches and closes its port, the survivors elect
/// at once, and the writes it was serving or that arrive meanwhile through a survivor are all
/// acknowledged exactly once (the same checks as for SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_leader_is_replaced_without_waiting_for_the_timers() -> anyhow::Result<()> {
    replaced_at_once(Stop::Terminate).await
}

/// A SIGSTOPped leader keeps its connections open, so the fast path must not fire: while it
/// is paused no follower calls an election (the term stays, no follower names another
/// leader), and once resumed it still leads in the same term. A hung process may come back,
/// and deposing it early would be a disruption the election timers exist to avoid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_not_deposed_early() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, slow_timers()).await?;
    let old = cluster.wait_one_leader().await?;
    let term = cluster.client(old as usize).status().await?.term;
    let followers: Vec<usize> = (1..=3).filter(|&i| i as u64 != old).collect();
    cluster.pause(old as usize).await?;
    // Watch the followers for a few seconds: long past the moment a crash would have been
    // acted on (the kill test sees a new leader within well under a second).
    let window = Instant::now() + Duration::from_secs(4);
    while Instant::now() < window {
        for &i in &followers {
            let st = cluster.client(i).status().await?;
            assert_eq!(
                st.term, term,
                "node {i} moved to a new term while the leader was paused"
            );
            assert!(
                st.leader == old || st.leader == 0,
                "node {i} names leader {} while leader {old} is only paused",
                st.leader
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.resume(old as usize)?;
    assert_eq!(cluster.wait_one_leader().await?, old);
    assert_eq!(cluster.client(old as usize).status().await?.term, term);
    let log: String = followers.iter().map(|&i| cluster.log(i)).collect();
    assert!(
        !log.contains("calling an election now"),
        "a follower used the fast path:\n{log}"
    );
    Ok(())
}
