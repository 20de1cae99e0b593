//! The Local plugin (DESIGN §5, §6): runs each job as a process on this machine, as the job's
//! user, through a small supervisor process. It speaks only the Launcher Plugin API on its
//! stdin/stdout, so any launcher that speaks that API can drive it.
//!
//! * [`config`]: the standard plugin options and `launcher.<plugin-name>.conf`.
//! * [`protocol`]: its requests, under the plugin API's shared request loop.
//! * [`state`]: the job table, status streams, outgoing queue and scratch layout.
//! * [`submit`], [`control`], [`output`], [`resources`], [`query`]: the requests about jobs.
//! * [`follow`]: following jobs to their end, recovery after a restart, expiry.
//! * [`record`], [`procfs`], [`files`], [`host`], [`error`]: the pieces
//!   they use.
//! * [`spec`]: the files through which the plugin and a job's supervisor talk.
//! * [`supervisor`]: the supervisor (`launcher-local-plugin supervise <job-dir>`): sandbox,
//!   switch user, exec the job, pass its exit status through.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod error;
pub mod files;
pub mod follow;
pub mod host;
pub mod output;
pub mod procfs;
pub mod protocol;
pub mod query;
pub mod record;
pub mod resources;
pub mod spec;
pub mod state;
pub mod submit;
pub mod supervisor;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::state::{LocalPlugin, Outbox, SupervisorCommand};

/// Environment variable naming a program to start supervisors through (`<wrapper> <exe>
/// supervise <dir>`; it must exec the rest). For debugging (strace) and tests.
pub const SUPERVISOR_WRAPPER_ENV: &str = "LAUNCHER_LOCAL_PLUGIN_SUPERVISOR_WRAPPER";

/// What the plugin found out about this machine at start-up.
pub struct Startup {
    pub ident: host::Identity,
    /// Whether jobs get a mount namespace.
    pub namespace: bool,
    pub supervisor: SupervisorCommand,
    /// The scratch path's lock, held while the plugin runs.
    pub lock: ScratchLock,
}

/// An exclusive lock on `<scratch-path>/plugin.lock`: two plugins following the same jobs would
/// judge them twice. Released by the kernel when the plugin ends, however it ends.
/// Why the plugin cannot start: a message for the operator (the binary prints it and exits).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl StartError {
    fn io(what: String) -> impl FnOnce(std::io::Error) -> StartError {
        move |e| StartError(format!("{what}: {e}"))
    }
}

pub struct ScratchLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl ScratchLock {
    /// Takes the lock of a scratch path, or says who holds it.
    pub fn take(scratch: &std::path::Path) -> Result<ScratchLock, StartError> {
        let path = scratch.join("plugin.lock");
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(&path),
            other => other,
        }
        .map_err(StartError::io(format!("cannot open {}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(ScratchLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StartError(format!(
                "another plugin is running on the scratch path {}: stop it first, or give this one its own --scratch-path",
                scratch.display()
            ))),
            Err((_, e)) => Err(StartError(format!("cannot lock {}: {e}", path.display()))),
        }
    }
}

/// Checks the machine once: who we are, whether mount namespaces work (said once in the log
/// when they do not), where the supervisor binary is; prepares the scratch directory.
pub fn start_up(cfg: &Config) -> Result<Startup, StartError> {
    let ident = host::Identity::current(cfg.options.unprivileged).map_err(StartError)?;
    let namespace = match host::probe_mount_namespace() {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(
                "mount namespaces are not available ({why}): jobs run without masked paths and bind mounts"
            );
            false
        }
    };
    if namespace {
        // Jobs write their output and TMPDIR under the scratch path: hidden, every job would fail.
        if let Some(m) = cfg.masked_paths.iter().find(|m| cfg.scratch_path.starts_with(m)) {
            return Err(StartError(format!(
                "scratch-path {} lies inside masked path {}: jobs could not reach their output or TMPDIR. \
                 Move scratch-path out of it, or set masked-paths in launcher.{}.conf",
                cfg.scratch_path.display(),
                m.display(),
                cfg.options.plugin_name
            )));
        }
    }
    let exe = std::env::current_exe().map_err(StartError::io(
        "cannot find the plugin's own binary to run supervisors".into(),
    ))?;
    let wrapper = std::env::var_os(SUPERVISOR_WRAPPER_ENV)
        .filter(|w| !w.is_empty())
        .map(Into::into);
    let layout = state::Layout {
        root: cfg.scratch_path.clone(),
    };
    layout.prepare().map_err(StartError::io(format!(
        "cannot prepare the scratch path {}",
        cfg.scratch_path.display()
    )))?;
    let lock = ScratchLock::take(&cfg.scratch_path)?;
    tracing::info!(
        user = %ident.user,
        switch_user = ident.switch_user,
        namespace,
        scratch = %cfg.scratch_path.display(),
        "Local plugin starting"
    );
    if cfg.allow_new_privileges {
        tracing::warn!(
            "allow-new-privileges=1: jobs may gain privileges through setuid programs and file capabilities"
        );
    } else {
        tracing::info!(
            "jobs run with no_new_privs: setuid programs in jobs do not gain privileges (allow-new-privileges=0)"
        );
    }
    Ok(Startup {
        ident,
        namespace,
        supervisor: SupervisorCommand { exe, wrapper },
        lock,
    })
}

/// Runs the plugin on `input`/`output` until the input ends or `shutdown` completes. Jobs are
/// recovered from the scratch path first, and keep running after this returns.
pub async fn run<R, W>(cfg: Config, s: Startup, input: R, output: W, shutdown: impl Future<Output = ()>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let _lock = s.lock;
    let (out, rx) = Outbox::new(256);
    let p = Arc::new(LocalPlugin::new(cfg, s.ident, s.namespace, s.supervisor, out));
    let n = follow::recover(&p).await;
    if n > 0 {
        tracing::info!(jobs = n, "following unfinished jobs found on disk");
    }
    protocol::serve(p, rx, input, output, shutdown).await;
}

pub use launcher_plugin_api::signal::termination;
