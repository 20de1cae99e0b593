use launcher_proto::launcher::ListJobsRequest;
use launcher_tests::client::{job_id, NodeClient};
use launcher_tests::{init_tracing, job, wait_until, ClusterOpts, ProcessCluster, TestPlugin, DEADLINE};

/// Listings taken at one applied index, from each node, with a set of filters.
async fn listings_at(
    clients: &[NodeClient],
    req: &ListJobsRequest,
) -> anyhow::Result<Vec<(u64, Vec<Vec<u8>>)>> {
    let mut out = Vec::new();
    for c in clients {
        out.push(c.list(req.clone()).await?);
    }
    Ok(out)
}

/// Three nodes elect a leader; submits through any node are committed; listings from all
/// three nodes at the same applied index are byte-identical for a set of filters (docs/guarantees.md 7.3).
/// The plugin keeps jobs Pending, so every status filter has something to match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_anywhere_and_identical_listings() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await?;
    assert!((1..=3).contains(&leader));
    let clients: Vec<NodeClient> = (1..=3).map(|i| cluster.client(i)).collect();
    let mut ids = Vec::new();
    let mut last_index = 0;
    for round in 0..12 {
        let c = &clients[round % 3];
        let tags: &[&str] = if round % 2 == 0 {
            &["even", "all"]
        } else {
            &["odd", "all"]
        };
        let caller = launcher_tests::client::user(if round % 3 == 0 { "bob" } else { "alice" });
        let mut body = job(&format!("job-{round}"), tags);
        body["metadata"] =
            serde_json::json!({"big": 12345678901234567890u64, "nested": {"b": 1, "a": [1.5, 2]}});
        let reply = c.submit_as(caller, &body, None).await?;
        assert!(reply.created);
        ids.push(job_id(&reply.job));
        last_index = last_index.max(reply.applied_index);
    }
    // Linearizable listings on every node include every acknowledged submit.
    for c in &clients {
        let (_, jobs) = c.list_all().await?;
        let got: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
        assert_eq!(got, ids, "listing order is submission order on {}", c.addr);
    }
    let filters = vec![
        ListJobsRequest::default(),
        ListJobsRequest {
            tags: vec!["even".into()],
            ..Default::default()
        },
        ListJobsRequest {
            tags: vec!["all".into(), "odd".into()],
            ..Default::default()
        },
        ListJobsRequest {
            user: "bob".into(),
            ..Default::default()
        },
        ListJobsRequest {
            statuses: vec!["Pending".into(), "Running".into()],
            ..Default::default()
        },
        ListJobsRequest {
            fields: vec!["status".into(), "name".into()],
            ..Default::default()
        },
        ListJobsRequest {
            limit: 5,
            after: ids[2].clone(),
            ..Default::default()
        },
    ];
    for f in filters {
        // Listings at one applied index: wait until all three report the same index.
        let lists = wait_until("three listings at the same applied index", DEADLINE, || {
            let clients = clients.clone();
            let f = f.clone();
            async move {
                let l = listings_at(&clients, &f).await?;
                Ok(l.iter().all(|x| x.0 == l[0].0).then_some(l))
            }
        })
        .await?;
        assert!(lists[0].0 >= last_index);
        assert!(!lists[0].1.is_empty(), "filter {f:?} matched nothing");
        for l in &lists[1..] {
            assert_eq!(l.1, lists[0].1, "listings differ at index {} for {f:?}", l.0);
        }
    }
    // The metadata integer survived as an integer, byte for byte.
    let (_, jobs) = clients[1].list_all().await?;
    let text = String::from_utf8(jobs[0].clone())?;
    assert!(
        text.contains(r#""metadata":{"big":12345678901234567890,"nested":{"b":1,"a":[1.5,2]}}"#),
        "{text}"
    );
    Ok(())
}

/// Killing the leader with SIGKILL: a new leader is elected, every acknowledged submit is
/// still listed, and new submits succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_keeps_acknowledged_jobs() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut acked = Vec::new();
    for i in 0..20 {
        let r = cluster
            .client(follower)
            .submit(&job(&format!("before-{i}"), &[]))
            .await?;
        acked.push(job_id(&r.job));
    }
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await? as usize;
    assert_ne!(new_leader, leader, "a new leader is elected");
    let r = cluster.client(follower).submit(&job("after", &[])).await?;
    acked.push(job_id(&r.job));
    for i in (1..=3).filter(|i| *i != leader) {
        let (_, jobs) = cluster.client(i).list_all().await?;
        let got: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
        assert_eq!(got, acked, "node {i} lists every acknowledged job");
    }
    Ok(())
}
