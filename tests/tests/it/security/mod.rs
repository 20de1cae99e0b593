//! Attacks on the trust boundary of docs/security.md, made the way a hostile user would make
//! them: through the gateway with a user's token, against real node and plugin processes run as
//! root (as CI runs them). Each test fails if its attack succeeds.
//!
//! - [`submit`]: what is refused at submit (mount policy, nesting, limits, users, directories).
//! - [`jobs`]: what a running job or another user can reach (mounts, setuid, output files,
//!   other users' jobs and processes, the supervisor's environment).

mod jobs;
mod submit;

use launcher_tests::gateway::{Http, TestGateway};
use launcher_tests::{wait_until, ClusterOpts, ProcessCluster, DEADLINE};
use serde_json::Value;

/// A one-node cluster whose `Local` cluster lets users mount from their home directories, and a
/// gateway in front of it (`admin` is an admin there). Refuses to run unless root.
async fn start() -> anyhow::Result<(ProcessCluster, TestGateway)> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the security tests need root (jobs switch users, mounts need a namespace): run them as root, as CI does"
    );
    launcher_tests::init_tracing();
    let opts = ClusterOpts {
        cluster_lines: vec!["allowed-mount-sources=/home/{USER}".into()],
        ..Default::default()
    };
    let cluster = ProcessCluster::start(1, opts).await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    Ok((cluster, gw))
}

/// A user's home directory from the user database.
fn home(user: &str) -> std::path::PathBuf {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("test user {user} exists"))
        .dir
}

fn uid(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("test user {user} exists"))
        .uid
        .as_raw()
}

/// A fresh name for paths a test creates, so reruns and parallel tests never meet.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}

/// Submits `body` as `client`; expects 201 and returns the job id.
async fn submit_ok(client: &Http, body: &Value) -> anyhow::Result<String> {
    let (st, job) = client.post("/jobs", body).await?;
    anyhow::ensure!(st == 201, "expected 201 for {body}, got {st} {job}");
    Ok(job["id"].as_str().unwrap_or_default().to_string())
}

/// Waits until the job ends and returns it.
async fn wait_terminal(client: &Http, id: &str) -> anyhow::Result<Value> {
    wait_until(&format!("job {id} to end"), DEADLINE, || async {
        let (_, j) = client.get(&format!("/jobs/{id}")).await?;
        let done = matches!(
            j["status"].as_str(),
            Some("Finished" | "Failed" | "Killed" | "Canceled")
        );
        Ok(done.then_some(j))
    })
    .await
}

/// The job's output of `kind` as text, and the HTTP status.
async fn output(client: &Http, id: &str, kind: &str) -> anyhow::Result<(u16, String)> {
    let r = client
        .req(reqwest::Method::GET, &format!("/jobs/{id}/output?type={kind}"))
        .send()
        .await?;
    let st = r.status().as_u16();
    Ok((st, r.text().await?))
}

/// The `error.code` and `error.name` of an error body.
fn error_of(body: &Value) -> (i64, &str) {
    (
        body["error"]["code"].as_i64().unwrap_or(-1),
        body["error"]["name"].as_str().unwrap_or_default(),
    )
}
