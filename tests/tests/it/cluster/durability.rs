use launcher_tests::client::job_id;
use launcher_tests::diskfault::Tmpfs;
use launcher_tests::{init_tracing, job, wait_until, ClusterOpts, ProcessCluster, DEADLINE};

async fn submit_n(c: &ProcessCluster, node: usize, n: usize, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = c
            .client(node)
            .submit(&job(&format!("{prefix}-{i}"), &[prefix]))
            .await?;
        ids.push(job_id(&r.job));
    }
    Ok(ids)
}

async fn ids_on(c: &ProcessCluster, node: usize) -> anyhow::Result<Vec<String>> {
    Ok(c.client(node)
        .list_all()
        .await?
        .1
        .iter()
        .map(|j| job_id(j))
        .collect())
}

/// SIGKILL of every node at once, then a restart: every acknowledged job is back (writes are
/// acknowledged only after a majority fsynced them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_crash_loses_no_acknowledged_job() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let acked = submit_n(&cluster, 2, 30, "crash").await?;
    for i in 1..=3 {
        cluster.kill(i);
    }
    for i in 1..=3 {
        cluster.restart(i).await?;
    }
    cluster.wait_green(3).await?;
    for i in 1..=3 {
        assert_eq!(ids_on(&cluster, i).await?, acked, "node {i} after the crash");
    }
    Ok(())
}

/// A follower killed while the cluster keeps writing catches up when it restarts with its data;
/// one that missed more entries than the snapshot threshold catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_catch_up_by_log_and_by_snapshot() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        snapshot_log_entries: 20,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let down = if leader == 3 { 2 } else { 3 };
    let up = (1..=3).find(|i| *i != down).expect("a live node");

    // Short outage: catches up from the log.
    cluster.kill(down);
    let mut acked = submit_n(&cluster, up, 5, "short").await?;
    cluster.restart(down).await?;
    let want = acked.clone();
    let client = cluster.client(down);
    wait_until("the restarted node to list every job", DEADLINE, || {
        let (client, want) = (client.clone(), want.clone());
        async move {
            let ids: Vec<String> = client.list_stale(0).await?.1.iter().map(|j| job_id(j)).collect();
            Ok((ids == want).then_some(()))
        }
    })
    .await?;

    // Long outage: the log it needs is purged behind snapshots, so it gets a snapshot.
    cluster.kill(down);
    acked.extend(submit_n(&cluster, up, 80, "long").await?);
    cluster.restart(down).await?;
    let want = acked.clone();
    wait_until("the long-down node to list every job", DEADLINE, || {
        let (client, want) = (client.clone(), want.clone());
        async move {
            let ids: Vec<String> = client.list_stale(0).await?.1.iter().map(|j| job_id(j)).collect();
            Ok((ids == want).then_some(()))
        }
    })
    .await?;
    assert!(
        cluster.log(down).contains("installed snapshot"),
        "node {down} caught up by snapshot:\n{}",
        cluster.logs()
    );
    assert_eq!(ids_on(&cluster, down).await?, acked);
    Ok(())
}

/// Corrupted sled data at start-up stops the node with an error naming the data dir; the node
/// never carries on with a silently reset store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_refused_not_reset() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    submit_n(&cluster, 1, 3, "x").await?;
    cluster.terminate(1).await?;
    let data = cluster.nodes[0].data_dir();
    let db_file = data.join("db").join("db");
    let mut bytes = std::fs::read(&db_file)?;
    let identity_before = std::fs::read(data.join("identity.json"))?;
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&db_file, &bytes)?;
    cluster.spawn_raw(1, &[])?;
    let status = cluster.wait_exit(1).await?;
    assert!(!status.success(), "a node with corrupt data must not start");
    let log = cluster.log(1);
    assert!(
        log.contains(&data.display().to_string()),
        "the error names the data dir:\n{log}"
    );
    // The node did not re-form or rejoin on the damaged store: its identity is untouched.
    // (sled itself truncates a damaged log when it opens it; that is why it must refuse.)
    assert_eq!(std::fs::read(data.join("identity.json"))?, identity_before);
    assert!(log.contains("does not carry that identity"), "{log}");
    Ok(())
}

/// `snapshot save` exports a consistent snapshot from a running cluster, and
/// `recover --from FILE --force-new-cluster` starts a new one-node cluster that lists every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_disaster_recovery() -> anyhow::Result<()> {
    init_tracing();
    let mut old = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let acked = submit_n(&old, 2, 10, "backup").await?;
    let file = old.root.path().join("backup.snap");
    let conf = old.nodes[0].dir.join("launcher.conf");
    let out = std::process::Command::new(launcher_tests::process::node_binary())
        .arg("--config")
        .arg(&conf)
        .args(["snapshot", "save"])
        .arg(&file)
        .args(["--node", &old.nodes[1].addr()])
        .output()?;
    assert!(
        out.status.success(),
        "snapshot save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("saved snapshot"));
    // The old cluster is lost for good.
    for i in 1..=3 {
        old.kill(i);
    }
    let mut fresh = ProcessCluster::start(1, ClusterOpts::default()).await?;
    fresh.terminate(1).await?;
    fresh.wipe(1)?;
    // Without the confirmation flag, nothing happens.
    fresh.spawn_raw(1, &["recover", "--from", file.to_str().unwrap()])?;
    assert!(!fresh.wait_exit(1).await?.success());
    fresh.spawn_raw(
        1,
        &["recover", "--from", file.to_str().unwrap(), "--force-new-cluster"],
    )?;
    fresh.rebind(1).await?;
    assert_ne!(
        fresh.cluster_id(),
        old.cluster_id(),
        "recovery starts a new cluster"
    );
    assert_eq!(ids_on(&fresh, 1).await?, acked);
    let r = fresh.client(1).submit(&job("after-recovery", &[])).await?;
    assert!(r.created);
    Ok(())
}

/// A full disk stops the node with a plain fatal storage error, and once space is back it
/// starts cleanly with every acknowledged job (needs root to mount a small tmpfs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_stops_the_node_plainly_and_it_recovers() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let mut acked = submit_n(&cluster, 1, 3, "before").await?;
    cluster.terminate(1).await?;
    // Move the data dir onto a small tmpfs.
    let data = cluster.nodes[0].data_dir();
    let disk = Tmpfs::mount_over(&data, 6 << 20)?;
    cluster.restart(1).await?;
    cluster.rebind(1).await?;
    // Fill it: each job carries ~600 KiB of stdin.
    let big = "x".repeat(600 * 1024);
    let mut refused = None;
    for i in 0..40 {
        let mut body = job(&format!("fill-{i}"), &["fill"]);
        body["stdin"] = big.clone().into();
        match cluster.client(1).submit(&body).await {
            Ok(r) => acked.push(job_id(&r.job)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a 6 MiB disk cannot take 40 x 600 KiB");
    eprintln!("the submit that hit the full disk was refused with: {refused:?}");
    let status = cluster.wait_exit(1).await?;
    assert!(!status.success(), "the node stops on a full disk");
    let log = cluster.log(1);
    assert!(
        log.contains("fatal") && log.contains("disk is full"),
        "plain message expected:\n{log}"
    );
    // Space is back: the node starts cleanly and every acknowledged job is there.
    disk.resize(256 << 20)?;
    cluster.restart(1).await?;
    cluster.wait_green(1).await?;
    // Every acknowledged job is back. The refused submit's outcome was unknown to its client:
    // its entry may have been committed to the log before the state machine ran out of space,
    // in which case it is applied now. Nothing else may appear.
    let listed = ids_on(&cluster, 1).await?;
    assert_eq!(listed[..acked.len()], acked[..], "acknowledged jobs, in order");
    assert!(
        listed.len() <= acked.len() + 1,
        "at most the one unacknowledged submit: {listed:?}"
    );
    assert!(cluster.client(1).submit(&job("after-space", &[])).await?.created);
    Ok(())
}
