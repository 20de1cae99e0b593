//! `deploy/docker-compose.yml` over the images of `deploy/build-images.sh`: formation through
//! bootstrap-expect, scaling out and back in, a killed leader, a stopped follower and a node
//! cut off the network, each checked through the gateway and through every node; and twenty
//! rounds of `docker kill` under clients of the gateway, none of which may see an error.
//!
//! The test reaches containers only through ports they publish on 127.0.0.1 (Docker picks
//! them), and each run uses its own compose project, torn down (containers, network, volumes)
//! however the test ends. It needs Docker and docker-compose and fails without them;
//! `LAUNCHER_SKIP_DOCKER_TESTS=1 tests/run-all.sh` leaves these tests out of the run (a
//! filter of nextest's, so the run says how many it did not run) on machines without Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use launcher_proto::launcher::ListJobsRequest;
use launcher_tests::{init_tracing, wait_until, write_key, Http, NodeClient};
use reqwest::Method;
use serde_json::{json, Value};

/// Upper bound of one `docker` call.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound of one `docker-compose` call (stopping replicas takes their grace period).
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(180);
/// Upper bound of `deploy/build-images.sh` (a cold static release build on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Deadline of a cluster-level condition: container starts, elections, liveness timeouts.
const WAIT: Duration = Duration::from_secs(120);
/// Short liveness settings for the test's node config (the shipped one says 30 and 300).
const NODE_LOST_SECONDS: u64 = 5;
/// Long enough that a replica re-created by the rolling upgrade (stop, create, start) is not
/// taken for dead while the cluster has five voters to spare.
const DEAD_MEMBER_SECONDS: u64 = 20;
/// Image tag the test builds and runs (the same one `build-images.sh` builds by default).
const TAG: &str = "latest";
/// Label on every container of a test project.
const TEST_LABEL: &str = "launcher.test=deploy-compose";
/// Rounds of `docker kill` in the failover test; the odd ones kill the leader.
const KILL_ROUNDS: usize = 20;
/// Bound of those rounds together: each takes an election at worst (a leader lease and an
/// election timeout, under 10 s), a container start and a return to Green.
const KILL_ROUNDS_BUDGET: Duration = Duration::from_secs(9 * 60);
/// Period of each failover-test client: one listing and one submit per period.
const CLIENT_PERIOD: Duration = Duration::from_millis(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

/// Runs `program args` with `envs`, within `limit`; stdout on success, an error naming the
/// command and its stderr otherwise.
async fn run(
    program: &str,
    args: &[&str],
    envs: &[(String, String)],
    limit: Duration,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("`{program} {}` did not finish within {limit:?}", args.join(" ")))?
        .with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`run`] for teardown, outside async code: bounded too, the child killed when it overruns.
fn run_blocking(
    program: &str,
    args: &[&str],
    envs: &[(String, String)],
    limit: Duration,
) -> Result<(), String> {
    run_blocking_to(program, args, envs, limit, Stdio::null)
}

/// As [`run_blocking`], with the program's output going where `out` says.
fn run_blocking_to(
    program: &str,
    args: &[&str],
    envs: &[(String, String)],
    limit: Duration,
    out: fn() -> Stdio,
) -> Result<(), String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`{program} {}` failed: {status}", args.join(" "))),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program} {}` did not finish within {limit:?}",
                    args.join(" ")
                ));
            }
        }
    }
}

/// Removes everything of one compose project; runs once, from `Drop` or a termination signal.
struct Teardown {
    compose_args: Vec<String>,
    env: Vec<(String, String)>,
    /// Anonymous volumes seen on the project's containers: scaling in removes containers but
    /// leaves their volumes, which `down -v` no longer knows.
    volumes: Mutex<BTreeSet<String>>,
    /// Images the test tagged (the rolling upgrade's "new" ones), removed at the end.
    images: Mutex<Vec<String>>,
    /// Set when the test got to its end: otherwise the containers' logs are printed first.
    passed: AtomicBool,
    done: AtomicBool,
}

impl Teardown {
    fn run(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if !self.passed.load(Ordering::SeqCst) {
            // What the nodes and the gateway said is the only trace of a failure once the
            // project is down: into the test's output (nextest shows it for failed tests).
            let mut args: Vec<&str> = self.compose_args.iter().map(String::as_str).collect();
            args.extend(["logs", "--no-color", "--timestamps", "--tail", "150"]);
            eprintln!("the test failed: the containers' last log lines follow");
            if let Err(e) = run_blocking_to(
                "docker-compose",
                &args,
                &self.env,
                COMPOSE_TIMEOUT,
                Stdio::inherit,
            ) {
                eprintln!("cannot print the logs: {e}");
            }
        }
        let mut args: Vec<&str> = self.compose_args.iter().map(String::as_str).collect();
        args.extend(["down", "-v", "--remove-orphans", "-t", "2"]);
        if let Err(e) = run_blocking("docker-compose", &args, &self.env, COMPOSE_TIMEOUT) {
            eprintln!("teardown: {e}");
        }
        let volumes: Vec<String> = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for v in volumes {
            // Already gone with `down -v` when its container still existed.
            let _ = run_blocking("docker", &["volume", "rm", "-f", &v], &[], DOCKER_TIMEOUT);
        }
        let images = std::mem::take(&mut *self.images.lock().unwrap_or_else(|p| p.into_inner()));
        for i in images {
            let _ = run_blocking("docker", &["rmi", "-f", &i], &[], DOCKER_TIMEOUT);
        }
    }
}

/// One node container of the project.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    /// The container's host name: the `host` of the jobs it runs.
    hostname: String,
    running: bool,
}

/// A compose project of the test: its files, its key, and its teardown.
struct Project {
    name: String,
    _dir: tempfile::TempDir,
    key: Vec<u8>,
    teardown: Arc<Teardown>,
}

impl Drop for Project {
    fn drop(&mut self) {
        self.teardown.run();
    }
}

impl Project {
    /// Writes the test's config (short liveness timeouts), key and compose override.
    fn new() -> anyhow::Result<Project> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("launcherit{}x{}", std::process::id(), nanos % 1_000_000);
        let dir = tempfile::tempdir()?;
        let root = repo_root();
        let key_path = dir.path().join("secure-cookie-key");
        let key = write_key(&key_path)?;
        // The shipped node config, with liveness short enough for a test.
        let shipped = std::fs::read_to_string(root.join("deploy/config/node.conf"))?;
        let lost = "node-lost-timeout-seconds=30";
        let dead = "dead-member-removal-seconds=300";
        anyhow::ensure!(
            shipped.contains(lost) && shipped.contains(dead),
            "deploy/config/node.conf changed: update the test"
        );
        let node_conf = shipped
            .replace(lost, &format!("node-lost-timeout-seconds={NODE_LOST_SECONDS}"))
            .replace(
                dead,
                &format!("dead-member-removal-seconds={DEAD_MEMBER_SECONDS}"),
            );
        let node_conf_path = dir.path().join("node.conf");
        std::fs::write(&node_conf_path, node_conf)?;
        // Each node replica publishes its gRPC port on 127.0.0.1, on a port Docker picks.
        let (label_key, label_value) = TEST_LABEL.split_once('=').expect("key=value");
        let overlay = format!(
            "version: \"2.4\"\nservices:\n  node:\n    ports:\n      - \"127.0.0.1::5560\"\n    labels:\n      \
             {label_key}: {label_value}\n  gateway:\n    labels:\n      {label_key}: {label_value}\n"
        );
        let overlay_path = dir.path().join("docker-compose.test.yml");
        std::fs::write(&overlay_path, overlay)?;
        let compose_args = vec![
            "-p".to_string(),
            name.clone(),
            "-f".into(),
            root.join("deploy/docker-compose.yml").display().to_string(),
            "-f".into(),
            overlay_path.display().to_string(),
        ];
        let env = vec![
            ("LAUNCHER_IMAGE_TAG".to_string(), TAG.to_string()),
            (
                "LAUNCHER_SECURE_COOKIE_KEY".into(),
                key_path.display().to_string(),
            ),
            ("LAUNCHER_NODE_CONF".into(), node_conf_path.display().to_string()),
            // Empty: Docker picks the gateway's host port.
            ("LAUNCHER_HTTP_PORT".into(), String::new()),
        ];
        let teardown = Arc::new(Teardown {
            compose_args,
            env,
            volumes: Mutex::new(BTreeSet::new()),
            images: Mutex::new(Vec::new()),
            passed: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        // nextest ends an overrunning test with SIGTERM: tear down before going.
        let on_term = teardown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            if term.recv().await.is_some() {
                eprintln!("SIGTERM: tearing the compose project down");
                on_term.run();
                std::process::exit(1);
            }
        });
        Ok(Project {
            name,
            _dir: dir,
            key,
            teardown,
        })
    }

    async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all: Vec<&str> = self.teardown.compose_args.iter().map(String::as_str).collect();
        all.extend(args);
        run("docker-compose", &all, &self.teardown.env, COMPOSE_TIMEOUT).await
    }

    async fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        run("docker", args, &[], DOCKER_TIMEOUT).await
    }

    /// Tags images that differ from the running ones only by a label (a new image id, as a
    /// new release would have); returns their tag.
    async fn tag_new_images(&self) -> anyhow::Result<String> {
        let tag = format!("{TAG}-upgrade-{}", self.name);
        for image in ["launcher-node", "launcher-gateway"] {
            let dir = self._dir.path().join(format!("{image}-upgrade"));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("Dockerfile"),
                format!("FROM {image}:{TAG}\nLABEL launcher.upgrade-test={}\n", self.name),
            )?;
            let target = format!("{image}:{tag}");
            self.teardown
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(target.clone());
            run(
                "docker",
                &["build", "-q", "-t", &target, &dir.display().to_string()],
                &[],
                DOCKER_TIMEOUT,
            )
            .await?;
        }
        Ok(tag)
    }

    /// Names of the Docker volumes on this machine (only those no container uses: `dangling`).
    async fn volume_names(&self, dangling: bool) -> anyhow::Result<BTreeSet<String>> {
        let mut args = vec!["volume", "ls", "-q"];
        if dangling {
            args.extend(["-f", "dangling=true"]);
        }
        Ok(self
            .docker(&args)
            .await?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    /// Runs `deploy/rolling-upgrade.sh` on this project with `LAUNCHER_IMAGE_TAG=tag`.
    async fn rolling_upgrade(&self, tag: &str) -> anyhow::Result<String> {
        // The script calls plain `docker-compose`: name the project and files the way
        // docker-compose reads them from the environment.
        let args = &self.teardown.compose_args;
        let files: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-f")
            .map(|w| w[1].as_str())
            .collect();
        let mut env = self.teardown.env.clone();
        env.retain(|(k, _)| k != "LAUNCHER_IMAGE_TAG");
        env.push(("LAUNCHER_IMAGE_TAG".into(), tag.to_string()));
        env.push(("COMPOSE_PROJECT_NAME".into(), self.name.clone()));
        env.push(("COMPOSE_FILE".into(), files.join(":")));
        let script = repo_root()
            .join("deploy/rolling-upgrade.sh")
            .display()
            .to_string();
        // Two stops of up to 30 s each, starts, and the waits for Green in between.
        run("sh", &[&script], &env, Duration::from_secs(600)).await
    }

    /// The containers of `service` (running or not), remembering their volumes for teardown.
    async fn containers(&self, service: &str) -> anyhow::Result<Vec<Container>> {
        let ids = self
            .docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.name),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "inspect",
            "-f",
            "{{.Name}}|{{.Config.Hostname}}|{{.State.Running}}|{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}},{{end}}{{end}}",
        ];
        args.extend(ids);
        let out = self.docker(&args).await?;
        let mut found = Vec::new();
        for line in out.lines() {
            let parts: Vec<&str> = line.split('|').collect();
            anyhow::ensure!(parts.len() == 4, "unexpected docker inspect line {line:?}");
            let mut vols = self.teardown.volumes.lock().unwrap_or_else(|p| p.into_inner());
            vols.extend(parts[3].split(',').filter(|v| !v.is_empty()).map(str::to_string));
            found.push(Container {
                name: parts[0].trim_start_matches('/').to_string(),
                hostname: parts[1].to_string(),
                running: parts[2] == "true",
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// `127.0.0.1:port` where `container` publishes `port`.
    async fn published(&self, container: &str, port: u16) -> anyhow::Result<String> {
        let out = self.docker(&["port", container, &format!("{port}/tcp")]).await?;
        let addr = out
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .with_context(|| format!("{container} publishes {port} on no 127.0.0.1 port: {out:?}"))?;
        Ok(addr.to_string())
    }

    /// A client of the HTTP API through the gateway's published port, with `user`'s token.
    async fn http(&self, user: &str) -> anyhow::Result<Http> {
        let gw = self.containers("gateway").await?;
        let gw = gw.first().context("no gateway container")?;
        let addr = self.published(&gw.name, 5559).await?;
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        Ok(Http {
            base: format!("http://{addr}"),
            token: Some(launcher_gateway::auth::mint_token(&self.key, user, expiry)),
            inner: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    /// Clients of the running node containers named in `names` (their ports change on restart).
    async fn node_clients(&self, names: &[String]) -> anyhow::Result<Vec<(String, NodeClient)>> {
        let mut out = Vec::new();
        for n in names {
            let addr = self.published(n, 5560).await?;
            let c = NodeClient::new(&addr, &self.key, "");
            tokio::time::timeout(Duration::from_secs(10), c.bind())
                .await
                .with_context(|| format!("{n} at {addr}: no status within 10 s"))??;
            out.push((n.clone(), c));
        }
        Ok(out)
    }
}

/// `GET /status` through the gateway.
async fn status(http: &Http) -> anyhow::Result<Value> {
    let (code, body) = http.get("/status").await?;
    anyhow::ensure!(code == 200, "GET /status answered {code}: {body}");
    Ok(body)
}

/// The container name of a member address (`<container>:5560`, as the entry point advertises).
fn container_of(address: &str) -> String {
    address.rsplit_once(':').map_or(address, |(h, _)| h).to_string()
}

/// Waits until the cluster reports `want` ("Green"/"Yellow") with exactly the voters in
/// `members` (container names), one member per container; returns the last status.
async fn wait_cluster(http: &Http, want: &str, members: &BTreeSet<String>) -> anyhow::Result<Value> {
    let what = format!("cluster {want} with voters {members:?}");
    wait_until(&what, WAIT, || {
        let http = http.clone();
        async move {
            let st = status(&http).await?;
            let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
            let names: BTreeSet<String> = nodes
                .iter()
                .map(|n| container_of(n["address"].as_str().unwrap_or_default()))
                .collect();
            let ok = st["status"] == want
                && st["leader"].as_u64().unwrap_or(0) != 0
                && &names == members
                && nodes.len() == members.len()
                && nodes.iter().all(|n| n["voter"] == true);
            anyhow::ensure!(ok, "status now: {st}");
            Ok(Some(st))
        }
    })
    .await
}

/// The leader's container name, from a status.
fn leader_of(st: &Value) -> anyhow::Result<String> {
    let leader = st["leader"].as_u64().context("no leader")?;
    let node = st["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["id"].as_u64() == Some(leader)))
        .context("leader not among the nodes")?;
    Ok(container_of(node["address"].as_str().unwrap_or_default()))
}

fn quick_job(n: usize) -> Value {
    json!({"name": format!("quick-{n}"), "cluster": "Local", "command": "echo hello from $USER", "tags": ["deploy-it"]})
}

/// The images keep the trust boundary of docs/security.md: a user's mount over /etc is 403
/// `MountNotAllowed`, a deeply nested job 400, a job for a user the images lack 400
/// `UnknownUser`, and a root job 403; none of them is stored.
async fn refuses_attacks(alice: &Http, admin: &Http) -> anyhow::Result<()> {
    let etc = json!({"name": "attack", "cluster": "Local", "command": "su root -c id",
        "mounts": [{"mountPath": "/etc", "mountSource": {"type": "host", "source": {"path": "/home/alice/fakeetc"}}}]});
    // Sent as text: 130 levels are past what serde_json itself will build as a value.
    let deep = format!(
        r#"{{"name":"deep","cluster":"Local","command":"true","metadata":{{"m":{}1{}}}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    let r = alice
        .req(Method::POST, "/jobs")
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await?;
    let st = r.status().as_u16();
    let body: Value = serde_json::from_slice(&r.bytes().await?).unwrap_or(Value::Null);
    anyhow::ensure!(
        st == 400 && body["error"]["code"] == 2,
        "deep: expected 400/2, got {st} {body}"
    );
    let ghost = json!({"name": "ghost", "cluster": "Local", "command": "id", "user": "no-such-user"});
    let root = json!({"name": "root", "cluster": "Local", "command": "id", "user": "root"});
    for (who, job, status, code) in [
        (alice, &etc, 403, 15),
        (admin, &ghost, 400, 16),
        (admin, &root, 403, 12),
    ] {
        let (st, body) = who.post("/jobs", job).await?;
        anyhow::ensure!(
            st == status && body["error"]["code"] == code,
            "{}: expected {status}/{code}, got {st} {body}",
            job["name"]
        );
    }
    let (st, jobs) = admin.get("/jobs?user=*").await?;
    anyhow::ensure!(
        st == 200 && jobs.as_array().is_some_and(Vec::is_empty),
        "{st} {jobs}"
    );
    Ok(())
}

fn sleeper_job(n: usize) -> Value {
    json!({"name": format!("sleeper-{n}"), "cluster": "Local", "command": "sleep 600", "tags": ["deploy-it", "sleeper"]})
}

/// Acknowledged submits: id → job name.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Submits `job`; records it when the gateway acknowledged it (201).
async fn submit(http: &Http, job: &Value, acked: &Acked) -> anyhow::Result<String> {
    let (code, body) = http.post("/jobs", job).await?;
    anyhow::ensure!(code == 201, "submit answered {code}: {body}");
    let id = body["id"].as_str().context("a job id")?.to_string();
    acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), job["name"].as_str().unwrap_or_default().to_string());
    Ok(id)
}

/// Submits a quick job every 300 ms until stopped, while the cluster changes underneath;
/// returns how many were acknowledged and how many were refused or failed.
struct Submitter {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, usize)>,
}

impl Submitter {
    fn start(http: Http, acked: Acked, first: usize) -> Submitter {
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            for n in first.. {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tick.tick() => match submit(&http, &quick_job(n), &acked).await {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    },
                }
            }
            (ok, failed)
        });
        Submitter { stop, task }
    }

    async fn finish(self) -> anyhow::Result<(usize, usize)> {
        let _ = self.stop.send(true);
        Ok(tokio::time::timeout(Duration::from_secs(60), self.task).await??)
    }
}

/// Polls `GET /status` every 200 ms until stopped; returns every status seen that was neither
/// Green nor Yellow (a Red is a lost leader or quorum), with the time it was seen.
struct HealthWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl HealthWatch {
    fn start(http: Http) -> HealthWatch {
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut bad = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tick.tick() => match status(&http).await {
                        Ok(st) if st["status"] == "Green" || st["status"] == "Yellow" => {}
                        Ok(st) => bad.push(format!("{:?}: {st}", started.elapsed())),
                        Err(e) => bad.push(format!("{:?}: {e:#}", started.elapsed())),
                    },
                }
            }
            bad
        });
        HealthWatch { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Vec<String>> {
        let _ = self.stop.send(true);
        Ok(tokio::time::timeout(Duration::from_secs(60), self.task).await??)
    }
}

/// Member ids by container name, from a status.
fn ids_by_container(st: &Value) -> BTreeMap<String, u64> {
    st["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                container_of(n["address"].as_str().unwrap_or_default()),
                n["id"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Every acknowledged job is listed through the gateway, and the gateway's listing is
/// byte-identical to the listing of each node in `nodes` at the same applied index.
async fn check_listings(
    p: &Project,
    admin: &Http,
    nodes: &[String],
    acked: &Acked,
) -> anyhow::Result<Vec<Value>> {
    let clients = p.node_clients(nodes).await?;
    let body = wait_until(
        &format!("identical listings through the gateway and {nodes:?}"),
        WAIT,
        || {
            let admin = admin.clone();
            let clients = clients.clone();
            async move {
                let r = admin.req(Method::GET, "/jobs?user=*").send().await?;
                anyhow::ensure!(r.status() == 200, "GET /jobs answered {}", r.status());
                let index = r
                    .headers()
                    .get("x-launcher-index")
                    .context("no X-Launcher-Index")?;
                let index: u64 = index.to_str()?.parse()?;
                let http = r.bytes().await?.to_vec();
                for (name, c) in &clients {
                    let req = ListJobsRequest {
                        user: "*".into(),
                        ..Default::default()
                    };
                    let (node_index, jobs) = c.list(req).await?;
                    if node_index != index {
                        return Ok(None);
                    }
                    let mut expected = b"[".to_vec();
                    expected.extend(jobs.join(&b","[..]));
                    expected.push(b']');
                    assert_eq!(
                        String::from_utf8_lossy(&http),
                        String::from_utf8_lossy(&expected),
                        "{name} lists differently from the gateway at index {index}"
                    );
                }
                Ok(Some(http))
            }
        },
    )
    .await?;
    let jobs: Vec<Value> = serde_json::from_slice(&body)?;
    let listed: BTreeSet<&str> = jobs.iter().filter_map(|j| j["id"].as_str()).collect();
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let missing: Vec<(&String, &String)> = acked
        .iter()
        .filter(|(id, _)| !listed.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged jobs missing from the listing: {missing:?}"
    );
    Ok(jobs)
}

/// Ids of the sleepers running on the container with host name `host`.
fn sleepers_on(jobs: &[Value], host: &str) -> Vec<String> {
    jobs.iter()
        .filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with("sleeper-")))
        .filter(|j| j["status"] == "Running" && j["host"] == host)
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect()
}

/// Submits `count` more sleepers, numbered from `*next`, and waits until they run: placement
/// favours the nodes with the fewest active jobs, so the nodes that lost theirs get them.
async fn more_sleepers(
    alice: &Http,
    admin: &Http,
    acked: &Acked,
    next: &mut usize,
    count: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut batch = BTreeSet::new();
    for _ in 0..count {
        batch.insert(submit(alice, &sleeper_job(*next), acked).await?);
        *next += 1;
    }
    wait_sleepers_running(admin, &batch).await
}

/// How many sleepers run on each container, for the log.
fn spread(jobs: &[Value], cs: &[Container]) -> BTreeMap<String, usize> {
    cs.iter()
        .map(|c| (c.name.clone(), sleepers_on(jobs, &c.hostname).len()))
        .collect()
}

/// Waits until every sleeper is Running (so it has its host), returning the listing.
async fn wait_sleepers_running(admin: &Http, ids: &BTreeSet<String>) -> anyhow::Result<Vec<Value>> {
    wait_until("every sleeper to run", WAIT, || {
        let admin = admin.clone();
        async move {
            let (code, jobs) = admin.get("/jobs?user=*&tags=sleeper").await?;
            anyhow::ensure!(code == 200, "GET /jobs answered {code}");
            let jobs = jobs.as_array().cloned().unwrap_or_default();
            let running = jobs
                .iter()
                .filter(|j| j["status"] == "Running" && j["id"].as_str().is_some_and(|id| ids.contains(id)))
                .count();
            Ok((running == ids.len()).then_some(jobs))
        }
    })
    .await
}

/// Waits until each job in `ids` is Failed with "node lost"; any other end fails the test.
async fn wait_node_lost(admin: &Http, ids: &[String], whose: &str) -> anyhow::Result<()> {
    wait_until(&format!("the jobs of {whose} to fail as node lost"), WAIT, || {
        let admin = admin.clone();
        async move {
            for id in ids {
                let (code, j) = admin.get(&format!("/jobs/{id}")).await?;
                anyhow::ensure!(code == 200, "GET /jobs/{id} answered {code}: {j}");
                match j["status"].as_str() {
                    Some("Pending" | "Running" | "Suspended") => return Ok(None),
                    _ => assert!(
                        j["status"] == "Failed" && j["statusMessage"] == "node lost",
                        "a job of {whose} ended otherwise than Failed/node lost: {j}"
                    ),
                }
            }
            Ok(Some(()))
        }
    })
    .await
}

fn names(cs: &[Container]) -> BTreeSet<String> {
    cs.iter().map(|c| c.name.clone()).collect()
}

async fn docker_available() -> bool {
    run(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        &[],
        DOCKER_TIMEOUT,
    )
    .await
    .is_ok()
        && run("docker-compose", &["version", "--short"], &[], DOCKER_TIMEOUT)
            .await
            .is_ok()
}

/// The shipped compose deployment keeps every acknowledged job and lists it identically
/// through the gateway and through every node, while: `docker-compose up -d` forms a Green
/// 3-node cluster by itself (bootstrap-expect, healthy HEALTHCHECKs); scaling to 5 adds two
/// voters and scaling back to 3 removes them again (dead-member cleanup) as jobs keep being
/// submitted; the leader's container is killed, later started again; a follower is stopped and
/// started; and a node is cut off the network and reconnected. Running jobs of a node that was
/// killed, stopped, scaled away or cut off end as Failed "node lost".
/// Checks that Docker is there and builds the images.
async fn images_ready(started: Instant) -> anyhow::Result<()> {
    anyhow::ensure!(
        docker_available().await,
        "this test needs a running Docker daemon and docker-compose (LAUNCHER_SKIP_DOCKER_TESTS=1 \
         tests/run-all.sh leaves the Docker tests out of the run)"
    );
    // Cheap when tests/run-all.sh built the images already: cargo and Docker's cache say so.
    let script = repo_root().join("deploy/build-images.sh");
    run(
        "bash",
        &[&script.display().to_string()],
        &[("LAUNCHER_IMAGE_TAG".into(), TAG.into())],
        BUILD_TIMEOUT,
    )
    .await?;
    eprintln!("images ready after {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_scales_and_survives_node_failures() -> anyhow::Result<()> {
    init_tracing();
    let started = Instant::now();
    images_ready(started).await?;

    let p = Project::new()?;
    p.compose(&["up", "-d"]).await?;
    let admin = p.http("rstudio-server").await?;
    let alice = p.http("alice").await?;
    let acked: Acked = Arc::default();

    // 1. Formation: three replicas become a Green cluster, and Docker sees them healthy.
    let first = p.containers("node").await?;
    assert_eq!(first.len(), 3, "scale: 3 by default");
    let st = wait_cluster(&admin, "Green", &names(&first)).await?;
    eprintln!("Green after {:?}: {st}", started.elapsed());
    let pr = &p;
    wait_until("every container healthy", WAIT, || async move {
        let out = pr
            .docker(&[
                "ps",
                "--filter",
                &format!("label=com.docker.compose.project={}", pr.name),
                "--format",
                "{{.Names}} {{.Status}}",
            ])
            .await?;
        let lines: Vec<&str> = out.lines().collect();
        Ok((lines.len() == 4 && lines.iter().all(|l| l.contains("(healthy)"))).then_some(()))
    })
    .await?;
    refuses_attacks(&alice, &admin).await?;
    let mut next_sleeper = 0;
    for n in 0..5 {
        submit(&alice, &quick_job(n), &acked).await?;
    }
    more_sleepers(&alice, &admin, &acked, &mut next_sleeper, 6).await?;
    check_listings(
        &p,
        &admin,
        &first.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        &acked,
    )
    .await?;

    // 2. Scale out to 5 while submitting: two voters join.
    let ids_before = ids_by_container(&status(&admin).await?);
    let submitter = Submitter::start(alice.clone(), acked.clone(), 1000);
    let watch = HealthWatch::start(admin.clone());
    p.compose(&["up", "-d", "--scale", "node=5"]).await?;
    let five = p.containers("node").await?;
    assert_eq!(five.len(), 5);
    let st = wait_cluster(&admin, "Green", &names(&five)).await?;
    let (ok, failed) = submitter.finish().await?;
    let red = watch.finish().await?;
    eprintln!(
        "scaled to 5 after {:?}; submits during it: {ok} acknowledged, {failed} not",
        started.elapsed()
    );
    // Adding learners and promoting them never costs the cluster its leader or quorum.
    assert!(ok > 0, "submits went through while scaling out");
    assert_eq!(failed, 0, "every submit was acknowledged while scaling out");
    assert!(
        red.is_empty(),
        "the cluster lost its leader or quorum while scaling out: {red:?}"
    );
    let ids_five = ids_by_container(&st);
    for (container, id) in &ids_before {
        assert_eq!(ids_five.get(container), Some(id), "{container} keeps its id");
    }
    // The gateway learned the new members: clients (by their cookie) are spread over all five.
    let ids: BTreeSet<u64> = st["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    wait_until("clients spread over all five nodes", WAIT, || {
        let admin = admin.clone();
        let ids = ids.clone();
        async move {
            let mut served = BTreeSet::new();
            for c in 0..40 {
                let r = admin
                    .req(Method::GET, "/jobs?fields=id")
                    .header("cookie", format!("launcher-node=client{c}"))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "GET /jobs answered {}", r.status());
                let node = r.headers().get("x-launcher-node").context("no X-Launcher-Node")?;
                served.insert(node.to_str()?.parse::<u64>()?);
            }
            anyhow::ensure!(served == ids, "served by {served:?}, members {ids:?}");
            Ok(Some(()))
        }
    })
    .await?;
    // New sleepers go to the new, idle nodes (fewest active jobs).
    let jobs = more_sleepers(&alice, &admin, &acked, &mut next_sleeper, 4).await?;
    check_listings(
        &p,
        &admin,
        &five.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        &acked,
    )
    .await?;

    // 3. Scale back in to 3 while submitting: the leader removes the two stopped members.
    let leader_before = leader_of(&status(&admin).await?)?;
    let submitter = Submitter::start(alice.clone(), acked.clone(), 2000);
    let watch = HealthWatch::start(admin.clone());
    p.compose(&["up", "-d", "--scale", "node=3"]).await?;
    let three = p.containers("node").await?;
    assert_eq!(three.len(), 3);
    let gone: Vec<&Container> = five.iter().filter(|c| !names(&three).contains(&c.name)).collect();
    assert_eq!(gone.len(), 2);
    let st = wait_cluster(&admin, "Green", &names(&three)).await?;
    let (ok, failed) = submitter.finish().await?;
    let red = watch.finish().await?;
    eprintln!(
        "back to 3 after {:?}; submits during it: {ok} acknowledged, {failed} not",
        started.elapsed()
    );
    assert!(ok > 0, "submits went through while scaling in");
    if gone.iter().any(|c| c.name == leader_before) {
        // Stopping the leader costs an election, during which submits may fail.
        eprintln!("the leader {leader_before} was scaled away: an election was expected");
    } else {
        // Three of five voters stay up throughout, the leader among them.
        assert_eq!(failed, 0, "every submit was acknowledged while scaling in");
        assert!(
            red.is_empty(),
            "the cluster lost its leader or quorum while scaling in: {red:?}"
        );
    }
    let ids_three = ids_by_container(&st);
    for (container, id) in &ids_three {
        assert_eq!(ids_five.get(container), Some(id), "{container} keeps its id");
    }
    let lost: Vec<String> = gone
        .iter()
        .flat_map(|c| sleepers_on(&jobs, &c.hostname))
        .collect();
    assert!(
        !lost.is_empty(),
        "sleepers ran on the scaled-away nodes: {jobs:?}"
    );
    wait_node_lost(&admin, &lost, "the scaled-away nodes").await?;
    let all3: Vec<String> = three.iter().map(|c| c.name.clone()).collect();
    let jobs = check_listings(&p, &admin, &all3, &acked).await?;

    // 4. Kill the leader's container: a new leader takes over, the killed node's jobs fail as
    //    node lost, nothing acknowledged is lost; then it comes back.
    let leader = leader_of(&status(&admin).await?)?;
    eprintln!("sleepers per node: {:?}", spread(&jobs, &three));
    let victim = three
        .iter()
        .find(|c| c.name == leader)
        .context("leader container")?
        .clone();
    let lost = sleepers_on(&jobs, &victim.hostname);
    assert!(!lost.is_empty(), "sleepers run on the leader {leader}");
    p.docker(&["kill", &victim.name]).await?;
    let st = wait_cluster(&admin, "Yellow", &names(&three)).await?;
    assert_ne!(leader_of(&st)?, victim.name, "a new leader");
    for n in 100..103 {
        submit(&alice, &quick_job(n), &acked).await?;
    }
    wait_node_lost(&admin, &lost, "the killed leader").await?;
    let live: Vec<String> = all3.iter().filter(|n| **n != victim.name).cloned().collect();
    check_listings(&p, &admin, &live, &acked).await?;
    p.docker(&["start", &victim.name]).await?;
    let st = wait_cluster(&admin, "Green", &names(&three)).await?;
    assert_eq!(
        ids_by_container(&st),
        ids_three,
        "the killed leader came back under its id"
    );
    check_listings(&p, &admin, &all3, &acked).await?;
    let jobs = more_sleepers(&alice, &admin, &acked, &mut next_sleeper, 3).await?;
    eprintln!("leader kill done after {:?}", started.elapsed());

    // 5. Stop a follower (graceful: it stays a member), then start it again.
    let leader = leader_of(&status(&admin).await?)?;
    eprintln!("sleepers per node: {:?}", spread(&jobs, &three));
    let follower = three
        .iter()
        .filter(|c| c.name != leader)
        .max_by_key(|c| sleepers_on(&jobs, &c.hostname).len())
        .context("a follower")?
        .clone();
    let lost = sleepers_on(&jobs, &follower.hostname);
    assert!(!lost.is_empty(), "sleepers run on the follower {}", follower.name);
    p.docker(&["stop", "-t", "30", &follower.name]).await?;
    wait_cluster(&admin, "Yellow", &names(&three)).await?;
    for n in 200..203 {
        submit(&alice, &quick_job(n), &acked).await?;
    }
    wait_node_lost(&admin, &lost, "the stopped follower").await?;
    let live: Vec<String> = all3.iter().filter(|n| **n != follower.name).cloned().collect();
    check_listings(&p, &admin, &live, &acked).await?;
    p.docker(&["start", &follower.name]).await?;
    let st = wait_cluster(&admin, "Green", &names(&three)).await?;
    assert_eq!(
        ids_by_container(&st),
        ids_three,
        "the stopped follower came back under its id"
    );
    check_listings(&p, &admin, &all3, &acked).await?;
    let jobs = more_sleepers(&alice, &admin, &acked, &mut next_sleeper, 3).await?;
    eprintln!("follower stop done after {:?}", started.elapsed());

    // 6. Cut a follower off the compose network, then reconnect it (under its service alias).
    let network = format!("{}_default", p.name);
    let leader = leader_of(&status(&admin).await?)?;
    eprintln!("sleepers per node: {:?}", spread(&jobs, &three));
    let cut = three
        .iter()
        .filter(|c| c.name != leader)
        .max_by_key(|c| sleepers_on(&jobs, &c.hostname).len())
        .context("a follower")?
        .clone();
    let lost = sleepers_on(&jobs, &cut.hostname);
    assert!(!lost.is_empty(), "sleepers run on the follower {}", cut.name);
    p.docker(&["network", "disconnect", &network, &cut.name]).await?;
    wait_cluster(&admin, "Yellow", &names(&three)).await?;
    for n in 300..303 {
        submit(&alice, &quick_job(n), &acked).await?;
    }
    wait_node_lost(&admin, &lost, "the cut-off node").await?;
    let live: Vec<String> = all3.iter().filter(|n| **n != cut.name).cloned().collect();
    check_listings(&p, &admin, &live, &acked).await?;
    p.docker(&["network", "connect", "--alias", "node", &network, &cut.name])
        .await?;
    let st = wait_cluster(&admin, "Green", &names(&three)).await?;
    assert_eq!(ids_by_container(&st), ids_three, "the cut-off node kept its id");
    check_listings(&p, &admin, &all3, &acked).await?;
    assert!(
        p.containers("node").await?.iter().all(|c| c.running),
        "every node still runs"
    );
    eprintln!("network cut done after {:?}", started.elapsed());

    // 7. Rolling upgrade (deploy/rolling-upgrade.sh) to "new" images (ours under a new tag,
    //    with a new image id) while clients keep submitting: the cluster keeps its leader and
    //    quorum, every original replica keeps its id on the new image, and the two temporary
    //    replicas are removed from the membership.
    let new_tag = p.tag_new_images().await?;
    let submitter = Submitter::start(alice.clone(), acked.clone(), 3000);
    let watch = HealthWatch::start(admin.clone());
    let volumes_before = p.volume_names(false).await?;
    let upgraded = p.rolling_upgrade(&new_tag).await;
    // Volumes the script created and left behind (it should delete those of the replicas it
    // scaled away) go with the project either way.
    let left: Vec<String> = p
        .volume_names(true)
        .await?
        .difference(&volumes_before)
        .cloned()
        .collect();
    p.teardown
        .volumes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(left.iter().cloned());
    upgraded?;
    assert!(
        left.is_empty(),
        "the upgrade left the volumes of its temporary replicas: {left:?}"
    );
    let st = wait_cluster(&admin, "Green", &names(&three)).await?;
    let (ok, failed) = submitter.finish().await?;
    let red = watch.finish().await?;
    eprintln!(
        "rolling upgrade done after {:?}; submits during it: {ok} acknowledged, {failed} not; \
         statuses other than Green/Yellow: {red:?}",
        started.elapsed()
    );
    assert!(ok > 0, "submits went through during the upgrade");
    assert_eq!(
        ids_by_container(&st),
        ids_three,
        "the upgraded replicas kept their ids"
    );
    let upgraded = p.containers("node").await?;
    assert_eq!(
        names(&upgraded),
        names(&three),
        "the same three replicas, re-created"
    );
    for c in &upgraded {
        let image = p.docker(&["inspect", "-f", "{{.Config.Image}}", &c.name]).await?;
        assert_eq!(
            image.trim(),
            format!("launcher-node:{new_tag}"),
            "{} runs the new image",
            c.name
        );
    }
    check_listings(&p, &admin, &all3, &acked).await?;
    eprintln!(
        "done after {:?}: {} acknowledged jobs, all listed identically",
        started.elapsed(),
        acked.lock().unwrap_or_else(|e| e.into_inner()).len()
    );
    p.teardown.passed.store(true, Ordering::SeqCst);
    Ok(())
}

/// One request of a failover-test client, as it ended.
#[derive(Debug, Clone)]
struct Record {
    round: usize,
    client: usize,
    what: String,
    started: Instant,
    took: Duration,
    /// The node that answered (X-Launcher-Node), or what went wrong.
    outcome: Result<String, String>,
}

/// Clients of the gateway, each pinned to one node by its `launcher-node` cookie, listing and
/// submitting (under an Idempotency-Key) once per [`CLIENT_PERIOD`] until stopped, and
/// recording every request with the round it started in.
struct Load {
    round: Arc<std::sync::atomic::AtomicUsize>,
    records: Arc<Mutex<Vec<Record>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each client's cookie and the member address it is pinned to.
    clients: Vec<(String, String)>,
}

/// Sends one request of a failover-test client: the answer's node id when it is a 2xx whose
/// body reads whole (a listing must be a complete JSON array), else what went wrong.
async fn load_request(req: reqwest::RequestBuilder, listing: bool) -> Result<String, String> {
    let r = req.send().await.map_err(|e| format!("no answer: {e:#}"))?;
    let status = r.status();
    let node = r
        .headers()
        .get("x-launcher-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("{status}, body cut off: {e:#}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if listing && serde_json::from_slice::<Vec<Value>>(&body).is_err() {
        return Err(format!(
            "{status} with a body that is no JSON array: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(node)
}

impl Load {
    /// Starts one client per member address in `addrs`, each with a cookie whose rendezvous
    /// order starts with that address (the gateway pins over the members' addresses).
    fn start(http: Http, addrs: &[String]) -> Load {
        let mut clients = Vec::new();
        for addr in addrs {
            let cookie = (0..)
                .map(|i| format!("killtest{i}"))
                .find(|c| {
                    launcher_gateway::routing::rendezvous_order(c, addrs.iter().map(String::as_str))[0]
                        == *addr
                })
                .expect("some cookie picks each node first");
            clients.push((cookie, addr.clone()));
        }
        let round = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(client, (cookie, _))| {
                let (http, cookie, round, records) =
                    (http.clone(), cookie.clone(), round.clone(), records.clone());
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(CLIENT_PERIOD);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for n in 0.. {
                        tokio::select! {
                            _ = stop_rx.changed() => return,
                            _ = tick.tick() => {}
                        }
                        let cookie_header = format!("launcher-node={cookie}");
                        let key = format!("{cookie}-{n}");
                        let job = json!({"name": format!("kill-{client}-{n}"), "cluster": "Local",
                            "command": "true", "tags": ["deploy-it", "kill-rounds"]});
                        let requests = [
                            (
                                "GET /jobs?fields=id&limit=5".to_string(),
                                http.req(Method::GET, "/jobs?fields=id&limit=5"),
                                true,
                            ),
                            (
                                format!("POST /jobs (Idempotency-Key {key})"),
                                http.req(Method::POST, "/jobs")
                                    .header("idempotency-key", &key)
                                    .json(&job),
                                false,
                            ),
                        ];
                        for (what, req, listing) in requests {
                            let round = round.load(Ordering::SeqCst);
                            let started = Instant::now();
                            let outcome = load_request(req.header("cookie", &cookie_header), listing).await;
                            records.lock().unwrap_or_else(|p| p.into_inner()).push(Record {
                                round,
                                client,
                                what,
                                started,
                                took: started.elapsed(),
                                outcome,
                            });
                        }
                    }
                })
            })
            .collect();
        Load {
            round,
            records,
            stop,
            tasks,
            clients,
        }
    }

    /// Waits until every client has had `n` requests answered (or failed) that it sent at or
    /// after `since`: each client, the one pinned to a killed node too, went through it.
    async fn wait_requests_since(&self, since: Instant, n: usize, what: &str) -> anyhow::Result<()> {
        let clients = self.clients.len();
        wait_until(what, WAIT, || async move {
            let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            let done = (0..clients).all(|c| {
                records
                    .iter()
                    .filter(|r| r.client == c && r.started >= since)
                    .count()
                    >= n
            });
            Ok(done.then_some(()))
        })
        .await
    }

    async fn finish(self) -> anyhow::Result<Vec<Record>> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), t).await??;
        }
        Ok(std::mem::take(
            &mut *self.records.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// One round of the failover test, for its report.
struct Round {
    victim: String,
    leader: bool,
    killed_at: Instant,
    took: Duration,
}

/// Runs the kill rounds: each kills a node's container (the leader in odd rounds, followers in
/// turn in even ones), waits until the cluster has a leader other than it and lists it as
/// unhealthy and every client got answers after that, starts the container again, waits for
/// Green and for answers again.
async fn kill_rounds(
    p: &Project,
    admin: &Http,
    load: &Load,
    nodes: &[Container],
) -> anyhow::Result<Vec<Round>> {
    let all = names(nodes);
    let mut rounds = Vec::new();
    for round in 1..=KILL_ROUNDS {
        let st = status(admin).await?;
        let leader = leader_of(&st)?;
        let followers: Vec<&String> = all.iter().filter(|n| **n != leader).collect();
        let victim = if round % 2 == 1 {
            leader.clone()
        } else {
            followers[(round / 2) % followers.len()].clone()
        };
        load.round.store(round, Ordering::SeqCst);
        let killed_at = Instant::now();
        p.docker(&["kill", &victim]).await?;
        // The cluster noticed: another leader, and the killed node listed as unhealthy (its
        // heartbeats stopped), so the clients ran against the dead node for that long.
        let what = format!("round {round}: a leader other than the killed {victim}, which is unhealthy");
        let http = admin.clone();
        let victim2 = victim.clone();
        wait_until(&what, WAIT, move || {
            let (http, victim) = (http.clone(), victim2.clone());
            async move {
                let st = status(&http).await?;
                let down = st["nodes"].as_array().into_iter().flatten().any(|n| {
                    container_of(n["address"].as_str().unwrap_or_default()) == victim && n["healthy"] == false
                });
                Ok((down && leader_of(&st).ok().is_some_and(|l| l != victim)).then_some(()))
            }
        })
        .await?;
        load.wait_requests_since(
            Instant::now(),
            2,
            &format!("round {round}: answers to every client after the failover"),
        )
        .await?;
        p.docker(&["start", &victim]).await?;
        wait_cluster(admin, "Green", &all).await?;
        load.wait_requests_since(
            Instant::now(),
            2,
            &format!("round {round}: answers to every client with {victim} back"),
        )
        .await?;
        let took = killed_at.elapsed();
        eprintln!(
            "round {round}: killed {victim} ({}), Green again after {took:.1?}",
            if victim == leader {
                "the leader"
            } else {
                "a follower"
            }
        );
        rounds.push(Round {
            leader: victim == leader,
            victim,
            killed_at,
            took,
        });
    }
    Ok(rounds)
}

/// The gateway hides a killed node from its clients. Twenty times, a node's container is
/// killed (`docker kill`: the leader in half the rounds) and started again, while clients
/// pinned to each node keep listing jobs and submitting under an Idempotency-Key through the
/// published port: every request is answered 2xx. Reads and keyed submits are retried by the
/// gateway on the next node when a node cannot be reached, and across an election while every
/// node answers Unavailable (docs/api.md, "Routing and stickiness").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_clients_see_no_error_while_nodes_are_killed() -> anyhow::Result<()> {
    init_tracing();
    let started = Instant::now();
    images_ready(started).await?;
    let p = Project::new()?;
    p.compose(&["up", "-d"]).await?;
    let admin = p.http("rstudio-server").await?;
    let alice = p.http("alice").await?;
    let nodes = p.containers("node").await?;
    assert_eq!(nodes.len(), 3, "scale: 3 by default");
    let st = wait_cluster(&admin, "Green", &names(&nodes)).await?;
    eprintln!("Green after {:?}", started.elapsed());
    let addrs: Vec<String> = st["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter_map(|n| n["address"].as_str().map(str::to_string))
        .collect();
    let load = Load::start(alice, &addrs);
    for (i, (cookie, addr)) in load.clients.iter().enumerate() {
        eprintln!("client {i}: cookie {cookie}, pinned to {addr}");
    }
    let rounds_started = Instant::now();
    let rounds = tokio::time::timeout(KILL_ROUNDS_BUDGET, kill_rounds(&p, &admin, &load, &nodes)).await;
    let clients = load.clients.clone();
    let records = load.finish().await?;
    let rounds = rounds
        .map_err(|_| anyhow::anyhow!("the {KILL_ROUNDS} rounds took longer than {KILL_ROUNDS_BUDGET:?}"))??;
    eprintln!("{KILL_ROUNDS} rounds in {:.1?}", rounds_started.elapsed());

    let mut errors = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        let n = i + 1;
        let mine: Vec<&Record> = records.iter().filter(|r| r.round == n).collect();
        let slowest = mine.iter().max_by_key(|r| r.took);
        let failed: Vec<&&Record> = mine.iter().filter(|r| r.outcome.is_err()).collect();
        let describe = |r: &Record| {
            format!(
                "client {} (pinned to {}) {}, sent {:.2?} after the kill, took {:.2?}",
                r.client,
                clients[r.client].1,
                r.what,
                r.started.saturating_duration_since(round.killed_at),
                r.took
            )
        };
        eprintln!(
            "round {n:2}: killed {} ({}); {} requests, {} errors; slowest {}; round took {:.1?}",
            round.victim,
            if round.leader { "leader" } else { "follower" },
            mine.len(),
            failed.len(),
            slowest.map_or("none".to_string(), |r| describe(r)),
            round.took
        );
        for r in failed {
            errors.push(format!(
                "round {n} (killed {}): {}: {}",
                round.victim,
                describe(r),
                r.outcome.as_ref().err().map_or("", String::as_str)
            ));
        }
    }
    let answered = records.iter().filter(|r| r.outcome.is_ok()).count();
    eprintln!(
        "{} requests, {answered} answered 2xx, {} failed; done after {:.1?}",
        records.len(),
        errors.len(),
        started.elapsed()
    );
    assert!(
        errors.is_empty(),
        "{} client-visible errors:\n{}",
        errors.len(),
        errors.join("\n")
    );
    p.teardown.passed.store(true, Ordering::SeqCst);
    Ok(())
}
