//! Sticky routing, identical listings, and failover through the gateway.

use launcher_proto::launcher::ListJobsRequest;
use launcher_tests::{
    init_tracing, wait_until, ClusterOpts, ProcessCluster, TestGateway, TestPlugin, DEADLINE,
};
use reqwest::Method;

/// `GET /jobs` through the gateway is byte-identical to every node's own gRPC listing at the
/// same applied index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_listing_equals_node_listings() -> anyhow::Result<()> {
    init_tracing();
    let (cluster, gw) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let admin = gw.client("admin");
    for i in 0..5 {
        let (st, _) = admin
            .post("/jobs", &serde_json::json!({"name": format!("l{i}"), "cluster": "Local", "command": "exit 0", "user": "alice"}))
            .await?;
        assert_eq!(st, 201);
    }
    // The nodes' drivers still commit launch records for a moment: compare once a gateway
    // listing and all three node listings are taken at one applied index.
    let clients: Vec<_> = (1..=3).map(|i| cluster.client(i)).collect();
    wait_until("identical listings at one index", DEADLINE, || {
        let admin = admin.clone();
        let clients = clients.clone();
        async move {
            let r = admin.req(Method::GET, "/jobs?user=*").send().await?;
            let index: u64 = r.headers()["x-launcher-index"].to_str()?.parse()?;
            let http = r.bytes().await?;
            for c in &clients {
                let (node_index, jobs) = c
                    .list(ListJobsRequest {
                        user: "*".into(),
                        ..Default::default()
                    })
                    .await?;
                if node_index != index {
                    return Ok(None);
                }
                let mut expected = b"[".to_vec();
                expected.extend(jobs.join(&b","[..]));
                expected.push(b']');
                assert_eq!(http.to_vec(), expected, "node at {index} lists differently");
            }
            Ok(Some(()))
        }
    })
    .await?;
    Ok(())
}

/// Each client (by its `launcher-node` cookie) sticks to one node, different clients spread
/// over the nodes; when a client's node dies in the middle of the client's status stream, the
/// stream ends with an `error` event, the client's next requests succeed on another node, a
/// keyless submit sent into the failover creates exactly one job, and a submit retried under
/// one Idempotency-Key creates one job; the client returns to its node once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stick_to_a_node_and_fail_over() -> anyhow::Result<()> {
    init_tracing();
    let (mut cluster, gw) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let admin = gw.client("admin");
    let node_of = |client: String| {
        let admin = admin.clone();
        async move {
            let r = admin
                .req(Method::GET, "/jobs")
                .header("cookie", format!("launcher-node={client}"))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            Ok::<u64, anyhow::Error>(r.headers()["x-launcher-node"].to_str()?.parse()?)
        }
    };
    let mut seen = std::collections::BTreeMap::new();
    for c in 0..24 {
        let client = format!("client{c}");
        let first = node_of(client.clone()).await?;
        for _ in 0..3 {
            assert_eq!(
                node_of(client.clone()).await?,
                first,
                "{client} sticks to its node"
            );
        }
        seen.insert(client, first);
    }
    let nodes: std::collections::BTreeSet<u64> = seen.values().copied().collect();
    assert_eq!(nodes.len(), 3, "clients spread over every node: {seen:?}");

    // Kill the node of client0 (not the leader, so writes go on at once).
    let leader = cluster.wait_for_leader().await?;
    let (victim_client, victim) = seen
        .iter()
        .find(|(_, n)| **n != leader)
        .map(|(c, n)| (c.clone(), *n))
        .expect("a client on a follower");
    // The client is in the middle of a status stream, served by its node, when that dies.
    let (st, watched) = admin
        .post(
            "/jobs",
            &serde_json::json!({"name": "watched", "cluster": "Local", "command": "exit 0", "user": "alice"}),
        )
        .await?;
    assert_eq!(st, 201, "{watched}");
    let stream = admin
        .req(
            Method::GET,
            &format!("/jobs/{}/status?stream=true", watched["id"].as_str().expect("id")),
        )
        .header("cookie", format!("launcher-node={victim_client}"))
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["x-launcher-node"].to_str()?, victim.to_string());
    cluster.kill(victim as usize);
    let events = tokio::time::timeout(DEADLINE, stream.text()).await??;
    assert!(
        events.contains("event: status") && events.contains("event: error"),
        "the stream says it broke instead of hanging or ending as if the job had: {events}"
    );
    // Without a key of its own the submit is still made once: the gateway adds a key before
    // it retries on the next node.
    let once =
        serde_json::json!({"name": "keyless", "cluster": "Local", "command": "exit 0", "user": "alice"});
    let r = admin
        .req(Method::POST, "/jobs")
        .header("cookie", format!("launcher-node={victim_client}"))
        .json(&once)
        .send()
        .await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);
    let (_, all) = admin.get("/jobs?user=*").await?;
    let keyless = all
        .as_array()
        .expect("array")
        .iter()
        .filter(|j| j["name"] == "keyless")
        .count();
    assert_eq!(keyless, 1, "{all}");
    let body =
        serde_json::json!({"name": "across", "cluster": "Local", "command": "exit 0", "user": "alice"});
    let submit = || {
        admin
            .req(Method::POST, "/jobs")
            .header("cookie", format!("launcher-node={victim_client}"))
            .header("Idempotency-Key", "failover-1")
            .json(&body)
            .send()
    };
    let r = submit().await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);
    let now_on: u64 = r.headers()["x-launcher-node"].to_str()?.parse()?;
    assert_ne!(now_on, victim, "the client moved off the dead node");
    let first: serde_json::Value = r.json().await?;
    let again: serde_json::Value = submit().await?.json().await?;
    assert_eq!(first["id"], again["id"], "one job for one key");
    // It comes back to its own node once that node is healthy again.
    cluster.restart(victim as usize).await?;
    wait_until("the client to return to its node", DEADLINE, || {
        let f = node_of(victim_client.clone());
        async move { Ok(f.await.ok().filter(|n| *n == victim)) }
    })
    .await?;
    Ok(())
}

/// A request id follows a call to the node that serves it and on to the job's owner: asking
/// each of the three nodes for a job's network under its own `x-request-id`, the owner (which
/// answers two of the three as forwarded calls) logs a plugin request under every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_follow_forwarded_calls_to_the_owner() -> anyhow::Result<()> {
    use launcher_proto::launcher::JobRequest;
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        log_filter: Some("info,openraft=warn,launcher_node::plugins::host=debug".into()),
        ..Default::default()
    };
    let cluster = ProcessCluster::start(3, opts).await?;
    let reply = cluster
        .client(1)
        .submit(&launcher_tests::job("traced", &[]))
        .await?;
    let id = launcher_tests::client::job_id(&reply.job);
    let ask = |i: usize| {
        let mut req = tonic::Request::new(JobRequest {
            caller: Some(launcher_tests::client::admin()),
            id: id.clone(),
            read: None,
        });
        req.metadata_mut()
            .insert("x-request-id", format!("rid-{i}").parse().expect("ascii"));
        let client = cluster.client(i);
        async move { client.rpc().get_job_network(req).await }
    };
    // The network can be asked once the plugin has the job.
    wait_until("the job to be launched", DEADLINE, || async {
        Ok(ask(1).await.ok().map(|_| ()))
    })
    .await?;
    for i in 1..=3 {
        ask(i).await?;
    }
    let owner = (1..=3).find(|&n| {
        let log = cluster.log(n);
        (1..=3).all(|i| {
            log.lines()
                .any(|l| l.contains("plugin request") && l.contains(&format!("request_id=rid-{i}")))
        })
    });
    assert!(
        owner.is_some(),
        "no node logged plugin requests under all three ids:\n{}",
        cluster.logs()
    );
    Ok(())
}

/// A submit's request id follows it to the leader, whichever node took it: submitting through
/// each of the three nodes under its own `x-request-id`, the leader logs the stamping of every
/// submit under that id, next to the job id it gave, and each job's worker on its owner logs
/// under the job id (one grep of a request id or a job id over all logs tells its story).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submits_request_id_reaches_the_leader_and_names_its_job() -> anyhow::Result<()> {
    use launcher_proto::launcher::SubmitJobRequest;
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        log_filter: Some("info,openraft=warn,launcher_node::writes=debug".into()),
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_one_leader().await? as usize;
    for i in 1..=3 {
        let mut req = tonic::Request::new(SubmitJobRequest {
            caller: Some(launcher_tests::client::admin()),
            job: serde_json::to_vec(&launcher_tests::job(&format!("traced-{i}"), &[]))?,
            idempotency_key: format!("traced-{i}"),
        });
        req.metadata_mut()
            .insert("x-request-id", format!("sub-{i}").parse().expect("ascii"));
        let reply = cluster.client(i).rpc().submit_job(req).await?.into_inner();
        let id = launcher_tests::client::job_id(&reply.job);
        let log = cluster.log(leader);
        assert!(
            log.lines().any(|l| l.contains("submit stamped")
                && l.contains(&format!("request_id=sub-{i}"))
                && l.contains(&id)),
            "the leader ({leader}) did not log the submit through node {i} under its request id:\n{log}"
        );
    }
    Ok(())
}

/// Gateways keep only soft state, so two of them side by side pin each client key to the same
/// node and give the same answers, and a gateway restarted in place of one of them serves the
/// same clients as before: same node, and the `launcher-index` cookie a client got from the old
/// gateway (its read-your-writes floor) is honoured by the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_side_by_side_agree_and_a_restarted_one_loses_nothing() -> anyhow::Result<()> {
    init_tracing();
    let (cluster, first) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let second = TestGateway::start(&cluster, |_| {}).await?;
    // (node that answered, applied index, `launcher-index` cookie) of a GET of `path`.
    let ask = |gw: &TestGateway, client: &str, cookies: String, path: &str| {
        let req = gw
            .client("alice")
            .req(Method::GET, path)
            .header("cookie", format!("launcher-node={client}{cookies}"));
        async move {
            let r = req.send().await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            let node: u64 = r.headers()["x-launcher-node"].to_str()?.parse()?;
            let index: u64 = r.headers()["x-launcher-index"].to_str()?.parse()?;
            let cookie = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.strip_prefix("launcher-index="))
                .and_then(|v| v.split(';').next())
                .map(str::to_string);
            Ok::<_, anyhow::Error>((node, index, cookie, r.text().await?))
        }
    };
    let (st, job) = first
        .client("alice")
        .post(
            "/jobs",
            &serde_json::json!({"name": "seen-by-both", "cluster": "Local", "command": "true"}),
        )
        .await?;
    assert_eq!(st, 201, "{job}");
    let path = format!("/jobs/{}", job["id"].as_str().expect("id"));
    // Once its plugin has it, the job stays as it is (Pending for 600 s) and can be compared.
    wait_until("the job to be launched", DEADLINE, || {
        let (alice, path) = (first.client("alice"), path.clone());
        async move {
            let (_, j) = alice.get(&path).await?;
            Ok(j.get("pluginJobId").map(|_| ()))
        }
    })
    .await?;
    let mut pinned = Vec::new();
    for c in 0..12 {
        let client = format!("rstudio{c}");
        let (n1, i1, cookie, body1) = ask(&first, &client, String::new(), &path).await?;
        let (n2, _, _, body2) = ask(&second, &client, String::new(), &path).await?;
        assert_eq!(n1, n2, "{client} is pinned to the same node by both gateways");
        let a: serde_json::Value = serde_json::from_str(&body1)?;
        let b: serde_json::Value = serde_json::from_str(&body2)?;
        assert_eq!(a, b, "both gateways give the same job");
        let cookie = cookie.expect("the gateway mirrors the client's index in a cookie");
        assert_eq!(cookie.parse::<u64>()?, i1);
        pinned.push((client, n1, i1, cookie));
    }
    let spread: std::collections::BTreeSet<u64> = pinned.iter().map(|p| p.1).collect();
    assert!(spread.len() > 1, "clients spread over the nodes: {pinned:?}");

    // Replace the first gateway by a new process state: nothing of it survives but the cookies.
    first.handle.shutdown().await?;
    let restarted = TestGateway::start(&cluster, |_| {}).await?;
    for (client, node, index, cookie) in &pinned {
        let (n, i, _, _) = ask(&restarted, client, format!("; launcher-index={cookie}"), &path).await?;
        assert_eq!(n, *node, "{client} is back on its node after the restart");
        assert!(i >= *index, "{client} read at {i}, below its floor {index}");
    }
    // A floor no node has reached yet is refused as "not there yet" (13), not read below.
    let r = restarted
        .client("alice")
        .req(Method::GET, &path)
        .header("cookie", "launcher-node=rstudio0; launcher-index=999999999")
        .send()
        .await?;
    assert_eq!(r.status(), 503, "a floor far ahead is not served");
    let e: serde_json::Value = r.json().await?;
    assert_eq!(e["error"]["code"], 13, "{e}");
    Ok(())
}
