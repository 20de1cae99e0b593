//! Plugin API conformance of our plugins, as a launcher built on the public plugin SDK drives
//! them: every request type in its minimal form (only what a request means nothing without:
//! `username`, `jobId`, `operation`, `job`, `version`, `cancel: true` for a cancel) and in its full
//! form, each answered as the API says; stream cancels without the optional fields stop their
//! stream; a cancel that cannot be read at all still stops the stream of its request id; what a
//! request does need is refused, when missing, with error 2 naming the field.
//!
//! The plugin binaries are driven directly over their stdin/stdout, without a node: the Local
//! plugin here, the Slurm plugin on a real Slurm in `slurm.rs` ([`check_plugin`] is shared).

use std::process::Stdio;
use std::time::{Duration, Instant};

use launcher_tests::{init_tracing, job_user, DEADLINE};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

// Request types.
const HEARTBEAT: i64 = 0;
const BOOTSTRAP: i64 = 1;
const SUBMIT: i64 = 2;
const GET_JOB: i64 = 3;
const GET_STATUS: i64 = 4;
const CONTROL: i64 = 5;
const GET_OUTPUT: i64 = 6;
const GET_RESOURCES: i64 = 7;
const GET_NETWORK: i64 = 8;
const GET_CLUSTER: i64 = 9;
// Response types.
const R_ERROR: i64 = -1;
const R_JOB_STATE: i64 = 2;
const R_JOB_STATUS: i64 = 3;
const R_CONTROL: i64 = 4;
const R_OUTPUT: i64 = 5;
const R_RESOURCES: i64 = 6;
const R_NETWORK: i64 = 7;
const R_CLUSTER: i64 = 8;

/// A plugin process and the launcher's end of its pipes.
pub struct Speaker {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::UnboundedReceiver<Value>,
    /// Messages received and not yet claimed, in arrival order.
    backlog: Vec<Value>,
    next_request: u64,
}

impl Speaker {
    /// Starts `cmd` (stdin and stdout are taken for the protocol).
    pub fn start(mut cmd: Command) -> anyhow::Result<Speaker> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if stdout.read_exact(&mut len).await.is_err() {
                    break;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if stdout.read_exact(&mut body).await.is_err() {
                    break;
                }
                let v: Value = serde_json::from_slice(&body).expect("the plugin writes JSON");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Ok(Speaker {
            child,
            stdin,
            rx,
            backlog: Vec::new(),
            next_request: 1,
        })
    }

    /// Sends a request of type `t` under request id `rid` (a cancel carries its stream's id).
    pub async fn send_as(&mut self, rid: u64, t: i64, payload: Value) -> anyhow::Result<()> {
        let mut m = payload.as_object().cloned().unwrap_or_default();
        m.insert("messageType".into(), t.into());
        m.insert("requestId".into(), rid.into());
        let body = serde_json::to_vec(&m)?;
        self.stdin.write_all(&(body.len() as u32).to_be_bytes()).await?;
        self.stdin.write_all(&body).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends a request under a new request id; returns the id.
    pub async fn send(&mut self, t: i64, payload: Value) -> anyhow::Result<u64> {
        let rid = self.next_request;
        self.next_request += 1;
        self.send_as(rid, t, payload).await?;
        Ok(rid)
    }

    /// Takes the next message that arrived (from the backlog first).
    async fn recv(&mut self, until: Instant) -> anyhow::Result<Value> {
        if !self.backlog.is_empty() {
            return Ok(self.backlog.remove(0));
        }
        match tokio::time::timeout_at(until.into(), self.rx.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => anyhow::bail!("the plugin closed its stdout"),
            Err(_) => anyhow::bail!("timed out"),
        }
    }

    /// Waits for a message `pred` accepts; the others stay in the backlog, in order.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Ok(self.backlog.remove(i));
        }
        let until = Instant::now() + DEADLINE;
        loop {
            let m = tokio::time::timeout_at(until.into(), self.rx.recv())
                .await
                .map_err(|_| anyhow::anyhow!("timed out waiting for {what}; unclaimed: {:#?}", self.backlog))?
                .ok_or_else(|| anyhow::anyhow!("the plugin closed its stdout waiting for {what}"))?;
            if pred(&m) {
                return Ok(m);
            }
            self.backlog.push(m);
        }
    }

    /// The answer to request `rid`.
    pub async fn answer(&mut self, rid: u64) -> anyhow::Result<Value> {
        self.wait_for(&format!("the answer to request {rid}"), |m| m["requestId"] == rid)
            .await
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&mut self, t: i64, payload: Value) -> anyhow::Result<Value> {
        let rid = self.send(t, payload).await?;
        self.answer(rid).await
    }

    /// Every message from now until `pred` accepts one (which is the last of them): what the
    /// plugin sent meanwhile, in order. The backlog must be claimed first.
    async fn collect_until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let until = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let m = self
                .recv(until)
                .await
                .map_err(|e| anyhow::anyhow!("{e} waiting for {what}; seen: {seen:#?}"))?;
            let done = pred(&m);
            seen.push(m);
            if done {
                return Ok(seen);
            }
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Whether `m` belongs to stream `rid`: output by its `requestId`, statuses and resource use by
/// their `sequences`.
fn on_stream(m: &Value, rid: u64) -> bool {
    m["requestId"] == rid
        || m["sequences"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["requestId"] == rid))
}

fn kind(m: &Value) -> i64 {
    m["messageType"].as_i64().unwrap_or(i64::MIN)
}

fn expect(m: &Value, t: i64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(kind(m) == t, "{what}: expected message type {t}, got {m}");
    Ok(())
}

/// An Error with code 2 that names `field` as missing.
fn expect_missing(m: &Value, field: &str) -> anyhow::Result<()> {
    let msg = m["errorMessage"].as_str().unwrap_or_default();
    anyhow::ensure!(
        kind(m) == R_ERROR && m["errorCode"] == 2 && msg.contains(&format!("missing field `{field}`")),
        "expected error 2 naming {field}: {m}"
    );
    Ok(())
}

/// Polls GetJob (minimal form) until job `id` has `status`.
async fn wait_status(p: &mut Speaker, user: &str, id: &str, status: &str) -> anyhow::Result<Value> {
    let end = Instant::now() + DEADLINE;
    loop {
        let m = p.request(GET_JOB, json!({"username": user, "jobId": id})).await?;
        expect(&m, R_JOB_STATE, "GetJob")?;
        let j = m["jobs"][0].clone();
        if j["status"] == status {
            return Ok(j);
        }
        anyhow::ensure!(Instant::now() < end, "job {id} never became {status}: {j}");
        // A poll interval, not a stand-in for a condition.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the cancels under `canceled` (already sent), then proves they took: once the plugin has
/// answered a Heartbeat sent after them (it reads requests in order), nothing more arrives for
/// a canceled stream while the `witness` stream on the same job, opened before, receives
/// `more` further messages.
async fn proves_canceled(p: &mut Speaker, canceled: &[u64], witness: u64, more: usize) -> anyhow::Result<()> {
    let hb = p.send(HEARTBEAT, json!({})).await?;
    p.answer(hb).await?;
    // Whatever came before the Heartbeat's answer was sent before the cancels were read.
    p.backlog.clear();
    let mut got = 0;
    let seen = p
        .collect_until(&format!("{more} messages on witness stream {witness}"), |m| {
            if on_stream(m, witness) {
                got += 1;
            }
            got >= more
        })
        .await?;
    for m in &seen {
        for rid in canceled {
            anyhow::ensure!(!on_stream(m, *rid), "canceled stream {rid} still got {m}");
        }
    }
    Ok(())
}

/// What distinguishes the plugins under test.
pub struct Subject {
    /// The `cluster` of its jobs.
    pub cluster: &'static str,
}

/// Drives a bootstrapped-from-scratch plugin through every request type, minimal and full.
pub async fn check_plugin(p: &mut Speaker, s: &Subject) -> anyhow::Result<()> {
    let user = job_user();
    let user = user.as_str();

    // Bootstrap has one form: the version is what it is about.
    let m = p
        .request(
            BOOTSTRAP,
            json!({"version": {"major": 3, "minor": 4, "patch": 0}}),
        )
        .await?;
    expect(&m, BOOTSTRAP, "Bootstrap")?;
    let m = p.request(HEARTBEAT, json!({})).await?;
    expect(&m, HEARTBEAT, "Heartbeat")?;

    // GetClusterInfo.
    for form in [
        json!({"username": user}),
        json!({"requestUsername": user, "username": user}),
    ] {
        let m = p.request(GET_CLUSTER, form.clone()).await?;
        expect(&m, R_CLUSTER, &format!("GetClusterInfo {form}"))?;
        anyhow::ensure!(m["queues"].as_array().is_some_and(|q| !q.is_empty()), "{m}");
    }

    // SubmitJob: minimal (the job runs as `username`) and full.
    let command = "while :; do echo tick; sleep 0.2; done";
    let job = json!({"name": "conformance", "cluster": s.cluster, "command": command});
    let m = p.request(SUBMIT, json!({"username": user, "job": job})).await?;
    expect(&m, R_JOB_STATE, "SubmitJob minimal")?;
    anyhow::ensure!(m["jobs"][0]["user"] == user, "the job runs as username: {m}");
    let id = m["jobs"][0]["id"].as_str().expect("job id").to_string();
    let mut full_job = job.clone();
    full_job["user"] = user.into();
    full_job["tags"] = json!(["conformance-full"]);
    let m = p
        .request(
            SUBMIT,
            json!({"requestUsername": user, "username": user, "job": full_job}),
        )
        .await?;
    expect(&m, R_JOB_STATE, "SubmitJob full")?;
    let id2 = m["jobs"][0]["id"].as_str().expect("job id").to_string();
    let m = p.request(SUBMIT, json!({"job": job})).await?;
    expect_missing(&m, "username")?;

    // GetJob: minimal, and full with every filter.
    wait_status(p, user, &id, "Running").await?;
    wait_status(p, user, &id2, "Running").await?;
    let full = json!({"requestUsername": user, "username": user, "jobId": "*", "encodedJobId": "*",
        "tags": ["conformance-full"], "statuses": ["Running"], "startTime": "2000-01-01T00:00:00Z",
        "endTime": "2100-01-01T00:00:00Z", "fields": ["status"]});
    let m = p.request(GET_JOB, full).await?;
    expect(&m, R_JOB_STATE, "GetJob full")?;
    anyhow::ensure!(
        m["jobs"].as_array().is_some_and(|j| j.len() == 1) && m["jobs"][0]["id"] == id2.as_str(),
        "filters and fields: {m}"
    );
    anyhow::ensure!(
        m["jobs"][0]["status"] == "Running" && m["jobs"][0].get("name").is_none(),
        "{m}"
    );
    let m = p.request(GET_JOB, json!({"username": user})).await?;
    expect_missing(&m, "jobId")?;

    // GetJobStatus: a minimal stream, a full one as witness; the minimal cancel (no
    // encodedJobId, no requestUsername) stops the minimal stream.
    let st_min = p.send(GET_STATUS, json!({"username": user, "jobId": id})).await?;
    let m = p
        .wait_for("the minimal status stream", |m| on_stream(m, st_min))
        .await?;
    expect(&m, R_JOB_STATUS, "GetJobStatus minimal")?;
    let st_full = p
        .send(
            GET_STATUS,
            json!({"requestUsername": user, "username": user, "jobId": id, "encodedJobId": id, "cancel": false}),
        )
        .await?;
    let m = p
        .wait_for("the full status stream", |m| on_stream(m, st_full))
        .await?;
    expect(&m, R_JOB_STATUS, "GetJobStatus full")?;
    p.send_as(
        st_min,
        GET_STATUS,
        json!({"username": user, "jobId": id, "cancel": true}),
    )
    .await?;
    let m = p
        .request(GET_STATUS, json!({"jobId": id, "cancel": false}))
        .await?;
    expect_missing(&m, "username")?;

    // GetJobOutput: minimal (both outputs), full as witness; the minimal cancel (no outputType)
    // stops its stream, and so does a cancel that cannot be read.
    let out_min = p.send(GET_OUTPUT, json!({"username": user, "jobId": id})).await?;
    let m = p
        .wait_for("output on the minimal stream", |m| on_stream(m, out_min))
        .await?;
    expect(&m, R_OUTPUT, "GetJobOutput minimal")?;
    anyhow::ensure!(m["output"].as_str().is_some_and(|o| o.contains("tick")), "{m}");
    let out_full = p
        .send(
            GET_OUTPUT,
            json!({"requestUsername": user, "username": user, "jobId": id, "encodedJobId": id,
                   "outputType": 0, "cancel": false}),
        )
        .await?;
    let m = p
        .wait_for("output on the full stream", |m| on_stream(m, out_full))
        .await?;
    expect(&m, R_OUTPUT, "GetJobOutput full")?;
    let out_bad = p
        .send(
            GET_OUTPUT,
            json!({"username": user, "jobId": id, "outputType": 1}),
        )
        .await?;
    p.send_as(
        out_min,
        GET_OUTPUT,
        json!({"username": user, "jobId": id, "cancel": true}),
    )
    .await?;
    // Unreadable (no username, no jobId): answered with error 2, and the stream still stops.
    p.send_as(out_bad, GET_OUTPUT, json!({"cancel": true})).await?;
    let m = p
        .wait_for("the refusal of the unreadable cancel", |m| {
            m["requestId"] == out_bad && kind(m) == R_ERROR
        })
        .await?;
    expect_missing(&m, "username")?;
    proves_canceled(p, &[out_min, out_bad], out_full, 3).await?;

    // GetJobResourceUtil: minimal (cancel absent means open), full as witness, minimal cancel.
    let res_min = p
        .send(GET_RESOURCES, json!({"username": user, "jobId": id}))
        .await?;
    let m = p
        .wait_for("a sample on the minimal resource stream", |m| {
            on_stream(m, res_min)
        })
        .await?;
    expect(&m, R_RESOURCES, "GetJobResourceUtil minimal")?;
    let res_full = p
        .send(
            GET_RESOURCES,
            json!({"requestUsername": user, "username": user, "jobId": id, "encodedJobId": id, "cancel": false}),
        )
        .await?;
    let m = p
        .wait_for("a sample on the full resource stream", |m| on_stream(m, res_full))
        .await?;
    expect(&m, R_RESOURCES, "GetJobResourceUtil full")?;
    p.send_as(
        res_min,
        GET_RESOURCES,
        json!({"username": user, "jobId": id, "cancel": true}),
    )
    .await?;
    proves_canceled(p, &[res_min], res_full, 2).await?;
    let m = p
        .request(GET_RESOURCES, json!({"username": user, "jobId": "*"}))
        .await?;
    anyhow::ensure!(
        kind(&m) == R_ERROR && m["errorCode"] == 2,
        "resource use of *: {m}"
    );

    // GetJobNetwork: minimal and full; `*` is not one job.
    for form in [
        json!({"username": user, "jobId": id}),
        json!({"requestUsername": user, "username": user, "jobId": id, "encodedJobId": id}),
    ] {
        let m = p.request(GET_NETWORK, form.clone()).await?;
        expect(&m, R_NETWORK, &format!("GetJobNetwork {form}"))?;
        anyhow::ensure!(m["host"].as_str().is_some_and(|h| !h.is_empty()), "{m}");
    }
    let m = p
        .request(GET_NETWORK, json!({"username": user, "jobId": "*"}))
        .await?;
    anyhow::ensure!(kind(&m) == R_ERROR && m["errorCode"] == 2, "network of *: {m}");

    // ControlJob: suspend minimal, resume full; `*` and a missing operation are refused.
    let m = p
        .request(CONTROL, json!({"username": user, "jobId": id, "operation": 0}))
        .await?;
    expect(&m, R_CONTROL, "suspend minimal")?;
    anyhow::ensure!(m["operationComplete"] == true, "{m}");
    wait_status(p, user, &id, "Suspended").await?;
    let m = p
        .request(
            CONTROL,
            json!({"requestUsername": user, "username": user, "jobId": id, "encodedJobId": id, "operation": 1}),
        )
        .await?;
    expect(&m, R_CONTROL, "resume full")?;
    wait_status(p, user, &id, "Running").await?;
    let m = p
        .request(CONTROL, json!({"username": user, "jobId": "*", "operation": 3}))
        .await?;
    anyhow::ensure!(kind(&m) == R_ERROR && m["errorCode"] == 2, "control of *: {m}");
    let m = p.request(CONTROL, json!({"username": user, "jobId": id})).await?;
    expect_missing(&m, "operation")?;

    // Kill, minimal: answered, the status witness sees Killed, the output and resource
    // witnesses complete; nothing, not even a completion, reaches a canceled stream.
    p.backlog.clear();
    let kill = p
        .send(CONTROL, json!({"username": user, "jobId": id, "operation": 3}))
        .await?;
    let mut pending = [false; 4];
    let seen = p
        .collect_until("the kill's answer and the witnesses' ends", |m| {
            if m["requestId"] == kill {
                pending[0] = true;
            }
            if on_stream(m, st_full) && m["status"] == "Killed" {
                pending[1] = true;
            }
            if m["requestId"] == out_full && m["complete"] == true {
                pending[2] = true;
            }
            if on_stream(m, res_full) && m["complete"] == true {
                pending[3] = true;
            }
            pending.iter().all(|d| *d)
        })
        .await?;
    for m in &seen {
        for rid in [st_min, out_min, out_bad, res_min] {
            anyhow::ensure!(!on_stream(m, rid), "canceled stream {rid} still got {m}");
        }
        if m["requestId"] == kill {
            expect(m, R_CONTROL, "kill minimal")?;
            anyhow::ensure!(m["operationComplete"] == true, "{m}");
        }
    }
    // Kill, full.
    let m = p
        .request(
            CONTROL,
            json!({"requestUsername": user, "username": user, "jobId": id2, "encodedJobId": id2, "operation": 3}),
        )
        .await?;
    expect(&m, R_CONTROL, "kill full")?;
    wait_status(p, user, &id2, "Killed").await?;
    Ok(())
}

/// The Local plugin takes every request in its minimal and its full form (see the module doc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_plugin_takes_minimal_and_full_requests() -> anyhow::Result<()> {
    init_tracing();
    job_user();
    let dir = tempfile::Builder::new().prefix("conformance-local-").tempdir()?;
    launcher_tests::traversable(dir.path())?;
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf)?;
    std::fs::write(conf.join("launcher.local.conf"), "resource-poll-seconds=0.5\n")?;
    let mut cmd = Command::new(launcher_tests::process::local_plugin_binary());
    cmd.arg(format!("--scratch-path={}", dir.path().join("scratch").display()))
        .arg("--heartbeat-interval-seconds=0")
        .env("RSTUDIO_CONFIG_DIR", &conf)
        .stderr(std::fs::File::create(dir.path().join("plugin.log"))?);
    let mut p = Speaker::start(cmd)?;
    let r = check_plugin(&mut p, &Subject { cluster: "Local" }).await;
    if r.is_err() {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("plugin.log")).unwrap_or_default()
        );
    }
    r
}
