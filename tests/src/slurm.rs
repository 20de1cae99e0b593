//! A real, isolated, single-node Slurm for tests (issue 10): its own munge key and socket, a
//! `slurm.conf` with free ports and every path under a temporary directory, `slurmctld -i` and
//! `slurmd -N localhost` as children of the test, stopped by pid when dropped. Job accounting
//! is gathered every second (`jobacct_gather/linux`, which reads `/proc` and needs no cgroups)
//! so `sstat` has figures; there is no accounting storage, so `sacct` knows only the job
//! completion file.
//!
//! The Debian 12 packages `slurm-wlm` and `munge` are installed with apt-get when missing (the
//! tests run as root). Every client command gets `SLURM_CONF`; the plugin gets it through its
//! `slurm-conf` key ([`SlurmCluster::plugin_conf`]).
//!
//! [`with_slurm`] adds a `[cluster] name=Slurm type=Slurm` to every node of a
//! [`ProcessCluster`], so jobs submitted to cluster `Slurm` go through `launcher-slurm-plugin`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::process::{node_binary, ProcessCluster};
use crate::{wait_until, DEADLINE};

/// Installs `slurm-wlm` and `munge` once per process if their daemons are missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let have = |p: &str| Path::new(p).exists();
        if have("/usr/sbin/slurmctld") && have("/usr/sbin/slurmd") && have("/usr/sbin/munged") {
            return Ok(());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "Slurm is not installed and the tests are not root: apt-get install slurm-wlm munge".into(),
            );
        }
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .map_err(|e| format!("apt-get: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "apt-get {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(&["update", "-qq"])?;
        run(&["install", "-y", "-qq", "slurm-wlm", "munge"])
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// `launcher-slurm-plugin` next to the node binary (built with it, see [`with_slurm`]).
pub fn slurm_plugin_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = node_binary()
            .parent()
            .expect("binary dir")
            .join("launcher-slurm-plugin");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "launcher-slurm-plugin",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest);
        if bin
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo runs").success(),
            "building launcher-slurm-plugin failed"
        );
        bin
    })
    .clone()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running single-node Slurm.
pub struct SlurmCluster {
    pub dir: tempfile::TempDir,
    /// Its `slurm.conf`.
    pub conf: PathBuf,
    /// CPUs of its one node.
    pub cpus: usize,
    daemons: Vec<(&'static str, Child)>,
}

impl SlurmCluster {
    /// Starts munged, slurmctld and slurmd and waits until the node is idle.
    pub async fn start() -> anyhow::Result<SlurmCluster> {
        use std::os::unix::fs::PermissionsExt;
        ensure_installed()?;
        let dir = tempfile::Builder::new().prefix("launcher-slurm-").tempdir()?;
        let d = dir.path().to_path_buf();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::set_permissions(d.join("munge"), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(d.join("state"), std::fs::Permissions::from_mode(0o700))?;
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let key_file = d.join("munge.key");
        std::fs::write(&key_file, key)?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        let socket = d.join("munge/munge.socket");
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mem_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024 / 2)
            .unwrap_or(1024);
        let conf = d.join("slurm.conf");
        let p = |x: &str| d.join(x).display().to_string();
        let text = format!(
            "ClusterName=launchertest\nSlurmctldHost=localhost\nSlurmctldPort={ctld}\nSlurmdPort={slurmd}\n\
             SlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={socket}\n\
             StateSaveLocation={state}\nSlurmdSpoolDir={spool}/slurmd-%n\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd-%n.pid\nSlurmctldLogFile={log}/slurmctld.log\nSlurmdLogFile={log}/slurmd.log\n\
             ProctrackType=proctrack/pgid\nTaskPlugin=task/none\nAccountingStorageType=accounting_storage/none\n\
             JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=1\nJobCompType=jobcomp/filetxt\nJobCompLoc={d}/jobcomp.txt\n\
             SchedulerType=sched/backfill\nSchedulerParameters=batch_sched_delay=0\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\nMailProg=/bin/true\nReturnToService=2\nMpiDefault=none\nSwitchType=switch/none\n\
             KillWait=2\nSlurmdParameters=config_overrides\n\
             NodeName=localhost CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN\n\
             PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            ctld = free_port()?,
            slurmd = free_port()?,
            socket = socket.display(),
            state = p("state"),
            spool = p("spool"),
            log = p("log"),
            d = d.display(),
        );
        std::fs::write(&conf, text)?;
        let mut c = SlurmCluster {
            dir,
            conf,
            cpus,
            daemons: Vec::new(),
        };
        let log = |name: &str| -> anyhow::Result<Stdio> {
            Ok(std::fs::File::create(d.join("log").join(format!("{name}.out")))?.into())
        };
        let munged = Command::new("munged")
            .arg("-F")
            .arg("-f")
            .arg(format!("--key-file={}", key_file.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", d.join("munge/munged.pid").display()))
            .arg(format!("--log-file={}", d.join("log/munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munge/seed").display()))
            .stdin(Stdio::null())
            .stdout(log("munged")?)
            .stderr(log("munged.err")?)
            .spawn()?;
        c.daemons.push(("munged", munged));
        wait_until("munged's socket", DEADLINE, || {
            let s = socket.clone();
            async move { Ok(s.exists().then_some(())) }
        })
        .await?;
        let ctld = Command::new("slurmctld")
            .args(["-D", "-i"])
            .env("SLURM_CONF", &c.conf)
            .current_dir(&d)
            .stdin(Stdio::null())
            .stdout(log("slurmctld")?)
            .stderr(log("slurmctld.err")?)
            .spawn()?;
        c.daemons.push(("slurmctld", ctld));
        let slurmd = Command::new("slurmd")
            .args(["-D", "-N", "localhost"])
            .env("SLURM_CONF", &c.conf)
            .current_dir(&d)
            .stdin(Stdio::null())
            .stdout(log("slurmd")?)
            .stderr(log("slurmd.err")?)
            .spawn()?;
        c.daemons.push(("slurmd", slurmd));
        let r = wait_until("the Slurm node to be idle", DEADLINE, || {
            let out = c.command("sinfo").args(["-h", "-o", "%t"]).output();
            async move {
                let out = out?;
                Ok(String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .starts_with("idle")
                    .then_some(()))
            }
        })
        .await;
        if let Err(e) = r {
            anyhow::bail!("{e}\n{}", c.logs());
        }
        Ok(c)
    }

    /// Restarts slurmctld with no saved state (`-c`): the controller forgets every job, as it
    /// does `MinJobAge` after a job ends; only the job completion file still knows them.
    pub async fn restart_controller_forgetting_jobs(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path().to_path_buf();
        let i = self
            .daemons
            .iter()
            .position(|(n, _)| *n == "slurmctld")
            .ok_or_else(|| anyhow::anyhow!("no slurmctld"))?;
        let (_, mut old) = self.daemons.remove(i);
        kill(Pid::from_raw(old.id() as i32), Signal::SIGTERM)?;
        let _ = wait_until("slurmctld to stop", DEADLINE, || {
            let r = old.try_wait();
            async move { Ok(r?.map(|_| ())) }
        })
        .await;
        let _ = old.kill();
        let _ = old.wait();
        let ctld = Command::new("slurmctld")
            .args(["-D", "-c", "-i"])
            .env("SLURM_CONF", &self.conf)
            .current_dir(&d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log/slurmctld2.err.out"))?)
            .spawn()?;
        self.daemons.insert(i, ("slurmctld", ctld));
        wait_until("the restarted controller to answer", DEADLINE, || {
            let out = self.command("sinfo").args(["-h", "-o", "%P"]).output();
            async move { Ok(out?.status.success().then_some(())) }
        })
        .await
    }

    /// A Slurm client command with `SLURM_CONF` set.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        c
    }

    /// Runs a client command, failing with its stderr; returns its stdout.
    pub fn run(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(name).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The text of a `launcher.<plugin-name>.conf` for the Slurm plugin on this Slurm.
    pub fn plugin_conf(&self) -> String {
        format!(
            "slurm-conf={}\npoll-seconds=0.5\nresource-poll-seconds=1\n",
            self.conf.display()
        )
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in [
            "slurmctld.log",
            "slurmd.log",
            "slurmctld.err.out",
            "slurmd.err.out",
            "munged.err.out",
        ] {
            let text = std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!(
                "--- {f} ---\n{}\n",
                lines[lines.len().saturating_sub(20)..].join("\n")
            ));
        }
        s
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs outlive slurmd (slurmstepd): end them through Slurm first.
        if let Ok(ids) = self.run("squeue", &["-h", "-o", "%i"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self
                    .command("scancel")
                    .args(["--signal=KILL", "--full"])
                    .args(&ids)
                    .output();
                let _ = self.command("scancel").args(&ids).output();
                let end = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < end {
                    let busy = self
                        .run(
                            "squeue",
                            &["-h", "-t", "running,completing,suspended", "-o", "%i"],
                        )
                        .map(|s| !s.trim().is_empty())
                        .unwrap_or(false);
                    if !busy {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        for (name, child) in self.daemons.iter_mut().rev() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let end = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::time::Instant::now() > end {
                    eprintln!("{name} did not stop on SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Gives every node of `cluster` a `[cluster] name=Slurm type=Slurm` (no `exe=`: the node
/// runs the `launcher-slurm-plugin` next to its own binary) on `slurm` (plus `extra_conf` in its config file): the nodes are
/// stopped gracefully (they stay members), their configs extended, and started again on their
/// ports. Waits until the cluster is Green and offers `Slurm`.
pub async fn with_slurm(
    cluster: &mut ProcessCluster,
    slurm: &SlurmCluster,
    extra_conf: &str,
) -> anyhow::Result<()> {
    let exe = slurm_plugin_binary();
    anyhow::ensure!(
        exe.parent() == node_binary().parent(),
        "{} must be next to the node binary",
        exe.display()
    );
    let n = cluster.nodes.len();
    for i in (1..=n).rev() {
        cluster.terminate(i).await?;
    }
    for i in 1..=n {
        let node = &cluster.nodes[i - 1];
        let conf = node.dir.join("launcher.conf");
        let text = std::fs::read_to_string(&conf)?
            .lines()
            .map(|l| {
                if l.starts_with("grpc-address=") {
                    format!("grpc-address={}", node.addr())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // No exe=: the node finds launcher-slurm-plugin next to its own binary.
        let text = format!("{text}\n\n[cluster]\nname=Slurm\ntype=Slurm\n");
        std::fs::write(&conf, text)?;
        std::fs::write(
            node.dir.join("launcher.slurm.conf"),
            format!("{}{extra_conf}", slurm.plugin_conf()),
        )?;
    }
    for i in 1..=n {
        cluster.spawn_raw(i, &[])?;
    }
    cluster.rebind(1).await?;
    cluster.wait_green(n).await?;
    let c = cluster.client(1);
    wait_until("every node to offer cluster Slurm", DEADLINE, || {
        let c = c.clone();
        async move {
            let info = c.cluster_info().await?;
            Ok(info
                .iter()
                .any(|ci| ci["name"] == "Slurm" || ci["cluster"] == "Slurm")
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}
