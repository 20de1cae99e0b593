//! The contract between the plugin and the supervisor of one job, kept as files in the job's
//! state directory `<scratch-path>/jobs/<plugin job id>/`:
//!
//! * `spec.json` ([`LaunchSpec`]): written by the plugin before it starts the supervisor.
//! * `started.json` ([`Started`]): written by the supervisor once the job's process exists.
//! * `exit.json` ([`Exited`]): written by the supervisor when the job's process has ended, so a
//!   restarted plugin that cannot `waitpid` still learns the exit status.
//! * `failed.json` ([`SetupFailed`]): written by the supervisor when it could not start the job
//!   (unknown user, bad working directory, exec failure, ...); nothing ran.
//! * `supervisor.log`: the supervisor's own stderr.
//!
//! Every file is written whole to a temporary name and renamed, so a reader sees all or nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File names inside a job's state directory.
pub const SPEC_FILE: &str = "spec.json";
pub const STARTED_FILE: &str = "started.json";
pub const EXIT_FILE: &str = "exit.json";
pub const FAILED_FILE: &str = "failed.json";
pub const SUPERVISOR_LOG: &str = "supervisor.log";

/// A path bind-mounted into the job's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindMount {
    /// Path on this machine.
    pub source: PathBuf,
    /// Path the job sees.
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to run and how (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSpec {
    /// The plugin's id of the job (for logs).
    pub job_id: String,
    /// Account to run as. When `switch_user` is false the job runs as the supervisor's own user.
    pub user: String,
    /// Whether to switch to `user` (setgid, initgroups, setuid): true when the plugin runs as root.
    pub switch_user: bool,
    /// Whether a job may run as uid 0 (`allow-root-jobs` in the plugin's config).
    pub allow_root: bool,
    /// Run through `/bin/sh -c` (exactly one of `command` and `exe` is set).
    pub command: Option<String>,
    /// Run directly, with `args`.
    pub exe: Option<String>,
    pub args: Vec<String>,
    /// The job's environment (`launcher-env` entries already merged in by the launcher).
    /// HOME, USER, LOGNAME, SHELL and TMPDIR are set by the supervisor from the user database
    /// and `tmpdir`, over anything given here. Secret: never logged.
    pub environment: Vec<(String, String)>,
    /// Written to the job's stdin, which is then closed; without it stdin is /dev/null. Secret.
    pub stdin: Option<String>,
    /// Working directory; the user's home when absent.
    pub working_directory: Option<PathBuf>,
    /// Output files, created (owned by the job's user) if missing, appended to if present.
    pub stdout_file: PathBuf,
    pub stderr_file: PathBuf,
    /// The job's private TMPDIR: created mode 0700 owned by the user before the job starts;
    /// the supervisor empties it after the job ends and the plugin removes the directory.
    pub tmpdir: PathBuf,
    /// `cpuCount` (informational), `cpuTime` seconds → RLIMIT_CPU, `memory` MB → RLIMIT_AS,
    /// `memorySwap` (informational). Unknown kinds are refused by the plugin before this point.
    pub resource_limits: Vec<(String, String)>,
    /// Bound into a new mount namespace (when `namespace`).
    pub mounts: Vec<BindMount>,
    /// Hidden from the job by bind-mounting an empty directory over them (when `namespace`).
    pub masked_paths: Vec<PathBuf>,
    /// Whether to create a new mount namespace: only when the plugin found at start-up that it
    /// has the privilege to (and said so once in its log when it has not).
    pub namespace: bool,
    /// Whether the job may gain privileges through exec (setuid programs, file capabilities):
    /// `allow-new-privileges` in the plugin's config. Off unless said, so that a spec written
    /// without it runs the job with `no_new_privs`.
    #[serde(default)]
    pub allow_new_privileges: bool,
}

/// The job's process exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub supervisor_pid: i32,
    /// Start time of the supervisor (field 22 of `/proc/<pid>/stat`, clock ticks since boot):
    /// with the pid it identifies the process, so a reused pid is never mistaken for it.
    pub supervisor_start_ticks: u64,
    /// The job's process; also its process group id (the job leads its own group).
    pub pid: i32,
    pub pid_start_ticks: u64,
    /// RFC 3339 UTC.
    pub started_at: String,
}

/// The job's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// The exit code, or 128+N when the process died of signal N (DESIGN §3).
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub finished_at: String,
}

/// The supervisor could not start the job; nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupFailed {
    /// What went wrong, for the job's statusMessage (no secrets).
    pub message: String,
}

/// Writes `value` as JSON to `dir/name` atomically (temporary file, then rename).
/// Files are created mode 0600: `spec.json` carries the job's environment and stdin (secrets).
pub fn write_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads `dir/name` if it exists.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> std::io::Result<Option<T>> {
    match std::fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// or None if there is no such process.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_ticks` is still there (and not a zombie).
pub fn process_alive(pid: i32, start_ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next();
    let start = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
    state != Some("Z") && start == Some(start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_identified_by_start_time() {
        let me = std::process::id() as i32;
        let t = process_start_ticks(me).expect("our own /proc entry");
        assert!(process_alive(me, t));
        assert!(!process_alive(me, t + 1), "another start time is another process");
    }

    #[test]
    fn files_round_trip_atomically() {
        let d = tempfile::tempdir().unwrap();
        let e = Exited {
            exit_code: 137,
            signal: Some(9),
            finished_at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(read_json::<Exited>(d.path(), EXIT_FILE).unwrap(), None);
        write_atomic(d.path(), EXIT_FILE, &e).unwrap();
        assert_eq!(read_json::<Exited>(d.path(), EXIT_FILE).unwrap(), Some(e));
    }
}
