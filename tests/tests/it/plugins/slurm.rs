//! Jobs on a real Slurm (issue 10): an isolated single-node Slurm ([`SlurmCluster`]), three
//! `launcher-node` processes whose `[cluster] name=Slurm type=Slurm` runs
//! `launcher-slurm-plugin`, and the HTTP gateway in front. Jobs run as the unprivileged test
//! user, submitted with that user's token.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use launcher_tests::slurm::{slurm_plugin_binary, with_slurm, SlurmCluster};
use launcher_tests::{
    init_tracing, job_user, wait_until, ClusterOpts, Http, ProcessCluster, TestGateway, DEADLINE,
};
use serde_json::{json, Value};

fn status(j: &Value) -> &str {
    j["status"].as_str().unwrap_or_default()
}

fn terminal(j: &Value) -> bool {
    matches!(status(j), "Finished" | "Failed" | "Killed" | "Canceled")
}

/// Slurm, a 3-node launcher cluster offering it, a gateway, and a client as the test user.
async fn setup(opts: ClusterOpts) -> anyhow::Result<(SlurmCluster, ProcessCluster, TestGateway, Http)> {
    init_tracing();
    let user = job_user();
    let slurm = SlurmCluster::start().await?;
    let mut cluster = ProcessCluster::start(3, opts).await?;
    with_slurm(&mut cluster, &slurm, "").await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    let http = gw.client(&user);
    Ok((slurm, cluster, gw, http))
}

fn slurm_job(name: &str, command: &str) -> Value {
    json!({"name": name, "cluster": "Slurm", "command": command})
}

async fn submit(http: &Http, body: &Value) -> anyhow::Result<(String, Value)> {
    let (code, job) = http.post("/jobs", body).await?;
    anyhow::ensure!(code == 201, "submit answered {code}: {job}");
    Ok((job["id"].as_str().expect("id").to_string(), job))
}

async fn get_job(http: &Http, id: &str) -> anyhow::Result<Value> {
    let (code, j) = http.get(&format!("/jobs/{id}")).await?;
    anyhow::ensure!(code == 200, "GET /jobs/{id} answered {code}: {j}");
    Ok(j)
}

/// Polls the job until `done` holds; returns it and every status seen on the way.
async fn wait_job(
    http: &Http,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<(Value, Vec<String>)> {
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let (seen_ref, done_ref) = (&seen, &done);
    let j = wait_until(&format!("job {id}: {what}"), DEADLINE, || async move {
        let j = get_job(http, id).await?;
        let mut s = seen_ref.lock().unwrap();
        if s.last().map(String::as_str) != Some(status(&j)) {
            s.push(status(&j).to_string());
        }
        Ok(done_ref(&j).then_some(j))
    })
    .await?;
    Ok((j, seen.into_inner().unwrap()))
}

async fn control(http: &Http, id: &str, op: &str) -> anyhow::Result<(u16, Value)> {
    http.post(&format!("/jobs/{id}/control"), &json!({ "operation": op }))
        .await
}

async fn output(http: &Http, id: &str, kind: &str) -> anyhow::Result<String> {
    let r = http
        .req(
            reqwest::Method::GET,
            &format!("/jobs/{id}/output?type={kind}&follow=true"),
        )
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 200, "output answered {}", r.status());
    Ok(r.text().await?)
}

/// The Slurm id of a launcher job (`pluginJobId`).
fn slurm_id(j: &Value) -> String {
    j["pluginJobId"].as_str().expect("pluginJobId").to_string()
}

fn slurm_state(slurm: &SlurmCluster, sid: &str) -> String {
    slurm
        .run("scontrol", &["-o", "show", "job", sid])
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or_default()
        .to_string()
}

/// A job submitted by a normal user runs in Slurm as that user (with the `launcher-job:<id>`
/// tag in its comment) through Pending → Running → Finished with its own exit code, its
/// stdout and stderr are streamed until it ends; exe, args, environment, stdin and working
/// directory reach the process; a job dying of a signal is Failed 128+N; partitions are the
/// cluster's queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_runs_as_its_user_to_its_exit_code_with_output() -> anyhow::Result<()> {
    let (slurm, _cluster, _gw, http) = setup(ClusterOpts::default()).await?;
    let (id, submitted) = submit(
        &http,
        &slurm_job("exit-3", "echo out-$USER; sleep 2; echo err-line >&2; exit 3"),
    )
    .await?;
    assert_eq!(status(&submitted), "Pending", "{submitted}");
    // Partitions are the cluster's queues.
    let (code, clusters) = http.get("/clusters").await?;
    assert_eq!(code, 200, "{clusters}");
    let info = clusters
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "Slurm"))
        .unwrap_or_else(|| panic!("no Slurm cluster in {clusters}"));
    assert_eq!(info["queues"], json!(["debug"]), "{info}");
    let (done, seen) = wait_job(&http, &id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(3)),
        "{done}"
    );
    assert!(seen.iter().any(|s| s == "Running"), "statuses seen: {seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("Finished"), "{seen:?}");
    let sid = slurm_id(&done);
    let line = slurm.run("scontrol", &["-o", "show", "job", &sid])?;
    assert!(line.contains(&format!("UserId={}(", job_user())), "{line}");
    assert!(
        line.contains(&format!("launcher-job:{id}")),
        "the comment carries our tag: {line}"
    );
    assert_eq!(
        output(&http, &id, "stdout").await?,
        format!("out-{}\n", job_user())
    );
    assert_eq!(output(&http, &id, "stderr").await?, "err-line\n");

    // exe with args, the job's environment and stdin reach the process.
    let body = json!({"name": "exe", "cluster": "Slurm", "exe": "/bin/sh",
        "args": ["-c", "echo \"$GREETING\"; cat; pwd"],
        "environment": [{"name": "GREETING", "value": "hi 'there'"}],
        "stdin": "from-stdin\n", "workingDirectory": "/tmp"});
    let (id, _) = submit(&http, &body).await?;
    let (done, _) = wait_job(&http, &id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(0)),
        "{done}"
    );
    assert_eq!(
        output(&http, &id, "stdout").await?,
        "hi 'there'\nfrom-stdin\n/tmp\n"
    );

    let (id, _) = submit(&http, &slurm_job("segv", "kill -SEGV $$")).await?;
    let (done, _) = wait_job(&http, &id, "ended", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Failed", Some(139)),
        "{done}"
    );
    Ok(())
}

/// A Pending Slurm job (the node is full) is canceled by `cancel` (Canceled, it never ran);
/// a running one refuses `cancel` (code 8) and is ended by `stop` as Killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_jobs_are_canceled_while_pending_and_stopped_while_running() -> anyhow::Result<()> {
    let (slurm, _cluster, _gw, http) = setup(ClusterOpts::default()).await?;
    let mut full = slurm_job("hog", "sleep 120");
    full["resourceLimits"] = json!([{"type": "cpuCount", "value": slurm.cpus.to_string()}]);
    let (hog, _) = submit(&http, &full).await?;
    wait_job(&http, &hog, "running", |j| status(j) == "Running").await?;
    let (waiting, _) = submit(&http, &full).await?;
    let (w, _) = wait_job(&http, &waiting, "known to Slurm", |j| {
        j["pluginJobId"].is_string()
    })
    .await?;
    assert_eq!(status(&w), "Pending", "{w}");
    assert_eq!(slurm_state(&slurm, &slurm_id(&w)), "PENDING");
    let (code, body) = control(&http, &waiting, "cancel").await?;
    assert_eq!(code, 200, "{body}");
    let (done, _) = wait_job(&http, &waiting, "canceled", terminal).await?;
    assert_eq!(status(&done), "Canceled", "{done}");

    let (code, body) = control(&http, &hog, "cancel").await?;
    assert_eq!((code, body["error"]["code"].as_i64()), (409, Some(8)), "{body}");
    let (code, body) = control(&http, &hog, "stop").await?;
    assert_eq!(code, 200, "{body}");
    let (done, _) = wait_job(&http, &hog, "stopped", terminal).await?;
    assert_eq!(status(&done), "Killed", "{done}");
    assert!(matches!(done["exitCode"].as_i64(), None | Some(143)), "{done}");
    Ok(())
}

/// Suspend and resume go through `scontrol` and show both in Slurm and in the job's status;
/// kill ends the job as Killed 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_jobs_are_suspended_resumed_and_killed() -> anyhow::Result<()> {
    let (slurm, _cluster, _gw, http) = setup(ClusterOpts::default()).await?;
    let (id, _) = submit(&http, &slurm_job("sleeper", "sleep 120")).await?;
    let (running, _) = wait_job(&http, &id, "running", |j| status(j) == "Running").await?;
    let sid = slurm_id(&running);
    let (code, body) = control(&http, &id, "suspend").await?;
    assert_eq!(code, 200, "{body}");
    wait_job(&http, &id, "suspended", |j| status(j) == "Suspended").await?;
    assert_eq!(slurm_state(&slurm, &sid), "SUSPENDED");
    let (code, body) = control(&http, &id, "resume").await?;
    assert_eq!(code, 200, "{body}");
    wait_job(&http, &id, "running again", |j| status(j) == "Running").await?;
    assert_eq!(slurm_state(&slurm, &sid), "RUNNING");
    let (code, body) = control(&http, &id, "kill").await?;
    assert_eq!(code, 200, "{body}");
    let (done, _) = wait_job(&http, &id, "killed", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Killed", Some(137)),
        "{done}"
    );
    Ok(())
}

/// Resource use of a CPU-busy Slurm job comes from Slurm's job accounting (`sstat` on its
/// running steps, `jobacct_gather/linux` every second): a one-shot read through the gateway
/// shows CPU time above zero and resident and virtual memory held (seconds and MB, as the Local
/// plugin reports them); the streamed form carries such samples, CPU time never going down, and
/// ends by itself without an error once the job is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_resource_use_of_a_busy_job_comes_from_job_accounting() -> anyhow::Result<()> {
    let (_slurm, _cluster, _gw, http) = setup(ClusterOpts::default()).await?;
    // Busy, in the batch step's process group (which Slurm accounts), and bounded.
    let (id, _) = submit(
        &http,
        &slurm_job("busy", "head -c 100000000000 /dev/zero | sha256sum"),
    )
    .await?;
    wait_job(&http, &id, "running", |j| status(j) == "Running").await?;
    let path = format!("/jobs/{id}/resource-utilization");
    let sample = wait_until("CPU time in Slurm's accounting", DEADLINE, || {
        let (http, path) = (http.clone(), path.clone());
        async move {
            let (code, u) = http.get(&path).await?;
            anyhow::ensure!(code == 200, "{path} answered {code}: {u}");
            Ok(u["cpuTime"].as_f64().is_some_and(|t| t > 0.0).then_some(u))
        }
    })
    .await?;
    for field in ["residentMemory", "virtualMemory"] {
        assert!(
            sample[field].as_f64().is_some_and(|m| m > 0.0),
            "{field}: {sample}"
        );
    }
    assert!(
        sample["cpuPercent"].as_f64().is_some_and(|c| c >= 0.0),
        "{sample}"
    );

    let mut stream = http
        .req(reqwest::Method::GET, &format!("{path}?stream=true"))
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    while text.matches("event: resourceUtilization").count() < 2 {
        let chunk = tokio::time::timeout(DEADLINE, stream.chunk())
            .await??
            .expect("the stream goes on while the job runs");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (code, body) = control(&http, &id, "kill").await?;
    assert_eq!(code, 200, "{body}");
    let rest = tokio::time::timeout(DEADLINE, stream.text()).await??;
    text.push_str(&rest);
    assert!(!text.contains("event: error"), "{text}");
    let samples: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let cpu: Vec<f64> = samples.iter().filter_map(|u| u["cpuTime"].as_f64()).collect();
    assert!(cpu.len() >= 2 && cpu.iter().all(|t| *t > 0.0), "{text}");
    assert!(
        cpu.windows(2).all(|w| w[0] <= w[1]),
        "CPU time never goes down: {cpu:?}"
    );
    let (done, _) = wait_job(&http, &id, "killed", terminal).await?;
    assert_eq!(status(&done), "Killed", "{done}");
    Ok(())
}

/// The Slurm plugin on a real Slurm takes every request in its minimal and its full form:
/// the Plugin API conformance of `conformance.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_plugin_takes_minimal_and_full_requests() -> anyhow::Result<()> {
    init_tracing();
    job_user();
    let slurm = SlurmCluster::start().await?;
    let dir = tempfile::Builder::new().prefix("conformance-slurm-").tempdir()?;
    // Jobs write their default output under the scratch path, as their user.
    launcher_tests::traversable(dir.path())?;
    std::fs::write(dir.path().join("launcher.slurm.conf"), slurm.plugin_conf())?;
    let mut cmd = tokio::process::Command::new(slurm_plugin_binary());
    cmd.arg(format!("--scratch-path={}", dir.path().join("scratch").display()))
        .arg("--heartbeat-interval-seconds=0")
        .env("RSTUDIO_CONFIG_DIR", dir.path())
        .stderr(Stdio::inherit());
    let mut p = super::conformance::Speaker::start(cmd)?;
    super::conformance::check_plugin(&mut p, &super::conformance::Subject { cluster: "Slurm" }).await
}

/// Sends one Plugin API message (4-byte big-endian length, JSON).
fn send(w: &mut impl Write, msg: &Value) -> anyhow::Result<()> {
    let body = serde_json::to_vec(msg)?;
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads messages until one answers `request_id`.
fn answer(r: &mut impl Read, request_id: u64) -> anyhow::Result<Value> {
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut body)?;
        let v: Value = serde_json::from_slice(&body)?;
        if v["requestId"].as_u64() == Some(request_id) {
            return Ok(v);
        }
    }
}

/// Another user's job cannot be controlled: through the gateway the request is refused and
/// the job runs on; and the plugin itself, asked by another user, lets Slurm decide and
/// answers error 9 (JobControlFailure) with Slurm's own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_slurm_job_cannot_be_controlled() -> anyhow::Result<()> {
    let (slurm, cluster, gw, http) = setup(ClusterOpts::default()).await?;
    let (id, _) = submit(&http, &slurm_job("mine", "sleep 120")).await?;
    let (running, _) = wait_job(&http, &id, "running", |j| status(j) == "Running").await?;
    let other = gw.client("nobody");
    for op in ["stop", "kill", "suspend"] {
        let (code, body) = control(&other, &id, op).await?;
        assert!(
            code == 403 || code == 404,
            "{op} by another user answered {code}: {body}"
        );
    }
    assert_eq!(status(&get_job(&http, &id).await?), "Running");

    // The plugin alone, as another launcher would run it.
    let sid = slurm_id(&running);
    let dir = tempfile::Builder::new().prefix("slurm-plugin-").tempdir()?;
    std::fs::write(dir.path().join("launcher.slurm.conf"), slurm.plugin_conf())?;
    let mut child = Command::new(slurm_plugin_binary())
        .arg(format!("--scratch-path={}", dir.path().join("scratch").display()))
        .arg("--heartbeat-interval-seconds=0")
        .env("RSTUDIO_CONFIG_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (mut w, mut r) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    send(
        &mut w,
        &json!({"messageType": 1, "requestId": 1, "version": {"major": 3, "minor": 4, "patch": 0}}),
    )?;
    assert_eq!(answer(&mut r, 1)?["messageType"], 1);
    let stop = |rid: u64, user: &str| {
        json!({"messageType": 5, "requestId": rid, "requestUsername": user, "username": user,
               "jobId": sid, "encodedJobId": sid, "operation": 2})
    };
    send(&mut w, &stop(2, "nobody"))?;
    let refused = answer(&mut r, 2)?;
    assert_eq!(refused["errorCode"], 9, "{refused}");
    let msg = refused["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Access/permission denied"),
        "Slurm's message is kept: {msg}"
    );
    // Tags are found again by any plugin instance: the job is listed by its launcher tag.
    send(
        &mut w,
        &json!({"messageType": 3, "requestId": 3, "requestUsername": "*", "username": "*", "jobId": "*",
                "encodedJobId": "*", "tags": [format!("launcher-job:{id}")]}),
    )?;
    let found = answer(&mut r, 3)?;
    assert_eq!(found["jobs"][0]["id"].as_str(), Some(sid.as_str()), "{found}");
    drop(w);
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status(&get_job(&http, &id).await?), "Running");
    drop(cluster);
    Ok(())
}

/// Shared scheduler (ARCHITECTURE.md): when the node that owns a running Slurm job is killed, the
/// job keeps running in Slurm, another node adopts it (control requests work again), and that
/// node reports its end with the right exit code and output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_slurm_job_is_adopted_and_its_end_reported() -> anyhow::Result<()> {
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 3,
        ..Default::default()
    };
    let (slurm, mut cluster, _gw, http) = setup(opts).await?;
    let flag = cluster.root.path().join("go");
    let cmd = format!(
        "echo started; while [ ! -e {f} ]; do sleep 0.2; done; echo adopted-end; exit 4",
        f = flag.display()
    );
    let (id, _) = submit(&http, &slurm_job("survivor", &cmd)).await?;
    let (running, _) = wait_job(&http, &id, "running", |j| status(j) == "Running").await?;
    let sid = slurm_id(&running);
    let owner = (1..=3)
        .find(|i| {
            cluster
                .log(*i)
                .contains(&format!("submitted to Slurm job_id={sid} "))
        })
        .expect("one node's plugin submitted the job");
    cluster.kill(owner);
    assert_eq!(slurm_state(&slurm, &sid), "RUNNING", "the job outlives its owner");
    // A control request for a job whose owner is gone is recorded (committed) and answered as
    // not yet complete; it is carried out once another node adopted the job. (Through a
    // gateway whose connection to the dead owner broke under the request, the client gets
    // 503 and sends it again: no node saw the first one.)
    let (code, body) = wait_until("a live node to take the control request", DEADLINE, || async {
        let (code, body) = control(&http, &id, "suspend").await?;
        Ok((code != 503).then_some((code, body)))
    })
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["operationComplete"], false, "{body}");
    wait_job(&http, &id, "suspended", |j| status(j) == "Suspended").await?;
    let (code, body) = control(&http, &id, "resume").await?;
    assert_eq!(code, 200, "{body}");
    wait_job(&http, &id, "running again", |j| status(j) == "Running").await?;
    std::fs::write(&flag, "")?;
    let (done, _) = wait_job(&http, &id, "finished", terminal).await?;
    assert_eq!(
        (status(&done), done["exitCode"].as_i64()),
        ("Finished", Some(4)),
        "{done}"
    );
    assert_eq!(output(&http, &id, "stdout").await?, "started\nadopted-end\n");
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "{name:<40} n={:<3} mean {:>6.0} ms  p50 {:>6.0} ms  p90 {:>6.0} ms  max {:>6.0} ms",
        v.len(),
        mean * 1e3,
        percentile(&v, 0.5) * 1e3,
        percentile(&v, 0.9) * 1e3,
        v[v.len() - 1] * 1e3
    )
}

/// `sbatch` run as the test user, the way the plugin runs it; returns the Slurm job id.
fn bare_sbatch(slurm: &SlurmCluster) -> anyhow::Result<String> {
    let u = job_user();
    let out = slurm
        .command("setpriv")
        .args([&format!("--reuid={u}"), &format!("--regid={u}"), "--clear-groups"])
        .args([
            "sbatch",
            "--parsable",
            "--chdir=/tmp",
            "--output=/dev/null",
            "--wrap=true",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Figures for the Slurm plugin's README (run with `--run-ignored only`): submit → Running and
/// submit → Finished latency of `true` through the gateway, next to a bare `sbatch` observed
/// the same way (polled every 50 ms, through `scontrol`), and jobs per second sustained with
/// 8 submits in flight. Not a correctness test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures"]
async fn slurm_latency_and_throughput_figures() -> anyhow::Result<()> {
    const SAMPLES: usize = 15;
    const BATCH: usize = 40;
    let every = Duration::from_millis(50);
    let (slurm, _cluster, _gw, http) = setup(ClusterOpts::default()).await?;
    let (mut run_gw, mut fin_gw, mut run_bare, mut fin_bare) = (vec![], vec![], vec![], vec![]);
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        let (id, _) = submit(&http, &slurm_job("true", "true")).await?;
        let mut running = None;
        loop {
            let j = get_job(&http, &id).await?;
            if running.is_none() && status(&j) != "Pending" {
                running = Some(t0.elapsed().as_secs_f64());
            }
            if terminal(&j) {
                assert_eq!(status(&j), "Finished", "{j}");
                fin_gw.push(t0.elapsed().as_secs_f64());
                break;
            }
            anyhow::ensure!(t0.elapsed() < DEADLINE, "job {id} did not finish");
            tokio::time::sleep(every).await;
        }
        run_gw.extend(running);

        let t0 = Instant::now();
        let sid = bare_sbatch(&slurm)?;
        let mut running = None;
        loop {
            let st = slurm_state(&slurm, &sid);
            if running.is_none() && st != "PENDING" && !st.is_empty() {
                running = Some(t0.elapsed().as_secs_f64());
            }
            if st == "COMPLETED" {
                fin_bare.push(t0.elapsed().as_secs_f64());
                break;
            }
            anyhow::ensure!(t0.elapsed() < DEADLINE, "bare job {sid} did not finish: {st}");
            tokio::time::sleep(every).await;
        }
        run_bare.extend(running);
    }

    // Throughput: BATCH jobs, 8 submits in flight, until the last one is Finished.
    let t0 = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for _ in 0..BATCH {
        let (http, sem) = (http.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            submit(&http, &slurm_job("true", "true")).await.map(|(id, _)| id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await??);
    }
    for id in &ids {
        wait_job(&http, id, "finished", terminal).await?;
    }
    let gw_rate = BATCH as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut sids = Vec::new();
    for _ in 0..BATCH {
        sids.push(bare_sbatch(&slurm)?);
    }
    wait_until("bare jobs to complete", DEADLINE, || {
        let left: Vec<String> = sids
            .iter()
            .filter(|s| slurm_state(&slurm, s) != "COMPLETED")
            .cloned()
            .collect();
        async move { Ok(left.is_empty().then_some(())) }
    })
    .await?;
    let bare_rate = BATCH as f64 / t0.elapsed().as_secs_f64();
    println!(
        "Slurm 22.05, 1 node x {} CPUs, plugin poll-seconds=0.5, client polls every 50 ms",
        slurm.cpus
    );
    println!("{}", summary("gateway: submit -> Running (or later)", run_gw));
    println!(
        "{}",
        summary("bare sbatch: submit -> RUNNING (or later)", run_bare)
    );
    println!("{}", summary("gateway: submit -> Finished", fin_gw));
    println!("{}", summary("bare sbatch: submit -> COMPLETED", fin_bare));
    println!(
        "throughput ({BATCH} jobs of `true`): gateway {gw_rate:.2} jobs/s, bare sbatch {bare_rate:.2} jobs/s"
    );
    Ok(())
}

/// Bootstrap checks that Slurm answers: with no controller behind its `slurm.conf` the plugin
/// refuses Bootstrap with Slurm's own message (so the node refuses to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_fails_with_slurms_message_when_the_controller_is_down() -> anyhow::Result<()> {
    launcher_tests::slurm::ensure_installed()?;
    let dir = tempfile::Builder::new().prefix("slurm-down-").tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = dir.path().join("slurm.conf");
    std::fs::write(
        &conf,
        format!(
            "ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort={port}\nAuthType=auth/munge\n\
             AuthInfo=socket={}\nMessageTimeout=2\nNodeName=localhost CPUs=1\n\
             PartitionName=debug Nodes=localhost Default=YES\n",
            dir.path().join("no-munge.socket").display()
        ),
    )?;
    std::fs::write(
        dir.path().join("launcher.slurm.conf"),
        format!("slurm-conf={}\n", conf.display()),
    )?;
    let mut child = Command::new(slurm_plugin_binary())
        .arg(format!("--scratch-path={}", dir.path().join("scratch").display()))
        .env("RSTUDIO_CONFIG_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (mut w, mut r) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    send(
        &mut w,
        &json!({"messageType": 1, "requestId": 1, "version": {"major": 3, "minor": 4, "patch": 0}}),
    )?;
    let a = answer(&mut r, 1)?;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(a["messageType"], -1, "{a}");
    let msg = a["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.contains("sinfo") && msg.contains("Unable to contact slurm controller"),
        "{msg}"
    );
    Ok(())
}

/// Once the controller has forgotten a launcher job (`MinJobAge`; here a controller restart
/// without state), the plugin still answers for it from the job completion file (`sacct -c`):
/// Finished with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_controller_forgot_is_read_from_the_job_completion_file() -> anyhow::Result<()> {
    init_tracing();
    let mut slurm = SlurmCluster::start().await?;
    let u = job_user();
    let out = slurm
        .command("setpriv")
        .args([&format!("--reuid={u}"), &format!("--regid={u}"), "--clear-groups"])
        .args([
            "sbatch",
            "--parsable",
            "--chdir=/tmp",
            "--output=/dev/null",
            "--comment=rstudio-launcher;cluster=Slurm;tags=launcher-job:old",
            "--wrap=exit 5",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until("the job to end", DEADLINE, || {
        let st = slurm_state(&slurm, &sid);
        async move { Ok((st == "FAILED" || st == "COMPLETED").then_some(())) }
    })
    .await?;
    slurm.restart_controller_forgetting_jobs().await?;
    assert!(
        slurm.run("scontrol", &["-o", "show", "job", &sid]).is_err(),
        "the controller forgot it"
    );

    let dir = tempfile::Builder::new().prefix("slurm-plugin-").tempdir()?;
    std::fs::write(dir.path().join("launcher.slurm.conf"), slurm.plugin_conf())?;
    let mut child = Command::new(slurm_plugin_binary())
        .arg(format!("--scratch-path={}", dir.path().join("scratch").display()))
        .env("RSTUDIO_CONFIG_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (mut w, mut r) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    send(
        &mut w,
        &json!({"messageType": 1, "requestId": 1, "version": {"major": 3, "minor": 4, "patch": 0}}),
    )?;
    assert_eq!(answer(&mut r, 1)?["messageType"], 1);
    send(
        &mut w,
        &json!({"messageType": 3, "requestId": 2, "requestUsername": "*", "username": "*", "jobId": sid,
                "encodedJobId": sid}),
    )?;
    let a = answer(&mut r, 2)?;
    let _ = child.kill();
    let _ = child.wait();
    let job = &a["jobs"][0];
    assert_eq!(
        (job["status"].as_str(), job["exitCode"].as_i64()),
        (Some("Finished"), Some(5)),
        "{a}"
    );
    assert_eq!(job["user"].as_str(), Some(u.as_str()), "{a}");
    Ok(())
}
