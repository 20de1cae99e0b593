//! Privilege separation: started as root with a non-root `server-user`, a node runs as that
//! user, keeping root only in its plugin spawner and the Local plugin (which starts jobs as their
//! users); the gateway binds and then serves as that user. Read from `/proc/<pid>/status`.
//!
//! These tests need root (as CI runs them): they create the server account and start processes
//! that switch users.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use launcher_tests::client::{admin, job_id};
use launcher_tests::{
    current_user, init_tracing, job_user, shell_job, unique_loopback, wait_until, ClusterOpts, Http,
    ProcessCluster, DEADLINE,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

/// The dedicated account the nodes and the gateway of these tests run as.
const SERVER_USER: &str = "launcher-privsep";

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "privilege separation tests must run as root (as CI does)"
    );
}

/// The server account, created once as run-local.sh creates its own: a system user that cannot
/// log in and owns nothing else.
fn server_user() -> User {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if User::from_name(SERVER_USER).ok().flatten().is_none() {
            let out = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_USER,
                ])
                .output()
                .expect("useradd runs");
            // Parallel test processes may race to create it; only its existence matters.
            assert!(
                out.status.success() || User::from_name(SERVER_USER).ok().flatten().is_some(),
                "cannot create {SERVER_USER}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    User::from_name(SERVER_USER)
        .ok()
        .flatten()
        .expect("the server account exists")
}

/// `Uid:` and `Gid:` of every thread of `pid` (real, effective, saved, fs each), or None once
/// the process is gone.
fn thread_ids(pid: u32) -> Option<Vec<([u32; 4], [u32; 4])>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        let field = |name: &str| -> [u32; 4] {
            let v: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            v.try_into().unwrap_or([u32::MAX; 4])
        };
        out.push((field("Uid:"), field("Gid:")));
    }
    Some(out)
}

/// Whether every thread of `pid` runs with exactly `uid`/`gid` in all four slots.
fn runs_as(pid: u32, uid: u32, gid: u32) -> bool {
    thread_ids(pid).is_some_and(|t| !t.is_empty() && t.iter().all(|(u, g)| *u == [uid; 4] && *g == [gid; 4]))
}

/// The effective uid of `pid`.
fn euid(pid: u32) -> Option<u32> {
    thread_ids(pid)?.first().map(|(u, _)| u[1])
}

/// Whether `pid` exists and has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    let mut out: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        if out.insert(p) {
            todo.extend(children(p));
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every process whose command line names `dir` (the node and its plugin name their config).
fn processes_naming(dir: &Path) -> BTreeSet<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| cmdline(*p).contains(&needle))
        .collect()
}

/// The node's spawner and the spawner's Local plugin, once both run.
async fn spawner_and_plugin(node: u32) -> anyhow::Result<(u32, u32)> {
    wait_until("the spawner and its Local plugin", DEADLINE, || async move {
        let spawner = children(node)
            .into_iter()
            .find(|p| cmdline(*p).contains(" spawner "));
        let plugin = spawner.and_then(|s| {
            children(s)
                .into_iter()
                .find(|p| cmdline(*p).contains("launcher-local-plugin"))
        });
        Ok(spawner.zip(plugin))
    })
    .await
}

/// A one-node cluster whose node was restarted as root with `server-user` = [`SERVER_USER`]:
/// its data dir, written by a root node before, must be handed over.
async fn privsep_cluster(opts: ClusterOpts) -> anyhow::Result<ProcessCluster> {
    let user = server_user();
    let mut cluster = ProcessCluster::start(1, opts).await?;
    cluster.terminate(1).await?;
    let conf = cluster.nodes[0].dir.join("launcher.conf");
    let text = std::fs::read_to_string(&conf)?;
    let root_line = format!("server-user={}\n", current_user());
    anyhow::ensure!(text.contains(&root_line), "the harness's config changed:\n{text}");
    // The same port as before, so the harness's clients keep reaching the node.
    let addr = cluster.nodes[0].addr();
    let text: String = text
        .replace(&root_line, &format!("server-user={}\n", user.name))
        .lines()
        .map(|l| {
            if l.starts_with("grpc-address=") {
                format!("grpc-address={addr}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&conf, text)?;
    cluster.spawn_raw(1, &[])?;
    cluster.wait_for_leader().await?;
    cluster.wait_registered(1).await?;
    Ok(cluster)
}

fn node_pid(cluster: &ProcessCluster) -> u32 {
    cluster.nodes[0].pid().expect("node 1 runs")
}

/// Runs `id -un` as the test job user through node 1 and checks it finishes as that user.
async fn job_runs_as_its_user(cluster: &ProcessCluster, name: &str) -> anyhow::Result<String> {
    let c = cluster.client(1);
    let id = job_id(&c.submit_as(admin(), &shell_job(name, "id -un"), None).await?.job);
    let done = c
        .wait_job(&id, "finished", |j| {
            matches!(
                j["status"].as_str(),
                Some("Finished" | "Failed" | "Killed" | "Canceled")
            )
        })
        .await?;
    assert_eq!(
        (done["status"].as_str(), done["exitCode"].as_i64()),
        (Some("Finished"), Some(0)),
        "{done}"
    );
    assert_eq!(c.output(&id, "stdout", false).await?, format!("{}\n", job_user()));
    Ok(id)
}

/// Started as root with a non-root `server-user`, the node runs as that user in every thread
/// (real, effective, saved and fs ids) and owns its data dir; its plugin spawner and the Local
/// plugin under it are the only processes of the node that keep uid 0; a job still runs as its
/// own user and finishes; a graceful stop takes the spawner and the plugin along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runs_as_server_user_and_keeps_root_only_to_start_jobs() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    init_tracing();
    assert_root();
    let user = server_user();
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let mut cluster = privsep_cluster(ClusterOpts::default()).await?;
    let node = node_pid(&cluster);
    let (spawner, plugin) = spawner_and_plugin(node).await?;
    assert!(
        runs_as(node, uid, gid),
        "node: {:?}\n{}",
        thread_ids(node),
        cluster.log(1)
    );
    assert_eq!(euid(spawner), Some(0), "the spawner keeps root");
    assert_eq!(euid(plugin), Some(0), "the Local plugin keeps root");
    let mut ours = descendants(node);
    ours.extend(processes_naming(cluster.root.path()));
    let root_owned: BTreeSet<u32> = ours.iter().copied().filter(|p| euid(*p) == Some(0)).collect();
    assert_eq!(
        root_owned,
        BTreeSet::from([spawner, plugin]),
        "uid-0 processes besides the spawner and the plugin: {:?}",
        root_owned.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
    );

    // Everything in the data dir is the server user's, files the root node wrote included.
    let data = cluster.nodes[0].data_dir();
    let mut todo: Vec<PathBuf> = vec![data.clone()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        assert_eq!(meta.uid(), uid, "{} is not the server user's", p.display());
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
    }

    job_runs_as_its_user(&cluster, "as-its-user").await?;

    let status = cluster.terminate(1).await?;
    assert!(status.success(), "graceful stop: {status}\n{}", cluster.log(1));
    wait_until(
        "the spawner and the plugin to exit with the node",
        DEADLINE,
        || async move { Ok((!alive(spawner) && !alive(plugin)).then_some(())) },
    )
    .await?;
    Ok(())
}

/// Waits until the spawner runs a Local plugin other than `old` and the node has bootstrapped
/// more plugins than the `before` it had.
async fn next_plugin(cluster: &ProcessCluster, spawner: u32, old: u32, before: usize) -> anyhow::Result<u32> {
    let log_path = cluster.nodes[0].log_path();
    wait_until("the plugin to be restarted and bootstrapped", DEADLINE, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            let next = children(spawner)
                .into_iter()
                .find(|p| *p != old && cmdline(*p).contains("launcher-local-plugin"));
            Ok(next.filter(|_| bootstraps(&log) > before))
        }
    })
    .await
}

fn bootstraps(log: &str) -> usize {
    log.matches("plugin bootstrapped").count()
}

/// A Local plugin killed with SIGKILL is restarted through the spawner (root again, the
/// spawner's child, the node still the server user) and runs jobs again; a hung one (SIGSTOP,
/// missed heartbeats) is killed through the spawner and replaced too. A node killed with
/// SIGKILL takes its spawner along (EOF on its socket), and the plugin stops at the end of its
/// input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_hung_plugin_is_restarted_through_the_spawner() -> anyhow::Result<()> {
    init_tracing();
    assert_root();
    let user = server_user();
    let opts = ClusterOpts {
        heartbeat_interval_seconds: 1,
        ..Default::default()
    };
    let mut cluster = privsep_cluster(opts).await?;
    let node = node_pid(&cluster);
    let (spawner, plugin) = spawner_and_plugin(node).await?;

    let before = bootstraps(&cluster.log(1));
    kill(Pid::from_raw(plugin as i32), Signal::SIGKILL)?;
    let restarted = next_plugin(&cluster, spawner, plugin, before).await?;
    assert_eq!(euid(restarted), Some(0), "the restarted plugin keeps root");
    assert!(
        runs_as(node, user.uid.as_raw(), user.gid.as_raw()),
        "node: {:?}",
        thread_ids(node)
    );
    assert!(cluster.log(1).contains("via=Spawner"), "{}", cluster.log(1));
    job_runs_as_its_user(&cluster, "after-restart").await?;

    // Stopped, it answers no heartbeat and ignores SIGTERM: only the spawner's SIGKILL ends it.
    let before = bootstraps(&cluster.log(1));
    kill(Pid::from_raw(restarted as i32), Signal::SIGSTOP)?;
    let third = next_plugin(&cluster, spawner, restarted, before).await?;
    wait_until("the hung plugin to be gone", DEADLINE, || async move {
        Ok((!alive(restarted)).then_some(()))
    })
    .await?;
    assert_eq!(euid(third), Some(0), "the replacement keeps root");
    job_runs_as_its_user(&cluster, "after-hang").await?;

    cluster.kill(1);
    wait_until(
        "the spawner and the plugin to exit after the node",
        DEADLINE,
        || async move { Ok((!alive(spawner) && !alive(third)).then_some(())) },
    )
    .await?;
    Ok(())
}

/// The `launcher-gateway` binary of this cargo profile, built once per test process.
fn gateway_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = launcher_tests::process::node_binary().with_file_name("launcher-gateway");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "launcher-gateway",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest);
        if bin
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo runs").success(),
            "building launcher-gateway failed"
        );
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A gateway process, killed if the test ends early.
struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway binary, started as root with `server-user`, runs as that user in every thread
/// once it has bound its port and read the root-only key, and serves: the status, and as an
/// admin the job a privilege-separated node ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_started_as_root_serves_as_server_user() -> anyhow::Result<()> {
    init_tracing();
    assert_root();
    let user = server_user();
    let cluster = privsep_cluster(ClusterOpts::default()).await?;
    let id = job_runs_as_its_user(&cluster, "seen-through-the-gateway").await?;

    let dir = cluster.root.path().join("gateway");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("launcher.conf");
    // The binary's port=0 means "no TCP": a free port of the test's own loopback address.
    let addr = std::net::TcpListener::bind(format!("{}:0", unique_loopback()))?.local_addr()?;
    std::fs::write(
        &conf,
        format!(
            "[server]\naddress={}\nport={}\nserver-user={}\nsecure-cookie-key-file={}\nnodes={}\nadmin-users=admin\n",
            addr.ip(),
            addr.port(),
            user.name,
            cluster.key_path.display(),
            cluster.nodes[0].addr()
        ),
    )?;
    let log = dir.join("gateway.log");
    let gw = Gateway(
        std::process::Command::new(gateway_binary())
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .env_remove("LAUNCHER_NODES")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let pid = gw.0.id();
    let url = format!("http://{addr}");
    wait_until("the gateway to listen", DEADLINE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            anyhow::ensure!(alive(pid), "the gateway exited:\n{text}");
            Ok(text.contains("gateway listening").then_some(()))
        }
    })
    .await?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    assert!(runs_as(pid, uid, gid), "gateway: {:?}", thread_ids(pid));

    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let http = Http {
        base: url,
        token: Some(launcher_gateway::auth::mint_token(&cluster.key, "admin", expiry)),
        inner: reqwest::Client::new(),
    };
    let (status, body) = http.get("/status").await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http.get(&format!("/jobs/{id}")).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains(&id), "{body}");
    assert!(runs_as(pid, uid, gid), "still the server user after serving");
    drop(gw);
    Ok(())
}
