//! Every `launcherctl` command, its output formats and its exit codes.

use std::os::unix::fs::PermissionsExt;

use launcher_tests::{
    init_tracing, job_user, wait_until, ClusterOpts, ProcessCluster, TestGateway, DEADLINE,
};
use tokio::io::AsyncBufReadExt;

use super::{Ctl, Run};

/// The data rows of a table whose header row starts with `first_header`.
fn rows<'a>(table: &'a str, first_header: &str) -> Vec<&'a str> {
    let mut lines = table.lines().skip_while(|l| !l.starts_with(first_header));
    assert!(lines.next().is_some(), "no header {first_header:?} in:\n{table}");
    lines.take_while(|l| !l.trim().is_empty()).collect()
}

/// The words of the table row that starts with `id`.
fn row_of<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
        .split_whitespace()
        .collect()
}

/// Runs `launcherctl` with owned arguments.
async fn run_owned(ctl: &Ctl, args: Vec<String>) -> anyhow::Result<Run> {
    ctl.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
}

/// A self-signed certificate and key (PEM) for these names.
fn self_signed(names: &[&str]) -> anyhow::Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Through the real binary against a 3-node cluster: `status` lists the three members; `token`
/// mints a token the gateway accepts and `login` checks it and stores it in a 0600 config file
/// that later commands use; a submitted job is shown by `jobs get`, `jobs list` (table with its
/// header and the job's row, wide, JSON) and `jobs output`, and `jobs wait` exits with its exit
/// code; `jobs get --watch` prints each status change and exits as `jobs wait`; `jobs output
/// --follow` streams until the job ends; `jobs wait --timeout` and `jobs get --watch --timeout`
/// give up with 124; suspend and resume take effect; a killed job makes `jobs wait` fail with a message; `--watch` redraws until SIGINT; API errors (control of an ended job, unknown
/// job, bad token, non-admin) print the API's message and exit 1; admins list, drain and undrain
/// members and save a snapshot; the unix socket and https with `--ca-file` work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcherctl_against_a_cluster() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(3, ClusterOpts::default()).await?;
    let sock_dir = tempfile::tempdir()?;
    let socket = sock_dir.path().join("gw.sock");
    let gw = TestGateway::start(&cluster, |c| c.server.unix_socket = Some(socket.clone())).await?;
    let ctl = Ctl::new(&gw.url)?;
    let key_file = cluster.key_path.to_str().expect("utf-8 path").to_string();
    let user = job_user();

    // status: unauthenticated, a summary line and one row per member.
    let st = ctl.run(&["status"]).await?.expect(0);
    assert!(
        st.stdout.starts_with("Cluster Green: leader node "),
        "{}",
        st.stdout
    );
    let members = rows(&st.stdout, "ID");
    assert_eq!(members.len(), 3, "{}", st.stdout);
    assert_eq!(
        members.iter().filter(|r| r.contains(" leader ")).count(),
        1,
        "{}",
        st.stdout
    );
    assert!(
        members.iter().all(|r| r.contains(" yes ")),
        "all healthy: {}",
        st.stdout
    );
    let st: serde_json::Value =
        serde_json::from_str(&ctl.run(&["status", "-o", "json"]).await?.expect(0).stdout)?;
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3), "{st}");

    // token + login: the stored token (0600) serves the commands below.
    let token = ctl
        .run(&["token", "--user", &user, "--key-file", &key_file, "--ttl", "30m"])
        .await?
        .expect(0);
    let token = token.stdout.trim().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert_eq!(
        launcher_gateway::auth::verify_token(&cluster.key, &token, now, 3600).ok(),
        Some(user.clone())
    );
    let bogus = format!("{user}|{}|{}", now + 600, "0".repeat(64));
    ctl.run(&["--token", &bogus, "login"])
        .await?
        .expect_error(1, &["Unauthorized", "401"]);
    assert!(!ctl.config_file().exists(), "a refused token is not stored");
    let login = ctl.run(&["--token", &token, "login"]).await?.expect(0);
    assert!(login.stdout.contains(&format!("as {user}")), "{login:?}");
    let meta = std::fs::metadata(ctl.config_file())?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(ctl.config_file())?.contains(&token));

    // A job that prints and exits 3: submit (id first), wait, get, list, output.
    let sub = ctl
        .run(&[
            "jobs",
            "submit",
            "--cluster",
            "Local",
            "--name",
            "ctl-exit",
            "--tag",
            "ctl-it",
            "--env",
            "GREETING=hi",
            "--command",
            "echo \"$GREETING from-ctl\"; echo oops >&2; exit 3",
        ])
        .await?
        .expect(0);
    let id = sub.stdout.lines().next().unwrap_or_default().trim().to_string();
    assert_eq!(id.len(), 36, "the first line is the job id: {sub:?}");
    assert!(sub.stdout.contains("ctl-exit"), "{sub:?}");
    let waited = ctl
        .run(&["jobs", "wait", &id, "--timeout", "60s"])
        .await?
        .expect(3);
    assert!(waited.stderr.contains("exit code 3"), "{waited:?}");
    let job: serde_json::Value = serde_json::from_str(
        &ctl.run(&["jobs", "get", &id, "-o", "json"])
            .await?
            .expect(0)
            .stdout,
    )?;
    assert_eq!(
        (job["status"].as_str(), job["exitCode"].as_i64()),
        (Some("Finished"), Some(3)),
        "{job}"
    );
    assert_eq!(job["user"], user.as_str());
    let details = ctl.run(&["jobs", "get", &id]).await?.expect(0).stdout;
    assert!(row_of(&details, "exitCode").ends_with(&["3"]), "{details}");

    // jobs get --watch: a line per status change as it happens, then the job's exit code.
    let watch_id = ctl
        .run(&[
            "jobs",
            "submit",
            "--cluster",
            "Local",
            "--name",
            "ctl-watch",
            "--command",
            "sleep 2; exit 5",
            "-q",
        ])
        .await?
        .expect(0)
        .stdout
        .trim()
        .to_string();
    let watched = ctl.run(&["jobs", "get", &watch_id, "--watch"]).await?.expect(5);
    let statuses: Vec<&str> = watched
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert!(
        statuses.contains(&"Running") && statuses.last() == Some(&"Finished"),
        "{watched:#?}"
    );
    assert!(
        statuses.windows(2).all(|w| w[0] != w[1]),
        "only changes: {watched:#?}"
    );
    assert!(watched.stderr.contains("exit code 5"), "{watched:#?}");
    // Of a job that has ended: its end alone, one JSON object a line.
    let ended = ctl
        .run(&["jobs", "get", &watch_id, "--watch", "-o", "json"])
        .await?
        .expect(5);
    let objects: Vec<serde_json::Value> = ended
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(objects.len(), 1, "{ended:#?}");
    assert_eq!(
        (objects[0]["id"].as_str(), objects[0]["status"].as_str()),
        (Some(watch_id.as_str()), Some("Finished"))
    );

    let table = ctl.run(&["jobs", "list"]).await?.expect(0).stdout;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "NAME", "USER", "STATUS", "EXIT", "SUBMITTED"],
        "{table}"
    );
    let row = row_of(&table, &id);
    assert_eq!(
        &row[..5],
        [id.as_str(), "ctl-exit", user.as_str(), "Finished", "3"],
        "{table}"
    );
    let wide = ctl
        .run(&["jobs", "list", "-o", "wide", "--tag", "ctl-it"])
        .await?
        .expect(0)
        .stdout;
    assert!(row_of(&wide, &id).contains(&"Local"), "{wide}");
    let listed: serde_json::Value = serde_json::from_str(
        &ctl.run(&["jobs", "list", "-o", "json", "--tag", "ctl-it", "--since", "1h"])
            .await?
            .expect(0)
            .stdout,
    )?;
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    let running = ctl
        .run(&["jobs", "list", "--status", "Running,Pending"])
        .await?
        .expect(0)
        .stdout;
    assert!(!running.contains(&id), "{running}");
    let out = ctl.run(&["jobs", "output", &id]).await?.expect(0);
    assert_eq!(out.stdout, "hi from-ctl\n");
    let err = ctl
        .run(&["jobs", "output", &id, "--type", "stderr"])
        .await?
        .expect(0);
    assert_eq!(err.stdout, "oops\n");

    // API errors: the message, the name and exit 1.
    ctl.run(&["jobs", "stop", &id])
        .await?
        .expect_error(1, &["InvalidJobState", "409"]);
    let unknown = "01890000-0000-7000-8000-000000000000";
    ctl.run(&["jobs", "get", unknown])
        .await?
        .expect_error(1, &["JobNotFound", "404"]);
    ctl.run(&["--token", &bogus, "jobs", "list"])
        .await?
        .expect_error(1, &["Unauthorized", "401", "signature"]);
    ctl.run(&["members", "list"])
        .await?
        .expect_error(1, &["Forbidden", "403"]);

    // A long job from a file: follow its output, kill it, and wait reports the kill.
    let job_file = ctl.home.path().join("job.json");
    std::fs::write(
        &job_file,
        serde_json::json!({"name": "ctl-long", "cluster": "Local", "command": "echo started; exec sleep 300"}).to_string(),
    )?;
    let long = ctl
        .run(&["jobs", "submit", "--file", job_file.to_str().unwrap(), "-q"])
        .await?
        .expect(0);
    let long_id = long.stdout.trim().to_string();
    let mut follow = ctl.command(&["jobs", "output", &long_id, "--follow"]).spawn()?;
    let mut follow_out = tokio::io::BufReader::new(follow.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(DEADLINE, follow_out.next_line()).await??;
    assert_eq!(first.as_deref(), Some("started"));
    let (c, lid) = (&ctl, long_id.as_str());
    wait_until("the long job to run", DEADLINE, move || async move {
        let r = c
            .run(&["jobs", "get", lid, "-o", "json", "--fields", "status"])
            .await?
            .expect(0);
        let j: serde_json::Value = serde_json::from_str(&r.stdout)?;
        Ok((j["status"] == "Running").then_some(()))
    })
    .await?;
    ctl.run(&["jobs", "wait", &long_id, "--timeout", "1s"])
        .await?
        .expect_error(124, &["did not end within 1s"]);
    let watching = ctl
        .run(&["jobs", "get", &long_id, "--watch", "--timeout", "1s"])
        .await?
        .expect_error(124, &["did not end within 1s"]);
    assert!(
        watching
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains(" Running")),
        "{watching:#?}"
    );
    for (op, status) in [("suspend", "Suspended"), ("resume", "Running")] {
        ctl.run(&["jobs", op, &long_id]).await?.expect(0);
        wait_until(
            &format!("the long job to be {status}"),
            DEADLINE,
            move || async move {
                let r = c
                    .run(&["jobs", "get", lid, "-o", "json", "--fields", "status"])
                    .await?
                    .expect(0);
                let j: serde_json::Value = serde_json::from_str(&r.stdout)?;
                Ok((j["status"] == status).then_some(()))
            },
        )
        .await?;
    }
    let killed = ctl.run(&["jobs", "kill", &long_id]).await?.expect(0);
    assert!(
        killed.stdout.starts_with(&format!("kill {long_id}")),
        "{killed:?}"
    );
    let waited = ctl.run(&["jobs", "wait", &long_id]).await?;
    assert_ne!(waited.code, 0, "{waited:?}");
    assert!(waited.stderr.contains("Killed"), "{waited:?}");
    let rest = tokio::time::timeout(DEADLINE, follow_out.next_line()).await??;
    assert_eq!(rest, None, "the output stream ends with the job");
    let status = tokio::time::timeout(DEADLINE, follow.wait()).await??;
    assert!(status.success(), "{status:?}");

    // --watch redraws until SIGINT, then exits 0.
    let mut watch = ctl
        .command(&["jobs", "list", "--watch", "--interval", "1"])
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("piped")).lines();
    let mut frames = 0;
    let mut saw_job = false;
    tokio::time::timeout(DEADLINE, async {
        while frames < 2 {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!("watch ended early")
            };
            frames += usize::from(line.starts_with("Every 1s: launcherctl jobs list"));
            saw_job |= line.starts_with(&long_id);
        }
        anyhow::Ok(())
    })
    .await??;
    assert!(saw_job, "the watched table lists the jobs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(watch.id().expect("running"))?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    let status = tokio::time::timeout(DEADLINE, watch.wait()).await??;
    assert_eq!(status.code(), Some(0), "Ctrl-C ends --watch cleanly");

    ctl.run(&["jobs", "delete", &id]).await?.expect(0);
    ctl.run(&["jobs", "get", &id])
        .await?
        .expect_error(1, &["JobNotFound"]);

    // Admin commands with a token minted on the fly from the key file.
    let as_admin = |args: &[&str]| -> Vec<String> {
        ["--key-file", key_file.as_str(), "--user", "admin"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let listed = run_owned(&ctl, as_admin(&["members", "list"]))
        .await?
        .expect(0)
        .stdout;
    assert_eq!(rows(&listed, "ID").len(), 3, "{listed}");
    let drained = run_owned(&ctl, as_admin(&["members", "drain", "3"]))
        .await?
        .expect(0);
    assert!(drained.stdout.contains("member 3 is draining"), "{drained:?}");
    let json: serde_json::Value = serde_json::from_str(
        &run_owned(&ctl, as_admin(&["members", "list", "-o", "json"]))
            .await?
            .expect(0)
            .stdout,
    )?;
    let three = json
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == 3))
        .cloned();
    assert_eq!(
        three.map(|m| m["draining"].clone()),
        Some(serde_json::json!(true)),
        "{json}"
    );
    run_owned(&ctl, as_admin(&["members", "drain", "3", "--undo"]))
        .await?
        .expect(0);
    run_owned(&ctl, as_admin(&["members", "remove", "99"]))
        .await?
        .expect_error(1, &["InvalidRequest", "400"]);
    let snap = ctl.home.path().join("backup.snap");
    let saved = run_owned(&ctl, as_admin(&["snapshot", "save", snap.to_str().unwrap()]))
        .await?
        .expect(0);
    assert!(saved.stdout.starts_with("saved a snapshot of "), "{saved:?}");
    let bytes = std::fs::read(&snap)?;
    assert!(
        !bytes.is_empty() && bytes.windows(long_id.len()).any(|w| w == long_id.as_bytes()),
        "the snapshot holds the job"
    );
    assert!(!ctl.home.path().join("backup.snap.partial").exists());
    assert_eq!(std::fs::metadata(&snap)?.permissions().mode() & 0o777, 0o600);

    // The unix socket, and https with a private CA.
    let sock_url = format!("unix:{}", socket.display());
    let via_socket = ctl
        .run(&["--url", &sock_url, "jobs", "list", "--fields", "name"])
        .await?
        .expect(0);
    assert!(
        row_of(&via_socket.stdout, &long_id).contains(&"ctl-long"),
        "{via_socket:?}"
    );
    let certs = tempfile::tempdir()?;
    let mut ca_file = certs.path().join("ca.pem");
    let tls_gw = TestGateway::start(&cluster, |c| {
        let (cert, key) = self_signed(&[c.server.address.as_str()]).expect("certificate");
        let (crt, key_path) = (certs.path().join("gw.crt"), certs.path().join("gw.key"));
        std::fs::write(&crt, &cert).expect("write certificate");
        std::fs::write(&key_path, key).expect("write key");
        ca_file = crt.clone();
        c.server.enable_ssl = true;
        c.server.certificate_file = Some(crt);
        c.server.certificate_key_file = Some(key_path);
    })
    .await?;
    let https = tls_gw.url.replacen("http://", "https://", 1);
    let ca = ca_file.to_str().unwrap();
    let st = ctl
        .run(&["--url", &https, "--ca-file", ca, "status"])
        .await?
        .expect(0);
    assert!(st.stdout.starts_with("Cluster "), "{st:?}");
    ctl.run(&["--url", &https, "--ca-file", ca, "jobs", "get", &long_id])
        .await?
        .expect(0);
    ctl.run(&["--url", &https, "status"])
        .await?
        .expect_error(3, &["cannot connect"]);

    tls_gw.handle.shutdown().await?;
    gw.handle.shutdown().await?;
    Ok(())
}

/// Without a gateway: an unreachable URL exits 3, usage errors exit 2, `--help` lists the exit
/// codes, and completions, token minting and logout need no gateway at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcherctl_exit_codes_without_a_gateway() -> anyhow::Result<()> {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let ctl = Ctl::new(&format!("http://127.0.0.1:{port}"))?;
    ctl.run(&["status"])
        .await?
        .expect_error(3, &["cannot connect to http://127.0.0.1:"]);
    ctl.run(&["--token", "u|1|ff", "jobs", "wait", "x"])
        .await?
        .expect_error(3, &["cannot connect"]);
    ctl.run(&["--url", "unix:/nonexistent/launcher.sock", "status"])
        .await?
        .expect_error(3, &["cannot connect"]);

    ctl.run(&["jobs", "submit", "--name", "x", "--command", "true"])
        .await?
        .expect_error(2, &["--cluster"]);
    let r: Run = ctl.run(&["jobs", "frobnicate"]).await?.expect(2);
    assert!(r.stderr.contains("frobnicate"), "{r:?}");
    ctl.run(&["jobs", "list", "--watch", "--interval", "0"])
        .await?
        .expect(2);
    ctl.run(&["jobs", "get", "x", "--timeout", "1s"]).await?.expect(2);
    let help = ctl.run(&["--help"]).await?.expect(0).stdout;
    for code in ["\n0 ", "\n1 ", "\n2 ", "\n3 ", "\n124 ", "jobs get --watch"] {
        assert!(help.contains(code), "--help documents {code:?}: {help}");
    }
    ctl.run(&["token", "--user", "u"])
        .await?
        .expect_error(2, &["--key-file"]);
    ctl.run(&["--url", "ftp://x", "status"])
        .await?
        .expect_error(2, &["--url"]);

    let key = ctl.home.path().join("key");
    launcher_tests::write_key(&key)?;
    let key = key.to_str().unwrap();
    let token = ctl
        .run(&["token", "--user", "alice", "--key-file", key])
        .await?
        .expect(0)
        .stdout;
    assert!(token.starts_with("alice|") && token.trim().len() > 70, "{token}");
    // Lifetimes the gateway would refuse are refused here, as usage errors: 0 or less (expired
    // when minted), or over --max-lifetime (the gateway's max-token-lifetime-seconds, 24h unless
    // raised on both sides).
    for ttl in ["0", "0s", "-5", "-1d"] {
        let r = ctl
            .run(&["token", "--user", "alice", "--key-file", key, "--ttl", ttl])
            .await?
            .expect(2);
        assert!(
            r.stderr.contains("must be more than 0") && r.stdout.is_empty(),
            "{ttl}: {r:#?}"
        );
    }
    ctl.run(&["token", "--user", "alice", "--key-file", key, "--ttl", "100d"])
        .await?
        .expect_error(
            2,
            &[
                "--ttl 100d",
                "24h",
                "max-token-lifetime-seconds",
                "--max-lifetime",
            ],
        );
    ctl.run(&["--key-file", key, "--user", "alice", "login", "--ttl", "25h"])
        .await?
        .expect_error(2, &["--ttl 25h", "--max-lifetime"]);
    let long = ctl
        .run(&[
            "token",
            "--user",
            "alice",
            "--key-file",
            key,
            "--ttl",
            "100d",
            "--max-lifetime",
            "100d",
        ])
        .await?
        .expect(0)
        .stdout;
    let expiry: u64 = long.split('|').nth(1).expect("an expiry").parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        expiry > now + 99 * 86_400 && expiry <= now + 100 * 86_400 + 60,
        "{long}"
    );
    ctl.run(&["--key-file", key, "jobs", "list"])
        .await?
        .expect_error(2, &["--user"]);

    for shell in ["bash", "zsh", "fish"] {
        let r = ctl.run(&["completions", shell]).await?.expect(0);
        assert!(
            r.stdout.contains("launcherctl") && r.stdout.contains("submit"),
            "{shell}: {r:?}"
        );
    }
    let r = ctl.run(&["logout"]).await?.expect(0);
    assert!(r.stdout.contains("no token stored"), "{r:?}");
    Ok(())
}
