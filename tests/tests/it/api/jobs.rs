use launcher_node::writes::WriteRequest;
use launcher_proto::launcher::ListJobsRequest;
use launcher_storage::command::JobUpdate;
use launcher_storage::{Command, CommandV1, JobStatus, Response};
use launcher_tests::client::{admin, error_code, job_id, user};
use launcher_tests::{init_tracing, job, InProcCluster, TestPlugin};

/// A retried submit with the same Idempotency-Key, through any node, returns the first job and
/// creates no second one (docs/guarantees.md 7.5); the same key with another body is refused with code 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_submit_creates_one_job() -> anyhow::Result<()> {
    init_tracing();
    let cluster = InProcCluster::start(3).await?;
    let (c1, c3) = (cluster.client(1).await?, cluster.client(3).await?);
    let body = job("once", &["k"]);
    let first = c1.submit_as(user("alice"), &body, Some("key-1")).await?;
    let again = c3.submit_as(user("alice"), &body, Some("key-1")).await?;
    assert!(first.created && !again.created);
    assert_eq!(
        first.job, again.job,
        "the retry returns the original job, byte for byte"
    );
    let (_, jobs) = c3
        .list(ListJobsRequest {
            caller: Some(user("alice")),
            ..Default::default()
        })
        .await?;
    assert_eq!(jobs.len(), 1);
    let err = c1
        .submit_as(user("alice"), &job("different", &[]), Some("key-1"))
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), 8, "{err:?}");
    // Keys are per user: bob's key-1 is another key.
    assert!(c1.submit_as(user("bob"), &body, Some("key-1")).await?.created);
    Ok(())
}

/// Status updates only move a job forward: stale, repeated and backwards updates are ignored
/// (and counted), and a terminal status and exit code never change (docs/guarantees.md 7.2). The plugin
/// never answers the submit, so only this test's updates reach the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backwards_updates_are_refused_and_terminal_is_final() -> anyhow::Result<()> {
    init_tracing();
    let cluster =
        InProcCluster::start_with_plugin(3, TestPlugin::Scripted("never-answer=2\n".into())).await?;
    let c2 = cluster.client(2).await?;
    let reply = c2.submit(&job("u", &[])).await?;
    let id = job_id(&reply.job);
    // Node 2 may have forwarded the submit: read its replica once it applied it.
    cluster.wait_applied(2, reply.applied_index).await?;
    let shared = cluster.shared(2);
    let (_, meta) = shared.sm.job_with_meta(&id)?.expect("job stored");
    let update = |seq: u64, status: JobStatus, exit: Option<i32>| WriteRequest::Command {
        command: Command::V1(CommandV1::Update(JobUpdate {
            id: id.clone(),
            node: meta.owner,
            epoch: meta.epoch,
            seq,
            status: Some(status),
            exit_code: exit,
            ..Default::default()
        })),
    };
    let applied = |r: Response| matches!(r, Response::Applied { changed: true, .. });
    assert!(applied(
        shared.write(update(1, JobStatus::Running, None)).await?.0
    ));
    assert!(
        !applied(shared.write(update(1, JobStatus::Suspended, None)).await?.0),
        "same seq again"
    );
    assert!(
        !applied(shared.write(update(2, JobStatus::Pending, None)).await?.0),
        "backwards"
    );
    assert!(applied(
        shared.write(update(3, JobStatus::Finished, Some(3))).await?.0
    ));
    assert!(
        !applied(shared.write(update(4, JobStatus::Failed, Some(1))).await?.0),
        "terminal is final"
    );
    assert!(
        !applied(shared.write(update(5, JobStatus::Running, None)).await?.0),
        "terminal is final"
    );
    let got: serde_json::Value = serde_json::from_slice(&c2.get_as(admin(), &id).await?.job)?;
    assert_eq!(
        (got["status"].as_str(), got["exitCode"].as_i64()),
        (Some("Finished"), Some(3))
    );
    assert!(c2.status().await?.ignored_updates >= 4);
    Ok(())
}

/// Users see only their own jobs: another user's job is "not found" (code 3), listing someone
/// else's jobs is forbidden (code 12); admins see everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_isolated() -> anyhow::Result<()> {
    init_tracing();
    let cluster = InProcCluster::start(1).await?;
    let c = cluster.client(1).await?;
    let id = job_id(&c.submit_as(user("alice"), &job("mine", &[]), None).await?.job);
    let err = c.get_as(user("bob"), &id).await.unwrap_err();
    assert_eq!(error_code(&err), 3);
    assert!(c.get_as(admin(), &id).await.is_ok());
    for who in ["alice", "*"] {
        let req = ListJobsRequest {
            caller: Some(user("bob")),
            user: who.into(),
            ..Default::default()
        };
        let err = c.list(req).await.unwrap_err();
        assert_eq!(error_code(&err), 12, "user={who}: {err:?}");
    }
    let (_, bobs) = c
        .list(ListJobsRequest {
            caller: Some(user("bob")),
            ..Default::default()
        })
        .await?;
    assert!(bobs.is_empty());
    let err = c.control_as(user("bob"), &id, "cancel").await.unwrap_err();
    assert_eq!(error_code(&err), 3);
    // Submitting on behalf of someone else needs admin.
    let mut other = job("x", &[]);
    other["user"] = "carol".into();
    let err = c.submit_as(user("bob"), &other, None).await.unwrap_err();
    assert_eq!(error_code(&err), 12);
    let carol = c.submit_as(admin(), &other, None).await?;
    let v: serde_json::Value = serde_json::from_slice(&carol.job)?;
    assert_eq!(v["user"], "carol");
    Ok(())
}

/// Bad input gets a stable code and a clear message, and changes nothing: malformed and
/// unknown-field jobs (2), oversize jobs (14), unknown clusters (2), unknown ids (3), control
/// in the wrong state (6/8), deleting a live job (8). Cancel and delete work as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_stable_codes() -> anyhow::Result<()> {
    init_tracing();
    let cluster =
        InProcCluster::start_with_plugin(1, TestPlugin::Scripted("pending-seconds=600\n".into())).await?;
    let c = cluster.client(1).await?;
    let cases = [
        (serde_json::json!({"name": "x", "cluster": "Local"}), 2, "command"),
        (
            serde_json::json!({"name": "x", "cluster": "Local", "command": "c", "bogus": 1}),
            2,
            "bogus",
        ),
        (
            serde_json::json!({"name": "x", "cluster": "Nope", "command": "c"}),
            2,
            "Nope",
        ),
        (
            serde_json::json!({"name": "x", "cluster": "Local", "command": "c", "stdin": "y".repeat(2 << 20)}),
            14,
            "limit",
        ),
    ];
    for (body, code, needle) in cases {
        let err = c.submit(&body).await.unwrap_err();
        assert_eq!(error_code(&err), code, "{err:?}");
        assert!(
            err.message().contains(needle),
            "message names the problem: {}",
            err.message()
        );
    }
    assert!(c.list_all().await?.1.is_empty(), "nothing was stored");
    let err = c.get_as(admin(), "no-such-job").await.unwrap_err();
    assert_eq!(error_code(&err), 3);
    let id = job_id(&c.submit(&job("live", &[])).await?.job);
    assert_eq!(
        error_code(&c.control_as(admin(), &id, "suspend").await.unwrap_err()),
        6
    );
    assert_eq!(
        error_code(&c.control_as(admin(), &id, "explode").await.unwrap_err()),
        2
    );
    assert_eq!(error_code(&c.delete(&id).await.unwrap_err()), 8);
    // Canceled by the table, by the plugin, or right after its launch completes.
    c.control_as(user("alice"), &id, "cancel").await?;
    c.wait_job(&id, "canceled", |j| j["status"] == "Canceled").await?;
    c.delete(&id).await?;
    assert_eq!(error_code(&c.get_as(admin(), &id).await.unwrap_err()), 3);
    Ok(())
}

/// `members drain` stops new placements on a node (jobs go to the others) and undraining puts
/// it back in rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_nodes_get_no_new_jobs() -> anyhow::Result<()> {
    init_tracing();
    // Jobs stay Pending in the plugin, so they count as active for placement.
    let cluster =
        InProcCluster::start_with_plugin(3, TestPlugin::Scripted("pending-seconds=600\n".into())).await?;
    let c = cluster.client(1).await?;
    let drain = |draining| launcher_proto::launcher::DrainRequest {
        caller: Some(admin()),
        node_id: 2,
        draining,
    };
    // Only admins may drain.
    let mut req = drain(true);
    req.caller = Some(user("bob"));
    assert_eq!(error_code(&c.rpc().drain(req).await.unwrap_err()), 12);
    c.rpc().drain(drain(true)).await?;
    for i in 0..6 {
        let reply = c.submit(&job(&format!("d{i}"), &[])).await?;
        assert_ne!(
            owner_of(&cluster, &reply).await?,
            2,
            "a drained node gets no new job"
        );
    }
    c.rpc().drain(drain(false)).await?;
    // Node 2 has the fewest active jobs now, so it gets the next one.
    let reply = c.submit(&job("back", &[])).await?;
    assert_eq!(owner_of(&cluster, &reply).await?, 2);
    Ok(())
}

/// The node that owns a submitted job, read from node 1's replica once it applied the submit.
async fn owner_of(
    cluster: &InProcCluster,
    reply: &launcher_proto::launcher::JobReply,
) -> anyhow::Result<u64> {
    let s = cluster.shared(1);
    s.wait_applied(reply.applied_index).await?;
    Ok(s.sm
        .job_with_meta(&job_id(&reply.job))?
        .expect("job applied")
        .1
        .owner)
}

/// A follower's linearizable read sees a write acknowledged through another node at once,
/// and an in-process node stopped and restarted with its data catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_see_acknowledged_writes() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = InProcCluster::start(3).await?;
    let leader = cluster.wait_for_leader(1).await? as usize;
    let followers: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let writer = cluster.client(followers[0]).await?;
    let reader = cluster.client(followers[1]).await?;
    for i in 0..10 {
        let id = job_id(&writer.submit(&job(&format!("r{i}"), &[])).await?.job);
        // Linearizable by default: no waiting, no retry.
        assert!(
            reader.get_as(admin(), &id).await.is_ok(),
            "read {i} saw the acknowledged write"
        );
    }
    cluster.kill(followers[1]).await?;
    let r = writer.submit(&job("while-down", &[])).await?;
    cluster.restart(followers[1]).await?;
    cluster.wait_applied(followers[1], r.applied_index).await?;
    let (_, jobs) = cluster
        .client(followers[1])
        .await?
        .list_stale(r.applied_index)
        .await?;
    assert_eq!(jobs.len(), 11);
    Ok(())
}

/// After a leader change, jobs are placed only on members the new leader has actually heard
/// from: never on the node that just died (which would fail them later as "node lost"), and on
/// every live member once their heartbeats arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_after_failover_skips_the_dead_node() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = InProcCluster::start(3).await?;
    let old = cluster.wait_for_leader(1).await?;
    let survivor = (1..=3).find(|i| *i != old as usize).expect("a survivor");
    cluster.kill(old as usize).await?;
    let new_leader = launcher_tests::wait_until("a new leader", launcher_tests::DEADLINE, || {
        let s = cluster.shared(survivor);
        async move { Ok(s.leader().filter(|l| *l != old)) }
    })
    .await?;
    let c = cluster.client(new_leader as usize).await?;
    // Jobs submitted at once, before any heartbeat: never on the dead node.
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..3 {
        let reply = c.submit(&job(&format!("early-{i}"), &[])).await?;
        owners.insert(owner_on(&cluster, new_leader as usize, &reply)?);
    }
    assert!(
        !owners.contains(&old),
        "a job went to the dead node {old}: {owners:?}"
    );
    // Once the other survivor's heartbeat arrived, it gets jobs too.
    let other = (1..=3u64)
        .find(|i| *i != old && *i != new_leader)
        .expect("the other survivor");
    launcher_tests::wait_until(
        "the other survivor to be healthy",
        launcher_tests::DEADLINE,
        || {
            let s = cluster.shared(new_leader as usize);
            async move { Ok(s.is_healthy(other).then_some(())) }
        },
    )
    .await?;
    for i in 0..4 {
        let reply = c.submit(&job(&format!("later-{i}"), &[])).await?;
        owners.insert(owner_on(&cluster, new_leader as usize, &reply)?);
    }
    assert!(
        !owners.contains(&old),
        "a job went to the dead node {old}: {owners:?}"
    );
    assert!(owners.contains(&other), "the live survivor gets jobs: {owners:?}");
    Ok(())
}

/// The owner of a job, read on node `i` (which applied it: it answered the submit as leader).
fn owner_on(
    cluster: &InProcCluster,
    i: usize,
    reply: &launcher_proto::launcher::JobReply,
) -> anyhow::Result<u64> {
    Ok(cluster
        .shared(i)
        .sm
        .job_with_meta(&job_id(&reply.job))?
        .expect("applied")
        .1
        .owner)
}
