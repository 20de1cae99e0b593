//! Every route's success and error answers, with the error body and headers of docs/api.md.

use launcher_tests::{
    init_tracing, job_user, wait_until, ClusterOpts, Http, ProcessCluster, TestGateway, DEADLINE,
};
use reqwest::Method;

fn terminal(j: &serde_json::Value) -> bool {
    matches!(
        j["status"].as_str(),
        Some("Finished" | "Failed" | "Killed" | "Canceled")
    )
}

/// A job's whole life through HTTP: submit (201, X-Launcher-Index), get, list, status, output,
/// network, control refused once it ended (409/8), delete (204), then 404/3; clusters, status,
/// members, a snapshot download (admins only), `X-Request-Id` on every answer (the client's or
/// a new UUID); unknown routes 404, wrong methods 405, oversize
/// bodies 413, bad JSON 400 — every error with the `{"error":{code,name,message}}` body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_through_every_route() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let gw = TestGateway::start(&cluster, |c| c.server.max_request_body_bytes = 64 * 1024).await?;
    let admin = gw.client("admin");
    let user = job_user();
    let body = serde_json::json!({"name": "http", "cluster": "Local", "command": "echo via-http; exit 4", "user": user});
    let r = admin.req(Method::POST, "/jobs").json(&body).send().await?;
    assert_eq!(r.status(), 201);
    let generated = r.headers()["x-request-id"].to_str()?.to_string();
    assert_eq!(generated.len(), 36, "a UUID names every request: {generated}");
    let echoed = admin
        .req(Method::GET, "/clusters")
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await?;
    assert_eq!(
        echoed.headers()["x-request-id"],
        "trace-me-42",
        "the client's own id is kept"
    );
    let index: u64 = r.headers()["x-launcher-index"].to_str()?.parse()?;
    assert!(index > 0);
    let job: serde_json::Value = r.json().await?;
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["user"], user.as_str());

    let done = launcher_tests::wait_until("the job to end", DEADLINE, || {
        let admin = admin.clone();
        let id = id.clone();
        async move {
            let (st, j) = admin.get(&format!("/jobs/{id}")).await?;
            assert_eq!(st, 200);
            Ok(terminal(&j).then_some(j))
        }
    })
    .await?;
    assert_eq!(
        (done["status"].as_str(), done["exitCode"].as_i64()),
        (Some("Finished"), Some(4))
    );
    let (st, list) = admin.get("/jobs?user=*").await?;
    assert_eq!(st, 200);
    assert!(list
        .as_array()
        .expect("array")
        .iter()
        .any(|j| j["id"] == id.as_str()));
    let (st, own) = admin.get("/jobs").await?;
    assert_eq!(
        (st, own.as_array().map(Vec::len)),
        (200, Some(0)),
        "an admin's own listing has only its jobs"
    );
    let (st, fields) = admin.get(&format!("/jobs/{id}?fields=status")).await?;
    assert_eq!(
        (st, fields.as_object().map(|o| o.len())),
        (200, Some(2)),
        "{fields}"
    );
    let (st, status) = admin.get(&format!("/jobs/{id}/status")).await?;
    assert_eq!((st, status["status"].as_str()), (200, Some("Finished")));
    let out = admin
        .req(Method::GET, &format!("/jobs/{id}/output?type=stdout"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(out, "via-http\n");
    let (st, e) = admin
        .post(
            &format!("/jobs/{id}/control"),
            &serde_json::json!({"operation": "kill"}),
        )
        .await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (409, Some(8)), "{e}");
    let (st, e) = admin
        .post(&format!("/jobs/{id}/control"), &serde_json::json!({"op": "kill"}))
        .await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (400, Some(2)), "{e}");
    // An admin downloads a snapshot holding the job; nobody else may.
    let snap = admin.req(Method::GET, "/snapshot").send().await?;
    assert_eq!(snap.status(), 200);
    assert_eq!(snap.headers()["content-type"], "application/octet-stream");
    let bytes = snap.bytes().await?;
    assert!(
        bytes.windows(id.len()).any(|w| w == id.as_bytes()),
        "the snapshot ({} bytes) holds the job",
        bytes.len()
    );
    let (st, e) = gw.client(&user).get("/snapshot").await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (403, Some(12)), "{e}");
    let r = admin.req(Method::DELETE, &format!("/jobs/{id}")).send().await?;
    assert_eq!(r.status(), 204);
    let (st, e) = admin.get(&format!("/jobs/{id}")).await?;
    assert_eq!(
        (st, e["error"]["name"].as_str()),
        (404, Some("JobNotFound")),
        "{e}"
    );

    let (st, clusters) = admin.get("/clusters").await?;
    assert_eq!(
        (st, clusters[0]["name"].as_str()),
        (200, Some("Local")),
        "{clusters}"
    );
    let (st, status) = gw.anonymous().get("/status").await?;
    assert_eq!((st, status["status"].as_str()), (200, Some("Green")), "{status}");
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(3));
    let (st, members) = admin.get("/members").await?;
    assert_eq!((st, members.as_array().map(Vec::len)), (200, Some(3)));

    let (st, e) = admin.get("/no/such/route").await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (404, Some(3)), "{e}");
    let r = admin.req(Method::PUT, "/jobs").send().await?;
    assert_eq!(r.status(), 405);
    let big = serde_json::json!({"name": "x".repeat(100 * 1024), "cluster": "Local", "command": "true"});
    let (st, e) = admin.post("/jobs", &big).await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (413, Some(14)), "{e}");
    let r = admin
        .req(Method::POST, "/jobs")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await?;
    assert_eq!(e["error"]["code"], 2);
    let (st, e) = admin.get("/jobs?bogus=1").await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (400, Some(2)), "{e}");
    gw.handle.shutdown().await?;
    Ok(())
}

/// An Idempotency-Key makes a retried submit return the first job (201, same body) and a
/// reused key with another body a 409; streams of status arrive as Server-Sent Events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_submits_and_status_events() -> anyhow::Result<()> {
    init_tracing();
    let (_cluster, gw) = TestGateway::with_scripted_cluster(3, "run-seconds=1\n").await?;
    let alice = gw.client("alice");
    let body = serde_json::json!({"name": "once", "cluster": "Local", "command": "exit 0"});
    let send = |b: &serde_json::Value| {
        alice
            .req(Method::POST, "/jobs")
            .header("Idempotency-Key", "k-1")
            .json(b)
            .send()
    };
    let first = send(&body).await?;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await?;
    let again: serde_json::Value = send(&body).await?.json().await?;
    assert_eq!(first["id"], again["id"]);
    let other = serde_json::json!({"name": "other", "cluster": "Local", "command": "exit 0"});
    let r = send(&other).await?;
    assert_eq!(r.status(), 409);
    let id = first["id"].as_str().unwrap();
    let sse = alice
        .req(Method::GET, &format!("/jobs/{id}/status?stream=true"))
        .send()
        .await?;
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(DEADLINE, sse.text()).await??;
    assert!(text.contains("event: status"), "{text}");
    assert!(
        text.contains("\"status\":\"Finished\""),
        "the stream ends when the job does: {text}"
    );
    Ok(())
}

/// `launcher_gateway_open_streams{kind}` from the gateway's `GET /metrics`.
async fn open_streams(gw: &TestGateway, kind: &str) -> anyhow::Result<i64> {
    let text = reqwest::get(format!("{}/metrics", gw.url)).await?.text().await?;
    let prefix = format!("launcher_gateway_open_streams{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(Ok(0), str::parse)?)
}

/// Waits until the gateway holds `n` open streams of every kind together.
async fn all_open_streams_become(gw: &TestGateway, n: i64) -> anyhow::Result<()> {
    wait_until(&format!("{n} open streams at the gateway"), DEADLINE, || async {
        let mut open = 0;
        for kind in ["status", "resourceUtilization", "output"] {
            open += open_streams(gw, kind).await?;
        }
        Ok((open == n).then_some(()))
    })
    .await
}

/// A Pending job that its plugin has accepted, submitted by `client`; returns its id.
async fn launched_pending_job(client: &Http) -> anyhow::Result<String> {
    let body = serde_json::json!({"name": "queued", "cluster": "Local", "command": "exit 0"});
    let (st, job) = client.post("/jobs", &body).await?;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    // Resource use can be asked for once the plugin has the job (before that: 409, retry).
    wait_until("the plugin to accept the job", DEADLINE, || {
        let (client, id) = (client.clone(), id.clone());
        async move {
            let r = client
                .req(
                    Method::GET,
                    &format!("/jobs/{id}/resource-utilization?stream=true"),
                )
                .send()
                .await?;
            Ok((r.status() == 200).then_some(()))
        }
    })
    .await?;
    Ok(id)
}

/// The three streams of a job that has nothing to report yet (Pending, no output, no samples)
/// start at once: status line and headers arrive while the job is still Pending. A one-shot
/// resource read of that job is a 409 (JobNotRunning) instead of a wait. Every stream ends by
/// itself when the job ends (here: canceled), with the final status as the last event, and the
/// gateway's open-stream gauge returns to zero. `GET /metrics` needs no token, labels answers by
/// route template, and is off with `enable-metrics=0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_start_at_once_and_end_with_the_job() -> anyhow::Result<()> {
    init_tracing();
    let (cluster, gw) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let alice = gw.client("alice");
    let id = launched_pending_job(&alice).await?;

    let open = |path: String| {
        let alice = alice.clone();
        async move {
            let r = tokio::time::timeout(DEADLINE, alice.req(Method::GET, &path).send()).await??;
            anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
            Ok::<_, anyhow::Error>(r)
        }
    };
    let status = open(format!("/jobs/{id}/status?stream=true")).await?;
    let usage = open(format!("/jobs/{id}/resource-utilization?stream=true")).await?;
    let output = open(format!("/jobs/{id}/output?follow=true")).await?;
    assert_eq!(usage.headers()["content-type"], "text/event-stream");
    assert!(output.headers()["content-type"]
        .to_str()?
        .starts_with("text/plain"));
    let (_, now) = alice.get(&format!("/jobs/{id}")).await?;
    assert_eq!(now["status"], "Pending", "the streams began before the job ran");
    for kind in ["status", "resourceUtilization", "output"] {
        assert_eq!(open_streams(&gw, kind).await?, 1, "{kind}");
    }
    let (st, e) = alice.get(&format!("/jobs/{id}/resource-utilization")).await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (409, Some(6)), "{e}");

    let (st, r) = alice
        .post(
            &format!("/jobs/{id}/control"),
            &serde_json::json!({"operation": "cancel"}),
        )
        .await?;
    assert_eq!(st, 200, "{r}");
    let status = tokio::time::timeout(DEADLINE, status.text()).await??;
    let last = status
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .expect("status events");
    let last: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(last["status"], "Canceled", "{status}");
    let usage = tokio::time::timeout(DEADLINE, usage.text()).await??;
    assert!(!usage.contains("event: error"), "{usage}");
    tokio::time::timeout(DEADLINE, output.text()).await??;
    all_open_streams_become(&gw, 0).await?;
    // The same figures count answers by route template, never by job id.
    let text = reqwest::get(format!("{}/metrics", gw.url)).await?.text().await?;
    assert!(
        text.contains(
            r#"launcher_gateway_requests_total{code="200",method="POST",route="/jobs/{id}/control"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains(&id), "no job id in a label");
    gw.handle.shutdown().await?;
    let quiet = TestGateway::start(&cluster, |c| c.server.enable_metrics = false).await?;
    let r = reqwest::get(format!("{}/metrics", quiet.url)).await?;
    assert_eq!(r.status(), 404, "enable-metrics=0 turns /metrics off");
    quiet.handle.shutdown().await?;
    Ok(())
}

/// A client that leaves in the middle of its streams frees everything they held: the gateway's
/// open-stream gauge returns to zero, and the job's plugin is told to close the output and
/// resource streams (its log says so), while the job itself carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_client_leaves() -> anyhow::Result<()> {
    init_tracing();
    let (cluster, gw) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let alice = gw.client("alice");
    let id = launched_pending_job(&alice).await?;
    // Each stream in its own connection, so dropping the response closes it.
    let mut held = Vec::new();
    for path in [
        format!("/jobs/{id}/status?stream=true"),
        format!("/jobs/{id}/resource-utilization?stream=true"),
        format!("/jobs/{id}/output?follow=true"),
    ] {
        let client = Http {
            inner: reqwest::Client::new(),
            ..alice.clone()
        };
        let r = client.req(Method::GET, &path).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        held.push(r);
    }
    all_open_streams_become(&gw, 3).await?;
    drop(held);
    all_open_streams_become(&gw, 0).await?;
    wait_until("the plugin to close the streams", DEADLINE, || async {
        // The probe in launched_pending_job left a resource stream too: two in all.
        let logs = cluster.logs();
        let closed = |kind: &str| {
            logs.lines()
                .filter(|l| l.contains(&format!("{kind} stream ")) && l.contains("closed by the launcher"))
                .count()
        };
        Ok((closed("output") >= 1 && closed("resource") >= 2).then_some(()))
    })
    .await?;
    let (_, job) = alice.get(&format!("/jobs/{id}")).await?;
    assert_eq!(
        job["status"], "Pending",
        "leaving a stream does not touch the job"
    );
    gw.handle.shutdown().await?;
    Ok(())
}

/// Following the output of a job its plugin does not have yet (the plugin sits on the submit
/// for 2 s) starts at once, waits for the launch, delivers what the job prints and ends when the
/// job does — instead of a 409 that the client would have to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_output_waits_for_the_launch() -> anyhow::Result<()> {
    init_tracing();
    let (_cluster, gw) = TestGateway::with_scripted_cluster(
        3,
        "submit-answer-delay=2\npending-seconds=0.5\nrun-seconds=0.5\n",
    )
    .await?;
    let alice = gw.client("alice");
    let body = serde_json::json!({"name": "late", "cluster": "Local", "command": "echo late"});
    let (st, job) = alice.post("/jobs", &body).await?;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let r = tokio::time::timeout(
        DEADLINE,
        alice
            .req(Method::GET, &format!("/jobs/{id}/output?follow=true"))
            .send(),
    )
    .await??;
    assert_eq!(r.status(), 200);
    let (_, now) = alice.get(&format!("/jobs/{id}")).await?;
    assert_eq!(now["status"], "Pending", "the stream began before the launch");
    let text = tokio::time::timeout(DEADLINE, r.text()).await??;
    assert_eq!(text, "output of late\n");
    // The plugin ends the output when the job ends; the status reaches the table just after.
    wait_until("the job to be Finished", DEADLINE, || async {
        let (_, done) = alice.get(&format!("/jobs/{id}")).await?;
        Ok((done["status"] == "Finished").then_some(()))
    })
    .await?;
    Ok(())
}

/// Every single-job route answers 404 (code 3, `JobNotFound`) both for a job that does not
/// exist and for another user's job — get, status, output (any `type`), network, resource use,
/// control and delete — and the owner still has the job afterwards. `limit`/`after` page
/// through a user's listing: pages of at most `limit` jobs that together are exactly the
/// unpaged listing, each job once, ending with an empty page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_jobs_are_404_and_listings_page() -> anyhow::Result<()> {
    init_tracing();
    let (_cluster, gw) = TestGateway::with_scripted_cluster(3, "pending-seconds=600\n").await?;
    let (alice, bob) = (gw.client("alice"), gw.client("bob"));
    let job = |n: usize| serde_json::json!({"name": format!("p{n}"), "cluster": "Local", "command": "true"});
    for n in 0..5 {
        let (st, j) = alice.post("/jobs", &job(n)).await?;
        assert_eq!(st, 201, "{j}");
    }
    let (st, bobs) = bob.post("/jobs", &job(9)).await?;
    assert_eq!(st, 201, "{bobs}");
    let foreign = bobs["id"].as_str().expect("id").to_string();
    let unknown = "019ac0de-0000-7000-8000-000000000000".to_string();

    for id in [&unknown, &foreign] {
        let not_found = |what: String, st: u16, e: serde_json::Value| {
            assert_eq!(
                (st, e["error"]["code"].as_i64(), e["error"]["name"].as_str()),
                (404, Some(3), Some("JobNotFound")),
                "{what}: {e}"
            );
        };
        for path in [
            "",
            "/status",
            "/status?stream=true",
            "/output",
            "/output?type=stderr",
            "/output?type=both&follow=true",
            "/network",
            "/resource-utilization",
            "/resource-utilization?stream=true",
        ] {
            let (st, e) = alice.get(&format!("/jobs/{id}{path}")).await?;
            not_found(format!("GET /jobs/{id}{path}"), st, e);
        }
        let (st, e) = alice
            .post(
                &format!("/jobs/{id}/control"),
                &serde_json::json!({"operation": "cancel"}),
            )
            .await?;
        not_found(format!("POST /jobs/{id}/control"), st, e);
        let r = alice.req(Method::DELETE, &format!("/jobs/{id}")).send().await?;
        let st = r.status().as_u16();
        not_found(format!("DELETE /jobs/{id}"), st, r.json().await?);
    }
    let (st, still) = bob.get(&format!("/jobs/{foreign}")).await?;
    assert_eq!((st, still["status"].as_str()), (200, Some("Pending")), "{still}");

    let (st, all) = alice.get("/jobs").await?;
    assert_eq!(st, 200);
    let all = all.as_array().expect("array").clone();
    assert_eq!(all.len(), 5, "alice sees her five jobs only");
    let mut paged = Vec::new();
    let mut path = "/jobs?limit=2".to_string();
    loop {
        let (st, page) = alice.get(&path).await?;
        assert_eq!(st, 200, "{path}: {page}");
        let page = page.as_array().expect("array").clone();
        assert!(page.len() <= 2, "{path} gave {} jobs", page.len());
        let Some(last) = page.last() else { break };
        path = format!("/jobs?limit=2&after={}", last["id"].as_str().expect("id"));
        paged.extend(page);
        assert!(paged.len() <= all.len(), "paging does not end: {paged:?}");
    }
    assert_eq!(paged, all, "the pages make up the listing, in its order");
    Ok(())
}
