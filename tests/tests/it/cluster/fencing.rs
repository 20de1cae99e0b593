//! Fencing that does not depend on the order of events: whatever a paused owner hears first
//! when it wakes up (its plugin's answer to a submit, a status change, the log entries that
//! took the job away), a job the cluster ended or moved is not left running in its plugin.
//!
//! Both tests run the scripted third-party plugin (`tests/plugins/scripted-plugin.py`), whose
//! jobs are simulated and kept in a state file per node, and pause the owner with SIGSTOP (its
//! plugin keeps running and keeps writing to the pipe).

use std::path::Path;

use anyhow::Context as _;
use launcher_tests::client::{admin, job_id};
use launcher_tests::{
    init_tracing, shell_job, wait_until, ClusterOpts, ProcessCluster, TestPlugin, DEADLINE,
};

fn status(j: &serde_json::Value) -> &str {
    j["status"].as_str().unwrap_or_default()
}

/// The status the scripted plugin under `node_dir` gives the job tagged for launcher job `id`
/// (None: it has no such job).
fn plugin_status(node_dir: &Path, id: &str) -> anyhow::Result<Option<String>> {
    let path = node_dir.join("scratch/local/scripted-plugin-local.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let state: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let tag = format!("launcher-job:{id}");
    Ok(state["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["job"]["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag.as_str()))
        })
        .map(|r| status(&r["job"]).to_string()))
}

/// The node (1-based) whose plugin holds launcher job `id`.
async fn holder(cluster: &ProcessCluster, id: &str) -> anyhow::Result<usize> {
    wait_until("a plugin to take the job", DEADLINE, || async {
        for i in 1..=cluster.nodes.len() {
            if plugin_status(&cluster.nodes[i - 1].dir, id)?.is_some() {
                return Ok(Some(i));
            }
        }
        Ok(None)
    })
    .await
}

/// Waits until the plugin of node `node` shows the job ended (killed by fencing).
async fn wait_fenced(cluster: &ProcessCluster, node: usize, id: &str) -> anyhow::Result<String> {
    let dir = cluster.nodes[node - 1].dir.clone();
    wait_until("the owner to stop the job it no longer owns", DEADLINE, || {
        let dir = dir.clone();
        async move {
            let st = plugin_status(&dir, id)?.context("the plugin forgot the job")?;
            Ok(matches!(st.as_str(), "Killed" | "Canceled" | "Failed" | "Finished").then_some(st))
        }
    })
    .await
}

/// Once the paused owner runs again, its plugin ends the job by a kill (fencing), and the
/// cluster, asked through `survivor`, still says the job failed as `node lost`.
async fn expect_fenced(
    cluster: &ProcessCluster,
    survivor: &launcher_tests::NodeClient,
    owner: usize,
    id: &str,
) -> anyhow::Result<()> {
    let ended = wait_fenced(cluster, owner, id).await?;
    assert_eq!(ended, "Killed");
    let j = survivor.job(id).await?;
    assert_eq!(
        (status(&j), &j["statusMessage"]),
        ("Failed", &"node lost".into()),
        "{j}"
    );
    Ok(())
}

/// The plugin took the job, but its answer to the submit reaches the owner only after the
/// cluster declared the (paused) owner lost and failed the job: the late launch is stopped,
/// not left running untracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_answered_after_the_job_was_taken_is_stopped() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 2,
        plugin: TestPlugin::Scripted("submit-answer-delay=8\n".into()),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("late-launch", "sleep 300"), None)
            .await?
            .job,
    );
    let owner = holder(&cluster, &id).await?;
    // The owner waits for the plugin's answer; pause it before the answer comes.
    cluster.pause(owner).await?;
    let survivor = (1..=3).find(|i| *i != owner).context("a survivor")?;
    let sc = cluster.client(survivor);
    let j = sc
        .wait_job(&id, "failed as node lost", |j| j["statusMessage"] == "node lost")
        .await?;
    assert_eq!(status(&j), "Failed", "{j}");
    assert_eq!(
        plugin_status(&cluster.nodes[owner - 1].dir, &id)?.as_deref(),
        Some("Running"),
        "the plugin runs the job while its owner is paused"
    );
    cluster.resume(owner)?;
    expect_fenced(&cluster, &sc, owner, &id).await
}

/// The plugin reports a status change (Pending → Running) of a job that the cluster failed as
/// `node lost` while its owner was paused, and the owner's worker handles that event before it
/// hears that the job was taken (its update is refused as stale): the job's process is stopped
/// all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_after_the_job_was_taken_does_not_keep_it_running() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 2,
        // GetJob (request type 3) is never answered.
        plugin: TestPlugin::Scripted("pending-seconds=8\nnever-answer=3\n".into()),
        request_timeout_seconds: 3,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("late-status", "sleep 300"), None)
            .await?
            .job,
    );
    // The owner committed the plugin's id for the job: it tracks the job from now on.
    let j = c
        .wait_job(&id, "tracked", |j| j["pluginJobId"].is_string())
        .await?;
    assert_eq!(status(&j), "Pending", "{j}");
    let owner = holder(&cluster, &id).await?;
    cluster.pause(owner).await?;
    let survivor = (1..=3).find(|i| *i != owner).context("a survivor")?;
    let sc = cluster.client(survivor);
    sc.wait_job(&id, "failed as node lost", |j| j["statusMessage"] == "node lost")
        .await?;
    // The job starts running in the plugin while its owner is still paused.
    let dir = cluster.nodes[owner - 1].dir.clone();
    wait_until("the plugin to start the job", DEADLINE, || {
        let dir = dir.clone();
        let id = id.clone();
        async move { Ok((plugin_status(&dir, &id)?.as_deref() == Some("Running")).then_some(())) }
    })
    .await?;
    // When the owner wakes up, the status event reaches its worker, which asks the plugin for
    // the job's details (a status event carries no pid) and gets no answer for
    // request-timeout-seconds: meanwhile the log entry that took the job away is applied, and
    // the worker hears of it only after its own update was refused.
    cluster.resume(owner)?;
    expect_fenced(&cluster, &sc, owner, &id).await
}
