//! Every route's success and error answers, with the error body and headers of DESIGN §2.

use launcher_tests::{
    init_tracing, job_user, ClusterOpts, ProcessCluster, TestGateway, TestPlugin, DEADLINE,
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
/// members; unknown routes 404, wrong methods 405, oversize bodies 413, bad JSON 400 — every
/// error with the `{"error":{code,name,message}}` body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_through_every_route() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let gw = TestGateway::start(&cluster, |c| c.max_request_body_bytes = 64 * 1024).await?;
    let admin = gw.client("admin");
    let user = job_user();
    let body = serde_json::json!({"name": "http", "cluster": "Local", "command": "echo via-http; exit 4", "user": user});
    let r = admin.req(Method::POST, "/jobs").json(&body).send().await?;
    assert_eq!(r.status(), 201);
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
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("run-seconds=1\n".into()),
        ..Default::default()
    };
    let cluster = ProcessCluster::start(3, opts).await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
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
