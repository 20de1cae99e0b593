use anyhow::Context as _;
use launcher_tests::client::error_code;
use launcher_tests::{init_tracing, job, wait_until, ClusterOpts, ProcessCluster, DEADLINE};

async fn member_ids(c: &ProcessCluster, node: usize) -> anyhow::Result<Vec<u64>> {
    let mut ids: Vec<u64> = c
        .client(node)
        .status()
        .await?
        .nodes
        .iter()
        .map(|n| n.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// SIGTERM is a graceful stop, not a leave: the node exits cleanly, the cluster keeps it as a
/// member (Yellow while it is down), and after a restart the cluster is Green with 3 members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_restart_keep_membership() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let plugins = cluster.nodes[1].plugin_pids();
    assert_eq!(plugins.len(), 1, "node 2 runs its plugin");
    let status = cluster.terminate(2).await?;
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}\n{}",
        cluster.log(2)
    );
    assert!(cluster.log(2).contains("node stopped"));
    // The ordered stop ended the plugin too (SIGTERM, then SIGKILL after a grace period).
    assert!(
        plugins
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()),
        "no plugin outlives its node"
    );
    let c1 = cluster.client(1);
    let st = wait_until("the cluster to notice node 2 is down", DEADLINE, || {
        let c1 = c1.clone();
        async move { Ok(c1.status().await.ok().filter(|s| s.status == "Yellow")) }
    })
    .await?;
    assert_eq!(st.nodes.len(), 3, "node 2 is still a member");
    cluster.restart(2).await?;
    cluster.wait_green(3).await?;
    assert_eq!(member_ids(&cluster, 1).await?, vec![1, 2, 3]);
    Ok(())
}

/// `members remove` shrinks the cluster and the removed node stops; a wiped node rejoins under
/// a new id; a second node claiming a member's id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_rejoin_and_duplicate_ids() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    cluster.client(1).submit(&job("a", &[])).await?;

    // A wiped node comes back under a new id; its old id leaves the membership.
    cluster.kill(3);
    cluster.wipe(3)?;
    cluster.restart(3).await?;
    let c1 = cluster.client(1);
    let ids = wait_until("the wiped node to rejoin under a new id", DEADLINE, || {
        let c1 = c1.clone();
        async move {
            let st = c1.status().await?;
            let mut ids: Vec<u64> = st.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
            ids.sort();
            Ok((st.status == "Green" && ids.len() == 3 && !ids.contains(&3)).then_some(ids))
        }
    })
    .await?;
    assert_eq!(ids, vec![1, 2, 4]);

    // A fourth process configured with member 2's id is refused.
    cluster.add_node_expecting_failure(2).await?;

    // members remove shrinks the cluster; the removed node stops by itself.
    let node3 = 3; // process index of the node that now has id 4
    cluster.client(1).remove_member(4).await?;
    let st = cluster.client(1).status().await?;
    assert_eq!(st.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2]);
    let exit = cluster.wait_exit(node3).await?;
    assert!(!exit.success());
    assert!(
        cluster.log(node3).contains("was removed from the cluster"),
        "{}",
        cluster.log(node3)
    );
    // Removing the same id again succeeds (removal is idempotent); an id that never was a
    // member is an error with a stable code.
    cluster.client(1).remove_member(4).await?;
    let err = cluster.client(1).remove_member(99).await.unwrap_err();
    assert_eq!(error_code(&err), 2, "{err:?}");
    Ok(())
}

/// `members remove` sent to a follower right after the leader died waits for the next leader
/// and succeeds, instead of failing because there is no leader for a moment (the rolling
/// upgrade removes the replicas it just stopped, the leader among them, this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_during_an_election_waits_for_the_leader() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (1..=3).find(|i| *i != leader).context("a follower")?;
    cluster.kill(leader as usize);
    cluster.client(follower as usize).remove_member(leader).await?;
    let st = cluster.client(follower as usize).status().await?;
    let mut ids: Vec<u64> = st.nodes.iter().map(|n| n.id).collect();
    ids.sort();
    assert_eq!(ids, (1..=3).filter(|i| *i != leader).collect::<Vec<_>>());
    // Again, from the other follower: already removed, so nothing to do and no error.
    let other = (1..=3)
        .find(|i| *i != leader && *i != follower)
        .context("the other follower")?;
    cluster.client(other as usize).remove_member(leader).await?;
    Ok(())
}

/// Empty nodes started with `bootstrap-expect = 3` and each other's addresses form one cluster
/// with no manual step; each gets a distinct id and they agree on the cluster id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_forms_a_cluster() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start_bootstrap_expect(3, ClusterOpts::default()).await?;
    let mut seen = std::collections::BTreeSet::new();
    for i in 1..=3 {
        let st = cluster.client(i).status().await?;
        assert_eq!(st.cluster_id, cluster.cluster_id());
        seen.insert(st.node_id);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    let r = cluster.client(3).submit(&job("formed", &[])).await?;
    assert!(r.created);
    Ok(())
}

/// A member that joins during a leadership gets the full dead-member-removal-seconds to send
/// its first heartbeat, counted from its join: the leader's cleanup must not remove a learner
/// added a moment ago (it once did, at the next tick, so a replica scaled in with
/// `docker-compose --scale` could be removed before it had started). A learner that never
/// reports is still removed once that time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_has_the_removal_delay_to_report() -> anyhow::Result<()> {
    use launcher_node::auth::InternalAuth;
    use launcher_node::network::Peers;
    use launcher_proto::launcher::JoinRequest;
    use std::time::{Duration, Instant};

    init_tracing();
    const DEAD: u64 = 4;
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 2,
        dead_member_removal_seconds: DEAD,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    // A joiner that never starts: its address takes no connections (the port was free a
    // moment ago), so it never heartbeats, exactly like a replica slow to come up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let peers = Peers::new(InternalAuth::new(&cluster.key, cluster.cluster_id().into()));
    let asked = Instant::now();
    let joined = peers
        .launcher(&cluster.nodes[leader - 1].addr())
        .join(JoinRequest {
            node_id: 0,
            address: silent.clone(),
            cluster_id: String::new(),
        })
        .await?
        .into_inner();
    let id = joined.node_id;
    assert!(id > 3, "a fresh id is allocated: {joined:?}");
    assert!(member_ids(&cluster, leader).await?.contains(&id));
    let c = cluster.client(leader);
    wait_until("the silent learner to be removed", DEADLINE, || {
        let c = c.clone();
        async move {
            let st = c.status().await?;
            Ok((!st.nodes.iter().any(|n| n.id == id)).then_some(()))
        }
    })
    .await?;
    let after = asked.elapsed();
    eprintln!("silent learner {id} removed {after:?} after its join");
    assert!(
        after >= Duration::from_secs(DEAD),
        "learner {id} was removed {after:?} after joining, before dead-member-removal-seconds={DEAD}"
    );
    assert_eq!(member_ids(&cluster, leader).await?, vec![1, 2, 3]);
    Ok(())
}

/// The leader removes a member that has been down for dead-member-removal-seconds, but only
/// while at least 3 voters remain: a 4-node cluster shrinks to 3, never below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_members_are_removed_down_to_three_voters() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 2,
        dead_member_removal_seconds: 4,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(4, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let victims: Vec<usize> = (1..=4).filter(|i| *i != leader).take(2).collect();
    cluster.kill(victims[0]);
    let c = cluster.client(leader);
    let st = wait_until("the dead member to be removed", DEADLINE, || {
        let c = c.clone();
        async move { Ok(c.status().await.ok().filter(|s| s.nodes.len() == 3)) }
    })
    .await?;
    assert!(st.nodes.iter().all(|n| n.id != victims[0] as u64));
    // With 3 voters left, a second dead member stays a member (the cluster stays Yellow) for
    // three times the removal delay: removal would have happened long before if allowed.
    cluster.kill(victims[1]);
    let observed = wait_until("the second victim to show as down", DEADLINE, || {
        let c = c.clone();
        async move { Ok(c.status().await.ok().filter(|st| st.status == "Yellow")) }
    })
    .await?;
    assert_eq!(observed.nodes.len(), 3);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(12);
    while std::time::Instant::now() < until {
        let st = c.status().await?;
        assert_eq!(
            st.nodes.len(),
            3,
            "never fewer than 3 voters by dead-member removal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(())
}
