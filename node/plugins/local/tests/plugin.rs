//! The Local plugin as a launcher sees it: the real binary started with a temporary scratch
//! path and `RSTUDIO_CONFIG_DIR`, driven over its stdin/stdout with the Plugin API, running
//! real jobs through real supervisors.
//!
//! Jobs run as `launcher-lp-test` (created with `useradd` when missing); root jobs are refused
//! (`allow-root-jobs=0`) unless a test says otherwise. Every wait has a deadline; every test
//! kills what is left of its jobs when it ends.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use launcher_local_plugin::spec::{self, Started};
use launcher_plugin_api::framing;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Pid, User};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_launcher-local-plugin");
const DEADLINE: Duration = Duration::from_secs(30);
const TEST_USER: &str = "launcher-lp-test";

// Message types.
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

fn test_user() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        if let Some(u) = User::from_name(TEST_USER).unwrap() {
            return own_home(u);
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests run as root (they start jobs as {TEST_USER})"
        );
        let out = std::process::Command::new("useradd")
            .args(["--create-home", TEST_USER])
            .output()
            .unwrap();
        // Another test process may have created it meanwhile: look again before failing.
        let user = User::from_name(TEST_USER)
            .unwrap()
            .unwrap_or_else(|| panic!("useradd failed: {}", String::from_utf8_lossy(&out.stderr)));
        own_home(user)
    })
}

/// Hands the user's home back to it: a home left behind by an earlier user of the same name
/// (deleted and created again with another uid) would keep the user out of its own files.
fn own_home(user: User) -> User {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(&user.dir) {
        if meta.uid() != user.uid.as_raw() {
            nix::unistd::chown(&user.dir, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
    user
}

/// A scratch path and config dir for plugins; dropping it kills every job process left.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(conf: &str) -> Env {
        test_user();
        let dir = tempfile::tempdir().unwrap();
        // Jobs run as another user: they must reach their TMPDIR and output under the scratch path.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/launcher.local.conf"), conf).unwrap();
        Env { dir }
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// Starts a plugin on this scratch path and config.
    fn start(&self, args: &[&str], env: &[(&str, &str)]) -> PluginUnderTest {
        self.start_as(&[], &self.scratch(), args, env)
    }

    /// Starts a plugin through `prefix` (e.g. setpriv) on the scratch path `scratch`.
    fn start_as(
        &self,
        prefix: &[String],
        scratch: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> PluginUnderTest {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => tokio::process::Command::new(BIN),
        };
        cmd.arg(format!("--scratch-path={}", scratch.display()))
            .arg("--heartbeat-interval-seconds=0")
            .args(args)
            .env("RSTUDIO_CONFIG_DIR", self.conf())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("plugin.log")).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(body)) = framing::read_message(&mut stdout).await {
                let v: Value = serde_json::from_slice(&body).expect("the plugin writes JSON");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        PluginUnderTest {
            child,
            stdin,
            rx,
            backlog: Vec::new(),
            next_request: 1,
            last_response: 0,
        }
    }

    /// Pids of the job processes and supervisors the plugin recorded.
    fn recorded_pids(&self) -> Vec<(i32, bool)> {
        let mut v = Vec::new();
        let dirs =
            ["scratch", "scratch-user"].map(|s| std::fs::read_dir(self.dir.path().join(s).join("jobs")));
        for e in dirs.into_iter().flatten().flatten().flatten() {
            if let Ok(Some(s)) = spec::read_json::<Started>(&e.path(), spec::STARTED_FILE) {
                v.push((s.pid, true));
                v.push((s.supervisor_pid, false));
            }
            if let Ok(Some(r)) = spec::read_json::<Value>(&e.path(), "job.json") {
                if let Some(p) = r["supervisorPid"].as_i64() {
                    v.push((p as i32, false));
                }
            }
        }
        v
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (pid, group) in self.recorded_pids() {
            if group {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A running plugin and the launcher's side of its pipes.
struct PluginUnderTest {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::UnboundedReceiver<Value>,
    /// Messages received but not yet asked for.
    backlog: Vec<Value>,
    next_request: u64,
    last_response: u64,
}

impl PluginUnderTest {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request of type `t` with `payload`'s fields; returns its request id.
    async fn send(&mut self, t: i64, payload: Value) -> u64 {
        let rid = self.next_request;
        self.next_request += 1;
        self.send_as(rid, t, payload).await;
        rid
    }

    /// Sends a request with a given request id (a stream's cancel carries the stream's id).
    async fn send_as(&mut self, rid: u64, t: i64, payload: Value) {
        let mut m = payload.as_object().cloned().unwrap_or_default();
        m.insert("messageType".into(), t.into());
        m.insert("requestId".into(), rid.into());
        let body = serde_json::to_vec(&m).unwrap();
        framing::write_message(&mut self.stdin, &body).await.unwrap();
    }

    /// The next message, checking that response ids go up by one from 1.
    async fn next(&mut self, until: Instant) -> Option<Value> {
        let m = tokio::time::timeout_at(until.into(), self.rx.recv())
            .await
            .ok()??;
        let r = m["responseId"].as_u64().expect("every response has a responseId");
        assert_eq!(r, self.last_response + 1, "responseIds increase by one: {m}");
        self.last_response = r;
        Some(m)
    }

    /// Waits for a message that `pred` accepts (earlier others are kept for later).
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let until = Instant::now() + DEADLINE;
        loop {
            match self.next(until).await {
                Some(m) if pred(&m) => return m,
                Some(m) => self.backlog.push(m),
                None => panic!(
                    "timed out waiting for {what}; unclaimed messages: {:#?}",
                    self.backlog
                ),
            }
        }
    }

    /// The answer to request `rid`.
    async fn answer(&mut self, rid: u64) -> Value {
        self.wait_for(&format!("the answer to request {rid}"), |m| m["requestId"] == rid)
            .await
    }

    async fn request(&mut self, t: i64, payload: Value) -> Value {
        let rid = self.send(t, payload).await;
        self.answer(rid).await
    }

    async fn bootstrap(&mut self) {
        let m = self
            .request(
                BOOTSTRAP,
                json!({"version": {"major": 3, "minor": 4, "patch": 0}}),
            )
            .await;
        assert_eq!(m["messageType"], BOOTSTRAP, "{m}");
    }

    /// Submits `job` as the test user; returns the JobState answer.
    async fn submit(&mut self, job: Value) -> Value {
        self.request(
            SUBMIT,
            json!({"requestUsername": TEST_USER, "username": TEST_USER, "job": job}),
        )
        .await
    }

    /// Submits a shell command and returns the job's id.
    async fn submit_command(&mut self, command: &str) -> String {
        let m = self.submit(job(command)).await;
        assert_eq!(m["messageType"], R_JOB_STATE, "{m}");
        assert_eq!(m["jobs"][0]["status"], "Pending", "{m}");
        m["jobs"][0]["id"].as_str().unwrap().to_string()
    }

    async fn get_job(&mut self, id: &str) -> Value {
        let m = self
            .request(
                GET_JOB,
                json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id}),
            )
            .await;
        assert_eq!(m["messageType"], R_JOB_STATE, "{m}");
        m["jobs"][0].clone()
    }

    /// Polls GetJob until the job has `status`.
    async fn wait_job_status(&mut self, id: &str, status: &str) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let j = self.get_job(id).await;
            if j["status"] == status {
                return j;
            }
            assert!(Instant::now() < end, "job {id} never became {status}: {j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn open_status_stream(&mut self, id: &str) -> u64 {
        self.send(
            GET_STATUS,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "cancel": false}),
        )
        .await
    }

    /// Waits for the status message of stream `rid` about job `id` that reaches `status`.
    async fn wait_stream_status(&mut self, rid: u64, id: &str, status: &str) -> Value {
        let what = format!("status {status} of job {id} on stream {rid}");
        self.wait_for(&what, |m| {
            m["messageType"] == R_JOB_STATUS
                && m["id"] == id
                && m["status"] == status
                && m["sequences"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["requestId"] == rid)
        })
        .await
    }

    async fn control(&mut self, id: &str, operation: i64) -> Value {
        self.request(
            CONTROL,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "operation": operation}),
        )
        .await
    }

    /// Collects the output of a job (both streams) until `complete`: (stdout, stderr).
    async fn output(&mut self, id: &str) -> (String, String) {
        let rid = self
            .send(
                GET_OUTPUT,
                json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id,
                       "outputType": 2, "cancel": false}),
            )
            .await;
        let (mut out, mut err) = (String::new(), String::new());
        loop {
            let m = self.answer(rid).await;
            assert_eq!(m["messageType"], R_OUTPUT, "{m}");
            match m["outputType"].as_str().unwrap() {
                "stdout" => out.push_str(m["output"].as_str().unwrap()),
                "stderr" => err.push_str(m["output"].as_str().unwrap()),
                "mixed" => assert_eq!(m["output"], "", "{m}"),
                other => panic!("outputType {other}"),
            }
            if m["complete"] == true {
                return (out, err);
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }
}

fn job(command: &str) -> Value {
    json!({"name": "test", "cluster": "Local", "command": command})
}

fn error_code(m: &Value) -> i64 {
    assert_eq!(m["messageType"], R_ERROR, "expected an Error: {m}");
    m["errorCode"].as_i64().unwrap()
}

/// The state letter of `/proc/<pid>/stat` (`T` when stopped).
fn proc_state(pid: i64) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bootstrap answers with our API version; another major version is refused with error 10.
#[tokio::test]
async fn bootstrap_checks_the_major_version() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    let m = p
        .request(
            BOOTSTRAP,
            json!({"version": {"major": 3, "minor": 0, "patch": 7}}),
        )
        .await;
    assert_eq!(
        (m["messageType"].as_i64(), m["version"]["major"].as_i64()),
        (Some(BOOTSTRAP), Some(3)),
        "{m}"
    );
    let m = p
        .request(
            BOOTSTRAP,
            json!({"version": {"major": 2, "minor": 9, "patch": 0}}),
        )
        .await;
    assert_eq!(error_code(&m), 10);
    assert!(m["errorMessage"].as_str().unwrap().contains("2.9.0"), "{m}");
}

/// A job goes Pending → Running → Finished (exit 0) on a `*` status stream whose sequence
/// numbers count 1, 2, 3; its output stream returns stdout and stderr apart and completes.
#[tokio::test]
async fn a_job_runs_to_finished_with_its_statuses_and_output() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let stream = p.open_status_stream("*").await;
    let id = p.submit_command("echo hi; echo err >&2").await;
    let mut seen = Vec::new();
    for status in ["Pending", "Running", "Finished"] {
        let m = p.wait_stream_status(stream, &id, status).await;
        assert_eq!(m["requestId"], 0, "{m}");
        let seq = m["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["requestId"] == stream)
            .unwrap()
            .clone();
        seen.push(seq["seqId"].as_u64().unwrap());
        if status == "Running" {
            assert!(m["pid"].as_i64().unwrap() > 0, "{m}");
        }
        if status == "Finished" {
            assert_eq!(m["exitCode"], 0, "{m}");
            assert!(m["lastUpdateTime"].as_str().unwrap().ends_with('Z'), "{m}");
        }
    }
    assert_eq!(seen, [1, 2, 3]);
    let (out, err) = p.output(&id).await;
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "err\n"));
    let j = p.get_job(&id).await;
    assert_eq!(
        (j["exitCode"].as_i64(), j["user"].as_str()),
        (Some(0), Some(TEST_USER)),
        "{j}"
    );
    assert_eq!(j["host"], launcher_local_plugin::host::hostname());
}

/// Exit codes pass through (`exit 3` is Finished 3); death by a signal nobody here sent is
/// Failed with 128+N and a message naming the signal.
#[tokio::test]
async fn exit_codes_and_unexpected_signals() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let three = p.submit_command("exit 3").await;
    let segv = p.submit_command("kill -SEGV $$").await;
    let j = p.wait_job_status(&three, "Finished").await;
    assert_eq!(j["exitCode"], 3, "{j}");
    let j = p.wait_job_status(&segv, "Failed").await;
    assert_eq!(j["exitCode"], 139, "{j}");
    assert!(j["statusMessage"].as_str().unwrap().contains("SIGSEGV"), "{j}");
}

/// Suspend stops the job's process group (state T), resume continues it, stop ends it as
/// Killed 143; control of a job that is not running is refused with the right codes.
#[tokio::test]
async fn suspend_resume_and_stop() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let id = p.submit_command("sleep 60").await;
    let j = p.wait_job_status(&id, "Running").await;
    let pid = j["pid"].as_i64().unwrap();
    let m = p.control(&id, 1).await;
    assert_eq!(error_code(&m), 8, "resume of a running job");
    let m = p.control(&id, 0).await;
    assert_eq!(
        (m["messageType"].as_i64(), &m["operationComplete"]),
        (Some(R_CONTROL), &json!(true)),
        "{m}"
    );
    wait_until("the job's process to stop", || proc_state(pid) == Some('T')).await;
    assert_eq!(p.get_job(&id).await["status"], "Suspended");
    let m = p.control(&id, 0).await;
    assert_eq!(error_code(&m), 8, "suspend of a suspended job");
    let m = p.control(&id, 1).await;
    assert_eq!(m["messageType"], R_CONTROL, "{m}");
    wait_until("the job's process to continue", || {
        proc_state(pid).is_some_and(|s| s != 'T')
    })
    .await;
    assert_eq!(p.get_job(&id).await["status"], "Running");
    let m = p.control(&id, 4).await;
    assert_eq!(error_code(&m), 8, "cancel of a running job");
    let m = p.control(&id, 2).await;
    assert_eq!(m["messageType"], R_CONTROL, "{m}");
    let j = p.wait_job_status(&id, "Killed").await;
    assert_eq!(j["exitCode"], 143, "{j}");
    let m = p.control(&id, 3).await;
    assert_eq!(error_code(&m), 6, "kill of an ended job");
    let m = p.control("no-such-job", 3).await;
    assert_eq!(error_code(&m), 3);
}

/// Kill ends a running job as Killed 137; a suspended job can be stopped too.
#[tokio::test]
async fn kill_and_stop_of_a_suspended_job() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let a = p.submit_command("sleep 60").await;
    let b = p
        .submit_command("trap 'exit 5' TERM; touch \"$TMPDIR/ready\"; while :; do sleep 0.1; done")
        .await;
    p.wait_job_status(&a, "Running").await;
    p.wait_job_status(&b, "Running").await;
    let ready = env.scratch().join("tmp").join(&b).join("ready");
    wait_until("the job's SIGTERM trap", || ready.exists()).await;
    assert_eq!(p.control(&a, 3).await["messageType"], R_CONTROL);
    let j = p.wait_job_status(&a, "Killed").await;
    assert_eq!(j["exitCode"], 137, "{j}");
    assert_eq!(p.control(&b, 0).await["messageType"], R_CONTROL);
    assert_eq!(p.control(&b, 2).await["messageType"], R_CONTROL);
    // The job traps SIGTERM and exits 5: still ended by the launcher.
    let j = p.wait_job_status(&b, "Killed").await;
    assert_eq!(j["exitCode"], 5, "{j}");
}

/// Every process of group `pgid`, zombies included: `(pid, state)`.
fn group(pgid: i64) -> Vec<(i32, char)> {
    use launcher_local_plugin::procfs;
    procfs::all_pids()
        .into_iter()
        .filter_map(procfs::read_stat)
        .filter(|st| i64::from(st.pgrp) == pgid)
        .map(|st| (st.pid, st.state))
        .collect()
}

/// Submits a job whose shell leads a group of three (it and two sleeping children, orphaned when
/// it dies) and waits until all three run; returns its id and process group.
async fn submit_group_of_three(p: &mut PluginUnderTest, env: &Env, prelude: &str) -> (String, i64) {
    let id = p
        .submit_command(&format!(
            "{prelude}sleep 300 & sleep 301 & touch \"$TMPDIR/ready\"; wait"
        ))
        .await;
    let pgid = p.wait_job_status(&id, "Running").await["pid"].as_i64().unwrap();
    let ready = env.scratch().join("tmp").join(&id).join("ready");
    wait_until("the job's shell and its two children", || {
        ready.exists() && group(pgid).iter().filter(|(_, s)| *s != 'Z').count() == 3
    })
    .await;
    (id, pgid)
}

/// Control answers tell the truth at the moment they are read, both ways round. Suspend and
/// resume are answered once every process of the job's group is stopped / running again. Kill
/// and stop: the Killed status, as it arrives on a status stream, comes when nothing of the
/// job's group is left, not even a zombie (its orphans were reaped); and a GetJob sent right
/// after the answer says Killed. A job that ignores SIGTERM is Running, its statusMessage saying
/// SIGTERM was sent, until stop-grace-seconds have passed; then it gets SIGKILL (137).
#[tokio::test]
async fn control_answers_come_when_the_processes_are_there() {
    let env = Env::new("stop-grace-seconds=2\n");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let (id, pgid) = submit_group_of_three(&mut p, &env, "").await;
    let live = |pgid| -> Vec<char> {
        group(pgid)
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| *s != 'Z')
            .collect()
    };
    let m = p.control(&id, 0).await;
    assert_eq!(m["operationComplete"], true, "{m}");
    assert_eq!(live(pgid), ['T', 'T', 'T'], "suspended means stopped");
    assert_eq!(p.get_job(&id).await["status"], "Suspended");
    let m = p.control(&id, 1).await;
    assert_eq!(m["operationComplete"], true, "{m}");
    assert!(
        !live(pgid).contains(&'T'),
        "resumed means running: {:?}",
        live(pgid)
    );
    assert_eq!(p.get_job(&id).await["status"], "Running");

    // The status first: nothing is left when Killed arrives.
    let stream = p.open_status_stream(&id).await;
    p.wait_stream_status(stream, &id, "Running").await;
    let rid = p
        .send(CONTROL, json!({"username": "*", "jobId": id, "operation": 3}))
        .await;
    let m = p.wait_stream_status(stream, &id, "Killed").await;
    assert_eq!(group(pgid), [], "Killed while processes of the job are left: {m}");
    let m = p.answer(rid).await;
    assert_eq!(
        (m["messageType"].as_i64(), &m["operationComplete"]),
        (Some(R_CONTROL), &json!(true)),
        "{m}"
    );

    // The answer first: the very next GetJob says Killed, and nothing is left.
    let (id, pgid) = submit_group_of_three(&mut p, &env, "").await;
    let m = p.control(&id, 3).await;
    assert_eq!(m["operationComplete"], true, "{m}");
    let j = p.get_job(&id).await;
    assert_eq!(
        (j["status"].as_str(), j["exitCode"].as_i64()),
        (Some("Killed"), Some(137)),
        "{j}"
    );
    assert_eq!(group(pgid), []);

    // Stop of a job deaf to SIGTERM: Running and saying so through the grace, then SIGKILL.
    let (id, pgid) = submit_group_of_three(&mut p, &env, "trap '' TERM; ").await;
    let start = Instant::now();
    let rid = p
        .send(CONTROL, json!({"username": "*", "jobId": id, "operation": 2}))
        .await;
    let end = Instant::now() + DEADLINE;
    let j = loop {
        let j = p.get_job(&id).await;
        if j["statusMessage"]
            .as_str()
            .is_some_and(|m| m.contains("SIGTERM sent"))
        {
            break j;
        }
        assert!(Instant::now() < end, "the stop never showed: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(j["status"], "Running", "{j}");
    assert_eq!(live(pgid).len(), 3, "SIGTERM is ignored");
    let m = p.answer(rid).await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "answered within the grace: {m}"
    );
    assert_eq!(m["operationComplete"], true, "{m}");
    let j = p.get_job(&id).await;
    assert_eq!(
        (j["status"].as_str(), j["exitCode"].as_i64()),
        (Some("Killed"), Some(137)),
        "{j}"
    );
    assert_eq!(group(pgid), []);
}

/// A job still Pending (its supervisor is slowed down by a wrapper) is canceled at once and
/// never runs; cancel of a job that is no longer Pending is error 8.
#[tokio::test]
async fn cancel_of_a_pending_job() {
    let env = Env::new("");
    let wrapper = env.dir.path().join("slow-supervisor");
    std::fs::write(&wrapper, "#!/bin/sh\nsleep 3\nexec \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = env.start(
        &[],
        &[(
            launcher_local_plugin::SUPERVISOR_WRAPPER_ENV,
            wrapper.to_str().unwrap(),
        )],
    );
    p.bootstrap().await;
    let stream = p.open_status_stream("*").await;
    let marker = env.dir.path().join("ran");
    let id = p.submit_command(&format!("touch {}", marker.display())).await;
    let m = p.control(&id, 4).await;
    assert_eq!(m["messageType"], R_CONTROL, "{m}");
    // Answered once the supervisor is gone (a zombie until the plugin reaps its child).
    let sup = env.recorded_pids().into_iter().find(|(_, g)| !g).unwrap().0;
    assert!(
        proc_state(sup as i64).is_none_or(|s| s == 'Z'),
        "the supervisor runs on"
    );
    assert_eq!(p.get_job(&id).await["status"], "Canceled");
    let m = p.wait_stream_status(stream, &id, "Canceled").await;
    assert_eq!(m["exitCode"], Value::Null, "{m}");
    assert_eq!(p.control(&id, 4).await["errorCode"], 8);
    // The supervisor (the only process that could start the job) is gone: nothing ran.
    assert!(!marker.exists(), "a canceled job never runs");
    assert!(!env.scratch().join("jobs").join(&id).join("started.json").exists());
    assert_eq!(p.get_job(&id).await["status"], "Canceled");
    let m = p
        .request(
            GET_OUTPUT,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
        )
        .await;
    assert_eq!(error_code(&m), 7, "no output of a job that never ran");
}

/// A busy job's resource stream reports CPU time above zero, multiplexed with sequences, and
/// completes once the job is killed.
#[tokio::test]
async fn resource_use_of_a_busy_loop() {
    let env = Env::new("resource-poll-seconds=0.5\n");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let id = p.submit_command("while :; do :; done").await;
    p.wait_job_status(&id, "Running").await;
    let rid = p
        .send(
            GET_RESOURCES,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "cancel": false}),
        )
        .await;
    let in_stream = move |m: &Value| {
        m["messageType"] == R_RESOURCES
            && m["requestId"] == 0
            && m["sequences"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["requestId"] == rid))
    };
    let mut seq = 0;
    let mut cpu = 0.0;
    while cpu <= 0.0 {
        let m = p.wait_for("a resource report", in_stream).await;
        seq += 1;
        assert_eq!(m["sequences"][0]["seqId"], seq, "{m}");
        cpu = m["cpuTime"].as_f64().unwrap();
        assert!(m["residentMemory"].as_f64().unwrap() > 0.0, "{m}");
        assert_eq!(m["complete"], false);
    }
    assert!(cpu > 0.0);
    assert_eq!(p.control(&id, 3).await["messageType"], R_CONTROL);
    loop {
        let m = p.wait_for("the final resource report", in_stream).await;
        if m["complete"] == true {
            break;
        }
    }
    let m = p
        .request(
            GET_RESOURCES,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "cancel": false}),
        )
        .await;
    assert_eq!(error_code(&m), 6, "resource use of an ended job");
}

/// A job runs as its user: `id -un`, `$HOME` from the user database, `$TMPDIR` the job's own
/// directory under the scratch path; its default output is in `output/<user>/`, owned by them.
#[tokio::test]
async fn runs_as_the_job_user() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let id = p
        .submit_command("id -un; echo $HOME; echo $TMPDIR; test -d \"$TMPDIR\" && echo tmp-ok")
        .await;
    p.wait_job_status(&id, "Finished").await;
    let (out, _) = p.output(&id).await;
    let u = test_user();
    let want = format!(
        "{TEST_USER}\n{}\n{}\ntmp-ok\n",
        u.dir.display(),
        env.scratch().join("tmp").join(&id).display()
    );
    assert_eq!(out, want);
    let out_dir = env.scratch().join("output").join(TEST_USER);
    let meta = std::fs::metadata(&out_dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (u.uid.as_raw(), 0o700));
    assert!(out_dir.join(format!("{id}.stdout")).exists());
    assert!(
        !env.scratch().join("tmp").join(&id).exists(),
        "the TMPDIR is removed after the job"
    );
}

/// GetJob with the launcher's tag finds exactly the job it tagged; `fields` trims the answer
/// (id kept), statuses filter, and an unknown id is error 3.
#[tokio::test]
async fn get_job_by_tag_and_filters() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let mut ids = HashMap::new();
    for t in ["x", "y"] {
        let mut j = job("true");
        j["tags"] = json!([format!("launcher-job:{t}"), "common"]);
        let m = p.submit(j).await;
        ids.insert(t, m["jobs"][0]["id"].as_str().unwrap().to_string());
    }
    let q = |extra: Value| {
        let mut base = json!({"requestUsername": "*", "username": "*", "jobId": "*", "encodedJobId": "*"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    let m = p.request(GET_JOB, q(json!({"tags": ["launcher-job:x"]}))).await;
    let jobs = m["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{m}");
    assert_eq!(jobs[0]["id"], ids["x"].as_str());
    assert_eq!(jobs[0]["tags"], json!(["launcher-job:x", "common"]));
    let m = p
        .request(GET_JOB, q(json!({"tags": ["common"], "fields": ["status"]})))
        .await;
    let jobs = m["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{m}");
    for j in jobs {
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "only id and status: {j}");
        assert!(j["id"].is_string() && j["status"].is_string());
    }
    p.wait_job_status(&ids["y"], "Finished").await;
    let m = p
        .request(
            GET_JOB,
            q(json!({"tags": ["common"], "statuses": ["Running", "Pending"]})),
        )
        .await;
    let still = m["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["id"] == ids["y"].as_str())
        .count();
    assert_eq!(still, 0, "{m}");
    let m = p.request(GET_JOB, q(json!({"username": "someone-else"}))).await;
    assert_eq!(
        m["jobs"],
        json!([]),
        "another user's listing holds none of these jobs"
    );
    let m = p
        .request(
            GET_JOB,
            json!({"requestUsername": "*", "username": "*", "jobId": "nope", "encodedJobId": "nope"}),
        )
        .await;
    assert_eq!(error_code(&m), 3);
}

/// Unknown options, bare arguments and bad config files stop the plugin at once with exit
/// status 1 and one line naming the problem.
#[tokio::test]
async fn bad_options_and_config_are_fatal() {
    let env = Env::new("");
    for (args, conf, want) in [
        (vec!["--frobnicate=1"], "", "unknown option --frobnicate"),
        (vec!["stray"], "", "\"stray\""),
        (
            vec!["--server-user=no-such-user-lp"],
            "",
            "server-user no-such-user-lp does not exist",
        ),
        (
            vec![],
            "queues=a\nbogus=1\n",
            "launcher.local.conf:2: unknown key bogus",
        ),
    ] {
        std::fs::write(env.conf().join("launcher.local.conf"), conf).unwrap();
        let out = std::process::Command::new(BIN)
            .args(&args)
            .arg(format!("--scratch-path={}", env.scratch().display()))
            .env("RSTUDIO_CONFIG_DIR", env.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// Malformed requests get an Error (code 2, with the request's id when it can be read; unknown
/// types code 1) and the plugin keeps answering.
#[tokio::test]
async fn malformed_requests_are_answered_and_survived() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    framing::write_message(&mut p.stdin, b"{not json").await.unwrap();
    let m = p.wait_for("an error", |m| m["messageType"] == R_ERROR).await;
    assert_eq!((error_code(&m), m["requestId"].as_u64()), (2, Some(0)));
    framing::write_message(&mut p.stdin, br#"[1,2,3]"#).await.unwrap();
    assert_eq!(
        error_code(&p.wait_for("an error", |m| m["messageType"] == R_ERROR).await),
        2
    );
    let rid = p.send(GET_STATUS, json!({"jobId": "*"})).await;
    let m = p.answer(rid).await;
    assert_eq!(error_code(&m), 2, "missing fields");
    assert!(
        m["errorMessage"].as_str().unwrap().contains("missing field"),
        "{m}"
    );
    let m = p.request(77, json!({})).await;
    assert_eq!(error_code(&m), 1, "unknown type");
    let m = p.request(202, json!({})).await;
    assert_eq!(error_code(&m), 1, "optional type");
    let m = p
        .request(
            SUBMIT,
            json!({"requestUsername": TEST_USER, "username": TEST_USER, "job": {"name": "n"}}),
        )
        .await;
    assert_eq!(error_code(&m), 2, "neither command nor exe");
    let m = p.request(SUBMIT, json!({"job": {"command": "true"}})).await;
    assert_eq!(error_code(&m), 2, "no username");
    // Without a requestId nothing can be answered in its name: code 2 under id 0.
    framing::write_message(&mut p.stdin, br#"{"messageType":0}"#)
        .await
        .unwrap();
    let m = p.wait_for("an error", |m| m["messageType"] == R_ERROR).await;
    assert_eq!((error_code(&m), m["requestId"].as_u64()), (2, Some(0)), "{m}");
    let m = p.request(HEARTBEAT, json!({})).await;
    assert_eq!(m["messageType"], HEARTBEAT);
}

/// An oversize header is refused at once (before its body is sent), the body is skipped
/// without being buffered, and the plugin answers the next request.
#[tokio::test]
async fn oversize_messages_are_refused_at_once_and_skipped() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    let len = framing::MAX_MESSAGE_BYTES + 1;
    p.send_raw(&(len as u32).to_be_bytes()).await;
    let start = Instant::now();
    let m = p.wait_for("the refusal", |m| m["messageType"] == R_ERROR).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "refused within a second"
    );
    assert_eq!((error_code(&m), m["requestId"].as_u64()), (2, Some(0)));
    let msg = m["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains(&len.to_string()) && msg.contains(&framing::MAX_MESSAGE_BYTES.to_string()),
        "{msg}"
    );
    // The body: shaped like a request, so a plugin that did not skip it would answer it.
    let mut body = format!(r#"{{"messageType":0,"requestId":999,"pad":"{}"#, " ".repeat(len));
    body.truncate(len - 2);
    body.push_str("\"}");
    assert_eq!(body.len(), len);
    p.send_raw(body.as_bytes()).await;
    let m = p.request(HEARTBEAT, json!({})).await;
    assert_eq!(m["messageType"], HEARTBEAT);
    assert!(
        p.backlog.iter().all(|m| m["requestId"] != 999),
        "the body was skipped"
    );
    let m = p
        .request(GET_CLUSTER, json!({"requestUsername": "*", "username": "*"}))
        .await;
    assert_eq!(m["queues"], json!(["default"]), "{m}");
}

/// A plugin killed with SIGKILL while a job runs is restarted on the same scratch path: after
/// Bootstrap the job is still Running, and it later Finishes with exit 0 (through exit.json,
/// since the new plugin is not the supervisor's parent).
#[tokio::test]
async fn a_restarted_plugin_recovers_a_running_job() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let id = p.submit_command("sleep 3").await;
    p.wait_job_status(&id, "Running").await;
    kill(Pid::from_raw(p.pid()), Signal::SIGKILL).unwrap();
    let _ = p.child.wait().await;
    drop(p);
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let j = p.get_job(&id).await;
    assert_eq!(j["status"], "Running", "{j}");
    let stream = p.open_status_stream(&id).await;
    let m = p.wait_stream_status(stream, &id, "Finished").await;
    assert_eq!(m["exitCode"], 0, "{m}");
    assert_eq!(p.control(&id, 3).await["errorCode"], 6);
}

/// The plugin's own heartbeats arrive every heartbeat-interval-seconds with requestId 0; stdin
/// EOF ends the plugin with status 0 while its jobs run on.
#[tokio::test]
async fn heartbeats_and_a_clean_stop_that_leaves_jobs_running() {
    let env = Env::new("");
    let mut p = env.start(&["--heartbeat-interval-seconds=1"], &[]);
    p.bootstrap().await;
    let id = p.submit_command("sleep 2; echo done").await;
    let m = p
        .wait_for("a heartbeat", |m| {
            m["messageType"] == HEARTBEAT && m["requestId"] == 0
        })
        .await;
    assert!(m["responseId"].as_u64().unwrap() > 0);
    let j = p.wait_job_status(&id, "Running").await;
    let PluginUnderTest { mut child, stdin, .. } = p;
    drop(stdin);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        proc_state(j["pid"].as_i64().unwrap()).is_some(),
        "the job outlives the plugin"
    );
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    p.wait_job_status(&id, "Finished").await;
    assert_eq!(p.output(&id).await.0, "done\n");
}

/// Submit refuses what the Local plugin cannot do: root jobs without allow-root-jobs, limits
/// above the configured maximum, unknown users, other mount types.
#[tokio::test]
async fn submit_refusals_name_the_reason() {
    let env = Env::new("max-memory-mb=100\n");
    let mut p = env.start(&[], &[]);
    let mut j = job("true");
    j["user"] = json!("root");
    let m = p.submit(j).await;
    assert_eq!(error_code(&m), 2);
    assert!(
        m["errorMessage"].as_str().unwrap().contains("allow-root-jobs"),
        "{m}"
    );
    let mut j = job("true");
    j["resourceLimits"] = json!([{"type": "memory", "value": "200"}]);
    let m = p.submit(j).await;
    assert!(
        m["errorMessage"].as_str().unwrap().contains("max-memory-mb"),
        "{m}"
    );
    let mut j = job("true");
    j["user"] = json!("no-such-user-lp");
    assert_eq!(error_code(&p.submit(j).await), 2);
    let mut j = job("true");
    j["mounts"] = json!([{"mountPath": "/x", "readOnly": false, "mountSource": {"type": "nfs", "source": {"host": "h", "path": "/p"}}}]);
    let m = p.submit(j).await;
    assert_eq!(
        m["errorMessage"],
        "mount type nfs is not supported by the Local plugin"
    );
    let m = p
        .request(GET_CLUSTER, json!({"requestUsername": "*", "username": "*"}))
        .await;
    let mem = m["resourceLimits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "memory")
        .unwrap()
        .clone();
    assert_eq!(mem["maxValue"], "100", "{m}");
    let m = p
        .request(
            GET_NETWORK,
            json!({"requestUsername": "*", "username": "*", "jobId": "x", "encodedJobId": "x"}),
        )
        .await;
    assert_eq!(error_code(&m), 3);
}

/// With allow-root-jobs=1 a root job runs; a job whose supervisor cannot start it (bad working
/// directory) is Failed with the supervisor's reason, and asking for its output is error 7.
#[tokio::test]
async fn root_jobs_when_allowed_and_setup_failures() {
    let env = Env::new("allow-root-jobs=1\n");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let mut j = job("id -u");
    j["user"] = json!("root");
    let id = p.submit(j).await["jobs"][0]["id"].as_str().unwrap().to_string();
    p.wait_job_status(&id, "Finished").await;
    assert_eq!(p.output(&id).await.0, "0\n");
    let mut j = job("true");
    j["workingDirectory"] = json!("/no/such/dir");
    j["stdoutFile"] = json!("/no/such/dir/out");
    let id = p.submit(j).await["jobs"][0]["id"].as_str().unwrap().to_string();
    let j = p.wait_job_status(&id, "Failed").await;
    assert!(j["statusMessage"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    let m = p
        .request(
            GET_OUTPUT,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
        )
        .await;
    assert_eq!(error_code(&m), 7, "{m}");
}

/// Throughput: `true` jobs submitted back to back, one at a time (each submit waits for its
/// answer) and then pipelined (all sent, then the answers read), until all are Finished.
/// Prints jobs/second.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_true_jobs_per_second() {
    let env = Env::new("");
    let mut p = env.start(&["--log-level=warning"], &[]);
    p.bootstrap().await;
    let n = 200;
    let stream = p.open_status_stream("*").await;
    for pipelined in [false, true] {
        let start = Instant::now();
        if pipelined {
            let mut rids = Vec::new();
            for _ in 0..n {
                let req = json!({"requestUsername": TEST_USER, "username": TEST_USER, "job": job("true")});
                rids.push(p.send(SUBMIT, req).await);
            }
            for rid in rids {
                assert_eq!(p.answer(rid).await["messageType"], R_JOB_STATE);
            }
        } else {
            for _ in 0..n {
                p.submit_command("true").await;
            }
        }
        let submitted = start.elapsed();
        for _ in 0..n {
            let m = p
                .wait_for("a finished job", |m| {
                    m["messageType"] == R_JOB_STATUS
                        && m["status"] == "Finished"
                        && m["sequences"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|s| s["requestId"] == stream)
                })
                .await;
            assert_eq!(m["exitCode"], 0);
        }
        let all = start.elapsed();
        println!(
            "{n} true jobs, {}: acknowledged in {:.2}s = {:.0} jobs/s; all Finished in {:.2}s = {:.0} jobs/s",
            if pipelined { "pipelined" } else { "one at a time" },
            submitted.as_secs_f64(),
            n as f64 / submitted.as_secs_f64(),
            all.as_secs_f64(),
            n as f64 / all.as_secs_f64()
        );
    }
}

/// Output is read only from the job user's own files, as that user: a job that swaps its output
/// file for a link to /etc/shadow gets error 7, never the file.
#[tokio::test]
async fn output_comes_only_from_the_job_users_files() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let home = test_user().dir.clone();
    let out = home.join(format!("lp-test-{}.txt", std::process::id()));
    let mut j = job(&format!(
        "echo hi; rm -f {0}; ln -s /etc/shadow {0}",
        out.display()
    ));
    j["stdoutFile"] = json!(out);
    let m = p.submit(j).await;
    let id = m["jobs"][0]["id"].as_str().unwrap().to_string();
    p.wait_job_status(&id, "Finished").await;
    let m = p
        .request(
            GET_OUTPUT,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
        )
        .await;
    let _ = std::fs::remove_file(&out);
    assert_eq!(error_code(&m), 7, "{m}");
    let said = m["errorMessage"].as_str().unwrap();
    assert!(said.ends_with(": a symbolic link (not followed)"), "{m}");
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let first = shadow.lines().next().unwrap();
    assert!(!m.to_string().contains(first), "{m}");
}

/// An output path inside a directory only root may enter answers exactly like a missing output
/// file, even when a file of the job's user is there: the plugin reads output as the job's user,
/// so output paths cannot probe what only root may see.
#[tokio::test]
async fn output_in_a_root_only_directory_reads_like_missing_output() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let user = test_user();
    // A job whose output file is gone.
    let gone = user.dir.join(format!("lp-gone-{}.txt", std::process::id()));
    let mut j = job(&format!("rm -f {}", gone.display()));
    j["stdoutFile"] = json!(gone);
    let missing = p.submit(j).await["jobs"][0]["id"].as_str().unwrap().to_string();
    p.wait_job_status(&missing, "Finished").await;
    // A job whose output file is in root's private directory: the supervisor, as the user,
    // cannot create it, so root puts one there, owned by the job's user.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = private.path().join("out.txt");
    let mut j = job("true");
    j["stdoutFile"] = json!(hidden);
    let id = p.submit(j).await["jobs"][0]["id"].as_str().unwrap().to_string();
    p.wait_job_status(&id, "Failed").await;
    std::fs::write(&hidden, "root-only secret\n").unwrap();
    nix::unistd::chown(&hidden, Some(user.uid), Some(user.gid)).unwrap();
    let mut said = Vec::new();
    for id in [&missing, &id] {
        let m = p
            .request(
                GET_OUTPUT,
                json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
            )
            .await;
        assert_eq!(error_code(&m), 7, "{m}");
        assert!(!m.to_string().contains("secret"), "{m}");
        said.push(m["errorMessage"].as_str().unwrap().replace(id.as_str(), "<id>"));
    }
    assert_eq!(said[0], said[1]);
    assert_eq!(said[0], "job <id> left no output files");
}

/// Output chunks respect output-chunk-bytes without splitting a character; a canceled status
/// stream gets nothing more, and a canceled output stream never completes.
#[tokio::test]
async fn chunking_and_canceled_streams() {
    let env = Env::new("output-chunk-bytes=16\n");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let canceled = p.open_status_stream("*").await;
    p.send_as(
        canceled,
        GET_STATUS,
        json!({"requestUsername": "*", "username": "*", "jobId": "*", "encodedJobId": "*", "cancel": true}),
    )
    .await;
    let id = p
        .submit_command("for i in 1 2 3 4 5 6 7 8; do printf 'aé€😀'; done")
        .await;
    let stream = p.open_status_stream(&id).await;
    let m = p.wait_stream_status(stream, &id, "Finished").await;
    let on = |m: &Value, rid: u64| {
        m["sequences"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["requestId"] == rid))
    };
    assert!(!on(&m, canceled), "{m}");
    assert!(p.backlog.iter().all(|m| !on(m, canceled)), "{:#?}", p.backlog);
    let rid = p
        .send(
            GET_OUTPUT,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
        )
        .await;
    let mut text = String::new();
    loop {
        let m = p.answer(rid).await;
        let piece = m["output"].as_str().unwrap();
        assert!(piece.len() <= 16, "{m}");
        assert!(!piece.contains('\u{fffd}'), "{m}");
        text.push_str(piece);
        if m["complete"] == true {
            break;
        }
    }
    assert_eq!(text, "aé€😀".repeat(8));

    let id = p.submit_command("echo start; sleep 30").await;
    let rid = p
        .send(
            GET_OUTPUT,
            json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": false}),
        )
        .await;
    let m = p.answer(rid).await;
    assert_eq!(m["output"], "start\n", "{m}");
    p.send_as(
        rid,
        GET_OUTPUT,
        json!({"requestUsername": "*", "username": "*", "jobId": id, "encodedJobId": id, "outputType": 0, "cancel": true}),
    )
    .await;
    p.wait_job_status(&id, "Running").await;
    assert_eq!(p.control(&id, 3).await["messageType"], R_CONTROL);
    p.wait_job_status(&id, "Killed").await;
    // A stream still open would complete within its 200 ms poll after the job ended.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.request(HEARTBEAT, json!({})).await["messageType"], HEARTBEAT);
    assert!(
        p.backlog.iter().all(|m| m["requestId"] != rid),
        "{:#?}",
        p.backlog
    );
}

/// Jobs left on disk are judged at start-up: a terminal job past job-expiry-hours is removed
/// (its output file kept); a Pending job without a supervisor, a Running one whose supervisor
/// vanished, and ones with exit.json or failed.json get the statuses their files say.
#[tokio::test]
async fn start_up_recovery_and_expiry_of_jobs_on_disk() {
    let env = Env::new("");
    let jobs = env.scratch().join("jobs");
    let t = |days_ago: i64| {
        let t = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
        launcher_local_plugin::record::format_time(t)
    };
    // A pid that is surely gone: a child that has been reaped.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    };
    let out_file = env.dir.path().join("old.stdout");
    std::fs::write(&out_file, "kept").unwrap();
    let write = |id: &str, status: &str, updated: String, files: &[(&str, Value)]| {
        let dir = jobs.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let rec = json!({
            "job": {"id": id, "name": id, "cluster": "Local", "user": TEST_USER, "status": status,
                    "submissionTime": updated, "lastUpdateTime": updated, "command": "true"},
            "stdoutPath": out_file, "stderrPath": out_file, "uid": test_user().uid.as_raw(),
        });
        std::fs::write(dir.join("job.json"), rec.to_string()).unwrap();
        for (name, v) in files {
            std::fs::write(dir.join(name), v.to_string()).unwrap();
        }
    };
    let started = json!({"supervisorPid": dead, "supervisorStartTicks": 1, "pid": dead, "pidStartTicks": 1,
                         "startedAt": t(0)});
    write("old", "Finished", t(3), &[]);
    write("recent", "Finished", t(0), &[]);
    write("never-started", "Pending", t(0), &[]);
    write("vanished", "Running", t(0), &[("started.json", started.clone())]);
    write(
        "exited",
        "Running",
        t(0),
        &[
            ("started.json", started.clone()),
            (
                "exit.json",
                json!({"exitCode": 7, "signal": null, "finishedAt": t(0)}),
            ),
        ],
    );
    write(
        "setup-failed",
        "Pending",
        t(0),
        &[("failed.json", json!({"message": "no such directory"}))],
    );
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let msg = |j: &Value| j["statusMessage"].as_str().unwrap_or_default().to_string();
    let j = p.wait_job_status("never-started", "Failed").await;
    assert_eq!(msg(&j), "the plugin stopped before the job started");
    let j = p.wait_job_status("vanished", "Failed").await;
    assert_eq!(msg(&j), "the job's process vanished while the plugin was down");
    let j = p.wait_job_status("exited", "Finished").await;
    assert_eq!(j["exitCode"], 7, "{j}");
    let j = p.wait_job_status("setup-failed", "Failed").await;
    assert_eq!(msg(&j), "no such directory");
    assert_eq!(p.get_job("recent").await["status"], "Finished");
    wait_until("the old job's state to be removed", || !jobs.join("old").exists()).await;
    let m = p
        .request(
            GET_JOB,
            json!({"requestUsername": "*", "username": "*", "jobId": "old", "encodedJobId": "old"}),
        )
        .await;
    assert_eq!(error_code(&m), 3);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "kept");
}

/// SIGTERM stops the plugin with status 0; while it runs, a second plugin on the same scratch
/// path is refused.
#[tokio::test]
async fn sigterm_is_a_clean_stop() {
    let env = Env::new("");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let second = std::process::Command::new(BIN)
        .arg(format!("--scratch-path={}", env.scratch().display()))
        .env("RSTUDIO_CONFIG_DIR", env.conf())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(1),
        "a second plugin on the same scratch path is refused"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("another plugin is running"));
    kill(Pid::from_raw(p.pid()), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Masked paths are hidden from a job (the config directory, by default) and host mounts are
/// bound into its mount namespace, nosuid and nodev; a missing target is made there and not on
/// the host; the job runs with no_new_privs.
#[tokio::test]
async fn masked_paths_and_host_mounts() {
    let env = Env::new("");
    let data = env.dir.path().join("data");
    let target = env.dir.path().join("target");
    let made = env.dir.path().join("made/on/demand");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(data.join("f"), "from the host\n").unwrap();
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let mut j = job(&format!(
        "ls -A {} | wc -l; cat {}/f {}/f; grep NoNewPrivs /proc/self/status; \
         grep ' {} ' /proc/self/mountinfo",
        env.conf().display(),
        target.display(),
        made.display(),
        target.display()
    ));
    j["mounts"] = json!([
        {"mountPath": target, "readOnly": true, "mountSource": {"type": "host", "source": {"path": data}}},
        {"mountPath": made, "readOnly": false, "mountSource": {"type": "host", "source": {"path": data}}},
    ]);
    let m = p.submit(j).await;
    assert_eq!(m["messageType"], R_JOB_STATE, "{m}");
    let id = m["jobs"][0]["id"].as_str().unwrap().to_string();
    let j = p.wait_job_status(&id, "Finished").await;
    let (out, err) = p.output(&id).await;
    let expected = "0\nfrom the host\nfrom the host\nNoNewPrivs:\t1\n";
    assert!(out.starts_with(expected) && err.is_empty(), "{out}{err}\n{j}");
    // The bind, and its copy in the scaffold laid over its parent to make the missing target.
    let binds: Vec<&str> = out[expected.len()..].lines().collect();
    assert!(!binds.is_empty(), "{out}");
    for line in binds {
        let options: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        for flag in ["ro", "nosuid", "nodev"] {
            assert!(options.contains(&flag), "{flag} missing: {line}");
        }
    }
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "the mount stays in the job's namespace"
    );
    assert!(
        !env.dir.path().join("made").exists(),
        "a missing target is made in the job's namespace only"
    );
}

/// allow-new-privileges=1 in the plugin's config lets jobs gain privileges through exec.
#[tokio::test]
async fn allow_new_privileges_turns_no_new_privs_off() {
    let env = Env::new("allow-new-privileges=1\n");
    let mut p = env.start(&[], &[]);
    p.bootstrap().await;
    let id = p.submit_command("grep NoNewPrivs /proc/self/status").await;
    p.wait_job_status(&id, "Finished").await;
    assert_eq!(p.output(&id).await.0, "NoNewPrivs:\t0\n");
    let log = std::fs::read_to_string(env.dir.path().join("plugin.log")).unwrap();
    assert!(log.contains("allow-new-privileges=1"), "{log}");
}

/// A plugin run unprivileged as an ordinary user says once that it has no mount namespaces,
/// runs jobs as itself, and refuses jobs for other users and jobs that need mounts.
#[tokio::test]
async fn an_unprivileged_plugin_runs_jobs_as_itself() {
    let env = Env::new("");
    let u = test_user();
    let scratch = env.dir.path().join("scratch-user");
    std::fs::create_dir(&scratch).unwrap();
    nix::unistd::chown(&scratch, Some(u.uid), Some(u.gid)).unwrap();
    let prefix = [
        "setpriv".to_string(),
        format!("--reuid={}", u.uid),
        format!("--regid={}", u.gid),
        "--init-groups".into(),
    ];
    let mut p = env.start_as(
        &prefix,
        &scratch,
        &["--unprivileged=1"],
        &[("HOME", u.dir.to_str().unwrap())],
    );
    p.bootstrap().await;
    let m = p
        .request(
            SUBMIT,
            json!({"requestUsername": "*", "username": "*", "job": job("id -un")}),
        )
        .await;
    let id = m["jobs"][0]["id"].as_str().unwrap().to_string();
    p.wait_job_status(&id, "Finished").await;
    assert_eq!(p.output(&id).await.0, format!("{TEST_USER}\n"));
    let mut j = job("true");
    j["user"] = json!("root");
    let m = p.submit(j).await;
    assert_eq!(
        m["errorMessage"],
        format!("this plugin runs unprivileged as {TEST_USER} and cannot start jobs as root")
    );
    let mut j = job("true");
    j["mounts"] = json!([{"mountPath": "/x", "readOnly": true, "mountSource": {"type": "host", "source": {"path": "/tmp"}}}]);
    let m = p.submit(j).await;
    assert!(
        m["errorMessage"].as_str().unwrap().contains("mount namespace"),
        "{m}"
    );
    let log = std::fs::read_to_string(env.dir.path().join("plugin.log")).unwrap();
    let said = log.matches("mount namespaces are not available").count();
    assert_eq!(said, 1, "said once: {log}");
    assert!(
        log.contains("jobs run without masked paths and bind mounts"),
        "{log}"
    );
}
