//! The `launcher-node` binary: parse arguments, load the config, install tracing, run.
#![forbid(unsafe_code)]

mod privsep;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use launcher_node::config::{self, Config};
use launcher_node::network::Peers;
use launcher_node::{auth, StartOptions};
use launcher_proto::launcher::{Caller, SaveSnapshotRequest};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc rather than glibc's malloc: under a sustained write load glibc's per-thread arenas
/// kept freed memory, and every node's resident size grew by ~15 KB per stored job; with
/// jemalloc it stays near what the data needs (BENCHMARKS.md, resident memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(version, about = "A node of the replicated launcher cluster")]
struct Args {
    /// launcher.conf to use (default: $RSTUDIO_CONFIG_DIR/launcher.conf).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Form a new one-node cluster when the data dir is empty.
    #[arg(long)]
    init: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prints the cluster status as a running node reports it (JSON with --json).
    Status {
        /// gRPC address of a running node (default: this config's grpc-address).
        #[arg(long)]
        node: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exits 0 when the local node answers and sees a leader, else 1 (for container health checks).
    Health {
        /// gRPC address of the node to probe (default: this config's grpc-address).
        #[arg(long)]
        node: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Checks the installation: key and certificate files, directories, filter files, then
    /// starts every cluster's plugin and runs a short test job as --user (one line per step).
    VerifyInstallation {
        /// User the test jobs run as (default: the current user; required as root).
        #[arg(long)]
        user: Option<String>,
        /// Seconds each test job may take.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Snapshot operations.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Start a NEW one-node cluster from a snapshot file after losing quorum for good.
    Recover {
        /// Snapshot file written by `snapshot save`.
        #[arg(long)]
        from: PathBuf,
        /// Confirms that the old cluster is gone and a new one is wanted.
        #[arg(long)]
        force_new_cluster: bool,
    },
    /// The privileged plugin spawner a node started as root runs (privilege separation).
    #[command(hide = true)]
    Spawner {
        /// The node's pid: the spawner does not outlive it.
        #[arg(long)]
        parent: u32,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Saves a consistent snapshot of the job table from a running node to FILE.
    Save {
        file: PathBuf,
        /// gRPC address of a running node (default: this config's grpc-address).
        #[arg(long)]
        node: Option<String>,
    },
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = path.unwrap_or_else(|| config::config_dir().join(config::CONFIG_FILE_NAME));
    config::load_with_env(&path, |k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn init_tracing(debug: bool) {
    let default = if debug {
        "debug,h2=info,tower=info,hyper=info"
    } else {
        "info,openraft=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("LAUNCHER_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only on a terminal: node logs usually go to files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

async fn run_node(
    config: Config,
    opts: StartOptions,
    privsep: Option<privsep::Privsep>,
) -> anyhow::Result<()> {
    tracing::debug!(config = %config.dump(), "effective configuration");
    let mut spawner = None;
    let mut node = match privsep {
        None => launcher_node::start(config, opts).await?,
        Some(p) => {
            launcher_node::server::start_with(config, opts, |config| {
                let (launcher, client) = p
                    .finish(config)
                    .map_err(|e| launcher_node::error::StartError::Privileges(format!("{e:#}")))?;
                spawner = Some(client);
                Ok(launcher)
            })
            .await?
        }
    };
    let stopper = node.stopper();
    // Without its spawner the node can neither restart nor stop its plugins: it stops itself.
    let spawner_lost = Arc::new(AtomicBool::new(false));
    if let Some(client) = spawner {
        let stopper = stopper.clone();
        let lost = spawner_lost.clone();
        tokio::spawn(async move {
            client.gone().await;
            lost.store(true, Ordering::SeqCst);
            let _ = stopper.send_replace(true);
        });
    }
    if std::env::var_os("LAUNCHER_EXIT_WITH_PARENT").is_some() {
        // Test harnesses set this so a node never outlives a test process that was killed.
        let parent = nix::unistd::getppid();
        let stopper = stopper.clone();
        tokio::spawn(async move {
            while nix::unistd::getppid() == parent {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            tracing::warn!("parent process exited: stopping");
            let _ = stopper.send_replace(true);
        });
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: graceful stop (membership is kept)"),
            _ = int.recv() => tracing::info!("SIGINT: graceful stop (membership is kept)"),
        }
        let _ = stopper.send_replace(true);
    });
    let result = node.wait().await;
    if spawner_lost.load(Ordering::SeqCst) {
        anyhow::bail!("the privileged plugin spawner exited: the node stopped; start it again");
    }
    Ok(result?)
}

fn node_addr(config: &Config, node: Option<String>) -> String {
    node.unwrap_or_else(|| config.node.grpc_address.replace("0.0.0.0", "127.0.0.1"))
}

async fn print_status(config: &Config, node: Option<String>, json: bool) -> anyhow::Result<()> {
    let key = auth::load_key(&config.server.secure_cookie_key_file).map_err(anyhow::Error::msg)?;
    let addr = node_addr(config, node);
    let peers = Peers::new(auth::InternalAuth::new(&key, String::new()));
    let st = peers
        .launcher(&addr)
        .status(launcher_proto::launcher::StatusRequest {})
        .await
        .with_context(|| format!("node {addr} did not answer"))?
        .into_inner();
    if json {
        let nodes: Vec<serde_json::Value> = st
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({"id": n.id, "address": n.address, "role": n.role, "healthy": n.healthy,
                    "appliedIndex": n.applied_index, "voter": n.voter, "draining": n.draining})
            })
            .collect();
        let v = serde_json::json!({"status": st.status, "leader": st.leader, "appliedIndex": st.applied_index,
            "nodes": nodes, "version": st.version, "clusterId": st.cluster_id, "term": st.term});
        println!("{v}");
    } else {
        println!(
            "cluster {}  status {}  leader {}  term {}  applied {}",
            st.cluster_id, st.status, st.leader, st.term, st.applied_index
        );
        println!(
            "{:>4}  {:<22} {:<9} {:<8} {:>9}  DRAINING",
            "ID", "ADDRESS", "ROLE", "HEALTHY", "APPLIED"
        );
        for n in &st.nodes {
            println!(
                "{:>4}  {:<22} {:<9} {:<8} {:>9}  {}",
                n.id, n.address, n.role, n.healthy, n.applied_index, n.draining
            );
        }
    }
    Ok(())
}

/// `health`: one bounded Status call to the local node. Healthy means it serves and knows a
/// leader (a node still waiting for bootstrap-expect peers, or cut off from the quorum, is not).
async fn health(config: &Config, node: Option<String>, timeout: u64) -> anyhow::Result<()> {
    let key = auth::load_key(&config.server.secure_cookie_key_file).map_err(anyhow::Error::msg)?;
    let addr = node_addr(config, node);
    let peers = Peers::new(auth::InternalAuth::new(&key, String::new()));
    let limit = std::time::Duration::from_secs(timeout.max(1));
    let mut req = tonic::Request::new(launcher_proto::launcher::StatusRequest {});
    req.set_timeout(limit);
    let st = tokio::time::timeout(limit, peers.launcher(&addr).status(req))
        .await
        .map_err(|_| anyhow::anyhow!("node {addr} did not answer within {limit:?}"))?
        .with_context(|| format!("node {addr} did not answer"))?
        .into_inner();
    if st.leader == 0 || st.status == "Red" {
        anyhow::bail!(
            "node {} at {addr} sees no leader (cluster {})",
            st.node_id,
            st.status
        );
    }
    println!(
        "node {} healthy: cluster {}, leader {}, applied {}",
        st.node_id, st.status, st.leader, st.applied_index
    );
    Ok(())
}

async fn save_snapshot(config: &Config, file: PathBuf, node: Option<String>) -> anyhow::Result<()> {
    let key = auth::load_key(&config.server.secure_cookie_key_file).map_err(anyhow::Error::msg)?;
    let addr = node_addr(config, node);
    let peers = Peers::new(auth::InternalAuth::new(&key, String::new()));
    // Learn the cluster id first: snapshot export is a bound call.
    let status = peers
        .launcher(&addr)
        .status(launcher_proto::launcher::StatusRequest {})
        .await?
        .into_inner();
    peers.auth().set_cluster_id(&status.cluster_id);
    let req = SaveSnapshotRequest {
        caller: Some(Caller {
            user: "launcher-node".into(),
            admin: true,
        }),
    };
    let mut stream = peers.launcher(&addr).save_snapshot(req).await?.into_inner();
    let tmp = file.with_extension("partial");
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut total = 0usize;
    while let Some(part) = stream.next().await {
        let part = part?;
        total += part.data.len();
        out.write_all(&part.data).await?;
    }
    out.sync_all().await?;
    tokio::fs::rename(&tmp, &file).await?;
    println!(
        "saved snapshot of cluster {} at index {} to {} ({total} bytes)",
        status.cluster_id,
        status.applied_index,
        file.display()
    );
    Ok(())
}

/// `verify-installation`: every check's line on stdout; fails when any check failed.
async fn verify(config: &Config, user: Option<String>, timeout: u64) -> anyhow::Result<()> {
    let user = match user {
        Some(u) => u,
        None if nix::unistd::geteuid().is_root() => anyhow::bail!(
            "running as root: name the user the test jobs run as with --user (root jobs are refused)"
        ),
        None => nix::unistd::User::from_uid(nix::unistd::geteuid())?
            .map(|u| u.name)
            .ok_or_else(|| anyhow::anyhow!("the current user has no name; pass --user"))?,
    };
    let mut out = std::io::stdout();
    let report = launcher_node::verify::verify_installation(
        config,
        &user,
        std::time::Duration::from_secs(timeout.max(1)),
        &mut out,
    )
    .await;
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} checks failed",
            report.failed,
            report.failed + report.passed
        );
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Some(Cmd::Spawner { parent }) = args.cmd {
        std::process::exit(launcher_node::plugins::spawner::run(parent));
    }
    let result = (|| {
        let config = load_config(args.config.clone())?;
        let runs_node = matches!(args.cmd, None | Some(Cmd::Recover { .. }));
        if runs_node || matches!(args.cmd, Some(Cmd::VerifyInstallation { .. })) {
            init_tracing(config.server.enable_debug_logging);
        }
        // Before the runtime: the spawner is forked by the main thread, which lives as long as
        // the process (its parent-death signal follows the forking thread).
        let privsep = if runs_node {
            privsep::prepare(&config)?
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let result = runtime.block_on(run(args, config, privsep));
        // Dropping the runtime would wait for its blocking threads, one of which may be stuck
        // flushing to a full disk: leave them, the process exits right below.
        runtime.shutdown_background();
        result
    })();
    // Exit explicitly: a storage thread stuck on a full disk must not keep the process alive.
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("launcher-node: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args, config: Config, privsep: Option<privsep::Privsep>) -> anyhow::Result<()> {
    match args.cmd {
        None => {
            run_node(
                config,
                StartOptions {
                    init: args.init,
                    ..Default::default()
                },
                privsep,
            )
            .await
        }
        Some(Cmd::Status { node, json }) => print_status(&config, node, json).await,
        Some(Cmd::Health { node, timeout }) => health(&config, node, timeout).await,
        Some(Cmd::VerifyInstallation { user, timeout }) => verify(&config, user, timeout).await,
        Some(Cmd::Snapshot {
            cmd: SnapshotCmd::Save { file, node },
        }) => save_snapshot(&config, file, node).await,
        Some(Cmd::Recover {
            from,
            force_new_cluster,
        }) => {
            if !force_new_cluster {
                anyhow::bail!(
                    "recover starts a NEW cluster from the snapshot; confirm with --force-new-cluster"
                );
            }
            launcher_node::recover_into(&config, &from)?;
            run_node(
                config,
                StartOptions {
                    init: true,
                    ..Default::default()
                },
                privsep,
            )
            .await
        }
        Some(Cmd::Spawner { .. }) => unreachable!("the spawner runs before the config is read"),
    }
}
