//! Control requests are durable work items: once one is committed, the job's owner carries it
//! out exactly once, even when it crashed before it could, and then takes it off the job.

use super::metrics::{scrape, value};
use launcher_tests::client::{admin, job_id};
use launcher_tests::{init_tracing, shell_job, wait_until, ClusterOpts, ProcessCluster, DEADLINE};

/// The value of the unlabelled series `name` in node `addr`'s `/metrics` (0 when absent).
async fn metric(addr: &str, name: &str) -> anyhow::Result<f64> {
    Ok(value(&scrape(addr).await?, name))
}

/// The sum of every series of `name` whose labels include `label` (0 when absent).
async fn labelled(addr: &str, name: &str, label: &str) -> anyhow::Result<f64> {
    Ok(scrape(addr)
        .await?
        .iter()
        .filter(|(k, _)| {
            k.split_once('{')
                .is_some_and(|(n, l)| n == name && l.contains(label))
        })
        .map(|(_, v)| v)
        .sum())
}

const PENDING: &str = "launcher_node_pending_controls";

/// Waits until node `i`'s replica holds `n` control requests not yet carried out.
async fn wait_pending(cluster: &ProcessCluster, i: usize, n: f64) -> anyhow::Result<()> {
    let addr = cluster.nodes[i - 1].addr();
    wait_until(
        &format!("node {i} to hold {n} pending control requests"),
        DEADLINE,
        || {
            let addr = addr.clone();
            async move { Ok((metric(&addr, PENDING).await? == n).then_some(())) }
        },
    )
    .await
}

/// Commits `op` on job `id` through node `entry` while the job's owner is paused, then kills
/// the owner before it could hear of it and restarts it. Returns once the request was
/// committed and the owner runs again.
async fn commit_then_crash_owner(
    cluster: &mut ProcessCluster,
    owner: usize,
    entry: usize,
    id: &str,
    op: &str,
) -> anyhow::Result<()> {
    cluster.pause(owner).await?;
    let client = cluster.client(entry);
    // A paused leader is replaced after the election timeout; the request is sent once the
    // entry node follows a leader that runs, so that it is committed.
    let c = client.clone();
    wait_until(
        &format!("node {entry} to follow a running leader"),
        DEADLINE,
        || {
            let c = c.clone();
            async move {
                let leader = c.status().await?.leader;
                Ok((leader != 0 && leader != owner as u64).then_some(()))
            }
        },
    )
    .await?;
    let (id2, op2) = (id.to_string(), op.to_string());
    // The request commits on the two running nodes; its hand-off to the paused owner hangs.
    let call = tokio::spawn(async move { client.control_as(admin(), &id2, &op2).await });
    wait_pending(cluster, entry, 1.0).await?;
    cluster.kill(owner);
    // With the owner gone the entry node's hand-off fails; the answer is not what is tested.
    let _ = tokio::time::timeout(DEADLINE, call).await;
    cluster.restart(owner).await?;
    Ok(())
}

/// A control request that was committed while the job's owner was frozen, the owner then
/// crashing before it could carry it out, is carried out by the restarted owner: a suspend
/// leaves the job Suspended, a kill ends it Killed, and each is carried out once (the owner's
/// count) and then leaves the job's queue on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_controls_survive_an_owner_crash() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        // The owner is down for a while; it must stay the job's owner, not be declared lost.
        node_lost_timeout_seconds: 600,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let c = cluster.client(1);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("durable-controls", "sleep 600"), None)
            .await?
            .job,
    );
    c.wait_job(&id, "running", |j| {
        j["status"] == "Running" && j["pid"].as_i64().is_some()
    })
    .await?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let owner = wait_until("the node driving the job", DEADLINE, || {
        let addrs = addrs.clone();
        async move {
            for (i, a) in addrs.iter().enumerate() {
                if metric(a, "launcher_node_driven_jobs").await? == 1.0 {
                    return Ok(Some(i + 1));
                }
            }
            Ok(None)
        }
    })
    .await?;
    let entry = (1..=3).find(|i| *i != owner).expect("another node");
    let reader = cluster.client(entry);

    commit_then_crash_owner(&mut cluster, owner, entry, &id, "suspend").await?;
    reader
        .wait_job(&id, "suspended by the restarted owner", |j| {
            j["status"] == "Suspended"
        })
        .await?;
    for i in 1..=3 {
        wait_pending(&cluster, i, 0.0).await?;
    }
    let owner_addr = cluster.nodes[owner - 1].addr();
    assert_eq!(
        labelled(
            &owner_addr,
            "launcher_node_controls_total",
            "operation=\"suspend\""
        )
        .await?,
        1.0,
        "the restarted owner carried the suspend out once"
    );

    commit_then_crash_owner(&mut cluster, owner, entry, &id, "kill").await?;
    let done = reader
        .wait_job(&id, "killed by the restarted owner", |j| j["status"] == "Killed")
        .await?;
    assert_eq!(done["exitCode"], 137, "{done}");
    for i in 1..=3 {
        wait_pending(&cluster, i, 0.0).await?;
    }
    assert_eq!(
        labelled(&owner_addr, "launcher_node_controls_total", "operation=\"kill\"").await?,
        1.0,
        "the restarted owner carried the kill out once"
    );
    Ok(())
}
