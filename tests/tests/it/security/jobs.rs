//! What a running job, or another user, can reach: mounts and setuid programs, output files,
//! other users' jobs and processes, and the supervisor that starts a job as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::json;

use super::{error_of, home, output, start, submit_ok, uid, unique, wait_terminal};

/// Gives `path` (and everything below it) to `user`, as if the user had made it.
fn chown_to(path: &Path, user: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{user}:"), &path.display().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "chown {}", path.display());
    Ok(())
}

/// The demonstrated root shell, replayed by an admin on a user's behalf: the user's copy of
/// `/etc` whose `pam.d/su` says `pam_permit`, mounted over `/etc`. Inside the job `su` must not
/// give root: binds are nosuid,nodev and jobs run with no_new_privs. A missing mount target is
/// created inside the job's namespace only, never on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_etc_over_etc_gives_no_root_and_targets_stay_off_the_host() -> anyhow::Result<()> {
    assert!(
        Path::new("/bin/su").exists(),
        "this test needs su (Debian's util-linux/login)"
    );
    let (_cluster, gw) = start().await?;
    let h = home("alice");
    let fake = h.join(unique("fakeetc"));
    let status = std::process::Command::new("cp")
        .args(["-a", "/etc", &fake.display().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "cp -a /etc");
    for secret in ["shadow", "gshadow", "shadow-", "gshadow-"] {
        let _ = std::fs::remove_file(fake.join(secret));
    }
    std::fs::write(
        fake.join("pam.d/su"),
        "auth sufficient pam_permit.so\naccount sufficient pam_permit.so\nsession optional pam_permit.so\n",
    )?;
    // A setuid-root copy of a shell in the user's own source, as a careless admin might leave.
    let suid = fake.join("rootsh");
    std::fs::copy("/bin/sh", &suid)?;
    chown_to(&fake, "alice")?;
    std::os::unix::fs::chown(&suid, Some(0), Some(0))?;
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755))?;
    let deep = format!("/opt/{}/deep/dir", unique("target"));
    let cron = format!("/etc/cron.d/{}", unique("cron"));
    let body = json!({
        "name": "su-attack", "cluster": "Local", "user": "alice",
        "command": format!(
            "echo uid=$(id -u); su root -c 'echo SU-GOT-ROOT' </dev/null; /etc/rootsh -p -c 'echo euid=$(id -u)'; \
             grep NoNewPrivs /proc/self/status; grep ' /etc ' /proc/self/mountinfo; \
             test -d {deep} && echo deep-inside; grep ' {deep} ' /proc/self/mountinfo"
        ),
        // The cron target first, so that it is looked up in the host's own /etc.
        "mounts": [
            {"mountPath": cron, "readOnly": true, "mountSource": {"type": "host", "source": {"path": h.display().to_string()}}},
            {"mountPath": "/etc", "mountSource": {"type": "host", "source": {"path": fake.display().to_string()}}},
            {"mountPath": deep, "readOnly": true, "mountSource": {"type": "host", "source": {"path": h.display().to_string()}}},
        ],
    });
    let admin = gw.client("admin");
    let id = submit_ok(&admin, &body).await?;
    let done = wait_terminal(&admin, &id).await?;
    let (_, out) = output(&admin, &id, "both").await?;
    assert_eq!(done["status"], "Finished", "{done}\n{out}");
    assert!(out.contains(&format!("uid={}", uid("alice"))), "{out}");
    assert!(
        !out.contains("SU-GOT-ROOT"),
        "su gave root inside the job:\n{out}"
    );
    assert!(
        !out.contains("euid=0"),
        "a setuid-root program gained root inside the job:\n{out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let etc_line = out.lines().find(|l| l.contains(" /etc ")).unwrap_or_default();
    assert!(etc_line.contains("nosuid") && etc_line.contains("nodev"), "{out}");
    assert!(
        out.contains("deep-inside"),
        "the missing target must exist inside the job:\n{out}"
    );
    let top = deep.split('/').take(3).collect::<Vec<_>>().join("/");
    assert!(!Path::new(&top).exists(), "{top} was created on the host");
    assert!(!Path::new(&cron).exists(), "{cron} was created on the host");
    let _ = std::fs::remove_dir_all(&fake);
    Ok(())
}

/// A job that swaps its output file for a symlink to `/etc/shadow` never gets it served; an
/// output path in a root-only directory reads like a missing file (no "owned by uid 0"); `..`
/// in an output path reaches nothing the user could not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_files_are_the_users_own_and_never_a_secret() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let alice = gw.client("alice");
    let h = home("alice");
    let out_file = h.join(unique("out.txt"));
    let body = json!({"name": "swap", "cluster": "Local",
        "command": format!("echo hi; rm -f {0}; ln -s /etc/shadow {0}", out_file.display()),
        "stdoutFile": out_file.display().to_string()});
    let id = submit_ok(&alice, &body).await?;
    wait_terminal(&alice, &id).await?;
    let shadow = std::fs::read_to_string("/etc/shadow")?;
    let root_line = shadow.lines().next().unwrap_or("root:");
    for kind in ["stdout", "both"] {
        let (st, text) = output(&alice, &id, kind).await?;
        assert!(
            !text.contains(root_line),
            "/etc/shadow was served to a user ({st})"
        );
        assert!(st == 404 || st == 200, "{st} {text}");
        if st == 404 {
            let e: serde_json::Value = serde_json::from_str(&text)?;
            assert_eq!(error_of(&e).0, 7, "{text}");
        }
    }

    // Root's private directory: the job cannot write there, and no answer says who owns what.
    let private = Path::new("/root").join(unique("private"));
    std::fs::create_dir_all(&private)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(private.join("out"), "root's file")?;
    let body = json!({"name": "probe", "cluster": "Local", "command": "echo probe",
        "stdoutFile": private.join("out").display().to_string()});
    let id = submit_ok(&alice, &body).await?;
    let done = wait_terminal(&alice, &id).await?;
    let (st, text) = output(&alice, &id, "stdout").await?;
    let everything = format!("{done} {text}");
    assert!(!text.contains("root's file"), "{text}");
    assert!(
        !everything.contains("uid 0") && !everything.contains("owned by"),
        "{everything}"
    );
    assert_eq!(std::fs::read_to_string(private.join("out"))?, "root's file");
    assert!(st == 404 || text.is_empty(), "{st} {text}");

    // `..` climbing out of the home into /etc: written as the user, so refused by the kernel.
    let body = json!({"name": "dots", "cluster": "Local", "command": "echo pwned",
        "stdoutFile": format!("{}/../../etc/{}", h.display(), unique("dots"))});
    let id = submit_ok(&alice, &body).await?;
    let done = wait_terminal(&alice, &id).await?;
    assert_ne!(done["status"], "Finished", "{done}");
    let _ = std::fs::remove_dir_all(&private);
    Ok(())
}

/// Another user cannot see, read, control or delete a job (404 `JobNotFound` on every route),
/// cannot read its process's environment through /proc from a job of their own, and cannot
/// signal it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_and_processes_are_out_of_reach() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let (alice, bob) = (gw.client("alice"), gw.client("bob"));
    let secret = unique("s3cret");
    let body = json!({"name": "victim", "cluster": "Local", "command": "sleep 60",
        "environment": [{"name": "SECRET", "value": secret}]});
    let id = submit_ok(&alice, &body).await?;
    let running = launcher_tests::wait_until("the victim to run", launcher_tests::DEADLINE, || async {
        let (_, j) = alice.get(&format!("/jobs/{id}")).await?;
        Ok((j["status"] == "Running" && j["pid"].as_i64().is_some()).then_some(j))
    })
    .await?;
    let pid = running["pid"].as_i64().unwrap_or_default();

    for (method, path) in [
        (reqwest::Method::GET, format!("/jobs/{id}")),
        (reqwest::Method::GET, format!("/jobs/{id}/output?type=both")),
        (reqwest::Method::GET, format!("/jobs/{id}/status")),
        (reqwest::Method::GET, format!("/jobs/{id}/resource-utilization")),
        (reqwest::Method::DELETE, format!("/jobs/{id}")),
    ] {
        let r = bob.req(method.clone(), &path).send().await?;
        let st = r.status().as_u16();
        let b: serde_json::Value = serde_json::from_slice(&r.bytes().await?).unwrap_or_default();
        assert_eq!((st, error_of(&b).0), (404, 3), "{method} {path}: {b}");
    }
    let (st, b) = bob
        .post(&format!("/jobs/{id}/control"), &json!({"operation": "kill"}))
        .await?;
    assert_eq!((st, error_of(&b).0), (404, 3), "{b}");
    let (st, b) = bob.get("/jobs?user=alice").await?;
    assert_eq!(st, 403, "{b}");

    // Bob's own job tries /proc and signals.
    let spy = json!({"name": "spy", "cluster": "Local",
        "command": format!("cat /proc/{pid}/environ; kill -9 {pid} && echo KILLED; ls /proc/{pid}/fd && echo FDS; true")});
    let spy_id = submit_ok(&bob, &spy).await?;
    wait_terminal(&bob, &spy_id).await?;
    let (_, out) = output(&bob, &spy_id, "both").await?;
    assert!(!out.contains(&secret), "bob read alice's job environment:\n{out}");
    assert!(!out.contains("KILLED") && !out.contains("FDS"), "{out}");
    let (_, j) = alice.get(&format!("/jobs/{id}")).await?;
    assert_eq!(j["status"], "Running", "bob's job signalled alice's: {j}");
    let (st, _) = alice
        .post(&format!("/jobs/{id}/control"), &json!({"operation": "kill"}))
        .await?;
    assert_eq!(st, 200);
    Ok(())
}

/// A job's environment (`LD_PRELOAD` here) reaches only the job, never the root supervisor or
/// plugin that start it: a preloaded library that records who loaded it is loaded by the job's
/// user alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_environment_never_reaches_the_root_supervisor() -> anyhow::Result<()> {
    let (_cluster, gw) = start().await?;
    let dir = tempfile::Builder::new().prefix("launcher-preload-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks)?;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777))?;
    let src = dir.path().join("evil.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void mark(void) {{\n\
             char p[512]; snprintf(p, sizeof p, \"{}/%d-%d\", (int)geteuid(), (int)getpid());\n\
             FILE *f = fopen(p, \"w\"); if (f) fclose(f); }}\n",
            marks.display()
        ),
    )?;
    let lib = dir.path().join("evil.so");
    let cc = std::process::Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-o",
            &lib.display().to_string(),
            &src.display().to_string(),
        ])
        .status()?;
    assert!(
        cc.success(),
        "this test needs a C compiler (gcc is on every machine of this kind)"
    );
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755))?;
    let alice = gw.client("alice");
    let body = json!({"name": "preload", "cluster": "Local", "command": "true",
        "environment": [{"name": "LD_PRELOAD", "value": lib.display().to_string()}]});
    let id = submit_ok(&alice, &body).await?;
    let done = wait_terminal(&alice, &id).await?;
    assert_eq!(done["status"], "Finished", "{done}");
    let owners: Vec<String> = std::fs::read_dir(&marks)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !owners.is_empty(),
        "the job itself should have loaded the library"
    );
    for name in &owners {
        let euid = name.split('-').next().unwrap_or_default();
        assert_eq!(
            euid,
            uid("alice").to_string(),
            "loaded by euid {euid}: {owners:?}"
        );
        let meta = std::fs::metadata(marks.join(name))?;
        assert_eq!(meta.uid(), uid("alice"));
    }
    Ok(())
}
