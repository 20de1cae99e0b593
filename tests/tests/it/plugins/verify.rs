//! `launcher-node verify-installation` against a real configuration.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use launcher_tests::process::node_binary;
use launcher_tests::{init_tracing, job_user, ClusterOpts, ProcessCluster};

async fn verify(conf: &std::path::Path, user: &str) -> anyhow::Result<Output> {
    let out = tokio::time::timeout(
        launcher_tests::DEADLINE,
        tokio::process::Command::new(node_binary())
            .arg("verify-installation")
            .arg("--config")
            .arg(conf)
            .args(["--user", user, "--timeout", "30"])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok(out)
}

/// On a working installation (a node's own config with the Local plugin) every step passes:
/// key file, directories, filter files, the user, the plugin's bootstrap and a test job that
/// really runs as the user and prints its marker; the exit status is 0. An unknown user and a
/// world-readable key each give a FAIL line that says what to fix, and a non-zero exit; so does a
/// user the submit policy refuses (unknown, or root below `min-uid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_installation_passes_and_names_what_to_fix() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let conf = cluster.nodes[0].dir.join("launcher.conf");
    let user = job_user();

    let out = verify(&conf, &user).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "PASS  secure-cookie-key",
        "PASS  data-dir",
        "PASS  scratch-path",
        "PASS  filter files",
        "PASS  job user",
        "PASS  cluster Local: submit policy",
        "PASS  cluster Local: plugin",
        "PASS  cluster Local: test job",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains(&format!("ran as {user}")), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let out = verify(&conf, "no-such-user-here").await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL  job user: no user named no-such-user-here"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  cluster Local: test job"), "{stdout}");
    assert!(
        stdout.contains("FAIL  cluster Local: submit policy: user 'no-such-user-here' does not exist"),
        "{stdout}"
    );

    // What a submit would refuse, verify-installation refuses too: root is below min-uid.
    let out = verify(&conf, "root").await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  cluster Local: submit policy"))
        .unwrap_or_else(|| panic!("no submit policy FAIL for root in:\n{stdout}"));
    assert!(line.contains("min-uid"), "{line}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checks failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let key = &cluster.key_path;
    let mode = std::fs::metadata(key)?.permissions().mode();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644))?;
    let out = verify(&conf, &user).await;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode))?;
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  secure-cookie-key"))
        .unwrap_or_else(|| panic!("no FAIL line for the key in:\n{stdout}"));
    assert!(line.contains("readable"), "{line}");
    Ok(())
}
