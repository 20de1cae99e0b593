//! What is refused at submit, with its stable code, before anything is stored or launched.

use serde_json::{json, Value};

use super::{error_of, home, start, submit_ok, unique};

fn mount(source: &str, target: &str) -> Value {
    json!({"mountPath": target, "readOnly": false, "mountSource": {"type": "host", "source": {"path": source}}})
}

fn with_mounts(name: &str, mounts: Vec<Value>) -> Value {
    json!({"name": name, "cluster": "Local", "command": "id", "mounts": mounts})
}

/// A user token cannot mount over system directories, from outside the cluster's allowed
/// sources, with `..`, or with another mount type: each is 403 `MountNotAllowed` naming the
/// mount, and nothing of the job is stored. The same mount from an admin is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_mount_outside_the_policy_is_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let alice = gw.client("alice");
    let h = home("alice").display().to_string();
    let refused: Vec<(Value, &str)> = vec![
        // The demonstrated root shell: the user's copy of /etc over /etc.
        (mount(&format!("{h}/fakeetc"), "/etc"), "/etc"),
        (mount(&h, "/etc/cron.d/launcher-attack"), "/etc/cron.d"),
        (mount(&h, "/usr/local/bin"), "/usr/local/bin"),
        (mount(&h, "/lib64/x"), "/lib64"),
        (mount(&h, "/"), "on /"),
        (mount("/root", "/data"), "/root"),
        (mount("/home", "/data"), "/home on"),
        (mount(&format!("{h}/../bob"), "/data"), ".."),
        (mount(&format!("{h}x"), "/data"), "x on"),
        (mount(&h, "/data/../etc"), ".."),
        (
            json!({"mountPath": "/data", "mountSource": {"type": "nfs", "source": {"host": "127.0.0.1", "path": "/srv"}}}),
            "nfs",
        ),
    ];
    for (m, names) in &refused {
        let (st, body) = alice
            .post("/jobs", &with_mounts("attack", vec![m.clone()]))
            .await?;
        assert_eq!(st, 403, "{m} must be refused: {body}");
        assert_eq!(error_of(&body), (15, "MountNotAllowed"), "{body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("mount #0 (") && msg.contains(names), "{msg}");
    }
    // The second mount of a list is named as #1.
    let (st, body) = alice
        .post(
            "/jobs",
            &with_mounts(
                "attack",
                vec![mount(&format!("{h}/ok"), "/data"), mount("/root", "/r")],
            ),
        )
        .await?;
    assert_eq!(st, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("mount #1 (/root on /r)"));

    let (st, jobs) = gw.client("admin").get("/jobs?user=*").await?;
    assert_eq!(st, 200, "{jobs}");
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "a refused job is stored: {jobs}"
    );

    // Inside the policy, and from an admin, the same kinds of mounts are accepted.
    submit_ok(
        &alice,
        &with_mounts("fine", vec![mount(&format!("{h}/data"), "/opt/data")]),
    )
    .await?;
    let admin_body = json!({"name": "admin-mount", "cluster": "Local", "command": "true", "user": "alice",
        "mounts": [mount("/srv", "/data")]});
    submit_ok(&gw.client("admin"), &admin_body).await?;
    Ok(())
}

/// JSON nested deeper than 32 levels is refused with 400 at submit (127 deep once broke every
/// admin listing, 130 deep panicked the leader), an oversize body with 413; listings keep working
/// and the node stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_and_listings_keep_working() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let alice = gw.client("alice");
    let nested = |depth: usize| -> String {
        format!(
            r#"{{"name":"deep","cluster":"Local","command":"true","metadata":{{"m":{}1{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    for depth in [31usize, 127, 130, 5_000] {
        let r = alice
            .req(reqwest::Method::POST, "/jobs")
            .header("content-type", "application/json")
            .body(nested(depth))
            .send()
            .await?;
        let st = r.status().as_u16();
        let body: Value = serde_json::from_slice(&r.bytes().await?).unwrap_or(Value::Null);
        assert_eq!(st, 400, "depth {depth}: {body}");
        assert_eq!(error_of(&body).0, 2, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("32"),
            "{body}"
        );
    }
    // An oversize body is 413 before anything reads it.
    let big = json!({"name": "big", "cluster": "Local", "command": "true", "stdin": "x".repeat(2 << 20)});
    let (st, body) = alice.post("/jobs", &big).await?;
    assert_eq!((st, error_of(&body).0), (413, 14), "{body}");
    // 30 levels inside metadata (32 with the job and metadata objects) are fine.
    let ok: Value = serde_json::from_str(&nested(29))?;
    submit_ok(&alice, &ok).await?;
    let admin = gw.client("admin");
    for path in [
        "/jobs?user=*",
        "/jobs?user=*&fields=id,metadata",
        "/jobs?fields=id,metadata",
    ] {
        let (st, body) = admin.get(path).await?;
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (st, status) = gw.anonymous().get("/status").await?;
    assert_eq!((st, status["status"].as_str()), (200, Some("Green")), "{status}");
    Ok(())
}

/// Bad `resourceLimits` (negative, NaN, words, absurd, unknown types) are 400 at submit and the
/// message names the limit; a cluster maximum is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resource_limits_are_refused_at_submit() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let alice = gw.client("alice");
    let job = |kind: &str, value: &str| {
        json!({"name": "limits", "cluster": "Local", "command": "true",
            "resourceLimits": [{"type": kind, "value": value}]})
    };
    for (kind, value) in [
        ("memory", "-1"),
        ("memory", "NaN"),
        ("cpuTime", "abc"),
        ("cpuTime", "1e308"),
        ("cpuCount", "inf"),
        ("gpus", "1"),
    ] {
        let (st, body) = alice.post("/jobs", &job(kind, value)).await?;
        assert_eq!(st, 400, "{kind}={value}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(kind),
            "{body}"
        );
    }
    submit_ok(&alice, &job("memory", "512")).await?;
    Ok(())
}

/// An unknown job user is 400 `UnknownUser`; root and system accounts (below `min-uid`) are
/// 403, even from an admin; nothing is stored for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_system_users_are_refused_at_submit() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let admin = gw.client("admin");
    let as_user = |user: &str| json!({"name": "u", "cluster": "Local", "command": "id", "user": user});
    let (st, body) = admin.post("/jobs", &as_user(&unique("no-such-user"))).await?;
    assert_eq!((st, error_of(&body)), (400, (16, "UnknownUser")), "{body}");
    for user in ["root", "daemon"] {
        let (st, body) = admin.post("/jobs", &as_user(user)).await?;
        assert_eq!((st, error_of(&body).0), (403, 12), "{user}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("min-uid"),
            "{body}"
        );
    }
    // A token for a user who does not exist cannot get a job stored either.
    let ghost = gw.client(&unique("ghost"));
    let (st, body) = ghost
        .post(
            "/jobs",
            &json!({"name": "g", "cluster": "Local", "command": "id"}),
        )
        .await?;
    assert_eq!((st, error_of(&body).1), (400, "UnknownUser"), "{body}");
    let (_, jobs) = admin.get("/jobs?user=*").await?;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    Ok(())
}

/// A `workingDirectory` the user cannot enter (root's home, a path through a symlink the user
/// planted, a missing one) is 400 at submit, with the same words for missing and forbidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_directory_the_user_cannot_enter_is_refused() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let alice = gw.client("alice");
    let h = home("alice");
    let link = h.join(unique("to-root"));
    std::os::unix::fs::symlink("/root", &link)?;
    let hidden = std::path::Path::new("/root").join(unique("private"));
    std::fs::create_dir_all(&hidden)?;
    let job = |wd: &str| json!({"name": "wd", "cluster": "Local", "command": "pwd", "workingDirectory": wd});
    let mut messages = Vec::new();
    for wd in [
        hidden.display().to_string(),
        link.display().to_string(),
        "/root/definitely-missing".to_string(),
        "relative/dir".to_string(),
    ] {
        let (st, body) = alice.post("/jobs", &job(&wd)).await?;
        assert_eq!((st, error_of(&body).0), (400, 2), "{wd}: {body}");
        messages.push(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .replace(&wd, "<wd>"),
        );
    }
    assert_eq!(
        messages[0], messages[2],
        "an existing forbidden directory must read like a missing one"
    );
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir(&hidden);
    submit_ok(&alice, &job(&h.display().to_string())).await?;
    Ok(())
}
