//! Fast failover (ARCHITECTURE.md): a crashed, paused or cut-off leader is replaced at once;
//! one that a majority still hears is not deposed.
//!
//! The clusters here run with election timers of 30–31 s, so an election that the ordinary
//! timers cause cannot happen before the leader lease (31 s) plus an election timeout (≥ 30 s)
//! have passed: a new leader within [`FAST`] can only come from the fast path.

use std::time::{Duration, Instant};

use launcher_tests::client::job_id;
use launcher_tests::netfault::Firewall;
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

/// A SIGSTOPped leader keeps its connections open but falls silent: its followers hear no
/// notice on their leader watches, get no answer from it, learn from each other that neither
/// hears it, and elect one of themselves long before an election timer could fire. A write that
/// a follower had forwarded to the paused leader is answered as soon as the new leader is known
/// (without an Idempotency-Key its outcome is unknown: 503), not at its 60 s deadline; a
/// linearizable read waiting there for its read index is asked again of the new leader and
/// answered, not failed at its 5 s deadline; keyed writes go on through the new leader; the old leader, resumed, follows it with every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_without_waiting_for_the_timers() -> anyhow::Result<()> {
    init_tracing();
    let mut opts = slow_timers();
    opts.node_lines.push("write-timeout-seconds=60".into());
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let old = cluster.wait_one_leader().await?;
    let followers: Vec<usize> = (1..=3).filter(|&i| i as u64 != old).collect();
    let before = job_id(
        &cluster
            .client(followers[0])
            .submit(&job("before", &["ff"]))
            .await?
            .job,
    );
    cluster.pause(old as usize).await?;
    // Sent at once, this follower still takes the paused node for the leader: the write waits there.
    let waiting = {
        let c = cluster.client(followers[0]);
        tokio::spawn(async move { c.submit(&job("waiting", &["ff"])).await })
    };
    // A linearizable read on the other follower asks the paused node for its read index too.
    let reading = {
        let c = cluster.client(followers[1]);
        tokio::spawn(async move { c.list_all().await })
    };
    let new = cluster
        .wait_for_new_leader_within(old, FAST)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    let (_, listed) = tokio::time::timeout(FAST, reading)
        .await
        .map_err(|_| anyhow::anyhow!("the read waiting at the paused leader never ended"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map_err(|s| anyhow::anyhow!("the read was not re-asked of the new leader {new}: {s:?}"))?;
    assert!(
        listed.iter().any(|j| job_id(j) == before),
        "the read after the pause misses job {before}"
    );
    let answer = tokio::time::timeout(FAST, waiting)
        .await
        .map_err(|_| anyhow::anyhow!("the write forwarded to the paused leader waits for its deadline"))??;
    if let Err(status) = &answer {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("was replaced"), "{status:?}");
    }
    let key = "after-the-pause";
    let after = cluster
        .client(followers[1])
        .submit_as(
            launcher_tests::client::user("alice"),
            &job(key, &["ff"]),
            Some(key),
        )
        .await?;
    let log: String = followers.iter().map(|&i| cluster.log(i)).collect();
    assert!(
        log.contains("the leader is silent") && log.contains("calling an election now"),
        "no follower replaced the silent leader through the fast path:\n{log}"
    );

    cluster.resume(old as usize)?;
    assert_eq!(
        cluster.wait_one_leader().await?,
        new,
        "the resumed node deposed the new leader"
    );
    let (_, jobs) = cluster.client(old as usize).list_all().await?;
    let got: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
    for id in [before, job_id(&after.job)] {
        assert!(
            got.contains(&id),
            "job {id} acknowledged but missing on the resumed node"
        );
    }
    Ok(())
}

/// A leader cut off from one follower only still leads a majority through the other, which
/// keeps hearing it. The cut-off follower finds the leader silent and unanswering, but learns
/// that the other follower still hears it, so it calls no election, and it holds its own Raft
/// election timer off meanwhile: with the default timers it would stand after 4.5–6 s, and the
/// higher term would depose the leader once the cut heals. So across a 16 s cut and its healing
/// the term and the leader stay, writes through the leader are acknowledged all along, and the
/// follower then has them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_one_follower_is_not_deposed() -> anyhow::Result<()> {
    a_cut_follower_does_not_depose_the_leader(Cut::FromLeader, "another follower still hears it").await
}

/// A follower cut off from every other node finds its leader silent and, asking the other
/// follower, gets no answer either: too few voters answer to make a majority with it, so it
/// calls no election and holds its own election timer off (with the default timers it would
/// stand after 4.5–6 s). Its term stays, so once the cut heals it follows the leader again
/// without deposing it: the leader and the term are the same throughout and after, and the
/// follower has every job acknowledged meanwhile. (Before, it ran its ten fast rounds and then
/// its own timers, and its higher term cost the healthy leader an election; later, the hold
/// ended when the leader watch broke under the cut, about 10 s in, with the same result.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_does_not_depose_the_leader() -> anyhow::Result<()> {
    a_cut_follower_does_not_depose_the_leader(Cut::FromAll, "too few voters answer").await
}

/// Which links of a follower a not-deposed test cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// From the leader only: the other follower still hears the leader.
    FromLeader,
    /// From both other nodes.
    FromAll,
}

/// Cuts a follower of a 3-node cluster as `cut` says, writes through the leader across the cut
/// (see [`writes_through_the_cut`]), checks that the follower's log says `why` it calls no
/// election and shows none, heals, and checks that it follows the leader again in the same term
/// with every job.
async fn a_cut_follower_does_not_depose_the_leader(cut: Cut, why: &str) -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_one_leader().await?;
    let term = cluster.client(leader as usize).status().await?.term;
    let followers: Vec<usize> = (1..=3).filter(|&i| i as u64 != leader).collect();
    let (cut_off, other) = (followers[0], followers[1]);
    let host = |i: usize| cluster.nodes[i - 1].host.clone();
    let mut firewall = Firewall::new()?;
    firewall.cut(&host(leader as usize), &host(cut_off))?;
    if cut == Cut::FromAll {
        firewall.cut(&host(other), &host(cut_off))?;
    }
    let ids = writes_through_the_cut(&cluster, leader, term, other, "cut").await?;
    let log = cluster.log(cut_off);
    assert!(
        log.contains(why),
        "the cut-off follower ({cut:?}) never looked into the silence:\n{log}"
    );
    assert!(
        !log.contains("calling an election now"),
        "the cut-off follower ({cut:?}) called an election:\n{log}"
    );
    firewall.heal()?;
    follows_again_with_every_job(&mut cluster, cut_off, leader, term, &ids).await
}

/// For 16 s (longer than the follower's leader watch lasts under a cut, about 10 s of HTTP/2
/// keep-alive, plus the lease and the longest election timeout, 3 s + 3 s by default):
/// submits through `leader`, each acknowledged, while `leader` and the follower `other` both
/// stay at `leader` in `term`. Returns the acknowledged job ids.
async fn writes_through_the_cut(
    cluster: &ProcessCluster,
    leader: u64,
    term: u64,
    other: usize,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let window = Instant::now() + Duration::from_secs(16);
    while Instant::now() < window {
        let reply = cluster
            .client(leader as usize)
            .submit(&job(&format!("{prefix}-{}", ids.len()), &["ff"]))
            .await?;
        ids.push(job_id(&reply.job));
        for i in [leader as usize, other] {
            let st = cluster.client(i).status().await?;
            assert_eq!((st.leader, st.term), (leader, term), "node {i} during the cut");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ids)
}

/// After a cut heals: node `node` follows `leader` again without the term ever moving from
/// `term` (the leader was not deposed), the leader still leads in it, and `node` lists every
/// job of `ids`.
async fn follows_again_with_every_job(
    cluster: &mut ProcessCluster,
    node: usize,
    leader: u64,
    term: u64,
    ids: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + FAST;
    loop {
        let st = cluster.client(node).status().await?;
        anyhow::ensure!(
            st.term == term,
            "the term moved from {term} to {} across the cut: the leader was deposed",
            st.term
        );
        if st.leader == leader {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {node} does not follow {leader} again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.wait_one_leader().await?, leader);
    assert_eq!(cluster.client(leader as usize).status().await?.term, term);
    let deadline = Instant::now() + FAST;
    loop {
        let (_, jobs) = cluster.client(node).list_all().await?;
        let got: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
        if ids.iter().all(|id| got.contains(id)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {node} lacks acknowledged jobs after healing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
