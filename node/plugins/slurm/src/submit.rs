//! SubmitJob: check the job, build its batch script and `sbatch` options, submit as the job's
//! user, answer Pending with Slurm's job id.
//!
//! The tags (with `launcher-job:<id>`) go into the job's comment before Slurm has the job, so
//! a launcher that lost the answer finds the job again by its tag (DESIGN §1).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{Job, JobStateResponse, SubmitJobRequest};

use crate::error::RequestError;
use crate::parse::{self, SlurmJob};
use crate::slurm::{As, SlurmError, UserInfo};
use crate::state::SlurmPlugin;

fn invalid(msg: impl Into<String>) -> RequestError {
    RequestError::Invalid(msg.into())
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `sbatch` options and the script for a job, once its user and paths are settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub args: Vec<String>,
    pub script: String,
}

/// `H:MM:SS` of a number of seconds, rounded up to whole seconds.
fn time_limit(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Builds the batch job: checks what Slurm cannot do for a launcher job, maps the rest to
/// `sbatch` options (queues → partition, cpuCount → `--cpus-per-task`, memory → `--mem`,
/// cpuTime → `--time`), and writes a script that sets the environment and runs the command.
pub fn batch(
    job: &Job,
    cluster: &str,
    stdout: &str,
    stderr: &str,
    workdir: &Path,
) -> Result<Batch, RequestError> {
    let program = match (given(&job.command), given(&job.exe)) {
        (Some(_), Some(_)) => return Err(invalid("a job has either a command or an exe, not both")),
        (None, None) => return Err(invalid("a job needs a command or an exe")),
        (Some(c), None) => format!("/bin/sh -c {}", sh_quote(c)),
        (None, Some(e)) => {
            let mut v = vec![sh_quote(e)];
            v.extend(job.args.iter().map(|a| sh_quote(a)));
            v.join(" ")
        }
    };
    if job.container.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(invalid("the Slurm plugin does not run containers"));
    }
    if let Some(m) = job.mounts.first() {
        return Err(invalid(format!(
            "mounts are not offered by the Slurm plugin (mount on {}): Slurm jobs see the compute node's file systems",
            m.mount_path
        )));
    }
    if let Some(c) = job.placement_constraints.first() {
        return Err(invalid(format!(
            "placement constraint {} is not offered by the Slurm plugin",
            c.name
        )));
    }
    let mut args = vec![
        "--parsable".to_string(),
        format!(
            "--job-name={}",
            if job.name.is_empty() {
                "launcher-job"
            } else {
                &job.name
            }
        ),
        format!("--comment={}", parse::make_comment(cluster, &job.tags)),
        format!("--output={stdout}"),
        format!("--error={stderr}"),
        format!("--chdir={}", workdir.display()),
    ];
    if !job.queues.is_empty() {
        args.push(format!("--partition={}", job.queues.join(",")));
    }
    for l in &job.resource_limits {
        let v: f64 = match l.value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => v,
            _ => {
                return Err(invalid(format!(
                    "resource limit {} has a bad value {:?}",
                    l.kind, l.value
                )))
            }
        };
        match l.kind.as_str() {
            "cpuCount" => args.push(format!("--cpus-per-task={}", v.ceil() as u64)),
            "memory" => args.push(format!("--mem={}M", v.ceil() as u64)),
            "cpuTime" => args.push(format!("--time={}", time_limit(v))),
            other => {
                return Err(invalid(format!(
                    "resource limit {other} is not supported by the Slurm plugin (cpuCount, memory, cpuTime)"
                )))
            }
        }
    }
    let mut script = String::from("#!/bin/sh\n# Submitted through the launcher's Slurm plugin.\n");
    for e in &job.environment {
        let ok = !e.name.is_empty()
            && !e.name.starts_with(|c: char| c.is_ascii_digit())
            && e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(format!(
                "environment variable name {:?} is not valid",
                e.name
            )));
        }
        script.push_str(&format!("export {}={}\n", e.name, sh_quote(&e.value)));
    }
    match given(&job.stdin) {
        Some(input) => script.push_str(&format!("printf '%s' {} | exec {program}\n", sh_quote(input))),
        None => script.push_str(&format!("exec {program} </dev/null\n")),
    }
    Ok(Batch { args, script })
}

/// The account a job runs as: the job's `user`, else the user the request acts for
/// (`username`, else `requestUsername`, unless `*`), else the plugin's own. Root only with
/// `allow-root-jobs`; an unprivileged plugin only as itself.
fn job_user(p: &Arc<SlurmPlugin>, job: &Job, acting_for: Option<&str>) -> Result<String, RequestError> {
    let user = given(&job.user).or(acting_for).unwrap_or(&p.own_user).to_string();
    if !p.switch_user && user != p.own_user {
        return Err(invalid(format!(
            "this plugin runs unprivileged as {} and cannot submit jobs as {user}",
            p.own_user
        )));
    }
    Ok(user)
}

/// Where an output file goes: the job's path (relative to the working directory) or `default`.
fn output_path(given_path: Option<&str>, wd: &Path, default: &Path) -> String {
    match given_path.filter(|p| !p.is_empty()) {
        Some(p) if Path::new(p).is_absolute() => p.to_string(),
        Some(p) => wd.join(p).display().to_string(),
        None => default.display().to_string(),
    }
}

/// Creates `<scratch>/output/<user>/`, owned by the user, mode 0700 (the scratch path and
/// `output/` are passable by everyone).
fn ensure_output_dir(scratch: &Path, user: &UserInfo, chown: bool) -> std::io::Result<PathBuf> {
    let out = scratch.join("output");
    std::fs::create_dir_all(&out)?;
    for d in [scratch, out.as_path()] {
        let mode = std::fs::metadata(d)?.permissions().mode() & 0o7777;
        if mode & 0o111 != 0o111 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o111))?;
        }
    }
    let dir = out.join(&user.name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            if chown {
                nix::unistd::chown(
                    &dir,
                    Some(nix::unistd::Uid::from_raw(user.uid)),
                    Some(nix::unistd::Gid::from_raw(user.gid)),
                )
                .map_err(std::io::Error::from)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

/// Handles SubmitJob.
pub async fn submit(p: &Arc<SlurmPlugin>, rid: u64, req: SubmitJobRequest) -> Result<(), RequestError> {
    let job = req.job;
    let acting = launcher_plugin_api::request::acting_for(&req.username, &req.request_username);
    let name = job_user(p, &job, acting)?;
    let lookup = name.clone();
    let group = given(&job.group).map(str::to_string);
    let mut user = tokio::task::spawn_blocking(move || crate::slurm::lookup_user(&lookup))
        .await
        .map_err(|e| RequestError::Internal(e.to_string()))?
        .map_err(RequestError::Internal)?
        .ok_or_else(|| invalid(format!("user {name} does not exist")))?;
    if user.uid == 0 && !p.cfg.allow_root_jobs {
        return Err(invalid(
            "jobs may not run as root (set allow-root-jobs=1 in the plugin's configuration to allow it)",
        ));
    }
    if let Some(g) = group {
        let grp = nix::unistd::Group::from_name(&g)
            .map_err(|e| RequestError::Internal(format!("cannot look up group {g}: {e}")))?
            .ok_or_else(|| invalid(format!("group {g} does not exist")))?;
        if grp.gid.as_raw() != user.gid && !grp.mem.contains(&user.name) {
            return Err(invalid(format!(
                "user {} is not a member of group {g}",
                user.name
            )));
        }
        user.gid = grp.gid.as_raw();
    }
    let workdir = match given(&job.working_directory) {
        Some(w) if Path::new(w).is_absolute() => PathBuf::from(w),
        Some(w) => {
            return Err(invalid(format!(
                "working directory {w:?} is not an absolute path"
            )))
        }
        None => user.home.clone(),
    };
    let (scratch, u2, chown) = (p.cfg.scratch_path.clone(), user.clone(), p.switch_user);
    let out_dir = tokio::task::spawn_blocking(move || ensure_output_dir(&scratch, &u2, chown))
        .await
        .map_err(|e| RequestError::Internal(e.to_string()))?
        .map_err(|e| RequestError::Internal(format!("cannot prepare the output directory: {e}")))?;
    let stdout = output_path(given(&job.stdout_file), &workdir, &out_dir.join("%j.stdout"));
    let stderr = output_path(given(&job.stderr_file), &workdir, &out_dir.join("%j.stderr"));
    let cluster = if job.cluster.is_empty() {
        p.cfg.options.plugin_name.clone()
    } else {
        job.cluster.clone()
    };
    let b = batch(&job, &cluster, &stdout, &stderr, &workdir)?;
    let who = if p.switch_user {
        As::User(&user)
    } else {
        As::Plugin
    };
    // sbatch runs from a directory the user can read; Slurm itself uses --chdir.
    let cwd = if workdir.is_dir() {
        workdir.clone()
    } else {
        PathBuf::from("/")
    };
    let out = p
        .slurm
        .run("sbatch", &b.args, who, Some(&b.script), Some(&cwd))
        .await
        .map_err(|e| match e {
            SlurmError::Refused(m) => invalid(format!("sbatch refused the job: {m}")),
            SlurmError::Unavailable(m) => RequestError::Internal(format!("Slurm: {m}")),
        })?;
    // `--parsable` prints `<id>` or `<id>;<cluster>`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(RequestError::Internal(format!(
            "sbatch printed no job id: {out:?}"
        )));
    }
    tracing::info!(job_id = %id, user = %user.name, "submitted to Slurm");
    let sj = SlurmJob {
        id,
        name: job.name.clone(),
        user: user.name.clone(),
        uid: Some(user.uid),
        state: "PENDING".into(),
        submit_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        partition: job.queues.first().cloned().unwrap_or_default(),
        comment: parse::make_comment(&cluster, &job.tags),
        stdout,
        stderr,
        workdir: workdir.display().to_string(),
        ..SlurmJob::default()
    };
    let e = p.add_submitted(sj, cluster, job.tags.clone()).await;
    let mut reply = e.job();
    reply.command = job.command.clone();
    reply.exe = job.exe.clone();
    reply.args = job.args.clone();
    reply.resource_limits = job.resource_limits.clone();
    p.out
        .send(
            ResponseType::JobState,
            rid,
            &JobStateResponse { jobs: vec![reply] },
        )
        .await;
    p.poke.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use launcher_plugin_api::messages::{NameValue, ResourceLimit};

    #[test]
    fn jobs_map_to_sbatch_options_and_a_script() {
        let job = Job {
            name: "my job".into(),
            exe: Some("/bin/echo".into()),
            args: vec!["it's".into(), "two words".into()],
            environment: vec![NameValue {
                name: "GREETING".into(),
                value: "hello 'you'".into(),
            }],
            tags: vec!["launcher-job:0190".into(), "a b".into()],
            queues: vec!["debug".into()],
            resource_limits: vec![
                ResourceLimit {
                    kind: "cpuCount".into(),
                    value: "2".into(),
                },
                ResourceLimit {
                    kind: "memory".into(),
                    value: "512".into(),
                },
                ResourceLimit {
                    kind: "cpuTime".into(),
                    value: "3661".into(),
                },
            ],
            ..Job::default()
        };
        let b = batch(
            &job,
            "Slurm",
            "/o/%j.stdout",
            "/o/%j.stderr",
            Path::new("/home/al"),
        )
        .unwrap();
        assert_eq!(
            b.args,
            [
                "--parsable",
                "--job-name=my job",
                "--comment=rstudio-launcher;cluster=Slurm;tags=launcher-job:0190,a%20b",
                "--output=/o/%j.stdout",
                "--error=/o/%j.stderr",
                "--chdir=/home/al",
                "--partition=debug",
                "--cpus-per-task=2",
                "--mem=512M",
                "--time=1:01:01",
            ]
        );
        assert!(b.script.starts_with("#!/bin/sh\n"));
        assert!(
            b.script.contains("export GREETING='hello '\\''you'\\'''\n"),
            "{}",
            b.script
        );
        assert!(
            b.script
                .ends_with("exec '/bin/echo' 'it'\\''s' 'two words' </dev/null\n"),
            "{}",
            b.script
        );
        let with_stdin = Job {
            command: Some("cat".into()),
            stdin: Some("in put".into()),
            ..Job::default()
        };
        let b = batch(&with_stdin, "S", "/o", "/e", Path::new("/")).unwrap();
        assert!(
            b.script
                .ends_with("printf '%s' 'in put' | exec /bin/sh -c 'cat'\n"),
            "{}",
            b.script
        );
    }

    #[test]
    fn what_slurm_cannot_do_is_refused() {
        let base = Job {
            command: Some("true".into()),
            ..Job::default()
        };
        let refuse = |j: Job| {
            batch(&j, "S", "/o", "/e", Path::new("/"))
                .unwrap_err()
                .to_string()
        };
        assert!(refuse(Job {
            exe: Some("/x".into()),
            ..base.clone()
        })
        .contains("not both"));
        assert!(refuse(Job {
            command: None,
            ..base.clone()
        })
        .contains("needs a command"));
        let swap = Job {
            resource_limits: vec![ResourceLimit {
                kind: "memorySwap".into(),
                value: "1".into(),
            }],
            ..base.clone()
        };
        assert!(refuse(swap).contains("memorySwap is not supported"));
        let bad_env = Job {
            environment: vec![NameValue {
                name: "A-B".into(),
                value: String::new(),
            }],
            ..base.clone()
        };
        assert!(refuse(bad_env).contains("not valid"));
        assert_eq!(time_limit(59.2), "0:01:00");
    }
}
