//! `launcher-node verify-installation`, after the product's `rstudio-launcher
//! verify-installation`: checks what a node needs before it can run jobs, one step at a time,
//! and says for each failure what to fix.
//!
//! It loads the configuration, checks the key and certificate files and their permissions, the
//! data and scratch directories and the filter files, then for every `[cluster]` starts its
//! plugin with the node's own options, bootstraps it, submits a short job as the given user,
//! waits for it to finish and reads its output. Plugins run with a scratch path of their own
//! (`<scratch-path>/verify-installation/<plugin-name>`), so a node running on the same machine
//! never sees the test jobs.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use launcher_plugin_api::envelope::RequestType;
use launcher_plugin_api::messages::{
    self as pm, JobOutputRequest, JobOutputResponse, JobStateResponse, JobStatusResponse, JobStreamRequest,
    OutputType, SubmitJobRequest,
};

use crate::config::Config;
use crate::plugins::{plugin_spec, PluginHost, PluginStream};

/// What the test job prints; seen in its output, the job really ran.
const MARKER: &str = "launcher-verify-installation-ok";

/// The outcome of the checks.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
}

impl Report {
    fn pass(&mut self, out: &mut impl Write, step: &str, detail: impl std::fmt::Display) {
        self.passed += 1;
        let _ = writeln!(out, "PASS  {step}: {detail}");
    }

    fn fail(&mut self, out: &mut impl Write, step: &str, problem: impl std::fmt::Display) {
        self.failed += 1;
        let _ = writeln!(out, "FAIL  {step}: {problem}");
    }

    fn check<T>(
        &mut self,
        out: &mut impl Write,
        step: &str,
        r: Result<T, String>,
        detail: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                self.pass(out, step, detail(&v));
                Some(v)
            }
            Err(e) => {
                self.fail(out, step, e);
                None
            }
        }
    }
}

/// Runs every check, printing one line per step to `out`; `user` runs the test jobs.
pub async fn verify_installation(
    config: &Config,
    user: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> Report {
    let mut r = Report::default();
    let _ = writeln!(
        out,
        "verifying the installation configured in {} (test jobs run as {user})",
        config.dir.join(crate::config::CONFIG_FILE_NAME).display()
    );
    let key_file = &config.server.secure_cookie_key_file;
    r.check(
        out,
        "secure-cookie-key",
        crate::auth::load_key(key_file).map_err(|e| e.to_string()),
        |k| format!("{} ({} bytes, not world-readable)", key_file.display(), k.len()),
    );
    if config.server.enable_ssl {
        for (key, path, private) in [
            ("certificate-file", &config.server.certificate_file, false),
            ("certificate-key-file", &config.server.certificate_key_file, true),
        ] {
            let checked = match path {
                Some(p) => pem_file(p, private),
                None => Err("enable-ssl is on but the key is not set".into()),
            };
            r.check(out, key, checked, |d| d.clone());
        }
    }
    r.check(out, "data-dir", writable_dir(&config.node.data_dir), |d| {
        d.clone()
    });
    r.check(
        out,
        "scratch-path",
        writable_dir(&config.server.scratch_path)
            .and_then(|d| traversable(&config.server.scratch_path).map(|()| d)),
        |d| d.clone(),
    );
    r.check(
        out,
        "filter files",
        crate::filters::FilterFiles::load(&config.dir)
            .map_err(|e| format!("{e}; fix the file and run again")),
        |_| "launcher-mounts, launcher-env and launcher-ports parse (or are absent)".into(),
    );
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => r.pass(
            out,
            "job user",
            format!("{user} (uid {}, home {})", u.uid, u.dir.display()),
        ),
        Ok(None) => r.fail(
            out,
            "job user",
            format!("no user named {user} on this machine; pass --user with an existing user"),
        ),
        Err(e) => r.fail(out, "job user", format!("cannot look {user} up: {e}")),
    }
    if config.clusters.is_empty() {
        r.fail(out, "clusters", "no [cluster] section: this node can run no jobs");
    }
    for cluster in &config.clusters {
        verify_cluster(config, cluster, user, timeout, out, &mut r).await;
    }
    let _ = writeln!(
        out,
        "{} passed, {} failed: {}",
        r.passed,
        r.failed,
        if r.failed == 0 {
            "the installation works"
        } else {
            "fix the FAIL lines above"
        }
    );
    r
}

async fn verify_cluster(
    config: &Config,
    cluster: &crate::config::ClusterConfig,
    user: &str,
    timeout: Duration,
    out: &mut impl Write,
    r: &mut Report,
) {
    let name = &cluster.name;
    let mut spec = plugin_spec(config, cluster);
    let scratch = config
        .server
        .scratch_path
        .join("verify-installation")
        .join(&cluster.plugin_name);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        r.fail(
            out,
            &format!("cluster {name}: scratch"),
            format!("cannot create {}: {e}", scratch.display()),
        );
        return;
    }
    // The job's user must reach its files under the scratch path, as under the node's own.
    for dir in [scratch.parent().unwrap_or(&scratch), scratch.as_path()] {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
    }
    for a in spec.args.iter_mut() {
        if a.starts_with("--scratch-path=") {
            *a = format!("--scratch-path={}", scratch.display());
        }
    }
    // The checks a submit of the test job would meet on the leader (docs/security.md).
    let job = launcher_storage::Job {
        name: "verify-installation".into(),
        cluster: name.clone(),
        user: Some(user.to_string()),
        command: Some(format!("echo {MARKER}")),
        ..Default::default()
    };
    let (policy_cluster, dir) = (cluster.clone(), config.dir.clone());
    let admitted = tokio::task::spawn_blocking(move || {
        let filters = crate::filters::FilterFiles::load(&dir).unwrap_or_default();
        crate::admission::admit(&job, true, Some(&policy_cluster), &filters)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| format!("{} ({})", e.message, e.code)));
    r.check(out, &format!("cluster {name}: submit policy"), admitted, |_| {
        format!("a job of {user} would be accepted (user, uid, home directory)")
    });
    let exe = spec.exe.display().to_string();
    let plugin = match PluginHost::start(spec).await {
        Ok(p) => {
            r.pass(
                out,
                &format!("cluster {name}: plugin"),
                format!("{exe} started and bootstrapped"),
            );
            p
        }
        Err(e) => {
            r.fail(
                out,
                &format!("cluster {name}: plugin"),
                format!("{exe}: {e}; check exe=, plugin-args and the plugin's own config file"),
            );
            return;
        }
    };
    let result = run_test_job(&plugin, name, user, timeout).await;
    match result {
        Ok(detail) => r.pass(out, &format!("cluster {name}: test job"), detail),
        Err(e) => r.fail(out, &format!("cluster {name}: test job"), e),
    }
    plugin.shutdown().await;
}

/// Submits `echo MARKER` as `user`, follows its status until it ends, and reads its output.
async fn run_test_job(
    plugin: &PluginHost,
    cluster: &str,
    user: &str,
    timeout: Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let job = pm::Job {
        name: "verify-installation".into(),
        cluster: cluster.into(),
        user: Some(user.into()),
        command: Some(format!("echo {MARKER}")),
        tags: vec!["launcher-verify-installation".into()],
        ..Default::default()
    };
    let req = SubmitJobRequest {
        request_username: user.into(),
        username: user.into(),
        job,
    };
    let submitted: JobStateResponse = plugin
        .call(RequestType::SubmitJob, &req)
        .await
        .map_err(|e| format!("the plugin refused the job: {e}"))?;
    let id = submitted
        .jobs
        .first()
        .and_then(|j| j.id.clone())
        .ok_or("the plugin answered the submit without a job id")?;
    let open = JobStreamRequest {
        request_username: user.into(),
        username: user.into(),
        job_id: id.clone(),
        encoded_job_id: id.clone(),
        cancel: false,
    };
    let mut statuses = plugin
        .stream(RequestType::GetJobStatus, &open)
        .await
        .map_err(|e| format!("cannot follow job {id}: {e}"))?;
    let last = tokio::time::timeout(timeout, until_terminal(&mut statuses))
        .await
        .map_err(|_| format!("job {id} did not finish within {timeout:?}; see the plugin's log"))??;
    if last.status != "Finished" || last.exit_code.unwrap_or(0) != 0 {
        return Err(format!(
            "job {id} ended {} (exit code {}): {}",
            last.status,
            last.exit_code.map_or("none".into(), |c| c.to_string()),
            last.status_message.unwrap_or_default()
        ));
    }
    let output = tokio::time::timeout(timeout, read_output(plugin, user, &id))
        .await
        .map_err(|_| format!("the output of job {id} did not arrive within {timeout:?}"))??;
    if !output.contains(MARKER) {
        return Err(format!(
            "job {id} finished, but its output lacks what it printed: {output:?}"
        ));
    }
    Ok(format!(
        "job {id} ran as {user}, printed its marker and finished with exit code 0 in {:.1} s",
        started.elapsed().as_secs_f64()
    ))
}

async fn until_terminal(stream: &mut PluginStream) -> Result<JobStatusResponse, String> {
    while let Some(reply) = stream.next().await {
        let body = reply.map_err(|e| format!("the status stream failed: {e}"))?;
        let st: JobStatusResponse = pm::decode(&body).map_err(|e| format!("unreadable status: {e}"))?;
        if matches!(st.status.as_str(), "Finished" | "Failed" | "Killed" | "Canceled") {
            return Ok(st);
        }
    }
    Err("the plugin ended the status stream before the job ended".into())
}

async fn read_output(plugin: &PluginHost, user: &str, id: &str) -> Result<String, String> {
    let req = JobOutputRequest {
        request_username: user.into(),
        username: user.into(),
        job_id: id.into(),
        encoded_job_id: id.into(),
        output_type: OutputType::Both as i32,
        cancel: false,
    };
    let mut stream = plugin
        .stream(RequestType::GetJobOutput, &req)
        .await
        .map_err(|e| format!("cannot read the output: {e}"))?;
    let mut text = String::new();
    while let Some(reply) = stream.next().await {
        let body = reply.map_err(|e| format!("the output stream failed: {e}"))?;
        let chunk: JobOutputResponse = pm::decode(&body).map_err(|e| format!("unreadable output: {e}"))?;
        text.push_str(&chunk.output);
        if chunk.complete {
            break;
        }
    }
    Ok(text)
}

/// A directory that exists (or can be created) and takes a synced file.
fn writable_dir(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".verify-installation-{}", std::process::id()));
    let written =
        std::fs::File::create(&probe).and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write in {}: {e}; check its owner and mode", dir.display()))?;
    Ok(format!("{} is writable", dir.display()))
}

/// Job users must pass through the scratch path to their own files under it.
fn traversable(dir: &Path) -> Result<(), String> {
    let mode = std::fs::metadata(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o001 == 0 {
        return Err(format!(
            "{} has mode {:o}: job users cannot reach their output under it; chmod o+x it",
            dir.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

/// A PEM file that exists, holds a certificate or a private key, and (for keys) is not readable
/// by others.
fn pem_file(path: &Path, private: bool) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let marker = if private {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if !text.contains(marker) {
        return Err(format!(
            "{} holds no PEM {}",
            path.display(),
            if private { "private key" } else { "certificate" }
        ));
    }
    if private && meta.mode() & 0o004 != 0 {
        return Err(format!(
            "{} is world-readable; chmod 600 it (and chown it to the user the gateway starts as)",
            path.display()
        ));
    }
    Ok(format!(
        "{} is a PEM {}",
        path.display(),
        if private { "private key" } else { "certificate" }
    ))
}
