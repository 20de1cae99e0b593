//! The plugin host: restarts, timeouts, bootstrap failures, node loss and fencing, and a
//! third-party plugin it did not write.

use launcher_tests::client::{admin, error_code, job_id};
use launcher_tests::{
    init_tracing, shell_job, wait_until, ClusterOpts, ProcessCluster, TestPlugin, DEADLINE,
};

fn status(j: &serde_json::Value) -> &str {
    j["status"].as_str().unwrap_or_default()
}

fn terminal(j: &serde_json::Value) -> bool {
    matches!(status(j), "Finished" | "Failed" | "Killed" | "Canceled")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// A plugin killed while its job runs is restarted by the node; after it bootstraps again the
/// job is found again and its end is reported with the right exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_is_restarted_and_its_jobs_recovered() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(
            admin(),
            &shell_job("survivor", "sleep 3; echo done; exit 7"),
            None,
        )
        .await?
        .job,
    );
    c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    let before: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
    assert_eq!(before.len(), 3, "one plugin per node");
    for pid in &before {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    let done = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(7)),
        "{done}\n{}",
        cluster.logs()
    );
    assert_eq!(c.output(&id, "stdout", false).await?, "done\n");
    let after = wait_until("restarted plugins", DEADLINE, || {
        let pids: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
        async move { Ok((pids.len() == 3).then_some(pids)) }
    })
    .await?;
    assert!(after.iter().all(|p| !before.contains(p)), "new plugin processes");
    Ok(())
}

/// The node drives a plugin it did not write (a Python script speaking the Plugin API): jobs
/// run to their exit code, output, network and cluster info come from it, and a request it
/// never answers ends in error 5 Timeout while the plugin keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_plugin_is_driven_and_timeouts_do_not_restart_it() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("never-answer=8\n".into()),
        request_timeout_seconds: 2,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("scripted", "exit 3"), None)
            .await?
            .job,
    );
    let done = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(3)),
        "{done}"
    );
    assert!(
        done["pluginJobId"].as_str().is_some_and(|p| p.starts_with("sp-")),
        "{done}"
    );
    assert_eq!(c.output(&id, "stdout", false).await?, "output of scripted\n");
    let info = c.cluster_info().await?;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        (info[0]["name"].as_str(), info[0]["queues"][0].as_str()),
        (Some("Local"), Some("default"))
    );
    let pids: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
    let e = c.network(&id).await.unwrap_err();
    assert_eq!(
        error_code(&e),
        5,
        "a request the plugin never answers times out: {e:?}"
    );
    // The plugin was not restarted for it, and still answers.
    let id2 = job_id(
        &c.submit_as(admin(), &shell_job("again", "exit 0"), None)
            .await?
            .job,
    );
    c.wait_job(&id2, "finished", |j| status(j) == "Finished").await?;
    let now: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
    assert_eq!(pids, now, "no plugin restarted after a timeout");
    Ok(())
}

/// A node whose plugin cannot bootstrap refuses to start and says which cluster failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_bootstrap_stops_the_node() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let conf = cluster.nodes[0].dir.join("launcher.conf");
    let text = std::fs::read_to_string(&conf)?;
    let broken = format!("{text}\n[cluster]\nname=Broken\ntype=Plugin\nexe=/bin/false\n");
    cluster.terminate(1).await?;
    std::fs::write(&conf, broken)?;
    cluster.spawn_raw(1, &[])?;
    let st = cluster.wait_exit(1).await?;
    assert!(!st.success(), "the node must not start");
    let log = cluster.log(1);
    assert!(
        log.contains("cluster 'Broken'") && log.contains("Bootstrap"),
        "{log}"
    );
    Ok(())
}

/// A member silent for node-lost-timeout-seconds has its running jobs marked Failed `node lost`;
/// when it comes back it kills the processes of those jobs (fencing), and jobs on other nodes
/// keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_jobs_fail_and_are_fenced_on_return() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 3,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = shell_job(&format!("long-{i}"), "sleep 45");
        ids.push(job_id(&c.submit_as(admin(), &body, None).await?.job));
    }
    let mut pids = Vec::new();
    for id in &ids {
        let j = c.wait_job(id, "running", |j| status(j) == "Running").await?;
        pids.push(j["pid"].as_i64().expect("pid") as i32);
    }
    assert!(pids.iter().all(|p| alive(*p)));
    let victim = if leader == 3 { 2 } else { 3 };
    cluster.kill(victim);
    let lost = wait_until("the lost member's jobs to fail", DEADLINE, || {
        let c = c.clone();
        let ids = ids.clone();
        async move {
            let mut lost = Vec::new();
            for (n, id) in ids.iter().enumerate() {
                let j = c.job(id).await?;
                if j["statusMessage"] == "node lost" {
                    assert_eq!(status(&j), "Failed");
                    lost.push(n);
                }
            }
            Ok((!lost.is_empty()).then_some(lost))
        }
    })
    .await?;
    assert_eq!(
        lost.len(),
        2,
        "placement spread six jobs over three nodes: {lost:?}"
    );
    // The crashed node's job processes outlived it (their supervisors are detached)...
    for n in &lost {
        assert!(
            alive(pids[*n]),
            "job process {} still runs before fencing",
            pids[*n]
        );
    }
    // ...until it comes back and fences them.
    cluster.restart(victim).await?;
    wait_until("fencing to kill the lost jobs' processes", DEADLINE, || {
        let gone = lost.iter().all(|n| !alive(pids[*n]));
        async move { Ok(gone.then_some(())) }
    })
    .await?;
    for (n, id) in ids.iter().enumerate() {
        if lost.contains(&n) {
            continue;
        }
        let j = c.job(id).await?;
        assert_eq!(status(&j), "Running", "{j}");
        assert!(alive(pids[n]));
        c.control_as(admin(), id, "kill").await?;
    }
    Ok(())
}
