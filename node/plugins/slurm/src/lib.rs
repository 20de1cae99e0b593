//! The Slurm plugin (issue 10, DESIGN §1 and §5): runs launcher jobs on a Slurm cluster by
//! calling Slurm's commands, and speaks only the Launcher Plugin API on its stdin/stdout, so
//! any launcher that speaks that API can drive it.
//!
//! * [`config`]: the standard plugin options and `launcher.<plugin-name>.conf`.
//! * [`protocol`]: the request loop, GetJob, network and cluster info.
//! * [`state`]: the cache of launcher jobs in Slurm, the poller, the status streams.
//! * [`submit`], [`control`], [`output`], [`resources`]: the requests about jobs.
//! * [`slurm`]: running the commands; [`parse`]: reading what they print.
//!
//! The plugin keeps no state of its own: a job's tags live in its Slurm comment, so any
//! instance of the plugin, on any node, sees the same jobs (shared-scheduler adoption).
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod error;
pub mod output;
pub mod parse;
pub mod protocol;
pub mod resources;
pub mod slurm;
pub mod state;
pub mod submit;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::state::{Outbox, SlurmPlugin};

/// Runs the plugin on `input`/`output` until the input ends or `shutdown` completes.
pub async fn run<R, W>(cfg: Config, input: R, output: W, shutdown: impl Future<Output = ()>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let uid = nix::unistd::Uid::current();
    let own_user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let switch_user = nix::unistd::Uid::effective().is_root() && !cfg.options.unprivileged;
    if !switch_user {
        tracing::warn!(user = %own_user, "not running as root (or unprivileged=1): every job is submitted as {own_user}");
    }
    tracing::info!(scratch = %cfg.scratch_path.display(), switch_user, "Slurm plugin starting");
    let (out, rx) = Outbox::new(256);
    let p = Arc::new(SlurmPlugin::new(cfg, out, switch_user, own_user));
    protocol::serve(p, rx, input, output, shutdown).await;
}

pub use launcher_plugin_api::signal::termination;
