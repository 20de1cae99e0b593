//! Authentication and isolation through the gateway (docs/api.md).

use launcher_gateway::auth::mint_token;
use launcher_tests::{init_tracing, ClusterOpts, ProcessCluster, TestGateway, TestPlugin};
use reqwest::Method;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Missing, malformed, wrongly signed, expired and too long-lived tokens get 401 (code 11);
/// `/status` needs none; the `launcher-token` cookie works like the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let gw = TestGateway::start(&cluster, |c| c.server.max_token_lifetime_seconds = 3600).await?;
    let (st, _) = gw.anonymous().get("/status").await?;
    assert_eq!(st, 200);
    let (st, e) = gw.anonymous().get("/jobs").await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (401, Some(11)), "{e}");
    let wrong_key = vec![b'z'; 48];
    let bad = [
        "garbage".to_string(),
        "alice|notanumber|abcd".to_string(),
        mint_token(&wrong_key, "alice", now() + 60),
        mint_token(&cluster.key, "alice", now() - 10),
        mint_token(&cluster.key, "alice", now() + 7200),
    ];
    for token in bad {
        let r = gw
            .anonymous()
            .req(Method::GET, "/jobs")
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(r.status(), 401, "{token}");
        let e: serde_json::Value = r.json().await?;
        assert_eq!(e["error"]["code"], 11);
        assert!(!e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&token));
    }
    let good = mint_token(&cluster.key, "alice", now() + 60);
    let r = gw
        .anonymous()
        .req(Method::GET, "/jobs")
        .header("cookie", format!("launcher-token={good}"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

/// Users see only their own jobs; listing another user's is 403; another user's job is 404;
/// admins submit on behalf of others and list `user=*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_isolated_and_admins_act_for_others() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=600\n".into()),
        ..Default::default()
    };
    let cluster = ProcessCluster::start(1, opts).await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    let (alice, bob, admin) = (gw.client("alice"), gw.client("bob"), gw.client("admin"));
    let job = |name: &str| serde_json::json!({"name": name, "cluster": "Local", "command": "exit 0"});
    let (st, a) = alice.post("/jobs", &job("a")).await?;
    assert_eq!(st, 201);
    let (st, e) = bob
        .post(
            "/jobs",
            &serde_json::json!({"name": "b", "cluster": "Local", "command": "true", "user": "alice"}),
        )
        .await?;
    assert_eq!((st, e["error"]["code"].as_i64()), (403, Some(12)), "{e}");
    let (st, b) = admin
        .post(
            "/jobs",
            &serde_json::json!({"name": "b", "cluster": "Local", "command": "true", "user": "bob"}),
        )
        .await?;
    assert_eq!((st, b["user"].as_str()), (201, Some("bob")));
    let (_, mine) = alice.get("/jobs").await?;
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a"]);
    let (st, _) = alice.get("/jobs?user=bob").await?;
    assert_eq!(st, 403);
    let (st, _) = alice.get("/jobs?user=*").await?;
    assert_eq!(st, 403);
    let (st, e) = alice.get(&format!("/jobs/{}", b["id"].as_str().unwrap())).await?;
    assert_eq!(
        (st, e["error"]["code"].as_i64()),
        (404, Some(3)),
        "existence is not revealed: {e}"
    );
    let (st, all) = admin.get("/jobs?user=*").await?;
    assert_eq!((st, all.as_array().map(Vec::len)), (200, Some(2)));
    let (st, _) = alice.get("/members").await?;
    assert_eq!(st, 403, "membership is for admins");
    assert_eq!(a["user"], "alice");
    Ok(())
}
