//! `GET /metrics` on each node's gRPC port.

use launcher_tests::{init_tracing, job, wait_until, ClusterOpts, ProcessCluster, TestPlugin, DEADLINE};

/// One node's metrics as (name with labels, value) pairs.
pub(crate) async fn scrape(addr: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let r = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(r.status() == 200, "GET /metrics on {addr}: {}", r.status());
    let text = r.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

pub(crate) fn value(m: &[(String, f64)], name: &str) -> f64 {
    m.iter().find(|(k, _)| k == name).map_or(0.0, |(_, v)| *v)
}

/// The value of the one series of `name` whose labels include every one of `labels`.
fn series(m: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            k.split_once('{')
                .is_some_and(|(n, l)| n == name && labels.iter().all(|x| l.contains(x)))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn sum(m: &[(String, f64)], prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Every node answers plain HTTP `GET /metrics` next to its gRPC service, unauthenticated:
/// exactly one node reports itself leader and all agree on who; each node's replica counts the
/// submitted jobs by cluster and status; a follower that took submits counts the writes it
/// forwarded to the leader (and its Members answer is the leader's view, all healthy), and the
/// gRPC calls it served by method and status code with their latency (the submits Ok, a get of
/// an unknown job NotFound, the leader's AppendEntries Ok); a plugin killed under the node
/// shows as one restart and is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_raft_jobs_plugins_and_forwarding() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (1..=3).find(|i| *i != leader).expect("a follower") as usize;
    let client = cluster.client(follower);
    for i in 0..4 {
        client.submit(&job(&format!("counted-{i}"), &[])).await?;
    }
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    for addr in &addrs {
        wait_until("the replica to count four Pending jobs", DEADLINE, || async {
            let m = scrape(addr).await?;
            let pending = value(&m, r#"launcher_node_jobs{cluster="Local",status="Pending"}"#);
            Ok((pending == 4.0).then_some(()))
        })
        .await?;
    }
    let mut leaders = 0.0;
    for addr in &addrs {
        let m = scrape(addr).await?;
        leaders += value(&m, "launcher_node_raft_is_leader");
        assert_eq!(value(&m, "launcher_node_raft_leader"), leader as f64, "{addr}");
        assert!(value(&m, "launcher_node_raft_applied_index") > 0.0);
        assert!(value(&m, "launcher_node_storage_bytes") > 0.0);
        assert!(
            m.iter().any(|(k, _)| k == "launcher_node_snapshot_bytes"),
            "the snapshot size is reported"
        );
        assert_eq!(sum(&m, "launcher_node_jobs{"), 4.0, "{addr}");
        if value(&m, "launcher_node_raft_is_leader") == 1.0 {
            // The leader applies only what is committed; every member's progress is listed
            // and a majority has stored the commit index.
            let commit = value(&m, "launcher_node_raft_commit_index");
            assert!(commit >= value(&m, "launcher_node_raft_applied_index"), "{m:?}");
            assert!(commit <= value(&m, "launcher_node_raft_last_log_index"), "{m:?}");
            let matched: Vec<f64> = m
                .iter()
                .filter(|(k, _)| k.starts_with("launcher_node_raft_matched_index{"))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(matched.len(), 3, "{m:?}");
            assert!(matched.iter().filter(|v| **v >= commit).count() >= 2, "{m:?}");
        } else {
            assert!(!m
                .iter()
                .any(|(k, _)| k.starts_with("launcher_node_raft_commit_index")));
        }
    }
    assert_eq!(leaders, 1.0);
    // Members asked of a follower are the leader's view: every member healthy and applying.
    let members = client
        .rpc()
        .members(launcher_proto::launcher::MembersRequest {
            caller: Some(launcher_tests::client::admin()),
        })
        .await?
        .into_inner();
    assert_eq!(members.members.len(), 3);
    for m in &members.members {
        assert!(m.healthy && m.applied_index > 0, "seen from a follower: {m:?}");
    }
    let m = scrape(&addrs[follower - 1]).await?;
    assert!(
        value(
            &m,
            r#"launcher_node_forwarded_requests_total{kind="write_to_leader"}"#
        ) >= 4.0,
        "{m:?}"
    );
    assert_eq!(value(&m, r#"launcher_node_plugin_up{cluster="Local"}"#), 1.0);

    let unknown = client
        .get_as(launcher_tests::client::admin(), "no-such-job")
        .await;
    assert_eq!(unknown.map(|_| ()).unwrap_err().code(), tonic::Code::NotFound);
    let m = scrape(&addrs[follower - 1]).await?;
    let submit = r#"method="launcher.v1.Launcher/SubmitJob""#;
    assert_eq!(
        series(&m, "launcher_node_rpc_requests_total", &[submit, r#"code="Ok""#]),
        4.0,
        "{m:?}"
    );
    assert_eq!(
        series(&m, "launcher_node_rpc_duration_seconds_count", &[submit]),
        4.0
    );
    assert_eq!(
        series(
            &m,
            "launcher_node_rpc_requests_total",
            &[r#"method="launcher.v1.Launcher/GetJob""#, r#"code="NotFound""#]
        ),
        1.0,
        "{m:?}"
    );
    assert!(
        series(
            &m,
            "launcher_node_rpc_requests_total",
            &[r#"method="launcher.raft.Raft/AppendEntries""#, r#"code="Ok""#]
        ) > 0.0,
        "a follower serves the leader's AppendEntries: {m:?}"
    );

    let victim = cluster.nodes[follower - 1].plugin_pids();
    assert_eq!(victim.len(), 1, "one plugin: {victim:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim[0]),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until("the plugin restart to be counted", DEADLINE, || async {
        let m = scrape(&addrs[follower - 1]).await?;
        let restarts = value(&m, r#"launcher_node_plugin_restarts_total{cluster="Local"}"#);
        let up = value(&m, r#"launcher_node_plugin_up{cluster="Local"}"#);
        Ok((restarts == 1.0 && up == 1.0).then_some(()))
    })
    .await?;
    Ok(())
}

/// Concurrent writes are group-committed: once the leader knows that every member applies
/// batches (its group-commit gauge reads 1), 64 submits sent at once are all acknowledged as
/// 64 distinct jobs, every node lists exactly those jobs,
/// and the leader proposed them in fewer Raft entries than commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_share_raft_entries() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let leader_addr = cluster.nodes[leader - 1].addr();
    wait_until("the leader to enable group commit", DEADLINE, || async {
        let m = scrape(&leader_addr).await?;
        Ok((value(&m, "launcher_node_group_commit") == 1.0).then_some(()))
    })
    .await?;
    let proposed = |m: &[(String, f64)], kind: &str| {
        value(m, &format!(r#"launcher_node_proposed_total{{kind="{kind}"}}"#))
    };
    eprintln!("group commit on after {:?}", started.elapsed());
    let before = scrape(&leader_addr).await?;
    let client = cluster.client(leader);
    let submits = (0..64).map(|i| {
        let client = client.clone();
        async move { client.submit(&job(&format!("grouped-{i}"), &[])).await }
    });
    let mut acked = std::collections::BTreeSet::new();
    for r in futures::future::join_all(submits).await {
        let r = r?;
        assert!(r.created);
        acked.insert(launcher_tests::client::job_id(&r.job));
    }
    assert_eq!(acked.len(), 64, "64 distinct jobs");
    let after = scrape(&leader_addr).await?;
    let entries = proposed(&after, "entries") - proposed(&before, "entries");
    let commands = proposed(&after, "commands") - proposed(&before, "commands");
    assert!(commands >= 64.0, "every submit was proposed: {commands}");
    assert!(
        entries < commands,
        "64 concurrent submits went into {entries} entries for {commands} commands"
    );
    eprintln!("64 concurrent submits: {commands} commands in {entries} Raft entries");
    // Every replica holds exactly the acknowledged jobs once it has applied the last one.
    let (index, on_leader) = client.list_all().await?;
    let ids = |listed: &[Vec<u8>]| -> std::collections::BTreeSet<String> {
        listed.iter().map(|b| launcher_tests::client::job_id(b)).collect()
    };
    assert_eq!(ids(&on_leader), acked);
    for i in 1..=3 {
        let (_, listed) = cluster.client(i).list_stale(index).await?;
        assert_eq!(ids(&listed), acked, "node {i} from index {index}");
    }
    Ok(())
}
