//! Jobs through real `launcher-node` processes and our Local plugin: real processes, real
//! signals, output files, resource use, users.

use launcher_tests::client::{admin, error_code, job_id};
use launcher_tests::{init_tracing, job_user, shell_job, ClusterOpts, ProcessCluster};

fn status(j: &serde_json::Value) -> &str {
    j["status"].as_str().unwrap_or_default()
}

fn terminal(j: &serde_json::Value) -> bool {
    matches!(status(j), "Finished" | "Failed" | "Killed" | "Canceled")
}

/// A job runs as its user, from Pending through Running to Finished with its own exit code;
/// its stdout and stderr are captured and served by any node (forwarded to the owner); pid,
/// host and the plugin's job id are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_its_exit_code_with_output() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let body = shell_job("exit-3", "echo out-$USER; echo err-line >&2; exit 3");
    let id = job_id(&c.submit_as(admin(), &body, None).await?.job);
    let done = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(3)),
        "{done}"
    );
    assert!(done["pid"].as_i64().is_some_and(|p| p > 1), "{done}");
    assert!(done["host"].as_str().is_some_and(|h| !h.is_empty()), "{done}");
    assert!(done["pluginJobId"].as_str().is_some(), "{done}");
    // Every node answers, whichever owns the job.
    for i in 1..=3 {
        let c = cluster.client(i);
        assert_eq!(
            c.output(&id, "stdout", false).await?,
            format!("out-{}\n", job_user())
        );
        assert_eq!(c.output(&id, "stderr", false).await?, "err-line\n");
        let both = c.output(&id, "both", false).await?;
        assert!(both.contains("err-line") && both.contains("out-"), "{both}");
    }
    Ok(())
}

/// Output is streamed while the job runs (follow), and the stream ends when the job does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_follows_a_running_job_until_it_ends() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let body = shell_job("ticker", "for i in 1 2 3; do echo tick-$i; sleep 0.3; done");
    let id = job_id(&c.submit_as(admin(), &body, None).await?.job);
    c.wait_job(&id, "running", |j| status(j) != "Pending").await?;
    let out = c.output(&id, "stdout", true).await?;
    assert_eq!(out, "tick-1\ntick-2\ntick-3\n");
    // The plugin ends the stream when the job ends; the replicated record follows it.
    let j = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(status(&j), "Finished", "{j}");
    Ok(())
}

/// Suspend, resume and stop act on the job's process group and show in its status, whichever
/// node receives them (each goes through a different node, forwarded to the owner); kill ends
/// it as Killed 137; a process dying of a signal nobody here sent is Failed 128+N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_operations_signal_the_process() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let id = job_id(
        &c.submit_as(admin(), &shell_job("sleeper", "sleep 60"), None)
            .await?
            .job,
    );
    let running = c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    let pid = running["pid"].as_i64().expect("pid") as i32;
    let proc_state = |pid: i32| -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    };
    let r = cluster.client(1).control_as(admin(), &id, "suspend").await?;
    assert!(r.operation_complete, "{r:?}");
    c.wait_job(&id, "suspended", |j| status(j) == "Suspended").await?;
    assert_eq!(proc_state(pid), Some('T'), "the process is stopped");
    cluster.client(2).control_as(admin(), &id, "resume").await?;
    c.wait_job(&id, "running again", |j| status(j) == "Running")
        .await?;
    assert_ne!(proc_state(pid), Some('T'));
    // Cancel is only for Pending jobs.
    let e = c.control_as(admin(), &id, "cancel").await.unwrap_err();
    assert_eq!(error_code(&e), 8, "{e:?}");
    cluster.client(3).control_as(admin(), &id, "stop").await?;
    let done = c.wait_job(&id, "stopped", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Killed", Some(143)),
        "{done}"
    );

    let id = job_id(
        &c.submit_as(admin(), &shell_job("killed", "sleep 60"), None)
            .await?
            .job,
    );
    c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    c.control_as(admin(), &id, "kill").await?;
    let done = c.wait_job(&id, "killed", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Killed", Some(137)),
        "{done}"
    );

    let id = job_id(
        &c.submit_as(admin(), &shell_job("segv", "kill -SEGV $$"), None)
            .await?
            .job,
    );
    let done = c.wait_job(&id, "ended", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Failed", Some(139)),
        "{done}"
    );
    // Controls on an ended job are refused with a clear code.
    let e = c.control_as(admin(), &id, "kill").await.unwrap_err();
    assert_eq!(error_code(&e), 8, "{e:?}");
    Ok(())
}

/// The processes of group `pgid` on this machine, zombies included.
fn group(pgid: i64) -> Vec<(i32, char)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i64>().ok()) == Some(pgid) {
            let pid = stat
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            v.push((pid, f[0].chars().next().unwrap_or('?')));
        }
    }
    v
}

/// Through the HTTP API, an ended job means nothing of it runs any more: the first time a
/// client sees a killed `sleep 300` job (its shell and the sleep the shell forked) as Killed,
/// no process of its group is left, not even an unreaped one; the same for a stopped one. The
/// control answer itself comes only after the plugin has ended the job and its Killed status is
/// committed: the first read after the answer shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_through_the_http_api_means_nothing_of_the_job_runs() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let gw = launcher_tests::TestGateway::start(&cluster, |_| {}).await?;
    let http = gw.client(&job_user());
    for op in ["kill", "stop"] {
        let body = serde_json::json!({"name": op, "cluster": "Local", "command": "sleep 300"});
        let (code, job) = http.post("/jobs", &body).await?;
        anyhow::ensure!(code == 201, "submit answered {code}: {job}");
        let id = job["id"].as_str().expect("id").to_string();
        let path = format!("/jobs/{id}");
        let running =
            launcher_tests::wait_until("the job and its sleep to run", launcher_tests::DEADLINE, || {
                let (http, path) = (http.clone(), path.clone());
                async move {
                    let (_, j) = http.get(&path).await?;
                    let Some(pgid) = j["pid"].as_i64().filter(|_| status(&j) == "Running") else {
                        return Ok(None);
                    };
                    Ok((group(pgid).len() >= 2).then_some(pgid))
                }
            })
            .await?;
        let (code, answer) = http
            .post(
                &format!("{path}/control"),
                &serde_json::json!({ "operation": op }),
            )
            .await?;
        anyhow::ensure!(code == 200, "{op} answered {code}: {answer}");
        assert_eq!(answer["operationComplete"], true, "{answer}");
        // The first read after the answer already sees the end, and nothing of the job is left.
        let (_, j) = http.get(&path).await?;
        let left = group(running);
        assert_eq!(status(&j), "Killed", "{op}: read right after the answer: {j}");
        assert_eq!(left, [], "{op}: Killed while processes of the job are left: {j}");
    }
    Ok(())
}

/// The job runs as its user with HOME, USER, LOGNAME from the user database and a private
/// TMPDIR that exists while it runs and is removed after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_as_their_user_with_a_private_tmpdir() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let body = shell_job(
        "whoami",
        "id -un; echo $HOME; echo $USER $LOGNAME; echo $TMPDIR; test -d \"$TMPDIR\" && touch \"$TMPDIR/x\" && echo tmp-ok",
    );
    let id = job_id(&c.submit_as(admin(), &body, None).await?.job);
    let done = c.wait_job(&id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(0)),
        "{done}"
    );
    let out = c.output(&id, "stdout", false).await?;
    let lines: Vec<&str> = out.lines().collect();
    let user = job_user();
    let pw = nix::unistd::User::from_name(&user)?.expect("test user exists");
    assert_eq!(lines.first().copied(), Some(user.as_str()), "{out}");
    assert_eq!(lines.get(1).copied(), Some(pw.dir.to_str().unwrap()), "{out}");
    assert_eq!(
        lines.get(2).copied(),
        Some(format!("{user} {user}").as_str()),
        "{out}"
    );
    assert_eq!(lines.get(4).copied(), Some("tmp-ok"), "{out}");
    let tmpdir = lines[3];
    assert!(
        !std::path::Path::new(tmpdir).exists(),
        "TMPDIR {tmpdir} is removed after the job"
    );
    Ok(())
}

/// Resource use of a busy job is reported from /proc while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_use_of_a_busy_job() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let body = shell_job(
        "busy",
        "end=$(($(date +%s) + 30)); while [ $(date +%s) -lt $end ]; do :; done",
    );
    let id = job_id(&c.submit_as(admin(), &body, None).await?.job);
    c.wait_job(&id, "running", |j| status(j) == "Running").await?;
    let samples = launcher_tests::wait_until("cpu time to show", launcher_tests::DEADLINE, || {
        let c = c.clone();
        let id = id.clone();
        async move {
            let s = c.resource_use(&id, 2).await?;
            Ok(s.iter()
                .any(|u| u["cpuTime"].as_f64().is_some_and(|t| t > 0.0))
                .then_some(s))
        }
    })
    .await?;
    let last = samples.last().expect("a sample");
    assert!(last["residentMemory"].as_f64().is_some_and(|m| m > 0.0), "{last}");
    assert!(last["virtualMemory"].as_f64().is_some_and(|m| m > 0.0), "{last}");
    let net = c.network(&id).await?;
    assert!(!net.host.is_empty(), "{net:?}");
    c.control_as(admin(), &id, "kill").await?;
    c.wait_job(&id, "killed", terminal).await?;
    Ok(())
}

/// The leader applies launcher-env and launcher-mounts at submit: matching entries (by job type
/// from the job's tags) are stored in the job with {USER} substituted, and the environment
/// reaches the process; entries for other job types do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_files_shape_jobs_at_submit() -> anyhow::Result<()> {
    init_tracing();
    let shared_dir = tempfile::Builder::new().prefix("launcher-mount-src-").tempdir()?;
    launcher_tests::traversable(shared_dir.path())?;
    std::fs::write(shared_dir.path().join("marker"), "from the host\n")?;
    let opts = ClusterOpts {
        config_files: vec![
            (
                "launcher-env".into(),
                "JobType: adhoc\nEnvironment: GREETING=hello-{USER}\n  SECOND=two\n\nJobType: session\nEnvironment: SESSION_ONLY=1\n".into(),
            ),
            (
                "launcher-mounts".into(),
                format!(
                    "MountType: Host\nPath: {}\nMountPath: /mnt/launcher-shared\nReadOnly: true\n",
                    shared_dir.path().display()
                ),
            ),
        ],
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await? as usize;
    let c = cluster.client(leader);
    let mut body = shell_job(
        "filtered",
        "echo $GREETING $SECOND ${SESSION_ONLY:-none}; cat /mnt/launcher-shared/marker",
    );
    body["tags"] = serde_json::json!(["jobType:adhoc"]);
    let id = job_id(&c.submit_as(admin(), &body, None).await?.job);
    let done = c.wait_job(&id, "finished", terminal).await?;
    let env: Vec<(String, String)> = done["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let user = job_user();
    assert!(
        env.contains(&("GREETING".into(), format!("hello-{user}"))),
        "{env:?}"
    );
    assert!(!env.iter().any(|(k, _)| k == "SESSION_ONLY"), "{env:?}");
    assert_eq!(done["mounts"][0]["mountPath"], "/mnt/launcher-shared", "{done}");
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(0)),
        "{done}"
    );
    let out = c.output(&id, "stdout", false).await?;
    assert_eq!(out, format!("hello-{user} two none\nfrom the host\n"));
    Ok(())
}
