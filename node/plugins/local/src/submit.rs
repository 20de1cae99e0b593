//! SubmitJob: check the job, write its record and launch spec, start its supervisor, answer
//! Pending, and hand the job to a follower task.
//!
//! The record is on disk before the supervisor exists and the supervisor exists before the
//! launcher hears of the job, so a launcher that finds the job again by its tags after a crash
//! finds every job that may be running (DESIGN §1, at-most-once launch).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{Job, JobStateResponse, SubmitJobRequest};

use crate::config::Config;
use crate::error::RequestError;
use crate::host::{Identity, UserInfo};
use crate::record::{now, JobRecord, Status, Transition};
use crate::spec::{BindMount, LaunchSpec, SPEC_FILE, SUPERVISOR_LOG};
use crate::state::{LocalPlugin, SupervisorCommand};

/// The parts of a job that the checks turn into launch settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub resource_limits: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
    pub working_directory: Option<PathBuf>,
}

fn invalid(msg: impl Into<String>) -> RequestError {
    RequestError::Invalid(msg.into())
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Checks what can be checked without the user database.
pub fn check_job(job: &Job, cfg: &Config, namespace: bool) -> Result<Checked, RequestError> {
    match (given(&job.command), given(&job.exe)) {
        (Some(_), Some(_)) => return Err(invalid("a job has either a command or an exe, not both")),
        (None, None) => return Err(invalid("a job needs a command or an exe")),
        _ => {}
    }
    if let Some(c) = &job.container {
        if !c.is_null() {
            return Err(invalid("the Local plugin does not run containers"));
        }
    }
    if let Some(c) = job.placement_constraints.first() {
        return Err(invalid(format!(
            "placement constraint {} is not offered by the Local plugin",
            c.name
        )));
    }
    if let Some(q) = job.queues.iter().find(|q| !cfg.queues.contains(q)) {
        return Err(invalid(format!(
            "queue {q} does not exist (queues: {})",
            cfg.queues.join(", ")
        )));
    }
    let mut resource_limits = Vec::new();
    for l in &job.resource_limits {
        let max = match l.kind.as_str() {
            "cpuCount" => cfg.max_cpu_count.map(|m| (m, "max-cpu-count")),
            "cpuTime" => cfg.max_cpu_time_seconds.map(|m| (m, "max-cpu-time-seconds")),
            "memory" => cfg.max_memory_mb.map(|m| (m, "max-memory-mb")),
            "memorySwap" => None,
            other => {
                return Err(invalid(format!(
                    "resource limit {other} is not supported (cpuCount, cpuTime, memory, memorySwap)"
                )))
            }
        };
        let value: f64 = match l.value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => {
                return Err(invalid(format!(
                    "resource limit {} has a bad value {:?}",
                    l.kind, l.value
                )))
            }
        };
        if let Some((max, key)) = max {
            if value > max {
                return Err(invalid(format!(
                    "resource limit {} of {} is above the maximum of {max} ({key})",
                    l.kind, l.value
                )));
            }
        }
        resource_limits.push((l.kind.clone(), l.value.trim().to_string()));
    }
    let mut mounts = Vec::new();
    for m in &job.mounts {
        if m.mount_source.kind != "host" {
            return Err(invalid(format!(
                "mount type {} is not supported by the Local plugin",
                m.mount_source.kind
            )));
        }
        let Some(source) = m
            .mount_source
            .source
            .get("path")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
        else {
            return Err(invalid(format!(
                "host mount on {} has no source.path",
                m.mount_path
            )));
        };
        let (source, target) = (PathBuf::from(source), PathBuf::from(&m.mount_path));
        // The supervisor refuses these too; said here, the user hears it at submit.
        let plain =
            |p: &Path| p.is_absolute() && !p.components().any(|c| c == std::path::Component::ParentDir);
        if !plain(&source) || !plain(&target) {
            return Err(invalid(format!(
                "mount paths must be absolute, without '..' ({} on {})",
                source.display(),
                target.display()
            )));
        }
        mounts.push(BindMount {
            source,
            target,
            read_only: m.read_only,
        });
    }
    if !mounts.is_empty() && !namespace {
        return Err(invalid(
            "mounts need a mount namespace, which this plugin cannot create on this host",
        ));
    }
    let working_directory = match given(&job.working_directory) {
        Some(w) if Path::new(w).is_absolute() => Some(PathBuf::from(w)),
        Some(w) => {
            return Err(invalid(format!(
                "working directory {w:?} is not an absolute path"
            )))
        }
        None => None,
    };
    Ok(Checked {
        resource_limits,
        mounts,
        working_directory,
    })
}

/// The account a job runs as: the job's `user`, else the user the request acts for
/// (`acting_for`: `username`, else `requestUsername`, unless `*`), else the plugin's own. An
/// unprivileged plugin runs everything as itself.
pub fn job_user(job: &Job, acting_for: Option<&str>, ident: &Identity) -> Result<String, RequestError> {
    let user = given(&job.user).or(acting_for).unwrap_or(&ident.user).to_string();
    if !ident.switch_user && user != ident.user {
        return Err(invalid(format!(
            "this plugin runs unprivileged as {} and cannot start jobs as {user}",
            ident.user
        )));
    }
    Ok(user)
}

/// A new job id: 12 hex digits of milliseconds since 1970 then 8 random ones, so ids sort by
/// submission and are short enough to read.
pub fn new_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let r = uuid::Uuid::new_v4().as_u128() as u32;
    format!("{:012x}{r:08x}", ms & 0xffff_ffff_ffff)
}

/// Where an output file goes: the job's path (relative ones from the working directory or home),
/// else `default`.
pub fn output_path(given_path: Option<&str>, wd: Option<&Path>, home: &Path, default: PathBuf) -> PathBuf {
    match given_path.filter(|p| !p.is_empty()) {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => wd.unwrap_or(home).join(p),
        None => default,
    }
}

/// Creates `output/<user>/` owned by the user, mode 0700, if missing.
fn ensure_output_dir(dir: &Path, user: &UserInfo) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            nix::unistd::chown(
                dir,
                Some(nix::unistd::Uid::from_raw(user.uid)),
                Some(nix::unistd::Gid::from_raw(user.gid)),
            )
            .map_err(std::io::Error::from)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts `<exe> supervise <dir>` detached from our stdio, its stderr in `supervisor.log`.
pub fn spawn_supervisor(cmd: &SupervisorCommand, dir: &Path) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(SUPERVISOR_LOG))?;
    let mut c = match &cmd.wrapper {
        Some(w) => {
            let mut c = tokio::process::Command::new(w);
            c.arg(&cmd.exe);
            c
        }
        None => tokio::process::Command::new(&cmd.exe),
    };
    c.arg("supervise")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        // The job must outlive the plugin: a restarted plugin finds it again.
        .kill_on_drop(false);
    c.spawn()
}

/// Handles SubmitJob; the reply (JobState) is sent here, before the job's follower starts.
pub async fn submit(
    p: &Arc<LocalPlugin>,
    request_id: u64,
    req: SubmitJobRequest,
) -> Result<(), RequestError> {
    let job = req.job;
    let checked = check_job(&job, &p.cfg, p.namespace)?;
    let acting = launcher_plugin_api::request::acting_for(&req.username, &req.request_username);
    let user_name = job_user(&job, acting, &p.ident)?;
    let group = given(&job.group).map(str::to_string);
    let lookup_name = user_name.clone();
    let user = tokio::task::spawn_blocking(move || -> Result<UserInfo, RequestError> {
        let u = crate::host::lookup_user(&lookup_name)
            .map_err(RequestError::Internal)?
            .ok_or_else(|| invalid(format!("user {lookup_name} does not exist")))?;
        if let Some(g) = &group {
            match crate::host::user_in_group(&u, g).map_err(RequestError::Internal)? {
                None => return Err(invalid(format!("group {g} does not exist"))),
                Some(false) => {
                    return Err(invalid(format!(
                        "user {lookup_name} is not a member of group {g}"
                    )))
                }
                Some(true) => {}
            }
        }
        Ok(u)
    })
    .await
    .map_err(|e| RequestError::Internal(e.to_string()))??;
    if user.uid == 0 && !p.cfg.allow_root_jobs {
        return Err(invalid(format!(
            "jobs may not run as {} (uid 0): allow-root-jobs is off",
            user.name
        )));
    }

    // A fresh directory; create_dir fails rather than reuse one.
    let (id, dir) = loop {
        let id = new_id();
        let dir = p.job_dir(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => break (id, dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(RequestError::io(format!("cannot create {}", dir.display()), e)),
        }
    };
    match prepare(p, &id, &dir, job, checked, &user).await {
        Ok((rec, spec)) => {
            launch(p, request_id, id, dir, rec, spec).await;
            Ok(())
        }
        Err(e) => {
            // Nothing was started: leave no trace.
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// Resolves the output files and writes the launch spec and the Pending record.
async fn prepare(
    p: &Arc<LocalPlugin>,
    id: &str,
    dir: &Path,
    job: Job,
    checked: Checked,
    user: &UserInfo,
) -> Result<(JobRecord, LaunchSpec), RequestError> {
    let wd = checked.working_directory.as_deref();
    let default_out = p.layout.output_dir(&user.name);
    let stdout_path = output_path(
        job.stdout_file.as_deref(),
        wd,
        &user.home,
        default_out.join(format!("{id}.stdout")),
    );
    let stderr_path = output_path(
        job.stderr_file.as_deref(),
        wd,
        &user.home,
        default_out.join(format!("{id}.stderr")),
    );
    if stdout_path.starts_with(&default_out) || stderr_path.starts_with(&default_out) {
        ensure_output_dir(&default_out, user)
            .map_err(|e| RequestError::io(format!("cannot create {}", default_out.display()), e))?;
    }

    let spec = LaunchSpec {
        job_id: id.to_string(),
        user: user.name.clone(),
        switch_user: p.ident.switch_user,
        allow_root: p.cfg.allow_root_jobs,
        command: given(&job.command).map(str::to_string),
        exe: given(&job.exe).map(str::to_string),
        args: job.args.clone(),
        environment: job
            .environment
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        stdin: job.stdin.clone(),
        working_directory: checked.working_directory.clone(),
        stdout_file: stdout_path.clone(),
        stderr_file: stderr_path.clone(),
        tmpdir: p.layout.tmp_dir(id),
        resource_limits: checked.resource_limits,
        mounts: checked.mounts,
        masked_paths: p.cfg.masked_paths.clone(),
        namespace: p.namespace,
        allow_new_privileges: p.cfg.allow_new_privileges,
    };
    let t = now();
    let rec = JobRecord {
        job: Job {
            id: Some(id.to_string()),
            user: Some(user.name.clone()),
            host: Some(p.hostname.clone()),
            status: Some(Status::Pending.as_str().to_string()),
            status_message: None,
            status_code: None,
            pid: None,
            exit_code: None,
            submission_time: Some(t.clone()),
            last_update_time: Some(t),
            ..job
        },
        stdout_path,
        stderr_path,
        uid: Some(user.uid),
        supervisor_pid: None,
        supervisor_start_ticks: None,
        pid_start_ticks: None,
        end_request: None,
    };
    let (d, s, r) = (dir.to_path_buf(), spec.clone(), rec.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        crate::files::write_state(&d, SPEC_FILE, &s)?;
        crate::files::write_state(&d, crate::state::JOB_FILE, &r)
    })
    .await
    .map_err(|e| RequestError::Internal(e.to_string()))?
    .map_err(|e| RequestError::io(format!("cannot write the state of job {id}"), e))?;
    Ok((rec, spec))
}

/// Starts the supervisor of a prepared job, adds the job to the table, answers, and follows it.
async fn launch(
    p: &Arc<LocalPlugin>,
    request_id: u64,
    id: String,
    dir: PathBuf,
    mut rec: JobRecord,
    spec: LaunchSpec,
) {
    let child = match spawn_supervisor(&p.supervisor, &dir) {
        Ok(c) => {
            let pid = c.id().map(|x| x as i32);
            rec.supervisor_pid = pid;
            rec.supervisor_start_ticks = pid.and_then(crate::spec::process_start_ticks);
            Some(c)
        }
        Err(e) => {
            tracing::error!(job_id = %id, error = %e, exe = %p.supervisor.exe.display(), "cannot start the job's supervisor");
            let tr = Transition::new(
                Status::Failed,
                format!("the job's supervisor could not be started: {e}"),
            );
            rec.job.status = Some(tr.status.as_str().into());
            rec.job.status_message = tr.message;
            None
        }
    };
    tracing::info!(job_id = %id, user = %spec.user, supervisor_pid = ?rec.supervisor_pid, "job submitted");
    p.insert(rec.clone()).await;
    p.out
        .send(
            ResponseType::JobState,
            request_id,
            &JobStateResponse { jobs: vec![rec.job] },
        )
        .await;
    if let Some(child) = child {
        let p = p.clone();
        tokio::spawn(async move { crate::follow::follow_child(p, id, child).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use launcher_plugin_api::messages::{Mount, MountSource, NameValue, ResourceLimit};

    fn cfg() -> Config {
        let mut c = crate::config::load(
            crate::config::Options::new(crate::config::PLUGIN_NAME),
            Path::new("/nonexistent-config-dir"),
        )
        .unwrap();
        c.max_cpu_count = Some(4.0);
        c.max_memory_mb = Some(1024.0);
        c
    }

    fn job() -> Job {
        Job {
            name: "j".into(),
            command: Some("echo hi".into()),
            ..Job::default()
        }
    }

    fn err(job: &Job) -> String {
        match check_job(job, &cfg(), true) {
            Err(RequestError::Invalid(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn jobs_need_exactly_one_of_command_and_exe() {
        assert!(check_job(&job(), &cfg(), true).is_ok());
        assert!(err(&Job {
            exe: Some("/bin/true".into()),
            ..job()
        })
        .contains("not both"));
        assert!(err(&Job {
            command: None,
            ..job()
        })
        .contains("needs a command or an exe"));
        assert!(check_job(
            &Job {
                command: None,
                exe: Some("/bin/true".into()),
                ..job()
            },
            &cfg(),
            true
        )
        .is_ok());
    }

    #[test]
    fn limits_are_checked_against_the_configured_maximum() {
        let lim = |k: &str, v: &str| Job {
            resource_limits: vec![ResourceLimit {
                kind: k.into(),
                value: v.into(),
            }],
            ..job()
        };
        assert_eq!(
            check_job(&lim("cpuCount", "4"), &cfg(), true)
                .unwrap()
                .resource_limits,
            vec![("cpuCount".to_string(), "4".to_string())]
        );
        let m = err(&lim("cpuCount", "8"));
        assert!(
            m.contains("cpuCount") && m.contains("max-cpu-count") && m.contains('4'),
            "{m}"
        );
        assert!(err(&lim("memory", "2048")).contains("max-memory-mb"));
        assert!(
            check_job(&lim("cpuTime", "100000"), &cfg(), true).is_ok(),
            "no maximum configured"
        );
        assert!(err(&lim("gpus", "1")).contains("gpus is not supported"));
        assert!(err(&lim("memory", "lots")).contains("bad value"));
    }

    #[test]
    fn only_host_mounts_with_a_path() {
        let mount = |kind: &str, source: serde_json::Value| Job {
            mounts: vec![Mount {
                mount_path: "/data".into(),
                read_only: true,
                mount_source: MountSource {
                    kind: kind.into(),
                    source,
                },
            }],
            ..job()
        };
        let ok = check_job(
            &mount("host", serde_json::json!({"path": "/srv/data"})),
            &cfg(),
            true,
        )
        .unwrap();
        assert_eq!(
            ok.mounts,
            vec![BindMount {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true
            }]
        );
        assert_eq!(
            err(&mount("nfs", serde_json::json!({"host": "h", "path": "/x"}))),
            "mount type nfs is not supported by the Local plugin"
        );
        assert!(err(&mount("host", serde_json::json!({}))).contains("no source.path"));
        assert!(err(&mount("host", serde_json::json!({"path": "/srv/../etc"})))
            .starts_with("mount paths must be absolute, without '..'"));
        assert!(err(&mount("host", serde_json::json!({"path": "srv"})))
            .starts_with("mount paths must be absolute"));
        let no_ns = check_job(&mount("host", serde_json::json!({"path": "/srv"})), &cfg(), false);
        assert!(matches!(no_ns, Err(RequestError::Invalid(m)) if m.contains("mount namespace")));
    }

    #[test]
    fn other_checks() {
        assert!(err(&Job {
            working_directory: Some("rel/dir".into()),
            ..job()
        })
        .contains("not an absolute path"));
        assert!(err(&Job {
            queues: vec!["gpu".into()],
            ..job()
        })
        .contains("queue gpu"));
        assert!(check_job(
            &Job {
                queues: vec!["default".into()],
                ..job()
            },
            &cfg(),
            true
        )
        .is_ok());
        assert!(err(&Job {
            container: Some(serde_json::json!({"image": "x"})),
            ..job()
        })
        .contains("containers"));
        let pc = Job {
            placement_constraints: vec![NameValue {
                name: "rack".into(),
                value: "1".into(),
            }],
            ..job()
        };
        assert!(err(&pc).contains("placement constraint rack"));
    }

    #[test]
    fn the_job_user_and_the_unprivileged_rule() {
        let root = Identity {
            user: "root".into(),
            uid: 0,
            switch_user: true,
        };
        let alone = Identity {
            user: "svc".into(),
            uid: 1000,
            switch_user: false,
        };
        assert_eq!(
            job_user(
                &Job {
                    user: Some("alice".into()),
                    ..job()
                },
                Some("bob"),
                &root
            )
            .unwrap(),
            "alice"
        );
        assert_eq!(job_user(&job(), Some("bob"), &root).unwrap(), "bob");
        assert_eq!(job_user(&job(), None, &root).unwrap(), "root");
        assert_eq!(job_user(&job(), None, &alone).unwrap(), "svc");
        assert_eq!(job_user(&job(), Some("svc"), &alone).unwrap(), "svc");
        let e = job_user(&job(), Some("bob"), &alone).unwrap_err();
        assert_eq!(
            e,
            RequestError::Invalid("this plugin runs unprivileged as svc and cannot start jobs as bob".into())
        );
    }

    #[test]
    fn ids_are_short_unique_and_ordered() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert_eq!((a.len(), b.len()), (20, 20));
        assert!(a < b && a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn output_paths() {
        let home = Path::new("/home/a");
        let d = PathBuf::from("/s/output/a/1.stdout");
        assert_eq!(output_path(None, None, home, d.clone()), d);
        assert_eq!(output_path(Some(""), None, home, d.clone()), d);
        assert_eq!(
            output_path(Some("/x/o"), None, home, d.clone()),
            PathBuf::from("/x/o")
        );
        assert_eq!(
            output_path(Some("o.txt"), None, home, d.clone()),
            PathBuf::from("/home/a/o.txt")
        );
        assert_eq!(
            output_path(Some("o.txt"), Some(Path::new("/w")), home, d),
            PathBuf::from("/w/o.txt")
        );
    }
}
