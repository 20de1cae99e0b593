//! Running the Slurm commands: each with a deadline, its output captured (never our stdout,
//! which carries the protocol), `SLURM_CONF` set when configured, and, for the commands a user
//! must be the author of (`sbatch`, `scancel`), as that user: Slurm authenticates the caller
//! through munge by its uid and applies its own permissions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::parse::{self, SlurmJob};

/// A user from the user database, for running commands as them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// Looks up `name` (may block on NSS). `Ok(None)`: no such user.
pub fn lookup_user(name: &str) -> Result<Option<UserInfo>, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Some(UserInfo {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot look up user {name}: {e}")),
    }
}

/// Why a Slurm command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlurmError {
    /// It ran and refused: Slurm's own message.
    #[error("{0}")]
    Refused(String),
    /// It could not run or did not finish in time.
    #[error("{0}")]
    Unavailable(String),
}

/// How to run the Slurm commands.
#[derive(Debug, Clone)]
pub struct Slurm {
    pub bin: Option<PathBuf>,
    pub conf: Option<PathBuf>,
    pub timeout: Duration,
}

/// Who a command runs as.
pub enum As<'a> {
    /// The plugin's own account.
    Plugin,
    /// A user, with a clean environment of their own.
    User(&'a UserInfo),
}

impl Slurm {
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Runs `name args`, feeding `stdin`; returns its stdout, or Slurm's message.
    pub async fn run(
        &self,
        name: &str,
        args: &[String],
        who: As<'_>,
        stdin: Option<&str>,
        cwd: Option<&Path>,
    ) -> Result<String, SlurmError> {
        let mut c = tokio::process::Command::new(self.program(name));
        c.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let As::User(u) = who {
            // Only what the job should see of the plugin's environment: sbatch exports it.
            c.env_clear()
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name)
                .env("SHELL", &u.shell)
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .uid(u.uid)
                .gid(u.gid);
            for keep in ["LANG", "TZ"] {
                if let Some(v) = std::env::var_os(keep) {
                    c.env(keep, v);
                }
            }
            if self.conf.is_none() {
                if let Some(v) = std::env::var_os("SLURM_CONF") {
                    c.env("SLURM_CONF", v);
                }
            }
        }
        if let Some(conf) = &self.conf {
            c.env("SLURM_CONF", conf);
        }
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let what = format!("{name} {}", args.first().map(String::as_str).unwrap_or(""));
        let run = async {
            let mut child = c.spawn().map_err(|e| {
                SlurmError::Unavailable(format!("cannot run {}: {e}", self.program(name).display()))
            })?;
            if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
                w.write_all(text.as_bytes())
                    .await
                    .map_err(|e| SlurmError::Unavailable(format!("cannot write to {name}: {e}")))?;
                drop(w);
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| SlurmError::Unavailable(format!("{name} failed: {e}")))
        };
        let out = tokio::time::timeout(self.timeout, run).await.map_err(|_| {
            SlurmError::Unavailable(format!("{what} did not answer within {:?}", self.timeout))
        })??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let msg = if msg.is_empty() {
            format!("{name} failed ({})", out.status)
        } else {
            msg
        };
        // Slurm's commands say so when they cannot reach the controller.
        let down = [
            "Unable to contact",
            "Socket timed out",
            "Connection refused",
            "Zero Bytes were transmitted",
        ];
        if down.iter().any(|d| msg.contains(d)) {
            Err(SlurmError::Unavailable(msg))
        } else {
            Err(SlurmError::Refused(msg))
        }
    }

    /// Every job the controller knows (all users, all states until `MinJobAge`).
    pub async fn squeue(&self) -> Result<Vec<SlurmJob>, SlurmError> {
        let out = self
            .run("squeue", &["--json".to_string()], As::Plugin, None, None)
            .await?;
        parse::squeue_json(&out).map_err(SlurmError::Unavailable)
    }

    /// One job from the controller; `None` once it forgot the job.
    pub async fn show_job(&self, id: &str) -> Result<Option<SlurmJob>, SlurmError> {
        let args = ["-o", "show", "job", id].map(String::from);
        match self.run("scontrol", &args, As::Plugin, None, None).await {
            Ok(out) => Ok(out.lines().find_map(parse::scontrol_job).filter(|j| j.id == id)),
            Err(SlurmError::Refused(m)) if m.contains("Invalid job id") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One job from the job completion file (`sacct -c`), for jobs the controller forgot.
    pub async fn completed_job(&self, id: &str) -> Result<Option<SlurmJob>, SlurmError> {
        let args = [
            "-c",
            "--parsable2",
            "--noheader",
            "-o",
            parse::SACCT_FIELDS,
            "-j",
            id,
        ]
        .map(String::from);
        let out = self.run("sacct", &args, As::Plugin, None, None).await?;
        Ok(parse::sacct_rows(&out).into_iter().rfind(|j| j.id == id))
    }

    /// A job wherever Slurm still has it: the controller, else the job completion file.
    pub async fn lookup(&self, id: &str) -> Result<Option<SlurmJob>, SlurmError> {
        if !id.chars().all(|c| c.is_ascii_digit()) || id.is_empty() {
            return Ok(None);
        }
        if let Some(j) = self.show_job(id).await? {
            return Ok(Some(j));
        }
        match self.completed_job(id).await {
            Ok(j) => Ok(j),
            // No job completion plugin configured: nothing more to know.
            Err(SlurmError::Refused(m)) => {
                tracing::debug!(job = id, message = %m, "sacct -c cannot tell");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// What the running steps of job `id` use now (`sstat`, which asks the slurmd of each step;
    /// its figures are as fresh as `JobAcctGatherFrequency`). `None` while no step runs.
    pub async fn step_usage(&self, id: &str) -> Result<Option<parse::Usage>, SlurmError> {
        let args = [
            "--noheader",
            "--parsable2",
            "--allsteps",
            "--format=JobID,TRESUsageInTot",
            "-j",
            id,
        ]
        .map(String::from);
        let out = self.run("sstat", &args, As::Plugin, None, None).await?;
        Ok(parse::sstat_usage(&out))
    }

    /// What an ended job used, from accounting storage (`sacct`). Refused when Slurm keeps no
    /// accounting (`AccountingStorageType=accounting_storage/none`); `None` without a record.
    pub async fn accounted_usage(&self, id: &str) -> Result<Option<parse::Usage>, SlurmError> {
        let args = [
            "--noheader",
            "--parsable2",
            "--format=JobID,TotalCPU,MaxRSS,MaxVMSize",
            "-j",
            id,
        ]
        .map(String::from);
        let out = self.run("sacct", &args, As::Plugin, None, None).await?;
        Ok(parse::sacct_usage(&out, id))
    }

    /// Checks that the commands run and the controller answers.
    pub async fn check(&self) -> Result<(), SlurmError> {
        let args = ["-h", "-o", "%P"].map(String::from);
        self.run("sinfo", &args, As::Plugin, None, None).await.map(|_| ())
    }

    /// `scontrol -o show <what>` as key/value maps.
    pub async fn show(&self, what: &str) -> Result<Vec<Vec<(String, String)>>, SlurmError> {
        let args = ["-o", "show", what].map(String::from);
        let out = self.run("scontrol", &args, As::Plugin, None, None).await?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse::key_values(l.trim()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_report_failures_with_their_message() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("scancel");
        std::fs::write(&script, "#!/bin/sh\necho \"scancel: error: Kill job error on job id $1: Access/permission denied\" >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Slurm {
            bin: Some(d.path().to_path_buf()),
            conf: None,
            timeout: Duration::from_secs(5),
        };
        let e = s
            .run("scancel", &["7".into()], As::Plugin, None, None)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            SlurmError::Refused(
                "scancel: error: Kill job error on job id 7: Access/permission denied".into()
            )
        );
        let e = s.run("squeue", &[], As::Plugin, None, None).await.unwrap_err();
        assert!(matches!(e, SlurmError::Unavailable(m) if m.contains("cannot run")));
        assert_eq!(s.lookup("not-a-number").await.unwrap(), None);
    }
}
