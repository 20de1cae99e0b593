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

/// A plugin that stops answering heartbeats (here: frozen with SIGSTOP) is replaced by a new
/// process, and the job that ran meanwhile is recovered with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_plugin_is_restarted_after_missed_heartbeats() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        heartbeat_interval_seconds: 1,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("through-a-hang", "sleep 2; exit 5"), None)
            .await?
            .job,
    );
    c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    let before: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
    for pid in &before {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        )?;
    }
    let after = wait_until("hung plugins to be replaced", DEADLINE, || {
        let pids: Vec<i32> = (1..=3).flat_map(|i| cluster.nodes[i - 1].plugin_pids()).collect();
        let replaced = pids.len() == 3 && pids.iter().all(|p| !before.contains(p));
        async move { Ok(replaced.then_some(pids)) }
    })
    .await?;
    assert!(
        before.iter().all(|p| !alive(*p)),
        "the hung processes were killed"
    );
    let done = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(5)),
        "{done}"
    );
    assert_eq!(after.len(), 3);
    assert!(
        cluster.log(1).contains("no heartbeat"),
        "the node says why it restarted the plugin"
    );
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
    let st = match cluster.wait_exit(1).await {
        Ok(st) => st,
        Err(e) => anyhow::bail!("{e}\n{}", cluster.log(1)),
    };
    assert!(!st.success(), "the node must not start");
    let log = cluster.log(1);
    assert!(
        log.contains("cluster 'Broken'") && log.contains("Bootstrap"),
        "{log}"
    );
    Ok(())
}

/// A job is launched at most once per submit (docs/guarantees.md 7.4), even when every node crashes while
/// jobs are being launched: after the restart each job is adopted by its tag, failed as
/// `launch interrupted`, or launched for the first time, and the plugin's own launch log never
/// shows a job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_happen_at_most_once_across_a_full_crash() -> anyhow::Result<()> {
    init_tracing();
    let logdir = tempfile::Builder::new().prefix("launcher-launches-").tempdir()?;
    let launch_log = logdir.path().join("launches.log");
    let opts = ClusterOpts {
        // Submits are answered a while after the plugin took the job: the crash lands in between.
        plugin: TestPlugin::Scripted(format!(
            "launch-log={}\nrun-seconds=1\nsubmit-answer-delay=2\n",
            launch_log.display()
        )),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let submits = (0..30).map(|i| {
        let c = c.clone();
        async move {
            let body = shell_job(&format!("once-{i}"), "exit 0");
            c.submit_as(admin(), &body, None).await.map(|r| job_id(&r.job))
        }
    });
    let ids: Vec<String> = futures::future::try_join_all(submits).await?;
    for i in 1..=3 {
        cluster.kill(i);
    }
    for i in 1..=3 {
        cluster.restart(i).await?;
    }
    cluster.wait_green(3).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let mut interrupted = 0;
    let mut adopted = 0;
    for id in &ids {
        let j = c.wait_job(id, "terminal", terminal).await?;
        let launches = std::fs::read_to_string(&launch_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(&format!("launcher-job:{id}")))
            .count();
        assert!(launches <= 1, "job {id} launched {launches} times");
        if j["statusMessage"] == "launch interrupted" {
            assert_eq!(launches, 0, "an interrupted launch never reached the plugin: {j}");
            interrupted += 1;
        } else {
            assert_eq!((status(&j), launches), ("Finished", 1), "{j}");
            adopted += usize::from(launches == 1);
        }
    }
    // With every answer delayed past the crash, the jobs the plugin took were adopted.
    assert!(
        adopted > 0,
        "the crash landed between launch and answer for some job"
    );
    tracing::info!(interrupted, adopted, "after the crash");
    Ok(())
}

/// A request waiting on a plugin that dies gets error 4 PluginRestarted at once, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_plugin_restarted_when_the_plugin_dies() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("never-answer=8\n".into()),
        request_timeout_seconds: 120,
        ..Default::default()
    };
    let cluster = ProcessCluster::start(1, opts).await?;
    let c = cluster.client(1);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("waited-on", "sleep 30"), None)
            .await?
            .job,
    );
    c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    let waiting = {
        let c = c.clone();
        let id = id.clone();
        tokio::spawn(async move { c.network(&id).await })
    };
    let plugin = cluster.nodes[0].plugin_pids();
    assert_eq!(plugin.len(), 1);
    // Kill the plugin only once the request is surely waiting on it.
    wait_until("the request to be in flight", DEADLINE, || {
        let log = cluster.log(1);
        async move { Ok(log.contains("ignoring request").then_some(())) }
    })
    .await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugin[0]),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let started = std::time::Instant::now();
    let e = waiting.await?.unwrap_err();
    assert_eq!(error_code(&e), 4, "{e:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not a timeout"
    );
    Ok(())
}

/// A submit the plugin never answers times out, is looked up by its tag, and (not found) ends
/// as Failed `launch interrupted`; it is never submitted a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_submit_is_interrupted_not_retried() -> anyhow::Result<()> {
    init_tracing();
    let logdir = tempfile::Builder::new().prefix("launcher-launches-").tempdir()?;
    let launch_log = logdir.path().join("launches.log");
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted(format!("never-answer=2\nlaunch-log={}\n", launch_log.display())),
        request_timeout_seconds: 2,
        ..Default::default()
    };
    let cluster = ProcessCluster::start(1, opts).await?;
    let c = cluster.client(1);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("unanswered", "exit 0"), None)
            .await?
            .job,
    );
    let done = c.wait_job(&id, "ended", terminal).await?;
    assert_eq!(
        (status(&done), done["statusMessage"].as_str()),
        ("Failed", Some("launch interrupted")),
        "{done}"
    );
    assert!(
        std::fs::read_to_string(&launch_log)
            .unwrap_or_default()
            .is_empty(),
        "nothing was launched"
    );
    Ok(())
}

/// A malformed filter file stops the node at start-up with the file and line of the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_filter_file_stops_the_node() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    cluster.terminate(1).await?;
    let file = cluster.nodes[0].dir.join("launcher-mounts");
    std::fs::write(&file, "MountType: Host\nMountPth: /x\nPath: /y\n")?;
    cluster.spawn_raw(1, &[])?;
    let st = cluster.wait_exit(1).await?;
    assert!(!st.success(), "the node must not start");
    let log = cluster.log(1);
    assert!(
        log.contains("launcher-mounts:2") && log.contains("MountPth"),
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
    let mut plugin_ids = Vec::new();
    for id in &ids {
        let j = c.wait_job(id, "running", |j| status(j) == "Running").await?;
        pids.push(j["pid"].as_i64().expect("pid") as i32);
        plugin_ids.push(j["pluginJobId"].as_str().expect("plugin job id").to_string());
    }
    assert!(pids.iter().all(|p| alive(*p)));
    // Which node runs which job: its Local plugin keeps a state directory per job.
    let owned_by = |node: usize| -> Vec<usize> {
        let jobs = cluster.nodes[node - 1].dir.join("scratch/local/jobs");
        (0..ids.len())
            .filter(|n| jobs.join(&plugin_ids[*n]).exists())
            .collect()
    };
    let victim = (1..=3)
        .filter(|i| *i != leader)
        .max_by_key(|i| owned_by(*i).len())
        .expect("two followers");
    let expected = owned_by(victim);
    assert!(!expected.is_empty(), "placement gave the victim a job");
    cluster.kill(victim);
    let lost = wait_until("the lost member's jobs to fail", DEADLINE, || {
        let c = c.clone();
        let ids = ids.clone();
        let expected = expected.clone();
        async move {
            let mut lost = Vec::new();
            for (n, id) in ids.iter().enumerate() {
                let j = c.job(id).await?;
                if j["statusMessage"] == "node lost" {
                    assert_eq!(status(&j), "Failed");
                    lost.push(n);
                }
            }
            // One NodeLost command fails them all, but this loop reads the jobs one by one.
            Ok((lost.len() >= expected.len()).then_some(lost))
        }
    })
    .await?;
    assert_eq!(lost, expected, "exactly the victim's jobs failed");
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
